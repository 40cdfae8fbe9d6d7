"""``hotline run --connect`` tells its user when it cannot reach the peer, and why.

Real ``python -m hotline`` processes on 127.0.0.1: one dials a port nobody listens on, one
dials a listener that does not answer it (it pinned another key for that listener). Each
reads its own ``dial`` events on standard output (``--json``, or the human line). Every wait
has a deadline and every child is killed in a ``finally``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_child import Child, spawner

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 15.0
NO_ANSWER = ("connected, but the peer closed the connection during the handshake: the peer "
             "may not know our key, we may have pinned the wrong key for it, or it is "
             "rate-limiting our calls")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    with spawner(tmp_path, timeout=TIMEOUT) as start:
        yield start


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("alice", "bob", "carol"):
        made = subprocess.run([sys.executable, "-m", "hotline", "keygen", str(folder / name)],
                              capture_output=True, text=True, timeout=TIMEOUT, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert made.returncode == 0, made.stderr
    return folder


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_closed_port_is_reported_once_then_rate_limited(
    spawn: Callable[..., Child], keys: Path
) -> None:
    port = closed_port()
    alice = spawn("-vv", "run", "--key", keys / "alice", "--peer", keys / "bob.pub", "--data",
                  "alice", "--connect", f"127.0.0.1:{port}", "--json")
    first = alice.wait_for(lambda: alice.events("dial"), "dial event")[0]
    assert first.pop("time")
    assert first == {
        "event": "dial", "address": f"127.0.0.1:{port}",
        "reason": "connection refused: nothing listens on that port",
        "attempt": 1, "next_retry_in": first["next_retry_in"],
    }
    assert 0.075 <= first["next_retry_in"] <= 0.1  # the first backoff, less its jitter
    # Four more calls (at about 0.1, 0.3, 0.7 and 1.5 s) fail the same way, each logged
    # (-vv) once its report, if any, would have been printed: none is reported.
    alice.wait_for(lambda: any(" dial 5 failed: " in line for line in alice.stderr), "dial 5")
    assert len(alice.events("dial")) == 1, alice.describe()
    assert alice.stop() == 0, alice.describe()


def test_a_closed_port_in_human_output(spawn: Callable[..., Child], keys: Path) -> None:
    port = closed_port()
    alice = spawn("run", "--key", keys / "alice", "--peer", keys / "bob.pub", "--data", "alice",
                  "--connect", f"127.0.0.1:{port}")
    line = alice.wait_for(lambda: alice.stdout and alice.stdout[0], "human dial line")
    assert line.endswith(
        f"  !! cannot reach 127.0.0.1:{port} (attempt 1, next in 0.1 s): connection refused: "
        "nothing listens on that port"), line
    assert alice.stop() == 0, alice.describe()


def test_a_listener_that_does_not_answer_names_the_likely_causes(
    spawn: Callable[..., Child], keys: Path
) -> None:
    """Bob listens for Alice; Alice dials Bob's address but pinned Carol's key for it (a
    wrong --peer file), so Bob cannot read her handshake and hangs up without a word."""
    port = closed_port()
    bob = spawn("run", "--key", keys / "bob", "--peer", keys / "alice.pub", "--data", "bob",
                "--listen", f"127.0.0.1:{port}", "--json")
    bob.wait_for(lambda: any("listening on" in line for line in bob.stderr), "listening")
    alice = spawn("run", "--key", keys / "alice", "--peer", keys / "carol.pub", "--data",
                  "alice", "--connect", f"127.0.0.1:{port}", "--json")
    dials = alice.wait_for(lambda: alice.events("dial"), "dial event")
    assert dials[0]["reason"] == NO_ANSWER, alice.describe()
    assert dials[0]["attempt"] == 1
    assert dials[0]["address"] == f"127.0.0.1:{port}"
    assert alice.stop() == 0, alice.describe()
    assert bob.stop() == 0, bob.describe()
    assert not bob.events("dial")
