"""hotline's own published test vector, tests/vectors/transcript.json.

The implementation must reproduce the committed file byte for byte, the file must be
self-consistent (keys, line id, signatures, chain), and an independent Noise implementation
(the ``noiseprotocol`` package) given only the file's inputs must produce and read the same
frames.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest

from hotline import Identity, PublicKey, line_id, open_message, open_receipt
from hotline.protocol import decode_message, message_hash

try:
    from noise.connection import Keypair, NoiseConnection
except ImportError:  # pragma: no cover - noiseprotocol is a declared test dependency
    HAVE_NOISE = False
else:
    HAVE_NOISE = True

VECTORS = Path(__file__).resolve().parent / "vectors"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "hotline_make_transcript", VECTORS / "make_transcript.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _load_generator()


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "transcript.json").read_text(encoding="ascii"))
    return data


def test_implementation_reproduces_the_published_transcript(published: dict[str, Any]) -> None:
    fresh = make.make_transcript()
    # Point at the first difference before comparing the whole text.
    for key in published.keys() | fresh.keys():
        if key == "frames":
            continue
        assert fresh.get(key) == published.get(key), f"field {key!r} differs"
    assert len(fresh["frames"]) == len(published["frames"])
    for mine, theirs in zip(fresh["frames"], published["frames"], strict=True):
        assert mine == theirs, f"first differing frame: {theirs['what']!r}"
    assert make.render(fresh) == (VECTORS / "transcript.json").read_text(encoding="ascii")


def test_generation_is_deterministic() -> None:
    assert make.render(make.make_transcript()) == make.render(make.make_transcript())


def test_keys_and_line_id(published: dict[str, Any]) -> None:
    keys = {}
    for role in ("initiator", "responder"):
        party = published[role]
        identity = Identity.from_seed(bytes.fromhex(party["seed"]))
        public = identity.public_key
        assert public.raw.hex() == party["ed25519_public"]
        assert identity.x25519_private.hex() == party["x25519_private"]
        assert public.x25519.hex() == party["x25519_public"]
        assert public.fingerprint() == party["fingerprint"]
        keys[role] = public
    assert line_id(keys["initiator"], keys["responder"]).hex() == published["line_id"]
    # docs/protocol.md, section 2.5.
    assert published["line_id"] == (
        "39fac8ca8f166134d2f492747bea8f705b432a1ab892a7e4b02259b566ecdc50"
    )
    assert published["protocol_name"] == "Noise_IK_25519_ChaChaPoly_BLAKE2b"
    # docs/protocol.md, section 4.1: the label, then the responder's Ed25519 key.
    assert published["prologue_label"] == "hotline/3"
    assert bytes.fromhex(published["prologue_hex"]) == (
        b"hotline/3" + bytes.fromhex(published["responder"]["ed25519_public"])
    )


def _signers(published: dict[str, Any]) -> dict[str, PublicKey]:
    return {
        role: PublicKey(bytes.fromhex(published[role]["ed25519_public"]))
        for role in ("initiator", "responder")
    }


def test_messages_and_receipts_verify_and_chain(published: dict[str, Any]) -> None:
    signers = _signers(published)
    lid = bytes.fromhex(published["line_id"])
    heads: dict[str, list[bytes]] = {"initiator": [], "responder": []}
    # Per sender, the unsigned messages a later signature must cover (section 7, bursts).
    uncovered: dict[str, list[int]] = {"initiator": [], "responder": []}
    for entry in published["messages"]:
        envelope = bytes.fromhex(entry["envelope"])
        signature = bytes.fromhex(entry["signature"])
        if signature:
            message = open_message(envelope, signature, sender=signers[entry["from"]],
                                   line_id=lid,
                                   max_body_size=published["config"]["max_body_size"])
            uncovered[entry["from"]].clear()
        else:
            message = decode_message(envelope, b"", sender=signers[entry["from"]], line_id=lid,
                                     max_body_size=published["config"]["max_body_size"])
            uncovered[entry["from"]].append(message.seq)
        chain = heads[entry["from"]]
        assert message.seq == entry["seq"] == len(chain) + 1
        assert message.prev == (chain[-1] if chain else bytes(32))
        assert message.prev.hex() == entry["prev"]
        assert message.timestamp == entry["timestamp"]
        assert message_hash(envelope).hex() == entry["hash"] == message.hash.hex()
        assert len(message.body) == entry["body_length"]
        if "body_hex" in entry:
            assert message.body.hex() == entry["body_hex"]
        else:
            assert message.body == make.big_body()
            assert hashlib.sha256(message.body).hexdigest() == entry["body_sha256"]
        chain.append(message.hash)
    assert [len(heads["initiator"]), len(heads["responder"])] == [3, 3]
    assert uncovered == {"initiator": [], "responder": []}
    # The published burst: A2's messages 1 and 2 travel unsigned, its message 3 covers them.
    assert [bool(e["signature"]) for e in published["messages"] if e["from"] == "responder"] == [
        False, False, True
    ]
    kinds = []
    for entry in published["receipts"]:
        receipt = open_receipt(bytes.fromhex(entry["envelope"]),
                               bytes.fromhex(entry["signature"]),
                               signer=signers[entry["from"]], line_id=lid)
        other = "responder" if entry["from"] == "initiator" else "initiator"
        assert receipt.kind.value == entry["kind"]
        assert receipt.upto == entry["upto"]
        assert receipt.head == heads[other][receipt.upto - 1]
        assert receipt.head.hex() == entry["head"]
        assert receipt.timestamp == entry["timestamp"]
        kinds.append(entry["kind"])
    assert set(kinds) == {"delivered", "acknowledged"}


# --------------------------------------------------------------------------- independent Noise


def _noise(published: dict[str, Any], role: str) -> Any:
    me = published[role]
    conn = NoiseConnection.from_name(published["protocol_name"].encode())
    if role == "initiator":
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(bytes.fromhex(published["prologue_hex"]))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes.fromhex(me["x25519_private"]))
    conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, bytes.fromhex(me["ephemeral_private"]))
    if role == "initiator":
        conn.set_keypair_from_public_bytes(
            Keypair.REMOTE_STATIC, bytes.fromhex(published["responder"]["x25519_public"])
        )
    conn.start_handshake()
    return conn


def _label_record(what: str) -> list[Any] | None:
    """The record a ping or goodbye label spells out, e.g. "ping [3, 2, 1, 968750, 1000000]"."""
    match = re.fullmatch(r"(?:ping|goodbye) \[(\d), (.+)\]", what)
    if match is None:
        return None
    rest = [int(v) if v.isdigit() else v.strip("'") for v in match.group(2).split(", ")]
    return [int(match.group(1)), *rest]


@pytest.mark.skipif(not HAVE_NOISE, reason="noiseprotocol is not installed")
@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_an_independent_noise_implementation_writes_and_reads_every_frame(
    published: dict[str, Any],
) -> None:
    frames = published["frames"]
    padding = published["config"]["padding"]
    noise = {role: _noise(published, role) for role in ("initiator", "responder")}
    raw = [bytes.fromhex(frame["hex"]) for frame in frames]
    for data in raw:
        assert int.from_bytes(data[:2], "big") == len(data) - 2

    # Handshake: message 1 carries the msgpack array [initiation timestamp, initiator's
    # Ed25519 key], message 2 nothing.
    payload = msgpack.packb([published["initiation_timestamp"],
                             bytes.fromhex(published["initiator"]["ed25519_public"])])
    assert frames[0]["from"] == "initiator"
    assert noise["initiator"].write_message(payload) == raw[0][2:]
    assert noise["responder"].read_message(raw[0][2:]) == payload
    assert frames[1]["from"] == "responder"
    assert noise["responder"].write_message(b"") == raw[1][2:]
    assert noise["initiator"].read_message(raw[1][2:]) == b""
    for conn in noise.values():
        assert conn.handshake_finished
        assert conn.get_handshake_hash().hex() == published["handshake_hash"]

    # Transport: re-encrypt each plaintext with the sender's state, and check its layout.
    messages = iter(published["messages"])
    receipts = iter(published["receipts"])
    partial = {"initiator": b"", "responder": b""}
    for frame, data in zip(frames[2:], raw[2:], strict=True):
        sender = frame["from"]
        receiver = "responder" if sender == "initiator" else "initiator"
        plaintext = noise[receiver].decrypt(data[2:])
        assert noise[sender].encrypt(plaintext) == data[2:]
        flags, length = plaintext[0], int.from_bytes(plaintext[1:3], "big")
        assert flags in (0, 1), frame["what"]  # FINAL or not; no rekey in this transcript.
        content, pad = plaintext[3 : 3 + length], plaintext[3 + length :]
        assert pad == bytes(len(pad))
        assert len(plaintext) % padding == 0 or len(plaintext) == 65535 - 16
        partial[sender] += content
        if not flags:
            assert "part 1 of 2" in frame["what"]
            continue
        record = msgpack.unpackb(partial[sender], raw=False)
        partial[sender] = b""
        what = frame["what"]
        if what.startswith("message"):
            entry = next(messages)
            assert entry["from"] == sender
            assert record == [1, bytes.fromhex(entry["envelope"]),
                              bytes.fromhex(entry["signature"])]
        elif "receipt" in what:
            entry = next(receipts)
            assert entry["from"] == sender
            assert entry["kind"] in what
            assert record == [2, bytes.fromhex(entry["envelope"]),
                              bytes.fromhex(entry["signature"])]
        else:
            assert record == _label_record(what), what
    assert next(messages, None) is None
    assert next(receipts, None) is None
    assert frames[-1]["what"].startswith("goodbye")
