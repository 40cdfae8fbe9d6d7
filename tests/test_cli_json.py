"""The ``run --json`` event schema (docs/cli.md), on real processes.

bob listens and alice dials. bob's input mixes lines that are sent (one of them not UTF-8)
with lines over the size limit, so that error events must name their input line; alice
leaves with a goodbye, so that bob's last ``peer`` event has a reason.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli import TIMEOUT, Keys, Node, check_event, cli, free_port, is_iso_utc, keys

from hotline.cli._output import JSON_SCHEMA, body_fields

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals")

__all__ = ["keys"]  # a fixture, imported for pytest to find

NOT_UTF8 = b"caf\xe9 \xff\xfe\x00 exact"
TOO_LONG = b"x" * ((1 << 20) + 1)


@dataclass
class Talk:
    dir: Path
    bob: Node
    alice: Node


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Talk]:
    folder = tmp_path_factory.mktemp("json")
    port = free_port()
    bob = Node("bob", ["run", "--key", keys.bob, "--peer", Keys.pub(keys.alice), "--data",
                       "bob-data", "--listen", f"127.0.0.1:{port}", "--json"], folder)
    alice = Node("alice", ["run", "--key", keys.alice, "--peer", Keys.pub(keys.bob), "--data",
                           "alice-data", "--connect", f"127.0.0.1:{port}", "--json"], folder)
    try:
        stdin = bob.proc.stdin
        assert stdin is not None
        # Lines 1 to 5: sent, too long, not UTF-8 (sent), too long, sent.
        stdin.write(b"plain\n" + TOO_LONG + b"\n" + NOT_UTF8 + b"\n" + TOO_LONG + b"\nlast\n")
        stdin.flush()
        alice.wait_event(event="message", seq=3)
        bob.wait_event(event="acknowledged", upto=3)
        alice.proc.send_signal(signal.SIGTERM)
        assert alice.wait_exit() == 0, alice.describe()
        bob.wait_event(event="peer", state="down")
        bob.proc.send_signal(signal.SIGTERM)
        bob.wait_exit(TIMEOUT)
        yield Talk(folder, bob, alice)
    finally:
        bob.kill()
        alice.kill()


def test_every_event_is_documented_and_timed(talk: Talk) -> None:
    for node in (talk.bob, talk.alice):
        assert len(node.events) == len(node.stdout), node.describe()
        for event in node.events:
            check_event(event)  # "time" included, ISO 8601 UTC
        times = [event["time"] for event in node.events]
        assert times == sorted(times)  # written in order, by one clock


def test_the_first_event_is_start_with_the_schema(talk: Talk, keys: Keys) -> None:
    first = talk.bob.events[0]
    assert first["event"] == "start"
    assert first["schema"] == JSON_SCHEMA == 2
    assert first["identity"] == keys.fingerprints["bob"]
    assert first["peer_key"] == keys.fingerprints["alice"]
    assert len(first["listen"]) == 1
    assert first["listen"][0].startswith("127.0.0.1:")
    assert talk.alice.events[0]["event"] == "start"
    assert talk.alice.events[0]["listen"] == []
    assert [e["event"] for e in talk.bob.events].count("start") == 1


def test_error_events_name_their_input_line(talk: Talk) -> None:
    errors = talk.bob.of("error")
    assert [e["line"] for e in errors] == [2, 4]
    assert all("over the limit" in e["message"] for e in errors)
    assert [e["seq"] for e in talk.bob.of("queued")] == [1, 2, 3]


def test_peer_events_say_why(talk: Talk) -> None:
    down = talk.bob.of("peer")[-1]
    assert down["state"] == "down"
    assert down["reason"] == "the peer said goodbye: the line was closed"
    up = talk.alice.of("peer")[0]
    assert up["state"] == "up"
    assert up["reason"] == ""


def test_a_body_that_is_not_utf8_is_carried_exactly(talk: Talk) -> None:
    messages = {e["seq"]: e for e in talk.alice.of("message")}
    odd = messages[2]
    assert base64.b64decode(odd["body_base64"], validate=True) == NOT_UTF8
    assert odd["body"] == NOT_UTF8.decode("utf-8", errors="replace")
    assert is_iso_utc(odd["sent_at"])
    for seq, text in ((1, "plain"), (3, "last")):
        assert messages[seq]["body"] == text
        assert "body_base64" not in messages[seq]


def test_log_json_carries_the_same_body_exactly(talk: Talk) -> None:
    result = cli("log", "alice-data", "--json", cwd=talk.dir)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    received = {r["seq"]: r for r in records if r["kind"] == "message" and r["direction"] == "in"}
    assert base64.b64decode(received[2]["body_base64"]) == NOT_UTF8
    assert "body_base64" not in received[1]


@pytest.mark.parametrize("body", [b"", b"ascii", "ünïcödé ✓".encode(), b"\xed\xa0\x80"])
def test_body_fields_round_trip(body: bytes) -> None:
    fields = body_fields(body)
    if "body_base64" in fields:
        assert base64.b64decode(fields["body_base64"]) == body
        with pytest.raises(UnicodeDecodeError):
            body.decode("utf-8")
    else:
        assert fields["body"].encode("utf-8") == body


def test_body_fields_keep_text_for_old_readers() -> None:
    # b"\xed\xa0\x80" is an encoded surrogate: not UTF-8, though some decoders take it.
    assert body_fields(b"\xed\xa0\x80") == {"body": "\ufffd\ufffd\ufffd", "body_base64": "7aCA"}
    assert body_fields(b"ok") == {"body": "ok"}


def test_human_output_has_no_start_line(tmp_path: Path, keys: Keys) -> None:
    node = Node("human", ["run", "--key", keys.alice, "--peer", Keys.pub(keys.carol), "--data",
                          "data", "--listen", f"127.0.0.1:{free_port()}"], tmp_path)
    try:
        node.send("hello")
        node.close_stdin()
        end = time.monotonic() + TIMEOUT
        while not node.stdout and time.monotonic() < end:
            time.sleep(0.05)
        node.proc.send_signal(signal.SIGTERM)
        assert node.wait_exit() == 0, node.describe()
    finally:
        node.kill()
    assert len(node.stdout) == 1, node.describe()
    assert node.stdout[0].endswith("-> #1 queued")
