"""Closing and reopening lines on the same stores; the outbox's limits; cancelled sends.

The lines talk over in-memory links (A dials: each dial makes a fresh ``memory_stream_pair``
and hands B its end through ``run_stream``). Tests with a SQLite store use the real clock,
because the store runs in worker threads and a virtual clock would jump while they work;
the others run under ``autojump_clock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from numbered import body, expected, receive_into, send_numbered
from stuck_sends import StuckSend, no_stuck_sends

from hotline import (
    Config,
    HotlineError,
    Identity,
    LineClosed,
    LineState,
    MemoryStore,
    MessageTooLarge,
    OutboxFull,
    SQLiteStore,
    StoreMismatch,
    line_id,
    open_line,
)
from hotline.driver import Line, Outgoing
from hotline.driver._committer import Committer
from hotline.store import Batch

A = Identity.from_seed(bytes([0x3A]) * 32, "a")
B = Identity.from_seed(bytes([0x3B]) * 32, "b")
C = Identity.from_seed(bytes([0x3C]) * 32, "c")

CONFIG = Config(reconnect_jitter=0, reconnect_initial=0.05, reconnect_max=0.2)
LIMIT = 20


class Stores:
    """The stores of A and B, reopened as the same objects (memory) or files (SQLite)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        if kind == "memory":
            self.a: MemoryStore | str = MemoryStore()
            self.b: MemoryStore | str = MemoryStore()
        else:
            self.a = str(tmp_path / "a.db")
            self.b = str(tmp_path / "b.db")


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return Stores(request.param, tmp_path)


MaybeClock = trio.testing.MockClock | None


@pytest.fixture
def clock(stores: Stores) -> MaybeClock:
    """The virtual clock for memory stores (pytest-trio runs a test on a Clock argument);
    SQLite stores work in threads, so they keep the real one."""
    return trio.testing.MockClock(autojump_threshold=0) if stores.kind == "memory" else None


async def _run_b(line_b: Line, stream: trio.abc.Stream, initiator: bool = False) -> None:
    with contextlib.suppress(HotlineError, trio.BrokenResourceError, trio.ClosedResourceError):
        await line_b.run_stream(stream, initiator=initiator)


@contextlib.asynccontextmanager
async def linked(
    store_a: MemoryStore | str,
    store_b: MemoryStore | str,
    *,
    config: Config = CONFIG,
    auto_ack: bool = True,
    connect: bool = True,
) -> AsyncIterator[tuple[Line, Line]]:
    """Open A and B; A dials B over in-memory links (unless ``connect`` is false)."""
    async with (
        open_line(B, A.public_key, store=store_b, config=config, auto_ack=auto_ack) as line_b,
        trio.open_nursery() as links,
    ):

        async def dial() -> trio.abc.Stream:
            end_a, end_b = trio.testing.memory_stream_pair()
            links.start_soon(_run_b, line_b, end_b)
            return end_a

        async with open_line(
            A, B.public_key, store=store_a, config=config, auto_ack=auto_ack,
            connect=dial if connect else None,
        ) as line_a:
            yield line_a, line_b
        links.cancel_scope.cancel()


# --- restart both sides mid-stream -----------------------------------------------------------


async def test_both_sides_restart_mid_stream(stores: Stores, clock: MaybeClock) -> None:
    got_by_a: list[tuple[int, bytes]] = []
    got_by_b: list[tuple[int, bytes]] = []
    with trio.fail_after(LIMIT):
        # First life: 15 messages each way, but each application reads only 8 of them.
        async with (
            linked(stores.a, stores.b) as (line_a, line_b),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(send_numbered, line_a, "a", 1, 15)
            nursery.start_soon(send_numbered, line_b, "b", 1, 15)
            nursery.start_soon(receive_into, line_a, got_by_a, 8)
            nursery.start_soon(receive_into, line_b, got_by_b, 8)
            # Once all is read, some of the rest is on the wire, some held, none read:
            # both close then.
        # Second life: both resume; 15 more each way; everything arrives exactly once.
        async with linked(stores.a, stores.b) as (line_a, line_b):
            assert line_a.state.sent_seq == 15
            assert line_b.state.sent_seq == 15
            assert line_a.state.acknowledged_upto == 8
            assert line_b.state.acknowledged_upto == 8
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_numbered, line_a, "a", 16, 30)
                nursery.start_soon(send_numbered, line_b, "b", 16, 30)
                nursery.start_soon(receive_into, line_a, got_by_a, 22)
                nursery.start_soon(receive_into, line_b, got_by_b, 22)
            await line_a.flush()
            await line_b.flush()
            with trio.move_on_after(0.2):
                extra = await line_a.receive()
                pytest.fail(f"an extra message arrived: {extra}")
            assert line_a.outbox_size == 0
            assert line_b.outbox_size == 0
    assert got_by_a == expected("b", 1, 30)
    assert got_by_b == expected("a", 1, 30)


