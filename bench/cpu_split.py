"""Where a message's CPU goes: the sender's process and the receiver's, measured apart.

``python -m bench.cpu_split [--messages N] [--body BYTES] [--store full|normal|memory]
[--repeats R]``

The receiver runs in a forked child (Linux: its CPU time is read from ``/proc``); the
sender, in this process, sends N messages (1 KiB bodies unless ``--body`` says otherwise)
from 256 concurrent ``send()`` calls and waits for the delivered receipt of the last. Each
repeat prints the rate and, per process, the share of one core and the CPU microseconds per
message. This is what docs/performance.md's throughput analysis quotes; the main benchmark
does not split CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from hotline import Identity, Liveness, MemoryStore, open_line

from ._memory import cpu_seconds
from .hotline_peer import produce

SENDERS = 256
BODY = 1024
A = Identity.from_seed(b"a" * 32)
B = Identity.from_seed(b"b" * 32)


def _store(kind: str, folder: Path, name: str) -> Any:
    return MemoryStore() if kind == "memory" else str(folder / name)


def _durability(kind: str) -> str:
    return "NORMAL" if kind == "normal" else "FULL"


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _receive(kind: str, folder: Path, port_pipe: int) -> None:
    async with open_line(B, A.public_key, store=_store(kind, folder, "b.db"),
                         durability=_durability(kind), listen=("127.0.0.1", 0)) as line:
        os.write(port_pipe, f"{line.listen_addresses[0][1]}\n".encode())
        async for _ in line:
            pass


async def _send(args: argparse.Namespace, folder: Path, port: int, child: int) -> None:
    async with open_line(A, B.public_key, store=_store(args.store, folder, "a.db"),
                         durability=_durability(args.store), connect=("127.0.0.1", port)) as line:
        await line.wait_liveness(Liveness.UP)
        body = os.urandom(args.body)
        for _ in range(args.repeats):
            t0, own0, child0 = time.perf_counter(), cpu_seconds(), _cpu_of(child)
            _, last, _ = await produce(line, body, args.messages, SENDERS)
            assert last is not None
            await last.delivered()
            wall = time.perf_counter() - t0
            own, other = cpu_seconds() - own0, _cpu_of(child) - child0
            n = args.messages
            print(f"{n / wall:8.0f} msg/s   sender {own / wall:4.0%} of a core, "
                  f"{own / n * 1e6:5.1f} us/msg   receiver {other / wall:4.0%} of a core, "
                  f"{other / n * 1e6:5.1f} us/msg", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--store", choices=("full", "normal", "memory"), default="full")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--body", type=int, default=BODY, metavar="BYTES",
                        help="the size of each message's body (default 1024)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotline-cpu-") as tmp:
        folder = Path(tmp)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # The receiver; ends when the parent sends SIGTERM.
            os.close(read_end)
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            trio.run(_receive, args.store, folder, write_end)
            os._exit(0)
        os.close(write_end)
        port = int(os.read(read_end, 100).split()[0])
        try:
            trio.run(_send, args, folder, port, child)
        finally:
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)


if __name__ == "__main__":
    main()
