"""A line for plain synchronous code: the trio line runs in a thread of its own.

Theory of operation
-------------------
:func:`open_blocking_line` starts one thread that runs ``trio.run``; inside it,
:func:`~hotline.open_line` opens the line exactly as a trio program would, and the run then
waits for the close. The caller's thread never touches the line's objects directly: every
call (``send``, ``receive``, the properties) crosses into the trio thread with
``trio.from_thread.run`` / ``run_sync`` and the run's token, and blocks until it returns.
So the line keeps its one-loop rules (one committer, one session) whatever the caller's
threads do, and several of them may call at once (``receive`` stays one caller at a time,
as on the trio line).

Timeouts are trio's ``fail_after`` around the call inside the trio thread, raised to the
caller as the builtin :class:`TimeoutError`; a timed-out ``send`` that already has its number
keeps it (the trio line's rule: the message belongs to the line).

Errors: ``open_line``'s own (a port in use, another line's store) come out of
:func:`open_blocking_line`. If the line stops while open (its store failed), calls raise
that error, and so does the close, unless the ``with`` block is already leaving with an
exception of its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._errors import LineClosed

if TYPE_CHECKING:
    from ._config import Config
    from ._keys import Identity, PublicKey
    from .driver import Line, Message, Outgoing, Stats
    from .protocol import Liveness, Receipt
    from .store import Store

T = TypeVar("T")

__all__ = ["BlockingLine", "BlockingOutgoing", "open_blocking_line"]


class BlockingOutgoing:
    """A message this side sent (stored, or queued to be); wait for its receipts (each wait
    may time out)."""

    def __init__(self, line: BlockingLine, outgoing: Outgoing) -> None:
        self._line = line
        self._outgoing = outgoing
        self.message = outgoing.message
        self.seq: int = outgoing.seq

    def stored(self, timeout: float | None = None) -> None:
        """Return once this message is durable (at once for one :meth:`BlockingLine.send`
        returned); :class:`~hotline.LineClosed` if the line stopped before it was stored."""
        self._line._call(self._outgoing.stored, timeout)

    def delivered(self, timeout: float | None = None) -> Receipt:
        """The peer's signed receipt saying it holds this message (and all before it)."""
        return self._line._call(self._outgoing.delivered, timeout)

    def acknowledged(self, timeout: float | None = None) -> Receipt:
        """The peer's signed receipt saying its application processed this message."""
        return self._line._call(self._outgoing.acknowledged, timeout)

    def __repr__(self) -> str:
        return f"<BlockingOutgoing seq={self.seq}>"


