"""A line for asyncio applications: trio runs as a guest of the asyncio loop.

Theory of operation
-------------------
trio's guest mode (``trio.lowlevel.start_guest_run``) runs a trio run *inside* another
event loop: trio hands its scheduling steps to the host through
``loop.call_soon_threadsafe`` and waits for I/O in a helper thread, so trio's tasks run on
the asyncio loop's own thread, between asyncio's callbacks. :func:`open_asyncio_line` starts
such a run, whose main task opens :func:`~hotline.open_line`, then waits for the close.

The two loops share a thread but not a context: a trio primitive may only be touched while
trio runs one of its steps, and an asyncio future only from asyncio's side (which the same
thread is). So every call from asyncio goes through the run's token: ``run_sync_soon`` starts
a trio system task, and that task resolves an asyncio future when the call returns
or raises. Cancelling the awaiting asyncio task cancels the trio task (its cancel scope, again
through the token), so ``asyncio.wait_for`` and ``asyncio.timeout`` work on every call.

Closing sets a trio event; the main task leaves ``open_line`` (goodbye, pending commits) and
the guest run ends, reporting its outcome to a future the close awaits: an error that
stopped the line (its store failed) is raised there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import outcome
import trio

from ._errors import LineClosed

if TYPE_CHECKING:
    from ._config import Config
    from ._keys import Identity, PublicKey
    from .driver import Line, Message, Outgoing, Stats
    from .protocol import Liveness, Receipt
    from .store import Store

T = TypeVar("T")

__all__ = ["AsyncioLine", "AsyncioOutgoing", "open_asyncio_line"]


class AsyncioOutgoing:
    """A message this side sent (stored, or queued to be); await its receipts from asyncio."""

    def __init__(self, line: AsyncioLine, outgoing: Outgoing) -> None:
        self._line = line
        self._outgoing = outgoing
        self.message = outgoing.message
        self.seq: int = outgoing.seq

    async def stored(self) -> None:
        """Return once this message is durable (at once for one :meth:`AsyncioLine.send`
        returned); :class:`~hotline.LineClosed` if the line stopped before it was stored."""
        await self._line._call(self._outgoing.stored)

    async def delivered(self) -> Receipt:
        """The peer's signed receipt saying it holds this message (and all before it)."""
        return await self._line._call(self._outgoing.delivered)

    async def acknowledged(self) -> Receipt:
        """The peer's signed receipt saying its application processed this message."""
        return await self._line._call(self._outgoing.acknowledged)

    def __repr__(self) -> str:
        return f"<AsyncioOutgoing seq={self.seq}>"


class AsyncioLine:
    """One end of a line, for asyncio code. Made by :func:`open_asyncio_line`.

    Attributes that only read (``liveness``, ``rtt``, ``stats``, ...) are plain reads: both
    loops run on one thread, so trio is never midway through a step when asyncio code runs.
    """

    def __init__(self, run: _GuestRun) -> None:
        self._run = run

    @property
    def _line(self) -> Line:
        return self._run.line

    async def _call(self, function: Callable[[], Awaitable[T]]) -> T:
        return await self._run.call(function)

    async def send(self, body: bytes, *, ack_within: float | None = None) -> AsyncioOutgoing:
        """Sign and store ``body`` as the next message (waits while the outbox is full, then
        until it is stored). ``ack_within``: as :meth:`hotline.Line.send`."""
        outgoing = await self._call(lambda: self._line.send(body, ack_within=ack_within))
        return AsyncioOutgoing(self, outgoing)

    async def queue(self, body: bytes, *, ack_within: float | None = None) -> AsyncioOutgoing:
        """Give ``body`` its number and queue it without waiting for its commit (waits only
        while the outbox is full), so that one producer's messages share commits: as
        :meth:`hotline.Line.queue`. Await :meth:`AsyncioOutgoing.stored` for durability."""
        outgoing = await self._call(lambda: self._line.queue(body, ack_within=ack_within))
        return AsyncioOutgoing(self, outgoing)

    async def receive(self) -> Message:
        """The peer's next message, in order, each once; :class:`~hotline.LineClosed` once
        the line is closed. With ``auto_ack`` asking for the next acknowledges this one."""
        return await self._call(self._line.receive)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive()
            except LineClosed:
                return

    async def ack(self, message: Message) -> None:
        """Acknowledge ``message`` and every one before it (use this, not ``message.ack()``,
        which must run inside trio)."""
        async def acknowledge() -> None:
            message.ack()

        await self._call(acknowledge)

    async def flush(self) -> None:
        """Return once every message queued and every acknowledgement made is stored."""
        await self._call(self._line.flush)

    async def wait_liveness(self, state: Liveness) -> None:
        """Return once the peer's liveness is ``state``."""
        await self._call(lambda: self._line.wait_liveness(state))

    @property
    def liveness(self) -> Liveness:
        return self._line.liveness

    @property
    def rtt(self) -> float | None:
        return self._line.rtt

    @property
    def stats(self) -> Stats:
        return self._line.stats

    @property
    def outbox_size(self) -> int:
        return self._line.outbox_size

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        return list(self._line.listen_addresses)

    @property
    def identity(self) -> Identity:
        return self._line.identity

    @property
    def peer(self) -> PublicKey:
        return self._line.peer

    async def aclose(self) -> None:
        """Say goodbye, store what is pending and end the trio run; idempotent. Raises the
        error that stopped the line, if one did."""
        await self._run.close()


