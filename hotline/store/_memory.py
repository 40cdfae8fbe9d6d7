"""The in-memory store: the reference implementation of :class:`~hotline.Store`.

It keeps everything (every record, every sent head) in memory and follows the rules of the
durable store exactly: the same key binding, and every batch checked by
:func:`apply_batch` on a copy of the marks before anything changes.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._errors import LocalProtocolError, StoreMismatch
from .._keys import PublicKey
from ..protocol import LineState, Receipt, SignedMessage
from ._interface import Batch, Direction, TranscriptEntry, apply_batch

__all__ = ["MemoryStore"]


class MemoryStore:
    """A store that keeps everything in memory: for tests, and for callers who want no durability.

    It follows the same rules as the durable store (key binding, ordering), so code tested
    against it behaves the same against SQLite.
    """

    commits_block = False
    # Never blocks, so never sent to a thread anyway; False keeps a subclass that makes its
    # commits block (a test's held store) in a worker thread.
    short_commits = False

    def __init__(self) -> None:
        self._keys: tuple[PublicKey, PublicKey] | None = None
        self._received: dict[int, SignedMessage] = {}
        self._sent_heads: dict[int, bytes] = {}  # Every one: this store keeps everything.
        self._transcript: list[TranscriptEntry] = []
        self._state = LineState()
        self._closed = False

    def keys(self) -> tuple[PublicKey, PublicKey] | None:
        return self._keys

    def load(self, identity: PublicKey, peer: PublicKey) -> LineState:
        self._check_open()
        if self._keys is None:
            self._keys = (identity, peer)
        elif self._keys != (identity, peer):
            raise StoreMismatch("this store belongs to another line (other keys)")
        state = self._state.copy()
        state.sent_head_lookup = self._sent_heads.get
        return state

    def commit(self, batch: Batch) -> None:
        self._check_open()
        if self._keys is None:
            raise LocalProtocolError("load() the store before committing to it")
        # Validate on the marks first, so that a bad batch changes nothing.
        apply_batch(self._state.copy(outbox=False), batch)
        apply_batch(self._state, batch)
        for message in batch.sent:
            self._sent_heads[message.seq] = message.hash
            self._transcript.append(_message_entry(Direction.OUT, message))
        for message in batch.received:
            self._received[message.seq] = message
            self._transcript.append(_message_entry(Direction.IN, message))
        for receipt in batch.own_receipts:
            self._transcript.append(_receipt_entry(Direction.OUT, receipt))
        for receipt in batch.peer_receipts:
            self._transcript.append(_receipt_entry(Direction.IN, receipt))

    def inbox(self, after: int, limit: int) -> list[SignedMessage]:
        self._check_open()
        end = min(self._state.received_seq, after + limit)
        return [self._received[seq] for seq in range(after + 1, end + 1)]

    def transcript(self) -> Iterator[TranscriptEntry]:
        return iter(list(self._transcript))

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the store is closed")


def _message_entry(direction: Direction, message: SignedMessage) -> TranscriptEntry:
    return TranscriptEntry(direction, "message", message.seq, message.envelope, message.signature)


def _receipt_entry(direction: Direction, receipt: Receipt) -> TranscriptEntry:
    return TranscriptEntry(
        direction, receipt.kind.value, receipt.upto, receipt.envelope, receipt.signature
    )