async def test_restart_again_and_again(stores: Stores, clock: MaybeClock) -> None:
    """Five lives in a row, each reading a few and closing with some unread."""
    got_by_b: list[tuple[int, bytes]] = []
    with trio.fail_after(LIMIT):
        for _ in range(5):
            async with linked(stores.a, stores.b) as (line_a, line_b):
                first = line_a.state.sent_seq + 1
                await send_numbered(line_a, "a", first, first + 5)
                await receive_into(line_b, got_by_b, 4)
        async with linked(stores.a, stores.b) as (line_a, line_b):
            await receive_into(line_b, got_by_b, 30 - len(got_by_b))
    assert got_by_b == expected("a", 1, 30)


# --- acknowledgement decides what comes back ----------------------------------------------


async def test_unacknowledged_message_is_yielded_again_after_reopen(
    stores: Stores, clock: MaybeClock
) -> None:
    with trio.fail_after(LIMIT):
        async with linked(stores.a, stores.b, auto_ack=False) as (line_a, line_b):
            await send_numbered(line_b, "b", 1, 3)
            first = await line_a.receive()
            first.ack()
            second = await line_a.receive()  # Read, never acknowledged.
            assert (first.seq, second.seq) == (1, 2)
            await line_a.flush()
        async with linked(stores.a, stores.b, auto_ack=False) as (line_a, line_b):
            assert line_a.state.acknowledged_upto == 1
            again = await line_a.receive()
            assert (again.seq, again.body, again.hash) == (2, second.body, second.hash)
            assert again.timestamp == second.timestamp
            third = await line_a.receive()
            assert (third.seq, third.body) == (3, body("b", 3))
            third.ack()
            await line_a.flush()
            assert line_a.state.acknowledged_upto == 3
        async with linked(stores.a, stores.b, auto_ack=False) as (line_a, line_b):
            # Everything was acknowledged: nothing comes back.
            with trio.move_on_after(0.2):
                extra = await line_a.receive()
                pytest.fail(f"an acknowledged message came back: {extra}")
            # The peer learned of the acknowledgement too.
            await send_numbered(line_b, "b", 4, 4)
            assert (await line_a.receive()).seq == 4


async def test_with_auto_ack_only_the_last_read_message_comes_back(
    stores: Stores, clock: MaybeClock
) -> None:
    with trio.fail_after(LIMIT):
        async with linked(stores.a, stores.b) as (line_a, line_b):
            await send_numbered(line_b, "b", 1, 5)
            seqs = [(await line_a.receive()).seq for _ in range(3)]
            assert seqs == [1, 2, 3]  # Reading 2 acknowledged 1, reading 3 acknowledged 2.
        async with linked(stores.a, stores.b) as (line_a, line_b):
            seqs = [(await line_a.receive()).seq for _ in range(3)]
            assert seqs == [3, 4, 5]


def _marks(state: LineState) -> dict[str, object]:
    """A state's fields but its outbox, which a successor shares with the state it replaces."""
    return {
        f.name: getattr(state, f.name)
        for f in dataclasses.fields(state)
        if f.name not in ("pending", "sent_heads")
    }


