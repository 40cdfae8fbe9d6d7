"""The driver's counters behind ``hotline status`` and ``--metrics``: bytes each way and the
last handshake's time (:class:`hotline.Stats`), over an in-memory link under autojump_clock.

The handshake's time is the system's: the line's ``clock`` (here a counter) gives only the
timestamps it signs, which reading it for the statistics would move.
"""

from __future__ import annotations

import functools
import time

import trio
import trio.testing

from hotline import Identity, MemoryStore, open_line

A = Identity.from_seed(bytes([0xA1]) * 32, "a")
B = Identity.from_seed(bytes([0xB2]) * 32, "b")


async def test_stats_count_each_sessions_bytes_and_its_handshake_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    signed_clock = iter(range(1_800_000_000_000_000_000, 1_900_000_000_000_000_000))
    async with (
        open_line(A, B.public_key, store=MemoryStore(), clock=lambda: next(signed_clock)) as line_a,
        open_line(B, A.public_key, store=MemoryStore(), clock=lambda: next(signed_clock)) as line_b,
    ):
        assert line_a.stats.last_handshake_ns is None
        assert (line_a.stats.bytes_sent, line_a.stats.bytes_received) == (0, 0)
        for session in (1, 2):
            before = time.time_ns()
            async with trio.open_nursery() as nursery:
                end_a, end_b = trio.testing.memory_stream_pair()
                nursery.start_soon(functools.partial(line_a.run_stream, end_a, initiator=True))
                nursery.start_soon(functools.partial(line_b.run_stream, end_b, initiator=False))
                await line_a.send(b"x" * 1000)
                await line_b.receive()
                # Heartbeats every second from the session's start: at 4.5 s nothing is in
                # flight, so what one side wrote the other has read.
                await trio.sleep(4.5)
                stats_a, stats_b = line_a.stats, line_b.stats
                # A's session starts to write only once B's session has answered, so B's
                # sessions read all A's sessions wrote. B's sessions write their handshake
                # answer, which A reads before its session starts: B wrote more than A read.
                assert stats_a.bytes_sent == stats_b.bytes_received
                assert stats_b.bytes_sent > stats_a.bytes_received
                assert stats_a.bytes_sent > session * 1000  # the bodies went this way
                nursery.cancel_scope.cancel()
            assert stats_a.sessions == stats_b.sessions == session
            # By the system's clock (the line's own clock, for what it signs, is not read).
            for stats in (stats_a, stats_b):
                assert stats.last_handshake_ns is not None
                assert before <= stats.last_handshake_ns <= time.time_ns()
