"""Tests for the stores: one conformance suite run against MemoryStore and SQLiteStore, then
SQLite's own concerns (file format, durability settings, failed transactions).

"Reload" means, for SQLite, a new SQLiteStore object on the same file, so what is checked is
what the file holds, not what one object remembers. Another store joins the suite with an
entry in ``STORES``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chains import Line

import hotline.store._sqlite
from hotline import (
    Identity,
    LineState,
    LocalProtocolError,
    ReceiptKind,
    StoreError,
    StoreLocked,
    StoreMismatch,
    StoreVersionError,
    sign_message,
    sign_receipt,
)
from hotline.store import Batch, Direction, MemoryStore, Store
from hotline.store._sqlite import SQLiteStore

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX-only")

DELIVERED = ReceiptKind.DELIVERED
ACKNOWLEDGED = ReceiptKind.ACKNOWLEDGED


Reopen = Callable[[], Store]


def _memory(tmp_path: Path) -> Reopen:
    store = MemoryStore()
    return lambda: store  # nothing outlives the object, so "reopening" is the same object


def _sqlite(tmp_path: Path) -> Reopen:
    return lambda: SQLiteStore(tmp_path / "line.db")


#: Every store under test: a function that, given a private directory, returns one that opens
#: the same store again each time it is called.
STORES: dict[str, Callable[[Path], Reopen]] = {"memory": _memory, "sqlite": _sqlite}


@dataclass
class Opened:
    open: Reopen
    current: Store


@pytest.fixture(params=STORES)
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    open_ = STORES[request.param](tmp_path)
    opened = Opened(open_, open_())
    yield opened
    opened.current.close()


@pytest.fixture
def store(opened: Opened) -> Store:
    return opened.current


@pytest.fixture
def reopen(opened: Opened) -> Reopen:
    """Open the store again as a new object: what a restarted process would find."""

    def again() -> Store:
        # As a restarted process: the old one has let go of the store (and of its lock).
        # A MemoryStore "reopens" as itself, so it stays open.
        if not isinstance(opened.current, MemoryStore):
            opened.current.close()
        opened.current = opened.open()
        return opened.current

    return again


@pytest.fixture
def line() -> Line:
    return Line()


def load(store: Store, line: Line) -> LineState:
    return store.load(line.a.public_key, line.b.public_key)


def reload(reopen: Reopen, line: Line) -> LineState:
    return load(reopen(), line)


# --- conformance: both stores ----------------------------------------------------------


def test_new_store_has_no_keys_and_loads_an_empty_state(store: Store, line: Line) -> None:
    assert store.keys() is None
    assert load(store, line) == LineState()
    assert store.keys() == (line.a.public_key, line.b.public_key)
    assert list(store.transcript()) == []


def test_keys_survive_reload(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    assert reopen().keys() == (line.a.public_key, line.b.public_key)


def test_sent_messages_survive_reload(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(3)))
    store.commit(Batch(sent=line.send(2)))
    state = reload(reopen, line)
    assert state == line.ours
    assert [m.seq for m in state.pending] == [1, 2, 3, 4, 5]
    assert state.sent_heads == line.our_hashes
    assert state.sent_head == line.our_hashes[5]


def test_reloaded_messages_keep_their_signed_bytes(
    store: Store, reopen: Reopen, line: Line
) -> None:
    load(store, line)
    sent = line.send(2)
    store.commit(Batch(sent=sent))
    state = reload(reopen, line)
    assert list(state.pending) == sent
    assert [(m.envelope, m.signature, m.body) for m in state.pending] == [
        (m.envelope, m.signature, m.body) for m in sent
    ]


def test_received_messages_and_own_receipts_survive_reload(
    store: Store, reopen: Reopen, line: Line
) -> None:
    load(store, line)
    received = line.receive(4)
    delivered = line.our_receipt(DELIVERED, 4)
    acknowledged = line.our_receipt(ACKNOWLEDGED, 2)
    store.commit(Batch(received=received, own_receipts=[delivered, acknowledged]))
    state = reload(reopen, line)
    assert (state.received_seq, state.received_head) == (4, line.their_hashes[4])
    assert state.delivered_receipt is not None
    assert state.acknowledged_receipt is not None
    assert (state.delivered_receipt.envelope, state.delivered_receipt.signature) == (
        delivered.envelope,
        delivered.signature,
    )
    assert (state.acknowledged_receipt.envelope, state.acknowledged_receipt.signature) == (
        acknowledged.envelope,
        acknowledged.signature,
    )
    assert state == line.ours


def test_latest_own_receipt_wins_across_commits(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    store.commit(Batch(received=line.receive(2), own_receipts=[line.our_receipt(DELIVERED, 2)]))
    store.commit(Batch(received=line.receive(2)))
    latest = line.our_receipt(DELIVERED, 4)
    store.commit(Batch(own_receipts=[latest]))
    assert reload(reopen, line).delivered_receipt == latest


def test_peer_delivered_receipt_retires_pending(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(5)))
    store.commit(Batch(peer_receipts=[line.peer_receipt(DELIVERED, 3)]))
    state = reload(reopen, line)
    assert [m.seq for m in state.pending] == [4, 5]
    assert state.peer_delivered == 3
    assert state == line.ours


def test_peer_acknowledged_receipt_trims_sent_heads(
    store: Store, reopen: Reopen, line: Line
) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(5)))
    receipts = [line.peer_receipt(DELIVERED, 4), line.peer_receipt(ACKNOWLEDGED, 3)]
    store.commit(Batch(peer_receipts=receipts))
    state = reload(reopen, line)
    assert sorted(state.sent_heads) == [3, 4, 5]
    assert state.peer_acknowledged == 3
    assert state == line.ours


def test_messages_sent_and_retired_in_one_batch(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    sent = line.send(3)
    store.commit(Batch(sent=sent, peer_receipts=[line.peer_receipt(DELIVERED, 3)]))
    state = reload(reopen, line)
    assert list(state.pending) == []
    assert (state.sent_seq, state.sent_head) == (3, line.our_hashes[3])


def test_watermarks_persist(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    store.commit(Batch(peer_initiation_watermark=100, initiation_timestamp=50))
    state = reload(reopen, line)
    assert (state.peer_initiation_watermark, state.initiation_timestamp) == (100, 50)


def test_watermarks_only_grow(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    store.commit(Batch(peer_initiation_watermark=100, initiation_timestamp=50))
    store.commit(Batch(peer_initiation_watermark=99, initiation_timestamp=7))
    state = reload(reopen, line)
    assert (state.peer_initiation_watermark, state.initiation_timestamp) == (100, 50)


def test_largest_u64_values_round_trip(store: Store, reopen: Reopen, line: Line) -> None:
    # SQLite integers are signed: the top half of the unsigned range must survive anyway.
    top = 2**64 - 1
    load(store, line)
    message = sign_message(line.b, line.lid, 1, top, bytes(32), b"late")
    store.commit(Batch(received=[message], peer_initiation_watermark=top))
    again = reopen()
    assert load(again, line).peer_initiation_watermark == top
    assert again.inbox(0, 10) == [message]


@pytest.mark.parametrize("who", ["identity", "peer"])
def test_load_with_other_keys_is_a_mismatch(
    store: Store, reopen: Reopen, line: Line, who: str
) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(1)))
    other = Identity.generate().public_key
    keys = (other, line.b.public_key) if who == "identity" else (line.a.public_key, other)
    with pytest.raises(StoreMismatch):
        reopen().load(*keys)


def test_commit_before_load_is_refused(store: Store, line: Line) -> None:
    with pytest.raises(LocalProtocolError, match="load"):
        store.commit(Batch(sent=line.send(1)))


def test_closed_store_is_refused(store: Store, line: Line) -> None:
    load(store, line)
    store.close()
    with pytest.raises(LocalProtocolError, match="closed"):
        store.commit(Batch(sent=line.send(1)))


def _gap(line: Line) -> Batch:
    first, _, third = line.send(3)
    return Batch(sent=[first, third])


def _chain_break(line: Line) -> Batch:
    first = line.send(1)[0]
    stranger = sign_message(line.a, line.lid, 2, line.tick(), bytes(32), b"no link")
    return Batch(sent=[first, stranger])


def _received_gap(line: Line) -> Batch:
    return Batch(received=line.receive(3)[1:])


def _repeat(line: Line) -> Batch:
    first = line.send(1)[0]
    return Batch(sent=[first, first])


def _receipt_beyond_received(line: Line) -> Batch:
    received = line.receive(2)
    upto = line.ours.received_seq + 1
    beyond = sign_receipt(line.a, line.lid, DELIVERED, upto, bytes(32), line.tick())
    return Batch(received=received, own_receipts=[beyond])


def _acknowledged_beyond_delivered(line: Line) -> Batch:
    received = line.receive(2)
    delivered = line.our_receipt(DELIVERED, 3)
    beyond = sign_receipt(line.a, line.lid, ACKNOWLEDGED, 4, line.their_hashes[4], line.tick())
    return Batch(received=received, own_receipts=[delivered, beyond])


INVALID_BATCHES: dict[str, Callable[[Line], Batch]] = {
    "gap in seq": _gap,
    "chain break": _chain_break,
    "received gap": _received_gap,
    "repeated message": _repeat,
    "receipt beyond received": _receipt_beyond_received,
    "acknowledged beyond delivered": _acknowledged_beyond_delivered,
}


@pytest.mark.parametrize("make", INVALID_BATCHES.values(), ids=INVALID_BATCHES.keys())
def test_invalid_batch_changes_nothing(
    store: Store, reopen: Reopen, line: Line, make: Callable[[Line], Batch]
) -> None:
    load(store, line)
    store.commit(
        Batch(sent=line.send(2), received=line.receive(2), peer_initiation_watermark=5)
    )
    before = load(store, line)
    entries = len(list(store.transcript()))
    bad = make(line)
    bad.peer_initiation_watermark = 99  # would show if any part of the batch were applied
    with pytest.raises(LocalProtocolError):
        store.commit(bad)
    assert load(store, line) == before
    again = reopen()
    assert load(again, line) == before
    assert len(list(again.transcript())) == entries


def test_store_accepts_the_next_batch_after_an_invalid_one(
    store: Store, reopen: Reopen, line: Line
) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(1)))
    with pytest.raises(LocalProtocolError):
        store.commit(Batch(sent=line.send(2)[1:]))
    message = sign_message(line.a, line.lid, 2, line.tick(), line.our_hashes[1], b"retry")
    store.commit(Batch(sent=[message]))
    assert reload(reopen, line).sent_head == message.hash


def test_empty_batch_changes_nothing(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(1)))
    store.commit(Batch())
    assert len(list(store.transcript())) == 1
    assert reload(reopen, line) == line.ours


def test_inbox_pages(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    received = line.receive(7)
    store.commit(Batch(received=received[:4]))
    store.commit(Batch(received=received[4:]))
    store = reopen()
    assert store.inbox(0, 3) == received[0:3]
    assert store.inbox(3, 3) == received[3:6]
    assert store.inbox(6, 3) == received[6:7]
    assert store.inbox(7, 3) == []
    assert store.inbox(2, 0) == []


def test_inbox_holds_only_peer_messages(store: Store, line: Line) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(3), received=line.receive(1)))
    assert [m.body for m in store.inbox(0, 10)] == [b"from b 1"]


def test_transcript_keeps_recording_order(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    sent = line.send(2)
    received = line.receive(2)
    own = line.our_receipt(DELIVERED, 2)
    peer = line.peer_receipt(DELIVERED, 1)
    store.commit(Batch(sent=sent, received=received, own_receipts=[own], peer_receipts=[peer]))
    later = line.send(1)
    store.commit(Batch(received=line.receive(1), sent=later))
    store.commit(Batch(own_receipts=[line.our_receipt(ACKNOWLEDGED, 1)]))
    out, in_ = Direction.OUT, Direction.IN
    assert [(e.direction, e.kind, e.seq) for e in reopen().transcript()] == [
        (out, "message", 1),
        (out, "message", 2),
        (in_, "message", 1),
        (in_, "message", 2),
        (out, "delivered", 2),
        (in_, "delivered", 1),
        (out, "message", 3),
        (in_, "message", 3),
        (out, "acknowledged", 1),
    ]


def test_transcript_holds_the_signed_bytes(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    message = line.send(1)[0]
    receipt = line.peer_receipt(DELIVERED, 1)
    store.commit(Batch(sent=[message], peer_receipts=[receipt]))
    assert [(e.envelope, e.signature) for e in reopen().transcript()] == [
        (message.envelope, message.signature),
        (receipt.envelope, receipt.signature),
    ]


def test_retired_messages_stay_in_the_transcript(store: Store, reopen: Reopen, line: Line) -> None:
    load(store, line)
    store.commit(Batch(sent=line.send(3)))
    store.commit(Batch(peer_receipts=[line.peer_receipt(DELIVERED, 3)]))
    kinds = [(e.kind, e.seq) for e in reopen().transcript()]
    assert kinds == [("message", 1), ("message", 2), ("message", 3), ("delivered", 3)]


# --- SQLite only -------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "line.db"


def _pragma(store: SQLiteStore, name: str) -> Any:
    return store._conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_newer_schema_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    expected = r"version 99 is newer than this hotline \(knows up to 1\): upgrade hotline"
    with pytest.raises(StoreVersionError, match=expected):
        SQLiteStore(db)


def test_garbage_file_is_a_store_error(db: Path) -> None:
    db.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="not a SQLite database") as info:
        SQLiteStore(db)
    assert not isinstance(info.value, sqlite3.Error)


def test_other_sqlite_database_is_a_store_error(db: Path) -> None:
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE notes (text TEXT)")
    raw.close()
    with pytest.raises(StoreError, match="other tables"):
        SQLiteStore(db)


@posix_only
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277])
def test_store_and_its_side_files_are_private_whatever_the_umask(
    db: Path, line: Line, umask: int
) -> None:
    old = os.umask(umask)
    try:
        with SQLiteStore(db) as store:
            load(store, line)
            store.commit(Batch(sent=line.send(1)))
            names = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in names}
    finally:
        os.umask(old)
    assert modes == {path.name: 0o600 for path in names}
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def _side_file(db: Path, suffix: str) -> Path:
    """The store's file, or an (empty) -wal or -shm beside it as a crash leaves them."""
    path = Path(f"{db}{suffix}")
    path.touch()
    return path


