"""The embedding API in one process: open_history, open_blocking_line, open_asyncio_line.

Lines talk real TCP on 127.0.0.1. The blocking and asyncio lines run their own trio runs
(a thread; a guest run inside asyncio), so their tests are plain functions, not trio tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

import hotline
from hotline import (
    Direction,
    HistoryMessage,
    HistoryReceipt,
    Identity,
    LineClosed,
    ReceiptKind,
    SQLiteStore,
    StoreError,
    StoreMismatch,
    TranscriptEntry,
    TranscriptError,
    open_asyncio_line,
    open_blocking_line,
    open_history,
    open_line,
)

ALICE = Identity.from_seed(b"a" * 32, "alice")
BOB = Identity.from_seed(b"b" * 32, "bob")
CAROL = Identity.from_seed(b"c" * 32, "carol")
ALICE_CLOCK = 1_750_000_000_000_000_000
BOB_CLOCK = 1_760_000_000_000_000_000
WAIT = 20.0


# --- history ------------------------------------------------------------------------------


async def make_conversation(folder: Path) -> None:
    """alice sends two messages (one not UTF-8), bob acknowledges both and answers once."""
    async with (
        open_line(BOB, ALICE.public_key, store=folder / "bob.db", listen=("127.0.0.1", 0),
                  auto_ack=False, clock=lambda: BOB_CLOCK) as bob_end,
        open_line(ALICE, BOB.public_key, store=folder / "alice.db",
                  connect=bob_end.listen_addresses[0], clock=lambda: ALICE_CLOCK) as alice_end,
    ):
        await alice_end.send(b"one")
        second = await alice_end.send(b"\xff\x00 not text")
        await bob_end.receive()
        (await bob_end.receive()).ack()
        await second.acknowledged()
        answer = await bob_end.send(b"answer")
        assert (await alice_end.receive()).body == b"answer"
        await answer.delivered()
        await alice_end.flush()


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("conversation")
    trio.run(make_conversation, folder)
    return folder


def test_history_holds_both_directions_messages_decoded(conversation: Path) -> None:
    with open_history(conversation / "alice.db") as history:
        assert history.identity == ALICE.public_key
        assert history.peer == BOB.public_key
        messages = list(history.messages())
    assert [(m.direction, m.seq, m.body, m.timestamp) for m in messages] == [
        (Direction.OUT, 1, b"one", ALICE_CLOCK),
        (Direction.OUT, 2, b"\xff\x00 not text", ALICE_CLOCK),
        (Direction.IN, 1, b"answer", BOB_CLOCK),
    ]
    assert messages[0].sent_at == datetime.fromtimestamp(ALICE_CLOCK / 1e9, tz=UTC)


def test_history_is_the_transcript_in_order_with_every_receipt(conversation: Path) -> None:
    with SQLiteStore.open_existing(conversation / "alice.db") as store:
        transcript = list(store.transcript())
    with open_history(conversation / "alice.db") as history:
        entries = list(history)
    assert [e.position for e in entries] == list(range(1, len(transcript) + 1))
    for entry, record in zip(entries, transcript, strict=True):
        assert entry.direction is record.direction
        if isinstance(entry, HistoryMessage):
            assert (record.kind, record.seq) == ("message", entry.seq)
        else:
            assert (record.kind, record.seq) == (entry.kind.value, entry.upto)
    receipts = [e for e in entries if isinstance(e, HistoryReceipt)]
    by_bob = {(r.kind, r.upto) for r in receipts if r.direction is Direction.IN}
    assert (ReceiptKind.ACKNOWLEDGED, 2) in by_bob
    assert max(upto for kind, upto in by_bob if kind is ReceiptKind.DELIVERED) == 2
    assert {r.timestamp for r in receipts if r.direction is Direction.IN} == {BOB_CLOCK}
    ours = [r for r in receipts if r.direction is Direction.OUT]
    assert (ReceiptKind.DELIVERED, 1) in {(r.kind, r.upto) for r in ours}
    assert {r.signed_at for r in ours} == {datetime.fromtimestamp(ALICE_CLOCK / 1e9, tz=UTC)}
    # A receipt never comes before the message it covers.
    position_of_ours = {e.seq: e.position for e in entries
                        if isinstance(e, HistoryMessage) and e.direction is Direction.OUT}
    for receipt in receipts:
        if receipt.direction is Direction.IN:
            assert receipt.position > position_of_ours[receipt.upto]


def test_history_of_a_data_directory_reads_its_store(conversation: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hotline.db").write_bytes((conversation / "bob.db").read_bytes())
    with open_history(data) as history:
        assert [m.body for m in history.messages()] == [b"one", b"\xff\x00 not text", b"answer"]
        assert [m.body for m in history.messages()] == [b"one", b"\xff\x00 not text", b"answer"]


class Tampered:
    """A store whose second record's signature was changed."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def keys(self) -> object:
        return self.store.keys()

    def transcript(self) -> Iterator[TranscriptEntry]:
        for index, entry in enumerate(self.store.transcript()):
            if index == 1:
                signature = bytes([entry.signature[0] ^ 1]) + entry.signature[1:]
                entry = dataclasses.replace(entry, signature=signature)
            yield entry