class BlockingLine:
    """One end of a line, for synchronous code. Made by :func:`open_blocking_line`."""

    def __init__(self, line: Line, token: trio.lowlevel.TrioToken, run: _Run) -> None:
        self._line = line
        self._token = token
        self._run = run

    # --- crossing into the trio thread --------------------------------------------------

    def _call(self, function: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        async def bounded() -> T:
            if timeout is None:
                return await function()
            with trio.fail_after(timeout):
                return await function()

        try:
            return trio.from_thread.run(bounded, trio_token=self._token)
        except trio.TooSlowError:
            raise TimeoutError(f"no answer within {timeout} s") from None
        except trio.RunFinishedError:
            raise self._run.ended_error() from None

    def _read(self, function: Callable[[], T]) -> T:
        try:
            return trio.from_thread.run_sync(function, trio_token=self._token)
        except trio.RunFinishedError:
            raise self._run.ended_error() from None

    # --- the line -----------------------------------------------------------------------

    def send(
        self, body: bytes, *, ack_within: float | None = None, timeout: float | None = None
    ) -> BlockingOutgoing:
        """Sign and store ``body`` as the next message (waits while the outbox is full, then
        until it is stored, at most ``timeout`` seconds); the line sends it as soon as it can.
        ``ack_within``: as :meth:`hotline.Line.send`."""
        outgoing = self._call(lambda: self._line.send(body, ack_within=ack_within), timeout)
        return BlockingOutgoing(self, outgoing)

    def queue(
        self, body: bytes, *, ack_within: float | None = None, timeout: float | None = None
    ) -> BlockingOutgoing:
        """Give ``body`` its number and queue it without waiting for its commit (waits only
        while the outbox is full, at most ``timeout`` seconds), so that one producer's
        messages share commits: as :meth:`hotline.Line.queue`. Call
        :meth:`BlockingOutgoing.stored` for durability."""
        outgoing = self._call(lambda: self._line.queue(body, ack_within=ack_within), timeout)
        return BlockingOutgoing(self, outgoing)

    def receive(self, timeout: float | None = None) -> Message:
        """The peer's next message, in order, each once. :class:`TimeoutError` after
        ``timeout`` seconds without one; :class:`~hotline.LineClosed` once the line is closed.
        With ``auto_ack`` (the default) asking for the next message acknowledges this one;
        otherwise call :meth:`ack`."""
        return self._call(self._line.receive, timeout)

    def __iter__(self) -> Iterator[Message]:
        """Every message until the line closes (``for message in line:``)."""
        while True:
            try:
                yield self.receive()
            except LineClosed:
                return

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` and every one before it. Use this, not ``message.ack()``,
        which belongs to the trio thread."""
        self._read(message.ack)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every message queued and every acknowledgement made is stored."""
        self._call(self._line.flush, timeout)

    def wait_liveness(self, state: Liveness, timeout: float | None = None) -> None:
        """Return once the peer's liveness is ``state``."""
        self._call(lambda: self._line.wait_liveness(state), timeout)

    @property
    def liveness(self) -> Liveness:
        return self._read(lambda: self._line.liveness)

    @property
    def rtt(self) -> float | None:
        return self._read(lambda: self._line.rtt)

    @property
    def stats(self) -> Stats:
        return self._read(lambda: self._line.stats)

    @property
    def outbox_size(self) -> int:
        return self._read(lambda: self._line.outbox_size)

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        return self._read(lambda: list(self._line.listen_addresses))

    @property
    def identity(self) -> Identity:
        return self._line.identity

    @property
    def peer(self) -> PublicKey:
        return self._line.peer

    def close(self) -> None:
        """Say goodbye, store what is pending, end the thread; idempotent. Raises the error
        that stopped the line, if one did."""
        self._run.close()
        self._run.raise_failure()

    def __enter__(self) -> BlockingLine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._run.close()
        if exc is None:
            self._run.raise_failure()


class _Run:
    """The trio thread: opens the line, hands it over, waits for the close."""

    def __init__(self, open_line_call: Callable[[], Any]) -> None:
        self._open_line_call = open_line_call
        self._started = threading.Event()
        self._line: Line | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._closing: trio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="hotline-line",
                                        daemon=True)

    def start(self) -> tuple[Line, trio.lowlevel.TrioToken]:
        self._thread.start()
        self._started.wait()
        if self._line is None or self._token is None:
            self._thread.join()
            assert self._failure is not None
            raise self._failure
        return self._line, self._token

    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:  # handed to the caller's thread
            self._failure = exc
        finally:
            self._started.set()  # also when open_line failed before handing the line over

    async def _trio_main(self) -> None:
        self._closing = trio.Event()
        async with self._open_line_call() as line:
            self._line = line
            self._token = trio.lowlevel.current_trio_token()
            self._started.set()
            await self._closing.wait()

    def close(self) -> None:
        if self._thread.is_alive() and self._token is not None and self._closing is not None:
            # RunFinishedError: the line stopped by itself, and its error is in _failure.
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._closing.set, trio_token=self._token)
        self._thread.join()

    def ended_error(self) -> BaseException:
        # The run may be finishing still (trio already refuses calls): its error is known
        # only once trio.run has returned in the thread.
        self._thread.join()
        return self._failure if self._failure is not None else LineClosed("the line is closed")

    def raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure


def open_blocking_line(
    identity: Identity,
    peer: PublicKey,
    *,
    store: Store | str | os.PathLike[str],
    listen: tuple[str, int] | None = None,
    connect: tuple[str, int] | None = None,
    config: Config | None = None,
    durability: str = "FULL",
    auto_ack: bool = True,
) -> BlockingLine:
    """Open this node's end of the line in a thread of its own; use it as a context manager.

    The arguments are :func:`~hotline.open_line`'s (``connect`` a ``(host, port)`` only: a
    connector would be an async callable). Returns once the line is open; raises what
    ``open_line`` raises.
    """
    from .driver import open_line

    def open_line_call() -> Any:
        return open_line(identity, peer, store=store, listen=listen, connect=connect,
                         config=config, durability=durability, auto_ack=auto_ack)

    run = _Run(open_line_call)
    line, token = run.start()
    return BlockingLine(line, token, run)
