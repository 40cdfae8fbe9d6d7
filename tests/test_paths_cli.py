"""Several paths from the command line: repeated ``--listen``/``--connect``, address lists in
the configuration file, and ``path`` events in ``--json`` between two real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_child import Child, spawner

from hotline.cli._config_file import ConfigFileError, apply_config_file
from hotline.cli._parser import build_parser

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0


def parsed(*argv: str) -> Any:
    args = build_parser().parse_args(["run", "--key", "k", "--peer", "p", "--data", "d", *argv])
    apply_config_file(args)
    return args


def test_repeated_flags_give_every_address_and_the_first() -> None:
    args = parsed("--connect", "10.0.0.2:7400", "--connect", "10.1.0.2:7400",
                  "--listen", "0.0.0.0:7401")
    assert args.connects == [("10.0.0.2", 7400), ("10.1.0.2", 7400)]
    assert args.connect == ("10.0.0.2", 7400)
    assert args.listens == [("0.0.0.0", 7401)]
    assert args.listen == ("0.0.0.0", 7401)
    assert args.paths is None


def test_paths_flag_is_checked() -> None:
    assert parsed("--listen", "0.0.0.0:7400", "--paths", "2").paths == 2
    with pytest.raises(SystemExit):
        parsed("--listen", "0.0.0.0:7400", "--paths", "9")


def test_the_file_takes_a_list_of_addresses(tmp_path: Path) -> None:
    config = tmp_path / "line.toml"
    config.write_text('listen = ["127.0.0.1:7400", "[::1]:7400"]\n'
                      'connect = "example.org:7401"\n')
    args = parsed("--config", str(config))
    assert args.listens == [("127.0.0.1", 7400), ("::1", 7400)]
    assert args.connects == [("example.org", 7401)]


def test_the_file_gives_the_number_of_paths_and_a_flag_wins(tmp_path: Path) -> None:
    config = tmp_path / "line.toml"
    config.write_text('listen = "127.0.0.1:7400"\npaths = 3\n')
    assert parsed("--config", str(config)).paths == 3
    assert parsed("--config", str(config), "--paths", "2").paths == 2
    config.write_text('listen = "127.0.0.1:7400"\npaths = 9\n')
    with pytest.raises(ConfigFileError, match="paths: must be a whole number from 1 to 8"):
        parsed("--config", str(config))


@pytest.mark.parametrize(("value", "problem"), [
    ("[]", "at least one address"),
    ('["127.0.0.1:7400", 7]', "HOST:PORT"),
    ('["127.0.0.1:0"]', "cannot be 0"),
])
def test_a_bad_address_list_is_named(tmp_path: Path, value: str, problem: str) -> None:
    config = tmp_path / "line.toml"
    config.write_text(f"connect = {value}\n")
    with pytest.raises(ConfigFileError, match=problem):
        parsed("--config", str(config))


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name in ("alice", "bob"):
        made = subprocess.run([sys.executable, "-m", "hotline", "keygen", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=TIMEOUT, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert made.returncode == 0, made.stderr
    return tmp_path


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    with spawner(tmp_path, timeout=TIMEOUT) as start:
        yield start


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_two_paths_between_two_processes(spawn: Callable[..., Child], keys: Path) -> None:
    bob = spawn("run", "--key", keys / "bob", "--peer", keys / "alice.pub", "--data", "bob-data",
                "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--json")

    def ports() -> list[int]:
        bound = [re.search(r"listening on 127\.0\.0\.1:(\d+)", line) for line in bob.stderr]
        found = [int(match.group(1)) for match in bound if match]
        return found if len(found) == 2 else []

    first, second = bob.wait_for(ports, "two listening ports")
    alice = spawn("run", "--key", keys / "alice", "--peer", keys / "bob.pub",
                  "--data", "alice-data", "--connect", f"127.0.0.1:{first}",
                  "--connect", f"127.0.0.1:{second}", "--json")

    def both_up(child: Child) -> Callable[[], bool]:
        def check() -> bool:
            up = {event["path"] for event in child.events("path") if event["state"] == "up"}
            return len(up) >= 2
        return check

    alice.wait_for(both_up(alice), "two paths up at alice")
    bob.wait_for(both_up(bob), "two paths up at bob")
    paths = alice.events("path")
    assert {event["address"] for event in paths} == {f"127.0.0.1:{first}",
                                                      f"127.0.0.1:{second}"}
    assert any(event["active"] for event in paths)
    assert set(paths[0]) == {"event", "path", "address", "state", "active", "rtt_ms", "reason",
                             "time"}
    assert all(event["address"].startswith("in:127.0.0.1:") for event in bob.events("path"))
    assert alice.events("peer")[0]["state"] == "up"
    assert alice.proc.stdin is not None
    alice.proc.stdin.write("over two paths\n")
    alice.proc.stdin.flush()
    bob.wait_for(lambda: bob.events("message"), "the message")
    assert bob.events("message")[0]["body"] == "over two paths"
    assert alice.stop() == 0
    assert bob.stop() == 0
