"""Evidence for disputes: one message (or a range) and the receipts that cover it, in one
self-contained JSON document that anyone holding the two public keys can check offline.

Theory of operation
-------------------
The document (docs/evidence.md) carries only signed bytes and the two public keys:

- ``messages``: the sender's envelopes ``first .. last`` (the messages in question), each
  with its signature (hex; empty once bursts share one signature);
- ``after``: the sender's envelopes from ``last + 1`` up to the furthest point anything needs:
  the first signed envelope at or past ``last`` (whose signature covers the unsigned ones
  before it through the ``prev`` links), and the ``upto`` of every receipt (whose ``head``
  must be the hash of envelope ``upto``). Nothing more: the segment is minimal;
- ``receipts``: at most one delivered then at most one acknowledged receipt of the receiver,
  each the first of its kind whose ``upto`` is at or past ``last`` (as the exporter's
  transcript recorded them);
- ``sender`` and ``receiver``: each key in OpenSSH form and its fingerprint.

:func:`check_evidence` is a pure function of the document's bytes and the two keys the
checker trusts. Every byte of the document must matter, so that no edit goes unnoticed: the
JSON is parsed strictly (no duplicate or unknown keys, no floats, no NaN) and must equal its
own canonical re-serialization byte for byte; hex must be lower case; a key must be exactly
what :meth:`PublicKey.to_openssh` writes and its fingerprint exactly the one it has. Each
envelope is decoded by the protocol's own strict decoders
(:func:`~hotline.protocol.decode_message`, :func:`~hotline.protocol.open_receipt`, which
insist on the canonical msgpack), every signature present is checked under its domain
(:func:`~hotline.protocol.verify_message`, ``open_receipt``), the sequence numbers run
without a gap and each ``prev`` is the hash of the envelope before it. The line id in every
envelope is the one derived from the two keys (:func:`~hotline.line_id`); the sender's key
signed the messages and the other key the receipts.

:func:`export_evidence` reads a store through the :class:`~hotline.Store` interface, refuses
a store that :func:`~hotline.verify_store` rejects, and checks the document it made before
returning it.

What the evidence cannot prove is part of every report (:data:`LIMITS`): each timestamp is
the claim of the clock of the key that signed it, and a missing receipt proves nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import (
    AuthenticationError,
    EvidenceError,
    KeyFileError,
    LocalProtocolError,
    RemoteProtocolError,
)
from ._keys import PublicKey, line_id
from .protocol import (
    Receipt,
    ReceiptKind,
    SignedMessage,
    decode_message,
    open_receipt,
    verify_message,
)
from .store import Direction, Store

__all__ = [
    "EVIDENCE_FORMAT",
    "EVIDENCE_VERSION",
    "LIMITS",
    "EvidenceReport",
    "MessageEvidence",
    "check_evidence",
    "export_evidence",
]

EVIDENCE_FORMAT = "hotline-evidence"
EVIDENCE_VERSION = 1
_SIGNATURE_SIZE = 64
_MAX_BODY = 1 << 30
# A stand-in signature for decoding an envelope whose own signature is empty (covered by a
# later one): decode_message checks the envelope only, never this value.
_NO_SIGNATURE = bytes(_SIGNATURE_SIZE)

#: What no evidence of this format can prove, stated with every report.
LIMITS = (
    "Each time is the claim of the clock of the key that signed it: the sender's for "
    "sending, the receiver's for holding and acknowledging. The delays between them mix "
    "two clocks and are only as good as both.",
    "A missing receipt proves nothing: the receiver may hold or have acknowledged the "
    "message without this evidence showing it, or the exporter may have left it out.",
    "The receipts shown are the first ones whose upto is at or past the message as the "
    "exporter's store recorded them; the checker cannot tell whether an earlier one exists.",
    "A deadline is not signed by anyone: it is judged against the signed clocks only when "
    "the checker names one.",
)


@dataclass(frozen=True)
class MessageEvidence:
    """One message of the evidence, with the receipts that cover it."""

    seq: int
    body: bytes
    sent_at: int
    """The sender's signed clock, nanoseconds since the Unix epoch."""
    delivered_at: int | None
    """The receiver's signed clock in the first delivered receipt covering it, if any."""
    acknowledged_at: int | None
    deadline_met: bool | None
    """With a deadline: acknowledged within it (by the two signed clocks), or None if the
    evidence holds no acknowledged receipt (which proves nothing either way)."""


