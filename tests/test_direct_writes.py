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
import trio.testing

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


async def _until_the_writer_is_idle(line: Line, peer: Line) -> None:
    """Return once ``line``'s writer waits for work (it has written everything so far),
    after a first message that ``peer`` has taken."""
    await line.send(b"warm-up")
    assert (await peer.receive()).body == b"warm-up"
    await trio.testing.wait_all_tasks_blocked()
    session = line._active
    assert session is not None
    assert session.writer_idle


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


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
async def test_a_session_closed_in_the_middle_of_a_write_sends_no_broken_frame(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # The session is told to close, and then ended, in the same step as a direct write the
    # socket cut short: part of a frame is out, the rest and a goodbye are waiting. What
    # follows the part may only be the rest of that frame; the peer must never read a frame
    # broken off and followed by another. The message then comes whole on the next
    # connection.
    real_write_now = _session.Session._write_now
    ended: list[str] = []
    sent_after_the_cut: list[int] = []

    def write_now_then_end(self: _session.Session) -> None:
        real_write_now(self)
        if self._unwritten and not ended:
            ended.append("ended")
            real_send_all = self.stream.send_all

            async def send_all(data: bytes | memoryview) -> None:
                # The writer finishes what the direct write left and is cancelled (the
                # session ends); whatever is written after that follows a cut frame.
                if self.end_reason and not self.in_write:
                    sent_after_the_cut.append(len(data))
                await real_send_all(data)

            self.stream.send_all = send_all  # type: ignore[method-assign]
            self.close("closing in the middle of a write")
            self.end("ended in the middle of a write")

    monkeypatch.setattr(_session.Session, "_write_now", write_now_then_end)
    body = bytes(range(256)) * 600
    with trio.fail_after(LIMIT):
        async with (
            open_line(A, B.public_key, store=MemoryStore(), config=QUIET) as line_a,
            open_line(B, A.public_key, store=MemoryStore(), config=QUIET) as line_b,
        ):
            for connection in range(2):
                left, right = _socket_streams(4096)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        functools.partial(line_a.run_stream, left, initiator=True))
                    nursery.start_soon(
                        functools.partial(line_b.run_stream, right, initiator=False))
                    if connection == 0:
                        await _until_the_writer_is_idle(line_a, line_b)
                        await line_a.queue(body)
                    else:
                        message = await line_b.receive()
                        nursery.cancel_scope.cancel()
    assert ended == ["ended"]
    assert sent_after_the_cut == []
    assert message.body == body
    broken = [record.getMessage() for record in caplog.records
              if "authentication failed" in record.getMessage()
              or "protocol error" in record.getMessage()]
    assert broken == []


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
async def test_what_a_direct_write_left_goes_out_when_the_session_ends_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session has just been ended (its writer is cancelled, but has not run yet) when
    # a direct write is cut short: nobody but the session's last flush can send the rest of
    # that frame, and it must, before anything else.
    real_write_direct = _session.Session._write_direct
    left_over: list[int] = []

    def end_then_write(self: _session.Session, data: bytes | memoryview) -> int:
        if left_over or not self.writer_idle or len(data) < 100_000:
            return real_write_direct(self, data)
        self.end("ended just before a direct write")
        written = real_write_direct(self, data)
        left_over.append(len(data) - written)
        return written

    body = bytes(range(256)) * 600
    with trio.fail_after(LIMIT):
        async with _joined(4096) as (line_a, line_b, nursery):
            await _until_the_writer_is_idle(line_a, line_b)
            monkeypatch.setattr(_session.Session, "_write_direct", end_then_write)
            await line_a.queue(body)
            message = await line_b.receive()
            nursery.cancel_scope.cancel()
    assert left_over
    assert left_over[0] > 0
    assert message.body == body
