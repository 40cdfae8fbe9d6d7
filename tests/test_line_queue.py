"""A producer that does not wait for each commit: ``Line.queue``, ``Line.send_nowait`` and
``Outgoing.stored``.

The store here is a :class:`MemoryStore` that records the messages of every commit it is
asked for, so a test counts commits exactly instead of timing them. With ``held``, each
commit runs in a worker thread (as SQLite's do) and waits there until the test releases it,
as a slow disk would: what the line does meanwhile is then decided by the test, not by the
speed of the machine. Tests with a held store use the real clock (a virtual clock would jump
while the thread waits); the others run under ``autojump_clock``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from hotline import (
    Config,
    HotlineError,
    Identity,
    LineClosed,
    MemoryStore,
    MessageTooLarge,
    OutboxFull,
    StoreError,
    open_line,
)
from hotline.driver import Line, Outgoing
from hotline.store import Batch

A = Identity.from_seed(bytes([0x5A]) * 32, "a")
B = Identity.from_seed(bytes([0x5B]) * 32, "b")

LIMIT = 20.0
"""Seconds any test may take: a guard against hangs, far above the normal."""


class CountingStore(MemoryStore):
    """A MemoryStore that records the sequence numbers of our messages in each commit.

    ``held``: every commit waits in its worker thread until ``release`` is set; with ``fail``
    it then raises instead of storing, as a full disk would.
    """

    def __init__(self, *, held: bool = False, fail: bool = False) -> None:
        super().__init__()
        self.commits_block = held
        self.fail = fail
        self.release = threading.Event()
        if not held:
            self.release.set()
        self.sent_per_commit: list[list[int]] = []
        self.began = threading.Event()  # A commit with our messages has begun.

    def commit(self, batch: Batch) -> None:
        if batch.sent:
            self.sent_per_commit.append([message.seq for message in batch.sent])
            self.began.set()
        # Bounded: a test that fails before releasing must not leave the thread behind forever.
        self.release.wait(LIMIT)
        if self.fail:
            raise OSError(28, "No space left on device")
        super().commit(batch)


def body(n: int) -> bytes:
    return f"message {n}".encode()


async def _run_b(line_b: Line, stream: trio.abc.Stream) -> None:
    with contextlib.suppress(HotlineError, trio.BrokenResourceError, trio.ClosedResourceError):
        await line_b.run_stream(stream, initiator=False)


@contextlib.asynccontextmanager
async def linked(config: Config | None = None) -> AsyncIterator[tuple[Line, Line]]:
    """A and B on memory stores; A dials B over in-memory streams."""
    config = config or Config(reconnect_jitter=0)
    async with (
        open_line(B, A.public_key, store=MemoryStore(), config=config) as line_b,
        trio.open_nursery() as links,
    ):

        async def dial() -> trio.abc.Stream:
            end_a, end_b = trio.testing.memory_stream_pair()
            links.start_soon(_run_b, line_b, end_b)
            return end_a

        async with open_line(A, B.public_key, store=MemoryStore(), config=config,
                             connect=dial) as line_a:
            yield line_a, line_b
        links.cancel_scope.cancel()


# --- group commit for one producer ----------------------------------------------------------


async def test_sequential_sends_each_wait_for_their_own_commit(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Why queue() exists: one task awaiting send() after send() pays a commit per message."""
    store = CountingStore()
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=store) as line:
            for n in range(1, 11):
                await line.send(body(n))
    assert store.sent_per_commit == [[n] for n in range(1, 11)]


async def test_a_sequential_queue_loop_shares_commits() -> None:
    """While one commit is in flight, everything one task queues goes into the next one."""
    store = CountingStore(held=True)
    count = 200
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=store) as line:
            outs = [await line.queue(body(1))]
            # The first commit is under way in its worker thread (held there) ...
            assert await trio.to_thread.run_sync(store.began.wait, LIMIT)
            # ... while the same task queues the rest, one after another.
            outs += [await line.queue(body(n)) for n in range(2, count + 1)]
            assert [out.seq for out in outs] == list(range(1, count + 1))
            assert line.stats.sent == count
            assert line.state.sent_seq == 0  # Queued, not stored: the first commit is held.
            assert len(store.sent_per_commit) == 1  # Only the first commit has begun.
            store.release.set()
            await line.flush()  # Waits for everything queued.
            assert line.state.sent_seq == count
            for out in outs:
                with trio.testing.assert_checkpoints():
                    await out.stored()  # Already stored: returns at once (a checkpoint).
    assert len(store.sent_per_commit) == 2
    first, second = store.sent_per_commit
    assert first + second == list(range(1, count + 1))


