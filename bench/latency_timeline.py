"""Where one message's round trip goes: ``python -m bench.latency_timeline``.

Two processes over loopback, MemoryStores, one 1 KiB message at a time (``send()`` then its
delivered receipt), as the full run's ``hotline.latency_memory_ms``. Both processes note,
on the system-wide monotonic clock, each write to the socket and each read handed to the
core, and the sender when ``send()`` is called and when the receipt has woken it. Per
message that gives five spans: the sender's ``send()`` to its write, the wire to the
receiver's read, the receiver's read to its receipt's write, the wire back, and the sender's
read to the application. Prints each span's median.

The notes are taken by wrapping ``os.write`` in the session module and
``Connection.receive_data``: so this measures the direct-write path of a ``SocketStream``,
which is what a line over TCP takes. ``strace -f -c python -m bench.latency_timeline``
counts the system calls of both processes (``-n`` messages after 100 to warm up).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from hotline import Identity, Liveness, MemoryStore, open_line
from hotline.driver import _session
from hotline.protocol import Connection

from .runner import _free_port

A = Identity.from_seed(bytes([0x61]) * 32)
B = Identity.from_seed(bytes([0x62]) * 32)
BODY = os.urandom(1024)
NOTES: list[tuple[str, float, int]] = []


def _instrument() -> None:
    real_write = os.write
    real_receive = Connection.receive_data

    def write(fd: int, data: Any) -> int:
        NOTES.append(("write", time.perf_counter(), len(data)))
        return real_write(fd, data)

    def receive_data(self: Connection, data: bytes | bytearray | memoryview, now: float) -> None:
        NOTES.append(("read", time.perf_counter(), len(data)))
        real_receive(self, data, now)

    _session.os.write = write  # type: ignore[attr-defined]
    Connection.receive_data = receive_data  # type: ignore[method-assign]


async def listen(port: int) -> None:
    """Receive until standard input closes."""
    async with open_line(B, A.public_key, store=MemoryStore(),
                         listen=("127.0.0.1", port)) as line, trio.open_nursery() as nursery:

        async def receive() -> None:
            while True:
                await line.receive()

        nursery.start_soon(receive)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


async def dial(port: int, n: int) -> None:
    async with open_line(A, B.public_key, store=MemoryStore(),
                         connect=("127.0.0.1", port)) as line:
        await line.wait_liveness(Liveness.UP)
        for _ in range(100):
            await (await line.send(BODY)).delivered()
        NOTES.clear()
        for _ in range(n):
            NOTES.append(("send", time.perf_counter(), 0))
            await (await line.send(BODY)).delivered()
            NOTES.append(("woken", time.perf_counter(), 0))


def spans(sender: list[list[Any]], receiver: list[list[Any]]) -> list[tuple[float, ...]]:
    reads = [t for kind, t, size in receiver if kind == "read" and size > len(BODY)]
    writes = [t for kind, t, _ in receiver if kind == "write"]
    rows: list[tuple[float, ...]] = []
    index = 0
    while index < len(sender):
        if sender[index][0] != "send":
            index += 1
            continue
        start = sender[index][1]
        end = index + 1
        while end < len(sender) and sender[end][0] != "woken":
            end += 1
        if end == len(sender):
            break
        between = sender[index + 1:end]
        sent = next((t for kind, t, _ in between if kind == "write"), None)
        heard = next((t for kind, t, _ in between if kind == "read"), None)
        index = end
        if sent is None or heard is None:
            continue
        at = bisect.bisect_left(reads, sent)
        if at == len(reads):
            break
        read = reads[at]
        at = bisect.bisect_left(writes, read)
        if at == len(writes):
            break
        answered = writes[at]
        rows.append((sent - start, read - sent, answered - read, heard - answered,
                     sender[end][1] - heard, sender[end][1] - start))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="messages measured")
    parser.add_argument("--role", default="dial", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _instrument()
    if args.role == "listen":
        trio.run(listen, args.port)
        with open(args.out, "w") as out:
            json.dump(NOTES, out)
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="hotline-timeline-") as folder:
        notes_path = os.path.join(folder, "receiver.json")
        child = subprocess.Popen([sys.executable, "-m", "bench.latency_timeline", "--role",
                                  "listen", "--port", str(port), "--out", notes_path],
                                 stdin=subprocess.PIPE)
        try:
            time.sleep(1.0)
            trio.run(dial, port, args.n)
        finally:
            assert child.stdin is not None
            child.stdin.close()  # The listener writes its notes as it ends.
            child.wait()
        with open(notes_path) as notes:
            receiver = json.load(notes)
    rows = spans([list(note) for note in NOTES], receiver)
    names = ["send() to the write", "wire, to the receiver's read",
             "receiver: read to the receipt's write", "wire back", "sender: read to woken",
             "send() to woken"]
    print(f"{len(rows)} messages, median of each span:")
    for column, name in enumerate(names):
        print(f"  {name:40s} {statistics.median(row[column] for row in rows) * 1e6:7.0f} us")


if __name__ == "__main__":
    main()