@posix_only
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o666])
def test_a_store_others_may_read_or_write_is_refused(
    db: Path, line: Line, suffix: str, mode: int
) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
        store.commit(Batch(sent=line.send(1)))
    loose = _side_file(db, suffix)
    loose.chmod(mode)
    with pytest.raises(StoreError) as info:
        SQLiteStore(db)
    assert str(info.value) == (
        f"permissions {mode:04o} for {str(loose)!r} are too open: a store must be readable and"
        f" writable only by its owner (chmod 600 {str(loose)!r})"
    )
    assert stat.S_IMODE(loose.stat().st_mode) == mode  # Refused, not silently changed.
    loose.chmod(0o600)
    with SQLiteStore(db) as store:
        assert load(store, line).sent_seq == 1


# --- one writer per store ----------------------------------------------------------------


def test_a_second_store_on_one_file_in_this_process_is_refused(db: Path, line: Line) -> None:
    with SQLiteStore(db) as first:
        load(first, line)
        with pytest.raises(StoreLocked) as info:
            SQLiteStore(db)
        assert info.value.pid == os.getpid()
        assert info.value.path == str(db)
        assert str(info.value) == (
            f"the store {str(db)!r} is in use by this process ({os.getpid()}), in another"
            " SQLiteStore: one process at a time may use a store"
        )
        first.commit(Batch(sent=line.send(1)))  # The refused open disturbed nothing.
    with SQLiteStore(db) as again:
        assert load(again, line).sent_seq == 1


