"""Test helpers for applications built on hotline: a TCP proxy that injects network faults.

Theory of operation
-------------------
:class:`FaultProxy` listens on ``127.0.0.1`` (an ephemeral port) and forwards every connection
it accepts to ``target_host:target_port``. Point the dialling side of a line at the proxy and
the listening side behind it: every byte between them then crosses the proxy, which damages
the stream the way real networks and middleboxes do. *Upstream* is what the dialler sends (the
client, towards the target), *downstream* what comes back; each direction has its own
:class:`Faults`.

Each direction of a proxied connection is a *pump* of two tasks joined by a queue. The reader
takes whatever the socket returns (a *chunk*) and stamps it with the time it may leave (now
plus latency and jitter, never before the chunk ahead of it: TCP does not reorder); it stops
reading while ``Faults.buffer`` bytes are queued, so a slow direction pushes back on its
sender through TCP as a router queue would (the kernels' socket buffers add a few hundred
kB). The writer waits for the chunk's time and then forwards it through the faults below,
in this order:

- **replay** (per chunk): first send an earlier chunk of the same direction again (from this
  connection or from an earlier one; the last 64 chunks are kept);
- **strike** (per connection, at a byte offset): when the bytes forwarded reach the offset
  drawn for this connection, forward exactly the bytes before it, then *cut* (reset both
  legs: ``SO_LINGER`` 0 and close, so both ends see a reset), fall into a *black hole* (every
  later byte, and the end of stream, is read and dropped; the connection stays open), or
  *close* (half-close: the receiver gets an end of stream after exactly ``close_after`` bytes,
  while the sender's further bytes are read and dropped, so the sender notices nothing);
- **bit flip** (per chunk): flip one random bit of the chunk;
- **slicing** (per chunk): forward the chunk in segments of 1 to ``max_segment`` bytes, with a
  scheduling point after each, so the receiver reads them separately;
- **bandwidth** (per connection): pace the direction at ``bandwidth`` bytes per second, in
  pieces of 10 ms worth of bytes.

A black hole and a half-close stall a connection by design: only the endpoints can notice
(their heartbeats, or the end of stream). Two knobs keep a faulty link usable: every
per-connection fault has a probability (a connection drawn clean is clean throughout), and
``Faults.connections`` limits all faults of a direction to the first K connections the proxy
accepts. :meth:`FaultProxy.heal` stops every new fault at once, on live connections too (a
strike not yet reached is disarmed, queued delays are kept); a connection already in a black
hole or half-closed stays so until its endpoints give up on it.

Determinism: every connection draws a seed from the proxy's ``rng`` when it is accepted, and
each reader and writer has its own generator seeded from that, so a given sequence of
connections and chunks meets the same faults. Chunk boundaries depend on the operating
system and on trio's scheduling, so two runs are alike, not identical.

Counters (:attr:`FaultProxy.stats`): connections accepted, bytes forwarded and dropped per
direction, and faults injected per direction and kind (``delay``, ``throttle``, ``slice``,
``cut``, ``blackhole``, ``close``, ``bitflip``, ``replay``).

Usage, with a line behind the proxy::

    async with open_line(bob, alice.public_key, store=MemoryStore(),
                         listen=("127.0.0.1", 0)) as line_b:
        faults = Faults(cut_probability=0.5, strike_within=20_000, connections=10)
        async with open_fault_proxy("127.0.0.1", line_b.listen_addresses[0][1],
                                    upstream=faults, rng=random.Random(1)) as proxy:
            async with open_line(alice, bob.public_key, store=MemoryStore(),
                                 connect=("127.0.0.1", proxy.port)) as line_a:
                ...  # traffic under faults
                proxy.heal()  # then everything must get through
"""

from __future__ import annotations

import math
import random
import socket
import struct
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import trio

__all__ = ["DirectionStats", "FaultProxy", "Faults", "ProxyStats", "open_fault_proxy"]

