"""``keygen`` and ``fingerprint``, and the loading of keys and passphrases for ``run``.

The key code (``hotline._keys``, which loads cryptography) is imported by each command when it
runs, so that the command line starts, and handles its signals, before that import.
"""

from __future__ import annotations

import argparse
import getpass
import os
import stat
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._status import CliError

if TYPE_CHECKING:
    from .._keys import Identity, PublicKey


# The passphrase and key files read from disk or standard input are small; the cap keeps a
# mistaken path (a log, a device) from being read whole.
_MAX_SMALL_FILE = 64 * 1024


def _read_passphrase(path: str | None) -> bytes | None:
    """The passphrase in file ``path``, refused, like a private key, if others may read it."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(_MAX_SMALL_FILE + 1)
    except IsADirectoryError:
        raise CliError(f"{path!r} is a directory, not a passphrase file") from None
    except OSError as exc:
        raise CliError(f"cannot read passphrase file {path!r}: {exc.strerror}") from None
    if os.name == "posix" and mode & 0o077:
        raise CliError(
            f"permissions {stat.S_IMODE(mode):04o} for {path!r} are too open: a passphrase "
            f"file must be readable only by its owner (chmod 600 {path!r})"
        )
    if len(data) > _MAX_SMALL_FILE:
        raise CliError(f"{path!r} is too large to be a passphrase file")
    return data.rstrip(b"\r\n")


def _passphrase(
    passphrase_file: str | None, key_name: str
) -> bytes | Callable[[], bytes | None] | None:
    """The passphrase file's content or, with none and a terminal on standard input, a prompt
    that is shown only if the key turns out to be encrypted."""
    if passphrase_file is not None:
        return _read_passphrase(passphrase_file)
    if sys.stdin is None or not sys.stdin.isatty():
        return None

    def ask() -> bytes | None:
        try:
            typed = getpass.getpass(f"passphrase for {key_name}: ")
        except EOFError:
            return None
        return typed.encode("utf-8") or None

    return ask


def load_peer(value: str) -> PublicKey:
    """``--peer`` takes a public key file or the ``ssh-ed25519 AAAA...`` text itself."""
    from .._keys import PublicKey

    if os.path.isfile(value):
        return PublicKey.load(value)
    if value.lstrip().startswith(("ssh-", "ecdsa-")):
        return PublicKey.from_openssh(value.strip())
    if not os.path.exists(value):
        raise CliError(
            f"peer key {value!r} is neither a public key file nor an 'ssh-ed25519 AAAA...' key"
        )
    return PublicKey.load(value)


def load_identity(path: str, passphrase_file: str | None = None) -> Identity:
    from .._keys import load_identity_file

    return load_identity_file(path, _passphrase(passphrase_file, repr(path)))



def cmd_keygen(args: argparse.Namespace) -> int:
    from .._keys import Identity

    if not args.force:
        for path in (args.file, args.file + ".pub"):
            if os.path.exists(path):
                raise CliError(f"{path!r} exists: use --force to replace it")
    identity = Identity.generate(comment=args.comment)
    passphrase = _read_passphrase(args.passphrase_file)
    if passphrase == b"":
        raise CliError(f"the passphrase file {args.passphrase_file!r} is empty")
    identity.save(args.file, passphrase, overwrite=args.force)
    print(identity.public_key.fingerprint())
    return 0


def _is_private(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from .._keys import PublicKey, identity_from_file_data, public_key_from_file_data

    if args.file == "-":
        label = "the key on standard input"
        data = sys.stdin.buffer.read(_MAX_SMALL_FILE + 1) if sys.stdin is not None else b""
        if len(data) > _MAX_SMALL_FILE:
            raise CliError(f"{label} is too large to be a key")
        if _is_private(data):
            passphrase = _read_passphrase(args.passphrase_file)
            key = identity_from_file_data(data, passphrase, label).public_key
        else:
            key = public_key_from_file_data(data, label)
    else:
        try:
            with open(args.file, "rb") as handle:
                head = handle.read(64)
        except FileNotFoundError:
            raise CliError(f"no such key file: {args.file!r}") from None
        except IsADirectoryError:
            raise CliError(f"{args.file!r} is a directory, not a key file") from None
        except OSError as exc:
            raise CliError(f"cannot read key file {args.file!r}: {exc.strerror}") from None
        if _is_private(head):
            key = load_identity(args.file, args.passphrase_file).public_key
        else:
            key = PublicKey.load(args.file)
    print(key.fingerprint())
    return 0

