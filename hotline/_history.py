"""Reading a line's history back from its store: decoded messages and receipts, in order.

A store keeps the transcript as signed records (:class:`~hotline.TranscriptEntry`: the
envelope and the signature, as they travelled). :func:`open_history` turns each one back
into what an application wants to show: who signed it, the message's number, time and body,
or the receipt's kind and how far it reaches. Each record's signature is checked as it is
decoded (against this node's key for ``OUT``, the peer's for ``IN``), so a history never
shows a record the store holds but its signer did not sign. A message stored with an empty
signature (one of a burst: docs/protocol.md, section 8.1) is held back until the signed
message that covers it, whose chain must name it, and shown with it, so that holds for them
too; the chains and the receipts' consistency are :func:`~hotline.verify_store`'s job, which
replays the whole transcript.

Safe beside a running node: a path is opened with ``SQLiteStore.open_existing``, which is
read-only and takes no lock. The transcript only grows, and it is read in pages by its order
of recording, so a history read while the line writes is the transcript as of some moment,
or a longer prefix of it, never a record out of place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ._errors import AuthenticationError, RemoteProtocolError, TranscriptError
from ._keys import PublicKey, line_id
from .protocol import ReceiptKind, decode_message, open_message, open_receipt
from .store import Direction

if TYPE_CHECKING:
    from .store import Store

STORE_NAME = "hotline.db"
"""The store's file in a data directory (``hotline run --data DIR``)."""


def _utc(timestamp_ns: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ns / 1e9, tz=UTC)


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """A message of the line, ours (``OUT``) or the peer's (``IN``)."""

    position: int
    """Its place in the transcript: 1 for the first record stored, then 2, 3, ..."""
    direction: Direction
    seq: int
    """Its number in its direction: 1, 2, 3, ..."""
    timestamp: int
    """The sender's clock when it queued the message, ns since the Unix epoch (signed)."""
    body: bytes
    hash: bytes
    """Its chain hash (the next message's ``prev``, a receipt's ``head``)."""

    @property
    def sent_at(self) -> datetime:
        """:attr:`timestamp` as an aware UTC datetime."""
        return _utc(self.timestamp)


@dataclass(frozen=True, slots=True)
class HistoryReceipt:
    """A signed receipt: ``OUT`` we signed it for the peer's messages, ``IN`` the peer for ours."""

    position: int
    direction: Direction
    kind: ReceiptKind
    """``DELIVERED`` ("I hold it") or ``ACKNOWLEDGED`` ("my application processed it")."""
    upto: int
    """It covers the other side's messages 1 to ``upto``."""
    timestamp: int
    """The signer's clock when it signed, ns since the Unix epoch."""
    head: bytes
    """The hash of message ``upto``."""

    @property
    def signed_at(self) -> datetime:
        """:attr:`timestamp` as an aware UTC datetime."""
        return _utc(self.timestamp)


HistoryEntry = HistoryMessage | HistoryReceipt


class History:
    """The transcript of one store, decoded. Iterate it (again and again: each iteration
    reads the store afresh, so a second pass also sees what a running line added meanwhile).

    Made by :func:`open_history`; close it (or leave its ``with`` block) when done.
    """

    def __init__(self, store: Store, *, owned: bool, max_body_size: int) -> None:
        keys = store.keys()
        if keys is None:
            if owned:
                store.close()
            raise TranscriptError("the store holds no line yet")
        self.identity: PublicKey = keys[0]
        """This node's public key: the signer of ``OUT`` records."""
        self.peer: PublicKey = keys[1]
        """The peer's public key: the signer of ``IN`` records."""
        self.line_id = line_id(self.identity, self.peer)
        self._store = store
        self._owned = owned
        self._max_body_size = max_body_size

    def __iter__(self) -> Iterator[HistoryEntry]:
        # Per direction, the unsigned messages read since its last signed one.
        held: dict[Direction, list[tuple[str, HistoryMessage]]] = {
            Direction.OUT: [], Direction.IN: [],
        }
        for position, entry in enumerate(self._store.transcript(), 1):
            signer = self.identity if entry.direction is Direction.OUT else self.peer
            where = f"record {position} ({entry.direction.value} {entry.kind} {entry.seq})"
            try:
                if entry.kind == "message":
                    opener = open_message if entry.signature else decode_message
                    message = opener(
                        entry.envelope, entry.signature, sender=signer, line_id=self.line_id,
                        max_body_size=self._max_body_size,
                    )
                    run = held[entry.direction]
                    if run and (message.seq != run[-1][1].seq + 1
                                or message.prev != run[-1][1].hash):
                        raise TranscriptError(
                            f"{where}: does not continue the unsigned messages before it"
                        )
                    shown = HistoryMessage(position, entry.direction, message.seq,
                                           message.timestamp, message.body, message.hash)
                    if not message.signed:
                        run.append((where, shown))
                        continue
                    for _, covered in run:
                        yield covered
                    run.clear()
                    yield shown
                else:
                    receipt = open_receipt(
                        entry.envelope, entry.signature, signer=signer, line_id=self.line_id
                    )
                    yield HistoryReceipt(position, entry.direction, receipt.kind, receipt.upto,
                                         receipt.timestamp, receipt.head)
            except AuthenticationError:
                raise TranscriptError(f"{where}: signature does not verify") from None
            except RemoteProtocolError as exc:
                raise TranscriptError(f"{where}: malformed: {exc}") from None
        for run in held.values():
            if run:
                raise TranscriptError(f"{run[0][0]}: no signed message after it covers it")

    def messages(self) -> Iterator[HistoryMessage]:
        """The messages of both directions alone, in the order they were stored."""
        for entry in self:
            if isinstance(entry, HistoryMessage):
                yield entry

    def close(self) -> None:
        """Close the store if :func:`open_history` opened it; idempotent."""
        if self._owned:
            self._store.close()

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_history(
    source: str | os.PathLike[str] | Store, *, max_body_size: int = 1 << 30
) -> History:
    """The decoded transcript of a store: ``with open_history("alice-data") as history:``.

    ``source`` is a data directory (its ``hotline.db`` is read), a store file, or any
    :class:`~hotline.Store` object (which the caller keeps and closes). A path is opened
    read-only without a lock, so a running node may hold the store meanwhile.

    Raises :class:`~hotline.StoreError` when the path holds no store,
    :class:`~hotline.TranscriptError` when the store holds no line yet or, while iterating,
    for a record whose signature does not verify or that does not decode.
    """
    if isinstance(source, str | os.PathLike):
        from .store import SQLiteStore

        path = Path(source)
        if path.is_dir():
            path = path / STORE_NAME
        return History(SQLiteStore.open_existing(path), owned=True, max_body_size=max_body_size)
    return History(source, owned=False, max_body_size=max_body_size)
