"""``hotline run --config FILE``: the node's settings in a TOML file, and the known-peers file.

The file says what the flags say, so that a service starts with one argument; a flag given
on the command line wins over the file (docs/cli.md, "Configuration file"). Every value is
checked when the file is read, before any key is loaded or any port bound: an unknown key, a
value of the wrong type or out of range is a usage error (status 2) naming the file and the
key (``node.toml: peers.alice.conect: unknown key``), so a typo is never silently ignored.

A file chooses one of two shapes, and the shape decides where the stores are:

- ``peer = ...``: one peer, exactly as ``--peer``; the store is ``DATA/hotline.db``.
- ``[peers.NAME]`` tables and/or ``known_peers = FILE``: a node serving several peers from one
  process and one port, each line with its own store at ``DATA/peers/NAME/hotline.db``. This
  shape keeps that layout even with a single peer listed, so that adding a second peer never
  moves the first one's store.

The known-peers file is in the authorized_keys style: one OpenSSH public key per line,
``#`` comments and blank lines allowed, and the first word of the key's comment is the
peer's name (``ssh-ed25519 AAAA... alice laptop`` names the peer ``alice``). Each line is
parsed by the same strict parser as a ``.pub`` file.

Relative paths in the file are taken from the file's own directory, not the working
directory, so a service finds the same files wherever it is started.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ._status import CliError

if TYPE_CHECKING:
    from .._config import Config
    from .._keys import PublicKey

__all__ = [
    "ConfigFileError",
    "PeerSpec",
    "apply_config_file",
    "load_known_peers",
    "parse_address",
    "run_config",
    "valid_peer_name",
]

Address = tuple[str, int]

#: A peer's name: a directory name under ``DATA/peers/`` and a word in ``@NAME`` input lines,
#: so nothing that a shell, a path or the input syntax would read otherwise.
_PEER_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")

# The Config field set by the file's ``heartbeat`` and by ``--heartbeat``: one spelling only.
_HEARTBEAT_FIELD = "heartbeat_interval"

_TOP_KEYS = {
    "key": "this node's private key file",
    "passphrase_file": "the passphrase file of an encrypted key",
    "data": "the data directory",
    "listen": "HOST:PORT to accept calls on",
    "connect": "HOST:PORT of the peer (one peer only)",
    "peer": "the peer's public key file or text (one peer only)",
    "peers": "a table per peer: [peers.NAME]",
    "known_peers": "an authorized_keys-style file of named peer keys",
    "heartbeat": "the heartbeat interval in seconds",
    "durability": '"FULL" or "NORMAL"',
    "metrics": "HOST:PORT to serve the metrics on",
    "settings": "a table of hotline.Config fields",
}
_PEER_KEYS = {"key": "the peer's public key file or text", "connect": "HOST:PORT of the peer"}
_DURABILITIES = ("FULL", "NORMAL")


class ConfigFileError(CliError):
    """The configuration file cannot be used as written: a usage error (status 2)."""


@dataclass(frozen=True)
class PeerSpec:
    """One line of a node serving several peers."""

    name: str
    key: PublicKey
    connect: Address | None


def valid_peer_name(name: str) -> bool:
    return _PEER_NAME.fullmatch(name) is not None


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (``[IPv6]:PORT``) as the command line reads it; ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             dict: "a table", list: "an array"}
    return names.get(type(value), type(value).__name__)


class _Reader:
    """Typed access to one table of the file; every error names the file and the key."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.table = table
        self.prefix = prefix

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigFileError(f"{self.path}: {self.prefix}{key}: {problem}")

    def check_known(self, known: dict[str, str], listed: str = "") -> None:
        for key in self.table:
            if key not in known:
                self.fail(key, f"unknown key ({listed or 'known here: ' + ', '.join(known)})")

    def string(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(key, f"must be a string, not {_type_name(value)} ({value!r})")
        return value

    def path_value(self, key: str) -> str | None:
        """A file name, taken from the configuration file's directory when relative."""
        value = self.string(key)
        if value is None:
            return None
        if not value:
            self.fail(key, "must not be empty")
        return str(self.path.parent / os.path.expanduser(value))

    def key_value(self, key: str) -> str | None:
        """A public key: the ``ssh-ed25519 AAAA...`` text as it is, or a file name."""
        value = self.string(key)
        if value is not None and value.lstrip().startswith(("ssh-", "ecdsa-")):
            return value
        return self.path_value(key)

    def address(self, key: str, *, listening: bool) -> Address | None:
        value = self.string(key)
        if value is None:
            return None
        try:
            host, port = parse_address(value)
        except ValueError as exc:
            self.fail(key, str(exc))
        if port == 0 and not listening:
            self.fail(key, "the port of an address to call cannot be 0")
        return host, port

    def table_value(self, key: str) -> dict[str, Any] | None:
        value = self.table.get(key)
        if value is not None and not isinstance(value, dict):
            self.fail(key, f"must be a table ([{self.prefix}{key}]), not {_type_name(value)}")
        return value


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigFileError(f"no such configuration file: {str(path)!r}") from None
    except IsADirectoryError:
        raise ConfigFileError(f"{str(path)!r} is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None


def _settings(reader: _Reader, heartbeat: float | None) -> dict[str, Any]:
    """The ``[settings]`` table and ``heartbeat``, checked by :class:`hotline.Config` itself."""
    from .._config import Config
    from .._errors import HotlineError

    table = reader.table_value("settings") or {}
    settings = _Reader(reader.path, table, "settings.")
    names = [f.name for f in fields(Config) if f.name != _HEARTBEAT_FIELD]
    if _HEARTBEAT_FIELD in table:
        settings.fail(_HEARTBEAT_FIELD, "set it with the top-level key heartbeat")
    settings.check_known(dict.fromkeys(names, ""),
                         "not a field of hotline.Config: see docs/api.md, \"Config\"")
    values = dict(table)
    if heartbeat is not None:
        values[_HEARTBEAT_FIELD] = heartbeat
    try:
        Config(**values)
    except HotlineError as exc:
        message = str(exc)
        field = message.split(" ", 1)[0]
        if field == _HEARTBEAT_FIELD:
            reader.fail("heartbeat", message.removeprefix(field + " "))
        if field in table:
            settings.fail(field, message.removeprefix(field + " "))
        raise ConfigFileError(f"{reader.path}: [settings]: {message}") from None
    return dict(table)


def _heartbeat(reader: _Reader) -> float | None:
    value = reader.table.get("heartbeat")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        reader.fail("heartbeat", f"must be a number of seconds, not {_type_name(value)} "
                    f"({value!r})")
    return float(value)


def load_known_peers(path: str) -> dict[str, PublicKey]:
    """The named keys of an authorized_keys-style file, in file order."""
    from .._keys import public_key_from_file_data

    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except FileNotFoundError:
        raise CliError(f"no such known-peers file: {path!r}") from None
    except OSError as exc:
        raise CliError(f"cannot read known-peers file {path!r}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"known-peers file {path!r} is not UTF-8 text") from None
    peers: dict[str, PublicKey] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label = f"{path!r} line {number}"
        key = public_key_from_file_data(line.encode("utf-8"), label)
        words = key.comment.split()
        if not words:
            raise CliError(f"{label}: the key has no name: write the peer's name after it")
        name = words[0]
        if not valid_peer_name(name):
            raise CliError(f"{label}: {name!r} is not a valid peer name ({_NAME_RULE})")
        if name in peers:
            raise CliError(f"{label}: the name {name!r} is used twice")
        for other, known in peers.items():
            if known == key:
                raise CliError(f"{label}: the key of {name!r} is already the key of {other!r}")
        peers[name] = key
    return peers


_NAME_RULE = "letters, digits, '.', '_' and '-', 1 to 64 of them, not starting with '.'"


def _peers(reader: _Reader, known_file: str | None) -> list[PeerSpec]:
    """Every peer of a several-peer file: the known-peers file's, with their [peers] tables."""
    from ._keys import load_peer

    known = load_known_peers(known_file) if known_file is not None else {}
    tables = reader.table_value("peers") or {}
    specs: dict[str, PeerSpec] = {
        name: PeerSpec(name, key, None) for name, key in known.items()
    }
    for name, table in tables.items():
        where = f"peers.{name}"
        if not valid_peer_name(name):
            reader.fail(where, f"{name!r} is not a valid peer name ({_NAME_RULE})")
        if not isinstance(table, dict):
            reader.fail(where, f"must be a table ([{where}]), not {_type_name(table)}")
        peer = _Reader(reader.path, table, where + ".")
        peer.check_known(_PEER_KEYS)
        key_text = peer.key_value("key")
        connect = peer.address("connect", listening=False)
        if key_text is not None and name in known:
            peer.fail("key", f"{name!r} already has a key in the known-peers file {known_file!r}")
        if key_text is None and name not in known:
            where_known = f" or in {known_file!r}" if known_file else ""
            peer.fail("key", f"missing: give the peer's key here{where_known}")
        key = load_peer(key_text) if key_text is not None else known[name]
        for other in specs.values():
            if other.key == key and other.name != name:
                peer.fail("key", f"the same key as peer {other.name!r}")
        specs[name] = PeerSpec(name, key, connect)
    if not specs:
        reader.fail("peers", "no peer: add a [peers.NAME] table or a line to known_peers")
    return list(specs.values())


def _load(path: Path, args: argparse.Namespace) -> None:
    """Fill ``args`` from the file wherever the command line left a value unset."""
    reader = _Reader(path, _read_toml(path))
    reader.check_known(_TOP_KEYS)
    several = "peers" in reader.table or "known_peers" in reader.table
    if several:
        for key in ("peer", "connect"):
            if key in reader.table:
                reader.fail(key, "with [peers] or known_peers, give each peer's key and "
                            "connect in its [peers.NAME] table")
        if args.peer is not None:
            raise ConfigFileError(f"--peer: {path} serves several peers ([peers] or "
                                  "known_peers): run without --peer")
        if args.connect is not None:
            raise ConfigFileError(f"--connect: {path} serves several peers: give connect "
                                  "in each [peers.NAME] table")
    durability = reader.string("durability")
    if durability is not None and durability not in _DURABILITIES:
        reader.fail("durability", f'must be "FULL" or "NORMAL", not {durability!r}')
    heartbeat = _heartbeat(reader)
    args.settings = _settings(reader, heartbeat)
    values = {
        "key": reader.path_value("key"),
        "passphrase_file": reader.path_value("passphrase_file"),
        "data": reader.path_value("data"),
        "listen": reader.address("listen", listening=True),
        "connect": reader.address("connect", listening=False),
        "peer": reader.key_value("peer"),
        "heartbeat": heartbeat,
        "durability": durability,
        "metrics": reader.address("metrics", listening=True),
    }
    for name, value in values.items():
        if getattr(args, name) is None:  # a flag given wins over the file
            setattr(args, name, value)
    if several:
        args.peers = _peers(reader, reader.path_value("known_peers"))


def apply_config_file(args: argparse.Namespace) -> None:
    """Complete ``run``'s arguments: from ``--config`` if given, then the defaults.

    Raises :class:`ConfigFileError` for a file that cannot be used and for a required value
    given neither on the command line nor in the file.
    """
    args.settings = {}
    args.peers = None
    if args.config is not None:
        _load(Path(args.config), args)
    if args.durability is None:
        args.durability = "FULL"
    required = ["key", "data"] if args.peers is not None else ["key", "peer", "data"]
    missing = [f"--{name}" for name in required if getattr(args, name) is None]
    if missing:
        where = f" (neither given nor in {args.config})" if args.config else ""
        raise ConfigFileError(f"the following arguments are required: {', '.join(missing)}"
                              + where)


def run_config(args: argparse.Namespace) -> Config:
    """The line's :class:`~hotline.Config`: the file's settings, then ``--heartbeat``."""
    from .._config import Config

    values = dict(args.settings)
    if args.heartbeat is not None:
        values[_HEARTBEAT_FIELD] = args.heartbeat
    return Config(**values)
