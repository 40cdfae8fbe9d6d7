"""Several paths per line over real TCP, each path through its own FaultProxy.

B listens on two ports; A dials both, each through a proxy, so the line has two paths. A
sends a steady stream (one message every 20 ms) while a test breaks the path that carries
it: black-holed (the proxy drops every byte, both connections stay open), reset, or both
paths one after the other and then back. B's application must take every message exactly
once and in order; for the loss of one path, the longest gap between two deliveries must be
within the path's suspect time plus two round trips (the proxies add 40 ms each way, so the
round trip, not the scheduler, dominates what follows the suspect time).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from hotline import Config, Identity, Liveness, MemoryStore, PathState, open_line
from hotline.driver import Line
from hotline.testing import FaultProxy, Faults, open_fault_proxy

A = Identity.from_seed(bytes([0x6A]) * 32, "a")
B = Identity.from_seed(bytes([0x6B]) * 32, "b")

INTERVAL = 0.2
CONFIG = Config(heartbeat_interval=INTERVAL, reconnect_jitter=0, reconnect_max=0.5)
SUSPECT_TIME = CONFIG.suspect_after * INTERVAL
ONE_WAY = 0.04
SEND_EVERY = 0.02
#: Real seconds any one scenario may take (each needs a few).
LIMIT = 30


@dataclass
class Run:
    a: Line
    b: Line
    proxies: list[FaultProxy]
    sent: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)
    delivered_at: list[float] = field(default_factory=list)
    a_events: list[PathState] = field(default_factory=list)

    def active_proxy(self) -> FaultProxy:
        """The proxy under A's active path (its label is the proxy's address)."""
        (active,) = [path for path in self.a.paths if path.active]
        return next(proxy for proxy in self.proxies if active.label.endswith(f":{proxy.port}"))

    def longest_gap(self) -> float:
        times = self.delivered_at
        return max(later - earlier for earlier, later in itertools.pairwise(times))

    def check_exactly_once_in_order(self) -> None:
        assert len(self.delivered) == len(set(self.delivered)), "duplicated"
        assert self.delivered == self.sent, "lost or reordered"


@asynccontextmanager
async def two_paths() -> AsyncIterator[Run]:
    faults = Faults(latency=ONE_WAY)
    async with open_line(B, A.public_key, store=MemoryStore(), config=CONFIG,
                         listen=[("127.0.0.1", 0), ("127.0.0.1", 0)]) as b:
        ports = [port for _, port in b.listen_addresses]
        async with (
            open_fault_proxy("127.0.0.1", ports[0], upstream=faults,
                             downstream=faults) as first,
            open_fault_proxy("127.0.0.1", ports[1], upstream=faults,
                             downstream=faults) as second,
            open_line(A, B.public_key, store=MemoryStore(), config=CONFIG,
                      connect=[first.address, second.address]) as a,
        ):
            run = Run(a, b, [first, second])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_receive, run)
                nursery.start_soon(_watch, run)
                await _both_paths_up(run)
                yield run
                nursery.cancel_scope.cancel()


async def _receive(run: Run) -> None:
    async for message in run.b:
        run.delivered.append(message.body)
        run.delivered_at.append(trio.current_time())


async def _watch(run: Run) -> None:
    async for event in run.a.watch():
        if isinstance(event, PathState):
            run.a_events.append(event)


async def _both_paths_up(run: Run) -> None:
    """Until both lines have two paths up, each with a round trip measured."""
    while not all(
        len(line.paths) == 2
        and all(path.state is Liveness.UP and path.rtt is not None for path in line.paths)
        for line in (run.a, run.b)
    ):
        await trio.sleep(0.05)


async def _stream(run: Run, seconds: float) -> None:
    """Send one message every SEND_EVERY for ``seconds``."""
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        body = f"m{len(run.sent):05d}".encode()
        await run.a.queue(body)
        run.sent.append(body)
        await trio.sleep(SEND_EVERY)


async def _all_delivered(run: Run) -> None:
    while len(run.delivered) < len(run.sent):
        await trio.sleep(0.05)
    await trio.sleep(0.3)  # Time for a late copy to show up (and be dropped).


def _round_trip(run: Run) -> float:
    rtts = [path.rtt for path in run.a.paths if path.rtt is not None]
    return max(rtts)


async def _steady_stream_losing_the_active_path(fault: str) -> Run:
    async with two_paths() as run:
        rtt = _round_trip(run)
        assert rtt >= 2 * ONE_WAY
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stream, run, 2.0)
            await trio.sleep(0.7)
            proxy = run.active_proxy()
            if fault == "blackhole":
                proxy.hold()
            else:
                assert proxy.cut() == 1
        await _all_delivered(run)
        run.check_exactly_once_in_order()
        assert run.longest_gap() <= SUSPECT_TIME + 2 * rtt
        assert run.active_proxy() is not proxy
        assert run.b.liveness is Liveness.UP
        assert run.a.stats.path_switches >= 1
        return run


async def test_black_holed_active_path_fails_over_without_loss() -> None:
    with trio.fail_after(LIMIT):
        run = await _steady_stream_losing_the_active_path("blackhole")
    # The peer was never down: one path stayed up throughout.
    switched = [event for event in run.a_events if event.active and "suspect" in event.reason]
    assert switched, run.a_events


async def test_reset_active_path_fails_over_without_loss() -> None:
    with trio.fail_after(LIMIT):
        await _steady_stream_losing_the_active_path("reset")


async def test_both_paths_fail_in_turn_and_come_back() -> None:
    with trio.fail_after(LIMIT):
        async with two_paths() as run:
            peer_states: list[Liveness] = []

            async def follow_peer() -> None:
                async for event in run.a.watch():
                    del event
                    peer_states.append(run.a.liveness)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_peer)
                async with trio.open_nursery() as senders:
                    senders.start_soon(_stream, run, 3.0)
                    await trio.sleep(0.5)
                    first = run.active_proxy()
                    first.hold()
                    await trio.sleep(0.8)
                    second = run.active_proxy()
                    assert second is not first
                    second.hold()
                    await trio.sleep(1.0)
                    first.release()
                    second.release()
                await _all_delivered(run)
                await _both_paths_up(run)
                nursery.cancel_scope.cancel()
            run.check_exactly_once_in_order()
            assert Liveness.DOWN in peer_states
            assert run.a.liveness is Liveness.UP


async def test_one_path_down_keeps_the_peer_up() -> None:
    with trio.fail_after(LIMIT):
        async with two_paths() as run:
            states: list[Liveness] = []

            async def follow() -> None:
                async for event in run.a.watch():
                    del event
                    states.append(run.a.liveness)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                standby = next(proxy for proxy in run.proxies
                               if proxy is not run.active_proxy())
                standby.refusing = True
                assert standby.cut() == 1
                while len(run.a.paths) != 1:
                    await trio.sleep(0.02)
                await trio.sleep(3 * INTERVAL * CONFIG.heartbeat_multiplier)
                nursery.cancel_scope.cancel()
            assert set(states) == {Liveness.UP}
            down = [event for event in run.a_events if event.state is Liveness.DOWN]
            assert down
            assert not down[0].active


async def test_the_line_moves_to_the_faster_path_and_stays() -> None:
    """Hysteresis over real round trips: one path 60 ms slower than the other."""
    config = Config(heartbeat_interval=0.1, reconnect_jitter=0)
    slow = Faults(latency=0.03)
    with trio.fail_after(LIMIT):
        async with open_line(B, A.public_key, store=MemoryStore(), config=config,
                             listen=[("127.0.0.1", 0), ("127.0.0.1", 0)]) as b:
            ports = [port for _, port in b.listen_addresses]
            async with (
                open_fault_proxy("127.0.0.1", ports[0], upstream=slow,
                                 downstream=slow) as slow_proxy,
                open_fault_proxy("127.0.0.1", ports[1]) as fast_proxy,
            ):
                # The slow path comes up first and carries the line until the fast one has
                # shown its round trips for the dwell time.
                fast_proxy.refusing = True
                async with open_line(A, B.public_key, store=MemoryStore(), config=config,
                                     connect=[slow_proxy.address, fast_proxy.address]) as a:
                    await _faster_path_taken(a, slow_proxy, fast_proxy)


async def _faster_path_taken(a: Line, slow_proxy: FaultProxy, fast_proxy: FaultProxy) -> None:
    def active_port() -> int | None:
        active = [path for path in a.paths if path.active]
        return int(active[0].label.rsplit(":", 1)[1]) if active else None

    while active_port() is None:
        await trio.sleep(0.01)
    assert active_port() == slow_proxy.port
    fast_proxy.refusing = False
    while len(a.paths) < 2:
        await trio.sleep(0.01)
    up_at = trio.current_time()
    while active_port() != fast_proxy.port:
        await trio.sleep(0.01)
    # Not before the dwell time since the first path became active (10 heartbeats).
    assert trio.current_time() - up_at > 0.5
    switches = a.stats.path_switches
    assert switches == 1
    # Twice the dwell time more: no flapping.
    await trio.sleep(2.0)
    assert active_port() == fast_proxy.port
    assert a.stats.path_switches == switches
    sent = await a.send(b"fast")
    await sent.delivered()
