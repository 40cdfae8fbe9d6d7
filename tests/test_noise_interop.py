"""hotline.protocol._noise against an independent implementation (``noiseprotocol``), plus
the error contract: tampering, wrong keys, poisoning, misuse, rekey and nonce reservation;
and hotline's own handshake (prologue and payload built from docs/protocol.md alone) against
``noiseprotocol`` in both roles.

The tests that need ``noiseprotocol`` skip without it; the rest always run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hotline import (
    AuthenticationError,
    Connection,
    Identity,
    LineState,
    LocalProtocolError,
    PeerAuthenticated,
)
from hotline.protocol._noise import (
    MAX_MESSAGE_LEN,
    CipherState,
    HandshakeState,
    parse_protocol_name,
)

try:
    from noise.connection import Keypair, NoiseConnection
except ImportError:  # pragma: no cover - noiseprotocol is a declared test dependency
    HAVE_NOISE = False
else:
    HAVE_NOISE = True

needs_noise = pytest.mark.skipif(not HAVE_NOISE, reason="noiseprotocol is not installed")

IK = "Noise_IK_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"hotline interop"
MAX_NONCE = 2**64 - 1


class Party:
    """One side's keys: static private key and its public half."""

    def __init__(self) -> None:
        key = X25519PrivateKey.generate()
        self.private = key.private_bytes_raw()
        self.public = key.public_key().public_bytes_raw()


def _random_public() -> bytes:
    return Party().public


def _needs(name: str) -> tuple[bool, bool, bool, bool]:
    """(initiator needs s, initiator needs rs, responder needs s, responder needs rs)."""
    pattern = parse_protocol_name(name)[0]
    first, second = pattern[0], pattern[1] if len(pattern) > 1 else "K"
    init_s = first in "KXI"
    resp_s = second in "KX"
    return init_s, second == "K", resp_s, first == "K"


def hotline_side(
    name: str, *, initiator: bool, me: Party, peer: Party, rs: bytes | None = None
) -> HandshakeState:
    init_s, init_rs, resp_s, resp_rs = _needs(name)
    needs_s, needs_rs = (init_s, init_rs) if initiator else (resp_s, resp_rs)
    return HandshakeState(
        name,
        initiator=initiator,
        prologue=PROLOGUE,
        s=me.private if needs_s else None,
        rs=(rs or peer.public) if needs_rs else None,
    )


def noise_side(
    name: str, *, initiator: bool, me: Party, peer: Party, rs: bytes | None = None
) -> NoiseConnection:
    init_s, init_rs, resp_s, resp_rs = _needs(name)
    needs_s, needs_rs = (init_s, init_rs) if initiator else (resp_s, resp_rs)
    conn = NoiseConnection.from_name(name.encode())
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    if needs_s:
        conn.set_keypair_from_private_bytes(Keypair.STATIC, me.private)
    if needs_rs:
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, rs or peer.public)
    conn.start_handshake()
    return conn


def run_handshake(
    name: str, hotline_initiates: bool
) -> tuple[HandshakeState, NoiseConnection, Party, Party]:
    """Full handshake hotline <-> noiseprotocol, checking every payload on the way."""
    alice, bob = Party(), Party()
    ours = hotline_side(name, initiator=hotline_initiates, me=alice, peer=bob)
    theirs = noise_side(name, initiator=not hotline_initiates, me=bob, peer=alice)
    turn_ours = hotline_initiates
    i = 0
    while not ours.complete:
        payload = os.urandom(i * 7)
        if turn_ours:
            assert bytes(theirs.read_message(ours.write_message(payload))) == payload
        else:
            assert ours.read_message(bytes(theirs.write_message(payload))) == payload
        turn_ours = not turn_ours
        i += 1
    assert theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    return ours, theirs, alice, bob


INTEROP = [
    IK,
    "Noise_XX_25519_ChaChaPoly_BLAKE2b",
    "Noise_KK_25519_ChaChaPoly_BLAKE2b",
    "Noise_IK_25519_ChaChaPoly_SHA256",
    "Noise_XX_25519_AESGCM_SHA512",
    "Noise_NK_25519_AESGCM_BLAKE2s",
]


