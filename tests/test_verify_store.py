"""``verify_store`` checks what a line resumes from, not only the signed transcript.

The store under test is real: two lines exchange messages over TCP, each acknowledging what it
gets, so the store holds messages, receipts of both kinds both ways and a state row written by
the driver. Each test changes one value in a copy of it, as a disk error or a hand with
``sqlite3`` would, and checks that verification names the table and the row. A line resumes
from these rows (its outbox, its chain heads, its receipt marks), so a disagreement there is
as serious as a bad signature.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from chains import Line
from test_verify import record_traffic

from hotline import (
    Config,
    Identity,
    SQLiteStore,
    StoreInconsistent,
    TranscriptError,
    open_line,
    verify_store,
)
from hotline._verify import VerifyReport
from hotline.store import Batch, StoredRecord

MESSAGES = 3
"""Messages each way."""


@dataclass(frozen=True)
class Exchange:
    folder: Path
    report: VerifyReport

    @property
    def store(self) -> Path:
        """The listening side's store (the other holds the same kinds of rows)."""
        return self.folder / "a.db"


async def _exchange(folder: Path) -> None:
    a, b = Identity.generate(), Identity.generate()
    config = Config(reconnect_initial=0.05, reconnect_max=0.2)
    with trio.fail_after(20):
        async with open_line(a, b.public_key, store=folder / "a.db", listen=("127.0.0.1", 0),
                             config=config) as line_a:
            port = line_a.listen_addresses[0][1]
            async with open_line(b, a.public_key, store=folder / "b.db",
                                 connect=("127.0.0.1", port), config=config) as line_b:
                sent = []
                for n in range(1, MESSAGES + 1):
                    sent.append(await line_a.send(f"a {n}".encode()))
                    sent.append(await line_b.send(f"b {n}".encode()))
                for line in (line_a, line_b):
                    for _ in range(MESSAGES):
                        (await line.receive()).ack()
                for outgoing in sent[-2:]:
                    await outgoing.acknowledged()
                await line_a.flush()
                await line_b.flush()


def make_exchange(folder: Path) -> Exchange:
    """Run the exchange into ``folder`` and return it with the report of its valid store."""
    trio.run(_exchange, folder)
    with SQLiteStore.open_existing(folder / "a.db") as store:
        report = verify_store(store)
    return Exchange(folder, report)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    return make_exchange(tmp_path_factory.mktemp("exchange"))


