"""The store interface: what a driver asks of the store that keeps its line.

Theory of operation
-------------------
A store keeps one line: both public keys, every signed message and receipt in both
directions (the audit transcript), the outbox, the inbox and the marks that let a line
resume (:class:`~hotline.LineState`). The driver talks to it through four calls:

- :meth:`Store.load` once, when the line opens: it checks that the store belongs to this
  pair of keys and returns the state to resume from.
- :meth:`Store.commit` with a :class:`Batch` of everything that happened since the last
  commit: messages queued and received, receipts signed and received, handshake
  watermarks. A batch is applied atomically and, in a durable store, durably. Batching is
  the group commit: one fsync covers every message of a burst.
- :meth:`Store.inbox` to re-read held messages the application has not acknowledged.
- :meth:`Store.transcript` for the offline verifier and ``hotline log``.

All methods are synchronous. A driver runs them one at a time, off its event loop (a worker
thread) when they wait on the disk, except the short commits described at
:attr:`Store.short_commits`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .._keys import PublicKey
from ..protocol import LineState, Receipt, SignedMessage

__all__ = [
    "Batch",
    "Direction",
    "Store",
    "TranscriptEntry",
    "apply_batch",
    "apply_batch_but_peer_receipts",
]


class Direction(enum.Enum):
    """Which way a signed record travelled, seen from the store's owner."""

    OUT = "out"
    """Signed by this node (our messages, our receipts)."""
    IN = "in"
    """Signed by the peer."""


@dataclass
class Batch:
    """Everything to make durable in one transaction, in the order it happened."""

    sent: list[SignedMessage] = field(default_factory=list)
    """Our new messages: outbox and transcript. Sequence numbers continue the stored ones."""
    received: list[SignedMessage] = field(default_factory=list)
    """The peer's new messages: inbox and transcript. Stored before their delivered receipt."""
    own_receipts: list[Receipt] = field(default_factory=list)
    """Receipts we signed for the peer's messages (they also carry our acknowledgement mark)."""
    peer_receipts: list[Receipt] = field(default_factory=list)
    """Receipts the peer signed for our messages (a delivered one retires outbox messages)."""
    peer_initiation_watermark: int | None = None
    initiation_timestamp: int | None = None

    def __bool__(self) -> bool:
        return bool(
            self.sent
            or self.received
            or self.own_receipts
            or self.peer_receipts
            or self.peer_initiation_watermark is not None
            or self.initiation_timestamp is not None
        )


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One signed record of the transcript, in the order the store recorded it."""

    direction: Direction
    kind: str
    """``"message"``, ``"delivered"`` or ``"acknowledged"``."""
    seq: int
    """The message's sequence number, or the receipt's ``upto``."""
    envelope: bytes
    signature: bytes


class Store(Protocol):
    """What the driver needs from a store. See the module docstring for the protocol."""

    commits_block: bool
    """True when :meth:`commit` and :meth:`load` wait on the disk: the trio driver then calls
    them in a worker thread, so they never stall the event loop for long."""

    short_commits: bool
    """True when a commit of a few records takes about one fsync (a millisecond or so): the
    trio driver may then make a small commit on its event loop when the process's commits
    have been idle (see ``hotline.driver._committer``), to save the two thread switches of a
    worker thread on the latency path. Optional: a store
    without the attribute is treated as False, every blocking commit in a worker thread."""

    def load(self, identity: PublicKey, peer: PublicKey) -> LineState:
        """Return the line's state; a new store takes these keys, another store must match.

        The state's ``sent_head_lookup`` answers for chain heads it no longer holds.

        Raises :class:`StoreMismatch` when the store belongs to another pair of keys.
        """
        ...

    def commit(self, batch: Batch) -> None:
        """Apply ``batch`` atomically (and durably, if the store is durable)."""
        ...

    def inbox(self, after: int, limit: int) -> list[SignedMessage]:
        """Held peer messages with ``seq > after``, in order, at most ``limit`` of them."""
        ...

    def transcript(self) -> Iterator[TranscriptEntry]:
        """Every signed record, in the order it was recorded."""
        ...

    def keys(self) -> tuple[PublicKey, PublicKey] | None:
        """``(identity, peer)`` public keys the store belongs to, or None for a new store."""
        ...

    def close(self) -> None:
        """Release the store's resources. Committed data stays (in a durable store)."""
        ...


def apply_batch(state: LineState, batch: Batch) -> None:
    """Apply ``batch`` to ``state`` in the stores' one order (raises LocalProtocolError)."""
    apply_batch_but_peer_receipts(state, batch)
    for receipt in batch.peer_receipts:
        state.apply_peer_receipt(receipt)


def apply_batch_but_peer_receipts(state: LineState, batch: Batch) -> None:
    """Apply all of ``batch`` but the peer's receipts: what the driver's committer applies,
    having applied those as they arrived (raises LocalProtocolError)."""
    for message in batch.sent:
        state.append_sent(message)
    for message in batch.received:
        state.record_received(message)
    for receipt in batch.own_receipts:
        state.record_own_receipt(receipt)
    state.record_initiations(
        ours=batch.initiation_timestamp, peers=batch.peer_initiation_watermark
    )
