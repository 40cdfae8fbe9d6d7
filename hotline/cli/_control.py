"""The control socket: a running node's live state, for ``hotline status``.

Theory of operation
-------------------
The store says what is durable; only the running process knows whether the peer answers,
the round-trip time, when the last handshake was and how many bytes went each way. A node
publishes that on the Unix socket ``DIR/hotline.sock``: a client connects, sends nothing or
the one line ``status\\n``, and reads one JSON document until the node closes: ``schema``,
``pid``, ``time`` and ``lines``, or ``error`` instead of ``lines`` if they cannot be read.

The document is written before anything is read, and the node then shuts its side for
writing and drains what the client sent (a little, briefly) before it closes: a socket
closed with unread input resets the connection, which could cut the document short.

The socket's mode is 0600, and nobody can reach it before it has that mode: it is bound
under a temporary name, chmod-ed, and renamed into place. Only a node that holds the store
lock of its directory starts the server (``run`` starts it once its line is open), so a
socket found at that path is stale (its node crashed) and is replaced. It is removed on
exit unless another node's socket has replaced it meanwhile.

The server takes a callable returning the live state of every line the node runs, one
dict per line (:func:`line_live_state` makes one from a :class:`~hotline.Line`), so a node
serving several peers plugs all of its lines in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ._output import iso_utc

if TYPE_CHECKING:
    from ..driver import Line

__all__ = [
    "CONTROL_SCHEMA",
    "CONTROL_SOCKET",
    "LiveState",
    "line_live_state",
    "query_control",
    "serve_control",
]

logger = logging.getLogger("hotline")

#: The control socket's name in the data directory.
CONTROL_SOCKET = "hotline.sock"
#: The version of the document the socket serves; it grows only by new fields until it changes.
CONTROL_SCHEMA = 1
#: How long the node waits for a client's request line, and drains it after answering.
REQUEST_TIMEOUT = 1.0
#: What a client may send: "status\n" and a little slack.
REQUEST_LIMIT = 64

LiveState = Callable[[], list[dict[str, Any]]]
"""Returns the live state of every line the node runs, one JSON-ready dict per line."""


def line_live_state(line: Line, name: str | None = None) -> dict[str, Any]:
    """One line's live state, as the control socket and the metrics endpoint show it.

    ``name`` is the peer's name in a node serving several peers (None for a single line).
    """
    stats = line.stats
    rtt = line.rtt
    handshake = stats.last_handshake_ns
    return {
        "name": name,
        "peer": line.peer.fingerprint(),
        "liveness": line.liveness.value,
        "rtt_ms": None if rtt is None else round(rtt * 1000, 3),
        "last_handshake": None if handshake is None else iso_utc(handshake),
        "last_handshake_ns": handshake,
        "messages_sent": stats.sent,
        "messages_received": stats.received,
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
        "sessions": stats.sessions,
        "reconnects": stats.reconnects,
        "retransmitted": stats.retransmitted,
        "rejected_connections": stats.rejected_connections,
        "outbox": line.outbox_size,
    }


def _document(live_state: LiveState) -> bytes:
    document: dict[str, Any] = {
        "schema": CONTROL_SCHEMA,
        "pid": os.getpid(),
        "time": iso_utc(time.time_ns()),
    }
    try:
        document["lines"] = live_state()
    except Exception as exc:
        # A side channel must never end the line it reports on: the client is told instead.
        logger.exception("control socket: cannot read the live state")
        document["error"] = f"cannot read the live state: {exc!r}"
    return json.dumps(document, ensure_ascii=False).encode("utf-8") + b"\n"


async def _answer(stream: trio.SocketStream, live_state: LiveState) -> None:
    try:
        await stream.send_all(_document(live_state))
        await stream.send_eof()
        with trio.move_on_after(REQUEST_TIMEOUT):
            received = 0
            while received <= REQUEST_LIMIT:
                data = await stream.receive_some(REQUEST_LIMIT)
                if not data:
                    break
                received += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        logger.debug("control socket: a client left early: %r", exc)
    finally:
        await trio.aclose_forcefully(stream)


def _remove_if_ours(path: Path, inode: int) -> None:
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


async def serve_control(
    path: Path,
    live_state: LiveState,
    *,
    task_status: trio.TaskStatus[Path | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the live state on the Unix socket ``path`` until cancelled (see the module
    docstring); ``task_status.started()`` reports the path, or None when the socket cannot
    be made (a path too long for a Unix socket, a read-only directory): the node then runs
    without one, and says so in a warning.

    Call it only while holding the store lock of ``path``'s directory: a socket already at
    ``path`` is taken for a crashed node's and replaced.
    """
    # No longer than "hotline.sock" (a pid is at most 0x400000): if the socket's path fits
    # in the 107 bytes a Unix socket allows, so does this one.
    temporary = path.with_name(f".{os.getpid():x}.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        await sock.bind(os.fspath(temporary))
        try:
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        inode = os.stat(path).st_ino
        sock.listen()
    except OSError as exc:
        sock.close()
        logger.warning("no control socket at %s (hotline status shows no live state): %s",
                       path, exc.strerror or exc)
        task_status.started(None)
        return
    listener = trio.SocketListener(sock)
    try:
        async with listener, trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # Out of descriptors: try again shortly.
                    logger.warning("control socket: cannot accept: %s", exc.strerror)
                    await trio.sleep(REQUEST_TIMEOUT)
                    continue
                nursery.start_soon(_answer, stream, live_state)
    finally:
        _remove_if_ours(path, inode)


def query_control(path: Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The document of the node serving ``path``, or None when no node answers there (no
    socket, or a stale one). Blocking: this is the client, run by ``hotline status``.

    Raises OSError for other failures (a socket that times out or that we may not open) and
    ValueError for an answer that is not a JSON object.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        client.sendall(b"status\n")
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    document = json.loads(b"".join(chunks))
    if not isinstance(document, dict):
        # ValueError, as json.loads raises for an answer that is no JSON at all.
        raise ValueError("the control socket's answer is not a JSON object")  # noqa: TRY004
    return document