_READ_SIZE = 65536
_HISTORY = 64
#: Seconds of traffic a throttled direction forwards at once.
_PACING = 0.01


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults of one direction of the proxy. The default injects nothing.

    Probabilities are per chunk (a read from the socket) or per connection, as marked.
    """

    latency: float = 0.0
    """Seconds every delayed chunk is held back."""
    jitter: float = 0.0
    """Extra delay, uniform in ``[0, jitter)`` seconds per delayed chunk (order is kept)."""
    delay_probability: float = 1.0
    """Per chunk: the chance that ``latency`` and ``jitter`` apply to it."""
    bandwidth: float | None = None
    """Bytes per second this direction may carry (None: unlimited)."""
    bandwidth_probability: float = 1.0
    """Per connection: the chance that ``bandwidth`` applies to it."""
    slice_probability: float = 0.0
    """Per chunk: the chance that it is forwarded in tiny segments."""
    max_segment: int = 7
    """Largest segment of a sliced chunk (segments are 1 to ``max_segment`` bytes)."""
    cut_probability: float = 0.0
    """Per connection: the chance of a reset at an offset uniform in ``[0, strike_within)``."""
    blackhole_probability: float = 0.0
    """Per connection: the chance of a black hole from an offset in ``[0, strike_within)``."""
    strike_within: int = 16384
    """Cuts and black holes strike at a byte offset (of this direction) below this."""
    close_probability: float = 0.0
    """Per connection: the chance of a half-close after exactly ``close_after`` bytes."""
    close_after: int = 0
    """Bytes of this direction forwarded before a half-close."""
    bitflip_probability: float = 0.0
    """Per chunk: the chance that one random bit of it is flipped."""
    replay_probability: float = 0.0
    """Per chunk: the chance that an earlier chunk of this direction is sent again before it."""
    connections: int | None = None
    """Only the first this many connections of the proxy are faulty (None: all of them)."""
    buffer: int = 256 * 1024
    """Bytes a direction holds (read, not yet forwarded) before it stops reading, so that a
    slow or delayed direction pushes back on the sender through TCP, as a router queue does."""

    def __post_init__(self) -> None:
        probabilities = (
            self.delay_probability, self.bandwidth_probability, self.slice_probability,
            self.cut_probability, self.blackhole_probability, self.close_probability,
            self.bitflip_probability, self.replay_probability,
        )
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError("probabilities must be in [0, 1]")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ValueError("bandwidth must be > 0 bytes per second")
        if self.buffer < 1:
            raise ValueError("buffer must be >= 1 byte")
        if self.max_segment < 1 or self.strike_within < 1 or self.close_after < 0:
            raise ValueError("need max_segment >= 1, strike_within >= 1, close_after >= 0")
        if self.connections is not None and self.connections < 0:
            raise ValueError("connections must be >= 0")


CLEAN = Faults()


@dataclass
class DirectionStats:
    """Counters of one direction, over every connection of the proxy."""

    bytes_read: int = 0
    bytes_forwarded: int = 0
    """Bytes written to the receiver, replayed ones included."""
    bytes_dropped: int = 0
    """Bytes read and never forwarded (black hole, after a half-close, after a cut)."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults injected, by kind."""


