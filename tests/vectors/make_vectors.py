"""Generate hotline's published test vectors: the ``*.json`` files next to this file.

Run ``python tests/vectors/make_vectors.py`` to rewrite them; ``make_vector(name)`` returns
one as a dict and ``render()`` gives the exact text of its file. README.md (next to this
file) describes the format; nobody needs this script to replay a vector, only to regenerate
one.

How it works. Each scenario is a script of *steps*, each at an explicit clock reading (one
shared timeline, seconds, every value a multiple of 1/128 so that it is exact in binary
floating point): a party dials, accepts, receives given frames, sends, receipts, lets a
timer fire, closes, or sees its stream end. Each step drives the sans-io core
(:class:`hotline.Connection`) the way a simple driver would, and records what the party
wrote (frames) and what it reported (events). Every frame is also decrypted by a shadow pair
of ``noiseprotocol`` connections, independent of hotline's Noise code, which labels the
frame and records its plaintext layout, the records it completes and every new key a REKEY
flag installs. Every input is fixed (seeds, ephemeral keys, clock readings, wall clocks), so
the output is the same byte for byte on every run and platform.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

from hotline import (
    PROTOCOL_NAME,
    Config,
    Connection,
    ConnectionBroken,
    ConnectionBrokenError,
    ConnectionClosedError,
    Event,
    Identity,
    LineState,
    LivenessChanged,
    MessageReceived,
    NeedData,
    PeerAuthenticated,
    PeerClosed,
    ReceiptKind,
    ReceiptReceived,
    RoundTrip,
    SignedMessage,
    line_id,
)
from hotline.protocol import PROLOGUE, REPLACED, cover_message, handshake_prologue, unsigned_message

HERE = Path(__file__).resolve().parent

#: RFC 8032 section 7.1, TEST 1 and TEST 2: the A1 and A2 of docs/protocol.md section 2.5.
SEEDS = {
    "A1": bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
    "A2": bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"),
}
#: Wall clock (nanoseconds since the Unix epoch) at ``now == 0``: 2023-11-14T22:13:20Z. Both
#: parties' wall clocks read this plus ``now``.
WALL_CLOCK_AT_ZERO = 1_700_000_000_000_000_000
BIG_BODY_LENGTH = 70_000
BIG_BODY_PATTERN = "byte i is i % 251"
OTHER = {"A1": "A2", "A2": "A1"}


def big_body() -> bytes:
    return bytes(i % 251 for i in range(BIG_BODY_LENGTH))


def wall(now: float) -> int:
    return WALL_CLOCK_AT_ZERO + round(now * 1_000_000_000)


def ephemeral_key(label: str) -> bytes:
    """An X25519 ephemeral private key: SHA-256 of a label, so anyone can see it is arbitrary."""
    return hashlib.sha256(label.encode("ascii")).digest()


def _x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _event(event: Event) -> dict[str, Any]:
    """An event as JSON: its class name and the fields a reader can check."""
    if isinstance(event, PeerAuthenticated):
        return {"event": "PeerAuthenticated", "initiation_timestamp": event.initiation_timestamp}
    if isinstance(event, MessageReceived):
        return {"event": "MessageReceived", "seq": event.message.seq}
    if isinstance(event, ReceiptReceived):
        return {"event": "ReceiptReceived", "kind": event.receipt.kind.value,
                "upto": event.receipt.upto}
    if isinstance(event, RoundTrip):
        return {"event": "RoundTrip", "rtt": event.rtt, "smoothed_rtt": event.smoothed_rtt}
    if isinstance(event, PeerClosed):
        return {"event": "PeerClosed", "reason": event.reason}
    if isinstance(event, ConnectionBroken):
        return {"event": "ConnectionBroken", "reason": event.reason}
    if isinstance(event, LivenessChanged):
        return {"event": "LivenessChanged", "state": event.state.value,
                "silent_for": event.silent_for}
    raise AssertionError(f"unexpected event {event!r}")


class _Shadow:
    """Both ends of one connection in ``noiseprotocol``: decrypts and labels every frame."""

    def __init__(self, vector: _Vector, conn: dict[str, Any]) -> None:
        self.vector = vector
        self.conn = conn
        self.noise: dict[str, NoiseConnection] = {}
        for party in ("A1", "A2"):
            noise = NoiseConnection.from_name(PROTOCOL_NAME.encode())
            if party == conn["initiator"]:
                noise.set_as_initiator()
                noise.set_keypair_from_public_bytes(
                    Keypair.REMOTE_STATIC, vector.identities[OTHER[party]].public_key.x25519)
            else:
                noise.set_as_responder()
            noise.set_prologue(bytes.fromhex(conn["prologue_hex"]))
            noise.set_keypair_from_private_bytes(
                Keypair.STATIC, vector.identities[party].x25519_private)
            noise.set_keypair_from_private_bytes(
                Keypair.EPHEMERAL, bytes.fromhex(conn["ephemeral"][party]["private"]))
            noise.start_handshake()
            self.noise[party] = noise
        self.handshake_frames = 0
        self.pieces: dict[str, list[int]] = {"A1": [], "A2": []}
        self.content: dict[str, bytes] = {"A1": b"", "A2": b""}

    def _key(self, sender: str) -> str:
        key: bytes = self.noise[sender].noise_protocol.cipher_state_encrypt.k
        return key.hex()

    def frame(self, sender: str, frame: dict[str, Any], data: bytes) -> None:
        receiver = OTHER[sender]
        body = data[2:]
        if self.handshake_frames < 2:
            self.handshake_frames += 1
            if self.handshake_frames == 1:
                payload = msgpack.packb([self.conn["initiation_timestamp"],
                                         self.vector.identities[sender].public_key.raw])
                frame["what"] = f"handshake message 1, payload [initiation timestamp, {sender}]"
            else:
                payload = b""
                frame["what"] = "handshake message 2, empty payload"
            assert bytes(self.noise[sender].write_message(payload)) == body
            assert bytes(self.noise[receiver].read_message(body)) == payload
            if self.handshake_frames == 2:
                self.conn["handshake_hash"] = self.noise[sender].get_handshake_hash().hex()
                initiator, responder = self.conn["initiator"], self.conn["responder"]
                self.conn["transport_keys"] = {
                    f"{initiator}_to_{responder}": self._key(initiator),
                    f"{responder}_to_{initiator}": self._key(responder),
                }
            return
        plaintext = bytes(self.noise[receiver].decrypt(body))
        assert bytes(self.noise[sender].encrypt(plaintext)) == body
        flags, length = plaintext[0], int.from_bytes(plaintext[1:3], "big")
        frame.update(flags=flags, content_length=length,
                     padding_length=len(plaintext) - 3 - length)
        if flags & 2:
            self.noise[sender].rekey_outbound_cipher()
            self.noise[receiver].rekey_inbound_cipher()
            frame["new_key"] = self._key(sender)
        self.pieces[sender].append(frame["index"])
        self.content[sender] += plaintext[3 : 3 + length]
        if not flags & 1:
            frame["record"] = None
            return
        pieces, self.pieces[sender] = self.pieces[sender], []
        record = msgpack.unpackb(self.content[sender], raw=False)
        self.content[sender] = b""
        what, frame["record"] = self.vector.record(sender, record)
        frames = self.vector.frames
        for number, index in enumerate(pieces, 1):
            piece = f", part {number} of {len(pieces)}" if len(pieces) > 1 else ""
            rekey = ", REKEY" if frames[index].get("flags", 0) & 2 else ""
            frames[index]["what"] = what + piece + rekey


class _Party:
    """One node: identity, line state, its connections and what it holds undelivered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.identity = Identity.from_seed(SEEDS[name])
        self.state = LineState()
        self.conns: dict[str, Connection] = {}
        self.held: list[SignedMessage] = []


