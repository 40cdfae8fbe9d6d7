"""Where a line's commit runs: on the event loop when the store has been idle, else in a thread.

The store here records the thread each commit ran in and, instead of sleeping, moves a fake
real-time clock by the time a commit "takes"; the test moves the same clock for the time the
line stays idle. So whether the committer waited at least as long as its last commit took,
and what is left of the process-wide budget, are decided by the test, not by the machine.
"""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from hotline import Identity, MemoryStore, open_line
from hotline.driver import _committer
from hotline.store import Batch

A = Identity.from_seed(bytes([0x6A]) * 32, "a")
B = Identity.from_seed(bytes([0x6B]) * 32, "b")

COMMIT_SECONDS = 0.002
"""What one commit takes on the fake clock: a little under half the budget's burst."""


class FakeRealTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedStore(MemoryStore):
    """A store whose commits block (as SQLite's do) and take ``COMMIT_SECONDS`` of ``clock``."""

    commits_block = True

    def __init__(self, clock: FakeRealTime, *, short: bool = True) -> None:
        super().__init__()
        self.short_commits = short
        self.clock = clock
        self.takes = COMMIT_SECONDS
        self.on_loop: list[bool] = []  # Per commit of our messages: run on the loop's thread?

    def commit(self, batch: Batch) -> None:
        if batch.sent:
            self.on_loop.append(threading.current_thread() is threading.main_thread())
        self.clock.now += self.takes
        super().commit(batch)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeRealTime:
    fake = FakeRealTime()
    monkeypatch.setattr(_committer, "real_time", fake)
    return fake


async def test_a_commit_after_an_idle_spell_runs_on_the_loop(clock: FakeRealTime) -> None:
    store = TimedStore(clock)
    async with open_line(A, B.public_key, store=store) as line:
        for _ in range(3):
            clock.now += 1.0  # Idle far longer than a commit takes, and the budget refills.
            await line.send(b"one at a time")
    assert store.on_loop == [True, True, True]


async def test_a_commit_with_work_waiting_behind_the_last_one_goes_to_a_thread(
    clock: FakeRealTime,
) -> None:
    """Queued at once after a commit, with no idle spell: a thread, so that the next batch
    can fill while the fsync waits."""
    store = TimedStore(clock)
    async with open_line(A, B.public_key, store=store) as line:
        clock.now += 1.0
        await line.send(b"first")
        await line.send(b"second, with no idle spell")
        clock.now += COMMIT_SECONDS / 2  # Idle, but not as long as the last commit took.
        await line.send(b"third")
        clock.now += COMMIT_SECONDS * 2
        await line.send(b"fourth")
    assert store.on_loop == [True, False, False, True]


async def test_idle_means_the_whole_process_idle(clock: FakeRealTime) -> None:
    """Two lines of one process taking turns: each waited as long as the other's commit, so
    each alone would look idle, but together they keep the loop busy with commits: after the
    first, theirs go to threads until the process has been idle as long as a commit."""
    store_a, store_b = TimedStore(clock), TimedStore(clock)
    async with (
        open_line(A, B.public_key, store=store_a) as line_a,
        open_line(B, A.public_key, store=store_b) as line_b,
    ):
        clock.now += 1.0
        for _ in range(3):
            await line_a.send(b"x")
            await line_b.send(b"y")
        clock.now += COMMIT_SECONDS
        await line_a.send(b"after an idle spell")
        await line_b.send(b"y")
    assert store_a.on_loop == [True, False, False, True]
    assert store_b.on_loop == [False, False, False, False]


async def test_no_commit_on_the_loop_while_another_is_in_a_thread(clock: FakeRealTime) -> None:
    held = TimedStore(clock, short=False)
    gate = threading.Event()
    original = held.commit

    def commit_when_released(batch: Batch) -> None:
        gate.wait(10)
        original(batch)

    held.commit = commit_when_released  # type: ignore[method-assign]
    store = TimedStore(clock)
    async with (
        open_line(A, B.public_key, store=held) as line_held,
        open_line(B, A.public_key, store=store) as line,
    ):
        clock.now += 1.0
        outgoing = line_held.send_nowait(b"held in its thread")
        await trio.testing.wait_all_tasks_blocked()  # The committer waits on its thread.
        assert _committer._commits().in_threads == 1
        await line.send(b"while the other commit waits in its thread")
        gate.set()
        await outgoing.stored()
        clock.now += 10.0  # Longer than any commit so far, however the test's time went.
        await line.send(b"after it")
    assert held.on_loop == [False]
    assert store.on_loop == [False, True]


async def test_after_a_slow_commit_commits_stay_in_threads_until_one_is_quick(
    clock: FakeRealTime,
) -> None:
    """A disk that stalls blocks the loop once, not at every idle spell."""
    store = TimedStore(clock)
    async with open_line(A, B.public_key, store=store) as line:
        clock.now += 1.0
        store.takes = 0.5  # A stalled fsync: half a second.
        await line.send(b"stalls the loop")
        store.takes = COMMIT_SECONDS
        clock.now += 10.0  # However long the line then stays idle.
        await line.send(b"in a thread, where it is quick")
        clock.now += 10.0
        await line.send(b"the last one was quick again: on the loop")
    assert store.on_loop == [True, False, True]


async def test_a_batch_of_large_bodies_commits_in_a_thread(clock: FakeRealTime) -> None:
    """Its commit writes many pages: blocking the loop for it would hold up reading and
    sending, which a thread lets go on."""
    store = TimedStore(clock)
    async with open_line(A, B.public_key, store=store) as line:
        clock.now += 1.0
        await line.send(bytes(_committer.LOOP_COMMIT_BYTES))
        clock.now += 1.0
        await line.send(bytes(_committer.LOOP_COMMIT_BYTES // 2))
    assert store.on_loop == [False, True]


async def test_a_store_without_short_commits_always_commits_in_a_thread(
    clock: FakeRealTime,
) -> None:
    store = TimedStore(clock, short=False)
    async with open_line(A, B.public_key, store=store) as line:
        for _ in range(3):
            clock.now += 1.0
            await line.send(b"x")
    assert store.on_loop == [False, False, False]
