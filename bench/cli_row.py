"""The command-line row: lines piped into ``hotline run --until-delivered``.

Two real ``hotline`` processes, as a user runs them: keys made with ``hotline keygen`` in the
run's temporary directory; a receiver ``hotline run --listen 127.0.0.1:0 --json`` whose
output goes to /dev/null (it still writes every message, then acknowledges it); and, per
repeat, a sender ``hotline run --connect ... --until-delivered --json`` with its standard
input a pipe. Once the sender prints ``peer up``, the clock starts and the lines go into the
pipe (``cat file | hotline run`` writes them in 64 KiB chunks too); the clock stops when the
sender exits, which it does once every line is stored and delivered. Start-up and the
handshake are outside the clock (the process's whole life is reported beside it). Both
stores are SQLite with the default durability, FULL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

__all__ = ["cli_rates"]

CHUNK = 1 << 16


def hotline_command() -> list[str]:
    """The installed ``hotline`` script beside this interpreter, else ``python -m hotline``."""
    script = Path(sys.executable).with_name("hotline")
    if script.exists():
        return [str(script)]
    found = shutil.which("hotline")
    return [found] if found else [sys.executable, "-m", "hotline"]


async def _keygen(hotline: list[str], path: Path) -> None:
    await trio.run_process([*hotline, "keygen", str(path)], stdout=subprocess.DEVNULL,
                           capture_stderr=True)


async def _listening_address(process: trio.Process, timeout: float) -> str:
    assert process.stderr is not None
    buffer = b""
    with trio.fail_after(timeout):
        while b"\n" not in buffer or b"listening on" not in buffer:
            chunk = await process.stderr.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"the receiver ended before listening: {buffer!r}")
            buffer += chunk
    for line in buffer.decode(errors="replace").splitlines():
        if "listening on" in line:
            return line.rsplit(" ", 1)[1]
    raise RuntimeError(f"no listening address in {buffer!r}")


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(CHUNK):
        pass


async def _one_run(hotline: list[str], tmp: Path, address: str, payload: bytes, lines: int,
                   timeout: float) -> dict[str, float]:
    started = time.perf_counter()
    sender = await trio.lowlevel.open_process(
        [*hotline, "run", "--key", str(tmp / "a"), "--peer", str(tmp / "b.pub"),
         "--data", str(tmp / "a-data"), "--connect", address, "--until-delivered", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert sender.stdin is not None
    assert sender.stdout is not None
    stdout = sender.stdout
    try:
        with trio.fail_after(timeout):
            buffer = b""
            while True:  # Until the peer is up; later output only needs draining.
                chunk = await stdout.receive_some(CHUNK)
                if not chunk:
                    raise RuntimeError("the sender ended before the peer was up")
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                if any(json.loads(line).get("event") == "peer"
                       and json.loads(line).get("state") == "up" for line in complete):
                    break
            up = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, stdout)
                for offset in range(0, len(payload), CHUNK):
                    await sender.stdin.send_all(payload[offset:offset + CHUNK])
                await sender.stdin.aclose()
                status = await sender.wait()
            done = time.perf_counter()
    finally:
        if sender.returncode is None:
            sender.kill()
            with trio.CancelScope(shield=True):
                await sender.wait()
    if status != 0:
        raise RuntimeError(f"hotline run --until-delivered exited with status {status}")
    return {"rate": lines / (done - up), "elapsed": done - up, "start_to_up": up - started,
            "process_life": done - started}


async def cli_rates(tmp: Path, lines: int, width: int, repeats: int,
                    timeout: float = 600.0) -> dict[str, Any]:
    """Messages per second from the first line piped in to the sender's exit, per repeat."""
    tmp.mkdir(parents=True, exist_ok=True)
    hotline = hotline_command()
    for name in ("a", "b"):
        await _keygen(hotline, tmp / name)
    # Printable, distinct lines: the first characters number them.
    payload = b"".join(
        (b"%08d" % index + os.urandom(width).hex().encode())[:width] + b"\n"
        for index in range(lines)
    )
    receiver = await trio.lowlevel.open_process(
        [*hotline, "run", "--key", str(tmp / "b"), "--peer", str(tmp / "a.pub"),
         "--data", str(tmp / "b-data"), "--listen", "127.0.0.1:0", "--json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    runs = []
    try:
        address = await _listening_address(receiver, timeout=60)
        async with trio.open_nursery() as nursery:
            assert receiver.stderr is not None
            nursery.start_soon(_drain, receiver.stderr)
            runs = [await _one_run(hotline, tmp, address, payload, lines, timeout)
                    for _ in range(repeats)]
            nursery.cancel_scope.cancel()
    finally:
        receiver.terminate()
        with trio.move_on_after(10):
            await receiver.wait()
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
    return {"rates": [r["rate"] for r in runs], "runs": runs, "command": hotline}
