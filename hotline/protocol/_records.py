"""Signed messages and receipts: the objects that outlive a connection.

Theory of operation
-------------------
A *message* and a *receipt* are each an **envelope** (a canonical msgpack array) plus an
Ed25519 **signature** over ``DOMAIN || envelope``. The envelope bytes travel as they were
signed and are stored as they were received, so the bytes that are verified are the bytes
that were signed: nobody re-encodes anything before checking a signature. Decoding is still
strict (one flat array of exact field count and types, nothing nested, no maps, no extension
types, str and bytes kept apart), and an envelope must be in the canonical encoding
(re-encoding it gives the same bytes), so one message has exactly one valid encoding.

Every envelope starts with the line identifier and the signer's public key, so a signature
is bound to this pair of parties and to the direction it travels; the domain prefix binds it
to its kind (message or receipt), so no signature can be replayed as another kind of
statement or outside hotline.

Messages form a hash chain per direction: each names the hash of the previous one, and the
first names 32 zero bytes. Because of that chain, one signature covers a whole *burst*: a
message may travel with an empty signature, and the signature of the next signed message of
its direction covers it, as that signature's envelope names (through ``prev``, hash after
hash) every message before it. :func:`unsigned_message` builds such a message,
:func:`cover_message` signs one, and a :class:`MessageProof` carries one message's proof
away from the store: the envelopes from it up to the signed one that covers it.

A receipt names the sequence number it covers *and* the chain head
there, so it commits to the whole history up to that point, not just to a count.

This module is pure computation: it knows neither connections nor storage. The connection,
the store and the offline verifier all use it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import msgpack

from .._errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from .._keys import Identity, PublicKey

__all__ = [
    "GENESIS_HEAD",
    "HASH_SIZE",
    "MessageProof",
    "Receipt",
    "SignatureBatch",
    "ReceiptKind",
    "SignedMessage",
    "check_message_proof",
    "cover_message",
    "message_hash",
    "decode_message",
    "open_message",
    "open_receipt",
    "sign_message",
    "sign_receipt",
    "strict_unpack",
    "unsigned_message",
    "verify_message",
]

DOMAIN_MESSAGE = b"hotline-v1/message\x00"
DOMAIN_RECEIPT = b"hotline-v1/receipt\x00"
DOMAIN_MESSAGE_HASH = b"hotline-v1/message-hash\x00"

HASH_SIZE = 32
SIGNATURE_SIZE = 64
#: The ``prev`` of the first message in each direction.
GENESIS_HEAD = bytes(HASH_SIZE)
_U64_MAX = 2**64 - 1
# The position of the body in a message envelope: [line_id, sender, seq, timestamp, prev, body].
_BODY_FIELD = 5


class ReceiptKind(enum.Enum):
    """What a cumulative receipt says about the messages up to its sequence number."""

    #: "I hold all your messages up to N (durably stored), whose chain head is H."
    DELIVERED = "delivered"
    #: "My application has processed all your messages up to N, whose chain head is H."
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """One message of a direction's chain, with the exact bytes that are (or will be) signed.

    ``signature`` is empty for a message of a burst that a later message's signature covers
    (:attr:`signed` is false).
    """

    seq: int
    timestamp: int
    """The sender's wall clock when it queued the message, in nanoseconds since the Unix epoch."""
    prev: bytes
    body: bytes
    envelope: bytes
    signature: bytes
    hash: bytes
    """The chain head after this message: what the next message names as ``prev``."""

    @property
    def signed(self) -> bool:
        """Whether this message carries its own signature (else a later one covers it)."""
        return bool(self.signature)

    def __repr__(self) -> str:
        unsigned = "" if self.signature else " unsigned"
        return f"<SignedMessage seq={self.seq}{unsigned} body={len(self.body)} bytes>"


@dataclass(frozen=True, slots=True)
class Receipt:
    """A signed, cumulative receipt: covers every message of one direction up to ``upto``."""

    kind: ReceiptKind
    upto: int
    head: bytes
    timestamp: int
    envelope: bytes
    signature: bytes

    def __repr__(self) -> str:
        return f"<Receipt {self.kind.value} upto={self.upto}>"