@needs_noise
@pytest.mark.parametrize("hotline_initiates", [True, False], ids=["hotline-init", "hotline-resp"])
@pytest.mark.parametrize("name", INTEROP)
def test_handshake_and_transport(name: str, hotline_initiates: bool) -> None:
    ours, theirs, _, bob = run_handshake(name, hotline_initiates)
    pattern = parse_protocol_name(name)[0]
    # The peer's static key is known afterwards whenever its letter is K, X or I.
    if pattern[1 if hotline_initiates else 0] in "KXI":
        assert ours.remote_static == bob.public
    send, recv = ours.split()
    for size in (0, 1, 100, 5000, MAX_MESSAGE_LEN - 16):
        payload = os.urandom(size)
        assert theirs.decrypt(send.encrypt_with_ad(b"", payload)) == payload
        assert recv.decrypt_with_ad(b"", theirs.encrypt(payload)) == payload
    assert send.nonce == recv.nonce == 5


# -- hotline's handshake: the prologue and payload of docs/protocol.md section 4 --------------

ALICE_ID = Identity.from_seed(bytes([0x51]) * 32)
BOB_ID = Identity.from_seed(bytes([0x52]) * 32)


def _spec_prologue(responder: Identity) -> bytes:
    """Section 4.1, written from the text: the label, then the responder's Ed25519 key."""
    return b"hotline/3" + responder.public_key.raw


def _spec_side(me: Identity, *, initiator: bool, peer: Identity, prologue: bytes) -> Any:
    conn = NoiseConnection.from_name(b"Noise_IK_25519_ChaChaPoly_BLAKE2b")
    if initiator:
        conn.set_as_initiator()
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, peer.public_key.x25519)
    else:
        conn.set_as_responder()
    conn.set_prologue(prologue)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, me.x25519_private)
    conn.start_handshake()
    return conn


