"""hotline's published test vectors, tests/vectors/*.json.

Three kinds of test:

- the generator (tests/vectors/make_vectors.py) must reproduce every committed file byte for
  byte, so the files describe what this implementation does;
- every file must replay from its own contents alone, the way tests/vectors/README.md tells
  another implementation to (steps 1 to 5). That part uses only the standard library,
  ``msgpack``, ``pynacl``, ``cryptography`` and the independent Noise implementation
  ``noiseprotocol``, and never imports hotline; changing any recorded input must make it fail;
- hotline's sans-io core, fed nothing but each file's steps (README step 6), must write the
  listed frames and report the listed events: the steps are the whole input. hotline is
  imported inside that part only.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import nacl.bindings
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

try:
    from noise.connection import Keypair, NoiseConnection
except ImportError:  # pragma: no cover - noiseprotocol is a declared test dependency
    HAVE_NOISE = False
else:
    HAVE_NOISE = True

needs_noise = pytest.mark.skipif(not HAVE_NOISE, reason="noiseprotocol is not installed")

VECTORS = Path(__file__).resolve().parent / "vectors"
NAMES = sorted(path.stem for path in VECTORS.glob("*.json"))


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "hotline_make_vectors", VECTORS / "make_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _published(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text(encoding="ascii"))
    return data


def test_the_published_set() -> None:
    assert NAMES == ["crossing", "rekey", "replaced", "resume", "transcript"]


# --------------------------------------------------------------------------- the generator


@needs_noise
@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
@pytest.mark.parametrize("name", NAMES)
def test_the_implementation_reproduces_the_published_vector(name: str) -> None:
    make = _load_generator()
    assert sorted(make.SCENARIOS) == NAMES
    published = _published(name)
    fresh = make.make_vector(name)
    # Point at the first difference before comparing the whole text.
    for key in published.keys() | fresh.keys():
        if key not in ("frames", "steps"):
            assert fresh.get(key) == published.get(key), f"field {key!r} differs"
    for mine, theirs in zip(fresh["frames"], published["frames"], strict=True):
        assert mine == theirs, f"first differing frame: {theirs['index']} {theirs['what']!r}"
    for mine, theirs in zip(fresh["steps"], published["steps"], strict=True):
        assert mine == theirs, f"first differing step: {theirs!r}"
    assert make.render(fresh) == (VECTORS / f"{name}.json").read_text(encoding="ascii")


# --------------------------------------------------------------------------- the replay
#
# Everything below follows tests/vectors/README.md and docs/protocol.md, with primitives
# from other libraries. Clock readings are compared as exact fractions: every published
# reading is a dyadic rational, exact in binary floating point.

DOMAIN_MESSAGE = b"hotline-v1/message\x00"
DOMAIN_MESSAGE_HASH = b"hotline-v1/message-hash\x00"
DOMAIN_RECEIPT = b"hotline-v1/receipt\x00"
LINE_ID_CONTEXT = b"hotline-v1/line-id\x00"
GENESIS = bytes(32)
MAX_PLAINTEXT = 65_535 - 16
REKEY_NONCE = bytes(4) + b"\xff" * 8


def _blake2b_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _wall(vector: dict[str, Any], at: float) -> int:
    return int(vector["wall_clock_at_now_zero"] + Fraction(at) * 1_000_000_000)


def _other(party: str) -> str:
    return "A2" if party == "A1" else "A1"


def _check_parties(vector: dict[str, Any]) -> dict[str, bytes]:
    """Derive every key from the seeds (docs/protocol.md section 2); return the Ed25519 keys."""
    keys = {}
    for name, party in vector["parties"].items():
        seed = bytes.fromhex(party["seed"])
        public = bytes(nacl.signing.SigningKey(seed).verify_key)
        assert public.hex() == party["ed25519_public"]
        assert nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(seed + public).hex() == (
            party["x25519_private"]
        )
        assert nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public).hex() == (
            party["x25519_public"]
        )
        blob = len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big")
        digest = hashlib.sha256(blob + public).digest()
        assert party["fingerprint"] == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
        keys[name] = public
    low, high = sorted(keys.values())
    assert vector["line_id"] == _blake2b_256(LINE_ID_CONTEXT + low + high).hex()
    # docs/protocol.md, section 2.5.
    assert vector["line_id"] == "39fac8ca8f166134d2f492747bea8f705b432a1ab892a7e4b02259b566ecdc50"
    assert vector["protocol_name"] == "Noise_IK_25519_ChaChaPoly_BLAKE2b"
    assert vector["prologue_label"] == "hotline/3"
    return keys


class _Connection:
    """Both ends of one published connection in noiseprotocol, and the reassembly buffers."""

    def __init__(self, vector: dict[str, Any], entry: dict[str, Any]) -> None:
        self.entry = entry
        parties = vector["parties"]
        initiator, responder = entry["initiator"], entry["responder"]
        assert bytes.fromhex(entry["prologue_hex"]) == b"hotline/3" + bytes.fromhex(
            parties[responder]["ed25519_public"]
        )
        self.noise: dict[str, Any] = {}
        for party in (initiator, responder):
            ephemeral = entry["ephemeral"][party]
            private = bytes.fromhex(ephemeral["private"])
            assert X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw(
            ).hex() == ephemeral["public"]
            noise = NoiseConnection.from_name(vector["protocol_name"].encode())
            if party == initiator:
                noise.set_as_initiator()
                noise.set_keypair_from_public_bytes(
                    Keypair.REMOTE_STATIC, bytes.fromhex(parties[responder]["x25519_public"]))
            else:
                noise.set_as_responder()
            noise.set_prologue(bytes.fromhex(entry["prologue_hex"]))
            noise.set_keypair_from_private_bytes(
                Keypair.STATIC, bytes.fromhex(parties[party]["x25519_private"]))
            noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, private)
            noise.start_handshake()
            self.noise[party] = noise
        self.handshake_frames = 0
        self.keys: dict[str, bytes] = {}
        self.sent_under_key = {initiator: 0, responder: 0}
        # When each side's current sending key was installed: start(), then each REKEY.
        self.key_since: dict[str, Fraction] = {}
        # The frames that carry REKEY because their key reached its age limit.
        self.aged: set[int] = set()
        self.buffer = {initiator: b"", responder: b""}


def _replay_frame(vector: dict[str, Any], conn: _Connection, frame: dict[str, Any],
                  keys: dict[str, bytes]) -> list[Any] | None:
    """Check one frame against the independent Noise pair; return the record it completes."""
    data = bytes.fromhex(frame["hex"])
    assert int.from_bytes(data[:2], "big") == len(data) - 2
    body, sender, receiver = data[2:], frame["from"], frame["to"]
    noise, entry = conn.noise, conn.entry
    if conn.handshake_frames < 2:
        conn.handshake_frames += 1
        if conn.handshake_frames == 1:
            assert sender == entry["initiator"]
            payload = msgpack.packb([entry["initiation_timestamp"], keys[sender]])
        else:
            assert sender == entry["responder"]
            payload = b""
        assert noise[sender].write_message(payload) == body
        assert noise[receiver].read_message(body) == payload
        if conn.handshake_frames == 2:
            for party in noise:
                assert noise[party].get_handshake_hash().hex() == entry["handshake_hash"]
                conn.keys[party] = noise[party].noise_protocol.cipher_state_encrypt.k
            assert entry["transport_keys"] == {
                f"{party}_to_{_other(party)}": key.hex() for party, key in conn.keys.items()
            }
        return None
    plaintext = noise[receiver].decrypt(body)
    assert noise[sender].encrypt(plaintext) == body
    # docs/protocol.md section 5.1: flags, length, content, zero padding.
    flags, length = plaintext[0], int.from_bytes(plaintext[1:3], "big")
    assert flags & ~3 == 0
    assert 3 + length <= len(plaintext)
    assert plaintext[3 + length :] == bytes(len(plaintext) - 3 - length)
    padding = vector["config"]["padding"]
    assert len(plaintext) == min(math.ceil((3 + length) / padding) * padding, MAX_PLAINTEXT)
    assert (frame["flags"], frame["content_length"], frame["padding_length"]) == (
        flags, length, len(plaintext) - 3 - length
    )
    # Section 5.3: REKEY on exactly the message that reaches the count or the age limit,
    # then Rekey() on both ends of that direction.
    config = vector["config"]
    conn.sent_under_key[sender] += 1
    by_count = conn.sent_under_key[sender] >= config["rekey_after_messages"]
    sent_at = Fraction(frame["sent_at"])
    by_age = sent_at - conn.key_since[sender] >= Fraction(config["rekey_after_seconds"])
    assert bool(flags & 2) == (by_count or by_age), frame["what"]
    if flags & 2:
        if by_age and not by_count:
            conn.aged.add(frame["index"])
        conn.sent_under_key[sender] = 0
        conn.key_since[sender] = sent_at
        new_key = ChaCha20Poly1305(conn.keys[sender]).encrypt(REKEY_NONCE, bytes(32), b"")[:32]
        noise[sender].rekey_outbound_cipher()
        noise[receiver].rekey_inbound_cipher()
        assert noise[sender].noise_protocol.cipher_state_encrypt.k == new_key
        assert frame["new_key"] == new_key.hex()
        conn.keys[sender] = new_key
    else:
        assert "new_key" not in frame
    conn.buffer[sender] += plaintext[3 : 3 + length]
    if not flags & 1:
        assert frame["record"] is None
        return None
    content, conn.buffer[sender] = conn.buffer[sender], b""
    record: list[Any] = msgpack.unpackb(content, raw=False)
    assert msgpack.packb(record, use_bin_type=True) == content  # Canonical (section 7.3).
    return record


def _check_message(vector: dict[str, Any], entry: dict[str, Any], keys: dict[str, bytes],
                   record: list[Any]) -> None:
    envelope, signature = bytes.fromhex(entry["envelope"]), bytes.fromhex(entry["signature"])
    assert record == [1, envelope, signature]
    fields = msgpack.unpackb(envelope, raw=False)
    assert msgpack.packb(fields, use_bin_type=True) == envelope
    line_id, sender, seq, timestamp, prev, body = fields
    assert line_id.hex() == vector["line_id"]
    assert sender == keys[entry["from"]]
    assert (seq, timestamp, prev.hex()) == (entry["seq"], entry["timestamp"], entry["prev"])
    assert timestamp == _wall(vector, entry["queued_at"])
    assert len(body) == entry["body_length"]
    if "body_hex" in entry:
        assert body.hex() == entry["body_hex"]
    else:
        assert entry["body_pattern"] == "byte i is i % 251"
        assert body == bytes(i % 251 for i in range(len(body)))
        assert hashlib.sha256(body).hexdigest() == entry["body_sha256"]
    assert _blake2b_256(DOMAIN_MESSAGE_HASH + envelope).hex() == entry["hash"]
    if signature:
        nacl.signing.VerifyKey(sender).verify(DOMAIN_MESSAGE + envelope, signature)


def _check_receipt(vector: dict[str, Any], entry: dict[str, Any], keys: dict[str, bytes],
                   record: list[Any], hashes: dict[tuple[str, int], str]) -> None:
    envelope, signature = bytes.fromhex(entry["envelope"]), bytes.fromhex(entry["signature"])
    assert record == [2, envelope, signature]
    signer = keys[entry["from"]]
    nacl.signing.VerifyKey(signer).verify(DOMAIN_RECEIPT + envelope, signature)
    fields = msgpack.unpackb(envelope, raw=False)
    assert msgpack.packb(fields, use_bin_type=True) == envelope
    line_id, signer_field, kind, upto, head, timestamp = fields
    assert (line_id.hex(), signer_field) == (vector["line_id"], signer)
    assert (kind, upto, head.hex(), timestamp) == (
        entry["kind"], entry["upto"], entry["head"], entry["timestamp"]
    )
    assert kind in ("delivered", "acknowledged")
    assert timestamp == _wall(vector, entry["signed_at"])
    # The head names the other side's message upto, which went on the wire before.
    assert hashes[_other(entry["from"]), upto] == entry["head"]


def _check_steps_and_clocks(vector: dict[str, Any]) -> None:
    """Every frame is written by one step at its sent_at and processed by at most one
    receive step at its received_at, in stream order."""
    frames, steps = vector["frames"], vector["steps"]
    assert [frame["index"] for frame in frames] == list(range(len(frames)))
    written: dict[int, dict[str, Any]] = {}
    received: dict[int, dict[str, Any]] = {}
    last_at = 0.0
    for step in steps:
        assert step["at"] >= last_at
        last_at = step["at"]
        for index in step["writes"]:
            assert index not in written
            written[index] = step
        for index in step.get("frames", []):
            assert index not in received
            received[index] = step
    assert sorted(written) == list(range(len(frames)))
    last_read: dict[tuple[str, str], int] = {}
    for frame in frames:
        writer = written[frame["index"]]
        assert (writer["party"], writer["connection"]) == (frame["from"], frame["connection"])
        assert writer["at"] == frame["sent_at"]
        reader = received.get(frame["index"])
        if reader is None:
            assert frame["received_at"] is None
            continue
        assert reader["do"] == "receive"
        assert (reader["party"], reader["connection"]) == (frame["to"], frame["connection"])
        assert reader["at"] == frame["received_at"] >= frame["sent_at"]
        stream = (frame["connection"], frame["from"])
        assert frame["index"] > last_read.get(stream, -1)  # A stream is read in order.
        last_read[stream] = frame["index"]
    # The frames of one stream are read without a gap: only a tail may be left unread.
    for conn, sender in last_read:
        sent = [f for f in frames if (f["connection"], f["from"]) == (conn, sender)]
        read = [f["received_at"] is not None for f in sent]
        assert read == sorted(read, reverse=True), (conn, sender)


def _check_pings(vector: dict[str, Any], pings: list[tuple[dict[str, Any], list[Any]]],
                 aged: set[int]) -> None:
    """Section 11: ids, echoes, hold_us from the two clocks, and the interval (a key's age
    limit brings a ping forward: section 5.3)."""
    steps = vector["steps"]
    written_by = {i: n for n, step in enumerate(steps) for i in step["writes"]}
    read_by = {i: n for n, step in enumerate(steps) for i in step.get("frames", [])}
    interval_us = round(Fraction(vector["config"]["heartbeat_interval"]) * 1_000_000)
    for frame, (ping_id, echo_id, hold_us, interval) in pings:
        assert interval == interval_us
        mine = [f for f, r in pings if (f["connection"], f["from"]) ==
                (frame["connection"], frame["from"])]
        assert ping_id == mine.index(frame) + 1
        if ping_id > 1 and frame["index"] not in aged:
            previous = mine[ping_id - 2]
            assert Fraction(frame["sent_at"]) == (
                Fraction(previous["sent_at"]) + Fraction(vector["config"]["heartbeat_interval"])
            )
        # The newest ping of the peer processed before the step that wrote this one.
        seen = [(f, r) for f, r in pings
                if (f["connection"], f["from"]) == (frame["connection"], frame["to"])
                and f["index"] in read_by
                and read_by[f["index"]] < written_by[frame["index"]]]
        if ping_id == 1 or not seen:
            # An opening ping goes out at start(), before any record is read.
            assert (echo_id, hold_us) == (0, 0)
            continue
        echoed, record = seen[-1]
        assert echo_id == record[0]
        held = (Fraction(frame["sent_at"]) - Fraction(echoed["received_at"])) * 1_000_000
        assert hold_us == math.floor(held)


def _check_round_trips(vector: dict[str, Any], pings: list[tuple[dict[str, Any], list[Any]]]
                       ) -> None:
    smoothed: dict[tuple[str, str], Fraction] = {}
    for step in vector["steps"]:
        trips = [e for e in step["events"] if e["event"] == "RoundTrip"]
        if not trips:
            continue
        (trip,) = trips
        frame, record = next((f, r) for f, r in pings if f["index"] in step["frames"])
        ours = next(f for f, r in pings if (f["connection"], f["from"]) ==
                    (frame["connection"], step["party"]) and r[0] == record[1])
        rtt = (Fraction(frame["received_at"]) - Fraction(ours["sent_at"])
               - Fraction(record[2], 1_000_000))
        key = (step["connection"], step["party"])
        smoothed[key] = rtt if key not in smoothed else smoothed[key] * 7 / 8 + rtt / 8
        assert Fraction(trip["rtt"]) == rtt
        assert Fraction(trip["smoothed_rtt"]) == smoothed[key]


def replay(vector: dict[str, Any]) -> None:
    """Replay ``vector`` from its contents alone; any disagreement fails an assertion."""
    keys = _check_parties(vector)
    _check_steps_and_clocks(vector)
    connections = {entry["name"]: _Connection(vector, entry) for entry in vector["connections"]}
    for step in vector["steps"]:
        if step.get("started") and any(e["event"] == "PeerAuthenticated" for e in step["events"]):
            connections[step["connection"]].key_since[step["party"]] = Fraction(step["at"])
    for entry in vector["connections"]:
        dial = next(s for s in vector["steps"]
                    if s["do"] == "dial" and s["connection"] == entry["name"])
        assert dial["party"] == entry["initiator"]
        assert dial["initiation_timestamp"] == entry["initiation_timestamp"]
        assert entry["created_at"][entry["initiator"]] == dial["at"]
    # Initiation timestamps: the initiator's wall clock when it dialled, or one more than its
    # last if that is not above it (section 4.2).
    for party in ("A1", "A2"):
        last = 0
        for step in vector["steps"]:
            if step["do"] == "dial" and step["party"] == party:
                last = max(_wall(vector, step["at"]), last + 1)
                assert step["initiation_timestamp"] == last

    hashes: dict[tuple[str, int], str] = {}
    heads: dict[str, str] = {"A1": GENESIS.hex(), "A2": GENESIS.hex()}
    unsigned: dict[str, list[int]] = {"A1": [], "A2": []}
    pings: list[tuple[dict[str, Any], list[Any]]] = []
    for frame in vector["frames"]:
        record = _replay_frame(vector, connections[frame["connection"]], frame, keys)
        if record is None:
            continue
        recorded = frame["record"]
        if "message" in recorded:
            entry = vector["messages"][recorded["message"]]
            assert entry["from"] == frame["from"]
            _check_message(vector, entry, keys, record)
            key = (entry["from"], entry["seq"])
            if key in hashes:  # Retransmitted: the very same message (section 10).
                assert hashes[key] == entry["hash"]
                continue
            # Section 8: consecutive numbers, each naming the previous hash.
            assert entry["seq"] == len([k for k in hashes if k[0] == entry["from"]]) + 1
            assert entry["prev"] == heads[entry["from"]]
            hashes[key] = heads[entry["from"]] = entry["hash"]
            if entry["signature"]:
                unsigned[entry["from"]].clear()
            else:
                unsigned[entry["from"]].append(entry["seq"])
        elif "receipt" in recorded:
            entry = vector["receipts"][recorded["receipt"]]
            assert entry["from"] == frame["from"]
            _check_receipt(vector, entry, keys, record, hashes)
        elif "ping" in recorded:
            assert record[0] == 3
            assert record[1:] == recorded["ping"]
            pings.append((frame, record[1:]))
        else:
            assert record == [5, recorded["goodbye"]]
    # Every message the files list went on the wire, and every unsigned one was covered.
    assert len(hashes) == len(vector["messages"])
    assert unsigned == {"A1": [], "A2": []}
    _check_pings(vector, pings, set().union(*(c.aged for c in connections.values())))
    _check_round_trips(vector, pings)
    _check_events(vector)


def _check_events(vector: dict[str, Any]) -> None:
    """What each party reported: each message once, in order; goodbyes with their reason."""
    frames, messages = vector["frames"], vector["messages"]
    got: dict[str, list[int]] = {"A1": [], "A2": []}
    for step in vector["steps"]:
        read = [frames[i] for i in step.get("frames", [])]
        for event in step["events"]:
            if event["event"] == "MessageReceived":
                got[step["party"]].append(event["seq"])
            elif event["event"] == "PeerClosed":
                assert any(f.get("record") == {"goodbye": event["reason"]} for f in read)
            elif event["event"] == "ReceiptReceived":
                assert any(
                    "receipt" in (f.get("record") or {})
                    and vector["receipts"][f["record"]["receipt"]]["kind"] == event["kind"]
                    and vector["receipts"][f["record"]["receipt"]]["upto"] == event["upto"]
                    for f in read
                )
    for party, seqs in got.items():
        sent = [m["seq"] for m in messages if m["from"] == _other(party)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert set(seqs) <= set(sent)


@needs_noise
@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
@pytest.mark.parametrize("name", NAMES)
def test_every_vector_replays_from_its_file_alone(name: str) -> None:
    replay(_published(name))


def _ping_read_at(vector: dict[str, Any], at: float) -> None:
    """Move the processing of A2's second ping (transcript frame 16) to ``at``."""
    frame = vector["frames"][16]
    assert frame["what"].startswith("ping [3, 2,")
    frame["received_at"] = at
    next(s for s in vector["steps"] if 16 in s.get("frames", []))["at"] = at


CHANGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    # Read later, so the hold A1 reports in its next ping no longer follows.
    "a receiver's clock": ("transcript", lambda v: _ping_read_at(v, 1.0390625)),
    "a sender's clock": ("transcript", lambda v: v["messages"][0].update(queued_at=0.25)),
    "a signer's clock": ("transcript", lambda v: v["receipts"][0].update(signed_at=0.25)),
    "a round trip": ("transcript", lambda v: next(
        e for s in v["steps"] for e in s["events"] if e["event"] == "RoundTrip"
    ).update(rtt=0.5)),
    "a padding length": ("transcript", lambda v: v["frames"][3].update(padding_length=1)),
    "a rekeyed key": ("rekey", lambda v: next(
        f for f in v["frames"] if "new_key" in f).update(new_key="00" * 32)),
    "the age limit of a key": ("rekey", lambda v: v["config"].update(rekey_after_seconds=2.0)),
    "an ephemeral key": ("crossing", lambda v: v["connections"][1]["ephemeral"]["A1"].update(
        private="11" * 32)),
    # A2's repeated delivered receipt, written on reading A1's retransmissions.
    "a repeated receipt left out": ("resume", lambda v: next(
        s for s in v["steps"] if s["do"] == "receive" and s["party"] == "A2" and s["writes"]
        and "(again)" in v["frames"][s["writes"][0]]["what"]
    )["writes"].clear()),
}