def test_history_refuses_a_record_its_signer_did_not_sign(conversation: Path) -> None:
    with SQLiteStore.open_existing(conversation / "alice.db") as store:
        history = open_history(Tampered(store))  # type: ignore[arg-type]
        entries = iter(history)
        next(entries)
        with pytest.raises(TranscriptError, match=r"^record 2 \(.*\): signature does not verify"):
            next(entries)
        history.close()
        assert store.keys() is not None  # the caller's store stays open


def test_history_of_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        open_history(tmp_path)  # a folder without hotline.db
    with pytest.raises(TranscriptError, match="holds no line yet"):
        open_history(hotline.MemoryStore())


# --- a blocking line ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_blocking_lines_exchange_messages(tmp_path: Path) -> None:
    with open_blocking_line(BOB, ALICE.public_key, store=tmp_path / "bob.db",
                            listen=("127.0.0.1", 0)) as bob:
        address = bob.listen_addresses[0]
        with open_blocking_line(ALICE, BOB.public_key, store=tmp_path / "alice.db",
                                connect=address) as alice:
            outgoing = alice.send(b"hello")
            assert outgoing.seq == 1
            assert outgoing.delivered(timeout=WAIT).upto == 1
            message = bob.receive(timeout=WAIT)
            assert (message.seq, message.body) == (1, b"hello")
            bob.ack(message)
            assert outgoing.acknowledged(timeout=WAIT).kind is ReceiptKind.ACKNOWLEDGED
            with pytest.raises(TimeoutError):
                alice.receive(timeout=0.05)
            bob.send(b"back")
            assert alice.receive(timeout=WAIT).body == b"back"  # the timed-out call let go
            assert alice.stats.sent == 1
            assert alice.peer == BOB.public_key
        with pytest.raises(LineClosed):
            alice.receive()
        alice.close()  # idempotent


