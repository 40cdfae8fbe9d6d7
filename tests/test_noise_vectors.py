"""Conformance of hotline.protocol._noise against the public cacophony and snow test vectors.

The vector files live beside the project (``../shared/noise-vectors/``), are never copied
into it, and the whole module skips when they are absent.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hotline import LocalProtocolError
from hotline.protocol._noise import HandshakeState, parse_protocol_name

VECTOR_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "noise-vectors"
VECTOR_FILES = ("cacophony.txt", "snow.txt")

if not VECTOR_DIR.is_dir():
    pytest.skip(f"Noise test vectors not found at {VECTOR_DIR}", allow_module_level=True)
_missing = [f for f in VECTOR_FILES if not (VECTOR_DIR / f).is_file()]
if _missing:
    pytest.skip(
        f"Noise test vector files missing from {VECTOR_DIR}: {', '.join(_missing)}",
        allow_module_level=True,
    )

Vector = dict[str, Any]


def _protocol_name(vector: Vector) -> str:
    name = vector.get("protocol_name", vector.get("name"))
    assert isinstance(name, str)
    return name


def _supported(name: str) -> bool:
    try:
        parse_protocol_name(name)
    except LocalProtocolError:
        return False
    return True


def _load() -> tuple[list[Any], Counter[str]]:
    """Every supported vector as a param whose id ends in ``<ordinal>of<total>`` per file."""
    params: list[Any] = []
    totals: Counter[str] = Counter()
    for file_name in VECTOR_FILES:
        vectors = json.loads((VECTOR_DIR / file_name).read_text())["vectors"]
        source = file_name.removesuffix(".txt")
        runnable = [v for v in vectors if _supported(_protocol_name(v))]
        totals[source] = len(runnable)
        for ordinal, vector in enumerate(runnable, start=1):
            name = _protocol_name(vector)
            totals[f"{source}:{name}"] += 1
            params.append(pytest.param(vector, id=f"{source}-{name}-{ordinal}of{len(runnable)}"))
    return params, totals


VECTORS, RUN_COUNTS = _load()


def _key(vector: Vector, field: str) -> bytes | None:
    value = vector.get(field)
    return None if value is None else bytes.fromhex(value)


def _handshake_state(vector: Vector, side: str) -> HandshakeState:
    return HandshakeState(
        _protocol_name(vector),
        initiator=side == "init",
        prologue=bytes.fromhex(vector.get(f"{side}_prologue", "")),
        s=_key(vector, f"{side}_static"),
        e=_key(vector, f"{side}_ephemeral"),
        rs=_key(vector, f"{side}_remote_static"),
    )


@pytest.mark.parametrize("vector", VECTORS)
def test_vector(vector: Vector) -> None:
    name = _protocol_name(vector)
    one_way = len(parse_protocol_name(name)[0]) == 1
    # Vectors carry fixed ephemerals for both sides; a side that never sends one (the
    # recipient of a one-way pattern) ignores it.
    init = _handshake_state(vector, "init")
    resp = _handshake_state(vector, "resp")
    messages = vector["messages"]

    i = 0
    while not init.complete:
        assert not resp.complete
        assert i < len(messages), "vector ran out of messages before the handshake completed"
        writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
        payload = bytes.fromhex(messages[i]["payload"])
        ciphertext = writer.write_message(payload)
        assert ciphertext.hex() == messages[i]["ciphertext"], f"handshake message {i}"
        assert reader.read_message(ciphertext) == payload
        i += 1
    assert resp.complete
    assert init.handshake_hash == resp.handshake_hash
    if "handshake_hash" in vector:
        assert init.handshake_hash.hex() == vector["handshake_hash"]

    init_send, init_recv = init.split()
    resp_send, resp_recv = resp.split()
    transport = messages[i:]
    assert transport, "vector has no transport messages"
    for j, message in enumerate(transport, start=i):
        from_initiator = one_way or j % 2 == 0
        send, recv = (init_send, resp_recv) if from_initiator else (resp_send, init_recv)
        payload = bytes.fromhex(message["payload"])
        ciphertext = send.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == message["ciphertext"], f"transport message {j}"
        assert recv.decrypt_with_ad(b"", ciphertext) == payload


REQUIRED_FAMILIES = [
    f"Noise_{pattern}_25519_ChaChaPoly_{hash_name}"
    for pattern in ("IK", "KK", "XX")
    for hash_name in ("BLAKE2b", "SHA256")
]


def _coverage_id(name: str) -> str:
    counts = "-".join(f"{s}{RUN_COUNTS[f'{s}:{name}']}" for s in ("cacophony", "snow"))
    return f"{name}-{counts}"


@pytest.mark.parametrize("name", REQUIRED_FAMILIES, ids=_coverage_id)
def test_required_protocols_are_covered(name: str) -> None:
    """A filter that silently drops everything must fail, not pass vacuously."""
    for source in ("cacophony", "snow"):
        assert RUN_COUNTS[f"{source}:{name}"] > 0, f"no {source} vectors run for {name}"


@pytest.mark.parametrize(
    "source", ["cacophony", "snow"], ids=lambda s: f"{s}-{RUN_COUNTS[s]}vectors"
)
def test_vectors_were_run(source: str) -> None:
    # Every fundamental and one-way pattern x 25519 x both ciphers x four hashes = 120.
    assert RUN_COUNTS[source] >= 120