class _Vector:
    """One scenario being recorded: the parties, connections, frames, steps and statements."""

    def __init__(self, name: str, description: str, config: Config) -> None:
        self.name = name
        self.description = description
        self.config = config
        self.parties = {p: _Party(p) for p in ("A1", "A2")}
        self.identities = {p: self.parties[p].identity for p in ("A1", "A2")}
        self.line_id = line_id(self.identities["A1"].public_key, self.identities["A2"].public_key)
        self.connections: dict[str, dict[str, Any]] = {}
        self.shadows: dict[str, _Shadow] = {}
        self.unshadowed: dict[str, list[tuple[str, dict[str, Any], bytes]]] = {}
        self.frames: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.receipts: list[dict[str, Any]] = []
        self.queued_at: dict[tuple[str, int], float] = {}
        self.signed_at: dict[bytes, float] = {}

    # --- what the shadows report --------------------------------------------------------

    def record(self, sender: str, record: list[Any]) -> tuple[str, dict[str, Any]]:
        """Register the record ``sender`` completed: its label and its JSON form."""
        if record[0] == 1:
            envelope, signature = record[1], record[2]
            fields = msgpack.unpackb(envelope, raw=False)
            seq, body = fields[2], fields[5]
            for index, entry in enumerate(self.messages):
                if entry["from"] == sender and entry["seq"] == seq:
                    assert entry["envelope"] == envelope.hex()
                    return f"message {seq} of {sender} (again)", {"message": index}
            entry = {"from": sender, "seq": seq, "timestamp": fields[3],
                     "queued_at": self.queued_at[sender, seq], "prev": fields[4].hex(),
                     "body_length": len(body)}
            if len(body) > 1024:
                entry["body_pattern"] = BIG_BODY_PATTERN
                entry["body_sha256"] = hashlib.sha256(body).hexdigest()
                shown = f"({len(body):,}-byte body)"
            else:
                entry["body_hex"] = body.hex()
                shown = f"{body!r}" + (" (empty)" if not body else "")
            entry.update(envelope=envelope.hex(), signature=signature.hex(),
                         hash=hashlib.blake2b(b"hotline-v1/message-hash\x00" + envelope,
                                              digest_size=32).hexdigest())
            self.messages.append(entry)
            signed = ", signed" if signature else ", unsigned"
            label = f"message {seq} of {sender}: {shown}{signed}"
            return label, {"message": len(self.messages) - 1}
        if record[0] == 2:
            envelope, signature = record[1], record[2]
            fields = msgpack.unpackb(envelope, raw=False)
            kind, upto = fields[2], fields[3]
            for index, entry in enumerate(self.receipts):
                if entry["envelope"] == envelope.hex():
                    return f"{kind} receipt of {sender}, upto {upto} (again)", {"receipt": index}
            self.receipts.append({
                "from": sender, "kind": kind, "upto": upto, "head": fields[4].hex(),
                "timestamp": fields[5], "signed_at": self.signed_at[envelope],
                "envelope": envelope.hex(), "signature": signature.hex(),
            })
            return f"{kind} receipt of {sender}, upto {upto}", {"receipt": len(self.receipts) - 1}
        if record[0] == 3:
            return f"ping {record}", {"ping": record[1:]}
        assert record[0] == 5
        return f"goodbye {record}", {"goodbye": record[1]}

    # --- steps ------------------------------------------------------------------------

    def _step(self, at: float, party: str, conn: str, do: str, **details: Any) -> dict[str, Any]:
        step = {"at": at, "party": party, "connection": conn, "do": do, **details}
        self.steps.append(step)
        return step

    def _finish(self, step: dict[str, Any], events: list[Event]) -> None:
        """Collect what the step's party wrote on the step's connection, and its events."""
        party, name = step["party"], step["connection"]
        conn = self.parties[party].conns[name]
        data = conn.data_to_send()
        written = []
        pos = 0
        while pos < len(data):
            end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
            frame = {"index": len(self.frames), "connection": name, "from": party,
                     "to": OTHER[party], "sent_at": step["at"], "received_at": None,
                     "what": "", "hex": data[pos:end].hex()}
            self.frames.append(frame)
            if name in self.shadows:
                self.shadows[name].frame(party, frame, data[pos:end])
            else:
                self.unshadowed.setdefault(name, []).append((party, frame, data[pos:end]))
            written.append(frame["index"])
            pos = end
        step["writes"] = written
        step["events"] = [_event(e) for e in events]

    def dial(self, at: float, party: str, conn: str, *, ephemeral: bytes,
             initiation_timestamp: int | None = None) -> None:
        """``party`` opens connection ``conn`` to the other and writes message 1."""
        me, peer = self.parties[party], self.parties[OTHER[party]]
        timestamp = initiation_timestamp if initiation_timestamp is not None else max(
            wall(at), me.state.initiation_timestamp + 1)
        self.connections[conn] = {
            "name": conn, "initiator": party, "responder": peer.name,
            "initiation_timestamp": timestamp,
            "prologue_hex": handshake_prologue(peer.identity.public_key).hex(),
            "created_at": {party: at},
            "ephemeral": {party: {"private": ephemeral.hex(),
                                  "public": _x25519_public(ephemeral).hex()}},
            "handshake_hash": None, "transport_keys": None,
        }
        me.conns[conn] = Connection.initiate(
            me.identity, peer.identity.public_key, now=at, timestamp=timestamp,
            config=self.config, ephemeral=ephemeral)
        me.state.record_initiations(ours=timestamp)
        self._finish(self._step(at, party, conn, "dial", initiation_timestamp=timestamp), [])

    def accept(self, at: float, party: str, conn: str, *, ephemeral: bytes) -> None:
        """``party`` takes the incoming stream of ``conn`` as responder (writes nothing)."""
        me = self.parties[party]
        entry = self.connections[conn]
        entry["created_at"][party] = at
        entry["ephemeral"][party] = {"private": ephemeral.hex(),
                                     "public": _x25519_public(ephemeral).hex()}
        me.conns[conn] = Connection.respond(
            me.identity, [self.identities[OTHER[party]].public_key], now=at, config=self.config,
            ephemeral=ephemeral)
        # The shadow needs both ephemerals, so message 1 is decrypted only now.
        shadow = self.shadows[conn] = _Shadow(self, entry)
        for sender, frame, data in self.unshadowed.pop(conn, []):
            shadow.frame(sender, frame, data)
        self._finish(self._step(at, party, conn, "accept"), [])

    def receive(self, at: float, party: str, conn: str, frames: list[int], *,
                start: bool = True) -> list[Event]:
        """``party`` processes ``frames`` of ``conn`` (starting the connection once the peer
        is authenticated, unless ``start`` is false)."""
        me = self.parties[party]
        connection = me.conns[conn]
        for index in frames:
            frame = self.frames[index]
            assert (frame["connection"], frame["to"]) == (conn, party)
            assert frame["received_at"] is None
            frame["received_at"] = at
        connection.receive_data(b"".join(bytes.fromhex(self.frames[i]["hex"]) for i in frames),
                                at)
        step = self._step(at, party, conn, "receive", frames=frames)
        events = self._drain(me, connection, at, start=start)
        step["started"] = start
        self._finish(step, events)
        return events

    def _drain(self, me: _Party, connection: Connection, at: float, *,
               start: bool) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                event = connection.next_event()
            except (ConnectionClosedError, ConnectionBrokenError):
                break
            if isinstance(event, NeedData):
                break
            events.append(event)
            if isinstance(event, PeerAuthenticated) and start:
                connection.start(me.state, at)  # Refuses a replay against the watermark.
                if event.initiation_timestamp is not None:
                    me.state.record_initiations(peers=event.initiation_timestamp)
            elif isinstance(event, MessageReceived):
                me.held.append(event.message)
            elif isinstance(event, ReceiptReceived):
                me.state.apply_peer_receipt(event.receipt)
        return events

    def send(self, at: float, party: str, conn: str, bodies: list[bytes], *,
             burst: bool = False) -> list[SignedMessage]:
        """``party`` sends ``bodies``: each signed, or as one burst signed only at its end."""
        me = self.parties[party]
        sent = []
        for index, body in enumerate(bodies):
            if burst:
                message = unsigned_message(me.identity.public_key, self.line_id,
                                           me.state.sent_seq + 1, wall(at), me.state.sent_head,
                                           body)
                if index == len(bodies) - 1:
                    message = cover_message(me.identity, message)
                me.state.append_sent(message)
            else:
                message = me.state.next_message(me.identity, self.line_id, body, wall(at))
            self.queued_at[party, message.seq] = at
            me.conns[conn].send_message(message)
            sent.append(message)
        step = self._step(at, party, conn, "send", burst=burst,
                          seqs=[m.seq for m in sent])
        self._finish(step, [])
        return sent

    def deliver(self, at: float, party: str, conn: str) -> None:
        """``party`` stores what it holds and sends a delivered receipt for it."""
        me = self.parties[party]
        for message in me.held:
            me.state.record_received(message)
        last = me.held[-1]
        me.held.clear()
        self._receipt(at, party, conn, ReceiptKind.DELIVERED, last.seq, last.hash)

    def acknowledge(self, at: float, party: str, conn: str) -> None:
        """``party``'s application has processed everything delivered: say so."""
        me = self.parties[party]
        assert me.state.delivered_receipt is not None
        self._receipt(at, party, conn, ReceiptKind.ACKNOWLEDGED, me.state.delivered_upto,
                      me.state.delivered_receipt.head)

    def _receipt(self, at: float, party: str, conn: str, kind: ReceiptKind, upto: int,
                 head: bytes) -> None:
        me = self.parties[party]
        receipt = me.state.sign_own_receipt(me.identity, self.line_id, kind, upto, head, wall(at))
        self.signed_at[receipt.envelope] = at
        me.conns[conn].send_receipt(receipt)
        step = self._step(at, party, conn, kind.value, upto=upto)
        self._finish(step, [])

    def timer(self, at: float, party: str, conn: str) -> None:
        """``party``'s timer for ``conn`` fires (it must be due exactly now)."""
        connection = self.parties[party].conns[conn]
        assert connection.next_deadline() == at, (connection.next_deadline(), at)
        connection.advance(at)
        step = self._step(at, party, conn, "timer")
        self._finish(step, self._drain(self.parties[party], connection, at, start=False))

    def close(self, at: float, party: str, conn: str, reason: str) -> None:
        connection = self.parties[party].conns[conn]
        connection.close(reason)
        self._finish(self._step(at, party, conn, "close", reason=reason), [])

    def end_of_stream(self, at: float, party: str, conn: str) -> None:
        """``party`` reads the end of ``conn``'s stream (the link was cut)."""
        me = self.parties[party]
        connection = me.conns[conn]
        connection.receive_data(b"", at)
        step = self._step(at, party, conn, "end of stream")
        events = self._drain(me, connection, at, start=False)
        me.held.clear()  # Received but not stored: lost with the connection.
        self._finish(step, events)

    def last_writes(self) -> list[int]:
        writes: list[int] = self.steps[-1]["writes"]
        return writes

    # --- the file -----------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "scenario": self.name,
            "protocol_name": PROTOCOL_NAME,
            "prologue_label": PROLOGUE.decode("ascii"),
            "config": {
                "padding": self.config.padding,
                "max_body_size": self.config.max_body_size,
                "heartbeat_interval": self.config.heartbeat_interval,
                "heartbeat_multiplier": self.config.heartbeat_multiplier,
                "suspect_after": self.config.suspect_after,
                "rekey_after_messages": self.config.rekey_after_messages,
                "rekey_after_seconds": self.config.rekey_after_seconds,
            },
            "parties": {name: _party(name, self.identities[name]) for name in ("A1", "A2")},
            "line_id": self.line_id.hex(),
            "wall_clock_at_now_zero": WALL_CLOCK_AT_ZERO,
            "connections": list(self.connections.values()),
            "steps": self.steps,
            "frames": self.frames,
            "messages": self.messages,
            "receipts": self.receipts,
        }


