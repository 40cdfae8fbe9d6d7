"""The one TCP relay of the test scaffolding: a proxy that injects network faults.

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

Besides the drawn faults, a test (or the demo, or the benchmark) drives the link by hand, on
live connections too: :meth:`FaultProxy.hold` drops every byte both ways until
:meth:`FaultProxy.release` (a link that silently loses everything); :meth:`FaultProxy.cut`
resets one live connection or all of them; while :attr:`FaultProxy.refusing`, a new connection
is reset as soon as it is accepted (the peer is away). :attr:`FaultProxy.connections` lists
every connection accepted, in order, and :meth:`FaultProxy.wait_connections` waits for the
next ones.

With ``frames=True`` the proxy reads each direction as hotline frames (a 2-byte big-endian
length, then that many bytes; docs/protocol.md): every whole frame is recorded on its
connection (:attr:`ProxiedConnection.frames`) and passed to :attr:`FaultProxy.hook`, which
returns the frames to forward in its place (none to drop it, an earlier one to replay it, one
of its own to insert it). :attr:`FaultProxy.takeover` replaces forwarding altogether: it is
handed the client's stream and plays the other end itself (a man in the middle).

Counters (:attr:`FaultProxy.stats`): connections accepted, bytes forwarded and dropped per
direction, and faults injected per direction and kind (``delay``, ``throttle``, ``slice``,
``cut``, ``blackhole``, ``close``, ``bitflip``, ``replay``, ``hold``).

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
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import trio

from ._connections import FrameHook, ProxiedConnection, Takeover
from ._faults import CLEAN, DirectionStats, Faults, ProxyStats

__all__ = ["FaultProxy", "open_fault_proxy"]

_READ_SIZE = 65536
_HISTORY = 64
#: Seconds of traffic a throttled direction forwards at once.
_PACING = 0.01


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` that injects :class:`Faults`.

    Run :meth:`serve` in a nursery with ``nursery.start`` (it returns the bound port), or use
    :func:`open_fault_proxy`. ``upstream`` and ``downstream`` are read when a connection is
    accepted: assign new :class:`Faults` to them to change what later connections meet.
    ``frames=True`` parses both directions into frames for :attr:`hook` (see the module
    docstring).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        upstream: Faults = CLEAN,
        downstream: Faults = CLEAN,
        rng: random.Random | None = None,
        frames: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        self.upstream = upstream
        self.downstream = downstream
        self.rng = rng or random.Random()
        self.stats = ProxyStats()
        self.port = 0
        self.healed = False
        self.holding = False
        self.refusing = False
        """New connections are reset as soon as they are accepted."""
        self.frames = frames
        self.hook: FrameHook | None = None
        self.takeover: Takeover | None = None
        self.connections: list[ProxiedConnection] = []
        self._accepted = trio.Event()
        self._history: dict[str, deque[bytes]] = {
            "upstream": deque(maxlen=_HISTORY),
            "downstream": deque(maxlen=_HISTORY),
        }

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def heal(self) -> None:
        """Inject nothing from now on, on new and live connections alike."""
        self.healed = True

    def hold(self) -> None:
        """Drop every byte either way, on new and live connections alike, until released."""
        self.holding = True

    def release(self) -> None:
        self.holding = False

    def cut(self, index: int | None = None) -> int:
        """Reset connection ``index`` if it is live (every live one when None) and return
        how many were cut."""
        chosen = self.connections if index is None else [self.connections[index]]
        live = [connection for connection in chosen if connection.live]
        for connection in live:
            connection.abort(reset=True)
        return len(live)

    async def wait_connections(self, count: int) -> None:
        """Wait until the proxy has accepted ``count`` connections in all."""
        while len(self.connections) < count:
            await self._accepted.wait()

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
        connection = ProxiedConnection(number - 1)
        self.connections.append(connection)
        self._accepted.set()
        self._accepted = trio.Event()
        server: trio.SocketStream | None = None
        try:
            with connection.scope:
                if self.refusing:
                    connection.reset = True
                    return
                if self.takeover is not None:
                    await self.takeover(client, connection)
                    return
                try:
                    server = await trio.open_tcp_stream(*self.target)
                except OSError:
                    connection.reset = True
                    return
                await self._forward_both(connection, number, seed, client, server)
        finally:
            connection.live = False
            with trio.CancelScope(shield=True):
                for stream in (client, server):
                    if stream is not None:
                        if connection.reset:
                            _set_reset(stream)
                        await trio.aclose_forcefully(stream)

    async def _forward_both(
        self,
        connection: ProxiedConnection,
        number: int,
        seed: int,
        client: trio.SocketStream,
        server: trio.SocketStream,
    ) -> None:
        up = _Pump(self, connection, "upstream", self.upstream, number, seed, client, server)
        down = _Pump(
            self, connection, "downstream", self.downstream, number, seed ^ 1, server, client
        )
        try:
            async with trio.open_nursery() as nursery:
                up.start(nursery)
                down.start(nursery)
        finally:
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
    frames: bool = False,
) -> AsyncIterator[FaultProxy]:
    """Run a :class:`FaultProxy` for the duration of the block (its port is ``proxy.port``)."""
    proxy = FaultProxy(
        target_host, target_port, upstream=upstream, downstream=downstream, rng=rng,
        frames=frames,
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


_Item = tuple[float, bytes]


class _Pump:
    """One direction of one proxied connection: a reader, a queue and a writer."""

    def __init__(
        self,
        proxy: FaultProxy,
        connection: ProxiedConnection,
        direction: str,
        faults: Faults,
        number: int,
        seed: int,
        src: trio.SocketStream,
        dst: trio.SocketStream,
    ) -> None:
        self.proxy = proxy
        self.connection = connection
        self.direction = direction
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
        self.partial = bytearray()  # With frames: the start of a frame not yet whole.
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
            self.connection.abort(reset=True)

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
                pieces = [data] if not (data and self.proxy.frames) else await self._frames(data)
                for piece in pieces:
                    self.queued += len(piece)
                    await self._send.send((self.last_due, piece))
                if not data:
                    return

    async def _frames(self, data: bytes) -> list[bytes]:
        """The frames to forward for ``data``: each whole frame through the hook."""
        self.partial += data
        out: list[bytes] = []
        while len(self.partial) >= 2:
            end = 2 + int.from_bytes(self.partial[:2], "big")
            if len(self.partial) < end:
                break
            frame = bytes(self.partial[:end])
            del self.partial[:end]
            index = self.connection.record(self.direction, frame)
            hook = self.proxy.hook
            replaced = [frame] if hook is None else await hook(
                self.connection, self.direction, index, frame
            )
            out.extend(piece for piece in replaced if piece)
        return out

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
                if self.proxy.holding:
                    self.stats.faults["hold"] += 1
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
            self.connection.abort(reset=True)
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

