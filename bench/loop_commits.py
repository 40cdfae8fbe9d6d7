"""Commits on the event loop: what they gain a line and cost the others.

``python -m bench.loop_commits``. A line commits on the event loop when the process's commits
have been idle (``hotline.driver._committer``),
which saves the two thread switches of a worker thread but blocks every other task of the
process while the fsync waits. Two processes over loopback, SQLite ``FULL`` both sides; the
dialling process holds every line's sending end. Two scenes, each run with commits on the loop
allowed (``on``) and never made (``off``, every blocking commit in a worker thread),
alternately, ``--rounds`` times:

- ``latency``: one line, then ``--lines`` lines in one process, each sending one 1 KiB
  message at a time and waiting for its delivered receipt; the median over all lines'
  messages.
- ``mixed``: one line sends as fast as 64 concurrent ``send()`` allow (messages per second)
  while another, in the same process, sends one message at a time (its median latency): what
  a latency line's commits on the loop cost a busy neighbour, and the other way round.

Prints each figure's median over the rounds, and on / off.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from hotline import Identity, Liveness, open_line
from hotline.driver import _committer

BODY = os.urandom(1024)


def _keys(index: int) -> tuple[Identity, Identity]:
    return (Identity.from_seed(bytes([1, index]) * 16), Identity.from_seed(bytes([2, index]) * 16))


def _set_mode(mode: str) -> None:
    # Off: every blocking commit in a worker thread, as before commits on the loop existed.
    _committer._ProcessCommits.idle = (  # type: ignore[method-assign]
        _IDLE if mode == "on" else lambda self: False
    )


async def _listen(ports: list[int], folder: Path) -> None:
    async with trio.open_nursery() as nursery:
        for index, port in enumerate(ports):
            dialler, listener = _keys(index)

            async def serve(index: int = index, port: int = port, dialler: Identity = dialler,
                            listener: Identity = listener) -> None:
                async with open_line(listener, dialler.public_key,
                                     store=folder / f"listen-{index}.db",
                                     listen=("127.0.0.1", port)) as line:
                    while True:
                        await line.receive()

            nursery.start_soon(serve)


async def _one_at_a_time(line: Any, until: float, samples: list[float]) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        outgoing = await line.send(BODY)
        await outgoing.delivered()
        samples.append(time.perf_counter() - started)


async def _as_fast_as_possible(line: Any, until: float) -> int:
    sent = 0

    async def sender() -> None:
        nonlocal sent
        while time.perf_counter() < until:
            await line.send(BODY)
            sent += 1

    async with trio.open_nursery() as nursery:
        for _ in range(64):
            nursery.start_soon(sender)
    await line.flush()
    return sent


async def _dial(scene: str, ports: list[int], folder: Path, seconds: float) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        lines = []
        for index, port in enumerate(ports):
            dialler, listener = _keys(index)
            line = await nursery.start(_open, dialler, listener, folder / f"dial-{index}.db", port)
            lines.append(line)
        for line in lines:
            await line.wait_liveness(Liveness.UP)
        until = time.perf_counter() + seconds
        result: dict[str, float] = {}
        samples: list[float] = []
        if scene == "latency":
            async with trio.open_nursery() as loops:
                for line in lines:
                    loops.start_soon(_one_at_a_time, line, until, samples)
            result["latency_ms"] = statistics.median(samples) * 1e3
        else:
            sent = 0

            async def bulk() -> None:
                nonlocal sent
                sent = await _as_fast_as_possible(lines[0], until)

            async with trio.open_nursery() as loops:
                loops.start_soon(bulk)
                loops.start_soon(_one_at_a_time, lines[1], until, samples)
            result["bulk_msg_per_s"] = sent / seconds
            result["latency_ms"] = statistics.median(samples) * 1e3
        nursery.cancel_scope.cancel()
    return result


async def _open(dialler: Identity, listener: Identity, path: Path, port: int,
                task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_line(dialler, listener.public_key, store=path,
                         connect=("127.0.0.1", port)) as line:
        task_status.started(line)
        await trio.sleep_forever()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _run_once(
    scene: str, mode: str, lines: int, seconds: float, tmpdir: str | None
) -> dict[str, float]:
    ports = _free_ports(lines if scene == "latency" else 2)
    with tempfile.TemporaryDirectory(prefix="hotline-loop-", dir=tmpdir) as tmp:
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.loop_commits", "--child", mode, tmp,
             json.dumps(ports)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            time.sleep(1.0)
            _set_mode(mode)
            return trio.run(_dial, scene, ports, Path(tmp), seconds)
        finally:
            _set_mode("on")
            child.terminate()
            child.wait()


_IDLE = _committer._ProcessCommits.idle


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loop_commits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=4, help="lines in the latency scene")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="on/off pairs of each scene")
    parser.add_argument("--tmpdir", help="where the stores live (the disk to measure)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, folder, ports = args.child
        _set_mode(mode)
        trio.run(_listen, json.loads(ports), Path(folder))
        return
    for scene, lines in (("latency", 1), ("latency", args.lines), ("mixed", 2)):
        figures: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
        for _ in range(args.rounds):
            for mode in ("on", "off"):
                for name, value in _run_once(scene, mode, lines, args.seconds,
                                             args.tmpdir).items():
                    figures[mode].setdefault(name, []).append(value)
        for name in figures["on"]:
            on = statistics.median(figures["on"][name])
            off = statistics.median(figures["off"][name])
            what = f"{lines} lines" if scene == "latency" else "bulk + one-at-a-time"
            print(f"{scene:8} ({what}) {name:15} on {on:9.3f}  off {off:9.3f}"
                  f"  on/off {on / off:.2f}")


if __name__ == "__main__":
    main()