@dataclass
class ProxyStats:
    """Counters of a :class:`FaultProxy` since it started."""

    connections: int = 0
    upstream: DirectionStats = field(default_factory=DirectionStats)
    downstream: DirectionStats = field(default_factory=DirectionStats)

    @property
    def faults(self) -> Counter[str]:
        """Faults injected, by ``"upstream.kind"`` / ``"downstream.kind"``."""
        total: Counter[str] = Counter()
        for name, stats in (("upstream", self.upstream), ("downstream", self.downstream)):
            for kind, count in stats.faults.items():
                total[f"{name}.{kind}"] += count
        return total


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` that injects :class:`Faults`.

    Run :meth:`serve` in a nursery with ``nursery.start`` (it returns the bound port), or use
    :func:`open_fault_proxy`. ``upstream`` and ``downstream`` are read when a connection is
    accepted: assign new :class:`Faults` to them to change what later connections meet.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        upstream: Faults = CLEAN,
        downstream: Faults = CLEAN,
        rng: random.Random | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.upstream = upstream
        self.downstream = downstream
        self.rng = rng or random.Random()
        self.stats = ProxyStats()
        self.port = 0
        self.healed = False
        self._history: dict[str, deque[bytes]] = {
            "upstream": deque(maxlen=_HISTORY),
            "downstream": deque(maxlen=_HISTORY),
        }

    def heal(self) -> None:
        """Inject nothing from now on, on new and live connections alike."""
        self.healed = True

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (an ephemeral port, reported through ``task_status``)."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = int(listeners[0].socket.getsockname()[1])
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.stats.connections += 1
        number = self.stats.connections
        seed = self.rng.getrandbits(64)
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            _set_reset(client)
            await trio.aclose_forcefully(client)
            return
        link = _Link()
        up = _Pump(self, link, "upstream", self.upstream, number, seed, client, server)
        down = _Pump(self, link, "downstream", self.downstream, number, seed ^ 1, server, client)
        try:
            async with trio.open_nursery() as nursery:
                link.scope = nursery.cancel_scope
                up.start(nursery)
                down.start(nursery)
        finally:
            with trio.CancelScope(shield=True):
                if link.reset:
                    _set_reset(client)
                    _set_reset(server)
                await trio.aclose_forcefully(client)
                await trio.aclose_forcefully(server)
            for pump in (up, down):
                pump.stats.bytes_dropped += pump.queued


@asynccontextmanager
async def open_fault_proxy(
    target_host: str,
    target_port: int,
    *,
    upstream: Faults = CLEAN,
    downstream: Faults = CLEAN,
    rng: random.Random | None = None,
) -> AsyncIterator[FaultProxy]:
    """Run a :class:`FaultProxy` for the duration of the block (its port is ``proxy.port``)."""
    proxy = FaultProxy(
        target_host, target_port, upstream=upstream, downstream=downstream, rng=rng
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


def _set_reset(stream: trio.SocketStream) -> None:
    """Make closing ``stream`` send a reset (RST) instead of an orderly end (FIN)."""
    with suppress(OSError, trio.ClosedResourceError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Link:
    """The two legs of one proxied connection."""

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.reset = False

    def abort(self, *, reset: bool) -> None:
        self.reset = self.reset or reset
        if self.scope is not None:
            self.scope.cancel()


_Item = tuple[float, bytes]


class _Pump:
    """One direction of one proxied connection: a reader, a queue and a writer."""

    def __init__(
        self,
        proxy: FaultProxy,
        link: _Link,
        direction: str,
        faults: Faults,
        number: int,
        seed: int,
        src: trio.SocketStream,
        dst: trio.SocketStream,
    ) -> None:
        self.proxy = proxy
        self.link = link
        self.stats: DirectionStats = getattr(proxy.stats, direction)
        self.history = proxy._history[direction]
        self.src = src
        self.dst = dst
        faulty = faults.connections is None or number <= faults.connections
        self.faults = faults if faulty else CLEAN
        seeder = random.Random(seed)
        self.read_rng = random.Random(seeder.getrandbits(64))
        self.rng = random.Random(seeder.getrandbits(64))
        # Per-connection draws, all made now so that they do not depend on chunking.
        f = self.faults
        draws = [seeder.random() for _ in range(4)]
        self.rate = f.bandwidth if f.bandwidth and draws[0] < f.bandwidth_probability else None
        strikes: list[tuple[int, str]] = []
        if draws[1] < f.cut_probability:
            strikes.append((seeder.randrange(f.strike_within), "cut"))
        if draws[2] < f.blackhole_probability:
            strikes.append((seeder.randrange(f.strike_within), "blackhole"))
        if draws[3] < f.close_probability:
            strikes.append((f.close_after, "close"))
        self.strike = min(strikes) if strikes else None
        self.offset = 0  # Bytes of the source forwarded (replays and flips aside).
        self.dropping = False  # Black hole or half-closed: read and drop everything.
        self.next_free = 0.0
        self.last_due = 0.0
        self.queued = 0
        self.buffer = faults.buffer
        self.space = trio.Event()
        send, receive = trio.open_memory_channel[_Item](math.inf)
        self._send, self._receive = send, receive
        if self.rate is not None:
            self.stats.faults["throttle"] += 1

    @property
    def active(self) -> Faults:
        return CLEAN if self.proxy.healed else self.faults

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._guard, self._read)
        nursery.start_soon(self._guard, self._write)

    async def _guard(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # One leg failed (usually a reset): reset the other, as a TCP proxy would.
            self.link.abort(reset=True)

    async def _read(self) -> None:
        async with self._send:
            while True:
                while self.queued >= self.buffer:
                    self.space = trio.Event()
                    await self.space.wait()
                data = await self.src.receive_some(_READ_SIZE)
                self.stats.bytes_read += len(data)
                f = self.active
                now = trio.current_time()
                due = now
                if (f.latency or f.jitter) and self.read_rng.random() < f.delay_probability:
                    due = now + f.latency + self.read_rng.uniform(0.0, f.jitter)
                    self.stats.faults["delay"] += 1
                self.last_due = max(self.last_due, due)
                self.queued += len(data)
                await self._send.send((self.last_due, data))
                if not data:
                    return

    async def _write(self) -> None:
        async with self._receive:
            async for due, data in self._receive:
                await trio.sleep_until(due)
                self.queued -= len(data)
                self.space.set()
                if not data:
                    if not self.dropping:
                        await self.dst.send_eof()
                    return
                if self.dropping:
                    self.stats.bytes_dropped += len(data)
                    continue
                await self._forward(data)

    async def _forward(self, data: bytes) -> None:
        f = self.active
        rng = self.rng
        if f.replay_probability and self.history and rng.random() < f.replay_probability:
            self.stats.faults["replay"] += 1
            await self._send_paced(rng.choice(self.history), f)
        self.history.append(data)
        if self.strike is not None and not self.proxy.healed:
            at, kind = self.strike
            if self.offset + len(data) > at:
                head, rest = data[: at - self.offset], data[at - self.offset :]
                await self._send_paced(head, CLEAN)
                self.offset += len(head)
                self.strike = None
                self.stats.faults[kind] += 1
                await self._strike(kind, len(rest))
                return
        if f.bitflip_probability and rng.random() < f.bitflip_probability:
            self.stats.faults["bitflip"] += 1
            flipped = bytearray(data)
            bit = rng.randrange(len(flipped) * 8)
            flipped[bit // 8] ^= 1 << (bit % 8)
            data = bytes(flipped)
        self.offset += len(data)
        await self._send_paced(data, f)

    async def _strike(self, kind: str, rest: int) -> None:
        self.stats.bytes_dropped += rest
        if kind == "cut":
            self.link.abort(reset=True)
            await trio.lowlevel.checkpoint()
            return
        self.dropping = True
        if kind == "close":
            await self.dst.send_eof()

    async def _send_paced(self, data: bytes, f: Faults) -> None:
        if not data:
            return
        segments = [data]
        if f.slice_probability and self.rng.random() < f.slice_probability:
            self.stats.faults["slice"] += 1
            segments = []
            at = 0
            while at < len(data):
                size = self.rng.randint(1, f.max_segment)
                segments.append(data[at : at + size])
                at += size
        elif self.rate is not None and not self.proxy.healed:
            # A throttled link delivers smoothly: quanta of _PACING seconds, not whole chunks.
            quantum = max(1, int(self.rate * _PACING))
            segments = [data[at : at + quantum] for at in range(0, len(data), quantum)]
        for index, segment in enumerate(segments):
            if self.rate is not None and not self.proxy.healed:
                # The segment leaves once the link has carried the ones before it.
                await trio.sleep_until(self.next_free)
                now = trio.current_time()
                self.next_free = max(self.next_free, now) + len(segment) / self.rate
            elif index:
                await trio.sleep(0)
            await self.dst.send_all(segment)
            self.stats.bytes_forwarded += len(segment)


# --- Frames and transport plaintexts, built by hand -----------------------------------------
#
# For tests and fuzz targets that play a peer on the wire: the byte layouts of
# docs/protocol.md ("Frames", "Transport messages"), with any part of them wrong on purpose.
# They encrypt nothing: seal a plaintext with the sending CipherState of a handshake.

__all__ += ["EPOCH_NS", "frame", "split_frames", "transport_plaintext", "wall_ns"]

#: Nanoseconds since the epoch at ``now == 0`` of a manual clock (see :func:`wall_ns`).
EPOCH_NS = 1_700_000_000_000_000_000


def frame(noise_message: bytes) -> bytes:
    """One frame: ``uint16_be(len) || noise_message``."""
    return len(noise_message).to_bytes(2, "big") + noise_message


def split_frames(data: bytes) -> list[bytes]:
    """Cut a stream of whole frames into frames, each with its 2-byte length prefix."""
    frames = []
    pos = 0
    while pos < len(data):
        end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
        if end > len(data):
            raise ValueError("the stream ends inside a frame")
        frames.append(bytes(data[pos:end]))
        pos = end
    return frames


def transport_plaintext(
    flags: int, content: bytes, *, length: int | None = None, padding: bytes = b""
) -> bytes:
    """A transport plaintext ``flags || length || content || padding``: ``length`` (default
    the content's) and ``padding`` (zero bytes on the wire) may be anything."""
    size = len(content) if length is None else length
    return bytes([flags]) + size.to_bytes(2, "big") + content + padding


def wall_ns(now: float, *, epoch_ns: int = EPOCH_NS) -> int:
    """The wall clock (nanoseconds since the epoch) of a manual clock's ``now`` (seconds),
    for message, receipt and initiation timestamps that are the same on every run."""
    return epoch_ns + round(now * 1_000_000_000)
