"""One signature per burst, from the committer to the store and the verifier.

The committer signs the last of our new messages of each commit and every message that
closes a full burst, so a store never holds a message no signature covers; ``hotline
verify`` checks exactly that, and ``message_proof`` takes one message's proof out of a store
for :func:`hotline.check_message_proof`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from hotline import (
    AuthenticationError,
    Config,
    Identity,
    LineState,
    MessageProof,
    ReceiptKind,
    SignedMessage,
    SQLiteStore,
    TranscriptEntry,
    TranscriptError,
    check_message_proof,
    line_id,
    message_proof,
    open_history,
    open_line,
    verify_store,
    verify_transcript,
)
from hotline.driver._committer import Committer
from hotline.protocol import MAX_BURST_MESSAGES, MAX_BURST_UNSIGNED_BYTES, unsigned_message
from hotline.store import Batch, Direction, MemoryStore

ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
LID = line_id(ALICE.public_key, BOB.public_key)


def unsigned_chain(bodies: list[bytes]) -> list[SignedMessage]:
    messages, prev = [], bytes(32)
    for seq, body in enumerate(bodies, 1):
        message = unsigned_message(ALICE.public_key, LID, seq, seq, prev, body)
        prev = message.hash
        messages.append(message)
    return messages


def committer() -> Committer:
    return Committer(ALICE, LID, MemoryStore(), clock=lambda: 1,
                     committed=lambda batch: None, stopped=lambda: None)


def signed_at(messages: list[SignedMessage]) -> list[int]:
    return [index for index, message in enumerate(messages) if message.signed]


def test_a_commit_is_signed_at_its_end_and_at_every_full_burst() -> None:
    sent = unsigned_chain([b"%d" % i for i in range(150)])
    committer()._cover_bursts(sent)
    full = MAX_BURST_MESSAGES
    assert signed_at(sent) == [full - 1, 2 * full - 1, 149]


def test_a_commit_of_one_is_a_signed_message() -> None:
    sent = unsigned_chain([b"alone"])
    committer()._cover_bursts(sent)
    assert signed_at(sent) == [0]


def test_large_messages_close_their_bursts_by_bytes() -> None:
    # Three 300 KB envelopes stay under the 1 MiB of unsigned bytes; a fourth would not.
    size = 300_000
    assert 3 * size < MAX_BURST_UNSIGNED_BYTES < 4 * size
    sent = unsigned_chain([bytes(size)] * 9)
    committer()._cover_bursts(sent)
    assert signed_at(sent) == [3, 7, 8]
    # A message over the byte bound on its own is always signed.
    big = unsigned_chain([bytes(MAX_BURST_UNSIGNED_BYTES + 1), b"small", b"last"])
    committer()._cover_bursts(big)
    assert signed_at(big) == [0, 2]


async def _concurrent_sends(folder: Path, count: int) -> None:
    config = Config(reconnect_initial=0.05, reconnect_max=0.2)
    async with open_line(BOB, ALICE.public_key, store=folder / "bob.db",
                         listen=("127.0.0.1", 0), config=config) as bob, open_line(
        ALICE, BOB.public_key, store=folder / "alice.db",
        connect=bob.listen_addresses[0], config=config,
    ) as alice:
        async with trio.open_nursery() as nursery:
            for index in range(count):  # Concurrent senders share commits: bursts.
                nursery.start_soon(alice.send, b"message %d" % index)
        for _ in range(count):
            (await bob.receive()).ack()
        await alice.flush()
        await bob.flush()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bursts")
    trio.run(_concurrent_sends, folder, 200)
    return folder


def entries(path: Path) -> list[TranscriptEntry]:
    with SQLiteStore.open_existing(path) as store:
        return list(store.transcript())


def test_both_stores_hold_bursts_and_verify(stores: Path) -> None:
    for name, direction in (("alice.db", Direction.OUT), ("bob.db", Direction.IN)):
        messages = [e for e in entries(stores / name)
                    if e.kind == "message" and e.direction is direction]
        assert [e.seq for e in messages] == list(range(1, 201))
        signatures = [bool(e.signature) for e in messages]
        assert signatures[-1], name
        assert not all(signatures), f"{name}: no burst formed"
        run = longest = 0
        for signed in signatures:
            run = 0 if signed else run + 1
            longest = max(longest, run)
        assert longest < MAX_BURST_MESSAGES
        with SQLiteStore.open_existing(stores / name) as store:
            assert verify_store(store).messages_out + verify_store(store).messages_in == 200


@pytest.mark.parametrize(("name", "direction"), [("alice.db", Direction.OUT),
                                                 ("bob.db", Direction.IN)])
def test_every_stored_message_has_a_proof(stores: Path, name: str, direction: Direction) -> None:
    with SQLiteStore.open_existing(stores / name) as store:
        bodies = set()
        for seq in range(1, 201):
            proof = message_proof(store, direction, seq)
            message = check_message_proof(proof, sender=ALICE.public_key, line_id=LID)
            assert message.seq == seq
            bodies.add(message.body)
            assert 1 <= len(proof.envelopes) <= MAX_BURST_MESSAGES
        assert bodies == {b"message %d" % index for index in range(200)}
        with pytest.raises(TranscriptError, match=f"holds no {direction.value} message 201"):
            message_proof(store, direction, 201)


def test_a_transcript_that_ends_in_an_unsigned_run_does_not_verify(stores: Path) -> None:
    records = entries(stores / "alice.db")
    last = max(i for i, e in enumerate(records)
               if e.kind == "message" and e.direction is Direction.OUT)
    # Cut after our last message (the peer's receipts of it come later) and take its
    # signature away: the run it closed is no longer covered.
    cut = records[:last + 1]
    cut[last] = dataclasses.replace(cut[last], signature=b"")
    with pytest.raises(TranscriptError, match=r"\(out message \d+\): no signed message after"):
        verify_transcript(cut, ALICE.public_key, BOB.public_key)


def test_a_receipt_of_an_uncovered_message_does_not_verify() -> None:
    # A receiver that stored and receipted an unsigned run as it came (this one never does).
    state = LineState()
    run = unsigned_chain([b"one", b"two"])
    for message in run:
        state.record_received(message)
    receipt = state.sign_own_receipt(BOB, LID, ReceiptKind.DELIVERED, 2, run[-1].hash, 5)
    transcript = [
        *(TranscriptEntry(Direction.IN, "message", m.seq, m.envelope, b"") for m in run),
        TranscriptEntry(Direction.OUT, "delivered", 2, receipt.envelope, receipt.signature),
    ]
    with pytest.raises(TranscriptError, match=r"record 3 .*no signature recorded before it"):
        verify_transcript(transcript, BOB.public_key, ALICE.public_key)


def test_a_proof_from_a_store_without_the_covering_signature_is_refused() -> None:
    store = MemoryStore()
    store.load(ALICE.public_key, BOB.public_key)
    proofless = MessageProof((unsigned_chain([b"x"])[0].envelope,), bytes(64))
    with pytest.raises(TranscriptError, match="holds no out message 1"):
        message_proof(store, Direction.OUT, 1)
    with pytest.raises(AuthenticationError):
        check_message_proof(proofless, sender=ALICE.public_key, line_id=LID)


class CommitSpy(MemoryStore):
    """A MemoryStore that keeps, per commit, which of our new messages carry a signature."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_signatures: list[list[bool]] = []

    def commit(self, batch: Batch) -> None:
        if batch.sent:
            self.sent_signatures.append([message.signed for message in batch.sent])
        super().commit(batch)


