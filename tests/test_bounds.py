"""What a peer can make us hold: unsent output, the inbox, the heads of unacknowledged messages.

Three bounds, each tested where it is decided (the sans-io core, the trio driver, the line
state) and each against the attack that grew memory before it existed:

- unsent output: a peer that sends but never reads (receipts coalesce, pings wait, our own
  messages wait in the outbox past ``unsent_limit``; the writer gives up after ``down_after``
  without progress, at an exact virtual time);
- the inbox: ``inbox_window_bytes`` of unconsumed bodies stop the reader, and each message
  is held once (its body), not twice (body and envelope);
- the chain heads kept to check receipts: a peer that never acknowledges does not make them
  grow, and an acknowledgement of an old message is still checked against its head.

Timed driver cases run under ``autojump_clock`` over in-memory streams, as in
tests/test_line_timers.py.
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import corepair
import msgpack
import pytest
import trio
import trio.testing
from hostile import ALICE, BOB, T_MESSAGE, T_PING, FrameReader, HostileSession, initiation

from hotline import (
    Config,
    LineState,
    Liveness,
    MemoryStore,
    PeerState,
    Receipt,
    ReceiptKind,
    RemoteProtocolError,
    SignedMessage,
    open_line,
)
from hotline.driver import Line
from hotline.protocol import SENT_HEAD_WINDOW, T_RECEIPT
from hotline.store import SQLiteStore
from hotline.testing import StreamWrapper, split_frames, wall_ns

KiB = 1024
#: A ping on the wire: 2-byte length, a 64-byte padded plaintext, a 16-byte tag.
PING_FRAME = 2 + 64 + 16


def receipts_of(records: list[Any]) -> list[tuple[str, int]]:
    """``(kind, upto)`` of every receipt record among ``records`` (envelope fields 2, 3)."""
    out = []
    for record in records:
        if record[0] == T_RECEIPT:
            envelope = msgpack.unpackb(record[1], raw=False)
            out.append((envelope[2], envelope[3]))
    return out


# --- unsent output: the sans-io core ----------------------------------------------------------


def test_unsent_receipts_coalesce_to_the_newest_of_each_kind() -> None:
    """Fifty messages delivered and acknowledged one by one while b's output waits: what b
    then writes is one delivered and one acknowledged receipt, for the fiftieth."""
    pair = corepair.Pair(auto_ack=True)
    pair.connect()
    assert pair.a.conn is not None
    seen = corepair.tap_records(pair.a.conn)
    for n in range(50):
        pair.a.send(b"m%d" % n, pair.now)
    pair.transfer("a")  # b receives, delivers and acknowledges each one, writes nothing yet
    assert len(pair.b.receipts) == 0
    assert pair.b.state.acknowledged_upto == 50
    pair.transfer("b")
    assert receipts_of(seen) == [("delivered", 50), ("acknowledged", 50)]
    assert [r.upto for r in pair.a.receipts] == [50, 50]


def test_no_ping_is_queued_behind_unsent_output() -> None:
    """Ten heartbeats pass (b pinging all along) while what a last wrote is still unsent:
    a buffers nothing more, and when it next asks for output it gets one ping, not ten; the
    cadence is unchanged. (b, which hears nothing meanwhile, is patient for 30 s.)"""
    pair = corepair.Pair(config_b=Config(heartbeat_multiplier=30.0))
    pair.connect()
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    pair.send("a", b"x" * 2000)
    taken = a.data_to_send()  # the driver's write of this never completes
    assert a.unsent == len(taken) > 0
    for step in range(1, 21):
        now = step * 0.5
        b.advance(now)
        if data := b.data_to_send():
            a.receive_data(data, now)
            corepair.drain(a)
        a.advance(now)
        assert a.unsent == len(taken)
    assert a.next_deadline() == 11.0
    assert len(split_frames(a.data_to_send())) == 1


def test_messages_wait_in_the_outbox_past_the_unsent_limit() -> None:
    """With a 4 KiB limit, a hundred 1 KiB messages are encrypted a few at a time, as the
    earlier output is written, and all arrive in order."""
    limit = 4 * KiB
    pair = corepair.Pair(config=Config(unsent_limit=limit))
    pair.connect()
    a = pair.a.conn
    assert a is not None
    bodies = [bytes([n]) * KiB for n in range(100)]
    for body in bodies:
        pair.send("a", body)
        assert a.unsent < limit + 2 * KiB  # at most one message over the limit
    writes = 0
    while pair.transfer("a"):
        writes += 1
        assert a.unsent < limit + 2 * KiB
    assert writes >= 100 * KiB // (limit + 2 * KiB)
    assert pair.b.delivered == bodies


# --- unsent output: the trio driver, a peer that sends but never reads ---------------------------


class Watched(StreamWrapper):
    """Our end of the link, counting the writes that never completed."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.blocked_since: float | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.blocked_since = trio.current_time()
        await self.inner.send_all(data)
        self.blocked_since = None


