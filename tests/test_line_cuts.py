"""Cutting the link at every frame boundary (and at random bytes) of a scripted exchange.

A dials B through an in-memory link; each dial makes a fresh ``memory_stream_pair`` and hands
B its end through ``run_stream``. The first link is cut once, when a chosen number of bytes
has crossed it in a chosen direction: the bytes before the offset arrive, then both directions
end (a TCP connection dying mid-record). The line must reconnect and finish the exchange with
every message delivered to the application exactly once and in order, and every receipt
arriving. The offsets are the frame boundaries of a first, uncut run (a frame is a 2-byte
big-endian length and that many bytes), plus seeded random offsets.

Everything runs under ``autojump_clock`` over memory streams and memory stores: a reconnect
costs no real time.
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from stuck_sends import no_stuck_sends

from hotline import (
    Config,
    HotlineError,
    Identity,
    Liveness,
    MemoryStore,
    ReceiptKind,
    open_line,
)
from hotline.driver import Line, Outgoing
from hotline.testing import StreamWrapper

A = Identity.from_seed(bytes([0x5A]) * 32, "a")
B = Identity.from_seed(bytes([0x5B]) * 32, "b")

COUNT = 30
CONFIG = Config(reconnect_jitter=0)
#: Virtual seconds any one exchange may take (it needs well under one).
EXCHANGE_LIMIT = 120


#: These messages are larger than one Noise message: their records travel in several frames.
LARGE = (10, 20)


def body(sender: str, n: int) -> bytes:
    size = 150_000 if n in LARGE else n * 7
    return f"{sender}:{n:03d}:".encode() + bytes([n]) * size


@dataclass
class CutPlan:
    """Cut the first link once ``offset`` bytes have gone ``direction`` (``"ab"``/``"ba"``)."""

    direction: str = "ab"
    offset: float = math.inf
    done_at: float | None = None
    then: CutPlan | None = None
    """The plan for the next link (the one A dials after this cut)."""


@dataclass
class Wire:
    """Counts the bytes of one link in both directions and cuts it when the plan says so."""

    plan: CutPlan
    cuttable: bool
    sent: dict[str, int] = field(default_factory=lambda: {"ab": 0, "ba": 0})
    frames: dict[str, list[int]] = field(default_factory=lambda: {"ab": [], "ba": []})
    ends: list[trio.testing.MemorySendStream] = field(default_factory=list)
    cut: bool = False

    def close(self) -> None:
        self.cut = True
        for end in self.ends:
            end.close()


class WireEnd(StreamWrapper):
    def __init__(self, inner: trio.StapledStream, wire: Wire, direction: str) -> None:
        super().__init__(inner)
        self.wire = wire
        self.direction = direction
        self._parse = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        wire = self.wire
        if wire.cut:
            raise trio.BrokenResourceError("the link was cut")
        data = bytes(data)
        plan = wire.plan
        before = wire.sent[self.direction]
        if wire.cuttable and plan.direction == self.direction and before + len(data) >= plan.offset:
            keep = int(plan.offset) - before
            if keep:
                await self.inner.send_all(data[:keep])
            wire.sent[self.direction] += keep
            plan.done_at = trio.current_time()
            wire.close()
            raise trio.BrokenResourceError("the link was cut")
        wire.sent[self.direction] += len(data)
        self._note_frames(data)
        await self.inner.send_all(data)

    def _note_frames(self, data: bytes) -> None:
        self._parse += data
        boundaries = self.wire.frames[self.direction]
        offset = self.wire.sent[self.direction] - len(self._parse)
        while len(self._parse) >= 2:
            length = int.from_bytes(self._parse[:2], "big")
            if len(self._parse) < 2 + length:
                break
            del self._parse[: 2 + length]
            offset += 2 + length
            boundaries.append(offset)


@dataclass
class Outcome:
    got_by_a: list[tuple[int, bytes]]
    got_by_b: list[tuple[int, bytes]]
    wires: list[Wire]
    stats: tuple[object, object]
    plan: CutPlan


async def _consume(line: Line, got: list[tuple[int, bytes]]) -> None:
    """The application: reads every message, acknowledging each one (the last explicitly)."""
    async for message in line:
        got.append((message.seq, message.body))
        if message.seq == COUNT:
            message.ack()
            return


async def _produce(line: Line, sender: str, outs: list[Outgoing]) -> None:
    for n in range(1, COUNT + 1):
        outs.append(await line.send(body(sender, n)))
        if n % 7 == 0:
            # Let the other side talk in between: receipts and messages interleave.
            await trio.sleep(0)


async def _run_b(line_b: Line, stream: trio.abc.Stream) -> None:
    # A handshake cut short ends here: A will dial again.
    with contextlib.suppress(HotlineError, trio.BrokenResourceError, trio.ClosedResourceError):
        await line_b.run_stream(stream, initiator=False)


async def exchange(plan: CutPlan) -> Outcome:
    """Both sides send COUNT messages and read the other's; the first link may be cut."""
    with no_stuck_sends() as unsticker:
        try:
            return await _exchange(plan)
        finally:
            assert not unsticker.trips, (
                f"send() hung for good (seq, at virtual time) {unsticker.trips}: its line's "
                f"committer task died ({plan})"
            )


