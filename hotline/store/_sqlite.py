"""The durable store: one line kept in one SQLite database file.

Theory of operation
-------------------
:class:`SQLiteStore` implements :class:`~hotline.Store` with the standard library's
``sqlite3`` and follows :class:`~hotline.MemoryStore`'s rules exactly. Each
:meth:`~SQLiteStore.commit` is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, so a batch
is all-or-nothing, and in WAL mode one commit costs one fsync of the log (``synchronous=FULL``,
the default: a receipted message survives power loss) or none (``NORMAL``: it survives a crash
of the process, but a power loss can roll back the last commits). Grouping messages into
batches is the caller's job; this module never splits or merges them.

A batch is checked before anything is written, with :class:`~hotline.LineState`'s own
methods applied to a copy of the marks, so an invalid batch raises
:class:`~hotline.LocalProtocolError` and writes nothing. The store keeps the marks of a
:class:`~hotline.LineState` (no outbox) in memory (the *mirror*) and advances them only once the
transaction has committed, so a failed commit leaves both the file and the mirror as they
were. Every ``sqlite3.Error`` leaves a public method as :class:`~hotline.StoreError`.

The schema, with what each table and column holds, is in :mod:`hotline.store._schema` beside
the SQL; how a store file is created, locked, checked and opened is in
:mod:`hotline.store._files`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from types import TracebackType

from .._errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
    StoreError,
    StoreMismatch,
)
from .._keys import PublicKey, line_id
from ..protocol import SENT_HEAD_WINDOW, LineState, Receipt, SignedMessage, open_receipt
from ._files import lock, open_database, unlock
from ._interface import Batch, Direction, TranscriptEntry, apply_batch
from ._schema import (
    I64_MAX,
    INSERT_MESSAGE,
    INSERT_RECEIPT,
    INSERT_TRANSCRIPT,
    SELECT_HEAD,
    SELECT_HEADS,
    SELECT_MESSAGES,
    SELECT_RECORDS,
    SELECT_STATE,
    SELECT_TRANSCRIPT,
    SELECT_UNMATCHED_MESSAGE,
    SELECT_UNMATCHED_RECEIPT,
    STATE_COLUMNS,
    UPDATE_STATE,
    ResumeRows,
    StoredRecord,
    batch_rows,
    from_i64,
)

__all__ = ["SQLiteStore"]

_SYNCHRONOUS = ("FULL", "NORMAL")

# Rows per query when streaming the transcript: bounds memory with large bodies, and no
# statement stays open between pages (a caller may commit while it iterates).
_TRANSCRIPT_PAGE = 128
SELECT_LATEST_RECEIPT = (
    "SELECT upto, timestamp FROM receipts WHERE direction = ? AND kind = ?"
    " ORDER BY ord DESC LIMIT 1"
)


def _mismatch(stored: tuple[PublicKey, PublicKey], identity: PublicKey, peer: PublicKey) -> str:
    stored_identity, stored_peer = stored
    if (identity, peer) == (stored_peer, stored_identity):
        what = "the keys are swapped: this is the peer's end of the line"
    elif identity != stored_identity and peer != stored_peer:
        what = "both keys differ"
    elif identity != stored_identity:
        what = "this node's identity differs"
    else:
        what = "the peer differs"
    return (
        f"this store belongs to the line between {stored_identity.fingerprint()} (this node)"
        f" and {stored_peer.fingerprint()} (the peer), not between {identity.fingerprint()}"
        f" and {peer.fingerprint()}: {what}"
    )


class SQLiteStore:
    """A durable :class:`~hotline.Store` in one SQLite file (see the module docstring).

    ``synchronous`` is ``"FULL"`` (the default: a committed batch survives power loss) or
    ``"NORMAL"`` (it survives a crash of the process; a power loss can lose the last commits).
    A new store (mode 0600) is made only where no file exists; an empty or foreign file is
    refused, as is a store that group or others may read or write. One open store at a time
    may write a file: a second raises :class:`~hotline.StoreLocked`.
    """

    commits_block = True
    short_commits = True  # A WAL append and one fsync.

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        self._open(path, synchronous, writing=True)

    @classmethod
    def open_existing(
        cls, path: str | os.PathLike[str], *, synchronous: str = "FULL"
    ) -> SQLiteStore:
        """Open a store that must already exist, read-only: it never writes to the file and
        takes no lock, so it may read a store a running line holds. StoreError if there is
        no store; :meth:`commit` and a :meth:`load` that would bind new keys are refused."""
        store = cls.__new__(cls)
        store._open(path, synchronous, writing=False)
        return store

    def _open(self, path: str | os.PathLike[str], synchronous: str, *, writing: bool) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise LocalProtocolError(
                f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}"
            )
        name = os.fspath(path)
        if not isinstance(name, str) or name in ("", ":memory:"):
            raise LocalProtocolError("a SQLiteStore needs a file path (use MemoryStore in memory)")
        self._path = name
        self._writing = writing
        self._keys: tuple[PublicKey, PublicKey] | None = None
        self._state: LineState | None = None
        # Ords of our latest delivered and acknowledged receipts, as in the state row.
        self._receipt_ords: tuple[int | None, int | None] = (None, None)
        self._next_ord = 1
        self._head_reader: sqlite3.Connection | None = None
        self._lock_fd = lock(name) if writing else None
        try:
            self._conn, self._read_only_uri = open_database(name, synchronous, writing=writing)
        except BaseException:
            if self._lock_fd is not None:
                unlock(self._lock_fd)
            raise
        self._closed = False

    # --- the Store protocol ---------------------------------------------------------------

    def keys(self) -> tuple[PublicKey, PublicKey] | None:
        self._check_open()
        if self._keys is None:
            with self._errors("cannot read the store"):
                row = self._conn.execute("SELECT identity, peer FROM meta WHERE id = 1").fetchone()
            if row is not None:
                self._keys = self._public_keys(row[0], row[1])
        return self._keys

    def load(self, identity: PublicKey, peer: PublicKey) -> LineState:
        self._check_open()
        lid = line_id(identity, peer)
        stored = self.keys()
        if stored is None:
            self._check_writing("bind a new store to its keys")
            with self._errors("cannot write the store"), self._transaction():
                self._conn.execute(
                    "INSERT INTO meta (id, identity, peer, line_id, created)"
                    " VALUES (1, ?, ?, ?, ?)",
                    (identity.raw, peer.raw, lid, time.time_ns()),
                )
            self._keys = (identity, peer)
        elif stored != (identity, peer):
            raise StoreMismatch(_mismatch(stored, identity, peer))
        with self._errors("cannot read the store"):
            state = self._read_state(identity, lid)
        # Only the marks: enough to check each batch before writing it (the outbox lives in
        # the database and in the caller's state, not here).
        self._state = state.copy(outbox=False)
        return state

    def commit(self, batch: Batch) -> None:
        self._check_open()
        self._check_writing("commit")
        mirror = self._state
        if mirror is None:
            raise LocalProtocolError("load() the store before committing to it")
        if not batch:
            return
        # Check everything before writing anything: a bad batch raises here, untouched.
        after = mirror.copy(outbox=False)
        apply_batch(after, batch)
        for message in batch.sent + batch.received:
            if not message.envelope.endswith(message.body):
                raise LocalProtocolError(f"message {message.seq}: body is not its envelope's")
        rows = batch_rows(batch, after, self._next_ord, self._receipt_ords)
        with self._errors("cannot commit to the store"), self._transaction():
            (last,) = self._conn.execute("SELECT coalesce(max(ord), 0) FROM transcript").fetchone()
            if last != self._next_ord - 1:
                raise StoreError("the store was changed by another writer: reopen it")
            self._conn.executemany(INSERT_TRANSCRIPT, rows.transcript)
            if rows.messages:
                self._conn.executemany(INSERT_MESSAGE, rows.messages)
            if rows.receipts:
                self._conn.executemany(INSERT_RECEIPT, rows.receipts)
            self._conn.execute(UPDATE_STATE, rows.state)
        # Committed: only now may the mirror move.
        self._state = after
        self._next_ord = rows.next_ord
        self._receipt_ords = rows.receipt_ords

    def inbox(self, after: int, limit: int) -> list[SignedMessage]:
        self._check_open()
        if limit <= 0 or after >= I64_MAX:
            return []
        with self._errors("cannot read the store"):
            return self._read_messages(Direction.IN, max(after, 0), min(limit, I64_MAX))

    def transcript(self) -> Iterator[TranscriptEntry]:
        self._check_open()
        return self._transcript_pages()

    # --- for the verifier (hotline verify) ---------------------------------------------

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Every read inside sees the store as of one moment, whatever a writer (the running
        line) commits meanwhile: the rows compared with each other must be of one moment."""
        self._check_open()
        with self._errors("cannot read the store"):
            self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")

    def stored_records(self) -> Iterator[StoredRecord]:
        """Every transcript record in order, each with the row derived from it."""
        self._check_open()
        after = 0
        while True:
            self._check_open()
            with self._errors("cannot read the store"):
                rows = self._conn.execute(SELECT_RECORDS, (after, _TRANSCRIPT_PAGE)).fetchall()
            for row in rows:
                ord_ = row[0]
                entry = self._entry(*row[:6])
                message = None if row[6] is None else (
                    row[6], from_i64(row[7]), row[8], row[9], row[10]
                )
                receipt = None if row[11] is None else (
                    row[11], row[12], row[13], row[14], from_i64(row[15])
                )
                yield StoredRecord(ord_, entry, message, receipt)
            if len(rows) < _TRANSCRIPT_PAGE:
                return
            after = rows[-1][0]

    def resume_rows(self) -> ResumeRows:
        """The state row and the line id in ``meta``."""
        self._check_open()
        with self._errors("cannot read the store"):
            row = self._conn.execute(SELECT_STATE).fetchone()
            meta = self._conn.execute("SELECT line_id FROM meta WHERE id = 1").fetchone()
        state: dict[str, object] = {}
        if row is not None:
            state = dict(zip(STATE_COLUMNS, row, strict=True))
        return ResumeRows(state, None if meta is None else meta[0])

    def unmatched_rows(self) -> tuple[tuple[str, int] | None, int | None]:
        """A ``messages`` row (direction, seq) and a ``receipts`` row (ord) that no transcript
        record of theirs stands behind, if there are such rows."""
        self._check_open()
        with self._errors("cannot read the store"):
            message = self._conn.execute(SELECT_UNMATCHED_MESSAGE).fetchone()
            receipt = self._conn.execute(SELECT_UNMATCHED_RECEIPT).fetchone()
        return (None if message is None else (message[0], message[1]),
                None if receipt is None else receipt[0])

    def latest_receipts(self) -> dict[tuple[Direction, str], tuple[int, int]]:
        """The newest receipt of each kind each way, for ``hotline status``:
        ``(direction, kind)`` -> ``(upto, its signed timestamp in ns)``; kinds without one
        are left out. Each is found by reading the receipts backwards from the newest."""
        self._check_open()
        latest: dict[tuple[Direction, str], tuple[int, int]] = {}
        with self._errors("cannot read the store"):
            for way in Direction:
                for kind in ("delivered", "acknowledged"):
                    row = self._conn.execute(SELECT_LATEST_RECEIPT, (way.value, kind)).fetchone()
                    if row is not None:
                        latest[(way, kind)] = (row[0], from_i64(row[1]))
        return latest

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._errors("cannot close the store"):
                self._conn.close()
                if self._head_reader is not None:
                    self._head_reader.close()
        finally:
            if self._lock_fd is not None:
                unlock(self._lock_fd)

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the store is closed")

    def _check_writing(self, what: str) -> None:
        if not self._writing:
            raise LocalProtocolError(f"cannot {what}: the store was opened read-only")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OverflowError) as exc:
            # OverflowError: sqlite3 refuses an int beyond 64 bits; it is the store's failure.
            raise StoreError(f"{what} {self._path!r}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so the transaction cannot fail half way
        # through for want of it.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may or may not have rolled back already.
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    def _public_keys(self, identity: bytes, peer: bytes) -> tuple[PublicKey, PublicKey]:
        try:
            return PublicKey(identity), PublicKey(peer)
        except LocalProtocolError:
            raise StoreError(f"the store {self._path!r} is corrupt: bad public keys") from None

    def _read_state(self, identity: PublicKey, lid: bytes) -> LineState:
        row = self._conn.execute(SELECT_STATE).fetchone()
        (stored_lid,) = self._conn.execute("SELECT line_id FROM meta WHERE id = 1").fetchone()
        if row is None or stored_lid != lid:
            raise StoreError(f"the store {self._path!r} is corrupt: no state or wrong line id")
        (
            sent_seq,
            sent_head,
            received_seq,
            received_head,
            peer_delivered,
            peer_acknowledged,
            watermark,
            initiation,
            delivered_ord,
            acknowledged_ord,
        ) = row
        state = LineState(
            peer_delivered=peer_delivered,
            peer_acknowledged=peer_acknowledged,
            received_seq=received_seq,
            received_head=received_head,
            delivered_receipt=self._read_receipt(delivered_ord, identity, lid),
            acknowledged_receipt=self._read_receipt(acknowledged_ord, identity, lid),
            peer_initiation_watermark=from_i64(watermark),
            initiation_timestamp=from_i64(initiation),
        )
        state.sent_seq = sent_seq
        state.sent_head = sent_head
        state.pending.extend(self._read_messages(Direction.OUT, peer_delivered, I64_MAX))
        first_head = max(peer_acknowledged, 1, sent_seq - SENT_HEAD_WINDOW + 1)
        state.sent_heads.update(self._conn.execute(SELECT_HEADS, (first_head,)))
        state.sent_head_lookup = self._sent_head
        self._receipt_ords = (delivered_ord, acknowledged_ord)
        (last,) = self._conn.execute("SELECT coalesce(max(ord), 0) FROM transcript").fetchone()
        self._next_ord = last + 1
        if state.pending and state.pending[-1].hash != state.sent_head:
            raise StoreError(f"the store {self._path!r} is corrupt: the outbox breaks the chain")
        return state

    def _sent_head(self, seq: int) -> bytes | None:
        """The stored chain head after our message ``seq``, for a state's older receipts.

        Called by the connection as it checks a receipt, on the event loop, while a commit
        may run in a worker thread: so through a read-only connection of its own (WAL lets
        it read beside the writer), and not behind the driver's store lock.
        """
        self._check_open()
        with self._errors("cannot read the store"):
            if self._head_reader is None:
                self._head_reader = sqlite3.connect(
                    self._read_only_uri, uri=True, isolation_level=None, check_same_thread=False
                )
            rows = self._head_reader.execute(SELECT_HEAD, (seq,)).fetchall()
        return rows[0][0] if rows else None

    def _read_receipt(self, ord_: int | None, identity: PublicKey, lid: bytes) -> Receipt | None:
        if ord_ is None:
            return None
        row = self._conn.execute(
            "SELECT envelope, signature FROM transcript WHERE ord = ?", (ord_,)
        ).fetchone()
        corrupt = f"the store {self._path!r} is corrupt: our receipt (record {ord_})"
        if row is None:
            raise StoreError(f"{corrupt} is missing")
        try:
            return open_receipt(row[0], row[1], signer=identity, line_id=lid)
        except (AuthenticationError, RemoteProtocolError):
            raise StoreError(f"{corrupt} does not verify") from None

    def _read_messages(self, direction: Direction, after: int, limit: int) -> list[SignedMessage]:
        rows = self._conn.execute(SELECT_MESSAGES, (direction.value, after, limit))
        return [
            SignedMessage(
                seq, from_i64(timestamp), prev, envelope[body_at:], envelope, signature, hash_
            )
            for seq, timestamp, prev, hash_, body_at, envelope, signature in rows
        ]

    def _transcript_pages(self) -> Iterator[TranscriptEntry]:
        after = 0
        while True:
            self._check_open()
            with self._errors("cannot read the store"):
                rows = self._conn.execute(SELECT_TRANSCRIPT, (after, _TRANSCRIPT_PAGE)).fetchall()
            for row in rows:
                yield self._entry(*row)
            if len(rows) < _TRANSCRIPT_PAGE:
                return
            after = rows[-1][0]

    def _entry(
        self, ord_: int, direction: str, kind: str, seq: int, envelope: bytes, signature: bytes
    ) -> TranscriptEntry:
        try:
            way = Direction(direction)
        except ValueError:
            raise StoreError(
                f"the store {self._path!r} is corrupt: record {ord_} has no direction"
            ) from None
        return TranscriptEntry(way, kind, seq, envelope, signature)
