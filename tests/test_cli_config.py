"""``hotline run --config FILE``: the file, the flags over it, the known-peers file, and one
node serving two peers from one process and one port.

The node tests are real processes talking TCP on 127.0.0.1 (the helpers of test_cli.py: every
wait has a deadline and every child is killed in a ``finally``). The file's checks run
``main`` in this process: a usage error ends in ``SystemExit(2)`` before any key is loaded or
any port bound, so nothing else of the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
from test_cli import Keys, Node, cli, free_port, keys, one_error_line, spawn

from hotline._errors import KeyFileError
from hotline.cli import main
from hotline.cli._config_file import (
    ConfigFileError,
    apply_config_file,
    load_known_peers,
    run_config,
)
from hotline.cli._input import read_lines
from hotline.cli._node import PeerOutput, _addressed
from hotline.cli._output import Output
from hotline.cli._parser import build_parser
from hotline.cli._status import CliError

__all__ = ["keys", "spawn"]  # the fixtures of test_cli.py, used here by name

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and file modes are POSIX")


def known_line(keys: Keys, who: str, name: str, options: str = "") -> str:
    """``who``'s public key as a known-peers line naming it ``name``."""
    key_type, blob = Keys.pub(getattr(keys, who)).read_text().split()[:2]
    return f"{options}{key_type} {blob} {name}"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``hotline ARGV`` here; it must end as a usage error (2) with one line."""
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[-1].startswith("hotline run: error: "), captured.err
    return lines[-1].removeprefix("hotline run: error: ")


def parsed(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(["run", *argv])
    apply_config_file(args)
    return args


# --- the file's checks -------------------------------------------------------------------

BAD_FILES = {
    "unknown top-level key": (
        'key = "k"\ndata = "d"\npeer = "p.pub"\nlisten = "127.0.0.1:1"\nlistne = "x"\n',
        "node.toml: listne: unknown key (known here: key, passphrase_file, data, listen,",
    ),
    "unknown key of a peer": (
        '[peers.alice]\nkey = "a.pub"\nconect = "127.0.0.1:1"\n',
        "node.toml: peers.alice.conect: unknown key (known here: key, connect)",
    ),
    "unknown setting": (
        "[settings]\nheartbeat_multiplyer = 3\n",
        'node.toml: settings.heartbeat_multiplyer: unknown key (not a field of hotline.Config: '
        'see docs/api.md, "Config")',
    ),
    "heartbeat as text": (
        'heartbeat = "fast"\n',
        "node.toml: heartbeat: must be a number of seconds, not a string ('fast')",
    ),
    "heartbeat out of range": (
        "heartbeat = 0.001\n",
        "node.toml: heartbeat: must be a finite number in [0.01, 86400.0], not 0.001",
    ),
    "a port as a number": (
        "listen = 7400\n",
        "node.toml: listen: must be a string, not an integer (7400)",
    ),
    "an address without a port": (
        'connect = "192.0.2.1"\n',
        "node.toml: connect: expected HOST:PORT, got '192.0.2.1'",
    ),
    "an integer setting as a float": (
        "[settings]\npadding = 64.5\n",
        "node.toml: settings.padding: must be an integer, not 64.5",
    ),
    "a setting out of range": (
        "[settings]\nheartbeat_multiplier = 0.5\n",
        "node.toml: settings.heartbeat_multiplier: must be a finite number in [1.0, 255.0]",
    ),
    "the heartbeat among the settings": (
        "[settings]\nheartbeat_interval = 2\n",
        "node.toml: settings.heartbeat_interval: set it with the top-level key heartbeat",
    ),
    "settings not a table": (
        "settings = 3\n",
        "node.toml: settings: must be a table ([settings]), not an integer",
    ),
    "a durability of its own": (
        'durability = "fast"\n',
        'node.toml: durability: must be "FULL" or "NORMAL", not \'fast\'',
    ),
    "not TOML": (
        "key = \n",
        "node.toml: not valid TOML: Invalid value (at line 1, column 7)",
    ),
    "one peer and several": (
        'peer = "a.pub"\n[peers.alice]\nkey = "a.pub"\n',
        "node.toml: peer: with [peers] or known_peers, give each peer's key and connect in "
        "its [peers.NAME] table",
    ),
    "a peer name that is a path": (
        '[peers."../alice"]\nkey = "a.pub"\n',
        "node.toml: peers.../alice: '../alice' is not a valid peer name",
    ),
    "a peer name starting with a dot": (
        '[peers.".alice"]\nkey = "a.pub"\n',
        "node.toml: peers..alice: '.alice' is not a valid peer name",
    ),
    "a peer without a key": (
        '[peers.alice]\nconnect = "127.0.0.1:1"\n',
        "node.toml: peers.alice.key: missing: give the peer's key here",
    ),
    "a peer's connect port 0": (
        '[peers.alice]\nkey = "a.pub"\nconnect = "127.0.0.1:0"\n',
        "node.toml: peers.alice.connect: the port of an address to call cannot be 0",
    ),
    "no peer at all": (
        "[peers]\n",
        "node.toml: peers: no peer: add a [peers.NAME] table or a line to known_peers",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_file_that_cannot_be_used_is_a_usage_error_naming_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    text, expected = BAD_FILES[case]
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "node.toml", text)
    write(tmp_path / "a.pub", "")  # never read: every case fails before keys are loaded
    message = usage_error(capsys, "run", "--config", "node.toml")
    assert message.startswith(expected), message


def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.toml"
    message = usage_error(capsys, "run", "--config", str(missing))
    assert message == f"no such configuration file: {str(missing)!r}"


def test_what_neither_the_flags_nor_the_file_give_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "node.toml", 'listen = "127.0.0.1:0"\n')
    message = usage_error(capsys, "run", "--config", str(config), "--data", "d")
    assert message == (f"the following arguments are required: --key, --peer "
                       f"(neither given nor in {config})")


def test_without_a_file_the_required_flags_are_still_required(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = usage_error(capsys, "run", "--listen", "127.0.0.1:0")
    assert message == "the following arguments are required: --key, --peer, --data"


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--peer", "b.pub", "--peer: {config} serves several peers ([peers] or known_peers): "
     "run without --peer"),
    ("--connect", "127.0.0.1:9", "--connect: {config} serves several peers: give connect "
     "in each [peers.NAME] table"),
])
def test_peer_and_connect_flags_do_not_mix_with_several_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    config = write(tmp_path / "node.toml", '[peers.alice]\nkey = "a.pub"\n')
    message = usage_error(capsys, "run", "--config", str(config), flag, value)
    assert message == expected.format(config=config)


def test_a_peer_nobody_can_reach_is_a_usage_error(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "node.toml", (
        f'key = "{keys.bob}"\ndata = "d"\n'
        f'[peers.alice]\nkey = "{Keys.pub(keys.alice)}"\nconnect = "127.0.0.1:9"\n'
        f'[peers.carol]\nkey = "{Keys.pub(keys.carol)}"\n'
    ))
    message = usage_error(capsys, "run", "--config", str(config))
    assert message == (f"{config}: peer 'carol' has no connect address and the node no "
                       "listen address: give listen (or --listen), or peers.carol.connect")


def test_a_real_process_reports_a_bad_file_with_status_2(tmp_path: Path) -> None:
    write(tmp_path / "node.toml", "heartbeat = true\n")
    result = cli("run", "--config", "node.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "hotline run: error: node.toml: heartbeat: must be a number of seconds, not a "
        "boolean (True)"
    )


# --- what the file gives, and the flags over it ------------------------------------------


def test_the_file_fills_every_setting_from_its_own_directory(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = write(folder / "node.toml", (
        'key = "bob"\npassphrase_file = "bob.pass"\ndata = "/var/lib/hotline"\n'
        'peer = "ssh-ed25519 AAAA alice"\nlisten = "[::]:7400"\nconnect = "example.org:7401"\n'
        'heartbeat = 2\ndurability = "NORMAL"\n'
        "[settings]\nreconnect_max = 10.0\npadding = 128\n"
    ))
    args = parsed("--config", str(config))
    assert args.key == str(folder / "bob")
    assert args.passphrase_file == str(folder / "bob.pass")
    assert args.data == "/var/lib/hotline"
    assert args.peer == "ssh-ed25519 AAAA alice"  # key text is not a path
    assert args.listen == ("::", 7400)
    assert args.connect == ("example.org", 7401)
    assert args.durability == "NORMAL"
    assert args.peers is None
    config_values = run_config(args)
    assert (config_values.heartbeat_interval, config_values.reconnect_max,
            config_values.padding) == (2.0, 10.0, 128)


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "node.toml", (
        'key = "bob"\ndata = "d"\npeer = "alice.pub"\nlisten = "127.0.0.1:7400"\n'
        'heartbeat = 2\ndurability = "NORMAL"\n[settings]\nreconnect_max = 10.0\n'
    ))
    args = parsed("--config", str(config), "--key", "other", "--data", "elsewhere",
                  "--peer", "carol.pub", "--listen", "127.0.0.1:7500", "--heartbeat", "0.5",
                  "--durability", "FULL")
    assert (args.key, args.data, args.peer) == ("other", "elsewhere", "carol.pub")
    assert args.listen == ("127.0.0.1", 7500)
    assert args.durability == "FULL"
    assert run_config(args).heartbeat_interval == 0.5
    assert run_config(args).reconnect_max == 10.0  # what no flag gives stays the file's


def test_without_a_file_the_defaults_are_as_before(tmp_path: Path) -> None:
    args = parsed("--key", "k", "--peer", "p", "--data", "d", "--listen", "127.0.0.1:0")
    assert args.durability == "FULL"
    assert run_config(args) == run_config(parsed("--key", "k", "--peer", "p", "--data", "d",
                                                 "--heartbeat", "1"))


# --- the known-peers file ----------------------------------------------------------------


def test_known_peers_file_with_comments_blank_lines_and_options(
    tmp_path: Path, keys: Keys
) -> None:
    known = write(tmp_path / "known_peers", "\n".join([
        "# bob's peers, one OpenSSH public key per line, named by the comment's first word",
        "",
        known_line(keys, "alice", "alice laptop, since 2026"),
        "   # an indented comment",
        known_line(keys, "carol", "carol", options='from="192.0.2.0/24",no-pty '),
        "",
    ]))
    peers = load_known_peers(str(known))
    assert list(peers) == ["alice", "carol"]
    assert peers["alice"].fingerprint() == keys.fingerprints["alice"]
    assert peers["carol"].fingerprint() == keys.fingerprints["carol"]


@pytest.mark.parametrize(("lines", "expected"), [
    (["{alice}"], "line 1: the key has no name: write the peer's name after it"),
    (["{alice} alice@example"], "line 1: 'alice@example' is not a valid peer name"),
    (["{alice} alice", "{carol} alice"], "line 2: the name 'alice' is used twice"),
    (["{alice} alice", "{alice} carol"], "line 2: the key of 'carol' is already the key of "
     "'alice'"),
    (["# comment", "ssh-rsa AAAA alice"], "line 2: unsupported key type 'ssh-rsa'"),
])
def test_known_peers_file_errors_name_the_line(
    tmp_path: Path, keys: Keys, lines: list[str], expected: str
) -> None:
    bare = {who: " ".join(Keys.pub(getattr(keys, who)).read_text().split()[:2])
            for who in ("alice", "carol")}
    known = write(tmp_path / "known_peers", "\n".join(lines).format(**bare) + "\n")
    with pytest.raises((CliError, KeyFileError)) as raised:
        load_known_peers(str(known))
    assert str(raised.value).startswith(f"{str(known)!r} {expected}"), raised.value


def test_a_known_peers_problem_is_one_error_line(tmp_path: Path, keys: Keys) -> None:
    write(tmp_path / "known_peers", known_line(keys, "alice", "") + "\n")
    write(tmp_path / "node.toml", f'key = "{keys.bob}"\ndata = "d"\nlisten = "127.0.0.1:0"\n'
          'known_peers = "known_peers"\n')
    line = one_error_line(cli("run", "--config", "node.toml", cwd=tmp_path))
    # Named as it is reached from here: beside the file given with a relative name.
    assert line == ("hotline: error: 'known_peers' line 1: the key has no name: write the "
                    "peer's name after it")


def test_a_peer_table_gives_the_address_of_a_known_peer(tmp_path: Path, keys: Keys) -> None:
    write(tmp_path / "known_peers", known_line(keys, "alice", "alice") + "\n"
          + known_line(keys, "carol", "carol") + "\n")
    config = write(tmp_path / "node.toml", (
        'known_peers = "known_peers"\n[peers.carol]\nconnect = "127.0.0.1:7401"\n'
        f'[peers.dave]\nkey = "{Keys.pub(keys.bob)}"\n'
    ))
    args = parsed("--config", str(config), "--key", "bob", "--data", "d")
    assert [(p.name, p.connect) for p in args.peers] == [
        ("alice", None), ("carol", ("127.0.0.1", 7401)), ("dave", None)]
    assert args.peers[2].key.fingerprint() == keys.fingerprints["bob"]


def test_a_peer_keyed_twice_is_refused(tmp_path: Path, keys: Keys) -> None:
    write(tmp_path / "known_peers", known_line(keys, "alice", "alice") + "\n")
    config = write(tmp_path / "node.toml", (
        f'known_peers = "known_peers"\n[peers.alice]\nkey = "{Keys.pub(keys.alice)}"\n'
    ))
    with pytest.raises(ConfigFileError) as raised:
        parsed("--config", str(config), "--key", "bob", "--data", "d")
    assert str(raised.value) == (f"{config}: peers.alice.key: 'alice' already has a key in "
                                 f"the known-peers file {str(tmp_path / 'known_peers')!r}")


# --- real processes ----------------------------------------------------------------------


def _node_config(tmp_path: Path, keys: Keys, port: int) -> Path:
    """bob's file: alice in the known-peers file, carol in a [peers] table."""
    write(tmp_path / "known_peers", "# bob's peers\n\n" + known_line(keys, "alice", "alice"))
    return write(tmp_path / "bob.toml", (
        f'key = "{keys.bob}"\ndata = "bob-data"\nlisten = "127.0.0.1:{port}"\n'
        'heartbeat = 0.5\nknown_peers = "known_peers"\n'
        f'[peers.carol]\nkey = "{Keys.pub(keys.carol)}"\n'
        "[settings]\nreconnect_max = 0.5\n"
    ))


