"""A listener that serves several lines of one identity on one TCP port.

Theory of operation
-------------------
Noise IK tells the responder who is calling in the first message, so one port can serve
every peer this node has a line with: the listener runs the responder's half of the handshake
against the keys of all registered lines, then hands the authenticated connection to the line
of that peer (:meth:`Line.accept <hotline.Line.accept>`), which decides whether it becomes
its live session.

Strangers cost little and cannot pile up: at most ``max_pending_handshakes`` connections may
be unauthenticated at once, and the core buffers at most one Noise message per connection
before it authenticates. A responder sends nothing to an unknown or replayed initiator.
Handshakes cost three X25519 operations each before the caller is known (our ephemeral
key, derived as the connection is accepted, and two Diffie-Hellman), so each source may start
at most ``handshake_rate`` of them per second with bursts of ``handshake_burst`` (WireGuard's
figures: 20 per second, burst 5); connections beyond that are closed before any work is done.
The same rate applies per peer key once a handshake authenticates (WireGuard limits each peer
too), so one key calling from many addresses cannot churn its line's session.

The pending table is shared, so nobody may hold it: a *source* (an IPv4 address, or an IPv6
/64, which one machine usually owns whole) holds at most :data:`PENDING_PER_SOURCE` slots, a
connection has :data:`FIRST_MESSAGE_TIMEOUT` to deliver the first handshake message (the only
one a responder waits for), and a newcomer never finds the table closed: a source over its
share gives up its own oldest slot, and a full table gives up the oldest of all. A real
initiator sends its first message as soon as TCP connects, so it needs its slot for one round
trip, and a flood must open ``max_pending_handshakes`` connections within that time to push it
out.

A replayed initiation is refused before it spends anything of the peer it names: its timestamp
is compared with the line's stored watermark and with the newest initiation of that peer this
listener has already let through, before the per-key rate is charged. Otherwise anyone who
once saw an initiation could keep the real peer's budget empty from a few addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._config import Config, check_address
from .._errors import AuthenticationError, HotlineError, LocalProtocolError
from .._keys import Identity, PublicKey
from ..protocol import Connection, PeerAuthenticated
from ._network import Address, LineEnd, authenticate, unwrap_single_exception

__all__ = ["Listener", "open_listener"]

logger = logging.getLogger("hotline")

#: Seconds a new connection has to deliver the first handshake message (one frame of 142
#: bytes, sent by a real initiator as soon as TCP connects). Two seconds cover a slow path
#: and one retransmission of that segment (TCP's first retransmission timeout is 1 s, RFC
#: 6298); an idle connection is not allowed the whole ``handshake_timeout`` (10 s), which would
#: let one slot be held with a connection every 10 s.
FIRST_MESSAGE_TIMEOUT = 2.0
#: The most pending handshakes one source may hold. A dialling line has one handshake in
#: flight; four leave room for a few peers behind one NAT address calling at once, and leave
#: 28 of the 32 default slots to everyone else. A source over its share loses its own oldest.
PENDING_PER_SOURCE = 4


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
            return source_group(str(stream.socket.getpeername()[0]))
        except OSError:
            return "?"
    return "local"


def source_group(address: str) -> str:
    """The unit that rate limits and pending slots count by: an IPv4 address, or the /64 of
    an IPv6 address (a single host is usually given a whole /64, so counting its addresses
    one by one would give it 2**64 budgets). IPv4-mapped IPv6 addresses count as IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class _Slot:
    """One connection in the pending table; cancelling ``scope`` ends its handshake."""

    __slots__ = ("evicted", "scope", "source")

    def __init__(self, source: str, deadline: float) -> None:
        self.source = source
        self.scope = trio.CancelScope(deadline=deadline)
        self.evicted = False