def _party(name: str, identity: Identity) -> dict[str, str]:
    public = identity.public_key
    return {
        "seed": SEEDS[name].hex(),
        "ed25519_public": public.raw.hex(),
        "x25519_private": identity.x25519_private.hex(),
        "x25519_public": public.x25519.hex(),
        "fingerprint": public.fingerprint(),
    }


# --- the scenarios ------------------------------------------------------------------------
#
# Clock readings are multiples of 1/128 s. A frame is processed 1/64 s after it was written
# unless the scenario says otherwise; the files record every reading, so nothing depends on
# that habit.

def transcript() -> _Vector:
    """The first connection of a new line, with bursts, a two-part record and pings."""
    v = _Vector("transcript", (
        "A1 calls A2 on a new line: handshake, opening pings, a message each way with "
        "delivered and acknowledged receipts, a burst of three messages of which only the "
        "last is signed, a 70,000-byte body that spans two transport messages, a second "
        "round of pings echoing each other, and A1's goodbye."), Config())
    v.dial(0.0, "A1", "c1", initiation_timestamp=WALL_CLOCK_AT_ZERO,
           ephemeral=ephemeral_key("hotline test vector: initiator ephemeral"))
    v.accept(0.015625, "A2", "c1",
             ephemeral=ephemeral_key("hotline test vector: responder ephemeral"))
    v.receive(0.015625, "A2", "c1", [0])
    v.receive(0.03125, "A1", "c1", [1, 2])
    v.receive(0.046875, "A2", "c1", v.last_writes())
    # A1: "hello"; A2 stores it (delivered receipt), then processes it (acknowledged).
    v.send(0.125, "A1", "c1", [b"hello"])
    v.receive(0.140625, "A2", "c1", v.last_writes())
    v.deliver(0.140625, "A2", "c1")
    v.acknowledge(0.140625, "A2", "c1")
    v.receive(0.15625, "A1", "c1", v.steps[-2]["writes"] + v.last_writes())
    # A2: a burst of three, one empty, only the last signed; A1 releases nothing before the
    # covering signature, then all three together.
    burst = v.send(0.25, "A2", "c1", [b"hi, A1", b"", bytes([0, 255])], burst=True)
    first, last = v.last_writes()[:2], v.last_writes()[2:]
    assert v.receive(0.265625, "A1", "c1", first) == []
    assert v.receive(0.265625, "A1", "c1", last) == [MessageReceived(m) for m in burst]
    v.deliver(0.265625, "A1", "c1")
    v.receive(0.28125, "A2", "c1", v.last_writes())
    # A1: a body too big for one transport message, then a small one.
    v.send(0.375, "A1", "c1", [big_body(), b"third"])
    v.receive(0.390625, "A2", "c1", v.last_writes())
    v.deliver(0.390625, "A2", "c1")
    v.acknowledge(0.390625, "A2", "c1")
    v.receive(0.40625, "A1", "c1", v.steps[-2]["writes"] + v.last_writes())
    # One heartbeat interval after each side's start(): ping 2 each, echoing the other's.
    v.timer(1.015625, "A2", "c1")
    assert v.receive(1.03125, "A1", "c1", v.last_writes()) == [RoundTrip(0.03125, 0.03125)]
    v.timer(1.03125, "A1", "c1")
    assert v.receive(1.046875, "A2", "c1", v.last_writes()) == [RoundTrip(0.03125, 0.03125)]
    v.close(1.5, "A1", "c1", "done")
    assert v.receive(1.515625, "A2", "c1", v.last_writes()) == [PeerClosed("done")]
    return v


