"""Keys: one Ed25519 key per node, and the files that carry it.

One key, one number. A node has exactly one long-term key, an Ed25519 key. Its public half
is the node's "number": the thing a peer writes down, compares over the phone, pins. The
Noise handshake needs a Diffie-Hellman key (X25519), but instead of giving a node a second
key, and users a second number to check, the X25519 key pair is *derived* from the Ed25519
one with libsodium's birational map (``crypto_sign_ed25519_{sk,pk}_to_curve25519``). Whoever
knows a node's Ed25519 public key therefore also knows its X25519 public key, so pinning
the number pins the handshake too, and there is nothing to keep in step.

Keys meet users as OpenSSH files, the format people already have tools for: the public key
is the one-line ``ssh-ed25519 AAAA... comment`` form (``alice.pub``) and the private key is
the ``-----BEGIN OPENSSH PRIVATE KEY-----`` form (``alice``), optionally encrypted with a
passphrase (bcrypt KDF + aes256-ctr, as ``ssh-keygen`` does). ``ssh-keygen`` can make,
read, fingerprint and re-encrypt hotline keys, and hotline reads what ``ssh-keygen -t
ed25519`` makes. Fingerprints are exactly those of ``ssh-keygen -lf``.

Every problem with a key file is reported as :class:`~hotline._errors.KeyFileError` with a
message that names the file and the cause but never any key material, and without the
underlying library exception chained to it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import os
import stat
import struct
import tempfile
from collections.abc import Callable
from typing import TypeAlias

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hotline._errors import KeyFileError, LocalProtocolError

__all__ = ["Identity", "PublicKey", "line_id"]

_KEY_TYPE = "ssh-ed25519"
_KEY_TYPE_BYTES = _KEY_TYPE.encode("ascii")
# How OpenSSH key types begin: what tells a key line from an authorized_keys options field.
_KEY_TYPE_PREFIXES = ("ssh-", "ecdsa-", "sk-")
_RAW_LEN = 32
_SIG_LEN = 64

_PRIVATE_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_PRIVATE_END = b"-----END OPENSSH PRIVATE KEY-----"
_PRIVATE_MAGIC = b"openssh-key-v1\x00"

# A real Ed25519 key file is well under 1 KiB. The cap keeps a mistaken path (a log, a disk
# image) from being read into memory whole.
_MAX_KEY_FILE = 64 * 1024

# The ciphers cryptography can decrypt. OpenSSH also knows chacha20-poly1305@openssh.com
# (and older AES modes); a key in one of those gets a message saying how to convert it.
_READABLE_CIPHERS = frozenset({b"aes256-ctr", b"aes256-cbc", b"aes256-gcm@openssh.com"})

_LINE_ID_CONTEXT = b"hotline-v1/line-id\x00"

PathArg: TypeAlias = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers


def _show(path: PathArg) -> str:
    return repr(os.fspath(path))


def _safe_name(raw: bytes) -> str:
    """A key or cipher name from a file, fit to quote in an error message."""
    text = raw[:64].decode("ascii", errors="replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class _Reader:
    """Reads the SSH wire encoding (RFC 4251): uint32 and length-prefixed strings."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def uint32(self) -> int:
        if self._pos + 4 > len(self._data):
            raise ValueError("truncated")
        (value,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        return int(value)

    def string(self) -> bytes:
        length = self.uint32()
        if self._pos + length > len(self._data):
            raise ValueError("truncated")
        value = self._data[self._pos : self._pos + length]
        self._pos += length
        return value

    def expect(self, literal: bytes) -> None:
        if self._data[self._pos : self._pos + len(literal)] != literal:
            raise ValueError("unexpected bytes")
        self._pos += len(literal)

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos


def _without_options(line: str) -> str:
    """``line`` without a leading authorized_keys options field (``from="a b",no-pty ...``).

    A line that starts with a key type has no options. Otherwise the options run up to the
    first blank outside double quotes (a backslash escapes a quote inside them), as sshd reads
    them; if what follows is not a key type, ``line`` is returned whole so that the error
    names what the line really starts with.
    """
    if line.startswith(_KEY_TYPE_PREFIXES):
        return line
    quoted = escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char.isspace() and not quoted:
            rest = line[index:].lstrip()
            return rest if rest.startswith(_KEY_TYPE_PREFIXES) else line
    return line


def public_key_from_file_data(data: bytes, label: str) -> PublicKey:
    """The one key of a public key file's contents (``label`` names the file in errors).

    Comment lines (``#``) and blank lines are skipped, as in authorized_keys. More than one
    key line is refused rather than the first taken: a peer's number must be unambiguous.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if data.lstrip().startswith(b"openssh-key-v1"):
            raise KeyFileError(f"{label} is not a public key file") from None
        raise KeyFileError(f"{label} is not a text file") from None
    key_lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not key_lines:
        raise KeyFileError(f"{label} is empty")
    if key_lines[0][1].lstrip().startswith("-----BEGIN"):
        # A private key (or other PEM) file: its first line gets the error that says so.
        return PublicKey._parse(key_lines[0][1], label)
    if len(key_lines) > 1:
        numbers = ", ".join(str(number) for number, _ in key_lines[:5])
        more = ", ..." if len(key_lines) > 5 else ""
        raise KeyFileError(
            f"{label} holds {len(key_lines)} key lines (lines {numbers}{more}): a public key "
            f"file for hotline holds exactly one key"
        )
    return PublicKey._parse(key_lines[0][1], label)


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _wire_blob(raw: bytes) -> bytes:
    return _ssh_string(_KEY_TYPE_BYTES) + _ssh_string(raw)


def _read_limited(path: PathArg, what: str) -> tuple[bytes, os.stat_result]:
    """Read a whole key file, and stat the very file that was read (not whatever the path
    names a moment later)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise KeyFileError(f"no such {what} file: {_show(path)}") from None
    except IsADirectoryError:
        raise KeyFileError(f"{_show(path)} is a directory, not a {what} file") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {what} file {_show(path)}: {e.strerror}") from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{_show(path)} is too large to be a {what} file")
    return data, st


