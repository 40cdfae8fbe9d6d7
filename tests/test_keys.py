"""Tests for hotline._keys: key files, fingerprints, X25519 derivation, signatures, line ids.

The ssh-keygen tests run the real OpenSSH tool, because "compatible with ssh-keygen" is only
true if ssh-keygen agrees.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import nacl.bindings
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from hotline._errors import KeyFileError, LocalProtocolError
from hotline._keys import _OPENSSL_SIGNS_FROM, Identity, PublicKey, line_id, load_identity_file

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX-only")

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(
    SSH_KEYGEN is None, reason="ssh-keygen (OpenSSH) is not installed, cannot check interop"
)

# RFC 8032, section 7.1, TEST 1.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _pub_line(blob: bytes, key_type: str = "ssh-ed25519") -> str:
    return f"{key_type} {base64.b64encode(blob).decode()}"


def _ssh_keygen(*args: str) -> subprocess.CompletedProcess[str]:
    assert SSH_KEYGEN is not None
    return subprocess.run(
        [SSH_KEYGEN, *args], capture_output=True, text=True, check=True, timeout=60
    )


def _ssh_fingerprint(path: Path) -> str:
    # Output: "256 SHA256:... comment (ED25519)"
    return _ssh_keygen("-lf", str(path)).stdout.split()[1]


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_generate_save_load_round_trip(tmp_path: Path, passphrase: bytes | None) -> None:
    ident = Identity.generate("alice@laptop")
    path = tmp_path / "alice"
    ident.save(path, passphrase)
    loaded = Identity.load(path, passphrase)
    assert loaded.public_key == ident.public_key
    assert loaded.x25519_private == ident.x25519_private
    assert ident.public_key.verify(b"hello", loaded.sign(b"hello"))
    pub = PublicKey.load(str(path) + ".pub")
    assert pub == ident.public_key
    assert pub.comment == "alice@laptop"


def test_encrypted_file_is_actually_encrypted(tmp_path: Path) -> None:
    ident = Identity.from_seed(RFC_SEED)
    pem = ident.to_openssh_private(b"pw")
    body = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    assert b"aes256-ctr" in body
    assert b"bcrypt" in body
    assert RFC_SEED not in body
    plain_body = base64.b64decode(b"".join(ident.to_openssh_private().splitlines()[1:-1]))
    assert RFC_SEED in plain_body  # the check above is meaningful: the seed is stored as-is


def test_openssh_private_bytes_round_trip() -> None:
    ident = Identity.generate()
    pem = ident.to_openssh_private()
    assert pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert Identity.from_openssh_private(pem).public_key == ident.public_key
    enc = ident.to_openssh_private(b"pw")
    assert Identity.from_openssh_private(enc, b"pw").public_key == ident.public_key


def test_passphrase_given_for_unencrypted_key_is_ignored_like_ssh() -> None:
    ident = Identity.generate()
    assert Identity.from_openssh_private(ident.to_openssh_private(), b"x").public_key == (
        ident.public_key
    )


def test_empty_passphrase_refused_when_writing() -> None:
    with pytest.raises(LocalProtocolError):
        Identity.generate().to_openssh_private(b"")


def test_public_key_save_load(tmp_path: Path) -> None:
    pub = Identity.generate("bob").public_key
    path = tmp_path / "bob.pub"
    pub.save(path)
    assert path.read_text() == pub.to_openssh() + "\n"
    if os.name == "posix":
        assert _mode(path) == 0o644
    loaded = PublicKey.load(path)
    assert loaded == pub
    assert loaded.comment == "bob"


def test_public_key_load_first_non_empty_line(tmp_path: Path) -> None:
    pub = Identity.generate().public_key
    path = tmp_path / "k.pub"
    path.write_text("\n\n  \n" + pub.to_openssh() + "\n")
    assert PublicKey.load(path) == pub


@pytest.mark.parametrize("comment", ["", "alice", "alice at the office"])
def test_openssh_text_round_trip(comment: str) -> None:
    pub = Identity.generate(comment).public_key
    text = pub.to_openssh()
    assert not text.endswith((" ", "\n"))
    parsed = PublicKey.from_openssh(text)
    assert parsed == pub
    assert parsed.comment == comment
    assert text.split()[0] == "ssh-ed25519"


def test_from_seed_matches_rfc8032() -> None:
    ident = Identity.from_seed(RFC_SEED)
    assert ident.public_key.raw == RFC_PUBLIC
    assert ident.sign(b"") == RFC_SIG_EMPTY
    assert ident.public_key.verify(b"", RFC_SIG_EMPTY)


def test_from_seed_wrong_length() -> None:
    with pytest.raises(LocalProtocolError):
        Identity.from_seed(b"\x00" * 31)


def test_public_key_constructor_checks() -> None:
    with pytest.raises(LocalProtocolError):
        PublicKey(b"\x00" * 31)
    with pytest.raises(LocalProtocolError):
        PublicKey(RFC_PUBLIC, "two\nlines")


def test_equality_hash_order_ignore_comment() -> None:
    a1 = PublicKey(RFC_PUBLIC, "one")
    a2 = PublicKey(RFC_PUBLIC, "two")
    b = Identity.generate().public_key
    assert a1 == a2
    assert hash(a1) == hash(a2)
    assert len({a1, a2, b}) == 2
    assert a1 != b
    assert (a1 < b) == (a1.raw < b.raw)
    assert sorted([b, a1]) == sorted([a1, b])
    assert sorted([b, a1])[0].raw == min(a1.raw, b.raw)
    assert a1 != RFC_PUBLIC


def test_reprs_show_fingerprint_not_secret() -> None:
    ident = Identity.from_seed(RFC_SEED, "alice")
    fp = ident.public_key.fingerprint()
    assert fp in repr(ident.public_key)
    r = repr(ident)
    assert fp in r
    for secret_form in (
        RFC_SEED.hex(),
        base64.b64encode(RFC_SEED).decode(),
        ident.x25519_private.hex(),
        repr(RFC_SEED),
    ):
        assert secret_form not in r


def test_fingerprint_format() -> None:
    pub = PublicKey(RFC_PUBLIC)
    blob = _ssh_string(b"ssh-ed25519") + _ssh_string(RFC_PUBLIC)
    expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert pub.fingerprint() == "SHA256:" + expected
    assert "=" not in pub.fingerprint()


# ------------------------------------------------------------------ writing files


@posix_only
def test_written_modes(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Identity.generate().save(path)
    assert _mode(path) == 0o600
    assert _mode(tmp_path / "k.pub") == 0o644


@posix_only
def test_modes_exact_regardless_of_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Identity.generate().save(tmp_path / "a")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o600
    assert _mode(tmp_path / "a.pub") == 0o644
    old = os.umask(0o277)
    try:
        Identity.generate().save(tmp_path / "b")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "b") == 0o600
    assert _mode(tmp_path / "b.pub") == 0o644


def test_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = Identity.generate()
    first.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        Identity.generate().save(path)
    assert path.read_bytes() == before
    assert Identity.load(path).public_key == first.public_key


def test_refuses_to_clobber_existing_pub(tmp_path: Path) -> None:
    # "bob.pub" may be a peer's number; saving an identity as "bob" must not eat it.
    peer = Identity.generate("bob").public_key
    peer.save(tmp_path / "bob.pub")
    with pytest.raises(KeyFileError, match="already exists"):
        Identity.generate().save(tmp_path / "bob")
    assert not (tmp_path / "bob").exists()
    assert PublicKey.load(tmp_path / "bob.pub") == peer


def test_overwrite_replaces(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Identity.generate().save(path)
    second = Identity.generate("second")
    second.save(path, b"pw", overwrite=True)
    if os.name == "posix":
        assert _mode(path) == 0o600
        assert _mode(tmp_path / "k.pub") == 0o644
    assert Identity.load(path, b"pw").public_key == second.public_key
    assert PublicKey.load(tmp_path / "k.pub") == second.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]  # no temp files left


def test_overwrite_on_fresh_path(tmp_path: Path) -> None:
    ident = Identity.generate()
    ident.save(tmp_path / "k", overwrite=True)
    assert Identity.load(tmp_path / "k").public_key == ident.public_key


def test_save_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        Identity.generate().save(tmp_path / "nope" / "k")


# ------------------------------------------------------------------ permission check


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_load_refuses_open_permissions(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "alice"
    Identity.generate().save(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as excinfo:
        Identity.load(path)
    message = str(excinfo.value)
    assert f"{mode:04o}" in message
    assert "too open" in message
    assert "chmod 600" in message


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_accepts_owner_only(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "alice"
    ident = Identity.generate()
    ident.save(path)
    path.chmod(mode)
    assert Identity.load(path).public_key == ident.public_key


# ------------------------------------------------------------------ bad private key files


def _assert_clean_key_error(excinfo: pytest.ExceptionInfo[KeyFileError], pem: bytes) -> None:
    """The error is a KeyFileError, unchained, and leaks no line of the key file."""
    assert type(excinfo.value) is KeyFileError
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__
    message = str(excinfo.value)
    for line in pem.splitlines()[1:-1]:
        assert line.decode()[:16] not in message


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Identity.generate().save(path, b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase") as excinfo:
        Identity.load(path, b"wrong")
    _assert_clean_key_error(excinfo, path.read_bytes())


@pytest.mark.parametrize("passphrase", [None, b""])
def test_missing_passphrase(tmp_path: Path, passphrase: bytes | None) -> None:
    path = tmp_path / "k"
    Identity.generate().save(path, b"right")
    with pytest.raises(KeyFileError, match="encrypted: a passphrase is needed") as excinfo:
        Identity.load(path, passphrase)
    _assert_clean_key_error(excinfo, path.read_bytes())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\x00\xff" * 100,
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!!!\n-----END OPENSSH PRIVATE KEY-----\n",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_garbage_private_file(tmp_path: Path, data: bytes) -> None:
    path = _write_private(tmp_path / "k", data)
    with pytest.raises(KeyFileError) as excinfo:
        Identity.load(path)
    assert type(excinfo.value) is KeyFileError


def test_public_key_given_as_private(tmp_path: Path) -> None:
    path = _write_private(tmp_path / "k", Identity.generate().public_key.to_openssh().encode())
    with pytest.raises(KeyFileError, match="public key"):
        Identity.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such"):
        Identity.load(tmp_path / "absent")
    with pytest.raises(KeyFileError, match="no such"):
        PublicKey.load(tmp_path / "absent.pub")


def test_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        PublicKey.load(tmp_path)


@pytest.mark.parametrize("passphrase", [None, b"pw"])
@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9])
def test_truncated_private_file(tmp_path: Path, passphrase: bytes | None, cut: float) -> None:
    pem = Identity.generate().to_openssh_private(passphrase)
    path = _write_private(tmp_path / "k", pem[: int(len(pem) * cut)])
    with pytest.raises(KeyFileError) as excinfo:
        Identity.load(path, passphrase)
    _assert_clean_key_error(excinfo, pem)


@pytest.mark.parametrize("passphrase", [None, b"pw"])
@pytest.mark.parametrize("keep", [10, 40, 80, 150, -1])
def test_truncated_structure_rearmoured(
    tmp_path: Path, passphrase: bytes | None, keep: int
) -> None:
    # A file whose armour is intact but whose binary content is cut short.
    pem = Identity.generate().to_openssh_private(passphrase)
    body = base64.b64decode(b"".join(pem.splitlines()[1:-1]))[:keep]
    data = (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + base64.b64encode(body)
        + b"\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    path = _write_private(tmp_path / "k", data)
    with pytest.raises(KeyFileError) as excinfo:
        Identity.load(path, passphrase)
    assert type(excinfo.value) is KeyFileError


def test_corrupted_private_section(tmp_path: Path) -> None:
    pem = Identity.generate().to_openssh_private()
    body = bytearray(base64.b64decode(b"".join(pem.splitlines()[1:-1])))
    body[-40] ^= 0x01  # inside the private key bytes / check area
    data = (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + base64.b64encode(bytes(body))
        + b"\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyFileError):
        Identity.from_openssh_private(data)


def _other_key_pem(kind: str, passphrase: bytes | None) -> bytes:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )


@pytest.mark.parametrize(
    ("kind", "type_name"), [("rsa", "ssh-rsa"), ("ecdsa", "ecdsa-sha2-nistp256")]
)
@pytest.mark.parametrize("passphrase", [None, b"pw"])
def test_non_ed25519_private_key(
    tmp_path: Path, kind: str, type_name: str, passphrase: bytes | None
) -> None:
    path = _write_private(tmp_path / "k", _other_key_pem(kind, passphrase))
    # Loaded without the passphrase on purpose: the type is named before any decryption.
    with pytest.raises(KeyFileError, match="hotline uses ssh-ed25519") as excinfo:
        Identity.load(path)
    assert type_name in str(excinfo.value)
    with pytest.raises(KeyFileError, match=type_name):
        Identity.load(path, passphrase)


# ------------------------------------------------------------------ bad public keys


def _good_blob() -> bytes:
    return _ssh_string(b"ssh-ed25519") + _ssh_string(RFC_PUBLIC)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== me", "unsupported key type 'ssh-rsa'"),
        ("ecdsa-sha2-nistp256 AAAA", "unsupported key type"),
        ("ssh-ed25519", "missing"),
        ("ssh-ed25519 not*base64!", "base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", "base64"),
        ("ssh-ed25519 ÄÖÜ", "base64"),
        (_pub_line(_ssh_string(b"ssh-rsa") + _ssh_string(RFC_PUBLIC)), "of type 'ssh-rsa'"),
        (_pub_line(_good_blob() + b"\x00"), "after the key"),
        (_pub_line(_ssh_string(b"ssh-ed25519") + _ssh_string(RFC_PUBLIC[:31])), "32 bytes"),
        (_pub_line(_ssh_string(b"ssh-ed25519") + _ssh_string(RFC_PUBLIC + b"\x00")), "32"),
        (_pub_line(_good_blob()[:-5]), "truncated"),
        (_pub_line(b"\x00\x00\x00"), "truncated"),
        (_pub_line(_ssh_string(b"ssh-ed25519") + _ssh_string(bytes(32))), "not a valid"),
        (_pub_line(_good_blob()) + "\n" + _pub_line(_good_blob()), "one line"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
    ],
)
def test_public_key_parser_rejects(text: str, match: str) -> None:
    with pytest.raises(KeyFileError, match=match) as excinfo:
        PublicKey.from_openssh(text)
    assert type(excinfo.value) is KeyFileError


def test_public_key_parser_accepts_handmade_blob() -> None:
    pub = PublicKey.from_openssh(_pub_line(_good_blob()) + " the comment  \n")
    assert pub.raw == RFC_PUBLIC
    assert pub.comment == "the comment"


def test_public_key_load_rejects_private_and_binary(tmp_path: Path) -> None:
    priv = tmp_path / "k"
    priv.write_bytes(Identity.generate().to_openssh_private())
    with pytest.raises(KeyFileError, match="private key"):
        PublicKey.load(priv)
    binary = tmp_path / "b.pub"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KeyFileError):
        PublicKey.load(binary)
    empty = tmp_path / "e.pub"
    empty.write_bytes(b"\n\n")
    with pytest.raises(KeyFileError, match="empty"):
        PublicKey.load(empty)


def test_oversized_file_refused(tmp_path: Path) -> None:
    path = _write_private(tmp_path / "big", b"A" * (1024 * 1024))
    with pytest.raises(KeyFileError, match="too large"):
        Identity.load(path)


# ------------------------------------------------------------------ real ssh-keygen


@needs_ssh_keygen
def test_reads_ssh_keygen_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    _ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path))
    ident = Identity.load(path)
    pub = PublicKey.load(str(path) + ".pub")
    assert ident.public_key == pub
    assert pub.comment == "test"
    assert pub.verify(b"msg", ident.sign(b"msg"))
    assert _ssh_fingerprint(path.with_suffix(".pub")) == pub.fingerprint()
    assert _ssh_fingerprint(path) == ident.public_key.fingerprint()
    # Our writer reproduces ssh-keygen's .pub line byte for byte.
    assert pub.to_openssh() + "\n" == (tmp_path / "k.pub").read_text()


@needs_ssh_keygen
def test_reads_ssh_keygen_encrypted_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    _ssh_keygen("-q", "-t", "ed25519", "-N", "secretpw", "-C", "test", "-f", str(path))
    ident = Identity.load(path, b"secretpw")
    assert ident.public_key == PublicKey.load(str(path) + ".pub")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        Identity.load(path, b"secretpX")
    with pytest.raises(KeyFileError, match="a passphrase is needed"):
        Identity.load(path)


@needs_ssh_keygen
def test_ssh_keygen_rsa_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    _ssh_keygen("-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path))
    with pytest.raises(KeyFileError, match="ssh-rsa"):
        Identity.load(path)
    with pytest.raises(KeyFileError, match="ssh-rsa"):
        PublicKey.load(str(path) + ".pub")


@needs_ssh_keygen
@pytest.mark.parametrize("passphrase", [None, b"hotline pw"])
def test_ssh_keygen_fingerprints_hotline_key(tmp_path: Path, passphrase: bytes | None) -> None:
    path = tmp_path / "k"
    ident = Identity.generate("hotline-test")
    ident.save(path, passphrase)
    fp = ident.public_key.fingerprint()
    assert _ssh_fingerprint(tmp_path / "k.pub") == fp
    assert _ssh_fingerprint(path) == fp
    # The private file alone (no .pub beside it): ssh-keygen reads its clear public part.
    alone = tmp_path / "alone"
    shutil.copyfile(path, alone)
    alone.chmod(0o600)
    assert _ssh_fingerprint(alone) == fp


@needs_ssh_keygen
def test_ssh_keygen_reads_hotline_plain_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    ident = Identity.generate()
    ident.save(path)
    out = _ssh_keygen("-y", "-f", str(path)).stdout.split()
    assert PublicKey.from_openssh(" ".join(out[:2])) == ident.public_key


@needs_ssh_keygen
def test_ssh_keygen_decrypts_hotline_encrypted_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    ident = Identity.generate()
    ident.save(path, b"hotline pw")
    out = _ssh_keygen("-y", "-P", "hotline pw", "-f", str(path)).stdout.split()
    assert out[:2] == ident.public_key.to_openssh().split()[:2]
    assert PublicKey.from_openssh(" ".join(out[:2])) == ident.public_key
    wrong = subprocess.run(
        [str(SSH_KEYGEN), "-y", "-P", "not it", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode != 0


@needs_ssh_keygen
def test_ssh_keygen_reencrypts_hotline_key(tmp_path: Path) -> None:
    # Users change passphrases with ssh-keygen -p; hotline must read the result.
    path = tmp_path / "k"
    ident = Identity.generate()
    ident.save(path, b"old pw")
    _ssh_keygen("-p", "-P", "old pw", "-N", "new pw", "-f", str(path))
    assert Identity.load(path, b"new pw").public_key == ident.public_key


# ------------------------------------------------------------------ X25519 derivation


def test_x25519_private_matches_public() -> None:
    ident = Identity.generate()
    derived_pub = (
        x25519.X25519PrivateKey.from_private_bytes(ident.x25519_private)
        .public_key()
        .public_bytes_raw()
    )
    assert len(ident.x25519_private) == 32
    assert derived_pub == ident.public_key.x25519
    assert PublicKey(ident.public_key.raw).x25519 == derived_pub
    assert ident.x25519_private is ident.x25519_private  # cached


def test_x25519_differs_from_ed25519() -> None:
    ident = Identity.from_seed(RFC_SEED)
    assert ident.public_key.x25519 != ident.public_key.raw
    assert ident.x25519_private != RFC_SEED


def test_x25519_dh_agrees_both_ways() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    ab = nacl.bindings.crypto_scalarmult(alice.x25519_private, bob.public_key.x25519)
    ba = nacl.bindings.crypto_scalarmult(bob.x25519_private, alice.public_key.x25519)
    assert ab == ba
    via_cryptography = x25519.X25519PrivateKey.from_private_bytes(alice.x25519_private).exchange(
        x25519.X25519PublicKey.from_public_bytes(bob.public_key.x25519)
    )
    assert via_cryptography == ab
    carol = Identity.generate()
    assert nacl.bindings.crypto_scalarmult(carol.x25519_private, bob.public_key.x25519) != ab


def test_x25519_of_invalid_point() -> None:
    with pytest.raises(LocalProtocolError):
        _ = PublicKey(bytes(32)).x25519


def test_identity_from_signing_key_and_cryptography_agree() -> None:
    sk = nacl.signing.SigningKey(RFC_SEED)
    ident = Identity(sk, "c")
    crypto = ed25519.Ed25519PrivateKey.from_private_bytes(RFC_SEED)
    assert ident.public_key.raw == crypto.public_key().public_bytes_raw()
    assert ident.public_key.comment == "c"


# ------------------------------------------------------------------ sign / verify


def test_sign_verify() -> None:
    ident = Identity.generate()
    message = b"the line is open"
    sig = ident.sign(message)
    assert len(sig) == 64
    pub = ident.public_key
    assert pub.verify(message, sig)
    for i in range(len(message) * 8):
        flipped = bytearray(message)
        flipped[i // 8] ^= 1 << (i % 8)
        assert not pub.verify(bytes(flipped), sig)
    for i in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[i // 8] ^= 1 << (i % 8)
        assert not pub.verify(message, bytes(flipped))


@pytest.mark.parametrize("size", [0, 1, _OPENSSL_SIGNS_FROM - 1, _OPENSSL_SIGNS_FROM,
                                  65536 + 167, 1 << 20])
def test_a_signature_is_libsodiums_at_every_length(size: int) -> None:
    # Long messages are signed by OpenSSL, short ones by libsodium: Ed25519 is deterministic,
    # so the bytes must be libsodium's whichever signs (the wire carries them).
    for seed in (RFC_SEED, hashlib.sha256(b"another seed").digest()):
        ident = Identity.from_seed(seed)
        message = bytes((i * 131 + size) % 251 for i in range(size))
        signature = ident.sign(message)
        assert signature == nacl.signing.SigningKey(seed).sign(message).signature
        assert ident.public_key.verify(message, signature)


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_verify_wrong_length_signature(length: int) -> None:
    ident = Identity.generate()
    sig = ident.sign(b"m")
    bad = (sig * 2)[:length]
    assert ident.public_key.verify(b"m", bad) is False


def test_verify_other_key_and_invalid_key() -> None:
    sig = Identity.generate().sign(b"m")
    assert not Identity.generate().public_key.verify(b"m", sig)
    assert PublicKey(bytes(32)).verify(b"m", sig) is False


# ------------------------------------------------------------------ line_id


def test_line_id() -> None:
    a, b, c = (Identity.generate().public_key for _ in range(3))
    ab = line_id(a, b)
    assert len(ab) == 32
    assert ab == line_id(b, a)
    assert ab != line_id(a, c)
    assert line_id(a, c) != line_id(b, c)
    low, high = sorted((a.raw, b.raw))
    expected = hashlib.blake2b(b"hotline-v1/line-id\x00" + low + high, digest_size=32).digest()
    assert ab == expected


def test_line_id_ignores_comment() -> None:
    a, b = Identity.generate().public_key, Identity.generate().public_key
    assert line_id(PublicKey(a.raw, "x"), b) == line_id(a, b)


def test_line_id_to_self_is_misuse() -> None:
    a = Identity.generate().public_key
    with pytest.raises(LocalProtocolError):
        line_id(a, a)
    with pytest.raises(LocalProtocolError):
        line_id(a, PublicKey(a.raw, "another comment"))


# --------------------------------------------------------------------------- files as written


@pytest.mark.parametrize("prefix", [
    "# a comment line\n\n",
    "\n   \n# two\n# comments\n",
    'from="10.0.0.1" ',
    'command="echo \\"a b\\"",no-pty ',
    'environment="A=x y",restrict ',
])
def test_a_public_key_file_with_comments_or_options(tmp_path: Path, prefix: str) -> None:
    key = Identity.generate("c@example").public_key
    path = tmp_path / "k.pub"
    path.write_text(prefix + key.to_openssh() + "\n# trailing comment\n")
    assert PublicKey.load(path) == key


def test_a_public_key_file_with_two_keys_is_refused(tmp_path: Path) -> None:
    first, second = (Identity.generate().public_key for _ in range(2))
    path = tmp_path / "k.pub"
    path.write_text(f"# ours\n{first.to_openssh()}\n\n{second.to_openssh()}\n")
    with pytest.raises(KeyFileError, match=r"holds 2 key lines \(lines 2, 4\)"):
        PublicKey.load(path)


def test_options_before_a_foreign_key_type_still_name_it(tmp_path: Path) -> None:
    path = tmp_path / "k.pub"
    path.write_text('from="10.0.0.1" ssh-rsa AAAAB3NzaC1yc2E rsa@example\n')
    with pytest.raises(KeyFileError, match="unsupported key type 'ssh-rsa'"):
        PublicKey.load(path)


def test_a_public_key_given_as_private_is_named_before_its_mode(tmp_path: Path) -> None:
    identity = Identity.generate()
    identity.save(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k.pub").stat().st_mode) == 0o644
    with pytest.raises(KeyFileError, match="is a public key, not a private key"):
        Identity.load(tmp_path / "k.pub")


def test_the_passphrase_function_is_called_only_for_an_encrypted_key(tmp_path: Path) -> None:
    identity = Identity.generate()
    identity.save(tmp_path / "plain")
    identity.save(tmp_path / "locked", b"pass phrase")
    asked: list[str] = []

    def ask() -> bytes:
        asked.append("asked")
        return b"pass phrase"

    assert load_identity_file(tmp_path / "plain", ask).public_key == identity.public_key
    assert asked == []
    assert load_identity_file(tmp_path / "locked", ask).public_key == identity.public_key
    assert asked == ["asked"]
