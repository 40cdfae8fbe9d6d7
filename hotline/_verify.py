"""The offline transcript verifier: anyone with the two public keys can check a transcript.

Theory of operation
-------------------
A store's transcript is every signed record of a line, in the order the store recorded it.
:func:`verify_transcript` replays it once, front to back, with nothing but the two public keys
(no private key and no store internals), so a third party can run it on a transcript handed
to them. It keeps, per direction, the number of messages seen and their chain hashes (32 bytes
each in one bytearray), and per signer and kind the highest receipt seen so far.

For every message: the envelope's line and signer, the sequence number (exactly one more
than the last of its direction: no gap, repeat or reordering), ``prev`` (the hash of the
previous message, or 32 zero bytes for the first) and, if it carries one, the signature (ours
for ``out``, the peer's for ``in``). A message stored without a signature (one of a burst,
docs/protocol.md) is covered by the next signed message of its direction, which the chain
binds to it; when the transcript ends, every message must be covered, and a receipt may
cover only messages covered when it was recorded (a receiver never receipts less).

For every receipt: the signature (ours for ``out``, covering the peer's messages; the
peer's for ``in``, covering ours), ``upto`` no higher than the messages of the covered
direction recorded *before* it (a store records a message before sending it and before
receipting it, so this holds both ways), ``head`` equal to the hash of message ``upto``, no
step back from the signer's previous receipt of that kind (an equal one is a resend), and an
acknowledged mark never above the same signer's delivered mark.

:func:`message_proof` takes one message's proof out of a store: the envelopes from it to the
signed message that covers it, which :func:`~hotline.check_message_proof` checks with only
the sender's public key and the line id.

The first record that fails stops the check with :class:`~hotline.TranscriptError`, which
names it: its 1-based position, direction, kind and sequence number, and what is wrong.

A receipt recorded twice (the same signed bytes) is counted once: it is one statement. The
same ``upto`` signed again with a new timestamp is another statement, and counts.

:func:`verify_store` on a :class:`~hotline.SQLiteStore` also checks what the line resumes
from, which is not signed: every ``messages`` and ``receipts`` row against the record it
was derived from (and that no row lacks one), the ``state`` row against the transcript's
chains and marks (numbers, heads, the peer's receipt marks, the ords of our latest receipts)
and the line id in ``meta``. A disagreement is :class:`~hotline.StoreInconsistent`, naming
the table and the row. The handshake watermarks in the state row are not in the transcript
and cannot be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import AuthenticationError, RemoteProtocolError, StoreInconsistent, TranscriptError
from ._keys import PublicKey, line_id
from .protocol import (
    GENESIS_HEAD,
    HASH_SIZE,
    MessageProof,
    Receipt,
    ReceiptKind,
    SignedMessage,
    decode_message,
    open_message,
    open_receipt,
)
from .store import Direction, Store, TranscriptEntry

if TYPE_CHECKING:
    from .store import SQLiteStore, StoredRecord

__all__ = ["VerifyReport", "message_proof", "verify_store", "verify_transcript"]


@dataclass(frozen=True)
class VerifyReport:
    """What a transcript that verifies contains. ``_out`` is signed by us, ``_in`` by the peer."""

    identity: PublicKey
    peer: PublicKey
    messages_out: int
    messages_in: int
    receipts_out: int
    receipts_in: int
    delivered_out: int
    """The highest delivered receipt we signed (for the peer's messages)."""
    delivered_in: int
    """The highest delivered receipt the peer signed (for our messages)."""
    acknowledged_out: int
    acknowledged_in: int


@dataclass
class _Side:
    """What the transcript has shown so far of one signer: its messages and its receipts."""

    signer: PublicKey
    hashes: bytearray = field(default_factory=bytearray)
    """Chain hashes of messages 1..count, concatenated: a dict would cost ~4x the memory."""
    receipts: int = 0
    delivered: int = 0
    acknowledged: int = 0
    at_mark: dict[str, set[bytes]] = field(default_factory=dict)
    """Per kind, the signatures of the receipts seen at its current mark: a repeat is one."""
    covered: int = 0
    """The newest message a verified signature covers: messages after it wait for one."""
    first_uncovered: tuple[int, TranscriptEntry] | None = None
    """Where the first message after ``covered`` was recorded, to name it if none comes."""

    @property
    def count(self) -> int:
        return len(self.hashes) // HASH_SIZE

    def head(self, seq: int) -> bytes:
        if seq == 0:
            return GENESIS_HEAD
        return bytes(self.hashes[(seq - 1) * HASH_SIZE : seq * HASH_SIZE])


_KINDS = ("message", "delivered", "acknowledged")


class _Replay:
    """The check of one transcript, record by record (see the module docstring)."""

    def __init__(self, identity: PublicKey, peer: PublicKey, max_body_size: int) -> None:
        self.identity = identity
        self.peer = peer
        self.lid = line_id(identity, peer)
        self.max_body_size = max_body_size
        self.sides = {Direction.OUT: _Side(identity), Direction.IN: _Side(peer)}

    def check(self, position: int, entry: TranscriptEntry) -> SignedMessage | Receipt:
        """The record, decoded, once it verifies; TranscriptError naming it if it does not."""
        if not isinstance(entry.direction, Direction) or entry.kind not in _KINDS:
            raise TranscriptError(
                f"record {position}: unknown direction or kind"
                f" ({entry.direction!r}, {entry.kind!r})"
            )
        own = self.sides[entry.direction]
        other = self.sides[Direction.IN if entry.direction is Direction.OUT else Direction.OUT]
        if entry.kind == "message":
            result: SignedMessage | Receipt | str = _check_message(
                entry, own, self.lid, self.max_body_size
            )
        else:
            result = _check_receipt(entry, own, other, self.lid)
        if isinstance(result, str):
            raise TranscriptError(f"{_where(position, entry)}: {result}")
        if isinstance(result, SignedMessage) and not result.signed and own.first_uncovered is None:
            own.first_uncovered = (position, entry)
        return result

    def finish(self) -> None:
        """Raise TranscriptError for a message that no signature of the transcript covers."""
        for side in self.sides.values():
            if side.first_uncovered is not None:
                position, entry = side.first_uncovered
                raise TranscriptError(
                    f"{_where(position, entry)}: no signed message after it covers it"
                    f" (messages {entry.seq}..{side.count} are unsigned)"
                )

    def report(self) -> VerifyReport:
        out, in_ = self.sides[Direction.OUT], self.sides[Direction.IN]
        return VerifyReport(
            identity=self.identity,
            peer=self.peer,
            messages_out=out.count,
            messages_in=in_.count,
            receipts_out=out.receipts,
            receipts_in=in_.receipts,
            delivered_out=out.delivered,
            delivered_in=in_.delivered,
            acknowledged_out=out.acknowledged,
            acknowledged_in=in_.acknowledged,
        )


def _where(position: int, entry: TranscriptEntry) -> str:
    return f"record {position} ({entry.direction.value} {entry.kind} {entry.seq})"


def verify_transcript(
    entries: Iterable[TranscriptEntry],
    identity: PublicKey,
    peer: PublicKey,
    *,
    max_body_size: int = 1 << 30,
) -> VerifyReport:
    """Check every record of a line's transcript; raise TranscriptError at the first bad one.

    ``identity`` is the key of the node whose transcript this is (its ``out`` records),
    ``peer`` the other end's. ``max_body_size`` bounds the bodies accepted.
    """
    replay = _Replay(identity, peer, max_body_size)
    for position, entry in enumerate(entries, 1):
        replay.check(position, entry)
    replay.finish()
    return replay.report()


def verify_store(store: Store) -> VerifyReport:
    """Verify ``store``'s transcript against the keys it belongs to, and for a SQLiteStore
    also the rows the line resumes from against the transcript (StoreInconsistent)."""
    keys = store.keys()
    if keys is None:
        raise TranscriptError("the store has no keys: it was never loaded, so it holds no line")
    from .store import SQLiteStore

    if isinstance(store, SQLiteStore):
        with store.read_snapshot():
            return _verify_sqlite(store, *keys)
    return verify_transcript(store.transcript(), *keys)


def _inconsistent(table: str, row: str, problem: str) -> StoreInconsistent:
    return StoreInconsistent(f"inconsistent store: table {table}, row {row}: {problem}")


def _verify_sqlite(store: SQLiteStore, identity: PublicKey, peer: PublicKey) -> VerifyReport:
    replay = _Replay(identity, peer, 1 << 30)
    # Per kind, our latest receipt's signature and the ords that hold it (one, unless it was
    # recorded twice): the state row must point at one of them.
    latest_own: dict[str, tuple[bytes, set[int]]] = {}
    for position, record in enumerate(store.stored_records(), 1):
        signed = replay.check(position, record.entry)
        if isinstance(signed, SignedMessage):
            _compare_message(position, record, signed)
        else:
            _compare_receipt(position, record, signed)
            if record.entry.direction is Direction.OUT:
                signature, ords = latest_own.get(signed.kind.value, (b"", set()))
                if signed.signature != signature:
                    signature, ords = signed.signature, set()
                ords.add(record.ord)
                latest_own[signed.kind.value] = (signature, ords)
    replay.finish()
    rows = store.resume_rows()
    if rows.line_id != replay.lid:
        raise _inconsistent("meta", "1", "line_id is not the line id of the store's two keys")
    unmatched_message, unmatched_receipt = store.unmatched_rows()
    if unmatched_message is not None:
        direction, seq = unmatched_message
        raise _inconsistent(
            "messages", f"({direction}, {seq})", "no message of the transcript stands behind it"
        )
    if unmatched_receipt is not None:
        raise _inconsistent(
            "receipts", str(unmatched_receipt), "no receipt of the transcript stands behind it"
        )
    out, in_ = replay.sides[Direction.OUT], replay.sides[Direction.IN]
    expected: dict[str, object] = {
        "sent_seq": out.count,
        "sent_head": out.head(out.count),
        "received_seq": in_.count,
        "received_head": in_.head(in_.count),
        "peer_delivered": in_.delivered,
        "peer_acknowledged": in_.acknowledged,
    }
    if not rows.state:
        raise StoreInconsistent("inconsistent store: table state has no row")
    for column, value in expected.items():
        stored = rows.state[column]
        if stored != value:
            shown = "" if isinstance(value, bytes) else f" (it says {stored!r}, not {value!r})"
            raise _inconsistent("state", "1", f"{column} disagrees with the transcript{shown}")
    for kind in ("delivered", "acknowledged"):
        column = f"{kind}_receipt"
        holders: set[int | None] = set(latest_own[kind][1]) if kind in latest_own else {None}
        if rows.state[column] not in holders:
            raise _inconsistent(
                "state", "1", f"{column} is not the ord of our latest {kind} receipt"
                f" (it says {rows.state[column]!r}, not {min(holders, key=str)!r})"
            )
    return replay.report()


def _compare_message(position: int, record: StoredRecord, message: SignedMessage) -> None:
    entry = record.entry
    if record.message is None:
        raise StoreInconsistent(
            f"inconsistent store: {_where(position, entry)} has no row in table messages"
        )
    expected = (record.ord, message.timestamp, message.prev, message.hash,
                len(message.envelope) - len(message.body))
    for column, stored, value in zip(_MESSAGE_COLUMNS, record.message, expected, strict=True):
        if stored != value:
            raise _inconsistent(
                "messages", f"({entry.direction.value}, {entry.seq})",
                f"{column} disagrees with record {position} of the transcript",
            )


def _compare_receipt(position: int, record: StoredRecord, receipt: Receipt) -> None:
    entry = record.entry
    if record.receipt is None:
        raise StoreInconsistent(
            f"inconsistent store: {_where(position, entry)} has no row in table receipts"
        )
    expected = (entry.direction.value, receipt.kind.value, receipt.upto, receipt.head,
                receipt.timestamp)
    for column, stored, value in zip(_RECEIPT_COLUMNS, record.receipt, expected, strict=True):
        if stored != value:
            raise _inconsistent(
                "receipts", str(record.ord),
                f"{column} disagrees with record {position} of the transcript",
            )


_MESSAGE_COLUMNS = ("ord", "timestamp", "prev", "hash", "body_at")
_RECEIPT_COLUMNS = ("direction", "kind", "upto", "head", "timestamp")


def _check_message(
    entry: TranscriptEntry, side: _Side, lid: bytes, max_body_size: int
) -> SignedMessage | str:
    """Message ``entry`` of ``side``'s chain, recorded, or what is wrong with it."""
    # A signature is checked before anything else is read, as a receiver does.
    opener = open_message if entry.signature else decode_message
    try:
        message = opener(
            entry.envelope,
            entry.signature,
            sender=side.signer,
            line_id=lid,
            max_body_size=max_body_size,
        )
    except AuthenticationError:
        return "signature does not verify"
    except RemoteProtocolError as exc:
        return f"malformed message: {exc}"
    if message.seq != entry.seq:
        return f"the envelope says seq {message.seq}"
    expected = side.count + 1
    if message.seq != expected:
        return f"expected message {expected} next (a gap, a repeat or a reordering)"
    if message.prev != side.head(side.count):
        return f"prev is not the hash of message {side.count}: the chain is broken"
    if message.signed:
        # Through the chain just checked, it covers every message before it.
        side.covered = message.seq
        side.first_uncovered = None
    side.hashes += message.hash
    return message


def _check_receipt(
    entry: TranscriptEntry, signer: _Side, covered: _Side, lid: bytes
) -> Receipt | str:
    """Receipt ``entry`` by ``signer``, recorded, or what is wrong with it."""
    try:
        receipt = open_receipt(entry.envelope, entry.signature, signer=signer.signer, line_id=lid)
    except AuthenticationError:
        return "signature does not verify"
    except RemoteProtocolError as exc:
        return f"malformed receipt: {exc}"
    if receipt.kind.value != entry.kind or receipt.upto != entry.seq:
        return f"the envelope says {receipt.kind.value} {receipt.upto}"
    upto = receipt.upto
    if upto > covered.count:
        return f"covers message {upto} but only {covered.count} were recorded before it"
    if upto > covered.covered:
        return f"covers message {upto}, which no signature recorded before it covers"
    if receipt.head != covered.head(upto):
        return f"head is not the hash of message {upto}"
    delivered = receipt.kind is ReceiptKind.DELIVERED
    mark = signer.delivered if delivered else signer.acknowledged
    if upto < mark:
        return f"goes back from {mark} to {upto}"
    if not delivered and upto > signer.delivered:
        return f"acknowledges beyond the delivered mark {signer.delivered}"
    seen = signer.at_mark.setdefault(entry.kind, set())
    if upto > mark:
        seen.clear()
    elif entry.signature in seen:
        return receipt  # The same signed receipt recorded again: one statement, counted once.
    seen.add(entry.signature)
    if delivered:
        signer.delivered = upto
    else:
        signer.acknowledged = upto
    signer.receipts += 1
    return receipt


def message_proof(store: Store, direction: Direction, seq: int) -> MessageProof:
    """The proof of message ``seq`` of ``direction`` in ``store``: its envelope and those after
    it up to the first signed one, with that signature (see :class:`~hotline.MessageProof`).

    Check it with :func:`~hotline.check_message_proof` and the signer's public key (ours for
    ``OUT``, the peer's for ``IN``). Reads the transcript from the front; nothing is checked
    here beyond the sequence numbers. Raises :class:`TranscriptError` when the store holds no
    such message, or nothing signed after it.
    """
    envelopes: list[bytes] = []
    for entry in store.transcript():
        if entry.direction is not direction or entry.kind != "message" or entry.seq < seq:
            continue
        if entry.seq != seq + len(envelopes):
            break
        envelopes.append(entry.envelope)
        if entry.signature:
            return MessageProof(tuple(envelopes), entry.signature)
    if not envelopes:
        raise TranscriptError(f"the store holds no {direction.value} message {seq}")
    raise TranscriptError(
        f"no signed {direction.value} message after message {seq} covers it in the store"
    )