def rekey() -> _Vector:
    """Both directions rekey by count (``rekey_after_messages`` = 3), then by age."""
    v = _Vector("rekey", (
        "A2 calls A1 with rekey_after_messages = 3 and rekey_after_seconds = 1.25. While "
        "messages flow, every third transport message of each direction carries the REKEY "
        "flag, and the next one is encrypted under the new key. Then the line is idle: each "
        "side sends its ping one second after the last, and when its key is 1.25 s old it "
        "sends a ping at once, which carries REKEY, and pings one second after that one "
        "(docs/protocol.md section 5.3). Each REKEY frame records the new key of its "
        "direction."), Config(rekey_after_messages=3, rekey_after_seconds=1.25))
    v.dial(0.0, "A2", "c1", ephemeral=ephemeral_key("hotline test vector: rekey A2 c1"))
    v.accept(0.015625, "A1", "c1", ephemeral=ephemeral_key("hotline test vector: rekey A1 c1"))
    v.receive(0.015625, "A1", "c1", [0])
    v.receive(0.03125, "A2", "c1", v.last_writes())
    v.receive(0.046875, "A1", "c1", v.last_writes())
    at = 0.125
    for round_ in range(1, 5):
        v.send(at, "A2", "c1", [f"A2 says {round_}".encode()])
        v.receive(at + 0.015625, "A1", "c1", v.last_writes())
        v.deliver(at + 0.015625, "A1", "c1")
        v.send(at + 0.015625, "A1", "c1", [f"A1 says {round_}".encode()])
        v.receive(at + 0.03125, "A2", "c1", v.steps[-2]["writes"] + v.last_writes())
        v.deliver(at + 0.03125, "A2", "c1")
        v.receive(at + 0.046875, "A1", "c1", v.last_writes())
        at += 0.125
    # Idle: the pings each side owes one interval after its first, then the ones its key's
    # age brings forward (A1 rekeyed last at 0.515625, A2 at 0.53125).
    v.timer(1.015625, "A1", "c1")
    v.receive(1.03125, "A2", "c1", v.last_writes())
    v.timer(1.03125, "A2", "c1")
    v.receive(1.046875, "A1", "c1", v.last_writes())
    v.timer(1.765625, "A1", "c1")
    v.receive(1.78125, "A2", "c1", v.last_writes())
    v.timer(1.78125, "A2", "c1")
    v.receive(1.796875, "A1", "c1", v.last_writes())
    v.close(2.0, "A2", "c1", "done")
    assert v.receive(2.015625, "A1", "c1", v.last_writes()) == [PeerClosed("done")]
    return v