async def test_the_line_state_is_replaced_never_changed_in_place(
    stores: Stores, clock: MaybeClock
) -> None:
    """Only the committer moves the line's state, by swapping in a changed copy: every state
    the line showed keeps the marks it had (neither the connection nor a commit writes it)."""
    seen: list[tuple[LineState, dict[str, object]]] = []

    def look(line: Line) -> None:
        state = line.state
        if not seen or seen[-1][0] is not state:
            seen.append((state, _marks(state)))

    with trio.fail_after(LIMIT):
        async with linked(stores.a, stores.b) as (line_a, line_b):
            look(line_a)
            outs = await send_numbered(line_a, "a", 1, 4)
            look(line_a)
            got: list[tuple[int, bytes]] = []
            await receive_into(line_b, got, 4)
            await outs[-1].acknowledged()
            look(line_a)
            await send_numbered(line_b, "b", 1, 2)
            for _ in range(2):
                await line_a.receive()
            await line_a.flush()
            look(line_a)
    assert len(seen) == 4
    assert [marks for _, marks in seen] == [_marks(state) for state, _ in seen]


async def test_acknowledged_receipts_reach_the_sender_across_restarts(
    stores: Stores, clock: MaybeClock
) -> None:
    with trio.fail_after(LIMIT):
        async with linked(stores.a, stores.b) as (line_a, line_b):
            outs = await send_numbered(line_a, "a", 1, 4)
            got: list[tuple[int, bytes]] = []
            await receive_into(line_b, got, 4)
            receipt = await outs[-1].acknowledged()
            assert receipt.upto == 4
            assert line_a.state.peer_acknowledged == 4
        async with linked(stores.a, stores.b) as (line_a, line_b):
            assert line_a.state.peer_delivered == 4
            assert line_a.state.peer_acknowledged == 4
            assert line_a.outbox_size == 0


# --- the outbox's limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "size", "fits"),
    [
        (Config(outbox_limit=5), 10, 5),
        (Config(max_body_size=1000, outbox_limit_bytes=2500), 1000, 2),
    ],
    ids=["messages", "bytes"],
)
async def test_outbox_full_while_the_peer_is_away(
    autojump_clock: trio.abc.Clock, config: Config, size: int, fits: int
) -> None:
    store_a, store_b = MemoryStore(), MemoryStore()
    blocked_send: list[Outgoing] = []
    with trio.fail_after(LIMIT * 10):
        await _outbox_scenario(store_a, store_b, config, size, fits, blocked_send)


async def _outbox_scenario(
    store_a: MemoryStore,
    store_b: MemoryStore,
    config: Config,
    size: int,
    fits: int,
    blocked_send: list[Outgoing],
) -> None:
    async with (
        open_line(B, A.public_key, store=store_b, config=config) as line_b,
        open_line(A, B.public_key, store=store_a, config=config) as line_a,
        trio.open_nursery() as nursery,
    ):
        bodies = [bytes([n]) * size for n in range(1, fits + 3)]
        for n in range(fits):
            out = await line_a.send(bodies[n], wait=False)
            assert out.seq == n + 1
        assert line_a.outbox_size == fits
        with pytest.raises(OutboxFull):
            await line_a.send(bodies[fits], wait=False)
        assert line_a.stats.sent == fits  # The refused message took no number.

        async def blocked() -> None:
            blocked_send.append(await line_a.send(bodies[fits]))

        nursery.start_soon(blocked)
        await trio.sleep(30)
        assert blocked_send == []  # Still waiting for room, however long the peer is away.
        assert line_a.state.sent_seq == fits
        # The peer appears: the waiting send goes through and everything is delivered.
        end_a, end_b = trio.testing.memory_stream_pair()
        nursery.start_soon(_run_b, line_a, end_a, True)
        nursery.start_soon(_run_b, line_b, end_b)
        got: list[tuple[int, bytes]] = []
        await receive_into(line_b, got, fits + 1)
        assert [seq for seq, _ in got] == list(range(1, fits + 2))
        assert [b for _, b in got] == bodies[: fits + 1]
        assert len(blocked_send) == 1
        assert blocked_send[0].seq == fits + 1
        assert (await blocked_send[0].delivered()).upto == fits + 1
        assert line_a.outbox_size == 0
        nursery.cancel_scope.cancel()


async def test_message_too_large(autojump_clock: trio.abc.Clock) -> None:
    config = Config(max_body_size=1000, reconnect_jitter=0)
    with trio.fail_after(LIMIT):
        await _too_large(config)


