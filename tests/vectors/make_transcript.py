"""Generate hotline's published test vector, ``transcript.json`` (next to this file).

Run ``python tests/vectors/make_transcript.py`` to regenerate it; ``make_transcript()`` returns
the same data as a dict and ``render()`` the exact text of the file. Every input is fixed
(identities from seeds, ephemeral keys, timestamps, the ``now`` values given to the
connections), so the output is the same byte for byte on every run and every platform.

The exchange, on one shared clock (seconds): A1 calls A2; both open the line with a ping and
answer each other's; A1 sends "hello" (delivered and acknowledged), A2 answers with a burst of
three messages (one empty) of which only the last is signed (its signature covers the two
before it through the chain: docs/protocol.md, "Bursts"); A1 sends a 70,000-byte body that
needs two transport messages, and one more; receipts go both ways; each side pings again one
interval later; A1 says goodbye.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hotline import (
    PROTOCOL_NAME,
    Config,
    Connection,
    ConnectionState,
    Event,
    Identity,
    LineState,
    MessageReceived,
    NeedData,
    PeerAuthenticated,
    PeerClosed,
    Receipt,
    ReceiptKind,
    ReceiptReceived,
    RoundTrip,
    SignedMessage,
    line_id,
)
from hotline.protocol import PROLOGUE, cover_message, handshake_prologue, unsigned_message

OUTPUT = Path(__file__).resolve().parent / "transcript.json"

#: RFC 8032 section 7.1, TEST 1 and TEST 2: the A1 and A2 of docs/protocol.md section 2.5.
INITIATOR_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RESPONDER_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
#: X25519 ephemeral private keys: SHA-256 of a label, so anyone can see they are arbitrary.
INITIATOR_EPHEMERAL = hashlib.sha256(b"hotline test vector: initiator ephemeral").digest()
RESPONDER_EPHEMERAL = hashlib.sha256(b"hotline test vector: responder ephemeral").digest()
#: Wall clock (nanoseconds since the Unix epoch) at ``now == 0``: 2023-11-14T22:13:20Z.
WALL_CLOCK_AT_ZERO = 1_700_000_000_000_000_000
INITIATION_TIMESTAMP = WALL_CLOCK_AT_ZERO
#: The clock reading when the responder's connection is created (the initiator's is 0).
RESPONDER_EPOCH = 0.015625
BIG_BODY_LENGTH = 70_000
BIG_BODY_PATTERN = "byte i is i % 251"
CONFIG = Config()


def big_body() -> bytes:
    return bytes(i % 251 for i in range(BIG_BODY_LENGTH))


def wall(now: float) -> int:
    return WALL_CLOCK_AT_ZERO + round(now * 1_000_000_000)


def _x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


class _Side:
    """One party, driven by hand: its connection, line state and the events it got."""

    def __init__(self, name: str, identity: Identity, conn: Connection) -> None:
        self.name = name
        self.identity = identity
        self.conn = conn
        self.state = LineState()
        self.events: list[Event] = []

    def read(self, data: bytes, now: float) -> list[Event]:
        self.conn.receive_data(data, now)
        events: list[Event] = []
        while self.conn.state is not ConnectionState.CLOSED or not events:
            event = self.conn.next_event()
            if isinstance(event, NeedData):
                break
            events.append(event)
            if isinstance(event, PeerAuthenticated):
                self.conn.start(self.state, now)
            elif isinstance(event, ReceiptReceived):
                # The connection keeps its own marks: the driver records the peer's receipts.
                self.state.apply_peer_receipt(event.receipt)
        self.events += events
        return events


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.receipts: list[dict[str, Any]] = []

    def take(self, side: _Side, now: float, *labels: str) -> bytes:
        """Take what ``side`` wrote: exactly one frame per label."""
        data = side.conn.data_to_send()
        pos = 0
        for label in labels:
            end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
            self.frames.append({
                "from": side.name, "now": now, "what": label, "hex": data[pos:end].hex(),
            })
            pos = end
        assert pos == len(data), f"{side.name} wrote more than {labels}"
        return data

    def message(self, side: _Side, message: SignedMessage) -> None:
        entry: dict[str, Any] = {
            "from": side.name, "seq": message.seq, "timestamp": message.timestamp,
            "prev": message.prev.hex(), "body_length": len(message.body),
        }
        if len(message.body) > 1024:
            entry["body_pattern"] = BIG_BODY_PATTERN
            entry["body_sha256"] = hashlib.sha256(message.body).hexdigest()
        else:
            entry["body_hex"] = message.body.hex()
        entry.update(envelope=message.envelope.hex(), signature=message.signature.hex(),
                     hash=message.hash.hex())
        self.messages.append(entry)

    def receipt(self, side: _Side, receipt: Receipt) -> None:
        self.receipts.append({
            "from": side.name, "kind": receipt.kind.value, "upto": receipt.upto,
            "head": receipt.head.hex(), "timestamp": receipt.timestamp,
            "envelope": receipt.envelope.hex(), "signature": receipt.signature.hex(),
        })


def make_transcript() -> dict[str, Any]:
    """Run the scripted exchange and return the transcript (what transcript.json holds)."""
    a1, a2 = Identity.from_seed(INITIATOR_SEED), Identity.from_seed(RESPONDER_SEED)
    lid = line_id(a1.public_key, a2.public_key)
    rec = _Recorder()

    def send(side: _Side, body: bytes, now: float) -> SignedMessage:
        message = side.state.next_message(side.identity, lid, body, wall(now))
        side.conn.send_message(message)
        rec.message(side, message)
        return message

    def send_burst(side: _Side, bodies: list[bytes], now: float) -> list[SignedMessage]:
        """Send ``bodies`` as one burst: every message unsigned but the last."""
        burst = []
        for index, body in enumerate(bodies):
            state = side.state
            message = unsigned_message(side.identity.public_key, lid, state.sent_seq + 1,
                                       wall(now), state.sent_head, body)
            if index == len(bodies) - 1:
                message = cover_message(side.identity, message)
            state.append_sent(message)
            side.conn.send_message(message)
            rec.message(side, message)
            burst.append(message)
        return burst

    def receipt(side: _Side, kind: ReceiptKind, upto: int, head: bytes, now: float) -> None:
        signed = side.state.sign_own_receipt(side.identity, lid, kind, upto, head, wall(now))
        side.conn.send_receipt(signed)
        rec.receipt(side, signed)

    def deliver(side: _Side, events: list[Event], now: float) -> None:
        """Record the messages among ``events``, then one delivered receipt for all."""
        messages = [e.message for e in events if isinstance(e, MessageReceived)]
        for message in messages:
            side.state.record_received(message)
        receipt(side, ReceiptKind.DELIVERED, messages[-1].seq, messages[-1].hash, now)

    # Handshake; each side opens with a ping (id 1). Nothing answers a ping: each side's
    # next ping echoes the newest one it received. Clock readings are multiples of 1/128 s,
    # exact in binary floating point.
    init = _Side("initiator", a1, Connection.initiate(
        a1, a2.public_key, now=0.0, timestamp=INITIATION_TIMESTAMP, config=CONFIG,
        ephemeral=INITIATOR_EPHEMERAL))
    wire = rec.take(init, 0.0,
                    "handshake message 1, payload [initiation timestamp, A1's Ed25519 key]")
    resp = _Side("responder", a2, Connection.respond(
        a2, [a1.public_key], now=RESPONDER_EPOCH, config=CONFIG, ephemeral=RESPONDER_EPHEMERAL))
    assert [type(e) for e in resp.read(wire, 0.015625)] == [PeerAuthenticated]
    wire = rec.take(resp, 0.015625, "handshake message 2, empty payload",
                    "ping [3, 1, 0, 0, 1000000]")
    assert [type(e) for e in init.read(wire, 0.03125)] == [PeerAuthenticated]
    # A1's opening ping went out at start(), before it read A2's: it echoes nothing.
    wire = rec.take(init, 0.03125, "ping [3, 1, 0, 0, 1000000]")
    assert resp.read(wire, 0.046875) == []

    # A1: "hello"; A2 stores it (delivered receipt), then processes it (acknowledged receipt).
    hello = send(init, b"hello", 0.125)
    wire = rec.take(init, 0.125, "message 1 of A1: b'hello'")
    events = resp.read(wire, 0.140625)
    assert events == [MessageReceived(hello)]
    deliver(resp, events, 0.140625)
    receipt(resp, ReceiptKind.ACKNOWLEDGED, 1, hello.hash, 0.140625)
    wire = rec.take(resp, 0.140625, "delivered receipt of A2, upto 1",
                    "acknowledged receipt of A2, upto 1")
    assert [type(e) for e in init.read(wire, 0.15625)] == [ReceiptReceived, ReceiptReceived]
    assert init.state.peer_acknowledged == 1

    # A2: a burst of three messages, one of them empty, only the last signed; A1 releases
    # them together once that signature verifies, and receipts them together.
    replies = send_burst(resp, [b"hi, A1", b"", bytes([0, 255])], 0.25)
    wire = rec.take(resp, 0.25, "message 1 of A2: b'hi, A1', unsigned",
                    "message 2 of A2: b'' (empty), unsigned",
                    "message 3 of A2: b'\\x00\\xff', signed: covers 1 to 3")
    assert init.read(wire[:-1], 0.265625) == []  # Nothing before the covering signature.
    events = init.read(wire[-1:], 0.265625)
    assert events == [MessageReceived(m) for m in replies]
    deliver(init, events, 0.265625)
    wire = rec.take(init, 0.265625, "delivered receipt of A1, upto 3")
    assert [type(e) for e in resp.read(wire, 0.28125)] == [ReceiptReceived]

    # A1: a body too big for one transport message, then a small one.
    big = send(init, big_body(), 0.375)
    third = send(init, b"third", 0.375)
    wire = rec.take(init, 0.375, "message 2 of A1 (70,000-byte body), part 1 of 2",
                    "message 2 of A1, part 2 of 2 (final)", "message 3 of A1: b'third'")
    events = resp.read(wire, 0.390625)
    assert events == [MessageReceived(big), MessageReceived(third)]
    deliver(resp, events, 0.390625)
    receipt(resp, ReceiptKind.ACKNOWLEDGED, 3, third.hash, 0.390625)
    wire = rec.take(resp, 0.390625, "delivered receipt of A2, upto 3",
                    "acknowledged receipt of A2, upto 3")
    assert [type(e) for e in init.read(wire, 0.40625)] == [ReceiptReceived, ReceiptReceived]

    # One heartbeat interval after each side's start(): ping 2 each, echoing the other's
    # newest ping and how long it was held (A2 got A1's ping 1 at 0.046875: 968,750 us).
    assert resp.conn.next_deadline() == 1.015625
    resp.conn.advance(1.015625)
    wire = rec.take(resp, 1.015625, "ping [3, 2, 1, 968750, 1000000]")
    # A1 sent ping 1 at 0.03125: 1.03125 - 0.03125 - 0.96875.
    assert init.read(wire, 1.03125) == [RoundTrip(0.03125, 0.03125)]
    assert init.conn.next_deadline() == 1.03125
    init.conn.advance(1.03125)
    wire = rec.take(init, 1.03125, "ping [3, 2, 2, 0, 1000000]")
    # A2 sent ping 2 at 1.015625 and A1 held it for no time.
    assert resp.read(wire, 1.046875) == [RoundTrip(0.03125, 0.03125)]

    # A1 closes the line.
    init.conn.close("done")
    wire = rec.take(init, 1.5, "goodbye [5, 'done']")
    assert resp.read(wire, 1.515625) == [PeerClosed("done")]

    assert init.conn.handshake_hash == resp.conn.handshake_hash
    return {
        "description": (
            "hotline protocol version 3 test vector: one connection between A1 (initiator) and "
            "A2 (responder) with fixed keys, ephemerals, timestamps and clock readings. "
            "See README.md next to this file and docs/protocol.md."
        ),
        "protocol_name": PROTOCOL_NAME,
        "prologue_label": PROLOGUE.decode("ascii"),
        "prologue_hex": handshake_prologue(a2.public_key).hex(),
        "config": {
            "padding": CONFIG.padding,
            "max_body_size": CONFIG.max_body_size,
            "heartbeat_interval": CONFIG.heartbeat_interval,
            "rekey_after_messages": CONFIG.rekey_after_messages,
            "rekey_after_seconds": CONFIG.rekey_after_seconds,
        },
        "initiator": _party(a1, INITIATOR_SEED, INITIATOR_EPHEMERAL),
        "responder": _party(a2, RESPONDER_SEED, RESPONDER_EPHEMERAL),
        "line_id": lid.hex(),
        "initiation_timestamp": INITIATION_TIMESTAMP,
        "wall_clock_at_now_zero": WALL_CLOCK_AT_ZERO,
        "connection_epochs": {"initiator": 0.0, "responder": RESPONDER_EPOCH},
        "handshake_hash": init.conn.handshake_hash.hex(),
        "frames": rec.frames,
        "messages": rec.messages,
        "receipts": rec.receipts,
    }


def _party(identity: Identity, seed: bytes, ephemeral: bytes) -> dict[str, str]:
    public = identity.public_key
    return {
        "seed": seed.hex(),
        "ed25519_public": public.raw.hex(),
        "x25519_private": identity.x25519_private.hex(),
        "x25519_public": public.x25519.hex(),
        "fingerprint": public.fingerprint(),
        "ephemeral_private": ephemeral.hex(),
        "ephemeral_public": _x25519_public(ephemeral).hex(),
    }


def render(transcript: dict[str, Any]) -> str:
    """The exact text of transcript.json."""
    return json.dumps(transcript, indent=1, ensure_ascii=True) + "\n"


def main() -> int:
    OUTPUT.write_text(render(make_transcript()), encoding="ascii", newline="\n")
    print(f"wrote {OUTPUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