HOLD_STORE = """
import sys
from hotline.store._sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
"""


def test_a_second_store_on_one_file_in_another_process_is_refused(db: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        assert Path(f"{db}.lock").read_text() == f"{holder.pid}\n"
        with pytest.raises(StoreLocked) as info:
            SQLiteStore(db)
        assert info.value.pid == holder.pid
        assert str(info.value) == (
            f"the store {str(db)!r} is in use by process {holder.pid}: one process at a time"
            " may use a store"
        )
        # A reader takes no lock: it may read the store the holder writes.
        with SQLiteStore.open_existing(db) as reader:
            assert reader.keys() is None
        holder.kill()  # A process that dies, however, lets go of the lock with it.
        holder.wait(10)
        SQLiteStore(db).close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_closing_releases_the_lock_and_forgets_the_pid(db: Path) -> None:
    store = SQLiteStore(db)
    assert Path(f"{db}.lock").read_text() == f"{os.getpid()}\n"
    store.close()
    assert Path(f"{db}.lock").read_text() == ""
    SQLiteStore(db).close()


def test_a_refused_open_releases_the_lock(db: Path) -> None:
    db.write_bytes(b"not a database at all, but not empty either")
    for _ in range(2):  # The second is refused for the same reason, not as locked.
        with pytest.raises(StoreError, match="not a SQLite database") as info:
            SQLiteStore(db)
        assert not isinstance(info.value, StoreLocked)


# --- what is not a store, and reading without writing -----------------------------------


def _empty(db: Path) -> None:
    db.write_bytes(b"")


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(4096))