def _framed(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


@needs_noise
def test_noiseprotocol_calls_a_hotline_responder() -> None:
    theirs = _spec_side(ALICE_ID, initiator=True, peer=BOB_ID, prologue=_spec_prologue(BOB_ID))
    ours = Connection.respond(BOB_ID, [ALICE_ID.public_key], now=0.0)
    payload = msgpack.packb([1_700_000_000_000_000_000, ALICE_ID.public_key.raw])
    ours.receive_data(_framed(bytes(theirs.write_message(payload))), 0.0)
    event = ours.next_event()
    assert isinstance(event, PeerAuthenticated)
    assert event.peer == ALICE_ID.public_key
    ours.start(LineState(), 0.0)
    wire = ours.data_to_send()
    length = int.from_bytes(wire[:2], "big")
    assert theirs.read_message(wire[2 : 2 + length]) == b""
    assert theirs.handshake_finished
    assert theirs.get_handshake_hash() == ours.handshake_hash
    # The responder's opening ping follows message 2 and decrypts under the split keys.
    rest = wire[2 + length :]
    plaintext = theirs.decrypt(rest[2 : 2 + int.from_bytes(rest[:2], "big")])
    assert plaintext[0] == 0x01  # FINAL: one whole record.


@needs_noise
def test_a_hotline_initiator_calls_noiseprotocol() -> None:
    ours = Connection.initiate(ALICE_ID, BOB_ID.public_key, now=0.0, timestamp=42)
    theirs = _spec_side(BOB_ID, initiator=False, peer=ALICE_ID, prologue=_spec_prologue(BOB_ID))
    assert theirs.read_message(ours.data_to_send()[2:]) == msgpack.packb(
        [42, ALICE_ID.public_key.raw]
    )
    ours.receive_data(_framed(bytes(theirs.write_message(b""))), 0.0)
    event = ours.next_event()
    assert isinstance(event, PeerAuthenticated)
    assert theirs.get_handshake_hash() == ours.handshake_hash


@needs_noise
@pytest.mark.parametrize("wrong", ["version 1 prologue", "version 2 prologue",
                                   "negated responder key",
                                   "negated initiator key"])
def test_a_hotline_responder_refuses_what_binds_other_keys(wrong: str) -> None:
    raw = bytearray(BOB_ID.public_key.raw if wrong != "negated initiator key"
                    else ALICE_ID.public_key.raw)
    raw[31] ^= 0x80  # The point -A: the same X25519 key.
    prologue = {
        "version 1 prologue": b"hotline/1",
        # Version 2 receivers refuse the empty signatures of a burst: no handshake across.
        "version 2 prologue": b"hotline/2" + BOB_ID.public_key.raw,
        "negated responder key": b"hotline/3" + bytes(raw),
        "negated initiator key": _spec_prologue(BOB_ID),
    }[wrong]
    claimed = bytes(raw) if wrong == "negated initiator key" else ALICE_ID.public_key.raw
    theirs = _spec_side(ALICE_ID, initiator=True, peer=BOB_ID, prologue=prologue)
    ours = Connection.respond(BOB_ID, [ALICE_ID.public_key], now=0.0)
    ours.receive_data(_framed(bytes(theirs.write_message(msgpack.packb([1, claimed])))), 0.0)
    with pytest.raises(AuthenticationError):
        ours.next_event()
    assert ours.data_to_send() == b""


@needs_noise
@pytest.mark.parametrize("hotline_initiates", [True, False], ids=["hotline-init", "hotline-resp"])
def test_rekey_stays_in_sync(hotline_initiates: bool) -> None:
    ours, theirs, _, _ = run_handshake(IK, hotline_initiates)
    send, recv = ours.split()
    for i in range(100):
        send.rekey()
        theirs.rekey_inbound_cipher()
        theirs.rekey_outbound_cipher()
        recv.rekey()
        assert send.nonce == recv.nonce == i  # rekey leaves n alone (section 11.3)
        out, back = f"out {i}".encode(), f"back {i}".encode()
        assert theirs.decrypt(send.encrypt_with_ad(b"", out)) == out
        assert recv.decrypt_with_ad(b"", theirs.encrypt(back)) == back


def _hotline_pair(name: str = IK) -> tuple[HandshakeState, HandshakeState, Party, Party]:
    alice, bob = Party(), Party()
    init = hotline_side(name, initiator=True, me=alice, peer=bob)
    resp = hotline_side(name, initiator=False, me=bob, peer=alice)
    return init, resp, alice, bob


def _assert_poisoned(hs: HandshakeState) -> None:
    assert not hs.complete
    with pytest.raises(LocalProtocolError):
        hs.write_message(b"")
    with pytest.raises(LocalProtocolError):
        hs.read_message(b"\x00" * 200)
    with pytest.raises(LocalProtocolError):
        hs.split()
    with pytest.raises(LocalProtocolError):
        _ = hs.handshake_hash
    with pytest.raises(LocalProtocolError):
        _ = hs.remote_static


def _flips(message: bytes) -> Iterator[bytes]:
    for pos in range(len(message)):
        for mask in (0x01, 0x80):
            tampered = bytearray(message)
            tampered[pos] ^= mask
            yield bytes(tampered)


@needs_noise
def test_every_flipped_bit_of_message_1_is_rejected() -> None:
    # 0x80 in the last byte of an X25519 key is ignored by the DH itself (RFC 7748 masks
    # it), so this also checks that the key is hashed as received.
    alice, bob = Party(), Party()
    message = bytes(noise_side(IK, initiator=True, me=alice, peer=bob).write_message(b"hello bob"))
    assert len(message) == 32 + 48 + 9 + 16
    rejected = 0
    for tampered in _flips(message):
        resp = hotline_side(IK, initiator=False, me=bob, peer=alice)
        with pytest.raises(AuthenticationError) as info:
            resp.read_message(tampered)
        assert str(info.value) == str(AuthenticationError())
        _assert_poisoned(resp)
        rejected += 1
    assert rejected == 2 * len(message)
    # And the untouched message is fine, so the rejections above are about the tampering.
    assert hotline_side(IK, initiator=False, me=bob, peer=alice).read_message(message) == (
        b"hello bob"
    )


def test_flipped_bits_of_message_2_are_rejected_by_the_initiator() -> None:
    # Fixed ephemerals make every rebuilt initiator expect exactly the same message 2.
    alice, bob = Party(), Party()
    e_init, e_resp = Party().private, Party().private

    def side(initiator: bool) -> HandshakeState:
        return HandshakeState(
            IK,
            initiator=initiator,
            prologue=PROLOGUE,
            s=alice.private if initiator else bob.private,
            e=e_init if initiator else e_resp,
            rs=bob.public if initiator else None,
        )

    init, resp = side(True), side(False)
    resp.read_message(init.write_message(b""))
    message = resp.write_message(b"payload")
    for tampered in _flips(message):
        fresh = side(True)
        fresh.write_message(b"")
        with pytest.raises(AuthenticationError):
            fresh.read_message(tampered)
        _assert_poisoned(fresh)
    assert init.read_message(message) == b"payload"


@pytest.mark.parametrize("how", ["truncated", "empty", "extended", "oversized"])
def test_malformed_lengths_are_rejected(how: str) -> None:
    init, resp, _, _ = _hotline_pair()
    message = init.write_message(b"x")
    bad = {
        "truncated": message[:-1],
        "empty": b"",
        "extended": message + b"\x00",
        "oversized": message + bytes(MAX_MESSAGE_LEN),
    }[how]
    with pytest.raises(AuthenticationError):
        resp.read_message(bad)
    _assert_poisoned(resp)


@needs_noise
def test_wrong_responder_key_fails_on_responder() -> None:
    alice, bob = Party(), Party()
    wrong = _random_public()
    message = bytes(
        noise_side(IK, initiator=True, me=alice, peer=bob, rs=wrong).write_message(b"hi")
    )
    resp = hotline_side(IK, initiator=False, me=bob, peer=alice)
    with pytest.raises(AuthenticationError):
        resp.read_message(message)
    _assert_poisoned(resp)


def test_wrong_responder_key_fails_on_responder_hotline_only() -> None:
    alice, bob = Party(), Party()
    init = hotline_side(IK, initiator=True, me=alice, peer=bob, rs=_random_public())
    resp = hotline_side(IK, initiator=False, me=bob, peer=alice)
    with pytest.raises(AuthenticationError):
        resp.read_message(init.write_message(b""))
    _assert_poisoned(resp)


def test_kk_responder_with_wrong_initiator_key_fails() -> None:
    name = "Noise_KK_25519_ChaChaPoly_BLAKE2b"
    alice, bob = Party(), Party()
    init = hotline_side(name, initiator=True, me=alice, peer=bob)
    resp = hotline_side(name, initiator=False, me=bob, peer=alice, rs=_random_public())
    with pytest.raises(AuthenticationError):
        resp.read_message(init.write_message(b""))


@pytest.mark.parametrize(
    "bad_point",
    [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
    ids=["zero", "one", "order8"],
)
def test_low_order_ephemeral_is_rejected(bad_point: bytes) -> None:
    init, resp, _, _ = _hotline_pair()
    message = bytearray(init.write_message(b""))
    message[:32] = bad_point
    with pytest.raises(AuthenticationError):
        resp.read_message(bytes(message))
    _assert_poisoned(resp)


def test_low_order_ephemeral_detected_when_writing() -> None:
    # In XX the responder's first DH with the initiator's ephemeral happens while *writing*.
    name = "Noise_XX_25519_ChaChaPoly_SHA256"
    alice, bob = Party(), Party()
    resp = hotline_side(name, initiator=False, me=bob, peer=alice)
    assert resp.read_message(bytes(32)) == b""
    with pytest.raises(AuthenticationError):
        resp.write_message(b"")
    _assert_poisoned(resp)


# -- misuse --------------------------------------------------------------------------------


def test_turn_order_and_split_misuse() -> None:
    init, resp, _, _ = _hotline_pair()
    with pytest.raises(LocalProtocolError):
        init.read_message(b"")
    with pytest.raises(LocalProtocolError):
        resp.write_message(b"")
    with pytest.raises(LocalProtocolError):
        init.split()
    msg1 = init.write_message(b"")
    with pytest.raises(LocalProtocolError):
        init.write_message(b"")
    resp.read_message(msg1)
    init.read_message(resp.write_message(b""))
    assert init.complete
    assert resp.complete
    with pytest.raises(LocalProtocolError):
        init.write_message(b"")
    with pytest.raises(LocalProtocolError):
        resp.read_message(b"")
    init_send, init_recv = init.split()
    resp_send, resp_recv = resp.split()
    with pytest.raises(LocalProtocolError):
        init.split()  # a second pair of identical keys would invite nonce reuse
    assert init.handshake_hash == resp.handshake_hash  # still available for channel binding
    assert resp_recv.decrypt_with_ad(b"", init_send.encrypt_with_ad(b"", b"a")) == b"a"
    assert init_recv.decrypt_with_ad(b"", resp_send.encrypt_with_ad(b"", b"b")) == b"b"


def test_oversized_handshake_payload_is_refused_before_any_state_change() -> None:
    init, resp, _, _ = _hotline_pair()
    overhead = 32 + 48 + 16  # e, encrypted s, payload tag
    with pytest.raises(LocalProtocolError):
        init.write_message(bytes(MAX_MESSAGE_LEN - overhead + 1))
    message = init.write_message(bytes(MAX_MESSAGE_LEN - overhead))
    assert len(message) == MAX_MESSAGE_LEN
    assert resp.read_message(message) == bytes(MAX_MESSAGE_LEN - overhead)


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
        "Noise_XXfallback_25519_ChaChaPoly_BLAKE2b",
        "Noise_X1K1_25519_ChaChaPoly_BLAKE2b",
        "Noise_IK_448_ChaChaPoly_BLAKE2b",
        "Noise_IK_25519_AES256_BLAKE2b",
        "Noise_IK_25519_ChaChaPoly_SHA3",
        "Noise_IK_25519_ChaChaPoly",
        "Nois_IK_25519_ChaChaPoly_BLAKE2b",
        "",
    ],
)
def test_unsupported_names(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        parse_protocol_name(name)
    with pytest.raises(LocalProtocolError):
        HandshakeState(name, initiator=True)


def test_parse_protocol_name() -> None:
    assert parse_protocol_name(IK) == ("IK", "25519", "ChaChaPoly", "BLAKE2b")


def test_missing_and_superfluous_keys() -> None:
    alice, bob = Party(), Party()
    with pytest.raises(LocalProtocolError, match="rs"):
        HandshakeState(IK, initiator=True, s=alice.private)
    with pytest.raises(LocalProtocolError, match="static"):
        HandshakeState(IK, initiator=True, rs=bob.public)
    with pytest.raises(LocalProtocolError):
        HandshakeState(IK, initiator=False)
    with pytest.raises(LocalProtocolError):  # XX transmits rs; a preset one would be replaced
        HandshakeState(
            "Noise_XX_25519_ChaChaPoly_BLAKE2b", initiator=True, s=alice.private, rs=bob.public
        )
    with pytest.raises(LocalProtocolError):
        HandshakeState("Noise_NN_25519_ChaChaPoly_BLAKE2b", initiator=True, s=alice.private)
    with pytest.raises(LocalProtocolError):
        HandshakeState(IK, initiator=True, s=alice.private[:31], rs=bob.public)
    with pytest.raises(LocalProtocolError):
        HandshakeState(IK, initiator=True, s=alice.private, rs=bob.public, re=bob.public)


def test_reprs_reveal_no_secrets() -> None:
    init, resp, alice, _ = _hotline_pair()
    resp.read_message(init.write_message(b""))
    init.read_message(resp.write_message(b""))
    key = os.urandom(32)
    cs = CipherState("ChaChaPoly", key)
    texts = [repr(init), repr(resp), repr(cs), *map(repr, init.split())]
    for text in texts:
        for secret in (alice.private, key, init.handshake_hash):
            assert secret.hex() not in text
            assert repr(secret) not in text


def test_one_way_pattern_has_no_return_channel() -> None:
    name = "Noise_X_25519_ChaChaPoly_BLAKE2b"
    alice, bob = Party(), Party()
    init = hotline_side(name, initiator=True, me=alice, peer=bob)
    resp = hotline_side(name, initiator=False, me=bob, peer=alice)
    assert resp.read_message(init.write_message(b"file header")) == b"file header"
    assert resp.remote_static == alice.public
    init_send, init_recv = init.split()
    resp_send, resp_recv = resp.split()
    assert resp_recv.decrypt_with_ad(b"", init_send.encrypt_with_ad(b"", b"x")) == b"x"
    with pytest.raises(LocalProtocolError):
        resp_send.encrypt_with_ad(b"", b"reply")
    with pytest.raises(LocalProtocolError):
        init_recv.decrypt_with_ad(b"", bytes(17))


# -- CipherState -----------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_nonce_reservation(cipher: str) -> None:
    key = os.urandom(32)
    sender, receiver = CipherState(cipher, key), CipherState(cipher, key)
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"ad", sender.encrypt_with_ad(b"ad", b"last")) == b"last"
    assert sender.nonce == receiver.nonce == MAX_NONCE
    with pytest.raises(LocalProtocolError):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(LocalProtocolError):
        receiver.decrypt_with_ad(b"", bytes(32))
    fresh = CipherState(cipher, key)
    fresh.set_nonce(MAX_NONCE)
    with pytest.raises(LocalProtocolError):
        fresh.encrypt_with_ad(b"", b"")
    for bad in (-1, 2**64):
        with pytest.raises(LocalProtocolError):
            fresh.set_nonce(bad)