def _open(v: _Vector, caller: str, conn: str, at: float) -> None:
    """``caller`` dials and both sides open ``conn``, each frame processed 1/64 s later."""
    answerer = OTHER[caller]
    v.dial(at, caller, conn,
           ephemeral=ephemeral_key(f"hotline test vector: {v.name} {caller} {conn}"))
    v.accept(at + 0.015625, answerer, conn,
             ephemeral=ephemeral_key(f"hotline test vector: {v.name} {answerer} {conn}"))
    v.receive(at + 0.015625, answerer, conn, v.steps[-2]["writes"])
    v.receive(at + 0.03125, caller, conn, v.last_writes())
    v.receive(at + 0.046875, answerer, conn, v.last_writes())


def resume() -> _Vector:
    """A cut connection, then a second one that resumes: resent messages, dropped
    duplicates and repeated receipts."""
    v = _Vector("resume", (
        "A1 calls A2; A1 sends three messages and A2 two, and the link is cut while the "
        "receipts for them are in flight (frames whose received_at is null were never "
        "processed). A1 calls again: each side sends its latest receipts and resends every "
        "message the other has not receipted as delivered (docs/protocol.md section 10); "
        "each receiver drops the duplicates and repeats its delivered receipt (section 8, "
        "step 4)."), Config())
    _open(v, "A1", "c1", 0.0)
    v.send(0.0625, "A1", "c1", [b"one", b"two", b"three"])
    v.send(0.0625, "A2", "c1", [b"first", b"second"])
    # Each side stores what it got and receipts it; the cut loses every receipt.
    v.receive(0.078125, "A2", "c1", v.steps[-2]["writes"])
    v.deliver(0.078125, "A2", "c1")
    v.acknowledge(0.078125, "A2", "c1")
    v.receive(0.078125, "A1", "c1", v.steps[-4]["writes"])
    v.deliver(0.078125, "A1", "c1")
    v.end_of_stream(0.25, "A1", "c1")
    v.end_of_stream(0.25, "A2", "c1")
    # The second connection: A1's initiation timestamp is above the first one's.
    _open(v, "A1", "c2", 1.0)
    v.receive(1.0625, "A1", "c2", v.last_writes())
    v.send(1.125, "A2", "c2", [b"third"])
    v.receive(1.140625, "A1", "c2", v.last_writes())
    v.deliver(1.140625, "A1", "c2")
    v.receive(1.15625, "A2", "c2", v.last_writes())
    v.close(1.5, "A1", "c2", "done")
    assert v.receive(1.515625, "A2", "c2", v.last_writes()) == [PeerClosed("done")]
    return v