def _fsync_dir(directory: str) -> None:
    # Makes the new directory entry durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) already carrying ``mode``, and fill it.

    The file is created with its final mode by open() itself, so a private key is never
    readable by anyone else, not even between the create and a later chmod. The fchmod after
    only widens what a strict umask narrowed, so the result is exactly ``mode``.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_replace(path: str, data: bytes, mode: int) -> None:
    """Write ``path`` atomically: a reader sees the old file or the new one, never half.

    The temporary file lives in the same directory so that os.replace is a rename within one
    file system; mkstemp creates it 0600, so secret data is never exposed while it is written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".hotline-", suffix=".tmp")
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _writing(path: str, what: str, action: Callable[[], None]) -> None:
    try:
        action()
    except FileExistsError:
        raise KeyFileError(
            f"{what} file {path!r} already exists: pass overwrite=True to replace it"
        ) from None
    except OSError as e:
        raise KeyFileError(f"cannot write {what} file {path!r}: {e.strerror}") from None


# --------------------------------------------------------------------------- PublicKey


@functools.total_ordering
class PublicKey:
    """An Ed25519 public key (the peer's "number"). Immutable, hashable, ordered by raw bytes.

    Equality, hashing and ordering look at the key only: the comment is a label for humans and
    two copies of one key with different comments are the same number.
    """

    __slots__ = ("_comment", "_raw", "_x25519")

    def __init__(self, raw: bytes, comment: str = "") -> None:
        if not isinstance(raw, bytes) or len(raw) != _RAW_LEN:
            raise LocalProtocolError("an Ed25519 public key is exactly 32 bytes")
        if not isinstance(comment, str):
            raise LocalProtocolError("a key comment is a str")
        if "\n" in comment or "\r" in comment:
            # The .pub format is one line; a newline would split the key file in two.
            raise LocalProtocolError("a key comment cannot contain a line break")
        self._raw = raw
        self._comment = comment
        self._x25519: bytes | None = None

    @property
    def raw(self) -> bytes:
        """The 32 bytes of the Ed25519 public key."""
        return self._raw

    @property
    def comment(self) -> str:
        """A label for humans (``alice@laptop``); not part of the key's identity."""
        return self._comment

    @property
    def x25519(self) -> bytes:
        """The 32-byte X25519 public key derived from this key (what the handshake uses).

        Raises :class:`LocalProtocolError` if the 32 bytes are not a usable Ed25519 point (not
        on the curve, or of small order), which no honestly generated key is.
        """
        if self._x25519 is None:
            try:
                self._x25519 = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(self._raw)
            except nacl.exceptions.CryptoError:
                raise LocalProtocolError(
                    "not a valid Ed25519 public key: it cannot be converted to X25519"
                ) from None
        return self._x25519

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is this key's Ed25519 signature of ``message``."""
        if not isinstance(signature, bytes) or len(signature) != _SIG_LEN:
            return False
        try:
            nacl.signing.VerifyKey(self._raw).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            # CryptoError too: libsodium rejects some malformed keys/signatures that way, and
            # "does not verify" is the only honest answer for them.
            return False
        return True

    def fingerprint(self) -> str:
        """``SHA256:...``, exactly the second field of ``ssh-keygen -lf``'s output."""
        digest = hashlib.sha256(_wire_blob(self._raw)).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    def to_openssh(self) -> str:
        """The one-line ``ssh-ed25519 AAAA... comment`` form, without a newline."""
        line = _KEY_TYPE + " " + base64.b64encode(_wire_blob(self._raw)).decode("ascii")
        return f"{line} {self._comment}" if self._comment else line

    @classmethod
    def from_openssh(cls, text: str) -> PublicKey:
        """Parse one ``ssh-ed25519 <base64> [comment]`` line.

        Strict on purpose: this is a peer's number, and a key that only half parses is not
        one. The blob must decode, carry the type ``ssh-ed25519`` and a 32-byte key that is a
        valid curve point, with nothing after it.
        """
        return cls._parse(text, "public key")

    @classmethod
    def _parse(cls, text: str, label: str) -> PublicKey:
        if not isinstance(text, str):
            raise KeyFileError(f"{label}: expected text, got {type(text).__name__}")
        line = text.strip()
        if not line:
            raise KeyFileError(f"{label} is empty")
        if "\n" in line or "\r" in line:
            raise KeyFileError(f"{label}: expected one line, found several")
        fields = _without_options(line).split(None, 2)
        key_type = fields[0]
        if key_type != _KEY_TYPE:
            if key_type.startswith("-----BEGIN"):
                raise KeyFileError(
                    f"{label} is a private key file, not a public key (use the .pub file)"
                )
            shown = _safe_name(key_type.encode("utf-8", errors="replace"))
            raise KeyFileError(
                f"{label}: unsupported key type {shown!r}: hotline uses {_KEY_TYPE} keys"
            )
        if len(fields) < 2:
            raise KeyFileError(f"{label}: the key data after {_KEY_TYPE!r} is missing")
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{label}: the key data is not valid base64") from None
        reader = _Reader(blob)
        try:
            inner = reader.string()
            if inner != _KEY_TYPE_BYTES:
                raise KeyFileError(
                    f"{label}: the key data is of type {_safe_name(inner)!r} but the line says "
                    f"{_KEY_TYPE!r}"
                )
            raw = reader.string()
        except ValueError:
            raise KeyFileError(f"{label}: the key data is truncated") from None
        if len(raw) != _RAW_LEN:
            raise KeyFileError(
                f"{label}: an Ed25519 key is {_RAW_LEN} bytes, this one is {len(raw)}"
            )
        if reader.remaining:
            raise KeyFileError(f"{label}: unexpected bytes after the key data")
        comment = fields[2].strip() if len(fields) == 3 else ""
        key = cls(raw, comment)
        try:
            key.x25519  # noqa: B018 -- a number that cannot do a handshake is a bad key file
        except LocalProtocolError:
            raise KeyFileError(f"{label}: not a valid Ed25519 public key") from None
        return key

    @classmethod
    def load(cls, path: PathArg) -> PublicKey:
        """Read a ``.pub`` file: exactly one key line, which may follow comment lines (``#``)
        and blank lines and may carry authorized_keys options before the key type."""
        data, _ = _read_limited(path, "public key")
        return public_key_from_file_data(data, _show(path))

    def save(self, path: PathArg) -> None:
        """Write :meth:`to_openssh` and a newline to ``path`` (mode 0644), replacing it."""
        target = os.fspath(path)
        data = (self.to_openssh() + "\n").encode("utf-8")
        _writing(target, "public key", lambda: _write_replace(target, data, 0o644))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._raw == other._raw

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._raw < other._raw

    def __hash__(self) -> int:
        return hash((PublicKey, self._raw))

    def __repr__(self) -> str:
        if self._comment:
            return f"PublicKey({self.fingerprint()}, comment={self._comment!r})"
        return f"PublicKey({self.fingerprint()})"


# --------------------------------------------------------------------------- Identity


class _PrivateHeader:
    """What the clear part of an OpenSSH private key file says: the cipher and the key type.

    cryptography parses the file again and does the real work; reading the header first is
    only for honest error messages. It names an RSA key as RSA even when it is encrypted and
    no passphrase was given, and it tells a wrong passphrase apart from a damaged file.
    """

    def __init__(self, data: bytes, label: str) -> None:
        text = data.strip()
        if not text.startswith(_PRIVATE_BEGIN):
            _refuse_public_key(data, label)
            if text.startswith(b"-----BEGIN"):
                raise KeyFileError(
                    f"{label} is not in OpenSSH private key format (convert it with "
                    f"'ssh-keygen -p -f <file>')"
                )
            raise KeyFileError(f"{label} is not an OpenSSH private key")
        end = text.find(_PRIVATE_END)
        if end < 0:
            raise KeyFileError(f"{label} is truncated: the END line is missing")
        body = b"".join(text[len(_PRIVATE_BEGIN) : end].split())
        try:
            decoded = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{label} is damaged: its body is not valid base64") from None
        reader = _Reader(decoded)
        try:
            reader.expect(_PRIVATE_MAGIC)
            self.cipher = reader.string()
            self.kdf = reader.string()
            reader.string()  # KDF options
            count = reader.uint32()
            if count != 1:
                raise KeyFileError(f"{label} holds {count} keys; hotline expects exactly one")
            public_blob = reader.string()
            reader.string()  # the (possibly encrypted) private section
            key_reader = _Reader(public_blob)
            self.key_type = key_reader.string()
            self.public_raw = key_reader.string() if self.key_type == _KEY_TYPE_BYTES else b""
        except ValueError:
            raise KeyFileError(f"{label} is damaged or truncated") from None

    @property
    def encrypted(self) -> bool:
        return self.cipher != b"none"


def _refuse_public_key(data: bytes, label: str) -> None:
    """Say so when what was given as a private key is a public key file."""
    first_key_line = next(
        (line for line in data.splitlines() if line.strip() and not line.startswith(b"#")), b""
    )
    if first_key_line.lstrip().startswith(tuple(p.encode() for p in _KEY_TYPE_PREFIXES)):
        raise KeyFileError(
            f"{label} is a public key, not a private key (give the file without .pub)"
        )


def _load_private(
    data: bytes, passphrase: bytes | Callable[[], bytes | None] | None, label: str
) -> ed25519.Ed25519PrivateKey:
    """The key in ``data``; ``passphrase`` may be a function, asked only if it is encrypted."""
    if not isinstance(data, bytes):
        raise KeyFileError(f"{label}: expected bytes, got {type(data).__name__}")
    header = _PrivateHeader(data, label)
    if callable(passphrase):
        passphrase = passphrase() if header.encrypted else None
    if passphrase is not None and not isinstance(passphrase, bytes):
        raise LocalProtocolError("a passphrase is bytes (or None)")
    if header.key_type != _KEY_TYPE_BYTES:
        raise KeyFileError(
            f"{label} holds a {_safe_name(header.key_type)!r} key: hotline uses {_KEY_TYPE} keys"
        )
    if len(header.public_raw) != _RAW_LEN:
        raise KeyFileError(f"{label} is damaged: its public key is not 32 bytes")
    if header.encrypted and not passphrase:
        raise KeyFileError(f"{label} is encrypted: a passphrase is needed")
    # ssh ignores a passphrase given for an unencrypted key, and so do we; cryptography would
    # refuse it, so it is not passed on.
    password = passphrase if header.encrypted else None
    try:
        key = serialization.load_ssh_private_key(data, password)
    except Exception:
        # Deliberately broad: this parses bytes from disk, and whatever the parser objects to
        # (ValueError, TypeError, UnsupportedAlgorithm, ...) the caller's answer is the same:
        # this file cannot be used. The header above has already been read, so for an
        # encrypted key the likely cause is the passphrase: its only check is the check bytes.
        if header.encrypted:
            if header.kdf != b"bcrypt" or header.cipher not in _READABLE_CIPHERS:
                raise KeyFileError(
                    f"{label} is encrypted with {_safe_name(header.cipher)!r}, which hotline "
                    f"cannot read (re-encrypt it with 'ssh-keygen -p -Z aes256-ctr -f <file>')"
                ) from None
            raise KeyFileError(f"wrong passphrase for {label} (or the file is damaged)") from None
        raise KeyFileError(f"{label} is damaged: not a readable OpenSSH private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        # Unreachable while the header check above holds; kept so a parser surprise cannot
        # turn into a wrong-type key downstream.
        raise KeyFileError(f"{label} does not hold an Ed25519 key: hotline uses {_KEY_TYPE} keys")
    if key.public_key().public_bytes_raw() != header.public_raw:
        raise KeyFileError(f"{label} is damaged: its private and public parts do not match")
    return key


#: From this many bytes on, :meth:`Identity.sign` signs with OpenSSL (cryptography) instead of
#: libsodium (pynacl): libsodium is faster on short messages, OpenSSL past about 4 KiB (at
#: 64 KiB, 0.2 ms against 0.42; at 1 MiB, 2.7 ms against 7.7). Verification stays with
#: libsodium, whose checks decide what is accepted.
_OPENSSL_SIGNS_FROM = 4096


class Identity:
    """This node's private Ed25519 key.

    The comment is a label that travels with the public key (:attr:`public_key` carries it and
    :meth:`save` writes it into the ``.pub`` file). It comes from the caller only (the
    constructor, or the ``comment=`` keyword of :meth:`load`): cryptography writes an empty
    comment inside the private key file, and :meth:`load` does not look at the ``.pub``
    sibling, so a loaded identity has the comment it is given (``""`` by default). The
    ``.pub`` file is where the comment lives.
    """

    __slots__ = (
        "_comment", "_openssl_key", "_public", "_seed", "_signing_key", "_x25519_key",
        "_x25519_private",
    )

    def __init__(self, signing_key: nacl.signing.SigningKey, comment: str = "") -> None:
        if not isinstance(signing_key, nacl.signing.SigningKey):
            raise LocalProtocolError("an Identity is made from a nacl.signing.SigningKey")
        self._signing_key = signing_key
        self._seed = bytes(signing_key)
        # Validates the comment as well (no line breaks).
        self._public = PublicKey(bytes(signing_key.verify_key), comment)
        self._comment = comment
        self._x25519_private: bytes | None = None
        self._x25519_key: x25519.X25519PrivateKey | None = None
        self._openssl_key: ed25519.Ed25519PrivateKey | None = None

    @classmethod
    def generate(cls, comment: str = "") -> Identity:
        """A new random identity."""
        return cls(nacl.signing.SigningKey.generate(), comment)

    @classmethod
    def from_seed(cls, seed: bytes, comment: str = "") -> Identity:
        """The identity of a 32-byte seed: deterministic, for tests and test vectors."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise LocalProtocolError("an Ed25519 seed is exactly 32 bytes")
        return cls(nacl.signing.SigningKey(seed), comment)

    @property
    def public_key(self) -> PublicKey:
        """This node's number, with the identity's comment."""
        return self._public

    @property
    def comment(self) -> str:
        return self._comment

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature of ``message``."""
        if len(message) < _OPENSSL_SIGNS_FROM:
            return self._signing_key.sign(message).signature
        # Ed25519 signatures are deterministic (RFC 8032): both libraries give the same 64
        # bytes, and OpenSSL's SHA-512 makes it two to three times faster on long messages.
        if self._openssl_key is None:
            self._openssl_key = ed25519.Ed25519PrivateKey.from_private_bytes(self._seed)
        return self._openssl_key.sign(message)

    @property
    def x25519_private(self) -> bytes:
        """The 32-byte X25519 private key derived from this key (what the handshake uses)."""
        if self._x25519_private is None:
            # libsodium wants the 64-byte seed||public form of the secret key.
            _, secret = nacl.bindings.crypto_sign_seed_keypair(self._seed)
            self._x25519_private = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret)
        return self._x25519_private

    @property
    def x25519_key(self) -> x25519.X25519PrivateKey:
        """:attr:`x25519_private` as a key object, loaded once for every handshake."""
        if self._x25519_key is None:
            self._x25519_key = x25519.X25519PrivateKey.from_private_bytes(self.x25519_private)
        return self._x25519_key

    def to_openssh_private(self, passphrase: bytes | None = None) -> bytes:
        """The OpenSSH private key file (PEM), encrypted when a passphrase is given.

        Encryption is what ``ssh-keygen`` does by default: bcrypt KDF, aes256-ctr. An empty
        passphrase is refused rather than silently writing the key in the clear; pass None
        for an unencrypted file.
        """
        encryption: serialization.KeySerializationEncryption
        if passphrase is None:
            encryption = serialization.NoEncryption()
        elif not isinstance(passphrase, bytes):
            raise LocalProtocolError("a passphrase is bytes (or None)")
        elif not passphrase:
            raise LocalProtocolError("empty passphrase: pass None to write an unencrypted key")
        else:
            encryption = serialization.BestAvailableEncryption(passphrase)
        key = ed25519.Ed25519PrivateKey.from_private_bytes(self._seed)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
        )

    @classmethod
    def from_openssh_private(
        cls, data: bytes, passphrase: bytes | None = None, *, comment: str = ""
    ) -> Identity:
        """Read an OpenSSH private key file's contents (see the class doc for the comment)."""
        key = _load_private(data, passphrase, "the private key")
        return cls(nacl.signing.SigningKey(key.private_bytes_raw()), comment)

    @classmethod
    def load(cls, path: PathArg, passphrase: bytes | None = None, *, comment: str = "") -> Identity:
        """Read a private key file, refusing it, as ssh does, if others may read or write it.

        A private key that group or others can read may already be someone else's; one they
        can write may be theirs. Either way it is not safe to be this node's identity.
        """
        return load_identity_file(path, passphrase, comment=comment)

    def save(
        self, path: PathArg, passphrase: bytes | None = None, *, overwrite: bool = False
    ) -> None:
        """Write the private key to ``path`` (mode 0600) and the public key to ``path.pub``
        (mode 0644, with the comment).

        Without ``overwrite`` an existing file at either path is an error and nothing is
        written: the ``.pub`` might be a peer's number kept under that name. With it, each
        file is replaced atomically, so a crash leaves the old key or the new one.
        """
        target = os.fspath(path)
        pub_target = target + ".pub"
        private = self.to_openssh_private(passphrase)
        public = (self._public.to_openssh() + "\n").encode("utf-8")
        if overwrite:
            _writing(target, "private key", lambda: _write_replace(target, private, 0o600))
            _writing(pub_target, "public key", lambda: _write_replace(pub_target, public, 0o644))
            return
        if os.path.lexists(pub_target):
            raise KeyFileError(
                f"public key file {pub_target!r} already exists: pass overwrite=True to replace it"
            )
        _writing(target, "private key", lambda: _write_new(target, private, 0o600))
        try:
            _writing(pub_target, "public key", lambda: _write_new(pub_target, public, 0o644))
        except KeyFileError:
            # Someone created the .pub in between: undo, so that no half-saved pair remains.
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise

    def __repr__(self) -> str:
        if self._comment:
            return f"Identity({self._public.fingerprint()}, comment={self._comment!r})"
        return f"Identity({self._public.fingerprint()})"