async def test_every_commit_of_our_messages_ends_with_a_signed_one() -> None:
    """What a commit makes durable is covered on its own: a crash after any commit leaves
    no stored (and so possibly sent) message without the signature that covers it."""
    spy = CommitSpy()
    async with open_line(BOB, ALICE.public_key, store=MemoryStore(),
                         listen=("127.0.0.1", 0)) as bob, open_line(
        ALICE, BOB.public_key, store=spy, connect=bob.listen_addresses[0],
    ) as alice:
        async with trio.open_nursery() as nursery:
            for index in range(300):
                nursery.start_soon(alice.send, b"%d" % index)
        for _ in range(300):
            (await bob.receive()).ack()
    assert sum(len(commit) for commit in spy.sent_signatures) == 300
    assert all(commit[-1] for commit in spy.sent_signatures)
    assert any(not all(commit) for commit in spy.sent_signatures), "no burst formed"


def test_a_history_shows_bursts_in_order_and_refuses_an_uncovered_tail(stores: Path) -> None:
    for name, direction in (("alice.db", Direction.OUT), ("bob.db", Direction.IN)):
        with open_history(stores / name) as history:
            shown = [m for m in history.messages() if m.direction is direction]
        assert [m.seq for m in shown] == list(range(1, 201))
        assert {m.body for m in shown} == {b"message %d" % index for index in range(200)}
    # The same records with the last signature taken away: the run it closed is not shown.
    records = entries(stores / "alice.db")
    last = max(i for i, e in enumerate(records)
               if e.kind == "message" and e.direction is Direction.OUT)
    store = MemoryStore()
    store.load(ALICE.public_key, BOB.public_key)
    cut = [*records[:last], dataclasses.replace(records[last], signature=b"")]
    store.transcript = lambda: iter(cut)  # type: ignore[method-assign]
    with open_history(store) as history, pytest.raises(
        TranscriptError, match=r"\(out message \d+\): no signed message after it covers it"
    ):
        list(history)