@needs_noise
@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_the_replay_notices_a_changed_input(change: str) -> None:
    name, alter = CHANGES[change]
    vector = _published(name)
    alter(vector)
    with pytest.raises(AssertionError):
        replay(vector)


# --------------------------------------------------------------------------- as an implementation
#
# README step 6: hotline's sans-io core, given only each step of a file (no generator), must
# write the listed frames and report the listed events.


def _reported(event: Any) -> dict[str, Any]:
    from hotline import (
        ConnectionBroken,
        MessageReceived,
        PeerAuthenticated,
        PeerClosed,
        ReceiptReceived,
        RoundTrip,
    )

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
    assert isinstance(event, ConnectionBroken), event
    return {"event": "ConnectionBroken", "reason": event.reason}


def _body(entry: dict[str, Any]) -> bytes:
    if "body_hex" in entry:
        return bytes.fromhex(entry["body_hex"])
    assert entry["body_pattern"] == "byte i is i % 251"
    return bytes(i % 251 for i in range(entry["body_length"]))


def play_steps(vector: dict[str, Any]) -> None:
    """Feed hotline every step of ``vector``; compare what it writes and reports."""
    from hotline import (
        Config,
        Connection,
        ConnectionBrokenError,
        ConnectionClosedError,
        Identity,
        LineState,
        MessageReceived,
        NeedData,
        PeerAuthenticated,
        ReceiptKind,
        ReceiptReceived,
        SignedMessage,
    )
    from hotline.protocol import cover_message, unsigned_message

    config = Config(**vector["config"])
    lid = bytes.fromhex(vector["line_id"])
    identities = {name: Identity.from_seed(bytes.fromhex(party["seed"]))
                  for name, party in vector["parties"].items()}
    states = {name: LineState() for name in identities}
    held: dict[str, list[SignedMessage]] = {name: [] for name in identities}
    conns: dict[tuple[str, str], Connection] = {}
    entries = {entry["name"]: entry for entry in vector["connections"]}
    frames = vector["frames"]

    def drain(party: str, conn: Connection, at: float, start: bool) -> list[Any]:
        events: list[Any] = []
        while True:
            try:
                event = conn.next_event()
            except (ConnectionClosedError, ConnectionBrokenError):
                return events
            if isinstance(event, NeedData):
                return events
            events.append(event)
            if isinstance(event, PeerAuthenticated) and start:
                conn.start(states[party], at)
                if event.initiation_timestamp is not None:
                    states[party].record_initiations(peers=event.initiation_timestamp)
            elif isinstance(event, MessageReceived):
                held[party].append(event.message)
            elif isinstance(event, ReceiptReceived):
                states[party].apply_peer_receipt(event.receipt)

    def receipt(party: str, conn: Connection, kind: ReceiptKind, upto: int, head: bytes,
                at: float) -> None:
        signed = states[party].sign_own_receipt(identities[party], lid, kind, upto, head,
                                                _wall(vector, at))
        conn.send_receipt(signed)

    for step in vector["steps"]:
        party, name, at, do = step["party"], step["connection"], step["at"], step["do"]
        me, peer, entry = identities[party], identities[_other(party)], entries[name]
        ephemeral = bytes.fromhex(entry["ephemeral"][party]["private"])
        state = states[party]
        events: list[Any] = []
        if do == "dial":
            conn = conns[party, name] = Connection.initiate(
                me, peer.public_key, now=at, timestamp=step["initiation_timestamp"],
                config=config, ephemeral=ephemeral)
            state.record_initiations(ours=step["initiation_timestamp"])
        elif do == "accept":
            conn = conns[party, name] = Connection.respond(
                me, [peer.public_key], now=at, config=config, ephemeral=ephemeral)
        else:
            conn = conns[party, name]
        if do == "receive":
            conn.receive_data(b"".join(bytes.fromhex(frames[i]["hex"]) for i in step["frames"]),
                              at)
            events = drain(party, conn, at, step["started"])
        elif do == "send":
            for index, seq in enumerate(step["seqs"]):
                message_entry = next(m for m in vector["messages"]
                                     if (m["from"], m["seq"]) == (party, seq))
                body = _body(message_entry)
                if step["burst"]:
                    message = unsigned_message(me.public_key, lid, state.sent_seq + 1,
                                               _wall(vector, at), state.sent_head, body)
                    if index == len(step["seqs"]) - 1:
                        message = cover_message(me, message)
                    state.append_sent(message)
                else:
                    message = state.next_message(me, lid, body, _wall(vector, at))
                conn.send_message(message)
        elif do == "delivered":
            for message in held[party]:
                state.record_received(message)
            last = held[party][-1]
            held[party].clear()
            assert last.seq == step["upto"]
            receipt(party, conn, ReceiptKind.DELIVERED, last.seq, last.hash, at)
        elif do == "acknowledged":
            assert state.delivered_receipt is not None
            assert state.delivered_upto == step["upto"]
            receipt(party, conn, ReceiptKind.ACKNOWLEDGED, state.delivered_upto,
                    state.delivered_receipt.head, at)
        elif do == "timer":
            assert conn.next_deadline() == at
            conn.advance(at)
            events = drain(party, conn, at, False)
        elif do == "close":
            conn.close(step["reason"])
        elif do == "end of stream":
            conn.receive_data(b"", at)
            events = drain(party, conn, at, False)
            held[party].clear()
        else:
            assert do in ("dial", "accept"), do
        written = conn.data_to_send()
        assert written.hex() == "".join(frames[i]["hex"] for i in step["writes"]), step
        assert [_reported(e) for e in events] == step["events"], step


@pytest.mark.parametrize("name", NAMES)
def test_hotline_plays_every_vector_from_its_steps(name: str) -> None:
    play_steps(_published(name))
