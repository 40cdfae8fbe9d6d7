"""The real ``hotline`` process against settings and stores a user gets wrong.

Reuses the helpers of test_cli.py: every child is ``python -m hotline``, every wait has a
deadline and every child is killed at the end of its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli import Keys, Node, cli, free_port, keys, one_error_line, spawn
from test_verify_store import TAMPERS, Exchange, make_exchange, tampered_copy

__all__ = ["keys", "spawn"]  # Fixtures of test_cli.py, used here by name.

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and file modes are POSIX")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e-9", "0", "-1", "1e9"])
def test_a_heartbeat_out_of_range_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = cli("run", "--key", "k", "--peer", "p.pub", "--data", "data",
                 "--listen", "127.0.0.1:0", "--heartbeat", value, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("hotline run: error: argument --heartbeat: ")
    assert not (tmp_path / "data").exists()


# --- one process per data directory -----------------------------------------------------


def _run(keys: Keys, port: int, *more: object) -> list[object]:
    return ["run", "--key", keys.alice, "--peer", Keys.pub(keys.bob), "--data", "data",
            "--listen", f"127.0.0.1:{port}", "--json", *more]


def test_a_second_run_on_one_data_directory_is_refused_at_start(
    tmp_path: Path, keys: Keys, spawn: Callable[..., Node]
) -> None:
    first = spawn("first", *_run(keys, free_port()))
    first.send("typed into the first")
    first.wait_event(event="queued", seq=1)  # It holds the store.
    second = cli(*_run(keys, free_port()), stdin="typed into the second\n", cwd=tmp_path)
    assert one_error_line(second) == (
        f"hotline: error: the store 'data/hotline.db' is in use by process {first.proc.pid}:"
        " one process at a time may use a store"
    )
    # The reading commands take no lock: they work beside the running line.
    log = cli("log", "data", "--json", cwd=tmp_path)
    assert log.returncode == 0, log.stderr
    assert [json.loads(line)["body"] for line in log.stdout.splitlines()] == [
        "typed into the first"]
    verify = cli("verify", "data", cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # And the first goes on as if nothing happened.
    first.send("still mine")
    first.wait_event(event="queued", seq=2)
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0, first.describe()
    assert not any("Traceback" in line for line in first.stderr), first.describe()


# --- what is not a store ----------------------------------------------------------------


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(directory.iterdir())}


def _not_a_store(data: Path, case: str) -> None:
    data.mkdir(mode=0o700)
    store = data / "hotline.db"
    if case == "empty file":
        store.write_bytes(b"")
    elif case == "text file":
        store.write_text("my notes, not a database\n")
    else:
        with contextlib.closing(sqlite3.connect(store)) as db, db:
            db.execute("CREATE TABLE notes (text TEXT)")
            db.execute("INSERT INTO notes VALUES ('mine')")
    store.chmod(0o600)


NOT_A_STORE = {
    "empty file": "'data/hotline.db' is an empty file, not a hotline store",
    "text file": "'data/hotline.db' is not a hotline store: it is not a SQLite database",
    "foreign database": "'data/hotline.db' is not a hotline store: a SQLite database with other"
                        " tables",
}


@pytest.mark.parametrize("case", sorted(NOT_A_STORE))
def test_reading_commands_refuse_what_is_not_a_store_and_change_nothing(
    tmp_path: Path, case: str
) -> None:
    _not_a_store(tmp_path / "data", case)
    before = _snapshot(tmp_path / "data")
    for command in (["log", "data"], ["log", "data", "--json"], ["verify", "data"]):
        line = one_error_line(cli(*command, cwd=tmp_path))
        assert line == f"hotline: error: {NOT_A_STORE[case]}", command
        assert _snapshot(tmp_path / "data") == before, command


@pytest.mark.parametrize("case", sorted(NOT_A_STORE))
def test_run_refuses_what_is_not_a_store_instead_of_starting_a_new_line(
    tmp_path: Path, keys: Keys, case: str
) -> None:
    _not_a_store(tmp_path / "data", case)
    before = _snapshot(tmp_path / "data")
    result = cli(*_run(keys, free_port(), "--until-delivered"), cwd=tmp_path)
    assert one_error_line(result) == f"hotline: error: {NOT_A_STORE[case]}"
    after = _snapshot(tmp_path / "data")
    lock, _ = after.pop("hotline.db.lock")  # Taken at start, emptied at exit.
    assert lock == b""
    assert after == before


@pytest.mark.parametrize("name", ["hotline.db", "hotline.db-wal"])
def test_run_refuses_a_store_others_may_read(tmp_path: Path, keys: Keys, name: str) -> None:
    made = cli(*_run(keys, free_port(), "--until-delivered"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    loose = tmp_path / "data" / name
    loose.touch()
    loose.chmod(0o644)
    result = cli(*_run(keys, free_port(), "--until-delivered"), cwd=tmp_path)
    assert one_error_line(result) == (
        f"hotline: error: permissions 0644 for 'data/{name}' are too open: a store must be"
        f" readable and writable only by its owner (chmod 600 'data/{name}')"
    )
    loose.chmod(0o600)
    again = cli(*_run(keys, free_port(), "--until-delivered"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr


# --- verify checks what the line resumes from -----------------------------------------


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    return make_exchange(tmp_path_factory.mktemp("exchange"))


@pytest.mark.parametrize("tamper", ["messages.hash in", "messages.prev", "receipts.head out",
                                    "state.sent_head", "state.peer_delivered",
                                    "receipts row without record"])
def test_verify_reports_an_inconsistent_store_naming_table_and_row(
    exchange: Exchange, tmp_path: Path, tamper: str
) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    _, row = tampered_copy(exchange, tmp_path / "data", TAMPERS[tamper])
    result = cli("verify", "data", cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("INVALID: inconsistent store: table "), line
    assert row in line, line
