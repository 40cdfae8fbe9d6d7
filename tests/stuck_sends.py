"""A guard that turns a deadlocked ``Line.send`` into a test failure instead of a hang.

It relies on trio internals (``Event._tasks``, coroutine frames): it is a test tool only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import FrameType

import outcome
import trio

from hotline.driver._committer import Committer
from hotline.driver._outbox import Outbox

__all__ = ["SendUnsticker", "StuckSend", "no_stuck_sends"]


class StuckSend(Exception):
    """Raised into a ``Line.send`` that would otherwise wait forever."""


class SendUnsticker(trio.abc.Instrument):
    """Turns a deadlock of ``Line.send`` into an exception instead of a hang.

    ``send()`` waits for its commit inside a shielded scope; if the line's committer task has
    died, nothing will ever set the event it waits on, and no cancellation can reach it. When
    the run loop has nothing to run, this looks for such sends (a task inside the outbox's
    ``send`` parked on an unset ``done`` event while no committer task of that line lives),
    records them in ``trips`` and wakes each with :class:`StuckSend` (taking it off the event
    exactly as trio's own abort would).
    """

    def __init__(self) -> None:
        self.trips: list[tuple[float, int | None]] = []

    def before_io_wait(self, timeout: float) -> None:
        if trio.lowlevel.current_statistics().tasks_runnable:
            return
        tasks = _all_tasks()
        committers = {
            id(frame.f_locals.get("self"))
            for task in tasks
            for frame in _frames(task)
            if frame.f_code is Committer.run.__code__
        }
        for task in tasks:
            for frame in _frames(task):
                if frame.f_code is not Outbox.send.__code__:
                    continue
                outbox, done = frame.f_locals.get("self"), frame.f_locals.get("done")
                waiting: set[trio.lowlevel.Task] = getattr(done, "_tasks", set())
                if id(getattr(outbox, "_committer", None)) not in committers and (
                    task in waiting
                ):
                    message = frame.f_locals.get("message")
                    seq = getattr(message, "seq", None)
                    self.trips.append((trio.current_time(), seq))
                    waiting.discard(task)
                    trio.lowlevel.reschedule(task, outcome.Error(StuckSend(
                        f"send() of message {seq} waits for a commit that will never come: "
                        "the line's committer task is gone"
                    )))


def _all_tasks() -> list[trio.lowlevel.Task]:
    tasks, todo = [], [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        tasks.append(task)
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return tasks


def _frames(task: trio.lowlevel.Task) -> list[FrameType]:
    frames = []
    coro: object = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return frames


@contextlib.contextmanager
def no_stuck_sends() -> Iterator[SendUnsticker]:
    """Install a :class:`SendUnsticker` for the block. It unsticks what would hang forever
    and records it in ``trips``; the caller asserts that ``trips`` is empty, saying why."""
    unsticker = SendUnsticker()
    trio.lowlevel.add_instrument(unsticker)
    try:
        yield unsticker
    finally:
        trio.lowlevel.remove_instrument(unsticker)
