"""A listener that serves several lines of one identity on one TCP port.

Theory of operation
-------------------
Noise IK tells the responder who is calling in the first message, so one port can serve
every peer this node has a line with: the listener runs the responder's half of the handshake
against the keys of all registered lines, then hands the authenticated connection to the line
of that peer, which decides whether it becomes its live session.

Strangers cost little and cannot pile up: at most ``max_pending_handshakes`` connections may
be unauthenticated at once (the rest are closed on arrival), each must finish its handshake
within ``handshake_timeout``, and the core buffers at most one Noise message per connection
before it authenticates. A responder sends nothing to an unknown or replayed initiator.
Handshakes cost two Diffie-Hellman operations each, so each source address may start at most
``handshake_rate`` of them per second with bursts of ``handshake_burst`` (WireGuard's figures:
20 per second, burst 5); connections beyond that are closed before any work is done. The same
rate applies per peer key once a handshake authenticates (WireGuard limits each peer too), so
one key calling from many addresses cannot churn its line's session.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._config import Config, check_address
from ._connection import Connection
from ._errors import AuthenticationError, HotlineError, LocalProtocolError
from ._keys import Identity, PublicKey
from ._line import Address, Line, authenticate, unwrap_single_exception

__all__ = ["Listener", "open_listener"]

logger = logging.getLogger("hotline")


class _TokenBuckets:
    """Per-key token buckets with a bounded number of keys (the idlest are forgotten)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str | bytes, tuple[float, float]] = {}

    def take(self, key: str | bytes, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_keys:
            # Dicts keep insertion order and take() re-inserts: the first key is the idlest.
            del self._buckets[next(iter(self._buckets))]
        return allowed


def _source_of(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            return str(stream.socket.getpeername()[0])
        except OSError:
            return "?"
    return "local"


class Listener:
    """Accepts connections for any registered :class:`Line` of ``identity``."""

    def __init__(self, identity: Identity, *, config: Config | None = None) -> None:
        self.identity = identity
        self.config = config or Config()
        self._lines: dict[bytes, Line] = {}
        self._known: dict[bytes, PublicKey] = {}
        self._pending = 0
        self._rate = _TokenBuckets(self.config.handshake_rate, self.config.handshake_burst)
        self._peer_rate = _TokenBuckets(self.config.handshake_rate, self.config.handshake_burst)
        self.rejected_handshakes = 0
        self.rate_limited = 0
        self.addresses: list[Address] = []

    def add(self, line: Line) -> None:
        if line.identity.public_key != self.identity.public_key:
            raise LocalProtocolError("a listener serves lines of its own identity only")
        if line.peer.x25519 in self._lines:
            raise LocalProtocolError(f"a line to {line.peer.fingerprint()} is already served")
        self._lines[line.peer.x25519] = line
        self._known[line.peer.x25519] = line.peer

    def remove(self, line: Line) -> None:
        if self._lines.get(line.peer.x25519) is line:
            del self._lines[line.peer.x25519]
            del self._known[line.peer.x25519]

    @property
    def pending_handshakes(self) -> int:
        return self._pending

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (port 0 picks one); ``task_status`` gets the bound addresses."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.addresses = [
            (str(listener.socket.getsockname()[0]), int(listener.socket.getsockname()[1]))
            for listener in listeners
        ]
        logger.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))
        task_status.started(list(self.addresses))
        await trio.serve_listeners(self.handle_stream, listeners)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Authenticate one incoming connection and hand it to its line."""
        if self._pending >= self.config.max_pending_handshakes:
            self.rejected_handshakes += 1
            await trio.aclose_forcefully(stream)
            return
        source = _source_of(stream)
        if not self._rate.take(source, trio.current_time()):
            await self._refuse_rate_limited(stream, source)
            return
        self._pending += 1
        try:
            conn = Connection.respond(
                self.identity,
                self._known,
                now=trio.current_time(),
                config=self.config,
            )
            hello = await authenticate(stream, conn)
        except (HotlineError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.rejected_handshakes += 1
            reason = exc.reason if isinstance(exc, AuthenticationError) else str(exc)
            logger.warning("incoming handshake refused: %s: %s", type(exc).__name__, reason)
            await trio.aclose_forcefully(stream)
            return
        finally:
            self._pending -= 1
        line = self._lines.get(hello.peer.x25519)
        if line is None:  # The line closed during the handshake.
            await trio.aclose_forcefully(stream)
            return
        if not self._peer_rate.take(hello.peer.raw, trio.current_time()):
            # The same key calling from many addresses: each call would replace the session.
            await self._refuse_rate_limited(stream, hello.peer.fingerprint())
            return
        await line._run_session(stream, conn, hello)

    async def _refuse_rate_limited(self, stream: trio.abc.Stream, who: str) -> None:
        self.rejected_handshakes += 1
        self.rate_limited += 1
        logger.info("handshake from %s refused: rate limit", who)
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_listener(
    identity: Identity, host: str, port: int, *, config: Config | None = None
) -> AsyncIterator[Listener]:
    """Listen on one port for every line of ``identity`` opened with ``listener=``."""
    check_address((host, port), "open_listener", listening=True)
    listener = Listener(identity, config=config)
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve, host, port)
            try:
                yield listener
            finally:
                nursery.cancel_scope.cancel()
