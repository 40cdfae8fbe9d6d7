"""Failover timing under trio's autojump clock, over in-memory streams: exact instants.

Each path is a ``memory_stream_pair`` run with ``Line.run_stream`` on both sides; a *hole*
drops every byte written either way while it is open (a black hole: the streams stay open).
A steady stream of messages runs over the active path; the hole opens under it. The active
path must change exactly ``suspect_after`` heartbeat intervals after the last bytes A read on
it, and the messages caught in the hole must reach B at that same instant (memory streams
have no delay), each once and in order.
"""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from hotline import Config, Identity, Liveness, MemoryStore, PathState, open_line
from hotline.driver import Line
from hotline.testing import StreamWrapper

A = Identity.from_seed(bytes([0x7A]) * 32, "a")
B = Identity.from_seed(bytes([0x7B]) * 32, "b")
CONFIG = Config(heartbeat_interval=1.0, reconnect_jitter=0)
SUSPECT_TIME = CONFIG.suspect_after * CONFIG.heartbeat_interval
SEND_EVERY = 0.1


class Hole:
    """One path's switch: while open, both ends drop what they write."""

    def __init__(self) -> None:
        self.open = False
        self.last_read_by_a = 0.0


class HoleEnd(StreamWrapper):
    def __init__(self, inner: trio.abc.Stream, hole: Hole, *, side_a: bool) -> None:
        super().__init__(inner)
        self.hole = hole
        self.side_a = side_a

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.hole.open:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if self.side_a and data:
            self.hole.last_read_by_a = trio.current_time()
        return data


async def add_path(nursery: trio.Nursery, a: Line, b: Line, count: int) -> Hole:
    left, right = trio.testing.memory_stream_pair()
    hole = Hole()
    nursery.start_soon(functools.partial(a.run_stream, HoleEnd(left, hole, side_a=True),
                                         initiator=True))
    nursery.start_soon(functools.partial(b.run_stream, HoleEnd(right, hole, side_a=False),
                                         initiator=False))
    while len(a.paths) < count or len(b.paths) < count:
        await trio.sleep(0.01)
    return hole


@pytest.mark.parametrize("hole_at", [3.0, 3.55, 3.99])
async def test_failover_exactly_at_the_suspect_time(
    autojump_clock: trio.abc.Clock, hole_at: float
) -> None:
    delivered: list[tuple[float, bytes]] = []
    sent: list[bytes] = []
    switched: list[tuple[float, PathState]] = []
    async with (
        open_line(A, B.public_key, store=MemoryStore(), config=CONFIG, max_paths=2) as a,
        open_line(B, A.public_key, store=MemoryStore(), config=CONFIG, max_paths=2) as b,
        trio.open_nursery() as nursery,
    ):
        holes = [await add_path(nursery, a, b, 1), await add_path(nursery, a, b, 2)]

        # Each stamped as it comes (a comprehension would hold everything until the end).
        async def receive() -> None:
            async for message in b:
                delivered.append((trio.current_time(), message.body))  # noqa: PERF401

        async def watch() -> None:
            async for event in a.watch():
                if isinstance(event, PathState) and event.active:
                    switched.append((trio.current_time(), event))  # noqa: PERF401

        nursery.start_soon(receive)
        nursery.start_soon(watch)
        start = trio.current_time()
        (active,) = [path for path in a.paths if path.active]
        hole = holes[active.path - 1]
        opened = False
        while trio.current_time() < start + 6.0:
            if not opened and trio.current_time() >= start + hole_at:
                hole.open = opened = True
                hole_time = trio.current_time()
                last_read = hole.last_read_by_a
                before = len(delivered)
            body = b"%04d" % len(sent)
            await a.queue(body)
            sent.append(body)
            await trio.sleep(SEND_EVERY)
        while len(delivered) < len(sent):
            await trio.sleep(0.1)
        # Neither line's peer was ever down: one path stayed up.
        assert a.liveness is Liveness.UP
        assert b.liveness is Liveness.UP
        nursery.cancel_scope.cancel()
    assert [body for _, body in delivered] == sent
    failover_at = last_read + SUSPECT_TIME
    assert last_read <= hole_time
    moves = [(at, event) for at, event in switched if event.path != active.path]
    assert moves[0][0] == pytest.approx(failover_at, abs=1e-9)
    assert "suspect" in moves[0][1].reason
    # What the hole swallowed arrives at the failover instant, not before.
    after_hole = delivered[before][0]
    assert after_hole == pytest.approx(failover_at, abs=1e-9)