class UnsentHigh(trio.abc.Instrument):
    """The most output the line's live connection ever held unsent, at every task step."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.highest = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        session = self.line._active
        if session is not None:
            self.highest = max(self.highest, session.conn.unsent)


async def test_a_peer_that_sends_but_never_reads(autojump_clock: trio.abc.Clock) -> None:
    """The peer authenticates, reads nothing more, and from 0.25 s sends 4,000 messages one
    write each (with a ping every 0.4 s so that it never looks silent), while our application
    consumes and acknowledges every one. Our unsent output stays a few records (one receipt
    of each kind and one ping wait behind our blocked write), and the connection ends exactly
    ``down_after`` (3 s) after that write stopped: at 3.25 s."""
    config = Config()
    count = 4000
    ours, theirs = trio.testing.lockstep_stream_pair()
    watched = Watched(ours)
    changes: list[tuple[float, PeerState]] = []
    async with (
        open_line(BOB, ALICE.public_key, store=MemoryStore(), config=config) as line,
        trio.open_nursery() as nursery,
    ):
        high = UnsentHigh(line)
        trio.lowlevel.add_instrument(high)

        async def record() -> None:
            # Each one as it comes, with its time: this task ends cancelled.
            async for event in line.watch():
                if isinstance(event, PeerState):
                    changes.append((trio.current_time(), event))  # noqa: PERF401

        async def consume() -> None:
            async for message in line:  # auto_ack: each next one acknowledges the last
                del message

        nursery.start_soon(record)
        nursery.start_soon(consume)
        nursery.start_soon(functools.partial(line.run_stream, watched, initiator=False))
        handshake, hello = initiation(ALICE, BOB.public_key)
        reader = FrameReader(theirs)
        await theirs.send_all(hello)
        response = await reader.frame()  # takes our whole first flight with it
        assert response is not None
        handshake.read_message(response)
        send, recv = handshake.split()
        hostile = HostileSession(theirs, reader, ALICE, BOB.public_key,  # type: ignore[arg-type]
                                 send, recv, 1)
        await trio.sleep_until(0.25)
        prev = bytes(32)
        for seq in range(1, count + 1):
            message = hostile.message(seq, b"%d" % seq, prev)
            prev = message.hash
            await hostile.send_record([T_MESSAGE, message.envelope, message.signature])
        assert trio.current_time() == 0.25
        assert watched.blocked_since == 0.25
        ping_id = 0
        with trio.fail_after(10):
            try:
                while True:
                    await trio.sleep(0.4)
                    ping_id += 1
                    await hostile.send_record([T_PING, ping_id, 0, 0, 1_000_000])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        trio.lowlevel.remove_instrument(high)
        nursery.cancel_scope.cancel()
    assert line.stats.received == count
    down = [(t, change) for t, change in changes if change.state is Liveness.DOWN]
    assert down, changes
    at, change = down[0]
    assert at == 0.25 + config.down_after, changes
    assert change.reason == "the peer read nothing for 3.000 s"
    assert high.highest < 4 * KiB, high.highest
    assert high.highest < config.unsent_limit


# --- the inbox: a byte window, one copy per message ---------------------------------------------


async def _joined(nursery: trio.Nursery, a: Line, b: Line) -> None:
    end_a, end_b = trio.testing.memory_stream_pair()
    nursery.start_soon(functools.partial(a.run_stream, end_a, initiator=True))
    nursery.start_soon(functools.partial(b.run_stream, end_b, initiator=False))


async def test_a_full_byte_window_stops_reading_until_the_application_consumes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Ten 100 KiB messages to a receiver with a 250 KiB window: it reads three (300 KiB),
    then nothing for as long as its application takes none, with both sides up all along;
    each message taken lets one more in, and all ten arrive in order."""
    config_b = Config(inbox_window_bytes=250 * KiB)
    async with (
        open_line(ALICE, BOB.public_key, store=MemoryStore()) as a,
        open_line(BOB, ALICE.public_key, store=MemoryStore(), config=config_b) as b,
        trio.open_nursery() as nursery,
    ):
        await _joined(nursery, a, b)
        outgoing = [await a.send(bytes([n]) * (100 * KiB)) for n in range(1, 11)]
        await trio.sleep(10)
        assert b.stats.received == 3
        assert (a.liveness, b.liveness) == (Liveness.UP, Liveness.UP)
        first = await b.receive()
        await trio.sleep(1)
        assert b.stats.received == 4
        got = [first] + [await b.receive() for _ in range(9)]
        assert [m.seq for m in got] == list(range(1, 11))
        assert [m.body[:1] for m in got] == [bytes([n]) for n in range(1, 11)]
        with trio.fail_after(1):
            await outgoing[-1].delivered()
        nursery.cancel_scope.cancel()