@needs_noise
def test_nonce_encoding_matches_noiseprotocol_near_the_limit() -> None:
    ours, theirs, _, _ = run_handshake(IK, True)
    send, _ = ours.split()
    send.set_nonce(MAX_NONCE - 1)
    theirs.noise_protocol.cipher_state_decrypt.set_nonce(MAX_NONCE - 1)
    assert theirs.decrypt(send.encrypt_with_ad(b"", b"edge")) == b"edge"


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_failed_decrypt_does_not_advance_nonce(cipher: str) -> None:
    key = os.urandom(32)
    sender, receiver = CipherState(cipher, key), CipherState(cipher, key)
    ciphertext = sender.encrypt_with_ad(b"", b"payload")
    forged = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    for bad in (forged, b"", ciphertext[:15], bytes(MAX_MESSAGE_LEN + 1)):
        with pytest.raises(AuthenticationError):
            receiver.decrypt_with_ad(b"", bad)
        assert receiver.nonce == 0
    with pytest.raises(AuthenticationError):
        receiver.decrypt_with_ad(b"other ad", ciphertext)
    assert receiver.decrypt_with_ad(b"", ciphertext) == b"payload"
    assert receiver.nonce == 1


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_hotline_rekey_in_both_directions(cipher: str) -> None:
    key_a, key_b = os.urandom(32), os.urandom(32)
    a_send, b_recv = CipherState(cipher, key_a), CipherState(cipher, key_a)
    b_send, a_recv = CipherState(cipher, key_b), CipherState(cipher, key_b)
    first = a_send.encrypt_with_ad(b"", b"m")
    assert b_recv.decrypt_with_ad(b"", first) == b"m"
    for _ in range(100):
        for s, r in ((a_send, b_recv), (b_send, a_recv)):
            s.rekey()
            r.rekey()
            assert r.decrypt_with_ad(b"", s.encrypt_with_ad(b"", b"m")) == b"m"
    # Keys really changed: the same nonce under the original key gives another ciphertext.
    probe = CipherState(cipher, key_a)
    probe.set_nonce(a_send.nonce)
    assert probe.encrypt_with_ad(b"", b"m") != a_send.encrypt_with_ad(b"", b"m")


def test_cipherstate_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        CipherState("AES256")
    with pytest.raises(LocalProtocolError):
        CipherState("ChaChaPoly", bytes(31))
    empty = CipherState("ChaChaPoly")
    assert not empty.has_key()
    assert empty.encrypt_with_ad(b"", b"clear") == b"clear"  # section 5.1, used by handshakes
    with pytest.raises(LocalProtocolError):
        empty.rekey()
    full = CipherState("ChaChaPoly", bytes(32))
    with pytest.raises(LocalProtocolError):
        full.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 15))
    assert len(full.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 16))) == MAX_MESSAGE_LEN
