"""Tests for the offline transcript verifier.

A real SQLiteStore records a line with traffic both ways and receipts of both kinds; each test
then breaks one record (in the entries, or in the database file) and checks that the verifier
names exactly that record.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hotline._errors import TranscriptError
from hotline._keys import Identity, PublicKey, line_id
from hotline._sqlite import SQLiteStore
from hotline._store import Batch, Direction, MemoryStore, Store, TranscriptEntry
from hotline._verify import VerifyReport, verify_store, verify_transcript
from hotline.protocol import (
    LineState,
    Receipt,
    ReceiptKind,
    SignedMessage,
    sign_message,
    sign_receipt,
)

DELIVERED = ReceiptKind.DELIVERED
ACKNOWLEDGED = ReceiptKind.ACKNOWLEDGED
OUT, IN = Direction.OUT, Direction.IN


@dataclass
class Line:
    """Both ends of a line, seen from a (the store's owner)."""

    a: Identity = field(default_factory=Identity.generate)
    b: Identity = field(default_factory=Identity.generate)
    ours: LineState = field(default_factory=LineState)
    theirs: LineState = field(default_factory=LineState)
    our_hashes: dict[int, bytes] = field(default_factory=dict)
    their_hashes: dict[int, bytes] = field(default_factory=dict)
    clock: int = 1_700_000_000_000_000_000

    @property
    def lid(self) -> bytes:
        return line_id(self.a.public_key, self.b.public_key)

    @property
    def keys(self) -> tuple[PublicKey, PublicKey]:
        return self.a.public_key, self.b.public_key

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def send(self, count: int) -> list[SignedMessage]:
        sent = []
        for _ in range(count):
            message = self.ours.next_message(self.a, self.lid, b"ping", self.tick())
            self.theirs.record_received(message)
            self.our_hashes[message.seq] = message.hash
            sent.append(message)
        return sent

    def receive(self, count: int) -> list[SignedMessage]:
        received = []
        for _ in range(count):
            message = self.theirs.next_message(self.b, self.lid, b"pong", self.tick())
            self.ours.record_received(message)
            self.their_hashes[message.seq] = message.hash
            received.append(message)
        return received

    def our_receipt(self, kind: ReceiptKind, upto: int) -> Receipt:
        head = self.their_hashes[upto]
        return self.ours.sign_own_receipt(self.a, self.lid, kind, upto, head, self.tick())

    def peer_receipt(self, kind: ReceiptKind, upto: int) -> Receipt:
        head = self.our_hashes[upto]
        receipt = self.theirs.sign_own_receipt(self.b, self.lid, kind, upto, head, self.tick())
        self.ours.apply_peer_receipt(receipt)
        return receipt

    def forged(self, signer: str, kind: ReceiptKind, upto: int, head: bytes | None = None) -> (
        TranscriptEntry
    ):
        """A correctly signed receipt entry that no LineState would have let through."""
        if signer == "a":
            identity, direction, hashes = self.a, OUT, self.their_hashes
        else:
            identity, direction, hashes = self.b, IN, self.our_hashes
        head = hashes[upto] if head is None else head
        receipt = sign_receipt(identity, self.lid, kind, upto, head, self.tick())
        return TranscriptEntry(direction, kind.value, upto, receipt.envelope, receipt.signature)


def record_traffic(store: Store, line: Line) -> None:
    """Five messages each way, and receipts of both kinds from both sides, over five commits."""
    store.load(*line.keys)
    store.commit(Batch(sent=line.send(3), received=line.receive(2)))
    store.commit(
        Batch(
            own_receipts=[line.our_receipt(DELIVERED, 2)],
            peer_receipts=[line.peer_receipt(DELIVERED, 2)],
        )
    )
    store.commit(
        Batch(
            sent=line.send(2),
            received=line.receive(3),
            own_receipts=[line.our_receipt(ACKNOWLEDGED, 1)],
            peer_receipts=[line.peer_receipt(ACKNOWLEDGED, 1)],
        )
    )
    store.commit(
        Batch(
            own_receipts=[line.our_receipt(DELIVERED, 5), line.our_receipt(ACKNOWLEDGED, 4)],
            peer_receipts=[line.peer_receipt(DELIVERED, 5)],
        )
    )
    # A delivered receipt sent again, as on resume: equal is not backwards.
    again = sign_receipt(line.a, line.lid, DELIVERED, 5, line.their_hashes[5], line.tick())
    store.commit(Batch(own_receipts=[again], peer_receipts=[line.peer_receipt(ACKNOWLEDGED, 4)]))


EXPECTED = {
    "messages_out": 5,
    "messages_in": 5,
    "receipts_out": 5,
    "receipts_in": 4,
    "delivered_out": 5,
    "delivered_in": 5,
    "acknowledged_out": 4,
    "acknowledged_in": 4,
}


@pytest.fixture
def line() -> Line:
    return Line()


@pytest.fixture
def db(tmp_path: Path, line: Line) -> Path:
    path = tmp_path / "line.db"
    with SQLiteStore(path) as store:
        record_traffic(store, line)
    return path


@pytest.fixture
def entries(db: Path) -> list[TranscriptEntry]:
    with SQLiteStore.open_existing(db) as store:
        return list(store.transcript())


def position(entries: list[TranscriptEntry], direction: Direction, kind: str, seq: int) -> int:
    """The 1-based position of the first record with these labels."""
    for index, entry in enumerate(entries):
        if (entry.direction, entry.kind, entry.seq) == (direction, kind, seq):
            return index + 1
    raise AssertionError(f"no {direction.value} {kind} {seq} in the transcript")


def flip_last_byte(entry: TranscriptEntry) -> TranscriptEntry:
    envelope = entry.envelope[:-1] + bytes([entry.envelope[-1] ^ 1])
    return dataclasses.replace(entry, envelope=envelope)


def fails_at(entries: list[TranscriptEntry], line: Line, record: str, problem: str) -> None:
    with pytest.raises(TranscriptError) as info:
        verify_transcript(entries, *line.keys)
    assert str(info.value) == f"{record}: {problem}"


# --- valid transcripts ---------------------------------------------------------------------


def test_valid_store_verifies_with_the_right_counts(db: Path, line: Line) -> None:
    with SQLiteStore.open_existing(db) as store:
        report = verify_store(store)
    assert report == VerifyReport(identity=line.a.public_key, peer=line.b.public_key, **EXPECTED)


def test_memory_store_gives_the_same_report(line: Line) -> None:
    store = MemoryStore()
    record_traffic(store, line)
    assert dataclasses.asdict(verify_store(store)) == {
        "identity": line.a.public_key,
        "peer": line.b.public_key,
        **EXPECTED,
    }


def test_empty_transcript_verifies(line: Line) -> None:
    report = verify_transcript([], *line.keys)
    assert (report.messages_out, report.receipts_in) == (0, 0)


def test_store_without_keys_is_refused(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "new.db") as store, pytest.raises(TranscriptError, match="no keys"):
        verify_store(store)


def test_memory_store_without_keys_is_refused() -> None:
    with pytest.raises(TranscriptError, match="no keys"):
        verify_store(MemoryStore())


# --- one broken record each -----------------------------------------------------------------


def test_modified_message_body(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, IN, "message", 3)
    entries[at - 1] = flip_last_byte(entries[at - 1])  # the body is the envelope's tail
    fails_at(entries, line, f"record {at} (in message 3)", "signature does not verify")


def test_modified_message_body_in_the_database(db: Path, entries: list[TranscriptEntry]) -> None:
    at = position(entries, OUT, "message", 4)
    with sqlite3.connect(db) as raw:
        (envelope,) = raw.execute("SELECT envelope FROM transcript WHERE ord = ?", (at,)).fetchone()
        tampered = envelope[:-1] + bytes([envelope[-1] ^ 0x20])
        raw.execute("UPDATE transcript SET envelope = ? WHERE ord = ?", (tampered, at))
    raw.close()
    with SQLiteStore.open_existing(db) as store, pytest.raises(TranscriptError) as info:
        verify_store(store)
    assert str(info.value) == f"record {at} (out message 4): signature does not verify"


def test_modified_receipt(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, IN, "delivered", 2)
    entries[at - 1] = flip_last_byte(entries[at - 1])
    fails_at(entries, line, f"record {at} (in delivered 2)", "signature does not verify")


def test_receipt_with_a_head_that_does_not_match(
    entries: list[TranscriptEntry], line: Line
) -> None:
    at = position(entries, OUT, "delivered", 2)
    entries[at - 1] = line.forged("a", DELIVERED, 2, head=line.their_hashes[1])
    fails_at(entries, line, f"record {at} (out delivered 2)", "head is not the hash of message 2")


def test_removed_message(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, OUT, "message", 2)
    del entries[at - 1]
    fails_at(
        entries,
        line,
        f"record {at} (out message 3)",
        "expected message 2 next (a gap, a repeat or a reordering)",
    )


def test_reordered_messages(entries: list[TranscriptEntry], line: Line) -> None:
    first, second = position(entries, IN, "message", 1), position(entries, IN, "message", 2)
    entries[first - 1], entries[second - 1] = entries[second - 1], entries[first - 1]
    fails_at(
        entries,
        line,
        f"record {first} (in message 2)",
        "expected message 1 next (a gap, a repeat or a reordering)",
    )


def test_repeated_message(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, OUT, "message", 2)
    entries.insert(at, entries[at - 1])
    fails_at(
        entries,
        line,
        f"record {at + 1} (out message 2)",
        "expected message 3 next (a gap, a repeat or a reordering)",
    )


def test_broken_chain(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, OUT, "message", 2)
    stranger = sign_message(line.a, line.lid, 2, line.tick(), bytes(32), b"no link")
    entries[at - 1] = TranscriptEntry(OUT, "message", 2, stranger.envelope, stranger.signature)
    fails_at(
        entries,
        line,
        f"record {at} (out message 2)",
        "prev is not the hash of message 1: the chain is broken",
    )


def test_message_labelled_with_the_wrong_direction(
    entries: list[TranscriptEntry], line: Line
) -> None:
    at = position(entries, IN, "message", 1)
    entries[at - 1] = dataclasses.replace(entries[at - 1], direction=OUT)
    fails_at(entries, line, f"record {at} (out message 1)", "signature does not verify")


def test_label_that_contradicts_the_envelope(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, OUT, "message", 1)
    entries[at - 1] = dataclasses.replace(entries[at - 1], seq=7)
    fails_at(entries, line, f"record {at} (out message 7)", "the envelope says seq 1")


def test_receipt_beyond_the_messages_recorded_before_it(
    entries: list[TranscriptEntry], line: Line
) -> None:
    # The peer's delivered receipt for our message 4, recorded before message 4 was.
    at = position(entries, OUT, "message", 4)
    entries.insert(at - 1, line.forged("b", DELIVERED, 4))
    fails_at(
        entries,
        line,
        f"record {at} (in delivered 4)",
        "covers message 4 but only 3 were recorded before it",
    )


def test_acknowledged_beyond_delivered(entries: list[TranscriptEntry], line: Line) -> None:
    # Our acknowledgement of the peer's message 3, held but only delivered up to 2.
    at = position(entries, IN, "message", 3) + 1
    entries.insert(at - 1, line.forged("a", ACKNOWLEDGED, 3))
    fails_at(
        entries,
        line,
        f"record {at} (out acknowledged 3)",
        "acknowledges beyond the delivered mark 2",
    )


def test_receipt_that_goes_backwards(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, IN, "delivered", 5) + 1
    entries.insert(at - 1, line.forged("b", DELIVERED, 3))
    fails_at(entries, line, f"record {at} (in delivered 3)", "goes back from 5 to 3")


def test_receipt_signed_by_the_wrong_side(entries: list[TranscriptEntry], line: Line) -> None:
    at = position(entries, OUT, "delivered", 2)
    forged = line.forged("b", DELIVERED, 2)
    entries[at - 1] = dataclasses.replace(forged, direction=OUT)
    fails_at(entries, line, f"record {at} (out delivered 2)", "signature does not verify")


def test_swapped_keys_fail_at_the_first_record(entries: list[TranscriptEntry], line: Line) -> None:
    with pytest.raises(TranscriptError, match=re.escape("record 1 (out message 1)")):
        verify_transcript(entries, line.b.public_key, line.a.public_key)


def test_body_larger_than_allowed(entries: list[TranscriptEntry], line: Line) -> None:
    with pytest.raises(TranscriptError, match=r"^record 1 \(out message 1\): malformed message"):
        verify_transcript(entries, *line.keys, max_body_size=2)