def replaced() -> _Vector:
    """A newer connection from the same caller replaces the live one."""
    v = _Vector("replaced", (
        "A1 calls A2 and sends a message; then A1 calls again while the first connection is "
        "still open (its dialler gave the first one up). A2 keeps the newer connection from "
        "the same initiator and closes the old one with the goodbye reason 'replaced by a "
        "newer connection' (docs/protocol.md section 10); A1 reads that goodbye, then opens "
        "the new connection, on which the line goes on."), Config())
    _open(v, "A1", "c1", 0.0)
    v.send(0.125, "A1", "c1", [b"before"])
    v.receive(0.140625, "A2", "c1", v.last_writes())
    v.deliver(0.140625, "A2", "c1")
    v.receive(0.15625, "A1", "c1", v.last_writes())
    v.dial(0.5, "A1", "c2", ephemeral=ephemeral_key("hotline test vector: replaced A1 c2"))
    v.accept(0.515625, "A2", "c2", ephemeral=ephemeral_key("hotline test vector: replaced A2 c2"))
    v.receive(0.515625, "A2", "c2", v.steps[-2]["writes"])
    new_flight = v.last_writes()
    v.close(0.515625, "A2", "c1", REPLACED)
    assert v.receive(0.53125, "A1", "c1", v.last_writes()) == [PeerClosed(REPLACED)]
    v.receive(0.53125, "A1", "c2", new_flight)
    v.receive(0.546875, "A2", "c2", v.last_writes())
    v.send(0.625, "A1", "c2", [b"after"])
    v.receive(0.640625, "A2", "c2", v.last_writes())
    v.deliver(0.640625, "A2", "c2")
    v.receive(0.65625, "A1", "c2", v.last_writes())
    v.close(1.0, "A1", "c2", "done")
    assert v.receive(1.015625, "A2", "c2", v.last_writes()) == [PeerClosed("done")]
    return v


