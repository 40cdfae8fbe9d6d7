"""The trio driver's timers under a virtual clock: heartbeats, liveness, backoff, handshakes.

Every test here runs under ``autojump_clock`` over in-memory streams only (a real socket would
let the clock jump while the kernel works), so every instant is asserted exactly: the clock
jumps straight to the next deadline, and the deadlines are sums of the configured intervals.
Values that are not dyadic fractions (0.1, 0.2, ...) are compared to within 1e-9 s, which only
absorbs floating-point rounding of those sums.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing

from hotline import (
    Config,
    Identity,
    LineBroken,
    LineClosed,
    Liveness,
    MemoryStore,
    PeerState,
    RoundTrip,
    open_line,
    open_message,
    open_receipt,
)
from hotline.driver import Line
from hotline.driver._committer import AUTO_ACK_DELAY
from hotline.store import Direction
from hotline.testing import StreamWrapper

A = Identity.from_seed(bytes([0xA1]) * 32, "a")
B = Identity.from_seed(bytes([0xB2]) * 32, "b")

EPS = 1e-9
#: A ping on the wire: 2-byte length, a 64-byte padded plaintext, a 16-byte tag.
HEARTBEAT_FRAME = 2 + 64 + 16


class Tap(StreamWrapper):
    """A stream wrapper that records what it sends (per frame) and can hold or drop it.

    ``blackhole_from``: from this virtual time on, outgoing bytes vanish (the stream stays
    open, so the peer only sees silence). ``hold()`` / ``release()``: outgoing bytes wait and
    are then written in order, like a process that was frozen for a while.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.blackhole_from = math.inf
        self.frames: list[tuple[float, int]] = []
        self.sent_at: list[float] = []  # Times of sends that did reach the peer.
        self._parse = bytearray()
        self._held: bytearray | None = None
        self._lock = trio.Lock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        now = trio.current_time()
        self._parse += data
        while len(self._parse) >= 2:
            length = int.from_bytes(self._parse[:2], "big")
            if len(self._parse) < 2 + length:
                break
            self.frames.append((now, length + 2))
            del self._parse[: 2 + length]
        async with self._lock:
            if now >= self.blackhole_from:
                return
            if self._held is not None:
                self._held += data
                return
            self.sent_at.append(now)
            await self.inner.send_all(data)

    def hold(self) -> None:
        self._held = bytearray()

    async def release(self) -> None:
        async with self._lock:
            data, self._held = self._held, None
            if data:
                self.sent_at.append(trio.current_time())
                await self.inner.send_all(bytes(data))


