"""SIGKILL the sender or the receiver at random points, restart on the same store, repeat.

Two real ``hotline run --json`` processes (``[sys.executable, "-m", "hotline", "run", ...]``):
the *receiver* listens, prints each message and then acknowledges it; the *sender* dials it
and sends every line it reads on standard input, printing ``queued`` once a message is
durable. A feeder writes a steady stream of unique bodies into the sender's stdin.

A seeded schedule picks, for every kill, the victim (sender, receiver, or both), a trigger
(the victim's own start, or the n-th next ``queued``, ``delivered``, ``acknowledged`` or
``message`` event, whichever process prints it) and a random delay after it, so kills land
at random points of the send, persist, receipt and acknowledge paths. After each kill:

- both stores pass ``PRAGMA integrity_check`` and ``hotline verify`` (the CLI's ``main``
  in-process, to save a process start per kill; the final check runs the real command);
- durability: a dead sender's store holds every message it printed as ``queued``; a dead
  receiver's store holds every message it printed, everything the sender saw a delivered
  receipt for, and an acknowledgement mark at least as high as the sender saw;
- the victim restarts on its store (with ``--durability FULL`` or, one time in three,
  ``NORMAL``, which is documented to survive a crash of the process as well).

At the end (all bodies delivered and acknowledged, both stopped with SIGTERM): no queued
message is lost and each has the sequence number it was queued with; the receiver never
printed anything twice except, right after a restart, the messages above its persisted
acknowledgement mark, again with their original numbers (each incarnation starts exactly
at that mark + 1 and counts up by one); no sequence number was ever queued twice; both
stores pass ``integrity_check`` and ``hotline verify``.

``HOTLINE_SLOW=1`` makes 200 kills instead of 20; ``HOTLINE_CRASH_SEED`` and
``HOTLINE_CRASH_KILLS`` override the seed and the count. A summary (kills by victim and
trigger, delays, uptimes) is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from hotline import Identity
from hotline.cli import main as cli_main
from hotline.store import SQLiteStore

SLOW = os.environ.get("HOTLINE_SLOW") == "1"
KILLS = int(os.environ.get("HOTLINE_CRASH_KILLS", "200" if SLOW else "20"))
SEED = int(os.environ.get("HOTLINE_CRASH_SEED", "20261121"))
#: Hard limit of the whole run (CI: the default 20 kills take about 30 s).
TOTAL_LIMIT = 120 + 6 * KILLS
#: How long a trigger may take to happen before the victim is killed anyway.
TRIGGER_TIMEOUT = 8.0
#: A process must be gone this long after SIGKILL, and stop this long after SIGTERM.
EXIT_TIMEOUT = 15.0

SENDER, RECEIVER = "sender", "receiver"
#: Which process prints each trigger event.
SOURCE = {"queued": SENDER, "delivered": SENDER, "acknowledged": SENDER, "message": RECEIVER}
TRIGGERS = ["start", "queued", "delivered", "acknowledged", "message"]
DELAYS = [0.0, 0.001, 0.005, 0.02, 0.05, 0.15, 0.4]
#: Time let pass before a trigger is armed, so that kills also land in steady operation.
SETTLE = [0.0, 0.0, 0.2, 0.6, 1.2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the processes ------------------------------------------------------------------


@dataclass
class Incarnation:
    role: str
    number: int
    process: Any
    started: float
    #: Receiver: its store's acknowledgement mark when it started (it resumes above it).
    ack_at_start: int = 0
    #: Sender: its store's highest sequence number when it started.
    sent_at_start: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Sender: every line written to its stdin, in order (the k-th ``queued`` is the k-th).
    fed: list[str] = field(default_factory=list)
    done_reading: trio.Event = field(default_factory=trio.Event)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass
class Kill:
    victims: tuple[str, ...]
    trigger: str
    count: int
    delay: float
    settle: float = 0.0
    fired: bool = False
    uptime: float = 0.0
    cycle: float = 0.0


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.alice, self.bob = Identity.generate("alice"), Identity.generate("bob")
        keys = tmp / "keys"
        keys.mkdir()
        self.alice.save(keys / "alice")
        self.bob.save(keys / "bob")
        self.dirs = {SENDER: tmp / "sender", RECEIVER: tmp / "receiver"}
        self.args = {
            SENDER: ["--key", keys / "alice", "--peer", keys / "bob.pub",
                     "--data", self.dirs[SENDER], "--connect", f"127.0.0.1:{self.port}"],
            RECEIVER: ["--key", keys / "bob", "--peer", keys / "alice.pub",
                       "--data", self.dirs[RECEIVER], "--listen", f"127.0.0.1:{self.port}"],
        }
        self.incarnations: dict[str, list[Incarnation]] = {SENDER: [], RECEIVER: []}
        self.changed = trio.Event()
        #: Every event of both processes, in arrival order: (role, incarnation, event).
        self.log: list[tuple[str, int, dict[str, Any]]] = []
        self.kills: list[Kill] = []
        self.feed_rng = random.Random(SEED + 1)
        self.durability_rng = random.Random(SEED + 2)
        self.bodies = 0
        self.feeding = True
        self.nursery: trio.Nursery | None = None

    def current(self, role: str) -> Incarnation:
        return self.incarnations[role][-1]

    def events(self, role: str, kind: str) -> list[dict[str, Any]]:
        return [e for r, _, e in self.log if r == role and e["event"] == kind]

    # --- spawning and killing -------------------------------------------------------

    async def spawn(self, role: str) -> Incarnation:
        assert self.nursery is not None
        number = len(self.incarnations[role])
        store = self.dirs[role] / "hotline.db"
        ack, sent = 0, 0
        state = await trio.to_thread.run_sync(read_state, store)
        if state is not None:
            ack, sent = state.acknowledged_upto, state.sent_seq
        # SQLite's NORMAL synchronous mode survives a crash of the process too (only a power
        # loss can undo its last commits): some incarnations run with it.
        durability = self.durability_rng.choice(["FULL", "FULL", "NORMAL"])
        command = [sys.executable, "-m", "hotline", "run", "--json", "--durability",
                   durability, *map(str, self.args[role])]
        with open(self.tmp / f"{role}-{number}.stderr", "wb") as stderr:
            process = await trio.lowlevel.open_process(
                command, stdin=subprocess.PIPE if role == SENDER else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=stderr, cwd=self.tmp,
            )
        incarnation = Incarnation(role, number, process, time.monotonic(), ack, sent)
        self.incarnations[role].append(incarnation)
        self.nursery.start_soon(self._read, incarnation)
        return incarnation

    async def _read(self, incarnation: Incarnation) -> None:
        buffer = b""
        stdout = incarnation.process.stdout
        try:
            while True:
                chunk = await stdout.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    incarnation.events.append(event)
                    self.log.append((incarnation.role, incarnation.number, event))
                    self.changed.set()
                    self.changed = trio.Event()
        finally:
            incarnation.done_reading.set()

    async def stop(self, incarnation: Incarnation, sig: int) -> int:
        if incarnation.alive:
            incarnation.process.send_signal(sig)
        with trio.fail_after(EXIT_TIMEOUT):
            code = await incarnation.process.wait()
            await incarnation.done_reading.wait()
        return int(code)

    async def wait_for(self, predicate: Any, *, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not predicate():
                await self.changed.wait()
            return True
        return False

    # --- feeding the sender -----------------------------------------------------------

    def body(self) -> str:
        self.bodies += 1
        size = self.feed_rng.choice([0, 8, 8, 64, 64, 700, 3000])
        return f"m{self.bodies:06d}-" + "x" * size

    async def feed(self) -> None:
        while self.feeding:
            incarnation = self.current(SENDER)
            if incarnation.alive:
                lines = [self.body() for _ in range(self.feed_rng.randint(1, 2))]
                incarnation.fed.extend(lines)  # recorded first: a partial write still counts
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await incarnation.process.stdin.send_all(
                        "".join(f"{line}\n" for line in lines).encode())
            # About 30 messages a second: the stores (and the verify after every kill) stay
            # small enough for 200 kills.
            await trio.sleep(self.feed_rng.uniform(0.01, 0.09))

    async def send_one(self, body: str) -> Incarnation:
        incarnation = self.current(SENDER)
        incarnation.fed.append(body)
        await incarnation.process.stdin.send_all(f"{body}\n".encode())
        return incarnation


# --- stores -----------------------------------------------------------------------------


def read_state(path: Path) -> Any:
    """The line state in a store, or None if it holds no line yet (killed while creating it)."""
    if not path.exists():
        return None
    store = SQLiteStore.open_existing(path)
    try:
        keys = store.keys()
        return None if keys is None else store.load(*keys)
    finally:
        store.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return ", ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def verify_in_process(directory: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["verify", str(directory)])
    return code, out.getvalue()


def queued_pairs(harness: Harness) -> list[tuple[int, str]]:
    """(seq, body) of every ``queued`` event: the k-th of an incarnation is its k-th line."""
    pairs = []
    for incarnation in harness.incarnations[SENDER]:
        queued = [e for e in incarnation.events if e["event"] == "queued"]
        errors = [e for e in incarnation.events if e["event"] == "error"]
        assert not errors, errors
        assert len(queued) <= len(incarnation.fed)
        pairs += [(e["seq"], incarnation.fed[k]) for k, e in enumerate(queued)]
    return pairs


# --- the checks after a kill ---------------------------------------------------------


def highest(harness: Harness, role: str, kind: str, key: str) -> int:
    return max((e[key] for e in harness.events(role, kind)), default=0)


def has_line(path: Path) -> bool:
    """Whether the store exists and holds a line (a process killed while creating its store
    may leave none): only the keys, which are written once, so safe on a live store."""
    if not path.exists():
        return False
    store = SQLiteStore.open_existing(path)
    try:
        return store.keys() is not None
    finally:
        store.close()


async def check_store(harness: Harness, role: str) -> bool:
    """``integrity_check`` and ``hotline verify`` on one store: the live one too (its
    transcript is append-only, so a concurrent reader verifies a prefix of it). Not
    ``load()``: it reads the state row and the outbox in separate statements, so on a live
    store it can see them from two different commits."""
    path = harness.dirs[role] / "hotline.db"
    if not path.exists():
        return False  # killed before it created its store
    assert await trio.to_thread.run_sync(integrity, path) == "ok"
    if not await trio.to_thread.run_sync(has_line, path):
        return False  # killed before the line was first stored: nothing to verify yet
    code, out = await trio.to_thread.run_sync(verify_in_process, harness.dirs[role])
    assert code == 0, out
    return True


async def check_dead_store(harness: Harness, role: str) -> None:
    if not await check_store(harness, role):
        return
    state = await trio.to_thread.run_sync(read_state, harness.dirs[role] / "hotline.db")
    if role == SENDER:
        # Every message the sender printed as queued is in its store.
        assert state.sent_seq >= highest(harness, SENDER, "queued", "seq")
    else:
        # Printed messages were stored first; receipts were signed only for stored messages;
        # acknowledged receipts were sent only once committed.
        assert state.received_seq >= highest(harness, RECEIVER, "message", "seq")
        assert state.received_seq >= highest(harness, SENDER, "delivered", "upto")
        assert state.acknowledged_upto >= highest(harness, SENDER, "acknowledged", "upto")


# --- the run ------------------------------------------------------------------------------


def schedule(count: int) -> list[Kill]:
    rng = random.Random(SEED)
    kills = []
    for _ in range(count):
        roll = rng.random()
        victims = (SENDER,) if roll < 0.45 else (RECEIVER,) if roll < 0.9 else (SENDER, RECEIVER)
        kills.append(Kill(victims, rng.choice(TRIGGERS), rng.randint(1, 8), rng.choice(DELAYS),
                          settle=rng.choice(SETTLE)))
    return kills


async def run_kill(harness: Harness, kill: Kill) -> None:
    begun = time.monotonic()
    await trio.sleep(kill.settle)
    mark = len(harness.log)
    if kill.trigger == "start":
        kill.fired = True
        await trio.sleep(kill.delay * 2)
    else:
        role = SOURCE[kill.trigger]

        def seen() -> bool:
            fresh = [e for r, _, e in harness.log[mark:] if r == role
                     and e["event"] == kill.trigger]
            return len(fresh) >= kill.count

        kill.fired = await harness.wait_for(seen, timeout=TRIGGER_TIMEOUT)
        await trio.sleep(kill.delay)
    now = time.monotonic()
    kill.uptime = min(now - harness.current(v).started for v in kill.victims)
    for victim in kill.victims:
        code = await harness.stop(harness.current(victim), signal.SIGKILL)
        assert code in (-signal.SIGKILL, 0, 1), code
    for victim in kill.victims:
        await check_dead_store(harness, victim)
    for role in (SENDER, RECEIVER):
        if role not in kill.victims:
            await check_store(harness, role)
    for victim in kill.victims:
        await harness.spawn(victim)
    kill.cycle = time.monotonic() - begun
    harness.kills.append(kill)


def check_final(harness: Harness, last_seq: int) -> None:
    fed = {body for inc in harness.incarnations[SENDER] for body in inc.fed}
    queued = queued_pairs(harness)
    # No sequence number was queued twice, across restarts.
    seqs = [seq for seq, _ in queued]
    assert seqs == sorted(set(seqs)), "a sequence number was queued twice"
    for incarnation in harness.incarnations[SENDER]:
        first = next((e["seq"] for e in incarnation.events if e["event"] == "queued"), None)
        assert first is None or first > incarnation.sent_at_start
    # What the receiver's application saw.
    printed: dict[int, str] = {}
    for incarnation in harness.incarnations[RECEIVER]:
        messages = [(e["seq"], e["body"]) for e in incarnation.events if e["event"] == "message"]
        for k, (seq, body) in enumerate(messages):
            # Each incarnation resumes right above its persisted acknowledgement, in order.
            assert seq == incarnation.ack_at_start + 1 + k, (
                f"receiver {incarnation.number}: message {k} is #{seq}, expected "
                f"#{incarnation.ack_at_start + 1 + k}")
            # A message seen again carries its original number and body.
            assert printed.setdefault(seq, body) == body, f"#{seq} changed its body"
            assert body in fed, f"#{seq} is a body nobody sent"
    assert sorted(printed) == list(range(1, last_seq + 1))
    assert len(set(printed.values())) == len(printed), "one body under two numbers"
    # Nothing queued is lost, and each has the number it was queued with.
    for seq, body in queued:
        assert printed.get(seq) == body, f"queued #{seq} lost or changed"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
async def test_sigkill_sender_and_receiver_at_random_points(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    begun = time.monotonic()
    with trio.fail_after(TOTAL_LIMIT):
        async with trio.open_nursery() as nursery:
            harness.nursery = nursery
            try:
                await harness.spawn(RECEIVER)
                await harness.spawn(SENDER)
                nursery.start_soon(harness.feed)
                for kill in schedule(KILLS):
                    await run_kill(harness, kill)
                harness.feeding = False
                # Drain: a last message, received and acknowledged, covers everything before.
                await trio.sleep(0.1)
                last = await harness.send_one("the-last-message")
                assert await harness.wait_for(
                    lambda: len([e for e in last.events if e["event"] == "queued"])
                    == len(last.fed), timeout=30), "the last message was not queued"
                last_seq = [e for e in last.events if e["event"] == "queued"][-1]["seq"]
                assert await harness.wait_for(
                    lambda: highest(harness, SENDER, "acknowledged", "upto") >= last_seq,
                    timeout=30), "the last message was not acknowledged"
                for role in (SENDER, RECEIVER):
                    assert await harness.stop(harness.current(role), signal.SIGTERM) == 0
            finally:
                harness.feeding = False
                with trio.CancelScope(shield=True):
                    for incarnations in harness.incarnations.values():
                        for incarnation in incarnations:
                            if incarnation.alive:
                                incarnation.process.kill()
                                with trio.move_on_after(EXIT_TIMEOUT):
                                    await incarnation.process.wait()
                nursery.cancel_scope.cancel()
    check_final(harness, last_seq)
    for role in (SENDER, RECEIVER):
        assert integrity(harness.dirs[role] / "hotline.db") == "ok"
        result = subprocess.run(
            [sys.executable, "-m", "hotline", "verify", str(harness.dirs[role])],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "valid: every signature" in result.stdout
    logged = subprocess.run(
        [sys.executable, "-m", "hotline", "log", "--json", str(harness.dirs[RECEIVER])],
        capture_output=True, text=True, timeout=60, check=True,
    )
    stored = [json.loads(line) for line in logged.stdout.splitlines()]
    inbound = [(r["seq"], r["body"]) for r in stored if r["kind"] == "message"]
    assert [seq for seq, _ in inbound] == list(range(1, last_seq + 1))
    print_summary(harness, time.monotonic() - begun, last_seq)


def print_summary(harness: Harness, elapsed: float, last_seq: int) -> None:
    kills = harness.kills
    by = Counter(("+".join(k.victims), k.trigger) for k in kills)
    delays = [k.delay for k in kills]
    uptimes = [k.uptime for k in kills]
    reprinted = sum(
        max(0, len([e for e in inc.events if e["event"] == "message"]))
        for inc in harness.incarnations[RECEIVER]
    ) - last_seq
    print(f"\ncrash run: seed {SEED}, {len(kills)} kills in {elapsed:.1f} s, "
          f"{last_seq} messages, {reprinted} re-yielded after restarts, "
          f"{sum(not k.fired for k in kills)} triggers timed out")
    for (victims, trigger), n in sorted(by.items()):
        print(f"  {victims:16} after {trigger:12} x{n}")
    print(f"  delay after trigger: min {min(delays) * 1000:.0f} ms, median "
          f"{statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")
    print(f"  victim uptime at kill: min {min(uptimes):.2f} s, median "
          f"{statistics.median(uptimes):.2f} s, max {max(uptimes):.2f} s")
    cycles = [k.cycle for k in kills]
    print(f"  kill cycle (settle, trigger, delay, kill, checks, restart): median "
          f"{statistics.median(cycles):.2f} s, max {max(cycles):.2f} s")
