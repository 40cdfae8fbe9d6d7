"""The ``hotline`` command on a terminal: a pseudo-terminal (Python's ``pty``) as a user's.

A terminal is one open file shared by the shell and every program in it: its flags (such as
O_NONBLOCK) are shared too, and the shell resets them around job control. These tests give
``hotline`` a pty, read everything it writes there from the master side in a thread, and
check what a person at the terminal would see. Job control is done by a real interactive
``bash`` on the pty, typing Ctrl-Z, ``fg`` and Ctrl-C as a person does. Every wait has a
deadline and every child is killed in a ``finally``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cli import TIMEOUT, Keys, Node, _env, free_port, keys, spawn

__all__ = ["keys", "spawn"]  # fixtures shared with test_cli.py

pytestmark = pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")


def _controlling_terminal() -> None:
    # In the child, after setsid: make the pty (its stdin) the session's terminal, so that
    # /dev/tty, Ctrl-C and Ctrl-Z reach it as they do in a real login.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A process whose stdin, stdout and stderr are a pty, and what it printed there."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.master, self.slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=self.slave, stdout=self.slave, stderr=self.slave,
            env=env or _env(), start_new_session=True, preexec_fn=_controlling_terminal,
        )
        self.output = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:  # EIO: every slave side is closed
                chunk = b""
            with self._changed:
                if not chunk:
                    self._changed.notify_all()
                    return
                self.output += chunk
                self._changed.notify_all()

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait_for(self, pattern: bytes, timeout: float = TIMEOUT, start: int = 0) -> int:
        """The offset just after the first ``pattern`` (a regex) printed at or after ``start``."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        with self._changed:
            while True:
                found = compiled.search(self.output, start)
                if found:
                    return found.end()
                left = deadline - time.monotonic()
                if left <= 0:
                    shown = bytes(self.output[-2000:]).decode(errors="replace")
                    raise AssertionError(f"no {pattern!r} on the terminal; it shows:\n{shown}")
                self._changed.wait(min(left, 0.1))

    def nonblocking(self) -> bool:
        """Whether O_NONBLOCK is set on the terminal's shared open file (the child's stdin)."""
        return bool(fcntl.fcntl(self.slave, fcntl.F_GETFL) & os.O_NONBLOCK)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for fd in (self.slave, self.master):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._reader.join(5)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def start(*argv: object, env: dict[str, str] | None = None) -> Terminal:
        term = Terminal([str(arg) for arg in argv], tmp_path, env)
        opened.append(term)
        return term

    try:
        yield start
    finally:
        for term in opened:
            term.close()


def hotline(*args: object) -> list[object]:
    return [sys.executable, "-m", "hotline", *args]


def _listener(spawn: Callable[..., Node], keys: Keys, port: int) -> Node:
    return spawn("bob", "run", "--key", keys.bob, "--peer", Keys.pub(keys.alice),
                 "--data", "bob-data", "--listen", f"127.0.0.1:{port}", "--json",
                 "--heartbeat", "0.5")


def test_run_leaves_the_terminal_flags_alone(
    terminal: Callable[..., Terminal], keys: Keys
) -> None:
    term = terminal(*hotline("run", "--key", keys.alice, "--peer", Keys.pub(keys.bob),
                             "--data", "data", "--listen", f"127.0.0.1:{free_port()}"))
    term.wait_for(rb"listening on")
    term.type(b"first\n")
    term.wait_for(rb"#1 queued")
    assert not term.nonblocking(), "hotline made the shared terminal non-blocking"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for job control")
def test_ctrl_z_then_fg_leaves_the_node_working(
    terminal: Callable[..., Terminal], spawn: Callable[..., Node], keys: Keys, tmp_path: Path
) -> None:
    """Suspended and resumed by the shell, the node keeps the line up and reads again."""
    port = free_port()
    bob = _listener(spawn, keys, port)
    env = {**_env(), "PS1": "PROMPT> ", "HISTFILE": "/dev/null", "TERM": "dumb"}
    shell = terminal("bash", "--norc", "--noprofile", "-i", env=env)
    shell.wait_for(rb"PROMPT> ")
    command = shlex.join([str(arg) for arg in hotline(
        "run", "--key", keys.alice, "--peer", Keys.pub(keys.bob), "--data", "alice-data",
        "--connect", f"127.0.0.1:{port}", "--heartbeat", "0.5")])
    shell.type(command.encode() + b"\n")
    shell.wait_for(rb"peer up")
    bob.wait_event(event="peer", state="up")
    mark = len(shell.output)
    shell.type(b"\x1a")  # Ctrl-Z: the terminal sends SIGTSTP to the job
    mark = shell.wait_for(rb"Stopped", start=mark)
    shell.type(b"fg\n")
    mark = shell.wait_for(re.escape(command.encode()), start=mark)  # bash names the job
    shell.type(b"typed after fg\n")
    message = bob.wait_event(event="message", body="typed after fg")
    assert message["seq"] == 1
    shell.wait_for(rb"<- acknowledged up to #1", start=mark)
    # A node frozen after reading that line would send no heartbeat: bob declares a peer
    # down after three intervals (1.5 s) of silence. Nothing but time can show its absence.
    time.sleep(2.0)
    assert [e["state"] for e in bob.of("peer")] == ["up"], bob.describe()
    mark = len(shell.output)
    started = time.monotonic()
    shell.type(b"\x03")  # Ctrl-C
    shell.wait_for(rb"PROMPT> ", start=mark)  # the job has ended
    assert time.monotonic() - started < 5
    shell.type(b"echo status=$?\n")
    shell.wait_for(rb"status=0")
    assert b"Traceback" not in shell.output


