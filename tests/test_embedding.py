"""Embedding hotline in other programs, tested as real processes.

- examples/sync_peer.py and examples/asyncio_peer.py exchange messages with a real
  ``hotline run`` node (separate processes, TCP on 127.0.0.1), and the node's store is read
  with ``open_history`` while the node still runs.
- A program that configures no logging prints nothing when hotline logs a warning (the
  ``NullHandler`` on the ``hotline`` logger).
- ``mypy --strict`` finds hotline's types for the examples from a folder outside the
  checkout, where only the installed package can be found (skipped without mypy, or when the
  package under test is not the installed one).

Reuses the child-process helpers of test_cli.py: every wait has a deadline and every child
is killed in a ``finally``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli import TIMEOUT, Keys, Node, _env, free_port, keys, spawn

import hotline

__all__ = ["keys", "spawn"]  # fixtures of test_cli.py, used here by name

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ("sync_peer.py", "asyncio_peer.py")


def run_example(script: str, args: list[object], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=_env(), check=False,
    )


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_exchanges_messages_with_a_hotline_run_node(
    script: str, keys: Keys, spawn: Callable[..., Node], tmp_path: Path
) -> None:
    port = free_port()
    node = spawn("node", "run", "--key", keys.bob, "--peer", keys.pub(keys.alice),
                 "--data", tmp_path / "node", "--listen", f"127.0.0.1:{port}", "--json")
    # Queued before the program dials: the node sends them once the program connects.
    node.send("first from the node", "second from the node")
    program = run_example(script, [
        "--key", keys.alice, "--peer", keys.pub(keys.bob), "--connect", f"127.0.0.1:{port}",
        "--store", tmp_path / "program.db", "--expect", 2, "--timeout", TIMEOUT,
        "hello node", "ça va? ✓",
    ], tmp_path)
    assert program.returncode == 0, program.stdout + program.stderr + node.describe()
    who = "sync" if script == "sync_peer.py" else "asyncio"
    lines = program.stdout.splitlines()
    assert lines[:4] == [
        f"{who}: #1 delivered (the node holds up to #1)",
        f"{who}: #2 delivered (the node holds up to #2)",
        f"{who}: <- #1 first from the node",
        f"{who}: <- #2 second from the node",
    ], program.stdout
    assert program.stderr == ""
    # The node printed the program's messages, and got its acknowledgement of both of its own.
    assert node.wait_event(event="message", seq=1)["body"] == "hello node"
    assert node.wait_event(event="message", seq=2)["body"] == "ça va? ✓"
    node.wait_event(event="acknowledged", upto=2)

    # The node still runs and holds its store: open_history reads it anyway, read-only.
    assert node.proc.poll() is None
    with hotline.open_history(tmp_path / "node") as history:
        messages = [(m.direction.value, m.seq, m.body) for m in history.messages()]
        assert history.identity == hotline.PublicKey.load(keys.pub(keys.bob))
    assert [m for m in messages if m[0] == "out"] == [
        ("out", 1, b"first from the node"), ("out", 2, b"second from the node")]
    assert [m for m in messages if m[0] == "in"] == [
        ("in", 1, b"hello node"), ("in", 2, "ça va? ✓".encode())]

    # The program's own store, read after it exited, holds the node's acknowledgement.
    with hotline.open_history(tmp_path / "program.db") as history:
        receipts = [(r.direction.value, r.kind.value, r.upto)
                    for r in history if isinstance(r, hotline.HistoryReceipt)]
    assert ("in", "delivered", 2) in receipts
    assert ("out", "acknowledged", 2) in receipts


QUIET_PROGRAM = r"""
import logging, sys
import trio
import hotline

warnings = []


def seen(record):
    # A filter, not a handler: it watches what reaches the logger and configures nothing.
    warnings.append(record.getMessage())
    return True


async def main():
    me, peer = hotline.Identity.generate(), hotline.Identity.generate()
    async with hotline.open_line(me, peer.public_key, store=hotline.MemoryStore(),
                                 listen=("127.0.0.1", 0)) as line:
        logging.getLogger("hotline").addFilter(seen)
        # A stranger that sends junk: the line refuses it, with a warning.
        stream = await trio.open_tcp_stream(*line.listen_addresses[0])
        await stream.send_all(bytes(200))
        await stream.aclose()
        with trio.fail_after(10):
            while not any("refused" in text for text in warnings):
                await trio.sleep(0.01)
        logging.getLogger("hotline.driver").error("an error of a module of the driver")


trio.run(main)
print("warned:", any("refused" in text for text in warnings))
"""


def test_a_program_without_logging_configured_prints_nothing_of_hotline() -> None:
    result = subprocess.run(
        [sys.executable, "-c", QUIET_PROGRAM], capture_output=True, text=True,
        timeout=TIMEOUT, env=_env(), check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "warned: True\n"
    assert result.stderr == ""


def test_without_the_null_handler_the_same_program_would_print() -> None:
    """The check above can fail: remove the handler and logging.lastResort prints."""
    program = QUIET_PROGRAM.replace(
        "        logging.getLogger(\"hotline\").addFilter(seen)\n",
        "        logging.getLogger(\"hotline\").addFilter(seen)\n"
        "        logging.getLogger(\"hotline\").handlers.clear()\n",
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True,
        timeout=TIMEOUT, env=_env(), check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "incoming handshake refused" in result.stderr
    assert "an error of a module of the driver" in result.stderr


def test_an_application_logging_config_still_sees_hotline_warnings() -> None:
    program = QUIET_PROGRAM.replace(
        "warnings = []\n",
        "warnings = []\nlogging.basicConfig(level=logging.INFO, stream=sys.stderr)\n",
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True,
        timeout=TIMEOUT, env=_env(), check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING:hotline:incoming handshake refused" in result.stderr
    assert "ERROR:hotline.driver:an error of a module of the driver" in result.stderr


def test_every_module_that_logs_loads_the_null_handler_first() -> None:
    """The NullHandler is added where the driver package loads: every module that logs must
    be in that package, or in the command line (which configures logging itself)."""
    logging_modules = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "hotline").rglob("*.py")
        if "getLogger(" in path.read_text()
    }
    assert logging_modules, "no module logs: this check has nothing to check"
    outside = {name for name in logging_modules
               if not name.startswith(("hotline/driver/", "hotline/cli/"))}
    assert outside == set()


def _env_without_checkout() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("MYPYPATH", None)
    return env


@pytest.mark.skipif(shutil.which("mypy") is None and importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[dev]')")
def test_mypy_strict_finds_the_installed_types_for_the_examples(tmp_path: Path) -> None:
    """Outside the checkout, without PYTHONPATH: only an installed hotline can be found."""
    probe = subprocess.run(
        [sys.executable, "-c", "import hotline, sys; print(hotline.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env=_env_without_checkout(),
    )
    if probe.returncode != 0 or Path(probe.stdout.strip()).resolve() != (
            REPO / "hotline" / "__init__.py").resolve():
        pytest.skip("this checkout is not the installed hotline (pip install -e .)")
    for script in EXAMPLES:
        shutil.copy(REPO / "examples" / script, tmp_path / script)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *EXAMPLES],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env=_env_without_checkout(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 2 source files" in result.stdout
