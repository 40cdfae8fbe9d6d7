"""The parent's side of a bench child: start it, ask it things, read its events."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

__all__ = ["ROOT", "BenchError", "Proc"]

#: The directory holding the ``bench`` package (the repository root): children import from it.
ROOT = Path(__file__).resolve().parent.parent

Event = dict[str, Any]


class BenchError(Exception):
    """A child failed a command, died, or did not answer in time."""


def is_liveness(event: Event, line: str, state: str | None = None) -> bool:
    """Whether ``event`` is a liveness change of ``line`` (to ``state``, if given)."""
    return (event.get("event") == "liveness" and event.get("name") == line
            and (state is None or event["state"] == state))


class Proc:
    """A running ``python -m bench.<module>`` child speaking the protocol of bench._child."""

    def __init__(self, name: str, process: trio.Process, stderr_path: Path) -> None:
        self.name = name
        self.process = process
        self.stderr_path = stderr_path
        self.events: list[Event] = []
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._changed = trio.Event()
        self._ended = False
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, name: str, module: str, args: list[str], log_dir: Path
    ) -> Proc:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        env["BENCH_CHILD_NAME"] = name
        stderr_path = log_dir / f"{name}.stderr"
        with open(stderr_path, "wb") as stderr:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                cwd=str(ROOT), env=env,
            )
        proc = cls(name, process, stderr_path)
        nursery.start_soon(proc._read)
        await proc.wait_event(lambda e: e.get("event") == "ready", timeout=60)
        return proc

    def stderr_tail(self, lines: int = 25) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            while chunk := await self.process.stdout.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if "id" in record and "event" not in record:
                        self._replies[record["id"]] = record
                    else:
                        self.events.append(record)
                self._changed.set()
                self._changed = trio.Event()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            self._ended = True
            self._changed.set()

    def _dead(self, what: str) -> BenchError:
        return BenchError(f"{self.name}: {what}\n--- stderr of {self.name} ---\n"
                          f"{self.stderr_tail()}")

    async def request(self, cmd: str, *, timeout: float = 120.0, **params: Any) -> Any:
        """Run ``cmd`` in the child and return its result (BenchError if it failed)."""
        request_id = next(self._ids)
        assert self.process.stdin is not None
        line = json.dumps({"id": request_id, "cmd": cmd, **params}) + "\n"
        try:
            await self.process.stdin.send_all(line.encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._dead(f"cannot send {cmd!r}: {exc!r}") from None
        with trio.move_on_after(timeout):
            while request_id not in self._replies:
                if self._ended:
                    raise self._dead(f"ended while running {cmd!r}")
                await self._changed.wait()
            reply = self._replies.pop(request_id)
            if not reply["ok"]:
                raise BenchError(f"{self.name}: {cmd} failed:\n{reply['error']}")
            return reply["result"]
        raise self._dead(f"{cmd!r} did not answer within {timeout} s")

    async def wait_event(self, predicate: Callable[[Event], bool], *, timeout: float,
                         since: int = 0) -> Event:
        """The first event (from index ``since`` on) matching ``predicate``."""
        seen = since
        with trio.move_on_after(timeout):
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                if self._ended:
                    raise self._dead("ended while an event was awaited")
                await self._changed.wait()
        raise self._dead(f"no awaited event within {timeout} s")

    def liveness_events(self, line: str, t0: float, t1: float) -> list[Event]:
        return [e for e in self.events if is_liveness(e, line) and t0 <= e["t"] <= t1]

    async def wait_liveness(self, line: str, state: str, *, since: int,
                            timeout: float) -> Event:
        """The first liveness event of ``line`` in ``state`` from event index ``since`` on."""
        return await self.wait_event(lambda e: is_liveness(e, line, state), since=since,
                                     timeout=timeout)

    def stop(self) -> float:
        """Freeze the child (SIGSTOP); returns the monotonic time just before the signal."""
        t = time.monotonic()
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True
        return t

    def resume(self) -> None:
        if self.stopped:
            os.kill(self.pid, signal.SIGCONT)
            self.stopped = False

    async def aclose(self, timeout: float = 10.0) -> None:
        """Close its standard input, wait for it to end, kill it if it does not."""
        self.resume()
        if self.process.stdin is not None:
            await self.process.stdin.aclose()
        with trio.move_on_after(timeout):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
