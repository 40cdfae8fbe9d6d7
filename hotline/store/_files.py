"""The SQLite store's files: creating, locking, checking modes, opening.

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
from pathlib import Path

from .._errors import StoreError, StoreLocked, StoreVersionError
from ._schema import SCHEMA, SCHEMA_VERSION

if sys.platform != "win32":
    import fcntl

__all__ = ["LOCK_SUFFIX", "lock", "open_database", "unlock"]

#: Beside the store: the lock held while it is open for writing, with its holder's PID.
LOCK_SUFFIX = ".lock"
# Beside the store: a new store is built here, then linked into place whole.
_NEW_SUFFIX = ".new"


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
            for statement in SCHEMA:
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


def lock(path: str) -> int:
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


def unlock(fd: int) -> None:
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


def open_database(path: str, synchronous: str, *, writing: bool) -> tuple[sqlite3.Connection, str]:
    """Open the store at ``path`` (a writer first creates it where nothing exists), refuse
    what is not a hotline store of a version this code knows, and return the connection and
    a read-only URI of the same file."""
    try:
        header = _read_header(path)
    except FileNotFoundError:
        if not writing:
            raise StoreError(f"there is no store at {path!r}") from None
        _create_store(path)
        header = _read_header(path)
    except OSError as exc:
        raise StoreError(f"cannot open the store {path!r}: {exc.strerror}") from None
    if not header:
        # Only a path where nothing exists becomes a new store: an empty file may be a
        # store whose contents were lost, and starting a new line there would hide that.
        raise StoreError(f"{path!r} is an empty file, not a hotline store")
    if not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path!r} is not a hotline store: it is not a SQLite database")
    # A SQLite file of something else (user_version 0) is refused as such below; the
    # permissions matter only for a store.
    if writing and header[_USER_VERSION_AT : _USER_VERSION_AT + 4] != bytes(4):
        _check_private(path)
    # rw: the file exists, and SQLite must not create one where it vanished. ro: a reader
    # never writes, whatever it opens.
    uri = Path(path).absolute().as_uri() + ("?mode=rw" if writing else "?mode=ro")
    try:
        # check_same_thread=False: the trio driver calls every method from a worker thread,
        # never two at a time, and not always from the same thread.
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path!r}: {exc}") from exc
    try:
        _set_up(conn, path, synchronous, writing=writing)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the store {path!r}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn, uri.replace("?mode=rw", "?mode=ro")


def _set_up(conn: sqlite3.Connection, path: str, synchronous: str, *, writing: bool) -> None:
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise StoreError(
                f"{path!r} is not a hotline store: it is not a SQLite database"
            ) from None
        raise
    if version == 0:
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        what = "a SQLite database with other tables" if tables else "an empty database"
        raise StoreError(f"{path!r} is not a hotline store: {what}")
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"store schema version {version} is newer than this hotline"
            f" (knows up to {SCHEMA_VERSION}): upgrade hotline"
        )
    if writing:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
