"""A generic implementation of the Noise Protocol Framework, revision 34.

Theory of operation
-------------------
This module is a direct transcription of the processing rules of the Noise specification
(revision 34, 2018-07-11): :class:`CipherState` is section 5.1, the private
:class:`_SymmetricState` is section 5.2 and :class:`HandshakeState` is section 5.3. The
handshake patterns are a table (:data:`_PATTERNS`) copied from sections 7.4 and 7.5, and the
crypto functions are those of section 12: DH ``25519``, ciphers ``ChaChaPoly`` and ``AESGCM``,
hashes ``BLAKE2b``, ``BLAKE2s``, ``SHA256`` and ``SHA512``, with HMAC/HKDF as in section 4.3.
``CipherState.rekey`` is the default ``REKEY()`` of sections 4.2 and 11.3.

It is pure computation: no I/O, no clock, no randomness except :func:`os.urandom` for
ephemeral keys that the caller did not fix.

Deliberately left out: the ``448`` DH functions, pre-shared keys (``psk`` modifiers, section
9), compound protocols (``fallback``, section 10), the deferred patterns (section 7.6 and
18.1), pre-message ephemerals and half-duplex mode. Names asking for any of them are refused
with :class:`~hotline._errors.LocalProtocolError` rather than half supported.

Error policy. Misuse by the caller raises :class:`~hotline._errors.LocalProtocolError`.
Anything that goes wrong because of bytes that came from the peer (a short or oversized
handshake message, an AEAD failure, an invalid or low-order public key) raises
:class:`~hotline._errors.AuthenticationError` with its fixed message, so that the error itself
tells an attacker nothing. A handshake that failed is poisoned for good (section 5: "the
handshake has failed and the HandshakeState is deleted").

Python cannot reliably wipe memory; "forgetting" a secret here means dropping the last
reference this module holds to it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .._errors import AuthenticationError, LocalProtocolError

__all__ = [
    "MAX_MESSAGE_LEN",
    "TAG_LEN",
    "CipherState",
    "HandshakeState",
    "parse_protocol_name",
]

MAX_MESSAGE_LEN = 65535
"""Largest Noise message, handshake or transport, in bytes (spec section 3)."""

TAG_LEN = 16
"""The AEAD tag at the end of every encrypted payload (ChaChaPoly and AESGCM alike)."""
_KEY_LEN = 32
_DH_LEN = 32
# Section 5.1: 2**64-1 is reserved (REKEY uses it), so it can never be used by EncryptWithAd.
_MAX_NONCE = 2**64 - 1
_REKEY_NONCE_PLAINTEXT = bytes(32)
_ZERO_DH = bytes(_DH_LEN)

# 96-bit nonces from section 12.3 / 12.4: 4 zero bytes, then n in the cipher's byte order.
_CHACHA_NONCE = struct.Struct("<4xQ").pack
_AESGCM_NONCE = struct.Struct(">4xQ").pack

_Aead = ChaCha20Poly1305 | AESGCM


class _CipherSpec(NamedTuple):
    aead: Callable[[bytes], _Aead]
    nonce: Callable[[int], bytes]


_CIPHERS: dict[str, _CipherSpec] = {
    "ChaChaPoly": _CipherSpec(ChaCha20Poly1305, _CHACHA_NONCE),
    "AESGCM": _CipherSpec(AESGCM, _AESGCM_NONCE),
}


class _HashSpec(NamedTuple):
    hash: Callable[[bytes], bytes]
    # A name hmac.digest() accepts, so HMAC runs in OpenSSL with the hash's own block size
    # (which is the BLOCKLEN of section 12).
    hmac_name: str
    hashlen: int


_HASHES: dict[str, _HashSpec] = {
    "SHA256": _HashSpec(lambda d: hashlib.sha256(d).digest(), "sha256", 32),
    "SHA512": _HashSpec(lambda d: hashlib.sha512(d).digest(), "sha512", 64),
    "BLAKE2s": _HashSpec(lambda d: hashlib.blake2s(d).digest(), "blake2s", 32),
    "BLAKE2b": _HashSpec(lambda d: hashlib.blake2b(d).digest(), "blake2b", 64),
}

_DH_FUNCTIONS = frozenset({"25519"})


class _Pattern(NamedTuple):
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    # Message i is sent by the initiator when i is even, by the responder when it is odd.
    messages: tuple[tuple[str, ...], ...]


# Sections 7.4 (one-way) and 7.5 (fundamental interactive), token for token.
_PATTERNS: dict[str, _Pattern] = {
    "N": _Pattern((), ("s",), (("e", "es"),)),
    "K": _Pattern(("s",), ("s",), (("e", "es", "ss"),)),
    "X": _Pattern((), ("s",), (("e", "es", "s", "ss"),)),
    "NN": _Pattern((), (), (("e",), ("e", "ee"))),
    "NK": _Pattern((), ("s",), (("e", "es"), ("e", "ee"))),
    "NX": _Pattern((), (), (("e",), ("e", "ee", "s", "es"))),
    "KN": _Pattern(("s",), (), (("e",), ("e", "ee", "se"))),
    "KK": _Pattern(("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
    "KX": _Pattern(("s",), (), (("e",), ("e", "ee", "se", "s", "es"))),
    "XN": _Pattern((), (), (("e",), ("e", "ee"), ("s", "se"))),
    "XK": _Pattern((), ("s",), (("e", "es"), ("e", "ee"), ("s", "se"))),
    "XX": _Pattern((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IN": _Pattern((), (), (("e", "s"), ("e", "ee", "se"))),
    "IK": _Pattern((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IX": _Pattern((), (), (("e", "s"), ("e", "ee", "se", "s", "es"))),
}

_DH_TOKENS = frozenset({"ee", "es", "se", "ss"})


def parse_protocol_name(name: str) -> tuple[str, str, str, str]:
    """Split ``Noise_<pattern>_<dh>_<cipher>_<hash>`` into its four sections.

    Raises :class:`LocalProtocolError` for anything this module does not implement,
    including pattern modifiers (``psk0``, ``fallback``) and deferred patterns (``X1K``).
    """
    if not isinstance(name, str):
        raise LocalProtocolError("protocol name must be a str")
    if len(name.encode("utf-8")) > 255:
        raise LocalProtocolError("protocol name is longer than 255 bytes")
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise LocalProtocolError(
            f"not a Noise protocol name (want Noise_<pattern>_<dh>_<cipher>_<hash>): {name!r}"
        )
    _, pattern, dh, cipher, hash_name = parts
    if pattern not in _PATTERNS:
        if any(m in pattern for m in ("psk", "fallback")) or "+" in pattern:
            raise LocalProtocolError(f"pattern modifiers are not supported: {pattern!r}")
        raise LocalProtocolError(
            f"unsupported handshake pattern {pattern!r}; supported: {', '.join(_PATTERNS)}"
        )
    if dh not in _DH_FUNCTIONS:
        raise LocalProtocolError(f"unsupported DH functions {dh!r}; supported: 25519")
    if cipher not in _CIPHERS:
        raise LocalProtocolError(f"unsupported cipher {cipher!r}; supported: {', '.join(_CIPHERS)}")
    if hash_name not in _HASHES:
        raise LocalProtocolError(f"unsupported hash {hash_name!r}; supported: {', '.join(_HASHES)}")
    return pattern, dh, cipher, hash_name


class CipherState:
    """Section 5.1: a cipher key ``k`` (possibly empty) and a 64-bit nonce ``n``.

    Without a key, :meth:`encrypt_with_ad` and :meth:`decrypt_with_ad` return their input
    unchanged, exactly as the spec says; the handshake relies on that. The cipher states
    returned by :meth:`HandshakeState.split` always have a key.

    Messages are limited to :data:`MAX_MESSAGE_LEN` bytes of ciphertext (section 3): a
    longer plaintext raises :class:`LocalProtocolError`, a longer ciphertext raises
    :class:`AuthenticationError` (it cannot have come from a conforming peer).
    """

    __slots__ = ("_aead", "_cipher_name", "_make_aead", "_n", "_nonce")

    def __init__(self, cipher_name: str, key: bytes | None = None) -> None:
        spec = _CIPHERS.get(cipher_name)
        if spec is None:
            raise LocalProtocolError(
                f"unsupported cipher {cipher_name!r}; supported: {', '.join(_CIPHERS)}"
            )
        self._cipher_name = cipher_name
        self._make_aead = spec.aead
        self._nonce = spec.nonce
        self._aead: _Aead | None = None
        self._n = 0
        if key is not None:
            self._initialize_key(key)

    def _initialize_key(self, key: bytes) -> None:
        if len(key) != _KEY_LEN:
            raise LocalProtocolError(f"cipher key must be {_KEY_LEN} bytes, got {len(key)}")
        # Building the AEAD object is the expensive part; do it once per key, not per message.
        self._aead = self._make_aead(bytes(key))
        self._n = 0

    def __repr__(self) -> str:
        return f"<CipherState {self._cipher_name} has_key={self._aead is not None} n={self._n}>"

    def copy(self) -> CipherState:
        """An independent copy: the same key and nonce, advancing on its own."""
        return copy.copy(self)  # The AEAD object holds only the key, which rekey() replaces.

    def has_key(self) -> bool:
        return self._aead is not None

    @property
    def nonce(self) -> int:
        """The nonce the next encryption or decryption will use."""
        return self._n

    def set_nonce(self, n: int) -> None:
        """Section 5.1 ``SetNonce``; for out-of-order transports (section 11.4).

        The caller owns replay protection: reusing a nonce for encryption under the same key
        is catastrophic, and this method cannot tell.
        """
        if not 0 <= n <= _MAX_NONCE:
            raise LocalProtocolError(f"nonce must be in [0, 2**64-1], got {n}")
        self._n = n

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        aead = self._aead
        if aead is None:
            return plaintext
        n = self._n
        if n >= _MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: this CipherState must not be used again")
        if len(plaintext) > MAX_MESSAGE_LEN - TAG_LEN:
            raise LocalProtocolError(
                f"plaintext of {len(plaintext)} bytes exceeds the Noise maximum of "
                f"{MAX_MESSAGE_LEN - TAG_LEN}"
            )
        ciphertext = aead.encrypt(self._nonce(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and advance the nonce; on :class:`AuthenticationError` ``n`` is unchanged."""
        aead = self._aead
        if aead is None:
            return ciphertext
        n = self._n
        if n >= _MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: this CipherState must not be used again")
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise AuthenticationError()
        try:
            plaintext = aead.decrypt(self._nonce(n), ciphertext, ad)
        except InvalidTag:
            raise AuthenticationError() from None
        self._n = n + 1
        return plaintext

    def rekey(self) -> None:
        """Sections 4.2 and 11.3: ``k = ENCRYPT(k, 2**64-1, b"", zeros)[:32]``; ``n`` is kept."""
        aead = self._aead
        if aead is None:
            raise LocalProtocolError("cannot rekey a CipherState that has no key")
        new_key = aead.encrypt(self._nonce(_MAX_NONCE), _REKEY_NONCE_PLAINTEXT, b"")[:_KEY_LEN]
        self._aead = self._make_aead(new_key)