def crossing() -> _Vector:
    """Both sides dial at once; both keep the connection the smaller key initiated."""
    v = _Vector("crossing", (
        "A1 and A2 call each other at the same moment: connection c1 is initiated by A1, c2 "
        "by A2. Each side answers the other's call and starts it, as it has no live "
        "connection yet. When its own call is answered, each side keeps the connection "
        "initiated by the party whose Ed25519 key is the smaller byte string, here A2 "
        "(3d40... < d75a...): A1 closes c1 without starting it (nothing is written), A2 "
        "starts c2 and closes c1 with the goodbye 'replaced by a newer connection' "
        "(docs/protocol.md section 10). The line goes on over c2."), Config())
    assert v.identities["A2"].public_key.raw < v.identities["A1"].public_key.raw
    v.dial(0.0, "A1", "c1", ephemeral=ephemeral_key("hotline test vector: crossing A1 c1"))
    c1_message_1 = v.last_writes()
    v.dial(0.0, "A2", "c2", ephemeral=ephemeral_key("hotline test vector: crossing A2 c2"))
    c2_message_1 = v.last_writes()
    v.accept(0.015625, "A2", "c1", ephemeral=ephemeral_key("hotline test vector: crossing A2 c1"))
    v.receive(0.015625, "A2", "c1", c1_message_1)
    c1_flight = v.last_writes()
    v.accept(0.015625, "A1", "c2", ephemeral=ephemeral_key("hotline test vector: crossing A1 c2"))
    v.receive(0.015625, "A1", "c2", c2_message_1)
    c2_flight = v.last_writes()
    # A1 authenticates c1 but keeps c2: it never starts c1 and leaves A2's ping unread.
    events = v.receive(0.03125, "A1", "c1", c1_flight[:1], start=False)
    assert [type(e) for e in events] == [PeerAuthenticated]
    v.close(0.03125, "A1", "c1", REPLACED)
    v.receive(0.03125, "A2", "c2", c2_flight)
    v.close(0.03125, "A2", "c1", REPLACED)  # Its goodbye reaches a closed c1: never read.
    v.receive(0.046875, "A1", "c2", v.steps[-2]["writes"])
    v.send(0.125, "A1", "c2", [b"hello"])
    v.receive(0.140625, "A2", "c2", v.last_writes())
    v.deliver(0.140625, "A2", "c2")
    v.receive(0.15625, "A1", "c2", v.last_writes())
    v.close(0.5, "A2", "c2", "done")
    assert v.receive(0.515625, "A1", "c2", v.last_writes()) == [PeerClosed("done")]
    return v


SCENARIOS: dict[str, Callable[[], _Vector]] = {
    "transcript": transcript,
    "rekey": rekey,
    "resume": resume,
    "replaced": replaced,
    "crossing": crossing,
}


def make_vector(name: str) -> dict[str, Any]:
    """Run scenario ``name`` and return its vector (what ``name``.json holds)."""
    return SCENARIOS[name]().result()


def render(vector: dict[str, Any]) -> str:
    """The exact text of a vector file."""
    return json.dumps(vector, indent=1, ensure_ascii=True) + "\n"


def main() -> int:
    for name in SCENARIOS:
        path = HERE / f"{name}.json"
        path.write_text(render(make_vector(name)), encoding="ascii", newline="\n")
        print(f"wrote {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