class _GuestRun:
    """The trio guest run: its main task holds the line; each call is a system task."""

    def __init__(self, open_line_call: Callable[[], Any]) -> None:
        self._open_line_call = open_line_call
        self._loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._failure: BaseException | None = None
        """What ended the run with an error (open_line's, or the line's store failing)."""
        self._line: Line | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._closing: trio.Event | None = None

    @property
    def line(self) -> Line:
        assert self._line is not None
        return self._line

    async def start(self) -> None:
        trio.lowlevel.start_guest_run(
            self._trio_main,
            run_sync_soon_threadsafe=self._loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=self._loop.call_soon,
            done_callback=self._finished,
            # asyncio owns the signal wakeup fd (and SIGINT) on the main thread.
            host_uses_signal_set_wakeup_fd=True,
        )
        await self._opened  # resolved by the main task, or by the run's end if open_line failed
        if self._line is None:
            self._raise_failure()  # open_line's error
            raise LineClosed("the line ended before it opened")

    def _finished(self, result: outcome.Outcome[None]) -> None:
        # Called on the loop's thread through call_soon_threadsafe.
        if isinstance(result, outcome.Error):
            self._failure = result.error
        if not self._done.done():
            self._done.set_result(None)
        if not self._opened.done():
            self._opened.set_result(None)

    async def _trio_main(self) -> None:
        self._closing = trio.Event()
        async with self._open_line_call() as line:
            self._line = line
            self._token = trio.lowlevel.current_trio_token()
            self._opened.set_result(None)
            await self._closing.wait()

    async def call(self, function: Callable[[], Awaitable[T]]) -> T:
        token = self._token
        if self._done.done() or token is None:
            self._raise_ended()
        result: asyncio.Future[T] = self._loop.create_future()
        scope = trio.CancelScope()

        async def in_trio() -> None:
            with scope:
                try:
                    value = await function()
                except trio.Cancelled:
                    if not result.done():
                        result.set_exception(LineClosed("the line is closed"))
                    raise
                except Exception as exc:  # to the caller; KeyboardInterrupt stays trio's
                    if not result.done():
                        result.set_exception(exc)
                    return
                if not result.done():
                    result.set_result(value)
            if not result.done():  # our own scope was cancelled: the asyncio caller left
                result.cancel()

        def spawn() -> None:
            # A system task, as trio.from_thread.run uses: not in the line's body, so that
            # when the line stops (its store failed) a call sees the line's own error, as
            # it would on the trio line, rather than a cancellation. Calls left when the
            # run ends are cancelled, and raise LineClosed.
            trio.lowlevel.spawn_system_task(in_trio)

        try:
            token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            self._raise_ended()
        try:
            return await result
        except asyncio.CancelledError:
            # The asyncio caller gave up (a timeout, a cancelled task): end the trio call too.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
            raise

    def _raise_ended(self) -> NoReturn:
        if self._failure is not None:
            raise self._failure
        raise LineClosed("the line is closed")

    def _raise_failure(self) -> None:
        """Raise the run's error once: to the close, or to the open that it failed."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def close(self) -> None:
        if self._token is not None and self._closing is not None and not self._done.done():
            closing = self._closing
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(closing.set)
        await asyncio.shield(self._done)
        self._raise_failure()


class _AsyncioLineContext:
    def __init__(self, run: _GuestRun) -> None:
        self._run = run

    async def __aenter__(self) -> AsyncioLine:
        await self._run.start()
        return AsyncioLine(self._run)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._run.close()
        except BaseException:
            if exc is None:
                raise


def open_asyncio_line(
    identity: Identity,
    peer: PublicKey,
    *,
    store: Store | str | os.PathLike[str],
    listen: tuple[str, int] | None = None,
    connect: tuple[str, int] | None = None,
    config: Config | None = None,
    durability: str = "FULL",
    auto_ack: bool = True,
) -> _AsyncioLineContext:
    """``async with open_asyncio_line(...) as line:`` in a running asyncio loop.

    The arguments are :func:`~hotline.open_line`'s (``connect`` a ``(host, port)`` only).
    The block starts once the line is open; ``open_line``'s errors come out of the
    ``async with``. One trio guest run per line; several lines may run side by side.
    """
    from .driver import open_line

    def open_line_call() -> Any:
        return open_line(identity, peer, store=store, listen=listen, connect=connect,
                         config=config, durability=durability, auto_ack=auto_ack)

    return _AsyncioLineContext(_GuestRun(open_line_call))
