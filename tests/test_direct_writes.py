"""Output written by whoever produced it while the session's writer is idle.

Over a TCP socket (and a Unix one: any ``trio.SocketStream``) the committer and the reader
write the core's output themselves with one non-blocking write when the writer is idle, and
the writer tries the same before it awaits (hotline/driver/_session.py, ``_write_now``). These
run real sockets and the real clock: what matters is what the kernel takes. The buffers are
made small so that writes are cut short and the writer must finish them in order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator

import pytest
import trio

from hotline import Config, Identity, Liveness, MemoryStore, open_line
from hotline.driver import Line, _session

A = Identity.from_seed(bytes([0x81]) * 32, "a")
B = Identity.from_seed(bytes([0x82]) * 32, "b")
LIMIT = 20
#: No heartbeat within a test: the writer's own wake-ups would blur what is counted.
QUIET = Config(heartbeat_interval=30.0)


def _socket_streams(buffer: int | None = None) -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if buffer is not None:
        for sock in (left, right):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    return trio.SocketStream(left), trio.SocketStream(right)


@contextlib.asynccontextmanager
async def _joined(buffer: int | None) -> AsyncIterator[tuple[Line, Line, trio.Nursery]]:
    """Lines A and B joined by a Unix socket pair (``buffer``: its buffers' size), and a
    nursery the caller cancels when done."""
    left, right = _socket_streams(buffer)
    async with (
        open_line(A, B.public_key, store=MemoryStore(), config=QUIET) as line_a,
        open_line(B, A.public_key, store=MemoryStore(), config=QUIET) as line_b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(functools.partial(line_a.run_stream, left, initiator=True))
        nursery.start_soon(functools.partial(line_b.run_stream, right, initiator=False))
        yield line_a, line_b, nursery


class _Writes:
    """Counts the session's direct writes, and those the socket cut short."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = self.short = 0
        real_write = os.write

        def write(fd: int, data: bytes | memoryview) -> int:
            written = real_write(fd, data)
            self.calls += 1
            self.short += written < len(data)
            return written

        monkeypatch.setattr(_session.os, "write", write)  # type: ignore[attr-defined]


class _WriterSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("Session._writer"):
            self.steps += 1


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
async def test_one_message_at_a_time_never_wakes_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes = _Writes(monkeypatch)
    with trio.fail_after(LIMIT):
        async with _joined(None) as (line_a, line_b, nursery):
            await line_a.wait_liveness(Liveness.UP)
            await line_b.wait_liveness(Liveness.UP)

            async def consume() -> None:
                async for _ in line_b:
                    pass

            nursery.start_soon(consume)
            first = await line_a.send(b"warm-up")
            await first.acknowledged()
            steps = _WriterSteps()
            writes.calls = 0
            trio.lowlevel.add_instrument(steps)
            try:
                for index in range(50):
                    outgoing = await line_a.send(b"statement %d" % index)
                    await outgoing.delivered()
            finally:
                trio.lowlevel.remove_instrument(steps)
            nursery.cancel_scope.cancel()
    # Each message and each delivered receipt went out from the committer that stored it;
    # no writer task ran for any of them.
    assert steps.steps == 0
    assert writes.calls >= 100
    assert writes.short == 0


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
async def test_writes_the_socket_cuts_short_are_finished_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes = _Writes(monkeypatch)
    bodies = [bytes([index]) * (150_000 + index) for index in range(6)]
    with trio.fail_after(LIMIT):
        async with _joined(4096) as (line_a, line_b, nursery):
            received = []

            async def consume() -> None:
                async for message in line_b:
                    received.append(message.body)
                    if len(received) == len(bodies):
                        message.ack()
                        return

            nursery.start_soon(consume)
            # One at a time (the idle writer's direct write cut short), then all at once (the
            # writer's own first try cut short).
            out = await line_a.send(bodies[0])
            await out.delivered()
            outs = [await line_a.send(body) for body in bodies[1:]]
            await outs[-1].acknowledged()
            nursery.cancel_scope.cancel()
    assert received == bodies
    assert writes.short >= 2