class Listener:
    """Accepts connections for any registered line of ``identity``."""

    def __init__(self, identity: Identity, *, config: Config | None = None) -> None:
        self.identity = identity
        self.config = config or Config()
        self._lines: dict[bytes, LineEnd] = {}
        self._known: dict[bytes, PublicKey] = {}
        # Insertion order is age: the first slot is the oldest.
        self._slots: dict[_Slot, None] = {}
        self._slots_per_source: dict[str, int] = {}
        # Per peer key, the newest initiation timestamp handed to its line (see the module
        # docstring): a copy of it arriving while the first is still starting is a replay too.
        self._initiations: dict[bytes, int] = {}
        self._rate = _TokenBuckets(self.config.handshake_rate, self.config.handshake_burst)
        self._peer_rate = _TokenBuckets(self.config.handshake_rate, self.config.handshake_burst)
        self.rejected_handshakes = 0
        self.rate_limited = 0
        self.evicted_handshakes = 0
        self.replayed_initiations = 0
        self.addresses: list[Address] = []

    def add(self, line: LineEnd) -> None:
        if line.identity.public_key != self.identity.public_key:
            raise LocalProtocolError("a listener serves lines of its own identity only")
        if line.peer.x25519 in self._lines:
            raise LocalProtocolError(f"a line to {line.peer.fingerprint()} is already served")
        self._lines[line.peer.x25519] = line
        self._known[line.peer.x25519] = line.peer

    def remove(self, line: LineEnd) -> None:
        if self._lines.get(line.peer.x25519) is line:
            del self._lines[line.peer.x25519]
            del self._known[line.peer.x25519]
            self._initiations.pop(line.peer.x25519, None)

    @property
    def pending_handshakes(self) -> int:
        return len(self._slots)

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
        source = _source_of(stream)
        if not self._rate.take(source, trio.current_time()):
            await self._refuse_rate_limited(stream, source)
            return
        slot = self._take_slot(source)
        hello: PeerAuthenticated | None = None
        failure: Exception | None = None
        try:
            with slot.scope:
                # Our ephemeral key for message 2, derived now (a scalar multiplication)
                # while message 1 is still on its way rather than once it has arrived. A
                # caller that sends nothing costs no more than one that sends 142 bytes of
                # anything, which costs a Diffie-Hellman before it fails.
                conn = Connection.respond(
                    self.identity,
                    self._known,
                    now=trio.current_time(),
                    config=self.config,
                    ephemeral=os.urandom(32),
                )
                hello = await authenticate(stream, conn)
        except (HotlineError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            failure = exc
        finally:
            self._release_slot(slot)
        if failure is not None:
            reason = failure.reason if isinstance(failure, AuthenticationError) else str(failure)
            await self._refuse(stream, f"{type(failure).__name__}: {reason}")
            return
        if hello is None:
            if slot.evicted:
                self.rejected_handshakes += 1
                logger.info("incoming handshake from %s evicted for a newer connection", source)
                await trio.aclose_forcefully(stream)
            else:
                await self._refuse(stream, "no first handshake message within "
                                   f"{self._first_message_timeout:g} s")
            return
        line = self._lines.get(hello.peer.x25519)
        if line is None:  # The line closed during the handshake.
            await trio.aclose_forcefully(stream)
            return
        timestamp = hello.initiation_timestamp
        assert timestamp is not None
        newest = max(line.state.peer_initiation_watermark,
                     self._initiations.get(hello.peer.x25519, 0))
        if timestamp <= newest:
            # Checked here as well as in Connection.start, so that a replay is refused before
            # it is charged to the peer's rate below.
            self.rejected_handshakes += 1
            self.replayed_initiations += 1
            logger.warning("incoming handshake from %s refused: replayed initiation of %s",
                           source, hello.peer.fingerprint())
            await trio.aclose_forcefully(stream)
            return
        # Claimed before the rate is charged: if this one is refused for the rate, its copies
        # must not be charged again (the peer's next call has a newer timestamp anyway).
        self._initiations[hello.peer.x25519] = timestamp
        if not self._peer_rate.take(hello.peer.raw, trio.current_time()):
            # The same key calling from many addresses: each call would replace the session.
            await self._refuse_rate_limited(stream, hello.peer.fingerprint())
            return
        await line.accept(stream, conn, hello)

    @property
    def _first_message_timeout(self) -> float:
        return min(FIRST_MESSAGE_TIMEOUT, self.config.handshake_timeout)

    def _take_slot(self, source: str) -> _Slot:
        """A pending slot for a connection from ``source``; evicts one if need be."""
        per_source = min(PENDING_PER_SOURCE, self.config.max_pending_handshakes)
        if self._slots_per_source.get(source, 0) >= per_source:
            self._evict(next(slot for slot in self._slots if slot.source == source))
        elif len(self._slots) >= self.config.max_pending_handshakes:
            self._evict(next(iter(self._slots)))
        slot = _Slot(source, trio.current_time() + self._first_message_timeout)
        self._slots[slot] = None
        self._slots_per_source[source] = self._slots_per_source.get(source, 0) + 1
        return slot

    def _release_slot(self, slot: _Slot) -> None:
        if slot not in self._slots:
            return  # Evicted earlier.
        del self._slots[slot]
        left = self._slots_per_source[slot.source] - 1
        if left:
            self._slots_per_source[slot.source] = left
        else:
            del self._slots_per_source[slot.source]

    def _evict(self, slot: _Slot) -> None:
        self._release_slot(slot)
        slot.evicted = True
        slot.scope.cancel()
        self.evicted_handshakes += 1

    async def _refuse(self, stream: trio.abc.Stream, reason: str) -> None:
        self.rejected_handshakes += 1
        logger.warning("incoming handshake refused: %s", reason)
        await trio.aclose_forcefully(stream)

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