async def _too_large(config: Config) -> None:
    async with linked(MemoryStore(), MemoryStore(), config=config) as (line_a, line_b):
        with pytest.raises(MessageTooLarge):
            await line_a.send(b"x" * 1001)
        with pytest.raises(MessageTooLarge):
            await line_a.send(b"x" * 1001, wait=False)
        assert line_a.stats.sent == 0
        assert line_a.state.sent_seq == 0
        largest = bytes(range(256)) * 3 + b"y" * 232
        assert len(largest) == 1000
        out = await line_a.send(largest)
        assert out.seq == 1  # The refused bodies took no sequence number.
        message = await line_b.receive()
        assert (message.seq, message.body) == (1, largest)
        assert (await out.delivered()).upto == 1
        with pytest.raises(MessageTooLarge):
            await line_b.send(b"z" * 5000)
        assert (await line_b.send(b"")).seq == 1  # An empty body is a message too.
        assert (await line_a.receive()).body == b""


# --- stores of other lines ------------------------------------------------------------------


async def test_sqlite_store_of_another_line_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "a-b.db")
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=path) as line:
            await line.send(b"kept")
        with pytest.raises(StoreMismatch):
            async with open_line(A, C.public_key, store=path):
                pytest.fail("opened a store of another peer")
        with pytest.raises(StoreMismatch):
            async with open_line(C, B.public_key, store=path):
                pytest.fail("opened a store of another identity")
        with pytest.raises(StoreMismatch):
            async with open_line(B, A.public_key, store=path):
                pytest.fail("opened the store from the other end")
        # The refusals changed nothing.
        async with open_line(A, B.public_key, store=path) as line:
            assert line.state.sent_seq == 1
            assert line.outbox_size == 1


async def test_memory_store_of_another_line_is_refused(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore()
    async with open_line(A, B.public_key, store=store):
        pass
    with trio.fail_after(LIMIT), pytest.raises(StoreMismatch):
        async with open_line(A, C.public_key, store=store):
            pytest.fail("opened a store of another peer")


# --- cancelled sends --------------------------------------------------------------------------


def _integrity(path: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("PRAGMA integrity_check")]


async def test_cancelled_sends_never_corrupt_the_store(tmp_path: Path) -> None:
    """Sends cancelled at random points: the store stays sound, and exactly the messages
    whose send() returned a sequence number are delivered, once each, in order."""
    path_a = str(tmp_path / "a.db")
    config = Config(outbox_limit=6, reconnect_jitter=0, reconnect_initial=0.05)
    rng = random.Random(20240611)
    returned: dict[int, bytes] = {}
    cancelled = kept = 0
    got: list[tuple[int, bytes]] = []
    with trio.fail_after(LIMIT):
        store_b = MemoryStore()
        async with linked(path_a, store_b, config=config) as (line_a, line_b):

            async def sender(k: int) -> None:
                nonlocal cancelled, kept
                data = f"msg {k}".encode()
                with trio.move_on_after(rng.choice([0, 0, 0.0005, 0.001, 0.003, 0.01])) as scope:
                    if rng.random() < 0.3:
                        await trio.sleep(rng.random() * 0.005)
                    out = await line_a.send(data)
                    returned[out.seq] = data
                    # Cancelled once its number was taken: the message is kept all the same.
                    kept += scope.cancel_called
                    return
                cancelled += 1

            async def reader() -> None:
                # A slow application: the outbox fills, and senders wait in it.
                while True:
                    message = await line_b.receive()
                    got.append((message.seq, message.body))
                    message.ack()
                    await trio.sleep(0.002)

            async with trio.open_nursery() as readers:
                readers.start_soon(reader)
                for wave in range(6):
                    async with trio.open_nursery() as nursery:
                        for k in range(wave * 25, wave * 25 + 25):
                            nursery.start_soon(sender, k)
                    # And a whole group cancelled at once, mid-flight.
                    with trio.move_on_after(0.004):
                        async with trio.open_nursery() as nursery:
                            for k in range(1000 + wave * 10, 1000 + wave * 10 + 10):
                                nursery.start_soon(sender, k)
                await line_a.flush()
                readers.cancel_scope.cancel()
        assert _integrity(path_a) == ["ok"]
        assert cancelled > 10, "too few sends were cancelled to test anything"
        assert kept > 0, "no send was cancelled while its commit ran"
        assert len(returned) > 10
        # Every number handed out belongs to a message whose send() returned.
        assert sorted(returned) == list(range(1, len(returned) + 1))
        # Reopen A (its store must load) and deliver whatever is still pending.
        async with linked(path_a, store_b, config=config) as (line_a, line_b):
            assert line_a.state.sent_seq == len(returned)
            await receive_into(line_b, got, len(returned) - len(got))
            await line_a.flush()
            with trio.move_on_after(0.2):
                extra = await line_b.receive()
                pytest.fail(f"a message nobody got a number for arrived: {extra}")
            assert line_a.outbox_size == 0
    assert _integrity(path_a) == ["ok"]
    assert got == sorted(returned.items())
    with contextlib.closing(SQLiteStore(path_a)) as store:
        state = store.load(A.public_key, B.public_key)
        assert state.sent_seq == len(returned)
        assert state.peer_delivered == len(returned)


# --- cancelling the line's own scope ----------------------------------------------------------


async def test_cancelling_the_lines_scope_during_a_send_does_not_hang(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    sent: Outgoing | None = None
    with no_stuck_sends() as unsticker:
        try:
            with trio.CancelScope() as scope:
                async with open_line(A, B.public_key, store=store) as line:
                    scope.cancel()  # As a timeout around the whole line would.
                    sent = await line.send(b"sent as the line was cancelled")
        except* StuckSend:
            pass  # Reported just below.
    assert not unsticker.trips, f"send() would have waited forever: {unsticker.trips}"
    # send() said whether the message was stored, and the store agrees.
    async with open_line(A, B.public_key, store=store) as line:
        assert line.state.sent_seq == (1 if sent is not None else 0)


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.005, 0.01, 0.02, 0.05])
async def test_a_timeout_around_a_line_tells_each_sender_the_truth(
    tmp_path: Path, delay: float
) -> None:
    """Several senders run until a timeout cancels the line: the messages the store holds
    are exactly those whose send() returned (a cancelled caller's message is either stored
    and reported, or neither)."""
    path = str(tmp_path / "a.db")
    returned: list[int] = []
    with trio.fail_after(LIMIT):
        with trio.move_on_after(delay):
            async with open_line(A, B.public_key, store=path) as line:

                async def sender(k: int) -> None:
                    for n in range(1000):
                        try:
                            out = await line.send(f"{k}.{n}".encode())
                        except LineClosed:
                            # The next send() after the timeout: see the test below.
                            return
                        returned.append(out.seq)

                async with trio.open_nursery() as nursery:
                    for k in range(5):
                        nursery.start_soon(sender, k)
        async with open_line(A, B.public_key, store=path) as line:
            assert sorted(returned) == list(range(1, len(returned) + 1))
            assert line.state.sent_seq == len(returned), (line.state.sent_seq, len(returned))
    assert _integrity(path) == ["ok"]


