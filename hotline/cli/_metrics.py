"""``run --metrics HOST:PORT``: the live state in the Prometheus text format, over HTTP.

Theory of operation
-------------------
A scraper sends ``GET /metrics`` now and then; the answer is rendered from the same live
state the control socket serves (:func:`._control.line_live_state`, one dict per line), so
the two cannot disagree. Every series carries the peer's fingerprint (``peer``) and, in a
node serving several peers, its name (``name``).

The text format (version 0.0.4) is a few lines of text, and the server is a few lines of
trio: ``prometheus-client`` would bring a registry, a thread-based HTTP server and a second
copy of every counter to keep in step with :class:`~hotline.Stats`, for no gain here (see
docs/operations.md). The server reads one request head (bounded in size and time), answers
it and closes the connection, serving a few connections at a time; it serves nothing else and
has no authentication, so bind it to a loopback or otherwise private address.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ._control import LiveState
from ._status import CliError

__all__ = ["bound_address", "open_metrics_listeners", "render_metrics", "serve_metrics"]

logger = logging.getLogger("hotline")

#: The largest request head read; a scraper's is a few hundred bytes.
MAX_REQUEST_HEAD = 8192
#: How long a client has to send its request head.
REQUEST_TIMEOUT = 5.0
#: Connections served at once; more are closed unanswered (a scraper needs one at a time).
MAX_CLIENTS = 8
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: (metric, type, help, key of the live state, what to divide it by for the metric's unit)
_SERIES: tuple[tuple[str, str, str, str, float], ...] = (
    ("hotline_peer_up", "gauge", "1 while the peer answers (liveness up), else 0.", "", 1),
    ("hotline_rtt_seconds", "gauge", "The last measured round-trip time.", "rtt_ms", 1000),
    ("hotline_last_handshake_timestamp_seconds", "gauge",
     "When the last session came up (Unix time).", "last_handshake_ns", 1_000_000_000),
    ("hotline_messages_sent_total", "counter", "Messages queued since the node started.",
     "messages_sent", 1),
    ("hotline_messages_received_total", "counter",
     "New messages from the peer since the node started.", "messages_received", 1),
    ("hotline_bytes_sent_total", "counter", "Bytes written to the peer on sessions.",
     "bytes_sent", 1),
    ("hotline_bytes_received_total", "counter", "Bytes read from the peer on sessions.",
     "bytes_received", 1),
    ("hotline_sessions_total", "counter", "Sessions that came up.", "sessions", 1),
    ("hotline_retransmitted_total", "counter", "Messages sent again on a new session.",
     "retransmitted", 1),
    ("hotline_outbox_messages", "gauge", "Our messages without a delivered receipt.",
     "outbox", 1),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_metrics(lines: list[dict[str, Any]]) -> str:
    """The text format of the live state of ``lines``; a series without a value (no RTT
    measured yet, no handshake yet) is left out for that line."""
    out: list[str] = []
    for metric, kind, help_text, key, scale in _SERIES:
        out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for line in lines:
            labels = f'peer="{_label(line["peer"])}"'
            if line.get("name"):
                labels += f',name="{_label(line["name"])}"'
            if not key:
                value: float | None = 1 if line["liveness"] == "up" else 0
            else:
                raw = line.get(key)
                value = None if raw is None else (raw / scale if scale != 1 else raw)
            if value is not None:
                out.append(f"{metric}{{{labels}}} {_number(value)}")
    return "\n".join(out) + "\n"


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    head = b""
    with trio.move_on_after(REQUEST_TIMEOUT):
        while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
            data = await stream.receive_some(MAX_REQUEST_HEAD)
            if not data:
                break
            head += data
        return head
    return None


async def _answer(stream: trio.SocketStream, live_state: LiveState) -> None:
    try:
        head = await _read_head(stream)
        if head is None:
            return
        request = head.split(b"\r\n", 1)[0].split()
        if len(request) != 3 or not request[2].startswith(b"HTTP/"):
            answer = _response("400 Bad Request", b"bad request\n", "text/plain")
        elif request[0] not in (b"GET", b"HEAD"):
            answer = _response("405 Method Not Allowed", b"GET only\n", "text/plain")
        elif request[1].split(b"?", 1)[0] not in (b"/metrics", b"/"):
            answer = _response("404 Not Found", b"see /metrics\n", "text/plain")
        else:
            try:
                body = render_metrics(live_state()).encode("utf-8")
            except Exception:
                # A side channel must never end the line it reports on.
                logger.exception("metrics: cannot read the live state")
                return
            answer = _response("200 OK", body, CONTENT_TYPE)
            if request[0] == b"HEAD":
                answer = answer[: len(answer) - len(body)]
        await stream.send_all(answer)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        logger.debug("metrics: a client left early: %r", exc)
    finally:
        await trio.aclose_forcefully(stream)


async def open_metrics_listeners(address: tuple[str, int]) -> list[trio.SocketListener]:
    """Bind ``address`` for :func:`serve_metrics`: before the line opens, so a port in use
    fails the run at once (CliError) rather than a line already up."""
    host, port = address
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise CliError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None


def bound_address(listeners: list[trio.SocketListener]) -> tuple[str, int]:
    host, port = listeners[0].socket.getsockname()[:2]
    return str(host), int(port)


async def serve_metrics(listeners: list[trio.SocketListener], live_state: LiveState) -> None:
    """Serve ``/metrics`` on ``listeners`` until cancelled."""

    limiter = trio.CapacityLimiter(MAX_CLIENTS)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            await _answer(stream, live_state)
        finally:
            limiter.release()

    await trio.serve_listeners(handler, listeners)