@dataclass(frozen=True)
class EvidenceReport:
    """What a valid evidence document shows."""

    sender: PublicKey
    receiver: PublicKey
    line_id: bytes
    messages: tuple[MessageEvidence, ...]
    delivered: Receipt | None
    acknowledged: Receipt | None
    ack_within: float | None
    limits: tuple[str, ...] = LIMITS

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON values (``check-evidence --json``)."""
        return {
            "valid": True,
            "sender": {"key": self.sender.to_openssh(), "fingerprint": self.sender.fingerprint()},
            "receiver": {"key": self.receiver.to_openssh(),
                         "fingerprint": self.receiver.fingerprint()},
            "line_id": self.line_id.hex(),
            "ack_within": self.ack_within,
            "messages": [
                {
                    "seq": m.seq,
                    "body": m.body.decode("utf-8", errors="replace"),
                    "body_hex": m.body.hex(),
                    "sent_at_ns": m.sent_at,
                    "delivered_at_ns": m.delivered_at,
                    "acknowledged_at_ns": m.acknowledged_at,
                    "held_after_ns": _delay(m.sent_at, m.delivered_at),
                    "acknowledged_after_ns": _delay(m.sent_at, m.acknowledged_at),
                    "deadline_met": m.deadline_met,
                }
                for m in self.messages
            ],
            "delivered_upto": None if self.delivered is None else self.delivered.upto,
            "acknowledged_upto": None if self.acknowledged is None else self.acknowledged.upto,
            "cannot_prove": list(self.limits),
        }


def _delay(start: int, end: int | None) -> int | None:
    return None if end is None else end - start


# --- the document's canonical form ----------------------------------------------------


def _canonical(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=True) + "\n").encode(
        "ascii"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise EvidenceError(f"the field {key!r} appears twice")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise EvidenceError(f"a number that is not an integer: {text[:20]!r}")


def _parse(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise EvidenceError("not ASCII JSON: the format escapes everything else") from None
    try:
        document = json.loads(
            text, object_pairs_hook=_unique_keys, parse_float=_no_float,
            parse_constant=_no_float,
        )
    except json.JSONDecodeError as exc:
        raise EvidenceError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EvidenceError("not a JSON object")
    if _canonical(document) != data:
        raise EvidenceError(
            "not in the canonical form (sorted keys, one-space indent, a final newline): "
            "the document was changed after it was written"
        )
    return document


def _fields(value: object, names: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EvidenceError(f"{where} must be an object")
    if set(value) != names:
        unknown = sorted(set(value) - names)
        missing = sorted(names - set(value))
        raise EvidenceError(f"{where}: unknown fields {unknown}, missing fields {missing}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise EvidenceError(f"{where} must be a list")
    return value


def _hex(value: object, where: str, *, empty_ok: bool = False) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"{where} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise EvidenceError(f"{where} is not hex") from None
    if raw.hex() != value:
        raise EvidenceError(f"{where} is not lower-case hex without spaces")
    if not raw and not empty_ok:
        raise EvidenceError(f"{where} is empty")
    return raw


def _party(value: object, where: str) -> PublicKey:
    fields = _fields(value, {"key", "fingerprint"}, where)
    text = fields["key"]
    if not isinstance(text, str):
        raise EvidenceError(f"{where}.key must be a string")
    try:
        key = PublicKey.from_openssh(text)
    except KeyFileError as exc:
        raise EvidenceError(f"{where}.key: {exc}") from None
    if key.to_openssh() != text:
        raise EvidenceError(f"{where}.key must be 'ssh-ed25519 <base64>' with nothing else")
    if fields["fingerprint"] != key.fingerprint():
        raise EvidenceError(f"{where}.fingerprint is not the fingerprint of {where}.key")
    return key


# --- checking ---------------------------------------------------------------------------


@dataclass
class _Chain:
    """The sender's envelopes as the document lists them, decoded and linked."""

    messages: list[SignedMessage]
    signed: list[bool]


def _decode_chain(
    entries: list[Any], where: str, sender: PublicKey, lid: bytes, start: int | None,
    prev: bytes | None,
) -> _Chain:
    """Decode ``entries`` as the sender's envelopes ``start, start + 1, ...`` (from whatever
    the first says, if ``start`` is None), the first naming ``prev`` (unless None)."""
    chain = _Chain([], [])
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        fields = _fields(entry, {"envelope", "signature"}, at)
        envelope = _hex(fields["envelope"], f"{at}.envelope")
        signature = _hex(fields["signature"], f"{at}.signature", empty_ok=True)
        if signature and len(signature) != _SIGNATURE_SIZE:
            raise EvidenceError(f"{at}.signature must be {_SIGNATURE_SIZE} bytes or empty")
        try:
            message = decode_message(
                envelope, signature or _NO_SIGNATURE, sender=sender, line_id=lid,
                max_body_size=_MAX_BODY,
            )
        except RemoteProtocolError as exc:
            raise EvidenceError(
                f"{at}: not a message envelope of the sender on this line: {exc}"
            ) from None
        if start is None:
            start = message.seq
        expected_seq = start + index
        if message.seq != expected_seq:
            raise EvidenceError(f"{at}: message {message.seq} where {expected_seq} belongs")
        if prev is not None and message.prev != prev:
            raise EvidenceError(
                f"{at}: prev is not the hash of message {expected_seq - 1}: the chain is broken"
            )
        if signature:
            try:
                verify_message(message, sender)
            except AuthenticationError:
                raise EvidenceError(f"{at}: the sender's signature does not verify") from None
        prev = message.hash
        chain.messages.append(message)
        chain.signed.append(bool(signature))
    return chain