def load_identity_file(
    path: PathArg,
    passphrase: bytes | Callable[[], bytes | None] | None,
    *,
    comment: str = "",
) -> Identity:
    """:meth:`Identity.load`, where ``passphrase`` may also be a function called only when the
    key is encrypted (the command line's prompt), after the file's mode has been checked."""
    data, st = _read_limited(path, "private key")
    # A public key given by mistake is named as such first: its usual mode 0644 would
    # otherwise draw a complaint about permissions, which is not the problem.
    _refuse_public_key(data, _show(path))
    if os.name == "posix" and st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise KeyFileError(
            f"permissions {mode:04o} for {_show(path)} are too open: a private key must be "
            f"readable only by its owner (chmod 600 {_show(path)})"
        )
    return identity_from_file_data(data, passphrase, _show(path), comment=comment)


def identity_from_file_data(
    data: bytes,
    passphrase: bytes | Callable[[], bytes | None] | None,
    label: str,
    *,
    comment: str = "",
) -> Identity:
    """The identity in a private key file's contents (``label`` names them in errors)."""
    key = _load_private(data, passphrase, label)
    return Identity(nacl.signing.SigningKey(key.private_bytes_raw()), comment)


# --------------------------------------------------------------------------- line id


def line_id(a: PublicKey, b: PublicKey) -> bytes:
    """The 32-byte name of the line between ``a`` and ``b``; the same from either end.

    The keys are sorted so both parties compute the same value without agreeing on who is
    "first"; the context string keeps this hash from colliding with any other use of BLAKE2b.
    """
    if not isinstance(a, PublicKey) or not isinstance(b, PublicKey):
        raise LocalProtocolError("line_id takes two PublicKey objects")
    if a == b:
        raise LocalProtocolError("a line needs two different keys: a line to yourself is a misuse")
    low, high = sorted((a.raw, b.raw))
    return hashlib.blake2b(_LINE_ID_CONTEXT + low + high, digest_size=32).digest()