def _dialler(spawn: Callable[..., Node], keys: Keys, who: str, port: int,
             *extra: object) -> Node:
    return spawn(who, "run", "--key", getattr(keys, who), "--peer", Keys.pub(keys.bob),
                 "--data", f"{who}-data", "--connect", f"127.0.0.1:{port}", "--json",
                 "--heartbeat", "0.5", *extra)


def test_one_node_serves_two_peers_on_one_port(
    tmp_path: Path, keys: Keys, spawn: Callable[..., Node]
) -> None:
    port = free_port()
    _node_config(tmp_path, keys, port)
    bob = spawn("bob", "run", "--config", "bob.toml", "--json")
    bob.send("@alice hello alice", "@carol hello carol", "@carol second for carol",
             "nobody's", "@dave who?")
    alice = _dialler(spawn, keys, "alice", port)
    carol = _dialler(spawn, keys, "carol", port)
    alice.send("hi bob, alice here")
    carol.send("hi bob, carol here", "carol again")

    alice.wait_event(event="message", seq=1, body="hello alice")
    carol.wait_event(event="message", seq=2, body="second for carol")
    bob.wait_event(event="message", peer="alice", seq=1, body="hi bob, alice here")
    bob.wait_event(event="message", peer="carol", seq=2, body="carol again")
    bob.wait_event(event="delivered", peer="alice", upto=1)
    bob.wait_event(event="delivered", peer="carol", upto=2)
    assert [e["body"] for e in alice.of("message")] == ["hello alice"]
    assert [e["body"] for e in carol.of("message")] == ["hello carol", "second for carol"]
    # Every event of a line names its peer; the lines not sent say why, naming none.
    errors = bob.of("error")
    assert [e["message"] for e in errors] == [
        "a line must start with @NAME and a space (the peers: alice, carol)",
        "no peer named 'dave' (the peers: alice, carol)",
    ]
    assert all("peer" in e for e in bob.events if e["event"] not in ("error", "start")), \
        bob.describe()
    assert bob.events[0]["event"] == "start"
    assert set(bob.events[0]["peer_keys"]) == {"alice", "carol"}
    assert f"hotline: listening on 127.0.0.1:{port}" in bob.stderr

    bob.proc.send_signal(signal.SIGTERM)
    assert bob.wait_exit() == 3, bob.describe()  # two lines were not sent
    data = tmp_path / "bob-data"
    assert sorted(p.name for p in (data / "peers").iterdir()) == ["alice", "carol"]
    assert not (data / "hotline.db").exists()
    for name in ("alice", "carol"):
        assert stat_mode(data / "peers" / name) == 0o700
        log = cli("log", data / "peers" / name, cwd=tmp_path)
        assert log.stdout.splitlines()[0] == (
            f"line between {keys.fingerprints['bob']} (this node) and "
            f"{keys.fingerprints[name]} (the peer)"), log.stdout + log.stderr
        verified = cli("verify", data / "peers" / name, cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "messages: " in verified.stdout


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_until_delivered_ends_the_node_once_every_peer_holds_its_messages(
    tmp_path: Path, keys: Keys, spawn: Callable[..., Node]
) -> None:
    port = free_port()
    _node_config(tmp_path, keys, port)
    bob = spawn("bob", "run", "--config", "bob.toml", "--json", "--until-delivered")
    bob.send("@alice for alice", "@carol for carol")
    bob.close_stdin()
    alice = _dialler(spawn, keys, "alice", port)
    bob.wait_event(event="delivered", peer="alice", upto=1)
    # alice holds hers, carol is not there yet: the node waits for her.
    assert bob.proc.poll() is None, bob.describe()
    carol = _dialler(spawn, keys, "carol", port)
    assert bob.wait_exit() == 0, bob.describe()
    assert {e["peer"] for e in bob.of("delivered")} == {"alice", "carol"}
    carol.wait_event(event="message", seq=1, body="for carol")
    alice.wait_event(event="message", seq=1, body="for alice")


def test_a_single_peer_file_runs_as_the_flags_do(
    tmp_path: Path, keys: Keys, spawn: Callable[..., Node]
) -> None:
    """``peer =`` in the file: the store at DATA/hotline.db, events without a peer field,
    and a --listen flag in place of the file's address."""
    port = free_port()
    write(tmp_path / "bob.toml", (
        f'key = "{keys.bob}"\ndata = "file-data"\npeer = "{Keys.pub(keys.alice)}"\n'
        f'listen = "127.0.0.1:{free_port()}"\nheartbeat = 0.5\n'
    ))
    bob = spawn("bob", "run", "--config", "bob.toml", "--json", "--data", "flag-data",
                "--listen", f"127.0.0.1:{port}")
    bob.send("plain line")
    alice = _dialler(spawn, keys, "alice", port)
    alice.send("plain answer")
    alice.wait_event(event="message", seq=1, body="plain line")
    bob.wait_event(event="message", seq=1, body="plain answer")
    assert bob.events, bob.describe()
    assert all("peer" not in e for e in bob.events), bob.describe()
    assert f"hotline: listening on 127.0.0.1:{port}" in bob.stderr
    bob.proc.send_signal(signal.SIGINT)
    assert bob.wait_exit() == 0, bob.describe()
    assert (tmp_path / "flag-data" / "hotline.db").exists()
    assert not (tmp_path / "file-data").exists()


def test_the_example_files_are_a_valid_configuration(tmp_path: Path, keys: Keys) -> None:
    """examples/node.toml and examples/known_peers, as a user copies them beside the keys."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    for name in ("node.toml", "known_peers"):
        write(tmp_path / name, (examples / name).read_text())
    write(tmp_path / "carol.pub", Keys.pub(keys.carol).read_text())
    args = parsed("--config", str(tmp_path / "node.toml"))
    assert args.key == str(tmp_path / "bob")
    assert args.listen == ("0.0.0.0", 7400)
    assert [(p.name, p.connect) for p in args.peers] == [
        ("alice", ("alice.example.org", 7400)), ("carol", None)]
    assert args.peers[1].key.fingerprint() == keys.fingerprints["carol"]
    assert run_config(args).reconnect_max == 10.0


def test_an_error_on_one_line_stops_the_node_naming_the_peer(
    tmp_path: Path, keys: Keys, spawn: Callable[..., Node]
) -> None:
    """carol's store is held by another process: the node stops with one error line."""
    port = free_port()
    _node_config(tmp_path, keys, port)
    holder = spawn("holder", "run", "--key", keys.bob, "--peer", Keys.pub(keys.carol),
                   "--data", "bob-data/peers/carol", "--listen", "127.0.0.1:0", "--json")
    holder.send("held")
    holder.wait_event(event="queued", seq=1)  # its store is open, and locked
    bob = spawn("bob", "run", "--config", "bob.toml", "--json")
    assert bob.wait_exit() == 1, bob.describe()
    assert bob.stdout == [], bob.describe()
    assert bob.stderr == [
        f"hotline: listening on 127.0.0.1:{port}",
        "hotline: error: peer 'carol': the store 'bob-data/peers/carol/hotline.db' is in use "
        f"by process {holder.proc.pid}: one process at a time may use a store",
    ], bob.describe()


# --- the node's input and output, in this process ----------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    (b"@alice hello", ("alice", b"hello")),
    (b"@carol  two spaces kept", ("carol", b" two spaces kept")),
    (b"@alice", ("alice", b"")),
    (b"@alice \xff\xfe bytes", ("alice", b"\xff\xfe bytes")),
    (b"alice hello", "a line must start with @NAME and a space (the peers: alice, carol)"),
    (b"@ hello", "a line must start with @NAME and a space (the peers: alice, carol)"),
    (b"@dave hello", "no peer named 'dave' (the peers: alice, carol)"),
    (b"@Alice hello", "no peer named 'Alice' (the peers: alice, carol)"),
])
def test_input_lines_are_addressed_with_at_name(
    text: bytes, expected: tuple[str, bytes] | str
) -> None:
    assert _addressed(text, ["alice", "carol"]) == expected