def _trusted_pair(keys: Sequence[PublicKey]) -> tuple[PublicKey, PublicKey]:
    if len(keys) != 2 or not all(isinstance(k, PublicKey) for k in keys) or keys[0] == keys[1]:
        raise LocalProtocolError("check_evidence needs exactly two different trusted keys")
    return keys[0], keys[1]


def check_evidence(
    document: bytes, keys: Sequence[PublicKey], *, ack_within: float | None = None
) -> EvidenceReport:
    """Check an evidence document against the two public keys the checker trusts.

    Pure: no store, no network, no clock. The order of ``keys`` does not matter; the
    document says which one sent. ``ack_within`` (seconds) judges each message's
    acknowledgement against that deadline by the two signed clocks. Raises
    :class:`~hotline.EvidenceError` naming the first thing that does not check, and
    :class:`~hotline.LocalProtocolError` unless given exactly two different keys.
    """
    trusted = set(_trusted_pair(keys))
    if ack_within is not None and not 0 <= ack_within < math.inf:
        raise LocalProtocolError("ack_within is a finite number of seconds, at least 0")
    if not isinstance(document, bytes | bytearray | memoryview):
        raise LocalProtocolError("an evidence document is bytes")
    parsed = _fields(
        _parse(bytes(document)),
        {"format", "version", "sender", "receiver", "messages", "after", "receipts"},
        "the document",
    )
    if parsed["format"] != EVIDENCE_FORMAT:
        raise EvidenceError(f"not a {EVIDENCE_FORMAT} document")
    if type(parsed["version"]) is not int or parsed["version"] != EVIDENCE_VERSION:
        raise EvidenceError(f"version {parsed['version']!r} is not {EVIDENCE_VERSION}")
    sender = _party(parsed["sender"], "sender")
    receiver = _party(parsed["receiver"], "receiver")
    if sender == receiver:
        raise EvidenceError("the sender and the receiver are one key")
    for role, key in (("sender", sender), ("receiver", receiver)):
        if key not in trusted:
            raise EvidenceError(f"the {role} {key.fingerprint()} is not one of the trusted keys")
    lid = line_id(sender, receiver)

    listed = _list(parsed["messages"], "messages")
    if not listed:
        raise EvidenceError("messages is empty")
    messages = _decode_chain(listed, "messages", sender, lid, None, None)
    first_seq = messages.messages[0].seq
    last = messages.messages[-1]
    after = _decode_chain(
        _list(parsed["after"], "after"), "after", sender, lid, last.seq + 1, last.hash
    )
    chain = messages.messages + after.messages
    signed = messages.signed + after.signed
    # The signature that covers the messages in question: the first one at or past `last`.
    cover = next((i for i in range(len(messages.messages) - 1, len(chain)) if signed[i]), None)
    if cover is None:
        raise EvidenceError("no signature covers the messages: the chain ends unsigned")

    receipts = _check_receipts(_list(parsed["receipts"], "receipts"), receiver, lid, chain, last)
    needed_end = max([cover, *[r.upto - first_seq for r in receipts.values()]])
    if needed_end != len(chain) - 1:
        raise EvidenceError(
            f"after runs to message {chain[-1].seq}, but nothing needs more than message "
            f"{chain[needed_end].seq}"
        )
    delivered = receipts.get(ReceiptKind.DELIVERED)
    acknowledged = receipts.get(ReceiptKind.ACKNOWLEDGED)
    shown = tuple(
        MessageEvidence(
            seq=m.seq,
            body=m.body,
            sent_at=m.timestamp,
            delivered_at=None if delivered is None else delivered.timestamp,
            acknowledged_at=None if acknowledged is None else acknowledged.timestamp,
            deadline_met=_deadline_met(m.timestamp, acknowledged, ack_within),
        )
        for m in messages.messages
    )
    return EvidenceReport(sender, receiver, lid, shown, delivered, acknowledged, ack_within)