def _flip(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


def tampered_copy(exchange: Exchange, folder: Path, change: Callable[[sqlite3.Connection], str]
                  ) -> tuple[Path, str]:
    """A copy of the store with ``change`` applied; returns it and the row ``change`` names."""
    copy = folder / "hotline.db"
    shutil.copy(exchange.store, copy)
    with contextlib.closing(sqlite3.connect(copy)) as db, db:
        db.create_function("flip", 1, _flip, deterministic=True)
        row = change(db)
    return copy, row


def _one(db: sqlite3.Connection, sql: str) -> int:
    (value,) = db.execute(sql).fetchone()
    return int(value)


def _message_column(direction: str, seq: int, column: str, new: str) -> Callable[..., str]:
    def change(db: sqlite3.Connection) -> str:
        db.execute(f"UPDATE messages SET {column} = {new} WHERE direction = ? AND seq = ?",
                   (direction, seq))
        return f"table messages, row ({direction}, {seq}): {column} disagrees with record"

    return change


def _receipt_column(direction: str, kind: str, column: str, new: str) -> Callable[..., str]:
    def change(db: sqlite3.Connection) -> str:
        ord_ = _one(db, f"SELECT max(ord) FROM receipts WHERE direction = '{direction}'"
                        f" AND kind = '{kind}'")
        db.execute(f"UPDATE receipts SET {column} = {new} WHERE ord = ?", (ord_,))
        return f"table receipts, row {ord_}: {column} disagrees with record"

    return change


def _state_column(column: str, new: str) -> Callable[..., str]:
    def change(db: sqlite3.Connection) -> str:
        db.execute(f"UPDATE state SET {column} = {new}")
        return f"table state, row 1: {column} "

    return change


def _meta_line_id(db: sqlite3.Connection) -> str:
    db.execute("UPDATE meta SET line_id = flip(line_id)")
    return "table meta, row 1: line_id is not the line id of the store's two keys"


def _message_row_without_record(db: sqlite3.Connection) -> str:
    seq = _one(db, "SELECT max(seq) FROM messages WHERE direction = 'in'") + 1
    db.execute("INSERT INTO messages SELECT direction, ?, ord, timestamp, prev, hash, body_at"
               " FROM messages WHERE direction = 'in' AND seq = 1", (seq,))
    return f"table messages, row (in, {seq}): no message of the transcript stands behind it"


def _receipt_row_without_record(db: sqlite3.Connection) -> str:
    ord_ = _one(db, "SELECT max(ord) FROM transcript") + 1
    db.execute("INSERT INTO receipts SELECT ?, direction, kind, upto, head, timestamp"
               " FROM receipts ORDER BY ord LIMIT 1", (ord_,))
    return f"table receipts, row {ord_}: no receipt of the transcript stands behind it"


def _receipt_row_on_a_message(db: sqlite3.Connection) -> str:
    # A receipts row moved onto the ord of a message record: the receipt loses its row.
    ord_ = _one(db, "SELECT min(ord) FROM receipts")
    message_ord = _one(db, "SELECT min(ord) FROM transcript WHERE kind = 'message'")
    db.execute("UPDATE receipts SET ord = ? WHERE ord = ?", (message_ord, ord_))
    position = _one(db, f"SELECT count(*) FROM transcript WHERE ord <= {ord_}")
    return f"record {position} ("


def _missing_message_row(db: sqlite3.Connection) -> str:
    db.execute("DELETE FROM messages WHERE direction = 'out' AND seq = 2")
    return "(out message 2) has no row in table messages"


TAMPERS: dict[str, Callable[[sqlite3.Connection], str]] = {
    "messages.hash out": _message_column("out", 2, "hash", "flip(hash)"),
    "messages.hash in": _message_column("in", 3, "hash", "flip(hash)"),
    "messages.prev": _message_column("in", 2, "prev", "flip(prev)"),
    "messages.timestamp": _message_column("out", 1, "timestamp", "timestamp + 1"),
    "messages.body_at": _message_column("out", 3, "body_at", "body_at - 1"),
    "messages.ord": _message_column("in", 1, "ord", "ord + 1"),
    "receipts.head in": _receipt_column("in", "delivered", "head", "flip(head)"),
    "receipts.head out": _receipt_column("out", "acknowledged", "head", "flip(head)"),
    "receipts.upto": _receipt_column("in", "acknowledged", "upto", "upto - 1"),
    "receipts.kind": _receipt_column("out", "delivered", "kind", "'acknowledged'"),
    "receipts.direction": _receipt_column("in", "delivered", "direction", "'out'"),
    "receipts.timestamp": _receipt_column("out", "delivered", "timestamp", "timestamp - 1"),
    "state.sent_seq": _state_column("sent_seq", "sent_seq - 1"),
    "state.sent_head": _state_column("sent_head", "flip(sent_head)"),
    "state.received_seq": _state_column("received_seq", "received_seq + 1"),
    "state.received_head": _state_column("received_head", "flip(received_head)"),
    "state.peer_delivered": _state_column("peer_delivered", "peer_delivered - 1"),
    "state.peer_acknowledged": _state_column("peer_acknowledged", "peer_acknowledged - 1"),
    "state.delivered_receipt": _state_column("delivered_receipt", "acknowledged_receipt"),
    "state.acknowledged_receipt": _state_column("acknowledged_receipt", "NULL"),
    "meta.line_id": _meta_line_id,
    "messages row without record": _message_row_without_record,
    "receipts row without record": _receipt_row_without_record,
    "receipts row moved onto a message": _receipt_row_on_a_message,
    "messages row missing": _missing_message_row,
}


def test_the_exchange_left_every_kind_of_row(exchange: Exchange) -> None:
    report = exchange.report
    assert (report.messages_out, report.messages_in) == (MESSAGES, MESSAGES)
    assert report.delivered_in == report.acknowledged_in == MESSAGES
    assert report.delivered_out == report.acknowledged_out == MESSAGES
    with contextlib.closing(sqlite3.connect(exchange.store)) as db:
        kinds = set(db.execute("SELECT direction, kind FROM receipts"))
        state = db.execute("SELECT delivered_receipt, acknowledged_receipt FROM state").fetchone()
    assert kinds == {(d, k) for d in ("in", "out") for k in ("delivered", "acknowledged")}
    assert None not in state


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_a_changed_row_the_line_resumes_from_is_an_inconsistent_store(
    exchange: Exchange, tmp_path: Path, tamper: str
) -> None:
    copy, row = tampered_copy(exchange, tmp_path, TAMPERS[tamper])
    with SQLiteStore.open_existing(copy) as store, pytest.raises(StoreInconsistent) as info:
        verify_store(store)
    message = str(info.value)
    assert message.startswith("inconsistent store: "), message
    assert row in message, message
    assert isinstance(info.value, TranscriptError)  # What verify reports as INVALID.


@pytest.mark.parametrize(("direction", "kind"), [("in", "delivered"), ("out", "acknowledged"),
                                                 ("in", "acknowledged"), ("out", "delivered")])
def test_a_duplicated_receipt_is_counted_once(
    exchange: Exchange, tmp_path: Path, direction: str, kind: str
) -> None:
    def duplicate_latest(db: sqlite3.Connection) -> str:
        ord_ = _one(db, f"SELECT max(ord) FROM receipts WHERE direction = '{direction}'"
                        f" AND kind = '{kind}'")
        new = _one(db, "SELECT max(ord) FROM transcript") + 1
        db.execute("INSERT INTO transcript SELECT ?, direction, kind, seq, envelope, signature"
                   " FROM transcript WHERE ord = ?", (new, ord_))
        db.execute("INSERT INTO receipts SELECT ?, direction, kind, upto, head, timestamp"
                   " FROM receipts WHERE ord = ?", (new, ord_))
        return ""

    copy, _ = tampered_copy(exchange, tmp_path, duplicate_latest)
    with SQLiteStore.open_existing(copy) as store:
        assert verify_store(store) == exchange.report


def test_verify_reads_a_store_being_written_as_of_one_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hotline verify may run beside the line that writes the store: a commit landing while
    # it reads must not set the rows it read first against rows it reads after.
    line = Line()
    path = tmp_path / "line.db"
    with SQLiteStore(path) as writer, SQLiteStore.open_existing(path) as reader:
        record_traffic(writer, line)
        records = reader.stored_records

        def commit_while_reading() -> Iterator[StoredRecord]:
            for number, record in enumerate(records()):
                if number == 1:
                    writer.commit(Batch(sent=line.send(2), received=line.receive(1)))
                yield record

        monkeypatch.setattr(reader, "stored_records", commit_while_reading)
        report = verify_store(reader)
        assert (report.messages_out, report.messages_in) == (5, 5)
        monkeypatch.undo()
        report = verify_store(reader)
        assert (report.messages_out, report.messages_in) == (7, 6)