def test_blocking_line_raises_open_line_errors_in_the_caller(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "alice.db") as store:
        store.load(ALICE.public_key, BOB.public_key)
    with pytest.raises(StoreMismatch):
        open_blocking_line(ALICE, CAROL.public_key, store=tmp_path / "alice.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):  # the port in use; errno varies
            open_blocking_line(ALICE, BOB.public_key, store=tmp_path / "alice.db",
                               listen=taken.getsockname())


# --- an asyncio line --------------------------------------------------------------------------


def test_an_asyncio_line_and_a_blocking_line_talk(tmp_path: Path) -> None:
    async def main() -> None:
        bob = await asyncio.to_thread(
            open_blocking_line, BOB, ALICE.public_key, store=tmp_path / "bob.db",
            listen=("127.0.0.1", 0))
        try:
            async with open_asyncio_line(ALICE, BOB.public_key, store=tmp_path / "alice.db",
                                         connect=bob.listen_addresses[0]) as alice:
                outgoing = await alice.send(b"from asyncio")
                message = await asyncio.to_thread(bob.receive, WAIT)
                assert message.body == b"from asyncio"
                await asyncio.to_thread(bob.ack, message)
                receipt = await asyncio.wait_for(outgoing.acknowledged(), WAIT)
                assert receipt.upto == 1
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(alice.receive(), 0.05)
                # The cancelled receive ended inside trio too: a new one is not "busy".
                await asyncio.to_thread(bob.send, b"from a thread")
                answer = await asyncio.wait_for(alice.receive(), WAIT)
                assert (answer.seq, answer.body) == (1, b"from a thread")
                await alice.ack(answer)
                await alice.flush()
                assert alice.liveness is hotline.Liveness.UP
            with pytest.raises(LineClosed):
                await alice.receive()
        finally:
            await asyncio.to_thread(bob.close)

    asyncio.run(main())


def test_asyncio_line_raises_open_line_errors(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "alice.db") as store:
        store.load(ALICE.public_key, BOB.public_key)

    async def main() -> None:
        with pytest.raises(StoreMismatch):
            async with open_asyncio_line(ALICE, CAROL.public_key, store=tmp_path / "alice.db"):
                pytest.fail("the line opened")

    asyncio.run(main())


def test_asyncio_line_body_errors_pass_through(tmp_path: Path) -> None:
    async def main() -> None:
        async def fail_inside() -> None:
            async with open_asyncio_line(ALICE, BOB.public_key, store=tmp_path / "a.db") as line:
                await line.send(b"queued")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await fail_inside()
        # The line closed cleanly: its store is free for the next one.
        async with open_asyncio_line(ALICE, BOB.public_key, store=tmp_path / "a.db") as line:
            assert line.outbox_size == 1

    asyncio.run(main())


# --- a line whose store fails while it runs ---------------------------------------------------


class FailingStore(hotline.MemoryStore):
    """A store whose commits fail once ``broken`` is set."""

    broken = False

    def commit(self, batch: hotline.Batch) -> None:
        if self.broken:
            raise StoreError("the disk is gone")
        super().commit(batch)


def test_blocking_line_raises_the_error_that_stopped_the_line() -> None:
    store = FailingStore()
    line = open_blocking_line(ALICE, BOB.public_key, store=store)
    line.send(b"stored")
    store.broken = True
    with pytest.raises(StoreError, match="the disk is gone"):
        line.send(b"not stored")
    with pytest.raises(StoreError, match="the disk is gone"):
        line.receive(timeout=WAIT)  # the line has stopped: every call says why
    with pytest.raises(StoreError, match="the disk is gone"):
        line.close()
    line.close()  # once said, the close is quiet


def test_asyncio_line_raises_the_error_that_stopped_the_line() -> None:
    store = FailingStore()

    async def main() -> None:
        line_context = open_asyncio_line(ALICE, BOB.public_key, store=store)
        line = await line_context.__aenter__()
        await line.send(b"stored")
        store.broken = True
        with pytest.raises(StoreError, match="the disk is gone"):
            await line.send(b"not stored")
        with pytest.raises(StoreError, match="the disk is gone"):
            await line.aclose()
        with pytest.raises(LineClosed):
            await line.receive()

    asyncio.run(main())


# --- queue(): one producer's messages share commits, from asyncio and from a thread -------


def test_a_blocking_producer_queues_and_its_messages_share_commits(tmp_path: Path) -> None:
    with open_blocking_line(BOB, ALICE.public_key, store=tmp_path / "bob.db",
                            listen=("127.0.0.1", 0)) as bob:
        address = bob.listen_addresses[0]
        with open_blocking_line(ALICE, BOB.public_key, store=tmp_path / "alice.db",
                                connect=address) as alice:
            sent = [alice.queue(b"%d" % n, timeout=WAIT) for n in range(1, 201)]
            assert [outgoing.seq for outgoing in sent] == list(range(1, 201))
            sent[-1].stored(timeout=WAIT)
            assert sent[-1].delivered(timeout=WAIT).upto == 200
            assert [bob.receive(timeout=WAIT).body for _ in range(200)] == [
                b"%d" % n for n in range(1, 201)
            ]
    with SQLiteStore(tmp_path / "alice.db") as store:
        state = store.load(ALICE.public_key, BOB.public_key)
    assert state.sent_seq == 200


def test_an_asyncio_producer_queues_and_sees_each_message_stored(tmp_path: Path) -> None:
    async def main() -> None:
        bob = await asyncio.to_thread(
            open_blocking_line, BOB, ALICE.public_key, store=tmp_path / "bob.db",
            listen=("127.0.0.1", 0))
        try:
            async with open_asyncio_line(ALICE, BOB.public_key, store=tmp_path / "alice.db",
                                         connect=bob.listen_addresses[0]) as alice:
                sent = [await alice.queue(b"q%d" % n) for n in range(1, 51)]
                assert [outgoing.seq for outgoing in sent] == list(range(1, 51))
                for outgoing in sent:
                    await asyncio.wait_for(outgoing.stored(), WAIT)
                receipt = await asyncio.wait_for(sent[-1].delivered(), WAIT)
                assert receipt.upto == 50
                stored = await alice.send(b"sent", ack_within=30.0)
                assert stored.seq == 51
                await asyncio.wait_for(stored.stored(), WAIT)  # At once: send() stored it.
        finally:
            await asyncio.to_thread(bob.close)

    asyncio.run(main())
