"""A real ``hotline`` process for the command-line tests: its output collected by threads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class Child:
    """A ``hotline`` process whose standard output and error are collected by threads.

    ``timeout`` bounds each wait (and the exit after :meth:`stop`): a guard against hangs.
    """

    def __init__(self, args: list[object], cwd: Path, *, timeout: float) -> None:
        self.timeout = timeout
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hotline", *map(str, args)], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._changed:
                sink.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, found: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._changed:
            while not (result := found()):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {what} (exit {self.proc.poll()})\n" + self.describe())
                self._changed.wait(min(left, 0.1))
            return result

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The JSON events of ``kind`` printed so far."""
        found = [json.loads(line) for line in list(self.stdout)]
        return [event for event in found if event["event"] == kind]

    def describe(self) -> str:
        return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(self.timeout)


@contextmanager
def spawner(cwd: Path, *, timeout: float) -> Iterator[Callable[..., Child]]:
    """``start(*args)`` runs ``hotline *args`` in ``cwd``; whatever still runs at the end is
    killed."""
    children: list[Child] = []

    def start(*args: object) -> Child:
        child = Child(list(args), cwd, timeout=timeout)
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait(5)