async def test_input_is_split_as_a_single_peer_run_splits_it() -> None:
    """Lines end at \\n, a \\r before it goes, and a line longer than the read limit is
    counted, not kept (it spans several reads: 65,536 bytes each)."""
    huge = 200_000
    data = b"@alice one\r\n@carol " + b"x" * huge + b"\r\n\n@alice last"
    read_end, write_end = os.pipe()

    def feed() -> None:
        os.write(write_end, data)  # blocks while the pipe is full: in a thread
        os.close(write_end)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.to_thread.run_sync, feed))
            lines = [line async for line in read_lines(read_end, 1000)]
    finally:
        os.close(read_end)
    assert lines == [b"@alice one", len(b"@carol ") + huge, b"", b"@alice last"]


@pytest.mark.parametrize("as_json", [False, True])
async def test_every_event_of_a_line_names_its_peer(
    capfd: pytest.CaptureFixture[str], as_json: bool
) -> None:
    failures: list[str] = []
    shared = Output(as_json, failures.append)
    assert await shared.emit("start", None, schema=2)  # the node's; first, as always
    assert await PeerOutput(shared, "alice").emit("queued", "-> #1 queued", seq=1)
    written = capfd.readouterr().out
    if as_json:
        start, queued = map(json.loads, written.splitlines())
        assert start["event"] == "start"
        assert queued.pop("time")
        assert queued == {"event": "queued", "peer": "alice", "seq": 1}
    else:
        assert written.endswith("  [alice] -> #1 queued\n"), written
    assert failures == []
