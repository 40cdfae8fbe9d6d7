"""The durable store: one line kept in one SQLite database file.

Theory of operation
-------------------
:class:`SQLiteStore` implements :class:`~hotline._store.Store` with the standard library's
``sqlite3`` and follows :class:`~hotline._store.MemoryStore`'s rules exactly. Each
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

Schema (version 1, kept in ``PRAGMA user_version``)::

    meta        id = 1, identity, peer (32-byte raw public keys), line_id, created (ns)
    transcript  ord INTEGER PRIMARY KEY, direction, kind, seq, envelope, signature
    messages    (direction, seq) PRIMARY KEY, ord -> transcript, timestamp, prev, hash, body_at
    receipts    ord PRIMARY KEY -> transcript, direction, kind, upto, head, timestamp
    state       id = 1, sent_seq, sent_head, received_seq, received_head, peer_delivered,
                peer_acknowledged, peer_initiation_watermark, initiation_timestamp,
                delivered_receipt, acknowledged_receipt (ords of our latest receipts)

``direction`` is ``'out'`` (signed by this node) or ``'in'`` (signed by the peer); ``kind``
is ``'message'``, ``'delivered'`` or ``'acknowledged'``; ``seq`` in ``transcript`` is a
message's sequence number or a receipt's ``upto``. The signed bytes live once, in
``transcript``, whose ``ord`` is the order of recording (rows are never deleted, so it only
grows); ``messages`` and ``receipts`` hold their decoded fields. A body is the tail of its
envelope from byte ``body_at`` on: storing it again would double every write. The outbox is
our messages above ``peer_delivered``, the inbox is the peer's messages; both are ranges of
the ``messages`` primary key, so loading reads only the pending and unacknowledged rows.
SQLite integers are signed 64-bit, so the unsigned 64-bit timestamps and watermarks are
stored in two's complement; sequence numbers cannot get that far.

The file is created with mode 0600 (the transcript is private); SQLite gives its ``-wal`` and
``-shm`` side files the database file's mode, and a store or side file that others may read
or write is refused, as a private key is. A new store is built beside its path (``.new``)
and linked into place complete: only a path where nothing exists becomes a store, so an
empty or foreign file there is refused, never taken for a new line. A store open for
writing holds an exclusive ``flock`` on ``<path>.lock`` with its PID in it, so a second
writer is :class:`~hotline.StoreLocked` at open rather than a failed commit later.
:meth:`SQLiteStore.open_existing` reads (``mode=ro``, no lock), beside a running writer.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ._errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
    StoreError,
    StoreLocked,
    StoreMismatch,
    StoreVersionError,
)
from ._keys import PublicKey, line_id
from ._store import Batch, Direction, TranscriptEntry, apply_batch
from .protocol import SENT_HEAD_WINDOW, LineState, Receipt, ReceiptKind, SignedMessage, open_receipt

if sys.platform != "win32":
    import fcntl

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 1

#: Beside the store: the lock held while it is open for writing, with its holder's PID.
LOCK_SUFFIX = ".lock"
# Beside the store: a new store is built here, then linked into place whole.
_NEW_SUFFIX = ".new"

_SYNCHRONOUS = ("FULL", "NORMAL")

# Rows per query when streaming the transcript: bounds memory with large bodies, and no
# statement stays open between pages (a caller may commit while it iterates).
_TRANSCRIPT_PAGE = 128

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1

_SCHEMA = (
    """
    CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        identity BLOB NOT NULL,
        peer BLOB NOT NULL,
        line_id BLOB NOT NULL,
        created INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE transcript (
        ord INTEGER PRIMARY KEY,
        direction TEXT NOT NULL CHECK (direction IN ('out', 'in')),
        kind TEXT NOT NULL CHECK (kind IN ('message', 'delivered', 'acknowledged')),
        seq INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        signature BLOB NOT NULL
    )
    """,
    # WITHOUT ROWID: the rows are small (the blobs are in transcript), so the primary key's
    # b-tree is the table and an insert touches one tree, not two.
    """
    CREATE TABLE messages (
        direction TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ord INTEGER NOT NULL REFERENCES transcript (ord),
        timestamp INTEGER NOT NULL,
        prev BLOB NOT NULL,
        hash BLOB NOT NULL,
        body_at INTEGER NOT NULL,
        PRIMARY KEY (direction, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE receipts (
        ord INTEGER PRIMARY KEY REFERENCES transcript (ord),
        direction TEXT NOT NULL,
        kind TEXT NOT NULL,
        upto INTEGER NOT NULL,
        head BLOB NOT NULL,
        timestamp INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        sent_seq INTEGER NOT NULL,
        sent_head BLOB NOT NULL,
        received_seq INTEGER NOT NULL,
        received_head BLOB NOT NULL,
        peer_delivered INTEGER NOT NULL,
        peer_acknowledged INTEGER NOT NULL,
        peer_initiation_watermark INTEGER NOT NULL,
        initiation_timestamp INTEGER NOT NULL,
        delivered_receipt INTEGER REFERENCES receipts (ord),
        acknowledged_receipt INTEGER REFERENCES receipts (ord)
    )
    """,
    """
    INSERT INTO state VALUES (1, 0, zeroblob(32), 0, zeroblob(32), 0, 0, 0, 0, NULL, NULL)
    """,
)

_INSERT_TRANSCRIPT = (
    "INSERT INTO transcript (ord, direction, kind, seq, envelope, signature)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (direction, seq, ord, timestamp, prev, hash, body_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_RECEIPT = (
    "INSERT INTO receipts (ord, direction, kind, upto, head, timestamp) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPDATE_STATE = (
    "UPDATE state SET sent_seq = ?, sent_head = ?, received_seq = ?, received_head = ?,"
    " peer_delivered = ?, peer_acknowledged = ?, peer_initiation_watermark = ?,"
    " initiation_timestamp = ?, delivered_receipt = ?, acknowledged_receipt = ? WHERE id = 1"
)
_SELECT_STATE = (
    "SELECT sent_seq, sent_head, received_seq, received_head, peer_delivered,"
    " peer_acknowledged, peer_initiation_watermark, initiation_timestamp,"
    " delivered_receipt, acknowledged_receipt FROM state WHERE id = 1"
)
# CROSS JOIN pins messages as the outer loop: a range scan of its primary key, then one
# rowid lookup per row in transcript.
_SELECT_MESSAGES = (
    "SELECT m.seq, m.timestamp, m.prev, m.hash, m.body_at, t.envelope, t.signature"
    " FROM messages AS m CROSS JOIN transcript AS t ON t.ord = m.ord"
    " WHERE m.direction = ? AND m.seq > ? ORDER BY m.seq LIMIT ?"
)
_SELECT_HEADS = (
    "SELECT seq, hash FROM messages WHERE direction = 'out' AND seq >= ? ORDER BY seq"
)
_SELECT_HEAD = "SELECT hash FROM messages WHERE direction = 'out' AND seq = ?"
_SELECT_TRANSCRIPT = (
    "SELECT ord, direction, kind, seq, envelope, signature FROM transcript"
    " WHERE ord > ? ORDER BY ord LIMIT ?"
)
# For the verifier: each record with the row derived from it, found the way load() finds it
# (a message by its direction and number, a receipt by its ord).
_SELECT_RECORDS = (
    "SELECT t.ord, t.direction, t.kind, t.seq, t.envelope, t.signature,"
    " m.ord, m.timestamp, m.prev, m.hash, m.body_at,"
    " r.direction, r.kind, r.upto, r.head, r.timestamp"
    " FROM transcript AS t"
    " LEFT JOIN messages AS m"
    " ON t.kind = 'message' AND m.direction = t.direction AND m.seq = t.seq"
    " LEFT JOIN receipts AS r ON t.kind != 'message' AND r.ord = t.ord"
    " WHERE t.ord > ? ORDER BY t.ord LIMIT ?"
)
_SELECT_UNMATCHED_MESSAGE = (
    "SELECT direction, seq FROM messages AS m WHERE NOT EXISTS (SELECT 1 FROM transcript AS t"
    " WHERE t.ord = m.ord AND t.kind = 'message' AND t.direction = m.direction"
    " AND t.seq = m.seq) ORDER BY direction, seq LIMIT 1"
)
_SELECT_UNMATCHED_RECEIPT = (
    "SELECT ord FROM receipts AS r WHERE NOT EXISTS (SELECT 1 FROM transcript AS t"
    " WHERE t.ord = r.ord AND t.kind != 'message') ORDER BY ord LIMIT 1"
)
# The columns of _SELECT_STATE, in its order.
_STATE_COLUMNS = (
    "sent_seq",
    "sent_head",
    "received_seq",
    "received_head",
    "peer_delivered",
    "peer_acknowledged",
    "peer_initiation_watermark",
    "initiation_timestamp",
    "delivered_receipt",
    "acknowledged_receipt",
)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A transcript record and the row the store derived from it, as the verifier needs them."""

    ord: int
    entry: TranscriptEntry
    message: tuple[int, int, bytes, bytes, int] | None
    """Its ``messages`` row: ord, timestamp, prev, hash, body_at (None if there is none)."""
    receipt: tuple[str, str, int, bytes, int] | None
    """Its ``receipts`` row: direction, kind, upto, head, timestamp (None if there is none)."""


@dataclass(frozen=True, slots=True)
class ResumeRows:
    """What a line resumes from besides the derived rows."""

    state: dict[str, object]
    """The state row, column by column (empty if there is no row)."""
    line_id: bytes | None


def _to_i64(value: int, name: str) -> int:
    if not 0 <= value < _U64:
        raise LocalProtocolError(f"{name} must be an unsigned 64-bit integer")
    return value - _U64 if value > _I64_MAX else value


def _from_i64(value: int) -> int:
    return value + _U64 if value < 0 else value


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


def _create_private(path: str) -> None:
    """Create ``path`` empty with mode 0600 (StoreError if it exists or cannot be made)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create the store {path!r}: {exc.strerror}") from None
    try:
        if hasattr(os, "fchmod"):
            # Only widens what a strict umask narrowed; SQLite must be able to write it.
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _sync_directory(path: str) -> None:
    # A durable store must not lose its own directory entry to a power cut.
    with contextlib.suppress(OSError):
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _create_store(path: str) -> None:
    """Make a new store at ``path``, schema and all, in one step (the caller holds the lock).

    It is built beside the path and linked into place once complete and on disk, so a crash
    leaves no store or a whole one: never an empty or half-made file, which the next open
    would have to refuse as not a store.
    """
    partial = path + _NEW_SUFFIX
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)  # Left by a crash: the lock says nobody else is building it.
    _create_private(partial)
    try:
        uri = Path(partial).absolute().as_uri() + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            # No journal: if this fails half way the partial file is thrown away, and a stale
            # journal could never be replayed into the next attempt's file.
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # link, not rename: it never replaces a file that appeared at the path meanwhile (not
        # another hotline, which would need the lock); that file is then checked as found.
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot create the store {path!r}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(partial)
    _sync_directory(path)


# The first bytes of every SQLite database file, and where its header keeps user_version.
_SQLITE_MAGIC = b"SQLite format 3\x00"
_USER_VERSION_AT = 60


def _read_header(path: str) -> bytes:
    """The first 100 bytes of ``path`` (SQLite's header), read without SQLite."""
    with open(path, "rb") as file:
        return file.read(100)


def _lock(path: str) -> int:
    """Take the store's exclusive lock, write our PID into it, and return its descriptor.

    The lock is a ``flock`` on a file of its own beside the store, not on the database:
    SQLite locks the database with POSIX record locks, which a process loses on closing
    *any* descriptor of that file, and which NFS may map onto the same locks as ``flock``.
    Readers (``hotline log``, ``hotline verify``) open the store read-only and take no lock.
    """
    lock_path = path + LOCK_SUFFIX
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as exc:
        raise StoreError(f"cannot lock the store {path!r}: {lock_path!r}: {exc.strerror}") from None
    try:
        if sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _lock_holder(fd)
                holder = "another process" if pid is None else f"process {pid}"
                if pid == os.getpid():
                    holder = f"this process ({pid}), in another SQLiteStore"
                raise StoreLocked(
                    f"the store {path!r} is in use by {holder}: one process at a time may use"
                    " a store",
                    path=path,
                    pid=pid,
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"cannot lock the store {path!r}: {lock_path!r}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_holder(fd: int) -> int | None:
    """The PID the lock's holder wrote, if it has yet (it writes just after locking)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # No stale PID for a reader of the file to believe.
    os.close(fd)  # Releases the flock.


def _check_private(path: str) -> None:
    """Refuse a store, or a -wal or -shm of it, that group or others may read or write.

    As with a private key: the store holds the transcript in clear (readable by others it
    is no longer private) and the state the line resumes from (writable by others it is no
    longer this node's). SQLite gives the side files the database's mode when it makes them.
    """
    if os.name != "posix":
        return
    for name in (path, path + "-wal", path + "-shm"):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot open the store {path!r}: {name!r}: {exc.strerror}") from None
        if mode & 0o077:
            raise StoreError(
                f"permissions {mode:04o} for {name!r} are too open: a store must be readable"
                f" and writable only by its owner (chmod 600 {name!r})"
            )


class SQLiteStore:
    """A durable :class:`~hotline._store.Store` in one SQLite file (see the module docstring).

    ``synchronous`` is ``"FULL"`` (the default: a committed batch survives power loss) or
    ``"NORMAL"`` (it survives a crash of the process; a power loss can lose the last commits).
    A new store (mode 0600) is made only where no file exists; an empty or foreign file is
    refused, as is a store that group or others may read or write. One open store at a time
    may write a file: a second raises :class:`~hotline.StoreLocked`.
    """

    commits_block = True

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
        self._lock_fd = _lock(name) if writing else None
        try:
            self._connect(synchronous)
        except BaseException:
            if self._lock_fd is not None:
                _unlock(self._lock_fd)
            raise
        self._closed = False

    def _connect(self, synchronous: str) -> None:
        name = self._path
        try:
            header = _read_header(name)
        except FileNotFoundError:
            if not self._writing:
                raise StoreError(f"there is no store at {name!r}") from None
            _create_store(name)
            header = _read_header(name)
        except OSError as exc:
            raise StoreError(f"cannot open the store {name!r}: {exc.strerror}") from None
        if not header:
            # Only a path where nothing exists becomes a new store: an empty file may be a
            # store whose contents were lost, and starting a new line there would hide that.
            raise StoreError(f"{name!r} is an empty file, not a hotline store")
        if not header.startswith(_SQLITE_MAGIC):
            raise StoreError(f"{name!r} is not a hotline store: it is not a SQLite database")
        # A SQLite file of something else (user_version 0) is refused as such below; the
        # permissions matter only for a store.
        if self._writing and header[_USER_VERSION_AT : _USER_VERSION_AT + 4] != bytes(4):
            _check_private(name)
        # rw: the file exists, and SQLite must not create one where it vanished. ro: a reader
        # never writes, whatever it opens.
        uri = Path(name).absolute().as_uri() + ("?mode=rw" if self._writing else "?mode=ro")
        try:
            # check_same_thread=False: the trio driver calls every method from a worker thread,
            # never two at a time, and not always from the same thread.
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {name!r}: {exc}") from exc
        self._conn = conn
        self._read_only_uri = uri.replace("?mode=rw", "?mode=ro")
        try:
            self._setup(synchronous)
        except BaseException:
            conn.close()
            raise

    def _setup(self, synchronous: str) -> None:
        with self._errors("cannot open the store"):
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
                    raise StoreError(
                        f"{self._path!r} is not a hotline store: it is not a SQLite database"
                    ) from None
                raise
            if version == 0:
                (tables,) = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                what = "a SQLite database with other tables" if tables else "an empty database"
                raise StoreError(f"{self._path!r} is not a hotline store: {what}")
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"store schema version {version} is newer than this hotline"
                    f" (knows up to {SCHEMA_VERSION}): upgrade hotline"
                )
            if self._writing:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute(f"PRAGMA synchronous={synchronous}")
                self._conn.execute("PRAGMA foreign_keys=ON")

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
        next_ord = self._next_ord
        transcript: list[tuple[int, str, str, int, bytes, bytes]] = []
        messages: list[tuple[str, int, int, int, bytes, bytes, int]] = []
        receipts: list[tuple[int, str, str, int, bytes, int]] = []
        for way, chain in (("out", batch.sent), ("in", batch.received)):
            for m in chain:
                timestamp = _to_i64(m.timestamp, "timestamp")
                body_at = len(m.envelope) - len(m.body)
                transcript.append((next_ord, way, "message", m.seq, m.envelope, m.signature))
                messages.append((way, m.seq, next_ord, timestamp, m.prev, m.hash, body_at))
                next_ord += 1
        delivered_ord, acknowledged_ord = self._receipt_ords
        for way, signed in (("out", batch.own_receipts), ("in", batch.peer_receipts)):
            for r in signed:
                kind = r.kind.value
                timestamp = _to_i64(r.timestamp, "timestamp")
                transcript.append((next_ord, way, kind, r.upto, r.envelope, r.signature))
                receipts.append((next_ord, way, kind, r.upto, r.head, timestamp))
                if way == "out" and r.kind is ReceiptKind.DELIVERED:
                    delivered_ord = next_ord
                elif way == "out":
                    acknowledged_ord = next_ord
                next_ord += 1
        state_row = (
            after.sent_seq,
            after.sent_head,
            after.received_seq,
            after.received_head,
            after.peer_delivered,
            after.peer_acknowledged,
            _to_i64(after.peer_initiation_watermark, "peer_initiation_watermark"),
            _to_i64(after.initiation_timestamp, "initiation_timestamp"),
            delivered_ord,
            acknowledged_ord,
        )
        with self._errors("cannot commit to the store"), self._transaction():
            (last,) = self._conn.execute("SELECT coalesce(max(ord), 0) FROM transcript").fetchone()
            if last != self._next_ord - 1:
                raise StoreError("the store was changed by another writer: reopen it")
            self._conn.executemany(_INSERT_TRANSCRIPT, transcript)
            if messages:
                self._conn.executemany(_INSERT_MESSAGE, messages)
            if receipts:
                self._conn.executemany(_INSERT_RECEIPT, receipts)
            self._conn.execute(_UPDATE_STATE, state_row)
        # Committed: only now may the mirror move.
        self._state = after
        self._next_ord = next_ord
        self._receipt_ords = (delivered_ord, acknowledged_ord)

    def inbox(self, after: int, limit: int) -> list[SignedMessage]:
        self._check_open()
        if limit <= 0 or after >= _I64_MAX:
            return []
        with self._errors("cannot read the store"):
            return self._read_messages(Direction.IN, max(after, 0), min(limit, _I64_MAX))

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
                rows = self._conn.execute(_SELECT_RECORDS, (after, _TRANSCRIPT_PAGE)).fetchall()
            for row in rows:
                ord_ = row[0]
                entry = self._entry(*row[:6])
                message = None if row[6] is None else (
                    row[6], _from_i64(row[7]), row[8], row[9], row[10]
                )
                receipt = None if row[11] is None else (
                    row[11], row[12], row[13], row[14], _from_i64(row[15])
                )
                yield StoredRecord(ord_, entry, message, receipt)
            if len(rows) < _TRANSCRIPT_PAGE:
                return
            after = rows[-1][0]

    def resume_rows(self) -> ResumeRows:
        """The state row and the line id in ``meta``."""
        self._check_open()
        with self._errors("cannot read the store"):
            row = self._conn.execute(_SELECT_STATE).fetchone()
            meta = self._conn.execute("SELECT line_id FROM meta WHERE id = 1").fetchone()
        state: dict[str, object] = {}
        if row is not None:
            state = dict(zip(_STATE_COLUMNS, row, strict=True))
        return ResumeRows(state, None if meta is None else meta[0])

    def unmatched_rows(self) -> tuple[tuple[str, int] | None, int | None]:
        """A ``messages`` row (direction, seq) and a ``receipts`` row (ord) that no transcript
        record of theirs stands behind, if there are such rows."""
        self._check_open()
        with self._errors("cannot read the store"):
            message = self._conn.execute(_SELECT_UNMATCHED_MESSAGE).fetchone()
            receipt = self._conn.execute(_SELECT_UNMATCHED_RECEIPT).fetchone()
        return (None if message is None else (message[0], message[1]),
                None if receipt is None else receipt[0])

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
                _unlock(self._lock_fd)

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
        row = self._conn.execute(_SELECT_STATE).fetchone()
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
            peer_initiation_watermark=_from_i64(watermark),
            initiation_timestamp=_from_i64(initiation),
        )
        state.sent_seq = sent_seq
        state.sent_head = sent_head
        state.pending.extend(self._read_messages(Direction.OUT, peer_delivered, _I64_MAX))
        first_head = max(peer_acknowledged, 1, sent_seq - SENT_HEAD_WINDOW + 1)
        state.sent_heads.update(self._conn.execute(_SELECT_HEADS, (first_head,)))
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
            rows = self._head_reader.execute(_SELECT_HEAD, (seq,)).fetchall()
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
        rows = self._conn.execute(_SELECT_MESSAGES, (direction.value, after, limit))
        return [
            SignedMessage(
                seq, _from_i64(timestamp), prev, envelope[body_at:], envelope, signature, hash_
            )
            for seq, timestamp, prev, hash_, body_at, envelope, signature in rows
        ]

    def _transcript_pages(self) -> Iterator[TranscriptEntry]:
        after = 0
        while True:
            self._check_open()
            with self._errors("cannot read the store"):
                rows = self._conn.execute(_SELECT_TRANSCRIPT, (after, _TRANSCRIPT_PAGE)).fetchall()
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
