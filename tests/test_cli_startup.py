"""Ctrl-C while ``hotline`` starts: the documented status, never a traceback.

Every child is the real ``python -m hotline``, started with ``-X importtime`` so that it says
on standard error, line by line, which modules it has finished importing. The instants at
which SIGINT is sent are counted from the line that reports ``hotline.cli._parser``, the
first module ``main`` imports once it has taken the signals over. Before that the
interpreter starts, which no code of hotline can change, and then loads hotline's first few
small modules and calls ``main`` (docs/cli.md, "Exit status", says what a signal does there):
that this part stays short is checked apart, by importing them and finding none of the heavy
libraries loaded. Counting from ``hotline.cli`` itself put the earliest instant inside that
documented part, between the import and the call, where a loaded machine sometimes let it
land.

Reuses the helpers of test_cli.py; every wait has a deadline and every child is killed in a
``finally``.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_cli import TIMEOUT, Keys, _env, free_port, keys

__all__ = ["keys"]  # the fixture of test_cli.py, used here by name

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")

INSTANTS = [round(0.3 * step / 14, 4) for step in range(15)]
"""Seconds from the import of :data:`ENTRY` to the SIGINT: 0 to 0.3 s, 15 of them."""
ENTRY = b"hotline.cli._parser"
"""The first module ``main`` imports after it has taken the signals over."""

HEAVY = ["cryptography", "nacl", "trio", "msgpack", "sqlite3", "argparse", "logging"]


def _interrupt_at(args: list[str], delay: float, cwd: Path, stdin: bytes) -> tuple[int, str]:
    """Start ``hotline ARGS``, send SIGINT ``delay`` seconds after it has imported
    :data:`ENTRY`, and return its exit status and standard error."""
    read_end, write_end = os.pipe()
    os.write(write_end, stdin)  # small: fits in the pipe at once
    os.close(write_end)
    try:
        child = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "hotline", *args],
            cwd=cwd, env=_env(), stdin=read_end, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(read_end)
    assert child.stderr is not None
    try:
        seen = _read_until_imported(child.stderr.fileno())
        # The point of the test is the instant: a sleep is the measure, not a wait for an event.
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, rest = child.communicate(timeout=TIMEOUT)
        return child.returncode, (seen + rest).decode("utf-8", errors="replace")
    finally:
        child.kill()
        child.wait(timeout=TIMEOUT)


def _read_until_imported(fd: int) -> bytes:
    """What the child wrote to standard error up to and including ``-X importtime``'s line
    for :data:`ENTRY`."""
    seen = b""
    deadline = time.monotonic() + TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not any(line.rstrip().endswith(b"| " + ENTRY) for line in seen.splitlines()):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the child never imported {ENTRY!r}: {seen[-2000:]!r}"
            if selector.select(remaining):
                chunk = os.read(fd, 65536)
                assert chunk, f"the child ended before importing {ENTRY!r}: {seen[-2000:]!r}"
                seen += chunk
    return seen


def _commands(
    keys: Keys, data: Path
) -> list[tuple[str, list[str], bytes, set[int]]]:
    """(name, arguments, standard input, the statuses a SIGINT may end it with); ``data`` is
    a directory of this child's own: one ``run`` per data directory."""
    alice, bob = str(keys.alice), str(Keys.pub(keys.bob))
    unreachable = f"127.0.0.1:{free_port()}"
    return [
        # A signal is how a plain run ends: 0, however early it comes.
        ("run", ["run", "--key", alice, "--peer", bob, "--data", str(data / "listen"),
                 "--listen", "127.0.0.1:0", "--json"], b"", {0}),
        # Never delivered (the peer is not there): interrupted, 4.
        ("run --until-delivered",
         ["run", "--key", alice, "--peer", bob, "--data", str(data / "deliver"),
          "--connect", unreachable, "--until-delivered", "--json"], b"hello\n", {4}),
        # Over in a moment: interrupted (4) or, once its work is done, 0.
        ("fingerprint", ["fingerprint", alice], b"", {0, 4}),
    ]


def test_sigint_at_any_instant_of_start_up_gives_the_documented_status(
    keys: Keys, tmp_path: Path
) -> None:
    cases = [
        (name, args, stdin, allowed, delay)
        for index, delay in enumerate(INSTANTS)
        for name, args, stdin, allowed in _commands(keys, tmp_path / str(index))
    ]

    def run(case: tuple[str, list[str], bytes, set[int], float]) -> str | None:
        name, args, stdin, allowed, delay = case
        status, stderr = _interrupt_at(args, delay, tmp_path, stdin)
        if status in allowed and "Traceback" not in stderr:
            return None
        problem = stderr[stderr.find("Traceback"):] if "Traceback" in stderr else stderr[-500:]
        return f"{name} at {delay * 1000:.0f} ms: status {status}, expected {allowed}: {problem}"

    with ThreadPoolExecutor(max_workers=3) as pool:
        failures = [failure for failure in pool.map(run, cases) if failure is not None]
    assert failures == [], "\n".join(failures)


def test_the_package_and_its_command_line_import_no_heavy_library() -> None:
    """What runs before ``main`` takes the signals over stays small: none of these."""
    code = (
        "import sys, hotline, hotline.cli\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
        timeout=TIMEOUT, check=True,
    )
    assert result.stdout.strip() == "[]"