class _UnusableCipherState(CipherState):
    """The direction a one-way pattern (section 7.4) never uses.

    The spec says the second CipherState "is discarded - the recipient must not send any
    messages using it"; handing back a working one would invite exactly that.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<CipherState {self._cipher_name} unusable (one-way pattern)>"

    def _refuse(self) -> LocalProtocolError:
        return LocalProtocolError("a one-way Noise pattern has no responder-to-initiator channel")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        raise self._refuse()

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        raise self._refuse()

    def rekey(self) -> None:
        raise self._refuse()


class _SymmetricState:
    """Section 5.2: the chaining key ``ck``, the handshake hash ``h`` and a CipherState."""

    __slots__ = ("_cipher_name", "_hash", "_hashlen", "_hmac_name", "ck", "cs", "h")

    def __init__(self, protocol_name: bytes, cipher_name: str, hash_spec: _HashSpec) -> None:
        self._hash = hash_spec.hash
        self._hmac_name = hash_spec.hmac_name
        self._hashlen = hash_spec.hashlen
        self._cipher_name = cipher_name
        if len(protocol_name) <= self._hashlen:
            self.h = protocol_name.ljust(self._hashlen, b"\x00")
        else:
            self.h = self._hash(protocol_name)
        self.ck = self.h
        self.cs = CipherState(cipher_name)

    def __repr__(self) -> str:
        return f"<_SymmetricState {self._cipher_name} has_key={self.cs.has_key()}>"

    def copy(self) -> _SymmetricState:
        clone = copy.copy(self)
        clone.cs = self.cs.copy()
        return clone

    def _hkdf2(self, ikm: bytes) -> tuple[bytes, bytes]:
        temp_key = hmac.digest(self.ck, ikm, self._hmac_name)
        out1 = hmac.digest(temp_key, b"\x01", self._hmac_name)
        out2 = hmac.digest(temp_key, out1 + b"\x02", self._hmac_name)
        return out1, out2

    def has_key(self) -> bool:
        return self.cs.has_key()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self._hkdf2(ikm)
        self.cs = CipherState(self._cipher_name, temp_k[:_KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        k1, k2 = self._hkdf2(b"")
        return k1[:_KEY_LEN], k2[:_KEY_LEN]


class _Reject(Exception):
    """Internal: the peer's bytes cannot be processed (bad length, invalid public key, ...).

    Always turned into a bare :class:`AuthenticationError` before it leaves the module.
    """


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # cryptography refuses inputs whose output is all zeros (spec 12.1 allows this).
        raise _Reject from None
    # Belt and braces in case a backend ever returns the all-zero output instead.
    if hmac.compare_digest(shared, _ZERO_DH):
        raise _Reject
    return shared


def _private_key(raw: bytes | X25519PrivateKey | None, what: str) -> X25519PrivateKey | None:
    if raw is None or isinstance(raw, X25519PrivateKey):
        # A key object a caller keeps across handshakes: loading raw bytes derives the public
        # key, which costs as much as a DH.
        return raw
    if len(raw) != _DH_LEN:
        raise LocalProtocolError(f"{what} must be {_DH_LEN} raw bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(bytes(raw))


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


class HandshakeState:
    """Section 5.3: runs one handshake of one Noise protocol, as one side.

    ``s`` and ``e`` are raw 32-byte X25519 *private* keys; ``rs`` and ``re`` raw 32-byte
    *public* keys. A key the pattern requires but that is missing raises
    :class:`LocalProtocolError`, and so does a local static ``s`` the pattern never uses or a
    remote key the pattern does not take as a pre-message (``rs`` would otherwise be silently
    replaced by the one the peer transmits). A fixed ``e`` (for test vectors) is accepted and
    ignored when this side never sends an ephemeral.

    Errors: misuse raises :class:`LocalProtocolError`. :meth:`read_message` raises
    :class:`AuthenticationError` (no details) for every problem with the peer's bytes,
    including a message longer than :data:`MAX_MESSAGE_LEN`. A DH with an invalid or
    low-order remote key raises :class:`AuthenticationError` too, whether it happens in
    :meth:`read_message` or :meth:`write_message`. After any failure the state is poisoned:
    :meth:`write_message`, :meth:`read_message`, :meth:`split`, :attr:`handshake_hash` and
    :attr:`remote_static` raise :class:`LocalProtocolError` from then on and :attr:`complete`
    stays false.
    """

    __slots__ = (
        "_cipher_name",
        "_e",
        "_failed",
        "_index",
        "_initiator",
        "_pattern",
        "_pattern_name",
        "_protocol_name",
        "_re",
        "_rs",
        "_s",
        "_s_pub",
        "_split_done",
        "_sym",
    )

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | X25519PrivateKey | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
    ) -> None:
        pattern_name, _dh_name, cipher_name, hash_name = parse_protocol_name(protocol_name)
        pattern = _PATTERNS[pattern_name]
        self._protocol_name = protocol_name
        self._pattern_name = pattern_name
        self._pattern = pattern
        self._cipher_name = cipher_name
        self._initiator = initiator
        self._index = 0
        self._failed = False
        self._split_done = False

        local_pre, remote_pre = (
            (pattern.initiator_pre, pattern.responder_pre)
            if initiator
            else (pattern.responder_pre, pattern.initiator_pre)
        )
        first_own = 0 if initiator else 1
        own_tokens = {t for m in pattern.messages[first_own::2] for t in m}
        role = "initiator" if initiator else "responder"

        # Every supported pattern that uses the local static key also delivers it to the peer,
        # either in a pre-message or with an "s" token.
        needs_s = "s" in local_pre or "s" in own_tokens
        if needs_s and s is None:
            raise LocalProtocolError(f"{pattern_name} needs a local static key (s) as {role}")
        if not needs_s and s is not None:
            raise LocalProtocolError(f"{pattern_name} does not use a local static key as {role}")
        needs_rs = "s" in remote_pre
        if needs_rs and rs is None:
            raise LocalProtocolError(
                f"{pattern_name} needs the peer's static public key (rs) as {role}"
            )
        if not needs_rs and rs is not None:
            raise LocalProtocolError(
                f"{pattern_name} does not take the peer's static key in advance as {role}"
            )
        if re is not None:
            raise LocalProtocolError("pre-message ephemeral keys (re) are not supported")
        if rs is not None and len(rs) != _DH_LEN:
            raise LocalProtocolError(f"rs must be {_DH_LEN} raw bytes, got {len(rs)}")

        self._s = _private_key(s, "s")
        self._s_pub = _public_bytes(self._s) if self._s is not None else None
        self._e = _private_key(e, "e")
        self._rs: bytes | None = bytes(rs) if rs is not None else None
        self._re: bytes | None = None

        sym = _SymmetricState(protocol_name.encode("ascii"), cipher_name, _HASHES[hash_name])
        sym.mix_hash(bytes(prologue))
        # Initiator's pre-message first (section 5.3); only "s" occurs in supported patterns.
        initiator_s, responder_s = (self._s_pub, self._rs) if initiator else (self._rs, self._s_pub)
        for pre, key in (
            (pattern.initiator_pre, initiator_s),
            (pattern.responder_pre, responder_s),
        ):
            for tok in pre:
                assert tok == "s"
                assert key is not None
                sym.mix_hash(key)
        self._sym: _SymmetricState | None = sym

    def __repr__(self) -> str:
        if self._failed:
            state = "failed"
        elif self.complete:
            state = "complete"
        else:
            state = f"message {self._index}/{len(self._pattern.messages)}"
        role = "initiator" if self._initiator else "responder"
        return f"<HandshakeState {self._protocol_name} {role} {state}>"

    def copy(self) -> HandshakeState:
        """An independent copy, at the same point of the same handshake."""
        clone = copy.copy(self)
        if self._sym is not None:
            clone._sym = self._sym.copy()
        return clone

    # -- state checks --------------------------------------------------------------------

    def _check_usable(self) -> _SymmetricState:
        if self._failed:
            raise LocalProtocolError("this handshake failed earlier and cannot be used any more")
        sym = self._sym
        if sym is None or self._index >= len(self._pattern.messages):
            raise LocalProtocolError("the handshake is complete; use split()")
        return sym

    def _our_turn(self) -> bool:
        return (self._index % 2 == 0) == self._initiator

    def _fail(self) -> None:
        self._failed = True
        self._forget_secrets()
        self._sym = None

    def _forget_secrets(self) -> None:
        self._s = None
        self._e = None

    # -- token processing ----------------------------------------------------------------

    def _dh_for(self, tok: str) -> bytes:
        # Section 5.3: "es" is DH(e, rs) for the initiator and DH(s, re) for the responder,
        # "se" the mirror image; "ee" and "ss" are symmetric.
        if tok == "ee":
            local, remote = self._e, self._re
        elif tok == "ss":
            local, remote = self._s, self._rs
        elif (tok == "es") == self._initiator:
            local, remote = self._e, self._rs
        else:
            local, remote = self._s, self._re
        # The pattern table guarantees both are present by the time the token is reached.
        assert local is not None
        assert remote is not None
        return _dh(local, remote)

    def _message_len(self, sym: _SymmetricState, tokens: tuple[str, ...], payload_len: int) -> int:
        keyed = sym.has_key()
        total = 0
        for tok in tokens:
            if tok == "e":
                total += _DH_LEN
            elif tok == "s":
                total += _DH_LEN + (TAG_LEN if keyed else 0)
            else:
                keyed = True
        return total + payload_len + (TAG_LEN if keyed else 0)

    def write_message(self, payload: bytes) -> bytes:
        """Section 5.3 ``WriteMessage``: the next handshake message, carrying ``payload``."""
        sym = self._check_usable()
        if not self._our_turn():
            raise LocalProtocolError("it is the peer's turn to send; call read_message()")
        tokens = self._pattern.messages[self._index]
        size = self._message_len(sym, tokens, len(payload))
        if size > MAX_MESSAGE_LEN:
            raise LocalProtocolError(
                f"handshake message would be {size} bytes, more than the Noise maximum of "
                f"{MAX_MESSAGE_LEN}"
            )
        try:
            message = self._write_tokens(sym, tokens, payload)
        except _Reject:
            self._fail()
            raise AuthenticationError() from None
        except BaseException:
            self._fail()
            raise
        self._advance()
        return message

    def _write_tokens(self, sym: _SymmetricState, tokens: tuple[str, ...], payload: bytes) -> bytes:
        parts: list[bytes] = []
        for tok in tokens:
            if tok == "e":
                if self._e is None:
                    self._e = X25519PrivateKey.from_private_bytes(os.urandom(_DH_LEN))
                e_pub = _public_bytes(self._e)
                parts.append(e_pub)
                sym.mix_hash(e_pub)
            elif tok == "s":
                assert self._s_pub is not None
                parts.append(sym.encrypt_and_hash(self._s_pub))
            else:
                sym.mix_key(self._dh_for(tok))
        parts.append(sym.encrypt_and_hash(payload))
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """Section 5.3 ``ReadMessage``: process the peer's message and return its payload.

        Raises :class:`AuthenticationError` for any defect in ``message``, including being
        longer than :data:`MAX_MESSAGE_LEN`; the handshake is then unusable.
        """
        sym = self._check_usable()
        if self._our_turn():
            raise LocalProtocolError("it is our turn to send; call write_message()")
        tokens = self._pattern.messages[self._index]
        try:
            payload = self._read_tokens(sym, tokens, message)
        except (_Reject, AuthenticationError):
            self._fail()
            raise AuthenticationError() from None
        except BaseException:
            self._fail()
            raise
        self._advance()
        return payload

    def _read_tokens(self, sym: _SymmetricState, tokens: tuple[str, ...], message: bytes) -> bytes:
        size = len(message)
        if size > MAX_MESSAGE_LEN:
            raise _Reject
        view = memoryview(message)
        pos = 0
        for tok in tokens:
            if tok == "e":
                end = pos + _DH_LEN
                if end > size:
                    raise _Reject
                self._re = bytes(view[pos:end])
                sym.mix_hash(self._re)
                pos = end
            elif tok == "s":
                end = pos + _DH_LEN + (TAG_LEN if sym.has_key() else 0)
                if end > size:
                    raise _Reject
                self._rs = sym.decrypt_and_hash(bytes(view[pos:end]))
                pos = end
            else:
                sym.mix_key(self._dh_for(tok))
        if sym.has_key() and size - pos < TAG_LEN:
            raise _Reject
        return sym.decrypt_and_hash(bytes(view[pos:]))

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self._pattern.messages):
            # Only ck (for split) and h (for channel binding) outlive the handshake.
            self._forget_secrets()
            self._re = None

    # -- results -------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return not self._failed and self._index == len(self._pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        """``h``: changes with every message until the handshake is complete (section 11.2)."""
        if self._failed:
            raise LocalProtocolError("this handshake failed; it has no handshake hash")
        sym = self._sym
        assert sym is not None
        return sym.h

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key once known (from a pre-message or an ``s`` token)."""
        if self._failed:
            raise LocalProtocolError("this handshake failed; the remote key is not trustworthy")
        return self._rs

    def split(self) -> tuple[CipherState, CipherState]:
        """Section 5.2 ``Split``, oriented for this side: returns ``(send, receive)``.

        The initiator sends with c1 and receives with c2, the responder the other way round.
        For one-way patterns (N, K, X) the responder-to-initiator direction is an unusable
        CipherState that raises :class:`LocalProtocolError`. Allowed once: a second pair of
        CipherStates with the same keys would invite nonce reuse.
        """
        if self._failed:
            raise LocalProtocolError("this handshake failed earlier and cannot be used any more")
        if not self.complete:
            raise LocalProtocolError("split() before the handshake is complete")
        if self._split_done:
            raise LocalProtocolError("split() may be called only once per handshake")
        sym = self._sym
        assert sym is not None
        k1, k2 = sym.split()
        self._split_done = True
        # Keep h for channel binding; the chaining key has no further use.
        sym.ck = b""
        sym.cs = CipherState(self._cipher_name)
        c1 = CipherState(self._cipher_name, k1)
        c2: CipherState
        if len(self._pattern_name) == 1:  # one-way patterns are the one-letter names
            c2 = _UnusableCipherState(self._cipher_name)
        else:
            c2 = CipherState(self._cipher_name, k2)
        return (c1, c2) if self._initiator else (c2, c1)