# The hash state after the domain prefix: each message's hash continues a copy of it, so the
# envelope is hashed where it lies instead of being copied behind the prefix first.
_MESSAGE_HASH_PREFIX = hashlib.blake2b(DOMAIN_MESSAGE_HASH, digest_size=HASH_SIZE)


def message_hash(envelope: bytes) -> bytes:
    """The chain hash of a message: BLAKE2b-256 over a domain prefix and its envelope."""
    state = _MESSAGE_HASH_PREFIX.copy()
    state.update(envelope)
    return state.digest()


#: The longest str any decoder accepts (a goodbye reason is cut to 200 characters).
MAX_STR_LEN = 1024
# msgpack type bytes of the only values inside a hotline array, with the width of the
# big-endian number after the type byte: a uint's value, or a bin's or str's length.
_UINT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_BIN_WIDTHS = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_STR_WIDTHS = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_ARRAY_WIDTHS = {0xDC: 2, 0xDD: 4}
# The smallest value (a uint's, or a bin's, str's or array's length) that each wider form
# is the shortest one for: below it, a shorter form holds it and the encoding is not
# canonical. bin has no shorter form than 0xc4, so any length is canonical there.
_SHORTEST = {
    0xCC: 0x80, 0xCD: 0x100, 0xCE: 0x1_0000, 0xCF: 0x1_0000_0000,
    0xC4: 0, 0xC5: 0x100, 0xC6: 0x1_0000,
    0xD9: 0x20, 0xDA: 0x100, 0xDB: 0x1_0000,
    0xDC: 0x10, 0xDD: 0x1_0000,
}