async def test_send_nowait_queues_without_a_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    store = CountingStore()
    config = Config(outbox_limit=50)
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=store, config=config) as line:
            with trio.testing.assert_no_checkpoints():
                outs = [line.send_nowait(body(n)) for n in range(1, 51)]
                with pytest.raises(OutboxFull):
                    line.send_nowait(b"one too many")
                with pytest.raises(MessageTooLarge):
                    line.send_nowait(b"x" * (config.max_body_size + 1))
            assert line.stats.sent == 50  # The refused bodies took no number.
            await outs[-1].stored()
            assert store.sent_per_commit == [list(range(1, 51))]  # One commit for all.
            assert line.state.sent_seq == 50
        with pytest.raises(LineClosed):
            line.send_nowait(b"after the close")


# --- stored() -------------------------------------------------------------------------------


async def test_stored_returns_once_the_commit_is_durable() -> None:
    store = CountingStore(held=True)
    stored_at: list[int] = []
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=store) as line, trio.open_nursery() as nursery:
            out = await line.queue(b"held")

            async def wait_stored() -> None:
                await out.stored()
                stored_at.append(line.state.sent_seq)

            nursery.start_soon(wait_stored)
            await trio.testing.wait_all_tasks_blocked()
            assert stored_at == []  # The commit is in its thread, held.
            assert line.state.sent_seq == 0
            store.release.set()
        assert stored_at == [1]
        await out.stored()  # Still true after the line closed.


async def test_a_queued_message_is_delivered_and_acknowledged(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(LIMIT):
        async with linked() as (line_a, line_b):
            first = await line_a.queue(b"one")
            second = line_a.send_nowait(b"two")
            # The receipts can be awaited without waiting for stored() first.
            assert (await second.delivered()).upto == 2
            assert (await first.delivered()).upto == 2
            message = await line_b.receive()
            assert (message.seq, message.body) == (1, b"one")
            message = await line_b.receive()  # With auto_ack, this acknowledges #1.
            assert (message.seq, message.body) == (2, b"two")
            assert (await first.acknowledged()).upto >= 1
            message.ack()
            assert (await second.acknowledged()).upto == 2
            await first.stored()
            await second.stored()


async def test_stored_raises_store_error_when_the_store_fails() -> None:
    """The message of the failing commit and the one queued behind it: neither is reported
    stored, during the line's end or after it."""
    store = CountingStore(held=True, fail=True)
    seen: list[type[BaseException]] = []

    async def fail_the_store() -> None:
        nonlocal first, second
        async with open_line(A, B.public_key, store=store) as line:
            first = await line.queue(b"first")
            await trio.testing.wait_all_tasks_blocked()  # Its commit is in the thread.
            second = await line.queue(b"second")
            store.release.set()
            try:
                await first.stored()
            except StoreError as exc:
                seen.append(type(exc))
                raise

    first = second = None
    with trio.fail_after(LIMIT), pytest.raises(StoreError):
        await fail_the_store()
    assert first is not None
    assert second is not None
    assert seen == [StoreError]
    assert store.sent_per_commit == [[1]]
    for out in (first, second):
        with pytest.raises(StoreError):
            await out.stored()


async def test_stored_raises_line_closed_when_the_line_closes_first() -> None:
    """The line is closed while a commit is held: the close gives up waiting for it, and the
    message queued behind it is never stored."""
    store = CountingStore(held=True)
    with trio.fail_after(LIMIT):
        async with (
            trio.open_nursery() as nursery,
            open_line(A, B.public_key, store=store) as line,
        ):
            first = await line.queue(b"first")
            await trio.testing.wait_all_tasks_blocked()  # Its commit is in the thread.
            second = await line.queue(b"second")
            assert line.outbox_size == 2

            async def release_once_the_line_has_given_up() -> None:
                nursery_of_line = line._nursery
                assert nursery_of_line is not None
                while not nursery_of_line.cancel_scope.cancel_called:
                    await trio.sleep(0.01)
                store.release.set()

            nursery.start_soon(release_once_the_line_has_given_up)
    await first.stored()  # Its commit finished, late.
    with pytest.raises(LineClosed):
        await second.stored()
    assert store.sent_per_commit == [[1]]
    assert line.state.sent_seq == 1


# --- cancellation ---------------------------------------------------------------------------


async def test_cancelled_while_waiting_for_room_queues_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = Config(outbox_limit=3)
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=MemoryStore(), config=config) as line:
            with trio.CancelScope() as scope:
                scope.cancel()
                await line.queue(b"cancelled before it began")
            assert scope.cancelled_caught
            assert line.stats.sent == 0
            for n in range(1, 4):
                line.send_nowait(body(n))
            start = trio.current_time()
            with trio.move_on_after(5) as scope:
                await line.queue(b"no room: the peer never receipts")
            assert scope.cancelled_caught
            assert trio.current_time() == start + 5
            assert line.stats.sent == 3
            assert line.outbox_size == 3
            await line.flush()
            assert line.state.sent_seq == 3
            # The cancelled call took no number: the next message is #4 once there is room.
            with pytest.raises(OutboxFull):
                line.send_nowait(b"still no room")


