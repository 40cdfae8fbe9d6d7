"""``hotline status`` and ``run --metrics``, on real processes and real sockets.

bob listens and alice dials; they exchange messages. While both run, ``status`` on bob's
directory reads the store and the live state through bob's control socket, and bob's metrics
endpoint is scraped over HTTP; once both have stopped, ``status`` reads the stores alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_cli import (
    FINGERPRINT,
    TIMEOUT,
    Keys,
    Node,
    cli,
    free_port,
    is_iso_utc,
    keys,
    one_error_line,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="Unix sockets and file modes")

__all__ = ["keys"]  # a fixture, imported for pytest to find


@dataclass
class Running:
    dir: Path
    bob: Node
    alice: Node
    metrics_port: int
    live: dict[str, Any]
    """bob's status --json while both ran."""
    live_text: str
    """bob's status (for people) while both ran."""
    socket_mode: int
    metrics: str
    metrics_type: str


def _status(folder: Path, data: str, *more: str) -> Any:
    result = cli("status", data, *more, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout) if "--json" in more else result.stdout


def _scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as answer:
        return answer.read().decode("utf-8"), answer.headers["Content-Type"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("status")
    port, metrics_port = free_port(), free_port()
    bob = Node("bob", ["run", "--key", keys.bob, "--peer", Keys.pub(keys.alice), "--data",
                       "bob-data", "--listen", f"127.0.0.1:{port}", "--json", "--heartbeat",
                       "0.2", "--metrics", f"127.0.0.1:{metrics_port}"], folder)
    alice = Node("alice", ["run", "--key", keys.alice, "--peer", Keys.pub(keys.bob), "--data",
                           "alice-data", "--connect", f"127.0.0.1:{port}", "--json",
                           "--heartbeat", "0.2"], folder)
    try:
        bob.send("one", "two")
        alice.send("three")
        bob.wait_event(event="acknowledged", upto=2)
        alice.wait_event(event="acknowledged", upto=1)
        bob.wait_event(event="message", seq=1)
        # A few heartbeats: the RTT is measured once a ping of the peer's echoes one of ours.
        alice.wait_event(event="peer", state="up")
        socket_path = folder / "bob-data" / "hotline.sock"
        mode = os.stat(socket_path).st_mode
        live = _status(folder, "bob-data", "--json")
        deadline = time.monotonic() + TIMEOUT
        while live["lines"][0]["live"]["rtt_ms"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
            live = _status(folder, "bob-data", "--json")
        text = _status(folder, "bob-data")
        metrics, content_type = _scrape(metrics_port)
        yield Running(folder, bob, alice, metrics_port, live, text, mode, metrics, content_type)
    finally:
        bob.kill()
        alice.kill()


def test_the_control_socket_is_a_private_socket(running: Running) -> None:
    assert stat.S_ISSOCK(running.socket_mode)
    assert stat.S_IMODE(running.socket_mode) == 0o600


def test_status_of_a_running_node_has_its_live_state(running: Running, keys: Keys) -> None:
    report = running.live
    assert report["running"] is True
    assert report["pid"] == running.bob.proc.pid
    (line,) = report["lines"]
    assert line["name"] is None
    assert line["identity"] == keys.fingerprints["bob"]
    assert line["peer"] == keys.fingerprints["alice"]
    live = line["live"]
    assert live["peer"] == keys.fingerprints["alice"]
    assert live["liveness"] == "up"
    assert live["messages_sent"] == 2
    assert live["messages_received"] == 1
    # Two messages and their receipts went each way at least: some hundreds of bytes.
    assert live["bytes_sent"] > 200
    assert live["bytes_received"] > 200
    assert live["sessions"] == 1
    assert is_iso_utc(live["last_handshake"])
    assert live["rtt_ms"] > 0


def test_status_of_a_running_node_reads_its_store(running: Running) -> None:
    (line,) = running.live["lines"]
    assert line["sent_seq"] == 2
    assert line["received_seq"] == 1
    assert line["outbox"] == 0
    assert line["peer_delivered"] == 2
    receipts = line["receipts"]
    assert receipts["in"]["delivered"]["upto"] == 2
    assert receipts["in"]["acknowledged"]["upto"] == 2
    assert receipts["out"]["delivered"]["upto"] == 1
    assert receipts["out"]["acknowledged"]["upto"] == 1
    for way in ("in", "out"):
        for kind in ("delivered", "acknowledged"):
            assert is_iso_utc(receipts[way][kind]["at"])


def test_status_for_people_shows_the_same(running: Running, keys: Keys) -> None:
    text = running.live_text
    assert f"node running (pid {running.bob.proc.pid})" in text
    assert f"{keys.fingerprints['bob']} (this node)" in text
    assert "sent                  up to #2, outbox 0" in text
    assert "peer's acknowledged   #2 at " in text
    assert "peer                  up, rtt " in text
    assert "sent since start      2 messages, " in text


def test_metrics_are_served_in_the_prometheus_text_format(running: Running, keys: Keys) -> None:
    assert running.metrics_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for line in running.metrics.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP hotline_", "# TYPE hotline_")), line
            continue
        name_labels, value = line.rsplit(" ", 1)
        samples[name_labels] = float(value)
    label = f'{{peer="{keys.fingerprints["alice"]}"}}'
    assert samples[f"hotline_peer_up{label}"] == 1
    assert samples[f"hotline_messages_sent_total{label}"] == 2
    assert samples[f"hotline_messages_received_total{label}"] == 1
    assert samples[f"hotline_bytes_sent_total{label}"] > 200
    assert samples[f"hotline_sessions_total{label}"] == 1
    assert samples[f"hotline_outbox_messages{label}"] == 0
    assert samples[f"hotline_last_handshake_timestamp_seconds{label}"] > 1.7e9


def test_metrics_answer_only_their_path(running: Running) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        _scrape(running.metrics_port, "/other")
    assert caught.value.code == 404


def test_the_control_socket_answers_a_client_that_sends_nothing(running: Running) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(str(running.dir / "bob-data" / "hotline.sock"))
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    document = json.loads(b"".join(chunks))
    assert document["schema"] == 1
    assert document["pid"] == running.bob.proc.pid
    assert is_iso_utc(document["time"])
    assert [line["liveness"] for line in document["lines"]] == ["up"]


@pytest.fixture(scope="module")
def stopped(running: Running) -> Running:
    """The same directories once both nodes have stopped."""
    for node in (running.bob, running.alice):
        node.proc.send_signal(signal.SIGTERM)
        assert node.wait_exit() == 0, node.describe()
    return running


def test_a_stopped_node_removes_its_socket(stopped: Running) -> None:
    assert not (stopped.dir / "bob-data" / "hotline.sock").exists()
    assert not (stopped.dir / "alice-data" / "hotline.sock").exists()


def test_status_of_a_stopped_node_reads_the_store_alone(stopped: Running, keys: Keys) -> None:
    report = _status(stopped.dir, "alice-data", "--json")
    assert report["running"] is False
    assert report["pid"] is None
    (line,) = report["lines"]
    assert line["live"] is None
    assert line["identity"] == keys.fingerprints["alice"]
    assert (line["sent_seq"], line["received_seq"], line["outbox"]) == (1, 2, 0)
    assert line["receipts"]["in"]["acknowledged"]["upto"] == 1
    assert line["receipts"]["out"]["acknowledged"]["upto"] == 2
    text = _status(stopped.dir, "alice-data")
    assert text.startswith("node not running: no node is running\n")
    assert "live                  -" in text


def test_status_shows_every_peer_of_a_multi_peer_directory(
    stopped: Running, keys: Keys, tmp_path: Path
) -> None:
    for name, source in (("bob", "alice-data"), ("alice", "bob-data")):
        (tmp_path / "node" / "peers" / name).mkdir(parents=True)
        shutil.copy2(stopped.dir / source / "hotline.db", tmp_path / "node" / "peers" / name)
    report = _status(tmp_path, "node", "--json")
    assert [line["name"] for line in report["lines"]] == ["alice", "bob"]
    assert [line["peer"] for line in report["lines"]] == [
        keys.fingerprints["alice"], keys.fingerprints["bob"]
    ]
    assert all(FINGERPRINT.match(line["identity"]) for line in report["lines"])
    assert "line alice: " in _status(tmp_path, "node")


def test_a_stale_socket_is_not_a_running_node(
    spawn_killed: tuple[Path, Node], keys: Keys
) -> None:
    folder, _killed = spawn_killed
    assert (folder / "data" / "hotline.sock").exists()  # SIGKILL left it behind
    report = _status(folder, "data", "--json")
    assert report["running"] is False
    # The next run replaces it.
    again = Node("again", ["run", "--key", keys.alice, "--peer", Keys.pub(keys.carol),
                           "--data", "data", "--listen", f"127.0.0.1:{free_port()}", "--json"],
                 folder)
    try:
        again.wait_event(event="start")
        report = _status(folder, "data", "--json")
        assert report["running"] is True
        assert report["pid"] == again.proc.pid
    finally:
        again.kill()


@pytest.fixture
def spawn_killed(tmp_path: Path, keys: Keys) -> Iterator[tuple[Path, Node]]:
    node = Node("killed", ["run", "--key", keys.alice, "--peer", Keys.pub(keys.carol),
                           "--data", "data", "--listen", f"127.0.0.1:{free_port()}", "--json"],
                tmp_path)
    try:
        node.wait_event(event="start")
        assert _status(tmp_path, "data", "--json")["running"] is True
        node.proc.send_signal(signal.SIGKILL)
        node.wait_exit()
        yield tmp_path, node
    finally:
        node.kill()


def test_status_without_a_store_fails_in_one_line(tmp_path: Path) -> None:
    assert "no such data directory" in one_error_line(cli("status", "absent", cwd=tmp_path))
    (tmp_path / "empty").mkdir()
    assert "no store in 'empty'" in one_error_line(cli("status", "empty", cwd=tmp_path))


def test_metrics_on_a_port_in_use_fail_before_the_line_opens(
    tmp_path: Path, keys: Keys
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("run", "--key", keys.alice, "--peer", Keys.pub(keys.bob), "--data", "data",
                     "--listen", f"127.0.0.1:{free_port()}", "--metrics", f"127.0.0.1:{port}",
                     cwd=tmp_path)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in one_error_line(result)


def test_status_and_metrics_of_a_running_node_serving_two_peers(
    tmp_path: Path, keys: Keys
) -> None:
    port, metrics_port = free_port(), free_port()
    (tmp_path / "bob.toml").write_text(
        f'key = "{keys.bob}"\ndata = "bob-data"\nlisten = "127.0.0.1:{port}"\n'
        f'metrics = "127.0.0.1:{metrics_port}"\n'
        f'[peers.alice]\nkey = "{Keys.pub(keys.alice)}"\n'
        f'[peers.carol]\nkey = "{Keys.pub(keys.carol)}"\n'
    )
    nodes = [Node("bob", ["run", "--config", "bob.toml", "--json"], tmp_path)]
    try:
        bob = nodes[0]
        bob.send("@carol for carol")
        nodes.append(Node("carol", ["run", "--key", keys.carol, "--peer", Keys.pub(keys.bob),
                                    "--data", "carol-data", "--connect", f"127.0.0.1:{port}",
                                    "--json"], tmp_path))
        bob.wait_event(event="acknowledged", peer="carol", upto=1)
        report = _status(tmp_path, "bob-data", "--json")
        metrics, _ = _scrape(metrics_port)
    finally:
        for node in nodes:
            node.kill()
    assert report["running"] is True
    assert report["pid"] == bob.proc.pid
    alice, carol = report["lines"]
    assert (alice["name"], carol["name"]) == ("alice", "carol")
    assert alice["store"].endswith("peers/alice/hotline.db")
    assert alice["live"]["liveness"] == "connecting"  # alice never called
    assert alice["live"]["name"] == "alice"
    assert carol["live"]["liveness"] == "up"
    assert carol["live"]["messages_sent"] == 1
    assert (carol["sent_seq"], carol["outbox"]) == (1, 0)
    assert f'hotline_peer_up{{peer="{keys.fingerprints["carol"]}",name="carol"}} 1' in metrics
    assert f'hotline_peer_up{{peer="{keys.fingerprints["alice"]}",name="alice"}} 0' in metrics