def _foreign_database(db: Path) -> None:
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE notes (text TEXT)")
        raw.execute("INSERT INTO notes VALUES ('mine, not hotline''s')")
    raw.close()


def _empty_database(db: Path) -> None:
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA page_size = 4096")
        raw.execute("VACUUM")  # A valid SQLite file with nothing in it.
    raw.close()


NOT_STORES = {
    "empty file": (_empty, "is an empty file, not a hotline store"),
    "garbage": (_garbage, "not a hotline store: it is not a SQLite database"),
    "foreign database": (_foreign_database, "not a hotline store: a SQLite database with other"),
    "empty database": (_empty_database, "not a hotline store: an empty database"),
}


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns, stat.S_IMODE(path.stat().st_mode))
        for path in sorted(directory.iterdir())
    }


@pytest.mark.parametrize("opener", ["writing", "reading"])
@pytest.mark.parametrize("case", sorted(NOT_STORES))
def test_what_is_not_a_store_is_refused_and_left_as_it_was(
    db: Path, case: str, opener: str
) -> None:
    make, problem = NOT_STORES[case]
    make(db)
    db.chmod(0o600)
    before = _snapshot(db.parent)
    open_store = SQLiteStore if opener == "writing" else SQLiteStore.open_existing
    with pytest.raises(StoreError, match=problem):
        open_store(db)
    after = _snapshot(db.parent)
    after.pop(f"{db.name}.lock", None)  # The writer's lock file, beside it.
    assert after == before