class Recorder:
    """Collects ``line.watch()`` events with the virtual time they were seen."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.events: list[tuple[float, object]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        async for event in self.line.watch():
            self.events.append((trio.current_time(), event))
            if not started:
                started = True
                task_status.started()

    def states(self) -> list[tuple[float, Liveness]]:
        return [(t, e.state) for t, e in self.events if isinstance(e, PeerState)]

    def round_trips(self) -> list[tuple[float, RoundTrip]]:
        return [(t, e) for t, e in self.events if isinstance(e, RoundTrip)]

    def first(self, state: Liveness) -> float:
        times = [t for t, s in self.states() if s is state]
        assert times, f"never {state}: {self.states()}"
        return times[0]


class SpinGuard(trio.abc.Instrument):
    """Cancels ``scope`` if the run loop keeps stepping tasks while virtual time stands still.

    Under ``autojump_clock`` the clock only moves when every task sleeps; a task that keeps
    rescheduling itself at one instant (a timer whose deadline has passed but which does
    nothing) freezes virtual time forever, and ``trio.fail_after`` can never fire.
    """

    def __init__(self, scope: trio.CancelScope, limit: int = 50_000) -> None:
        self.scope = scope
        self.limit = limit
        self.last = -math.inf
        self.steps = 0
        self.spun_at: float | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = trio.current_time()
        if now != self.last:
            self.last, self.steps = now, 0
            return
        self.steps += 1
        if self.steps == self.limit:
            self.spun_at = now
            self.scope.cancel()


@contextlib.contextmanager
def no_spin(limit: int = 50_000) -> Iterator[SpinGuard]:
    """Fail the test (instead of hanging it) if virtual time stops advancing."""
    with trio.CancelScope() as scope:
        guard = SpinGuard(scope, limit)
        trio.lowlevel.add_instrument(guard)
        try:
            yield guard
        finally:
            trio.lowlevel.remove_instrument(guard)
    if guard.spun_at is not None:
        pytest.fail(
            f"the run loop spun {limit} task steps at virtual time {guard.spun_at!r} "
            "without letting time pass"
        )


async def _run_pair(
    config_a: Config,
    config_b: Config,
    scenario: Callable[[Line, Line, Tap, Tap, Recorder, Recorder], Awaitable[None]],
) -> None:
    """Open A and B on memory stores, join them by a tapped in-memory link, run ``scenario``."""
    with no_spin():
        await _run_pair_unguarded(config_a, config_b, scenario)


async def _run_pair_unguarded(
    config_a: Config,
    config_b: Config,
    scenario: Callable[[Line, Line, Tap, Tap, Recorder, Recorder], Awaitable[None]],
) -> None:
    async with (
        open_line(A, B.public_key, store=MemoryStore(), config=config_a) as line_a,
        open_line(B, A.public_key, store=MemoryStore(), config=config_b) as line_b,
        trio.open_nursery() as nursery,
    ):
        rec_a, rec_b = Recorder(line_a), Recorder(line_b)
        await nursery.start(rec_a.run)
        await nursery.start(rec_b.run)
        end_a, end_b = trio.testing.memory_stream_pair()
        tap_a, tap_b = Tap(end_a), Tap(end_b)
        nursery.start_soon(functools.partial(line_a.run_stream, tap_a, initiator=True))
        nursery.start_soon(functools.partial(line_b.run_stream, tap_b, initiator=False))
        await scenario(line_a, line_b, tap_a, tap_b, rec_a, rec_b)
        nursery.cancel_scope.cancel()


# --- heartbeats --------------------------------------------------------------------------


async def test_heartbeat_cadence_is_exactly_one_second(autojump_clock: trio.abc.Clock) -> None:
    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        await line_a.wait_liveness(Liveness.UP)
        assert trio.current_time() == 0.0
        await trio.sleep_until(5.5)
        for rec in (rec_a, rec_b):
            # The opening pings echo nothing; from then on each ping echoes the last.
            times = [t for t, _ in rec.round_trips()]
            assert times == [1.0, 2.0, 3.0, 4.0, 5.0]
            assert [b - a for a, b in itertools.pairwise(times)] == [1.0] * 4
            # Over an in-memory link the round trip takes no virtual time at all.
            assert all(e.rtt == 0.0 and e.smoothed_rtt == 0.0 for _, e in rec.round_trips())
        for tap in (tap_a, tap_b):
            # After the opening burst at 0: nothing but one ping per second, on the tick
            # (nothing answers a ping: each side's own pings prove it alive).
            later = [(t, size) for t, size in tap.frames if t > 0]
            assert later == [(float(tick), HEARTBEAT_FRAME) for tick in range(1, 6)]
        assert line_a.liveness is Liveness.UP
        assert line_b.liveness is Liveness.UP
        assert line_a.rtt == 0.0

    await _run_pair(Config(), Config(), scenario)


async def test_both_sides_ping_at_the_shorter_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A wants to know within 0.75 s, B within 2.1 s: A's detection needs B's pings at A's
    # pace, so each ping asks for its sender's interval and both ping every 0.25 s.
    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        await trio.sleep_until(2.05)
        for tap in (tap_a, tap_b):
            later = [t for t, _ in tap.frames if t > 0]
            assert later == pytest.approx([0.25 * k for k in range(1, 9)], abs=EPS)
        for rec in (rec_a, rec_b):
            times = [t for t, _ in rec.round_trips()]
            assert times == pytest.approx([0.25 * k for k in range(1, 9)], abs=EPS)
            assert all(e.rtt < 1e-5 for _, e in rec.round_trips())
        assert [s for _, s in rec_a.states()] == [Liveness.CONNECTING, Liveness.UP]
        assert [s for _, s in rec_b.states()] == [Liveness.CONNECTING, Liveness.UP]

    await _run_pair(
        Config(heartbeat_interval=0.25), Config(heartbeat_interval=0.7), scenario
    )


# --- suspect and down --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "mute_at", "last_heard", "suspect_at", "down_at"),
    [
        # Defaults: ping every 1 s, suspect after 1.5 intervals, down after 3 intervals.
        (Config(), 2.5, 2.0, 3.5, 5.0),
        (Config(), 2.0, 1.0, 2.5, 4.0),  # Muted from the tick on: the tick's bytes are lost.
        # 0.2 s x 5: suspect after 0.3 s of silence, down after 1.0 s.
        # (0.4 + 1.0) - 0.4 < 1.0 in floating point: the down deadline must still fire.
        (Config(heartbeat_interval=0.2, heartbeat_multiplier=5), 0.5, 0.4, 0.7, 1.4),
        (Config(heartbeat_interval=0.2, heartbeat_multiplier=5), 1.05, 1.0, 1.3, 2.0),
    ],
    ids=["default", "default-on-tick", "0.2x5", "0.2x5-later"],
)
async def test_silent_peer_is_suspect_then_down_at_exact_times(
    autojump_clock: trio.abc.Clock,
    config: Config,
    mute_at: float,
    last_heard: float,
    suspect_at: float,
    down_at: float,
) -> None:
    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        # B's bytes stop reaching A at mute_at; the stream itself stays open.
        tap_b.blackhole_from = mute_at
        with trio.fail_after(60):
            await line_a.wait_liveness(Liveness.DOWN)
        assert trio.current_time() == pytest.approx(down_at, abs=EPS)
        await trio.testing.wait_all_tasks_blocked()  # Let the recorders catch up.
        heard = max(tap_b.sent_at)
        assert heard == pytest.approx(last_heard, abs=EPS)
        states = rec_a.states()
        assert [s for _, s in states] == [
            Liveness.CONNECTING, Liveness.UP, Liveness.SUSPECT, Liveness.DOWN
        ]
        assert rec_a.first(Liveness.SUSPECT) == pytest.approx(suspect_at, abs=EPS)
        assert rec_a.first(Liveness.SUSPECT) - heard == pytest.approx(
            config.suspect_after * config.heartbeat_interval, abs=EPS
        )
        assert rec_a.first(Liveness.DOWN) - heard == pytest.approx(config.down_after, abs=EPS)
        reasons = [e.reason for _, e in rec_a.events if isinstance(e, PeerState)]
        assert reasons[2] == f"silent for {config.suspect_after * config.heartbeat_interval:.3f} s"
        assert reasons[3] == f"silent for {config.down_after:.3f} s"
        # B kept hearing A's pings, so it never suspected A; it sees the line end when A
        # drops the connection, at the same instant.
        await line_b.wait_liveness(Liveness.DOWN)
        await trio.testing.wait_all_tasks_blocked()
        assert [s for _, s in rec_b.states()] == [
            Liveness.CONNECTING, Liveness.UP, Liveness.DOWN
        ]
        assert rec_b.first(Liveness.DOWN) == pytest.approx(down_at, abs=EPS)

    await _run_pair(config, config, scenario)


async def test_suspect_peer_that_speaks_again_is_up_again(autojump_clock: trio.abc.Clock) -> None:
    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        await trio.sleep_until(2.5)
        tap_b.hold()  # B is "frozen": what it writes waits (nothing is lost).
        await trio.sleep_until(4.25)
        assert line_a.liveness is Liveness.SUSPECT
        await tap_b.release()
        await trio.testing.wait_all_tasks_blocked()
        assert line_a.liveness is Liveness.UP
        await trio.sleep_until(6.5)
        assert rec_a.states() == [
            (0.0, Liveness.CONNECTING), (0.0, Liveness.UP),
            (3.5, Liveness.SUSPECT), (4.25, Liveness.UP),
        ]
        # B's pings of 3.0 and 4.0, echoing A's, arrive together at 4.25.
        trips = [(t, e.rtt) for t, e in rec_a.round_trips()]
        assert trips == [
            (1.0, 0.0), (2.0, 0.0), (4.25, 1.25), (4.25, 0.25), (5.0, 0.0), (6.0, 0.0),
        ]
        # B heard A's pings all along: it never suspected anything.
        assert [s for _, s in rec_b.states()] == [Liveness.CONNECTING, Liveness.UP]
        assert line_a.stats.sessions == 1
        assert line_b.stats.sessions == 1

    await _run_pair(Config(), Config(), scenario)


# --- the peer's receipts are stored with the next commit ----------------------------------


def _stored_peer_receipts(line: Line) -> list[tuple[str, int]]:
    return [(e.kind, e.seq) for e in line._committer.store.transcript()
            if e.direction is Direction.IN and e.kind != "message"]


async def test_peer_receipts_ride_the_next_commit_or_wait_50_ms(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        await line_a.wait_liveness(Liveness.UP)
        line_b.auto_ack = False
        await trio.sleep_until(0.5)
        first = await line_a.send(b"one")
        await first.delivered()
        assert trio.current_time() == 0.5  # The in-memory link takes no virtual time.
        assert _stored_peer_receipts(line_a) == []
        # Another message within 50 ms: its commit stores the waiting receipt too.
        await trio.sleep_until(0.52)
        second = await line_a.send(b"two")
        assert _stored_peer_receipts(line_a) == [("delivered", 1)]
        await second.delivered()
        # Nothing else to commit: the receipt is stored 50 ms after it arrived.
        due = 0.52 + 0.05
        await trio.sleep_until(due - EPS)
        assert _stored_peer_receipts(line_a) == [("delivered", 1)]
        await trio.sleep_until(due)
        await trio.testing.wait_all_tasks_blocked()
        assert _stored_peer_receipts(line_a) == [("delivered", 1), ("delivered", 2)]
        # The application's own acknowledgement is not delayed: it goes out at once.
        async for message in line_b:
            if message.seq == 2:
                message.ack()
                break
        acknowledged = await second.acknowledged()
        assert acknowledged.upto == 2
        assert trio.current_time() == due
        await trio.sleep_until(due + 0.05)
        await trio.testing.wait_all_tasks_blocked()
        assert _stored_peer_receipts(line_a)[-1] == ("acknowledged", 2)

    await _run_pair(Config(), Config(), scenario)


async def test_auto_acks_ride_the_next_commit_or_wait_25_ms(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        await line_a.wait_liveness(Liveness.UP)
        taken: list[tuple[int, float]] = []

        async def take() -> None:
            # Auto-ack: asking for the next message acknowledges the one taken before.
            while True:
                message = await line_b.receive()
                taken.append((message.seq, trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take)
            await trio.sleep_until(1.0)
            first = await line_a.send(b"one")
            # Nothing else to commit: the acknowledgement goes AUTO_ACK_DELAY after the
            # application asked for the next message (the in-memory link takes no time).
            assert (await first.acknowledged()).upto == 1
            assert taken == [(1, 1.0)]
            assert trio.current_time() == 1.0 + AUTO_ACK_DELAY
            # The next message comes within the delay: its commit carries the waiting
            # acknowledgement, which arrives with its delivered receipt.
            second = await line_a.send(b"two")
            await trio.sleep(AUTO_ACK_DELAY / 2)
            third_sent_at = trio.current_time()
            third = await line_a.send(b"three")
            assert (await second.acknowledged()).upto == 2
            assert trio.current_time() == third_sent_at
            assert (await third.delivered()).upto == 3
            assert trio.current_time() == third_sent_at
            # flush() does not wait for the delay: it stores the acknowledgement at once.
            await trio.sleep(AUTO_ACK_DELAY / 5)
            flushed_at = trio.current_time()
            await line_b.flush()
            assert (await third.acknowledged()).upto == 3
            assert trio.current_time() == flushed_at
            # Closing the line sends a waiting one before its goodbye.
            fourth = await line_a.send(b"four")
            await fourth.delivered()
            await trio.testing.wait_all_tasks_blocked()
            closed_at = trio.current_time()
            await line_b.aclose()
            assert (await fourth.acknowledged()).upto == 4
            assert trio.current_time() == closed_at
            assert [seq for seq, _ in taken] == [1, 2, 3, 4]
            nursery.cancel_scope.cancel()

    await _run_pair(Config(), Config(), scenario)


# --- the dialer's backoff ------------------------------------------------------------------


def _schedule(config: Config, attempts: int) -> list[float]:
    """Nominal backoff delays before attempts 2..attempts (no jitter)."""
    return [
        min(config.reconnect_max, config.reconnect_initial * 2.0 ** (k - 1))
        for k in range(1, attempts)
    ]


async def _dial_times(
    config: Config, attempts: int, rng: random.Random | None = None
) -> list[float]:
    times: list[float] = []
    enough = trio.Event()

    async def refuse() -> trio.abc.Stream:
        times.append(trio.current_time())
        if len(times) >= attempts:
            enough.set()
        raise ConnectionRefusedError("nobody listens")

    async with open_line(A, B.public_key, store=MemoryStore(), connect=refuse, config=config,
                         rng=rng) as line:
        await enough.wait()
        assert line.liveness is Liveness.CONNECTING
        assert line.stats.sessions == 0
    # Relative to the first attempt (a test may dial several times on one clock).
    return [t - times[0] for t in times[:attempts]]


async def test_backoff_schedule_without_jitter(autojump_clock: trio.abc.Clock) -> None:
    config = Config(reconnect_jitter=0)
    times = await _dial_times(config, 10)
    assert times == pytest.approx([0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 11.3, 16.3, 21.3], abs=EPS)
    delays = [b - a for a, b in itertools.pairwise(times)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0], abs=EPS)


async def test_backoff_follows_configured_initial_and_cap(autojump_clock: trio.abc.Clock) -> None:
    config = Config(reconnect_jitter=0, reconnect_initial=0.5, reconnect_max=3.0)
    times = await _dial_times(config, 6)
    assert times == pytest.approx([0, 0.5, 1.5, 3.5, 6.5, 9.5], abs=EPS)


async def test_backoff_with_jitter_stays_in_range(autojump_clock: trio.abc.Clock) -> None:
    config = Config()  # reconnect_jitter=0.25
    attempts = 12
    times = await _dial_times(config, attempts, rng=random.Random(1))
    delays = [b - a for a, b in itertools.pairwise(times)]
    nominal = _schedule(config, attempts)
    for delay, d in zip(delays, nominal, strict=True):
        assert d * (1 - config.reconnect_jitter) - EPS <= delay <= d + EPS, (delay, d)
    # The jitter is really applied (not every delay is the nominal one) ...
    assert sum(abs(x - d) > 1e-6 for x, d in zip(delays, nominal, strict=True)) >= attempts // 2
    # ... and drawn from the given generator: the same seed gives the same schedule.
    assert await _dial_times(config, attempts, rng=random.Random(1)) == pytest.approx(
        times, abs=EPS
    )
    assert await _dial_times(config, attempts, rng=random.Random(2)) != pytest.approx(
        times, abs=EPS
    )


async def test_backoff_restarts_after_a_live_session(autojump_clock: trio.abc.Clock) -> None:
    config = Config(reconnect_jitter=0)
    times: list[float] = []
    enough = trio.Event()
    async with (
        open_line(B, A.public_key, store=MemoryStore(), config=config) as line_b,
        trio.open_nursery() as nursery,
    ):
        ends: list[trio.abc.Stream] = []

        async def connect() -> trio.abc.Stream:
            times.append(trio.current_time())
            if len(times) == 1:
                end_a, end_b = trio.testing.memory_stream_pair()
                ends.append(end_a)
                nursery.start_soon(functools.partial(line_b.run_stream, end_b, initiator=False))
                return end_a
            if len(times) >= 5:
                enough.set()
            raise ConnectionRefusedError

        async with open_line(A, B.public_key, store=MemoryStore(), connect=connect,
                             config=config) as line_a:
            await line_a.wait_liveness(Liveness.UP)
            await trio.sleep_until(2.0)
            await ends[0].aclose()  # The link is cut at 2.0.
            await enough.wait()
            assert line_a.stats.sessions == 1
    # The first redial after a session that was up waits the initial delay again.
    assert times == pytest.approx([0, 2.1, 2.3, 2.7, 3.5], abs=EPS)


async def test_connect_timeout_counts_as_a_failed_attempt(autojump_clock: trio.abc.Clock) -> None:
    config = Config(reconnect_jitter=0, connect_timeout=2.0)
    times: list[float] = []
    enough = trio.Event()

    async def hang() -> trio.abc.Stream:
        times.append(trio.current_time())
        if len(times) >= 4:
            enough.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with open_line(A, B.public_key, store=MemoryStore(), connect=hang, config=config):
        await enough.wait()
    assert times == pytest.approx([0, 2.1, 4.3, 6.7], abs=EPS)


# --- the handshake timeout ----------------------------------------------------------------


@pytest.mark.parametrize("timeout", [10.0, 2.5])
async def test_dial_gives_up_a_silent_peer_at_the_handshake_timeout(
    autojump_clock: trio.abc.Clock, timeout: float
) -> None:
    config = Config(reconnect_jitter=0, handshake_timeout=timeout)
    connects: list[float] = []
    hangups: list[float] = []
    received: list[int] = []
    enough = trio.Event()

    async with trio.open_nursery() as nursery:

        async def mute_peer(end: trio.abc.Stream) -> None:
            # Reads the initiation and never answers; notes when the dialer hangs up.
            while data := await end.receive_some():
                received.append(len(data))
            hangups.append(trio.current_time())

        async def connect() -> trio.abc.Stream:
            connects.append(trio.current_time())
            if len(connects) >= 3:
                enough.set()
            end_a, end_b = trio.testing.memory_stream_pair()
            nursery.start_soon(mute_peer, end_b)
            return end_a

        async with open_line(A, B.public_key, store=MemoryStore(), connect=connect,
                             config=config) as line:
            await enough.wait()
            assert line.liveness is Liveness.CONNECTING
            assert line.stats.sessions == 0
        nursery.cancel_scope.cancel()

    assert hangups[:2] == pytest.approx([timeout, 2 * timeout + 0.1], abs=EPS)
    # A failed handshake is a failed attempt: the backoff grows (0.1, then 0.2).
    assert connects == pytest.approx([0, timeout + 0.1, 2 * timeout + 0.3], abs=EPS)
    # Each attempt wrote exactly its initiation message, nothing else.
    assert received[:2] == [received[0]] * 2


@pytest.mark.parametrize("initiator", [True, False], ids=["initiator", "responder"])
@pytest.mark.parametrize("timeout", [10.0, 2.5])
async def test_run_stream_raises_line_broken_at_the_handshake_timeout(
    autojump_clock: trio.abc.Clock, initiator: bool, timeout: float
) -> None:
    config = Config(handshake_timeout=timeout)
    async with open_line(A, B.public_key, store=MemoryStore(), config=config) as line:
        end_a, end_b = trio.testing.memory_stream_pair()
        start = 3.0
        await trio.sleep_until(start)
        with pytest.raises(LineBroken, match="timed out"):
            await line.run_stream(end_a, initiator=initiator)
        assert trio.current_time() == start + timeout
        # The stream was closed: the silent peer reads what was sent, then end of stream.
        data = b""
        while chunk := await end_b.receive_some():
            data += chunk
        assert (len(data) > 0) is initiator
        assert line.liveness is Liveness.CONNECTING
        assert line.stats.sessions == 0


# --- a slow application ---------------------------------------------------------------------


async def test_a_slow_application_does_not_take_the_line_down(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = Config(inbox_window=5)

    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        outs = [await line_a.send(b"m%d" % n) for n in range(1, 21)]
        await trio.sleep_until(10.0)  # B's application reads nothing for ten seconds.
        # Both peers were alive all along: nobody may have been declared anything else.
        assert [s for _, s in rec_b.states()] == [Liveness.CONNECTING, Liveness.UP], (
            rec_b.states()
        )
        assert [s for _, s in rec_a.states()] == [Liveness.CONNECTING, Liveness.UP], (
            rec_a.states()
        )
        got = []
        with trio.fail_after(5):
            for _ in range(20):
                message = await line_b.receive()
                got.append(message.seq)
            assert (await outs[-1].delivered()).upto == 20
        assert got == list(range(1, 21))
        assert line_a.stats.retransmitted == 0
        assert line_a.stats.sessions == 1

    await _run_pair(config, config, scenario)


# --- one receiver at a time -----------------------------------------------------------------


async def test_a_second_receiver_is_refused_and_the_first_still_sees_the_close(
    autojump_clock: trio.abc.Clock,
) -> None:
    outcome: list[BaseException] = []

    async def first_receiver(line: Line) -> None:
        try:
            await line.receive()
        except LineClosed as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with (
            open_line(A, B.public_key, store=MemoryStore()) as line,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(first_receiver, line)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await line.receive()
            await line.aclose()
    assert len(outcome) == 1, "the first receiver was not woken by the close"


# --- the wall clock -------------------------------------------------------------------------


async def test_timestamps_come_from_the_clock_the_line_is_given(
    autojump_clock: trio.abc.Clock,
) -> None:
    clock_a, clock_b = 1_700_000_000_123_456_789, 1_800_000_000_987_654_321
    store_a, store_b = MemoryStore(), MemoryStore()
    async with (
        open_line(A, B.public_key, store=store_a, clock=lambda: clock_a) as line_a,
        open_line(B, A.public_key, store=store_b, clock=lambda: clock_b) as line_b,
        trio.open_nursery() as nursery,
    ):
        end_a, end_b = trio.testing.memory_stream_pair()
        nursery.start_soon(functools.partial(line_a.run_stream, end_a, initiator=True))
        nursery.start_soon(functools.partial(line_b.run_stream, end_b, initiator=False))
        with trio.fail_after(5):
            outgoing = await line_a.send(b"what time is it?")
            message = await line_b.receive()
            message.ack()
            delivered = await outgoing.delivered()
            acknowledged = await outgoing.acknowledged()
        nursery.cancel_scope.cancel()
    assert message.timestamp == clock_a
    assert (delivered.timestamp, acknowledged.timestamp) == (clock_b, clock_b)
    assert line_a.state.initiation_timestamp == clock_a
    stored_by_a = [
        open_message(entry.envelope, entry.signature, sender=A.public_key,
                     line_id=line_a.line_id, max_body_size=1024).timestamp
        if entry.kind == "message"
        else open_receipt(entry.envelope, entry.signature, signer=B.public_key,
                          line_id=line_a.line_id).timestamp
        for entry in store_a.transcript()
    ]
    assert stored_by_a == [clock_a, clock_b, clock_b]
    stored_by_b = [
        open_message(entry.envelope, entry.signature, sender=A.public_key,
                     line_id=line_b.line_id, max_body_size=1024).timestamp
        if entry.kind == "message"
        else open_receipt(entry.envelope, entry.signature, signer=B.public_key,
                          line_id=line_b.line_id).timestamp
        for entry in store_b.transcript()
    ]
    assert stored_by_b == [clock_a, clock_b, clock_b]


class SessionSteps(trio.abc.Instrument):
    """Counts the task steps of the sessions' own tasks, by the task's function."""

    def __init__(self) -> None:
        self.steps: dict[str, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if ".Session." in task.name:
            function = task.name.rsplit(".", 1)[-1]
            self.steps[function] = self.steps.get(function, 0) + 1


async def test_an_idle_line_wakes_only_its_writer_and_reader_once_a_heartbeat(
    autojump_clock: trio.abc.Clock,
) -> None:
    """What an idle line costs is mostly wake-ups. Per heartbeat, each side's writer wakes
    at its deadline and writes the ping, and its reader wakes for the peer's ping; nothing
    else runs: no separate timer task that then wakes the writer, no writer woken by a ping
    that needs no answer, no wake-up at a deadline that the peer's ping had put off.

    Over this in-memory link a write is three further steps (the tap's lock and the memory
    stream's checkpoints) and a read two, so the writer takes 4 steps a heartbeat and the
    reader 3 (with a timer task beside the writer, 11 in all).
    """
    steps = SessionSteps()

    async def scenario(
        line_a: Line, line_b: Line, tap_a: Tap, tap_b: Tap, rec_a: Recorder, rec_b: Recorder
    ) -> None:
        await trio.sleep_until(10.5)  # Past the opening burst and the first pings.
        trio.lowlevel.add_instrument(steps)
        try:
            await trio.sleep_until(110.5)  # 100 heartbeats.
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert line_a.liveness is Liveness.UP
        assert line_b.liveness is Liveness.UP

    await _run_pair(Config(), Config(), scenario)
    # Two sides, 100 heartbeats each.
    assert steps.steps == {"_writer": 2 * 100 * 4, "_reader": 2 * 100 * 3}
