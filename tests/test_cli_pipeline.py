"""``hotline run`` queues the lines it reads without waiting for each one's commit.

The first two tests run the real executable as separate processes over TCP, as test_cli.py
does (every wait has a deadline, every child is killed in a ``finally``): thousands of piped
lines all delivered, and a run stopped mid-input that reports exactly what it stored. The
last one runs the command's trio function in this process over a store whose commit the test
holds, to reach the one case no real disk shows on demand: a line queued and never stored
because the line closed first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import hotline.driver
from hotline import Config, Identity, PublicKey, SQLiteStore
from hotline.cli._run import _run, _StopRequest
from hotline.cli._status import EXIT_INTERRUPTED, EXIT_NOT_SENT, EXIT_OK
from hotline.driver import Line
from hotline.store import Batch, MemoryStore

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and pipes are POSIX")

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120.0
"""Seconds a whole run may take: a guard against hangs, far above the normal (a few seconds
for 5,000 lines even on a busy machine)."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "hotline", *map(str, args)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("alice", "bob"):
        subprocess.run(command("keygen", name), cwd=folder, env=_env(), check=True,
                       capture_output=True, timeout=TIMEOUT)
    return folder


@contextlib.contextmanager
def bob_listening(keys: Path, cwd: Path) -> Iterator[tuple[int, Path]]:
    """Bob's ``run --listen``, its JSON events written to a file; stopped with SIGTERM."""
    port = free_port()
    out = cwd / "bob.jsonl"
    with out.open("wb") as stdout, (cwd / "bob.err").open("wb") as stderr:
        bob = subprocess.Popen(
            command("run", "--key", keys / "bob", "--peer", keys / "alice.pub", "--data",
                    cwd / "bob-data", "--listen", f"127.0.0.1:{port}", "--json"),
            cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        )
        try:
            yield port, out
        finally:
            if bob.poll() is None:
                bob.send_signal(signal.SIGTERM)
                try:
                    bob.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    bob.kill()
                    bob.wait()


def test_thousands_of_piped_lines_are_all_delivered(keys: Path, tmp_path: Path) -> None:
    count = 5000
    lines = [f"{n:05d} " + "x" * 994 for n in range(1, count + 1)]
    with bob_listening(keys, tmp_path) as (port, bob_out):
        alice = subprocess.run(
            command("run", "--key", keys / "alice", "--peer", keys / "bob.pub", "--data",
                    tmp_path / "alice-data", "--connect", f"127.0.0.1:{port}", "--json",
                    "--until-delivered"),
            cwd=tmp_path, env=_env(), input="\n".join(lines) + "\n", capture_output=True,
            text=True, timeout=TIMEOUT, check=False,
        )
        # Delivered means stored on bob's side; bob prints them as its application reads.
        deadline = time.monotonic() + TIMEOUT
        while bob_out.read_bytes().count(b'"event": "message"') < count:
            assert time.monotonic() < deadline, "bob did not print every message"
            time.sleep(0.05)
    assert "Traceback" not in alice.stderr, alice.stderr
    assert alice.returncode == EXIT_OK, alice.stderr
    sent = [json.loads(line) for line in alice.stdout.splitlines()]
    # One "queued" per line, in input order: each printed once its line was stored.
    assert [e["seq"] for e in sent if e["event"] == "queued"] == list(range(1, count + 1))
    assert not [e for e in sent if e["event"] == "error"]
    assert max(e["upto"] for e in sent if e["event"] == "delivered") == count
    # A receipt is shown after the queued events of every message it covers.
    last_queued = 0
    for event in sent:
        if event["event"] == "queued":
            last_queued = event["seq"]
        elif event["event"] in ("delivered", "acknowledged"):
            assert event["upto"] <= last_queued, (event, last_queued)
    received = [e for e in events(bob_out) if e["event"] == "message"]
    assert [(e["seq"], e["body"]) for e in received] == list(
        zip(range(1, count + 1), lines, strict=True)
    )


