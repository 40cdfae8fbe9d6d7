"""The SQLite store's schema and its SQL, and the conversions its columns need.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import LocalProtocolError
from ..protocol import LineState, ReceiptKind
from ._interface import Batch, TranscriptEntry

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "BatchRows",
    "ResumeRows",
    "StoredRecord",
    "batch_rows",
    "from_i64",
    "to_i64",
]

SCHEMA_VERSION = 1

_U64 = 1 << 64
I64_MAX = (1 << 63) - 1

SCHEMA = (
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

INSERT_TRANSCRIPT = (
    "INSERT INTO transcript (ord, direction, kind, seq, envelope, signature)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (direction, seq, ord, timestamp, prev, hash, body_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_RECEIPT = (
    "INSERT INTO receipts (ord, direction, kind, upto, head, timestamp) VALUES (?, ?, ?, ?, ?, ?)"
)
UPDATE_STATE = (
    "UPDATE state SET sent_seq = ?, sent_head = ?, received_seq = ?, received_head = ?,"
    " peer_delivered = ?, peer_acknowledged = ?, peer_initiation_watermark = ?,"
    " initiation_timestamp = ?, delivered_receipt = ?, acknowledged_receipt = ? WHERE id = 1"
)
SELECT_STATE = (
    "SELECT sent_seq, sent_head, received_seq, received_head, peer_delivered,"
    " peer_acknowledged, peer_initiation_watermark, initiation_timestamp,"
    " delivered_receipt, acknowledged_receipt FROM state WHERE id = 1"
)
# CROSS JOIN pins messages as the outer loop: a range scan of its primary key, then one
# rowid lookup per row in transcript.
SELECT_MESSAGES = (
    "SELECT m.seq, m.timestamp, m.prev, m.hash, m.body_at, t.envelope, t.signature"
    " FROM messages AS m CROSS JOIN transcript AS t ON t.ord = m.ord"
    " WHERE m.direction = ? AND m.seq > ? ORDER BY m.seq LIMIT ?"
)
SELECT_HEADS = (
    "SELECT seq, hash FROM messages WHERE direction = 'out' AND seq >= ? ORDER BY seq"
)
SELECT_HEAD = "SELECT hash FROM messages WHERE direction = 'out' AND seq = ?"
SELECT_TRANSCRIPT = (
    "SELECT ord, direction, kind, seq, envelope, signature FROM transcript"
    " WHERE ord > ? ORDER BY ord LIMIT ?"
)
# For the verifier: each record with the row derived from it, found the way load() finds it
# (a message by its direction and number, a receipt by its ord).
SELECT_RECORDS = (
    "SELECT t.ord, t.direction, t.kind, t.seq, t.envelope, t.signature,"
    " m.ord, m.timestamp, m.prev, m.hash, m.body_at,"
    " r.direction, r.kind, r.upto, r.head, r.timestamp"
    " FROM transcript AS t"
    " LEFT JOIN messages AS m"
    " ON t.kind = 'message' AND m.direction = t.direction AND m.seq = t.seq"
    " LEFT JOIN receipts AS r ON t.kind != 'message' AND r.ord = t.ord"
    " WHERE t.ord > ? ORDER BY t.ord LIMIT ?"
)
SELECT_UNMATCHED_MESSAGE = (
    "SELECT direction, seq FROM messages AS m WHERE NOT EXISTS (SELECT 1 FROM transcript AS t"
    " WHERE t.ord = m.ord AND t.kind = 'message' AND t.direction = m.direction"
    " AND t.seq = m.seq) ORDER BY direction, seq LIMIT 1"
)
SELECT_UNMATCHED_RECEIPT = (
    "SELECT ord FROM receipts AS r WHERE NOT EXISTS (SELECT 1 FROM transcript AS t"
    " WHERE t.ord = r.ord AND t.kind != 'message') ORDER BY ord LIMIT 1"
)
# The columns of SELECT_STATE, in its order.
STATE_COLUMNS = (
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


def to_i64(value: int, name: str) -> int:
    if not 0 <= value < _U64:
        raise LocalProtocolError(f"{name} must be an unsigned 64-bit integer")
    return value - _U64 if value > I64_MAX else value


def from_i64(value: int) -> int:
    return value + _U64 if value < 0 else value


@dataclass(frozen=True, slots=True)
class BatchRows:
    """The rows one batch adds, and where the store's counters stand after it."""

    transcript: list[tuple[int, str, str, int, bytes, bytes]]
    messages: list[tuple[str, int, int, int, bytes, bytes, int]]
    receipts: list[tuple[int, str, str, int, bytes, int]]
    state: tuple[object, ...]
    """The new ``state`` row, for :data:`UPDATE_STATE`."""
    next_ord: int
    receipt_ords: tuple[int | None, int | None]
    """Ords of our latest delivered and acknowledged receipts."""


def batch_rows(
    batch: Batch, after: LineState, next_ord: int, receipt_ords: tuple[int | None, int | None]
) -> BatchRows:
    """The rows of ``batch``, numbered from ``next_ord``; ``after`` is the state it leads to.

    Raises LocalProtocolError for a value no column can hold, before anything is written.
    """
    transcript: list[tuple[int, str, str, int, bytes, bytes]] = []
    messages: list[tuple[str, int, int, int, bytes, bytes, int]] = []
    receipts: list[tuple[int, str, str, int, bytes, int]] = []
    for way, chain in (("out", batch.sent), ("in", batch.received)):
        for m in chain:
            timestamp = to_i64(m.timestamp, "timestamp")
            body_at = len(m.envelope) - len(m.body)
            transcript.append((next_ord, way, "message", m.seq, m.envelope, m.signature))
            messages.append((way, m.seq, next_ord, timestamp, m.prev, m.hash, body_at))
            next_ord += 1
    delivered_ord, acknowledged_ord = receipt_ords
    for way, signed in (("out", batch.own_receipts), ("in", batch.peer_receipts)):
        for r in signed:
            kind = r.kind.value
            timestamp = to_i64(r.timestamp, "timestamp")
            transcript.append((next_ord, way, kind, r.upto, r.envelope, r.signature))
            receipts.append((next_ord, way, kind, r.upto, r.head, timestamp))
            if way == "out" and r.kind is ReceiptKind.DELIVERED:
                delivered_ord = next_ord
            elif way == "out":
                acknowledged_ord = next_ord
            next_ord += 1
    state = (
        after.sent_seq,
        after.sent_head,
        after.received_seq,
        after.received_head,
        after.peer_delivered,
        after.peer_acknowledged,
        to_i64(after.peer_initiation_watermark, "peer_initiation_watermark"),
        to_i64(after.initiation_timestamp, "initiation_timestamp"),
        delivered_ord,
        acknowledged_ord,
    )
    return BatchRows(
        transcript, messages, receipts, state, next_ord, (delivered_ord, acknowledged_ord)
    )