async def _exchange(plan: CutPlan) -> Outcome:
    wires: list[Wire] = []
    got_by_a: list[tuple[int, bytes]] = []
    got_by_b: list[tuple[int, bytes]] = []
    outs_a: list[Outgoing] = []
    outs_b: list[Outgoing] = []
    store_a, store_b = MemoryStore(), MemoryStore()
    with trio.fail_after(EXCHANGE_LIMIT):
        async with (
            open_line(B, A.public_key, store=store_b, config=CONFIG) as line_b,
            trio.open_nursery() as links,
        ):

            async def connect() -> trio.abc.Stream:
                link_plan: CutPlan | None = plan
                for _ in wires:
                    link_plan = link_plan.then if link_plan is not None else None
                wire = Wire(link_plan or CutPlan(), cuttable=link_plan is not None)
                wires.append(wire)
                ab_send, ab_recv = trio.testing.memory_stream_one_way_pair()
                ba_send, ba_recv = trio.testing.memory_stream_one_way_pair()
                wire.ends += [ab_send, ba_send]
                end_a = WireEnd(trio.StapledStream(ab_send, ba_recv), wire, "ab")
                end_b = WireEnd(trio.StapledStream(ba_send, ab_recv), wire, "ba")
                links.start_soon(_run_b, line_b, end_b)
                return end_a

            async with open_line(
                A, B.public_key, store=store_a, config=CONFIG, connect=connect
            ) as line_a:
                async with trio.open_nursery() as app:
                    app.start_soon(_produce, line_a, "a", outs_a)
                    app.start_soon(_produce, line_b, "b", outs_b)
                    app.start_soon(_consume, line_a, got_by_a)
                    app.start_soon(_consume, line_b, got_by_b)
                # Every message gets its delivered receipt, the last one its acknowledgement.
                for outs in (outs_a, outs_b):
                    assert [out.seq for out in outs] == list(range(1, COUNT + 1))
                    for out in outs:
                        receipt = await out.delivered()
                        assert receipt.kind is ReceiptKind.DELIVERED
                        assert receipt.upto >= out.seq
                    last = await outs[-1].acknowledged()
                    assert last.upto == COUNT
                await line_a.flush()
                await line_b.flush()
                # A cut planned at one of the last offsets can fall after the exchange (the
                # final receipts): then the line is down for a moment and must come back.
                await line_a.wait_liveness(Liveness.UP)
                assert line_a.outbox_size == 0
                assert line_b.outbox_size == 0
                assert line_a.state.peer_acknowledged == COUNT
                assert line_b.state.peer_acknowledged == COUNT
                stats = (line_a.stats, line_b.stats)
            links.cancel_scope.cancel()
    return Outcome(got_by_a, got_by_b, wires, stats, plan)