def _malformed(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed record: {why}")


class _BinTooLong(RemoteProtocolError):
    """A bin longer than its context allows, with its position in the array: the message
    decoder names the body's limit, where the generic text would leave the reader guessing
    which limit a message broke."""

    def __init__(self, index: int, length: int, limit: int) -> None:
        super().__init__(f"malformed record: {length} bytes, more than {limit}")
        self.index = index
        self.length = length
        self.limit = limit


def _number(data: bytes, pos: int, width: int) -> int:
    end = pos + width
    if end > len(data):
        raise _malformed("truncated")
    return int.from_bytes(data[pos:end], "big")


def strict_unpack(
    data: bytes, *, max_bin_len: int, max_array_len: int
) -> list[int | bytes | str]:
    """Decode one flat msgpack array of unsigned integers, bin and str, and nothing else.

    Every record, envelope and handshake payload of hotline is such an array, so nothing is
    nested: an array, map, extension, nil, boolean, float or negative integer inside it is
    refused at its type byte, before anything is built. Each element becomes one Python
    object no larger than its own bytes, so no input costs more memory than its size (a
    general decoder turns one byte of a nested empty array into a list object dozens of
    times larger). Lengths are checked against the limits before anything is copied: at
    most ``max_array_len`` elements, bin of at most ``max_bin_len`` bytes, str of at most
    :data:`MAX_STR_LEN` bytes of UTF-8. Raises :class:`RemoteProtocolError` for anything
    else, trailing bytes included.
    """
    return _unpack(data, max_bin_len, max_array_len)[0]


def _unpack(
    data: bytes, max_bin_len: int, max_array_len: int
) -> tuple[list[int | bytes | str], bool]:
    """:func:`strict_unpack`, and whether ``data`` is the canonical encoding of what it
    decodes to: what :func:`pack` gives for it, found without encoding it again.

    :func:`pack` writes every number and length in the shortest form that holds it, so
    ``data`` is canonical exactly when no header is wider than its value needs (see
    :data:`_SHORTEST`); a str's UTF-8 is the same both ways, as the decoder is strict.
    """
    size = len(data)
    if not size:
        raise _malformed("empty")
    head = data[0]
    if 0x90 <= head <= 0x9F:
        count, pos = head & 0x0F, 1
        canonical = True
    elif head in _ARRAY_WIDTHS:
        count = _number(data, 1, _ARRAY_WIDTHS[head])
        pos = 1 + _ARRAY_WIDTHS[head]
        canonical = count >= _SHORTEST[head]
    else:
        raise _malformed("not an array")
    if count > max_array_len:
        raise _malformed(f"an array of {count} elements, more than {max_array_len}")
    fields: list[int | bytes | str] = []
    for index in range(count):
        if pos >= size:
            raise _malformed("truncated")
        tag = data[pos]
        pos += 1
        if tag <= 0x7F:
            fields.append(tag)
            continue
        if tag in _UINT_WIDTHS:
            value = _number(data, pos, _UINT_WIDTHS[tag])
            fields.append(value)
            pos += _UINT_WIDTHS[tag]
            if value < _SHORTEST[tag]:
                canonical = False
            continue
        if tag in _BIN_WIDTHS:
            length = _number(data, pos, _BIN_WIDTHS[tag])
            pos += _BIN_WIDTHS[tag]
            limit = max_bin_len
        elif 0xA0 <= tag <= 0xBF:
            length, limit = tag & 0x1F, MAX_STR_LEN
        elif tag in _STR_WIDTHS:
            length = _number(data, pos, _STR_WIDTHS[tag])
            pos += _STR_WIDTHS[tag]
            limit = MAX_STR_LEN
        else:
            raise _malformed(f"msgpack type {tag:#04x} is not allowed")
        if length > limit:
            if tag in _BIN_WIDTHS:
                raise _BinTooLong(index, length, limit)
            raise _malformed(f"{length} bytes, more than {limit}")
        if length < _SHORTEST.get(tag, 0):
            canonical = False
        end = pos + length
        if end > size:
            raise _malformed("truncated")
        chunk = data[pos:end]
        pos = end
        if tag in _BIN_WIDTHS:
            fields.append(bytes(chunk))
            continue
        try:
            fields.append(bytes(chunk).decode("utf-8"))
        except UnicodeDecodeError:
            raise _malformed("a str that is not UTF-8") from None
    if pos != size:
        raise _malformed("trailing bytes")
    return fields, canonical


def pack(obj: list[Any]) -> bytes:
    """msgpack as hotline encodes every record and envelope (the canonical form)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _check_u64(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        raise RemoteProtocolError(f"{name} must be an unsigned 64-bit integer")
    return value


def _check_bytes(value: object, name: str, size: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise RemoteProtocolError(
            f"{name} must be {'a byte string' if size is None else f'{size} bytes'}"
        )
    return value


def _decode_envelope(envelope: bytes, fields: int, max_bin_len: int) -> list[Any]:
    decoded, canonical = _unpack(envelope, max_bin_len, fields)
    if len(decoded) != fields:
        raise RemoteProtocolError(f"an envelope must be an array of {fields} fields")
    if not canonical:
        raise RemoteProtocolError("envelope is not in the canonical encoding")
    return decoded


def _signature_ok(signer: PublicKey, domain: bytes, envelope: bytes, signature: bytes) -> bool:
    return signer.verify(domain + envelope, signature)


def _check_signature(signer: PublicKey, domain: bytes, envelope: bytes, signature: bytes) -> None:
    if not _signature_ok(signer, domain, envelope, signature):
        raise AuthenticationError(reason="bad signature")


def unsigned_message(
    sender: PublicKey, line_id: bytes, seq: int, timestamp: int, prev: bytes, body: bytes
) -> SignedMessage:
    """Message ``seq`` of ``sender``'s direction, with its envelope and hash but no signature.

    It may be stored or sent only as part of a burst that a later :func:`cover_message` of
    the same chain closes (docs/protocol.md, "Bursts").
    """
    if not 1 <= seq <= _U64_MAX:
        raise LocalProtocolError("sequence numbers run from 1 to 2**64-1")
    if not 0 <= timestamp <= _U64_MAX:
        raise LocalProtocolError("timestamp must be nanoseconds since the epoch, >= 0")
    if len(prev) != HASH_SIZE or len(line_id) != HASH_SIZE:
        raise LocalProtocolError("prev and line_id must be 32 bytes")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"a body is bytes, not {type(body).__name__}")
    body = bytes(body)
    envelope = pack([line_id, sender.raw, seq, timestamp, prev, body])
    return SignedMessage(seq, timestamp, prev, body, envelope, b"", message_hash(envelope))


def cover_message(identity: Identity, message: SignedMessage) -> SignedMessage:
    """``message`` signed: its signature covers it and every message before it in the chain."""
    # The envelope is [line_id, sender, ...], each key a 32-byte bin after the array's byte.
    if message.envelope[35:69] != b"\xc4\x20" + identity.public_key.raw:
        raise LocalProtocolError("a message is signed by the sender its envelope names")
    signature = identity.sign(DOMAIN_MESSAGE + message.envelope)
    return SignedMessage(message.seq, message.timestamp, message.prev, message.body,
                         message.envelope, signature, message.hash)


def sign_message(
    identity: Identity, line_id: bytes, seq: int, timestamp: int, prev: bytes, body: bytes
) -> SignedMessage:
    """Sign message ``seq`` of this identity's direction of the line ``line_id``."""
    return cover_message(
        identity, unsigned_message(identity.public_key, line_id, seq, timestamp, prev, body)
    )


def open_message(
    envelope: bytes, signature: bytes, *, sender: PublicKey, line_id: bytes, max_body_size: int
) -> SignedMessage:
    """Verify and decode a message that ``sender`` signed for ``line_id``.

    The signature is checked first (:class:`AuthenticationError`), then the envelope
    (:class:`RemoteProtocolError`). Sequence and chain are the caller's to check: only it
    knows what it expects next.
    """
    _check_bytes(signature, "signature", SIGNATURE_SIZE)
    _check_signature(sender, DOMAIN_MESSAGE, envelope, signature)
    return decode_message(
        envelope, signature, sender=sender, line_id=line_id, max_body_size=max_body_size
    )


def verify_message(message: SignedMessage, sender: PublicKey) -> None:
    """Check the signature of a message from :func:`decode_message` (AuthenticationError)."""
    _check_signature(sender, DOMAIN_MESSAGE, message.envelope, message.signature)


class SignatureBatch:
    """Signatures of received messages, checked together away from the protocol's thread.

    Signature checks are most of the cost of receiving, and pynacl releases the GIL while it
    checks, so a driver with a spare core hands a burst of them to a worker thread in one
    hop (a hop costs about as much as three checks, so never one message at a time).
    :meth:`run` reads only this object's fields and writes only its outcome: it is safe in
    any thread. The connection that made the batch reads the outcome only when the driver
    hands the batch back (:meth:`hotline.Connection.signatures_checked`).
    """

    __slots__ = ("_done", "failed_at", "messages", "sender")

    def __init__(self, messages: tuple[SignedMessage, ...], sender: PublicKey) -> None:
        self.messages = messages
        self.sender = sender
        self.failed_at: int | None = None
        """The index of the first message whose signature is bad, once run."""
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def run(self) -> None:
        """Check every signature, stopping at the first bad one. Idempotent."""
        if self._done:
            return
        for index, message in enumerate(self.messages):
            if not _signature_ok(self.sender, DOMAIN_MESSAGE, message.envelope, message.signature):
                self.failed_at = index
                break
        self._done = True

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"<SignatureBatch of {len(self.messages)} done={self._done}>"


def decode_message(
    envelope: bytes, signature: bytes, *, sender: PublicKey, line_id: bytes, max_body_size: int
) -> SignedMessage:
    """Decode a message strictly *without* checking its signature; see :func:`verify_message`.

    A connection decodes first so that it can drop a replayed duplicate without paying for a
    signature check; it verifies every signed message it accepts, and releases an unsigned
    one only with the signed message that covers it. ``signature`` is 64 bytes or empty.
    """
    if signature:
        _check_bytes(signature, "signature", SIGNATURE_SIZE)
    else:
        _check_bytes(signature, "signature")
    try:
        fields = _decode_envelope(envelope, 6, max_body_size)
    except _BinTooLong as error:
        if error.index != _BODY_FIELD:
            raise
        # The body alone decides whether this side can take the message at all, so the
        # error names the setting (docs/protocol.md, "Timers and limits").
        raise RemoteProtocolError(
            f"message body over max_body_size ({error.length} bytes, more than {error.limit})"
        ) from None
    env_line, env_sender, seq, timestamp, prev, body = fields
    _check_bytes(env_line, "line id", HASH_SIZE)
    _check_bytes(env_sender, "sender", 32)
    if env_line != line_id or env_sender != sender.raw:
        raise RemoteProtocolError("message signed for another line or by another sender")
    _check_u64(seq, "seq")
    if seq == 0:
        raise RemoteProtocolError("sequence numbers start at 1")
    _check_u64(timestamp, "timestamp")
    _check_bytes(prev, "prev", HASH_SIZE)
    _check_bytes(body, "body")
    return SignedMessage(seq, timestamp, prev, body, envelope, signature, message_hash(envelope))


@dataclass(frozen=True, slots=True)
class MessageProof:
    """What proves one message without its store: the envelopes from it up to and including
    the first signed message at or after it, and that message's signature.

    A signed message's proof is its own envelope and signature. An unsigned one's proof is
    the chain segment to the signature that covers it: that signature binds the last
    envelope, whose ``prev`` binds the one before, and so on back to the message.
    """

    envelopes: tuple[bytes, ...]
    signature: bytes

    def __repr__(self) -> str:
        return f"<MessageProof of {len(self.envelopes)} envelopes>"


def check_message_proof(
    proof: MessageProof, *, sender: PublicKey, line_id: bytes, max_body_size: int = 1 << 30
) -> SignedMessage:
    """The message a proof is for (its first envelope), once the proof holds.

    Checks that every envelope is a message of ``sender`` for ``line_id``, that they are
    consecutive and each names the hash of the one before as ``prev``, and that the
    signature verifies over the last one. Raises :class:`AuthenticationError` for a bad
    signature and :class:`RemoteProtocolError` for anything else. Pure: no store, no clock.
    """
    if not proof.envelopes:
        raise RemoteProtocolError("a proof holds at least the message's own envelope")
    _check_bytes(proof.signature, "signature", SIGNATURE_SIZE)
    messages = [
        decode_message(envelope, b"", sender=sender, line_id=line_id,
                       max_body_size=max_body_size)
        for envelope in proof.envelopes
    ]
    for before, after in itertools.pairwise(messages):
        if after.seq != before.seq + 1 or after.prev != before.hash:
            raise RemoteProtocolError(
                f"message {after.seq} of the proof does not continue message {before.seq}"
            )
    _check_signature(sender, DOMAIN_MESSAGE, proof.envelopes[-1], proof.signature)
    first = messages[0]
    return first if len(messages) > 1 else dataclasses.replace(first, signature=proof.signature)


def sign_receipt(
    identity: Identity, line_id: bytes, kind: ReceiptKind, upto: int, head: bytes, timestamp: int
) -> Receipt:
    """Sign a cumulative receipt for the peer's messages 1..``upto`` (chain head ``head``)."""
    if not 1 <= upto <= _U64_MAX:
        raise LocalProtocolError("a receipt covers messages 1..upto with upto >= 1")
    if len(head) != HASH_SIZE or len(line_id) != HASH_SIZE:
        raise LocalProtocolError("head and line_id must be 32 bytes")
    if not 0 <= timestamp <= _U64_MAX:
        raise LocalProtocolError("timestamp must be nanoseconds since the epoch, >= 0")
    envelope = pack([line_id, identity.public_key.raw, kind.value, upto, head, timestamp])
    signature = identity.sign(DOMAIN_RECEIPT + envelope)
    return Receipt(kind, upto, head, timestamp, envelope, signature)


def open_receipt(
    envelope: bytes, signature: bytes, *, signer: PublicKey, line_id: bytes
) -> Receipt:
    """Verify and decode a receipt that ``signer`` signed for ``line_id``."""
    _check_bytes(signature, "signature", SIGNATURE_SIZE)
    _check_signature(signer, DOMAIN_RECEIPT, envelope, signature)
    fields = _decode_envelope(envelope, 6, HASH_SIZE)
    env_line, env_signer, kind, upto, head, timestamp = fields
    _check_bytes(env_line, "line id", HASH_SIZE)
    _check_bytes(env_signer, "signer", 32)
    if env_line != line_id or env_signer != signer.raw:
        raise RemoteProtocolError("receipt signed for another line or by another signer")
    if type(kind) is not str:
        raise RemoteProtocolError("receipt kind must be a string")
    try:
        receipt_kind = ReceiptKind(kind)
    except ValueError:
        raise RemoteProtocolError(f"unknown receipt kind {kind!r}") from None
    _check_u64(upto, "upto")
    if upto == 0:
        raise RemoteProtocolError("a receipt covers at least message 1")
    _check_bytes(head, "head", HASH_SIZE)
    _check_u64(timestamp, "timestamp")
    return Receipt(receipt_kind, upto, head, timestamp, envelope, signature)