async def test_the_inbox_holds_one_copy_of_each_body(tmp_path: Path) -> None:
    """32 messages of 256 KiB wait unconsumed in a receiver backed by SQLite: the memory they
    hold (tracemalloc, after the sender has their delivered receipt) is about one body each,
    not the two it was (the body and the envelope that contains it)."""
    body_size, count = 256 * KiB, 32
    gc.collect()
    tracemalloc.start()
    try:
        async with (
            open_line(ALICE, BOB.public_key, store=tmp_path / "a.db", durability="NORMAL") as a,
            open_line(BOB, ALICE.public_key, store=tmp_path / "b.db", durability="NORMAL") as b,
            trio.open_nursery() as nursery,
        ):
            await _joined(nursery, a, b)
            with trio.fail_after(30):
                await a.wait_liveness(Liveness.UP)
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
                for n in range(count):
                    last = await a.send(bytes([n]) * body_size)
                await last.delivered()
                del last
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
            assert b.stats.received == count
            per_message = held / count
            print(f"inbox memory per {body_size} B message: {per_message:.0f} B")
            assert per_message < 1.3 * body_size, per_message
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()


async def test_messages_paged_in_from_the_store_fit_the_byte_window(tmp_path: Path) -> None:
    """Twenty 100 KiB messages wait unconsumed in a store; reopened with a 300 KiB window,
    the line reads them back three at a time (it read 256 at a time, whatever their size)."""
    body_size = 100 * KiB
    async with (
        open_line(ALICE, BOB.public_key, store=MemoryStore()) as a,
        open_line(BOB, ALICE.public_key, store=tmp_path / "b.db", durability="NORMAL") as b,
        trio.open_nursery() as nursery,
    ):
        await _joined(nursery, a, b)
        with trio.fail_after(30):
            for n in range(20):
                last = await a.send(bytes([n]) * body_size)
            await last.delivered()
        nursery.cancel_scope.cancel()
    config = Config(max_body_size=body_size, inbox_window_bytes=3 * body_size)
    async with open_line(BOB, ALICE.public_key, store=tmp_path / "b.db", config=config) as b:
        with trio.fail_after(10):
            first = await b.receive()
            assert first.seq == 1
            assert sorted(b._inbox._cache) == [2, 3]
            assert b._inbox._cache_bytes == 2 * body_size
            assert [(await b.receive()).seq for _ in range(19)] == list(range(2, 21))


# --- the heads of our unacknowledged messages --------------------------------------------------


def _delivered_without_acknowledgement(state: LineState, upto: int) -> None:
    """Messages ``state.sent_seq + 1 .. upto`` sent and delivered, never acknowledged (their
    signatures do not matter to the state, so none are made)."""
    for seq in range(state.sent_seq + 1, upto + 1):
        digest = seq.to_bytes(32, "big")
        state.append_sent(SignedMessage(seq, 0, state.sent_head, b"", b"", b"", digest))
        state.apply_peer_receipt(
            Receipt(ReceiptKind.DELIVERED, seq, digest, 0, b"", b""))


def test_the_heads_kept_do_not_grow_with_unacknowledged_messages() -> None:
    """A peer that takes 30,000 messages and acknowledges none: the state holds the same
    SENT_HEAD_WINDOW heads after 3,000 as after 30,000 (it held all 30,000, 142 bytes each)."""
    state = LineState()
    tracemalloc.start()  # before the first heads, whose memory is then freed while traced
    try:
        _delivered_without_acknowledgement(state, 3000)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _delivered_without_acknowledgement(state, 30_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(state.sent_heads) == SENT_HEAD_WINDOW
    assert min(state.sent_heads) == 30_000 - SENT_HEAD_WINDOW + 1
    assert grown < 64 * KiB, grown


def test_an_old_acknowledgement_is_checked_against_its_head_from_the_store(
    tmp_path: Path,
) -> None:
    """a sends SENT_HEAD_WINDOW + 500 messages, b delivers them all and acknowledges none.
    a restarts from its SQLite store holding only the last SENT_HEAD_WINDOW heads; then b
    acknowledges message 5: accepted, its head read from the store; and an acknowledgement
    of message 6 that names the head of message 7 is refused."""
    count = SENT_HEAD_WINDOW + 500
    store = SQLiteStore(tmp_path / "a.db", synchronous="NORMAL")
    try:
        pair = corepair.Pair(store_a=store)  # type: ignore[arg-type]
        pair.connect()
        for n in range(count):
            pair.a.send(b"%d" % n, pair.now)
        pair.pump()
        assert pair.a.state.peer_delivered == count
        pair.a.restart()
        assert len(pair.a.state.sent_heads) == SENT_HEAD_WINDOW
        assert 5 not in pair.a.state.sent_heads
        pair.connect()
        b = pair.b
        heads = [m.hash for m in b.delivered_messages]

        def acknowledge(upto: int, head: bytes) -> None:
            assert b.conn is not None
            b.conn.send_receipt(b.state.sign_own_receipt(
                b.identity, b.line_id, ReceiptKind.ACKNOWLEDGED, upto, head,
                wall_ns(pair.now)))
            pair.pump()

        acknowledge(5, heads[4])
        assert pair.a.state.peer_acknowledged == 5
        assert pair.a.receipts[-1].upto == 5
        with pytest.raises(RemoteProtocolError, match="names a chain head we never sent"):
            acknowledge(6, heads[6])
        assert pair.a.state.peer_acknowledged == 5
    finally:
        store.close()