def check(result: Outcome) -> None:
    expected_a = [(n, body("a", n)) for n in range(1, COUNT + 1)]
    expected_b = [(n, body("b", n)) for n in range(1, COUNT + 1)]
    assert result.got_by_b == expected_a, f"B's application saw the wrong messages ({result.plan})"
    assert result.got_by_a == expected_b, f"A's application saw the wrong messages ({result.plan})"


_clean: dict[str, list[int]] = {}


async def clean_boundaries() -> dict[str, list[int]]:
    """Frame boundaries (byte offsets) of an uncut exchange, per direction."""
    if not _clean:
        result = await exchange(CutPlan())
        check(result)
        assert len(result.wires) == 1
        _clean.update(result.wires[0].frames)
    return _clean


async def test_clean_exchange(autojump_clock: trio.abc.Clock) -> None:
    result = await exchange(CutPlan())
    check(result)
    assert len(result.wires) == 1
    stats_a, stats_b = result.stats
    assert stats_a.sessions == 1  # type: ignore[attr-defined]
    assert stats_a.sent == COUNT  # type: ignore[attr-defined]
    assert stats_b.received == COUNT  # type: ignore[attr-defined]
    frames = result.wires[0].frames
    # 2 handshake frames, 30 messages each way, receipts and heartbeats.
    assert len(frames["ab"]) > COUNT
    assert len(frames["ba"]) > COUNT


async def _cut_runs(plans: list[CutPlan]) -> list[Outcome]:
    """Run an exchange per plan; fail with every plan that went wrong, not just the first."""
    outcomes, failures = [], []
    for plan in plans:
        try:
            result = await exchange(plan)
            check(result)
        except Exception as exc:  # Collected, and reported below.
            failures.append(f"{plan}: {_describe(exc)}")
        else:
            outcomes.append(result)
    assert not failures, f"{len(failures)} of {len(plans)} cuts failed:\n" + "\n".join(failures)
    return outcomes


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


@pytest.mark.parametrize("direction", ["ab", "ba"])
async def test_cut_at_every_frame_boundary(
    autojump_clock: trio.abc.Clock, direction: str
) -> None:
    boundaries = (await clean_boundaries())[direction]
    # Offset 0: nothing crosses at all; then after each frame but the last (the goodbye).
    offsets = [0, *boundaries[:-1]]
    outcomes = await _cut_runs([CutPlan(direction, offset) for offset in offsets])
    # The byte stream before a cut is much the same as in the clean run, so nearly every
    # planned cut falls inside the exchange and makes A dial again (the interleaving of the
    # two sides may differ, so the last few offsets may come after the exchange, or never).
    redialled = [o for o in outcomes if o.plan.done_at is not None and len(o.wires) >= 2]
    missed = [o.plan for o in outcomes if o not in redialled]
    assert len(redialled) >= len(offsets) - 8, missed


@pytest.mark.parametrize("direction", ["ab", "ba"])
async def test_cut_at_random_offsets(autojump_clock: trio.abc.Clock, direction: str) -> None:
    boundaries = (await clean_boundaries())[direction]
    rng = random.Random(f"hotline cuts {direction}")
    offsets = sorted(rng.randrange(1, boundaries[-2]) for _ in range(20))
    outcomes = await _cut_runs([CutPlan(direction, offset) for offset in offsets])
    assert sum(o.plan.done_at is not None and len(o.wires) >= 2 for o in outcomes) >= 18


