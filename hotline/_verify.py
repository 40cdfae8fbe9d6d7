"""The offline transcript verifier: anyone with the two public keys can check a transcript.

Theory of operation
-------------------
A store's transcript is every signed record of a line, in the order the store recorded it.
:func:`verify_transcript` replays it once, front to back, with nothing but the two public keys
(no private key and no store internals), so a third party can run it on a transcript handed
to them. It keeps, per direction, the number of messages seen and their chain hashes (32 bytes
each in one bytearray), and per signer and kind the highest receipt seen so far.

For every message: the signature (ours for ``out``, the peer's for ``in``), the envelope's
line and signer, the sequence number (exactly one more than the last of its direction: no gap,
repeat or reordering) and ``prev`` (the hash of the previous message, or 32 zero bytes for the
first). For every receipt: the signature (ours for ``out``, covering the peer's messages; the
peer's for ``in``, covering ours), ``upto`` no higher than the messages of the covered
direction recorded *before* it (a store records a message before sending it and before
receipting it, so this holds both ways), ``head`` equal to the hash of message ``upto``, no
step back from the signer's previous receipt of that kind (an equal one is a resend), and an
acknowledged mark never above the same signer's delivered mark.

The first record that fails stops the check with :class:`~hotline.TranscriptError`, which
names it: its 1-based position, direction, kind and sequence number, and what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ._errors import AuthenticationError, RemoteProtocolError, TranscriptError
from ._keys import PublicKey, line_id
from ._records import GENESIS_HEAD, HASH_SIZE, ReceiptKind, open_message, open_receipt
from ._store import Direction, Store, TranscriptEntry

__all__ = ["VerifyReport", "verify_store", "verify_transcript"]


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

    @property
    def count(self) -> int:
        return len(self.hashes) // HASH_SIZE

    def head(self, seq: int) -> bytes:
        if seq == 0:
            return GENESIS_HEAD
        return bytes(self.hashes[(seq - 1) * HASH_SIZE : seq * HASH_SIZE])


_KINDS = ("message", "delivered", "acknowledged")


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
    lid = line_id(identity, peer)
    sides = {Direction.OUT: _Side(identity), Direction.IN: _Side(peer)}
    for position, entry in enumerate(entries, 1):
        if not isinstance(entry.direction, Direction) or entry.kind not in _KINDS:
            raise TranscriptError(
                f"record {position}: unknown direction or kind"
                f" ({entry.direction!r}, {entry.kind!r})"
            )
        where = f"record {position} ({entry.direction.value} {entry.kind} {entry.seq})"
        own = sides[entry.direction]
        other = sides[Direction.IN if entry.direction is Direction.OUT else Direction.OUT]
        if entry.kind == "message":
            problem = _check_message(entry, own, lid, max_body_size)
        else:
            problem = _check_receipt(entry, own, other, lid)
        if problem:
            raise TranscriptError(f"{where}: {problem}")
    out, in_ = sides[Direction.OUT], sides[Direction.IN]
    return VerifyReport(
        identity=identity,
        peer=peer,
        messages_out=out.count,
        messages_in=in_.count,
        receipts_out=out.receipts,
        receipts_in=in_.receipts,
        delivered_out=out.delivered,
        delivered_in=in_.delivered,
        acknowledged_out=out.acknowledged,
        acknowledged_in=in_.acknowledged,
    )


def verify_store(store: Store) -> VerifyReport:
    """Verify ``store``'s transcript against the keys it belongs to."""
    keys = store.keys()
    if keys is None:
        raise TranscriptError("the store has no keys: it was never loaded, so it holds no line")
    return verify_transcript(store.transcript(), *keys)


def _check_message(entry: TranscriptEntry, side: _Side, lid: bytes, max_body_size: int) -> str:
    """What is wrong with message ``entry`` of ``side``'s chain ("" if nothing); records it."""
    try:
        message = open_message(
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
    side.hashes += message.hash
    return ""


def _check_receipt(entry: TranscriptEntry, signer: _Side, covered: _Side, lid: bytes) -> str:
    """What is wrong with receipt ``entry`` by ``signer`` ("" if nothing); records it."""
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
    if receipt.head != covered.head(upto):
        return f"head is not the hash of message {upto}"
    delivered = receipt.kind is ReceiptKind.DELIVERED
    mark = signer.delivered if delivered else signer.acknowledged
    if upto < mark:
        return f"goes back from {mark} to {upto}"
    if not delivered and upto > signer.delivered:
        return f"acknowledges beyond the delivered mark {signer.delivered}"
    if delivered:
        signer.delivered = upto
    else:
        signer.acknowledged = upto
    signer.receipts += 1
    return ""