def test_sigterm_stops_run_while_the_terminal_is_silent(
    terminal: Callable[..., Terminal], keys: Keys
) -> None:
    """The thread blocked reading the terminal does not keep the process alive."""
    term = terminal(*hotline("run", "--key", keys.alice, "--peer", Keys.pub(keys.bob),
                             "--data", "data", "--listen", f"127.0.0.1:{free_port()}"))
    term.wait_for(rb"listening on")
    started = time.monotonic()
    term.proc.send_signal(signal.SIGTERM)
    assert term.proc.wait(TIMEOUT) == 0
    assert time.monotonic() - started < 3
    assert b"Traceback" not in term.output


def test_a_one_mebibyte_message_is_shown_whole_before_it_is_acknowledged(
    terminal: Callable[..., Terminal], spawn: Callable[..., Node], keys: Keys
) -> None:
    port = free_port()
    bob = terminal(*hotline("run", "--key", keys.bob, "--peer", Keys.pub(keys.alice),
                            "--data", "bob-data", "--listen", f"127.0.0.1:{port}"))
    bob.wait_for(rb"listening on")
    alice = spawn("alice", "run", "--key", keys.alice, "--peer", Keys.pub(keys.bob),
                  "--data", "alice-data", "--connect", f"127.0.0.1:{port}", "--json")
    body = base64.b64encode(os.urandom(3 << 18))  # exactly 1 MiB, the largest message
    assert len(body) == 1 << 20
    alice.send(body.decode())
    alice.wait_event(event="acknowledged", upto=1)
    # The terminal turns "\n" into "\r\n".
    bob.wait_for(rb"<- #1 \[[^]]*\] " + re.escape(body) + rb"\r\n")
    assert not bob.nonblocking()


def test_no_acknowledgement_when_standard_output_fails(
    spawn: Callable[..., Node], keys: Keys, tmp_path: Path
) -> None:
    """A message that could not be shown is not acknowledged; run stops with one error line."""
    port = free_port()
    read_end, write_end = os.pipe()
    bob = subprocess.Popen(
        hotline("run", "--key", keys.bob, "--peer", Keys.pub(keys.alice), "--data",
                "bob-data", "--listen", f"127.0.0.1:{port}", "--json"),
        cwd=tmp_path, stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.PIPE,
        env=_env(),
    )
    os.close(write_end)
    try:
        alice = spawn("alice", "run", "--key", keys.alice, "--peer", Keys.pub(keys.bob),
                      "--data", "alice-data", "--connect", f"127.0.0.1:{port}", "--json")
        alice.wait_event(event="peer", state="up")
        with os.fdopen(read_end, "rb") as events:
            assert events.readline().startswith(b'{"event": "start"')
            assert b'"state": "up"' in events.readline()
        # Whoever reads bob's output has gone: the next line bob writes fails (EPIPE).
        alice.send("nobody will see this")
        alice.wait_event(event="delivered", upto=1)
        _, stderr = bob.communicate(timeout=TIMEOUT)
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait(5)
    lines = stderr.decode().splitlines()
    assert bob.returncode == 1, stderr
    assert "Traceback" not in stderr.decode()
    assert [line for line in lines if "listening on" not in line] == [
        "hotline: error: cannot write to standard output: Broken pipe: stopped "
        "(messages not shown are shown by the next run)"
    ]
    assert alice.of("acknowledged") == []
    log = subprocess.run(hotline("log", "bob-data", "--json"), cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert log.returncode == 0, log.stderr
    assert '"kind": "message"' in log.stdout
    assert '"kind": "acknowledged"' not in log.stdout


def test_run_asks_for_the_passphrase_on_the_terminal(
    terminal: Callable[..., Terminal], keys: Keys, tmp_path: Path
) -> None:
    """The prompt comes before standard input is read for messages."""
    (tmp_path / "pass").write_text("open sesame\n")
    (tmp_path / "pass").chmod(0o600)
    made = subprocess.run(hotline("keygen", "locked", "--passphrase-file", "pass"),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert made.returncode == 0, made.stderr
    term = terminal(*hotline("run", "--key", "locked", "--peer", Keys.pub(keys.bob),
                             "--data", "data", "--listen", f"127.0.0.1:{free_port()}",
                             "--until-delivered", "--json"))
    term.wait_for(rb"passphrase for 'locked': ")
    term.type(b"open sesame\n")
    term.wait_for(rb"listening on")
    term.type(b"first message\n")
    term.wait_for(rb'"event": "queued", "seq": 1')
    term.proc.send_signal(signal.SIGTERM)
    assert term.proc.wait(TIMEOUT) == 4  # interrupted before #1 was delivered
    assert b"Traceback" not in term.output


def test_fingerprint_asks_for_the_passphrase_and_ctrl_c_stops_it(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    (tmp_path / "pass").write_text("open sesame\n")
    (tmp_path / "pass").chmod(0o600)
    made = subprocess.run(hotline("keygen", "locked", "--passphrase-file", "pass"),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert made.returncode == 0, made.stderr
    term = terminal(*hotline("fingerprint", "locked"))
    term.wait_for(rb"passphrase for 'locked': ")
    term.type(b"open sesame\n")
    term.wait_for(re.escape(made.stdout.strip().encode()))
    assert term.proc.wait(TIMEOUT) == 0

    interrupted = terminal(*hotline("fingerprint", "locked"))
    interrupted.wait_for(rb"passphrase for 'locked': ")
    interrupted.type(b"\x03")  # Ctrl-C at the prompt
    assert interrupted.proc.wait(TIMEOUT) == 4
    assert b"Traceback" not in interrupted.output