async def test_send_in_a_cancelled_line_scope_raises_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    errors: list[BaseException] = []
    with trio.CancelScope() as scope:
        async with open_line(A, B.public_key, store=MemoryStore()) as line:
            scope.cancel()  # A timeout around the line fires ...
            with trio.CancelScope(shield=True):
                # ... the line's tasks react to it (as they may before the caller resumes) ...
                await trio.testing.wait_all_tasks_blocked()
            try:
                await line.send(b"after the timeout")  # ... and the caller sends once more.
            except BaseException as exc:
                errors.append(exc)
                raise
    assert scope.cancelled_caught
    assert [type(e) for e in errors] == [trio.Cancelled]


async def test_an_acknowledgement_joins_the_receipt_signed_at_load() -> None:
    """Messages stored without their delivered receipt get one at load, before the state
    holds it: an acknowledgement in the same first batch is checked on top of it."""
    store = MemoryStore()
    store.load(A.public_key, B.public_key)
    lid = line_id(A.public_key, B.public_key)
    peer_state = LineState()
    messages = [peer_state.next_message(B, lid, b"m%d" % i, 1) for i in (1, 2)]
    store.commit(Batch(received=messages))
    committer = Committer(A, lid, store, clock=lambda: 5, committed=lambda _: None,
                          stopped=lambda: None)
    with trio.fail_after(LIMIT):
        state = await committer.load(A.public_key, B.public_key)
        assert state.delivered_upto == 0
        committer.acknowledge(2, messages[1].hash)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(committer.run)
            await committer.flush()
            nursery.cancel_scope.cancel()
    assert committer.failure is None
    assert (committer.state.delivered_upto, committer.state.acknowledged_upto) == (2, 2)