def _check_receipts(
    entries: list[Any], receiver: PublicKey, lid: bytes, chain: list[SignedMessage],
    last: SignedMessage,
) -> dict[ReceiptKind, Receipt]:
    found: dict[ReceiptKind, Receipt] = {}
    first_seq = chain[0].seq
    for index, entry in enumerate(entries):
        at = f"receipts[{index}]"
        fields = _fields(entry, {"envelope", "signature"}, at)
        envelope = _hex(fields["envelope"], f"{at}.envelope")
        signature = _hex(fields["signature"], f"{at}.signature")
        try:
            receipt = open_receipt(envelope, signature, signer=receiver, line_id=lid)
        except AuthenticationError:
            raise EvidenceError(f"{at}: the receiver's signature does not verify") from None
        except RemoteProtocolError as exc:
            raise EvidenceError(
                f"{at}: not a receipt of the receiver on this line: {exc}"
            ) from None
        # One delivered receipt, then one acknowledged: no repeat, no other order.
        if ReceiptKind.ACKNOWLEDGED in found or receipt.kind in found:
            raise EvidenceError(f"{at}: at most one delivered then one acknowledged receipt")
        if receipt.upto < last.seq:
            raise EvidenceError(
                f"{at}: covers up to message {receipt.upto}, not message {last.seq}"
            )
        offset = receipt.upto - first_seq
        if offset >= len(chain):
            raise EvidenceError(f"{at}: covers up to message {receipt.upto}, past the chain given")
        if chain[offset].hash != receipt.head:
            raise EvidenceError(f"{at}: head is not the hash of message {receipt.upto}")
        found[receipt.kind] = receipt
    return found


def _deadline_met(
    sent_at: int, acknowledged: Receipt | None, ack_within: float | None
) -> bool | None:
    if ack_within is None or acknowledged is None:
        return None
    return acknowledged.timestamp - sent_at <= round(ack_within * 1e9)


# --- export ---------------------------------------------------------------------------


def export_evidence(
    store: Store, first: int, last: int | None = None, *, received: bool = False
) -> bytes:
    """The evidence document for this node's messages ``first .. last`` (the peer's, with
    ``received``), with the first receipts of each kind that cover them.

    Refuses (:class:`~hotline.TranscriptError`) a store that :func:`~hotline.verify_store`
    rejects, and checks the document it made before returning it. Raises
    :class:`~hotline.LocalProtocolError` for a range the store does not hold.
    """
    from ._verify import verify_store

    last = first if last is None else last
    if type(first) is not int or type(last) is not int or not 1 <= first <= last:
        raise LocalProtocolError("a range of messages runs from SEQ >= 1 to a SEQ no lower")
    report = verify_store(store)
    identity, peer = report.identity, report.peer
    sender, receiver = (peer, identity) if received else (identity, peer)
    messages_dir = Direction.IN if received else Direction.OUT
    receipts_dir = Direction.OUT if received else Direction.IN
    count = report.messages_in if received else report.messages_out
    if last > count:
        side = "received" if received else "sent"
        raise LocalProtocolError(f"message {last} was never {side} here: {count} were")
    # First pass: the receipts, and the signature that covers message `last` (its own today;
    # a later one of its burst once bursts share one). Second pass: the chain they need.
    receipts: dict[str, tuple[bytes, bytes, int]] = {}
    cover: int | None = None
    for entry in store.transcript():
        if entry.kind == "message":
            if (cover is None and entry.direction is messages_dir and entry.seq >= last
                    and entry.signature):
                cover = entry.seq
        elif entry.direction is receipts_dir and entry.seq >= last:
            receipts.setdefault(entry.kind, (entry.envelope, entry.signature, entry.seq))
    if cover is None:
        raise EvidenceError(f"no signed message at or after message {last} covers it yet")
    end = max([cover, *[seq for _, _, seq in receipts.values()]])
    chain = [
        {"envelope": entry.envelope.hex(), "signature": entry.signature.hex()}
        for entry in _messages(store.transcript(), messages_dir, first, end)
    ]
    document = {
        "format": EVIDENCE_FORMAT,
        "version": EVIDENCE_VERSION,
        "sender": {"key": _bare(sender).to_openssh(), "fingerprint": sender.fingerprint()},
        "receiver": {"key": _bare(receiver).to_openssh(), "fingerprint": receiver.fingerprint()},
        "messages": chain[: last - first + 1],
        "after": chain[last - first + 1 :],
        "receipts": [
            {"envelope": envelope.hex(), "signature": signature.hex()}
            for kind in ("delivered", "acknowledged")
            if kind in receipts
            for envelope, signature, _ in [receipts[kind]]
        ],
    }
    data = _canonical(document)
    check_evidence(data, [sender, receiver])
    return data


def _bare(key: PublicKey) -> PublicKey:
    """The key without its comment: a label is not part of the identity nor of the evidence."""
    return PublicKey(key.raw)


def _messages(entries: Iterable[Any], direction: Direction, first: int, end: int) -> list[Any]:
    found = [
        entry for entry in entries
        if entry.direction is direction and entry.kind == "message" and first <= entry.seq <= end
    ]
    if len(found) != end - first + 1:
        raise EvidenceError("the store's transcript does not hold the whole chain segment")
    return found