def test_reading_a_store_never_writes_to_it(db: Path, line: Line) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
        received = line.receive(2)
        store.commit(Batch(sent=line.send(3), received=received))
    db.chmod(0o400)  # Even a file it could not write: reading needs no more.
    before = _snapshot(db.parent)
    with SQLiteStore.open_existing(db) as reader:
        assert reader.keys() == (line.a.public_key, line.b.public_key)
        assert load(reader, line).sent_seq == 3
        assert len(list(reader.transcript())) == 5
        assert reader.inbox(0, 10) == received
        with pytest.raises(LocalProtocolError, match="read-only"):
            reader.commit(Batch(sent=line.send(1)))
    after = _snapshot(db.parent)
    # The store and its lock file are untouched. A reader of a WAL database keeps SQLite's
    # shared index (-shm) beside it and may leave an empty -wal; the next writer removes both.
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) <= {f"{db.name}-wal", f"{db.name}-shm"}
    assert after.get(f"{db.name}-wal", (b"",))[0] == b""


def test_a_read_only_store_does_not_take_keys(db: Path, line: Line) -> None:
    SQLiteStore(db).close()
    with SQLiteStore.open_existing(db) as reader, pytest.raises(LocalProtocolError, match="read"):
        load(reader, line)
    with SQLiteStore(db) as store:
        assert store.keys() is None