class Valve(StreamWrapper):
    """A stream end whose writes can be dropped (a silent peer) or stuck (a full buffer)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.drop_from = math.inf
        self.stick_from = math.inf

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        now = trio.current_time()
        if now >= self.stick_from:
            await trio.sleep_forever()  # The peer reads nothing: the send buffer is full.
        if now < self.drop_from:
            await self.inner.send_all(data)


async def test_send_while_a_dead_session_is_still_closing(autojump_clock: trio.abc.Clock) -> None:
    """A commit that lands while a broken session flushes its last bytes must not kill the line.

    B goes silent at 2.5 and A's writes get stuck from 3.5 (B reads nothing), so A declares B
    down at 5.0 and then tries, for up to a second, to flush what it still holds for B. A
    message queued at 5.5 commits inside that second, on a session whose connection is
    already broken; it must simply wait for the next session.
    """
    got: list[tuple[int, bytes]] = []
    with no_stuck_sends() as unsticker, trio.fail_after(60):
        async with (
            open_line(A, B.public_key, store=MemoryStore(), config=CONFIG) as line_a,
            open_line(B, A.public_key, store=MemoryStore(), config=CONFIG) as line_b,
            trio.open_nursery() as nursery,
        ):
            end_a, end_b = trio.testing.memory_stream_pair()
            valve_a, valve_b = Valve(end_a), Valve(end_b)
            valve_b.drop_from = 2.5
            valve_a.stick_from = 3.5

            async def run_a(stream: trio.abc.Stream) -> None:
                await line_a.run_stream(stream, initiator=True)

            async def run_b(stream: trio.abc.Stream) -> None:
                with contextlib.suppress(HotlineError, trio.BrokenResourceError):
                    await line_b.run_stream(stream, initiator=False)

            nursery.start_soon(run_a, valve_a)
            nursery.start_soon(run_b, valve_b)
            await trio.sleep_until(4.5)
            first = await line_a.send(b"queued while B is silent")
            await line_a.wait_liveness(Liveness.DOWN)
            assert trio.current_time() == 5.0
            await trio.sleep_until(5.5)
            second = await line_a.send(b"queued while the dead session closes")
            assert trio.current_time() == 5.5
            assert line_a.state.sent_seq == 2
            # A new link: both messages arrive, once each, in order.
            await line_b.wait_liveness(Liveness.DOWN)
            end_a, end_b = trio.testing.memory_stream_pair()
            nursery.start_soon(run_a, end_a)
            nursery.start_soon(run_b, end_b)
            for _ in range(2):
                message = await line_b.receive()
                got.append((message.seq, message.body))
            assert (await second.delivered()).upto == 2
            assert (await first.delivered()).upto == 2
            nursery.cancel_scope.cancel()
    assert not unsticker.trips
    assert got == [(1, b"queued while B is silent"), (2, b"queued while the dead session closes")]


_second: dict[str, list[int]] = {}


@pytest.mark.parametrize("direction", ["ab", "ba"])
async def test_cut_again_at_every_frame_boundary_of_the_resumed_link(
    autojump_clock: trio.abc.Clock, direction: str
) -> None:
    """The first link is cut half-way; the second (a resume: receipts, replayed messages,
    then the rest) is cut at each of its own frame boundaries."""
    boundaries = (await clean_boundaries())[direction]
    middle = boundaries[len(boundaries) // 2]
    if direction not in _second:
        result = await exchange(CutPlan(direction, middle))
        check(result)
        assert len(result.wires) == 2
        _second[direction] = result.wires[1].frames[direction]
    offsets = [0, *_second[direction][:-1]]
    plans = [CutPlan(direction, middle, then=CutPlan(direction, offset)) for offset in offsets]
    outcomes = await _cut_runs(plans)
    twice = [o for o in outcomes if o.plan.then is not None and o.plan.then.done_at is not None]
    # How much the resumed link carries varies from run to run: where the first cut falls in
    # the messages, and how receipts and signatures batch, follow trio's scheduling (resumed
    # links of 16 to 33 frames have been seen), and a second cut planned past the end of a
    # run's resumed link never comes. Delivery itself was checked for every run.
    assert len(twice) >= len(offsets) // 3
    # A second cut normally forces a third connection; one that lands after the last frame
    # the exchange needed (trio's scheduling varies how much the resumed link still carries)
    # needs none. Delivery itself was checked for every run by _cut_runs.
    redialled = [result for result in twice if len(result.wires) >= 3]
    assert len(redialled) >= len(twice) - 2, [r.plan for r in twice if len(r.wires) < 3]
