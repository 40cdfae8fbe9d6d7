"""The examples run as documented: both.py alone, and bob.py with alice.py as two processes.

Each example runs with this interpreter in a temporary folder (its keys and stores go there)
on a free port of 127.0.0.1. Output is read by a thread per pipe with deadlines, and every
child is killed in a ``finally``, so a broken example fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TIMEOUT = 20.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Example:
    """One example script running as a child process, its output collected by threads."""

    def __init__(self, script: str, args: list[str], cwd: Path, stdin: str | None = None) -> None:
        self.name = script
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdin is not None
        if stdin is not None:
            self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: IO[str], sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))  # noqa: PERF401 (each line as it arrives)

    def describe(self) -> str:
        return "\n".join([f"--- {self.name} stdout:", *self.lines,
                          f"--- {self.name} stderr:", *self.errors])

    def wait_line(self, pattern: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: no line matching {pattern!r}\n{self.describe()}")

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s\n"
                                 + self.describe()) from None
        for thread in self._threads:
            thread.join(5)
        assert "Traceback" not in "\n".join(self.errors), self.describe()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Example]]:
    children: list[Example] = []

    def run(script: str, *args: str, stdin: str | None = None) -> Example:
        child = Example(script, list(args), tmp_path, stdin)
        children.append(child)
        return child

    try:
        yield run
    finally:
        for child in children:
            child.kill()


def test_both_runs_a_line_in_one_process(start: Callable[..., Example]) -> None:
    both = start("both.py")
    assert both.wait_exit() == 0, both.describe()
    out = both.lines
    assert re.fullmatch(r"bob: +listening on 127\.0\.0\.1:\d+", out[0])
    queued = [line for line in out if line.startswith("alice: -> ")]
    assert [line.split()[2] for line in queued] == ["#1", "#2", "#3"]
    assert [line for line in out if line.startswith("bob:   <- #")] == [
        "bob:   <- #1 'Radio check. How do you read?'",
        "bob:   <- #2 'Convoy moving north at 14:00.'",
        "bob:   <- #3 'Over and out.'",
    ]
    answers = [line for line in out if line.startswith("alice: <- ")]
    assert answers == [f"alice: <- #{n} 'copy #{n}'" for n in (1, 2, 3)]
    assert "alice: receipt: acknowledged up to #3" in out
    assert any(line.startswith("alice: receipt: delivered up to #") for line in out)
    assert out[-2:] == ["alice: transcript verified: 3 sent, 3 received",
                        "bob: transcript verified: 3 sent, 3 received"]


def test_bob_and_alice_in_two_processes(start: Callable[..., Example], tmp_path: Path) -> None:
    address = ["--address", f"127.0.0.1:{free_port()}"]

    # First run: bob makes both key pairs in the shared folder and listens.
    bob = start("bob.py", *address, "--count", "2")
    bob.wait_line(r"^bob: listening on 127\.0\.0\.1:\d+ as SHA256:")
    alice = start("alice.py", *address, "Radio check.", "How do you read?")
    assert alice.wait_exit() == 0, alice.describe()
    assert bob.wait_exit() == 0, bob.describe()
    received = [line for line in bob.lines if " <- " in line]
    assert [line.split(" (sent")[0] for line in received] == [
        "bob: <- #1 'Radio check.'", "bob: <- #2 'How do you read?'"]
    for line in received:
        assert re.search(r" \(sent \d\d:\d\d:\d\d UTC\)$", line), line
    assert "bob: receipt: acknowledged up to #2" in bob.lines
    assert bob.lines[-1] == "bob: done after 2 message(s)"
    assert [line for line in alice.lines if " <- " in line] == [
        "alice: <- #1 'copy #1'", "alice: <- #2 'copy #2'"]
    assert "alice: bob acknowledged everything up to #2" in alice.lines
    assert alice.lines[-1] == "alice: done"

    folder = tmp_path / "hotline-example"
    for name in ("alice", "bob"):
        assert stat.S_IMODE((folder / "keys" / name).stat().st_mode) == 0o600
        assert stat.S_IMODE((folder / "keys" / f"{name}.pub").stat().st_mode) == 0o644
        # The stores are laid out as the command line's: it can check them.
        verified = subprocess.run(
            [sys.executable, "-m", "hotline", "verify", str(folder / name)], env=_env(),
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "messages: 2 sent, 2 received" in verified.stdout

    # Second run: alice first, from stdin; her messages wait in her store until bob listens.
    # The stores carry the numbering on, and bob runs until Ctrl-C.
    alice = start("alice.py", *address, stdin="third\n\nfourth\n")
    alice.wait_line(r"^alice: -> #4 'fourth' queued$")
    bob = start("bob.py", *address)
    assert alice.wait_exit() == 0, alice.describe()
    assert [line for line in alice.lines if " <- " in line] == [
        "alice: <- #3 'copy #3'", "alice: <- #4 'copy #4'"]
    bob.wait_line(r"^bob: <- #4 'fourth'")
    assert bob.proc.poll() is None, bob.describe()  # no --count: still running
    bob.proc.send_signal(signal.SIGINT)
    assert bob.wait_exit() == 0, bob.describe()
    assert bob.lines[-2:] == ["bob: hanging up", "bob: done after 2 message(s)"]


def test_alice_and_bob_take_keys_from_arguments(
    start: Callable[..., Example], tmp_path: Path
) -> None:
    import hotline

    for name in ("ann", "ben"):
        hotline.Identity.generate(name).save(tmp_path / name)
    address = ["--address", f"127.0.0.1:{free_port()}", "--dir", "stores"]
    bob = start("bob.py", *address, "--count", "1", "--key", "ben", "--peer", "ann.pub")
    expected = hotline.PublicKey.load(tmp_path / "ben.pub").fingerprint()
    assert bob.wait_line(r"^bob: listening").endswith(f" as {expected}")
    alice = start("alice.py", *address, "--key", "ann", "--peer", "ben.pub", "hello")
    assert alice.wait_exit() == 0, alice.describe()
    assert bob.wait_exit() == 0, bob.describe()
    assert "alice: <- #1 'copy #1'" in alice.lines
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == ["alice", "bob"]