def test_a_store_appears_whole_or_not_at_all(
    db: Path, line: Line, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Built beside its path and linked into place: a failure (a crash) before the link
    # leaves no file at the path, so the next open makes a new store instead of refusing
    # an empty file.
    def crash(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hotline.store._sqlite.os, "link", crash)
    with pytest.raises(StoreError, match="cannot create the store"):
        SQLiteStore(db)
    assert not db.exists()
    monkeypatch.undo()
    Path(f"{db}.new").write_bytes(b"half a store, left by a crash")
    with SQLiteStore(db) as store:
        load(store, line)
    assert sorted(path.name for path in db.parent.iterdir()) == [db.name, f"{db.name}.lock"]


def test_journal_mode_is_wal(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert _pragma(store, "journal_mode") == "wal"


@pytest.mark.parametrize(("setting", "value"), [("FULL", 2), ("NORMAL", 1)])
def test_synchronous_setting_is_applied(db: Path, setting: str, value: int) -> None:
    with SQLiteStore(db, synchronous=setting) as store:
        assert _pragma(store, "synchronous") == value


def test_synchronous_defaults_to_full(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert _pragma(store, "synchronous") == 2


@pytest.mark.parametrize("setting", ["OFF", "full", "EXTRA", ""])
def test_other_synchronous_settings_are_refused(db: Path, setting: str) -> None:
    with pytest.raises(LocalProtocolError, match="synchronous"):
        SQLiteStore(db, synchronous=setting)


def test_integrity_check_passes_after_commits(db: Path, line: Line) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
        store.commit(Batch(sent=line.send(3), received=line.receive(3)))
        store.commit(
            Batch(
                own_receipts=[line.our_receipt(DELIVERED, 3), line.our_receipt(ACKNOWLEDGED, 2)],
                peer_receipts=[line.peer_receipt(DELIVERED, 2)],
            )
        )
        assert _pragma(store, "integrity_check") == "ok"
        assert store._conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_mismatch_names_the_side_and_fingerprints(db: Path, line: Line) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
    other = Identity.generate().public_key
    with SQLiteStore(db) as store, pytest.raises(StoreMismatch) as info:
        store.load(line.a.public_key, other)
    message = str(info.value)
    assert line.a.public_key.fingerprint() in message
    assert line.b.public_key.fingerprint() in message
    assert other.fingerprint() in message
    assert "the peer differs" in message


def test_swapped_keys_are_named_as_such(db: Path, line: Line) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
    with SQLiteStore(db) as store, pytest.raises(StoreMismatch, match="swapped"):
        store.load(line.b.public_key, line.a.public_key)


class FailingConnection:
    """Stands in for the store's sqlite3 connection and fails one chosen statement."""

    def __init__(self, conn: sqlite3.Connection, fail: Callable[[str], bool]) -> None:
        self._conn = conn
        self._fail = fail

    def execute(self, sql: str, *args: Any) -> Any:
        if self._fail(sql):
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        if self._fail(sql):
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize(
    "statement", ["INSERT INTO messages", "INSERT INTO receipts", "UPDATE state", "COMMIT"]
)
def test_failure_inside_the_transaction_leaves_the_previous_commit(
    db: Path, line: Line, monkeypatch: pytest.MonkeyPatch, statement: str
) -> None:
    store = SQLiteStore(db)
    load(store, line)
    store.commit(Batch(sent=line.send(2), received=line.receive(1)))
    before = load(store, line)
    batch = Batch(
        sent=line.send(2),
        received=line.receive(2),
        own_receipts=[line.our_receipt(DELIVERED, 3)],
        peer_receipts=[line.peer_receipt(DELIVERED, 4)],
    )
    real = store._conn
    monkeypatch.setattr(store, "_conn", FailingConnection(real, lambda sql: statement in sql))
    with pytest.raises(StoreError, match="simulated") as info:
        store.commit(batch)
    assert not isinstance(info.value, sqlite3.Error)
    assert not real.in_transaction
    monkeypatch.setattr(store, "_conn", real)
    assert load(store, line) == before
    assert len(list(store.transcript())) == 3
    store.close()
    with SQLiteStore(db) as reopened:
        assert load(reopened, line) == before
        assert len(list(reopened.transcript())) == 3


def test_failed_commit_leaves_the_mirror_ready_for_a_retry(
    db: Path, line: Line, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db)
    load(store, line)
    batch = Batch(sent=line.send(2))
    real = store._conn
    monkeypatch.setattr(store, "_conn", FailingConnection(real, lambda sql: sql == "COMMIT"))
    with pytest.raises(StoreError):
        store.commit(batch)
    monkeypatch.setattr(store, "_conn", real)
    store.commit(batch)  # the same batch again: the mirror must not have moved
    store.close()
    with SQLiteStore(db) as reopened:
        assert load(reopened, line) == line.ours


@pytest.fixture
def without_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores that take no lock: writers the lock cannot stop (another program, or a file
    system without flock), which the stores must still not trust blindly."""
    monkeypatch.setattr(hotline.store._sqlite, "lock", lambda path: None)


@pytest.mark.usefixtures("without_locks")
def test_another_writer_is_detected(db: Path, line: Line) -> None:
    with SQLiteStore(db) as first:
        load(first, line)
        with SQLiteStore(db) as second:
            load(second, line)
            second.commit(Batch(sent=line.send(1)))
        with pytest.raises(StoreError, match="another writer"):
            first.commit(Batch(received=line.receive(1)))


@pytest.mark.usefixtures("without_locks")
def test_load_catches_up_with_an_earlier_writer(db: Path, line: Line) -> None:
    with SQLiteStore(db) as reader:
        with SQLiteStore(db) as writer:
            load(writer, line)
            writer.commit(Batch(sent=line.send(1)))
        load(reader, line)
        reader.commit(Batch(sent=line.send(1)))
        assert [e.seq for e in reader.transcript()] == [1, 2]


def test_ten_thousand_messages_round_trip(db: Path, line: Line) -> None:
    store = SQLiteStore(db)
    load(store, line)
    sent = line.send(10_000)
    received = line.receive(10_000)
    for start in range(0, 10_000, 256):
        store.commit(Batch(sent=sent[start : start + 256], received=received[start : start + 256]))
    store.close()
    with SQLiteStore(db) as reopened:
        state = load(reopened, line)
        assert state == line.ours
        assert list(state.pending) == sent
        assert reopened.inbox(0, 20_000) == received
        assert sum(1 for _ in reopened.transcript()) == 20_000


def test_load_and_inbox_scan_no_table(db: Path, line: Line) -> None:
    # Loading must cost O(pending + unacknowledged), not O(transcript): every query is a
    # primary-key search, never a scan or a sort.
    with SQLiteStore(db) as store:
        load(store, line)
        store.commit(Batch(sent=line.send(300), received=line.receive(3)))
        store.commit(Batch(peer_receipts=[line.peer_receipt(DELIVERED, 298)]))
        store.commit(Batch(peer_receipts=[line.peer_receipt(ACKNOWLEDGED, 297)]))
    with SQLiteStore(db) as store:
        traced: list[str] = []
        store._conn.set_trace_callback(traced.append)
        state = load(store, line)
        store.inbox(1, 10)
        store._conn.set_trace_callback(None)
        queries = [sql for sql in traced if sql.lstrip().upper().startswith("SELECT")]
        plans = [
            row[3] for sql in queries for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql)
        ]
    assert [m.seq for m in state.pending] == [299, 300]
    assert sorted(state.sent_heads) == [297, 298, 299, 300]
    assert len(queries) >= 4
    assert all(plan.startswith("SEARCH") for plan in plans), plans


def test_corrupt_state_is_a_store_error(db: Path, line: Line) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
        store.commit(Batch(sent=line.send(2)))
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE state SET sent_head = zeroblob(32)")
    raw.close()
    with SQLiteStore(db) as store, pytest.raises(StoreError, match="corrupt"):
        load(store, line)


def test_open_existing_needs_the_file(db: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        SQLiteStore.open_existing(db)
    assert not db.exists()


def test_open_existing_reads_a_store(db: Path, line: Line) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
        store.commit(Batch(sent=line.send(2)))
    with SQLiteStore.open_existing(db) as store:
        assert store.keys() == (line.a.public_key, line.b.public_key)
        assert [e.seq for e in store.transcript()] == [1, 2]


def test_memory_path_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="MemoryStore"):
        SQLiteStore(":memory:")


def test_transcript_streams_past_one_page(db: Path, line: Line) -> None:
    with SQLiteStore(db) as store:
        load(store, line)
        store.commit(Batch(sent=line.send(300)))
        assert [e.seq for e in store.transcript()] == list(range(1, 301))