async def test_a_cancelled_stored_wait_unsends_nothing() -> None:
    store = CountingStore(held=True)
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=store) as line:
            out = await line.queue(b"kept")
            with trio.CancelScope() as scope:
                scope.cancel()
                await out.stored()
            assert scope.cancelled_caught
            store.release.set()
            await out.stored()
            assert line.state.sent_seq == 1
    assert store.sent_per_commit == [[1]]


async def test_a_cancel_after_the_number_is_taken_still_returns_the_outgoing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The cancel lands during queue()'s last checkpoint, after the message took its number:
    the caller still gets its Outgoing, and is cancelled at its own next checkpoint."""
    got: list[Outgoing] = []
    with trio.fail_after(LIMIT):
        async with (
            open_line(A, B.public_key, store=MemoryStore()) as line,
            trio.open_nursery() as nursery,
        ):
            with trio.CancelScope() as scope:

                async def cancel_the_caller() -> None:
                    scope.cancel()

                nursery.start_soon(cancel_the_caller)  # Runs at the caller's first yield.
                got.append(await line.queue(b"belongs to the line"))
                await trio.sleep(1)
                pytest.fail("not cancelled")
            assert scope.cancelled_caught
            assert [out.seq for out in got] == [1]
            await got[0].stored()
            assert line.state.sent_seq == 1


async def test_calls_cancelled_with_the_line_see_cancelled_not_line_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A scope cancelled around a line and a task using it (Ctrl-C in a program): the line's
    own tasks close it, and a call the task makes afterwards, with its scope cancelled, must
    end as cancelled, not raise LineClosed out of the cancelled scope as an error. (The
    demo, signalled as it opened its lines, ended with status 1 this way.)"""
    for call in ("delivered", "acknowledged", "receive", "flush", "stored"):
        with trio.fail_after(LIMIT), trio.CancelScope() as outer:
            async with open_line(A, B.public_key, store=MemoryStore()) as line:
                sent = await line.queue(b"never receipted")
                outer.cancel()
                with trio.CancelScope(shield=True):
                    # Busy elsewhere while the line's tasks see the cancellation and close it.
                    await trio.sleep(1)
                assert line._closed
                calls = {"delivered": sent.delivered, "acknowledged": sent.acknowledged,
                         "receive": line.receive, "flush": line.flush, "stored": sent.stored}
                await calls[call]()
        assert outer.cancelled_caught, call
