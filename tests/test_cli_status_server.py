"""The control socket's server and the metrics text, in-process over real Unix sockets.

The end-to-end behaviour (a real ``hotline run`` asked by a real ``hotline status``) is in
test_cli_status.py; these are the cases a real process does not easily reach: a failing live
state, a stale socket, a path too long for a Unix socket.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from hotline.cli._control import query_control, serve_control
from hotline.cli._metrics import render_metrics

pytestmark = pytest.mark.skipif(os.name != "posix", reason="Unix sockets")

LINE: dict[str, Any] = {
    "name": None, "peer": "SHA256:abc", "liveness": "up", "rtt_ms": 1.5,
    "last_handshake_ns": 1_800_000_000_500_000_000, "messages_sent": 3,
    "messages_received": 2, "bytes_sent": 1000, "bytes_received": 900, "sessions": 1,
    "retransmitted": 0, "outbox": 1,
}


def test_metrics_text_has_a_sample_per_known_value() -> None:
    down = {**LINE, "name": 'od"d\\', "peer": "SHA256:def", "liveness": "down",
            "rtt_ms": None, "last_handshake_ns": None}
    text = render_metrics([LINE, down])
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert 'hotline_peer_up{peer="SHA256:abc"} 1' in samples
    assert 'hotline_peer_up{peer="SHA256:def",name="od\\"d\\\\"} 0' in samples
    assert 'hotline_rtt_seconds{peer="SHA256:abc"} 0.0015' in samples
    assert 'hotline_last_handshake_timestamp_seconds{peer="SHA256:abc"} 1800000000.5' in samples
    assert 'hotline_bytes_received_total{peer="SHA256:abc"} 900' in samples
    # No RTT and no handshake yet: no sample, rather than a made-up 0.
    assert not any(s.startswith(("hotline_rtt_seconds", "hotline_last_handshake"))
                   and "SHA256:def" in s for s in samples)
    assert len(samples) == 10 * 2 - 2
    assert text.endswith("\n")


async def test_a_failing_live_state_does_not_end_the_node(tmp_path: Path) -> None:
    failing = [True]

    def live_state() -> list[dict[str, Any]]:
        if failing[0]:
            raise RuntimeError("the line went away")
        return [LINE]

    path = tmp_path / "hotline.sock"
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_control, path, live_state) == path
        document = await trio.to_thread.run_sync(query_control, path)
        assert document is not None
        assert document["error"] == "cannot read the live state: RuntimeError('the line went away')"
        assert "lines" not in document
        failing[0] = False
        document = await trio.to_thread.run_sync(query_control, path)
        assert document is not None
        assert document["lines"] == [LINE]
        nursery.cancel_scope.cancel()


async def test_a_stale_socket_is_replaced_and_ours_removed(tmp_path: Path) -> None:
    path = tmp_path / "hotline.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # closed without unlinking: what a killed node leaves
    os.chmod(path, 0o666)
    assert await trio.to_thread.run_sync(query_control, path) is None
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, lambda: [LINE])
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        document = await trio.to_thread.run_sync(query_control, path)
        assert document is not None
        assert document["pid"] == os.getpid()
        nursery.cancel_scope.cancel()
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


async def test_a_path_too_long_for_a_socket_leaves_the_node_without_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_control, deep / "hotline.sock", lambda: [LINE]) is None
        nursery.cancel_scope.cancel()
    assert "no control socket at" in caplog.text
    assert list(deep.iterdir()) == []