def test_a_run_stopped_mid_input_reports_exactly_what_it_stored(
    keys: Path, tmp_path: Path
) -> None:
    """Nobody answers, so nothing is delivered; a SIGTERM while lines are being queued. Every
    line the store holds has its "queued" event, in order, and no other line has one."""
    data = tmp_path / "alice-data"
    alice = subprocess.Popen(
        command("run", "--key", keys / "alice", "--peer", keys / "bob.pub", "--data", data,
                "--connect", f"127.0.0.1:{free_port()}", "--json", "--until-delivered"),
        cwd=tmp_path, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    output: list[bytes] = []
    first_queued = threading.Event()

    def read_stdout() -> None:
        assert alice.stdout is not None
        for raw in alice.stdout:
            output.append(raw)
            if json.loads(raw)["event"] == "queued":
                first_queued.set()

    def write_stdin() -> None:
        assert alice.stdin is not None
        with contextlib.suppress(OSError):
            for n in range(1, 3001):
                alice.stdin.write(f"line {n} ".encode() + b"y" * 500 + b"\n")
            alice.stdin.close()

    threads = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=write_stdin, daemon=True)]
    try:
        for thread in threads:
            thread.start()
        assert first_queued.wait(TIMEOUT), "no queued event from alice"
        alice.send_signal(signal.SIGTERM)
        status = alice.wait(TIMEOUT)
        threads[0].join(TIMEOUT)
        assert alice.stderr is not None
        stderr = alice.stderr.read().decode()
    finally:
        if alice.poll() is None:
            alice.kill()
            alice.wait()
    assert "Traceback" not in stderr, stderr
    assert status == EXIT_INTERRUPTED, stderr  # Nothing delivered, nothing refused.
    sent = [json.loads(raw) for raw in output]
    assert {e["event"] for e in sent} <= {"start", "queued", "dial"}, sent
    queued = [e["seq"] for e in sent if e["event"] == "queued"]
    with contextlib.closing(SQLiteStore(data / "hotline.db")) as store:
        state = store.load(
            PublicKey.load(keys / "alice.pub"), PublicKey.load(keys / "bob.pub")
        )
    assert state.sent_seq >= 1
    assert queued == list(range(1, state.sent_seq + 1))


# --- in this process: a line queued, then the line closed before it was stored ---------------


class HeldStore(MemoryStore):
    """Commits the first message at once; holds every later commit in its worker thread until
    ``release`` is set."""

    commits_block = True

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.sent_per_commit: list[list[int]] = []

    def commit(self, batch: Batch) -> None:
        if batch.sent:
            self.sent_per_commit.append([message.seq for message in batch.sent])
            if batch.sent[-1].seq > 1:
                self.release.wait(TIMEOUT)
        super().commit(batch)


async def test_a_line_queued_but_never_stored_counts_as_not_sent(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Line 1 is stored; line 2's commit is held; line 3 is queued behind it. A SIGTERM: the
    close gives up on the held commit, which ends only afterwards. Line 2 is reported queued
    after the close, line 3 as not sent, and the status is 3."""
    alice = Identity.from_seed(bytes([0x6A]) * 32, "alice")
    bob = Identity.from_seed(bytes([0x6B]) * 32, "bob")
    store = HeldStore()
    lines: list[Line] = []
    real_open_line = hotline.driver.open_line

    @contextlib.asynccontextmanager
    async def open_line_on_held_store(
        identity: Identity, peer: PublicKey, **options: Any
    ) -> AsyncIterator[Line]:
        options.pop("durability")
        options["store"] = store
        async with real_open_line(identity, peer, **options) as line:
            lines.append(line)
            yield line

    monkeypatch.setattr(hotline.driver, "open_line", open_line_on_held_store)
    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "rb", buffering=0))
    args = argparse.Namespace(listen=None, connect=None, json=True, until_delivered=True,
                              durability="FULL", ack_within=None, metrics=None)
    stop_request = _StopRequest()
    status: list[int] = []

    async def run() -> None:
        status.append(await _run(alice, bob.public_key, tmp_path / "unused.db", args, Config(),
                                 stop_request))

    async def until(condition: Any) -> None:
        while not condition():
            await trio.sleep(0.01)

    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await until(lambda: lines)
                line = lines[0]
                os.write(write_end, b"one\n")
                await until(lambda: line.state.sent_seq == 1)
                os.write(write_end, b"two\n")
                await until(lambda: store.sent_per_commit[-1:] == [[2]])
                os.write(write_end, b"three\n")
                await until(lambda: line.outbox_size == 3)  # Queued behind the held commit.
                stop_request.handle(signal.SIGTERM, None)
                line_nursery = line._nursery
                assert line_nursery is not None
                await until(lambda: line_nursery.cancel_scope.cancel_called)  # Gave up.
                store.release.set()
    finally:
        store.release.set()
        os.close(write_end)
    assert status == [EXIT_NOT_SENT]
    assert store.sent_per_commit == [[1], [2]]
    assert line.state.sent_seq == 2
    printed = [json.loads(raw) for raw in capfd.readouterr().out.splitlines()]
    assert printed[0]["event"] == "start"
    assert all(event.pop("time") for event in printed)
    assert printed[1:] == [
        {"event": "queued", "seq": 1},
        {"event": "queued", "seq": 2},
        {"event": "error", "message": "the line closed before the message was stored",
         "line": 3},
    ]
