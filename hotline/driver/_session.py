"""A session: one authenticated connection while it is (about to be) the line's live one.

The session is the only caller of its :class:`~hotline.Connection`. A responder writes its
answer to the handshake before anything else starts; then the session runs three tasks: a
writer, which is also the timer while it is idle (it waits for a kick or the core's next
deadline, whichever comes first); a reader (bytes -> core -> events, each handed on through a
dispatch table); and a backup timer, which runs the core's timers only while a write is in
progress (a peer that stops reading must still be declared suspect and down on time). What
the committer has stored comes in through :meth:`Session.transmit`.

Who writes. Waking the writer costs a scheduling round, and trio's ``send_all`` another once
the bytes are out: on the latency path (one message in flight) two rounds at each end for
every message. So over a socket (a ``trio.SocketStream``) output goes out with one
non-blocking write where it is made: the committer or the reader writes it while the writer
is idle (nothing of ours is being written then, so the order holds), and the writer tries
the same before it awaits. What the socket does not take is the writer's to finish, before
anything newer; any other stream is written by the writer alone, kicked by the others. So an
idle line wakes its writer once a heartbeat to write the ping and its reader once to read the
peer's, and nothing else.

Output owed to the peer is bounded: the core holds back receipts, pings and messages while
earlier output is unwritten, the writer writes in pieces, and a peer that takes no piece and
sends no new receipt for ``down_after`` seconds loses the connection (its own traffic keeps
it from looking silent, so this is what ends a peer that sends but never reads).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import trio

from .._config import Config
from .._errors import (
    AuthenticationError,
    ConnectionBrokenError,
    ConnectionClosedError,
    LineBroken,
    LineClosed,
    RemoteProtocolError,
)
from ..protocol import (
    NEED_DATA,
    REPLACED,
    Connection,
    ConnectionBroken,
    ConnectionState,
    LineState,
    Liveness,
    LivenessChanged,
    MessageReceived,
    PathGroup,
    PeerClosed,
    Receipt,
    ReceiptKind,
    ReceiptReceived,
    Role,
    RoundTrip,
    SignatureBatch,
    SignaturesToCheck,
)
from ..store import Batch
from ._events import LineEvent, Stats
from ._inbox import Inbox
from ._outbox import Outbox

__all__ = ["CLOSE_TIMEOUT", "Session", "line_errors"]

logger = logging.getLogger("hotline")

READ_SIZE = 65536
#: The writer writes at most this much at a time: each piece written is progress, and a peer
#: that takes no piece and sends no new receipt for ``down_after`` seconds is not reading
#: (see _write()).
WRITE_PIECE = 65536
#: How long a closing line waits to flush its goodbye and its last commit.
CLOSE_TIMEOUT = 2.0


@contextlib.contextmanager
def line_errors() -> Iterator[None]:
    """Raise the core's words for a closed or broken connection as the line's.

    The core raises :class:`ConnectionClosedError` / :class:`ConnectionBrokenError`; a caller
    of the driver sees :class:`LineClosed` / :class:`LineBroken`. (A core that still raises
    the line's words passes them through.)
    """
    try:
        yield
    except ConnectionClosedError as exc:
        raise LineClosed(str(exc)) from exc
    except ConnectionBrokenError as exc:
        raise LineBroken(str(exc)) from exc


class Session:
    """One transport connection and its three tasks."""

    _ids = itertools.count(1)

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        *,
        config: Config,
        inbox: Inbox,
        outbox: Outbox,
        notify: Callable[[LineEvent], None],
        set_liveness: Callable[[Liveness, str], None],
        stats: Stats,
    ) -> None:
        self.id = next(self._ids)
        self.stream = stream
        self.conn = conn
        self._config = config
        self._inbox = inbox
        self._outbox = outbox
        self._notify = notify
        self._set_liveness = set_liveness
        self._stats = stats
        self.wake = trio.Event()
        self.scope = trio.CancelScope()
        self.alarm = trio.CancelScope()  # The idle writer's wait, until the core's next deadline.
        # The backup timer's sleep: runs only while a write is in progress (see _write()).
        self.backup = trio.CancelScope()
        self._backup_deadline = math.inf
        self.in_write = False
        self.writer_idle = False  # The writer waits in _idle(): output may be written directly.
        # What a direct write (_write_now()) left for the writer.
        self._unwritten: bytes | memoryview = b""
        # Output may be written without awaiting (_write_direct()): a TCP socket, whose
        # descriptor takes os.write() (not on Windows).
        self._direct = type(stream) is trio.SocketStream and sys.platform != "win32"
        # When the write in progress has taken too long, unless a receipt puts it off.
        self._write_deadline = math.inf
        self.end_reason = ""
        self.started = False
        self.replaced_by_peer = False
        # A write was cut short (it stalled, or the session ended during it): the stream may
        # end in part of a frame, and nothing more may follow it.
        self.write_cut_short = False
        # The writer's scope, cancelled by the backup timer when a write stalls.
        self.writing = trio.CancelScope()
        # What each event of the core means here (others mean nothing to a started
        # session); a handler returns True when the connection has ended.
        self._handlers: dict[type[Any], Callable[[Any], bool]] = {
            MessageReceived: self._on_message,
            ReceiptReceived: self._on_receipt,
            RoundTrip: self._on_round_trip,
            LivenessChanged: self._on_liveness,
            PeerClosed: self._on_goodbye,
            ConnectionBroken: self._on_broken,
        }

    @property
    def initiated_by_us(self) -> bool:
        return self.conn.role is Role.INITIATOR

    @property
    def peer_up(self) -> bool:
        return self.conn.liveness is Liveness.UP

    @property
    def rtt(self) -> float | None:
        return self.conn.rtt

    @property
    def smoothed_rtt(self) -> float | None:
        return self.conn.smoothed_rtt

    def start(self, state: LineState, paths: PathGroup | None = None) -> None:
        """Start the transport phase from the line's ``state`` (which the connection resends
        from), or as a standby in ``paths`` (a line with several paths). Raises
        :class:`AuthenticationError` for an initiation older than the state's."""
        self.conn.start(state, trio.current_time(), config=self._config, paths=paths)
        # Checking a burst in a thread records its messages as received before their
        # signatures are checked: with marks shared by several paths, a bad signature would
        # leave the other paths believing them received. A line with several paths checks
        # every signature at once.
        if self._config.signature_batch and paths is None:
            self.conn.check_signatures_in_batches(self._config.signature_batch)
        self.started = True

    @property
    def live(self) -> bool:
        """Started, and its connection still open: what the line transmits on.

        A session whose connection has closed (a goodbye arrived) stays the line's until its
        tasks finish; whatever it cannot carry any more, the next session's start() resends.
        """
        return self.started and self.conn.state is ConnectionState.OPEN

    def kick(self) -> None:
        self.wake.set()

    def end(self, reason: str) -> None:
        """End the session now (whatever is unwritten is attempted once more, briefly)."""
        if not self.end_reason:
            self.end_reason = reason
        self.scope.cancel()

    def close(self, reason: str) -> None:
        """Say goodbye: the writer flushes it and then ends the session."""
        if not self.end_reason:
            self.end_reason = reason
        self.conn.close(reason)
        self.kick()
        # A peer that reads nothing must not hold the goodbye (and us) forever.
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + CLOSE_TIMEOUT / 2)

    async def run(self) -> None:
        with self.scope:
            # A responder's first output carries its answer to the handshake, which the
            # initiator waits for: it goes out now, not a scheduling round later from the
            # writer. An initiator's is only its opening ping (see _writer()).
            if not self.initiated_by_us and not await self._write_opening():
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._backup_timer)

    # --- out: what the committer stored, to the writer, to the stream --------------------

    def transmit(self, batch: Batch, acknowledged: Receipt | None) -> None:
        """Send what ``batch`` made durable: our messages, our newest acknowledgement, and
        the delivered receipt for the peer's messages (the batch's last receipt)."""
        conn = self.conn
        for message in batch.sent:
            conn.send_message(message)
        for receipt in batch.own_receipts:
            if receipt.kind is ReceiptKind.ACKNOWLEDGED and receipt is acknowledged:
                conn.send_receipt(receipt)
        if batch.received:
            conn.send_receipt(batch.own_receipts[-1])
        self._write_now()

    def _write_now(self) -> None:
        """Write the core's output from the calling task while the writer is idle; else kick
        the writer (the module's "Who writes" says why). What the socket does not take waits
        for the writer, which writes it before anything newer."""
        if not (self.writer_idle and self._direct):
            self.kick()
            return
        conn = self.conn
        # The core counts what it returned last as being written until it is asked again.
        while data := conn.data_to_send():
            written = self._write_direct(data)
            if written < len(data):
                self._unwritten = memoryview(data)[written:]
                self.kick()
                return
        self._rearm()
        if conn.state is not ConnectionState.OPEN:
            self.kick()

    def _write_direct(self, data: bytes | memoryview) -> int:
        """Write what a TCP socket takes of ``data`` without blocking; the bytes written.

        An error writes nothing: the writer's ``send_all`` meets it again and raises it as
        trio's.
        """
        fd = self.stream.socket.fileno()  # type: ignore[attr-defined]
        if fd < 0:
            return 0  # Closed: send_all says so.
        try:
            written = os.write(fd, data)
        except OSError:
            return 0
        self._stats.bytes_sent += written
        return written

    async def _write_opening(self) -> bool:
        """Write what :meth:`start` produced (a responder's answer to the handshake and its
        opening ping) before the tasks start; returns whether the session goes on.

        The stream is fresh, so a few hundred bytes do not block; the writer's bound on a
        write applies all the same.
        """
        data: bytes | memoryview = self.conn.data_to_send()
        if data and self._direct:
            data = memoryview(data)[self._write_direct(data):]
        if not data:
            return True
        finished = False
        try:
            with trio.move_on_after(self._config.down_after) as scope:
                await self.stream.send_all(data)
                self._stats.bytes_sent += len(data)
                finished = True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.end(f"the connection failed: {exc!r}")
            return False
        finally:
            self.write_cut_short = not finished
        if scope.cancelled_caught:
            self._stall()
            return False
        return True

    async def _writer(self) -> None:
        conn = self.conn
        if self.initiated_by_us:
            # Our opening ping waits one round, so that the tasks UP has just woken (an
            # application waiting to send) run first: a write to a peer on this machine can
            # hand the peer's process our CPU in the middle of the call.
            await trio.lowlevel.checkpoint()
        # One scope for the writer's life, which only the backup timer cancels (when a write
        # stalls): a write arms one deadline, the backup timer's, not a scope of its own.
        with self.writing:
            try:
                while True:
                    self.wake = trio.Event()
                    # Asked again only once the last output is written: the core holds back
                    # what it owes the peer until then (see Connection.data_to_send).
                    data = self._unwritten
                    if data:
                        self._unwritten = b""
                    else:
                        data = conn.data_to_send()
                    if data:
                        await self._write(data)
                        continue
                    if conn.state is ConnectionState.CLOSED:
                        self.end(self.end_reason or "closed")
                        return
                    await self._idle()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.end(f"the connection failed: {exc!r}")
                return
        if self.writing.cancelled_caught:
            self._stall()

    def _stall(self) -> None:
        """End the session on a write that did not go out within ``down_after``."""
        self.write_cut_short = True
        self.end(f"the peer read nothing for {self._config.down_after:.3f} s")

    async def _idle(self) -> None:
        """Wait until kicked or until the core's next deadline, and then run its timers.

        The writer is also the session's timer: what a timer mostly produces is a ping to
        write, so an idle line wakes one task per heartbeat, not a timer task that then
        wakes the writer. The reader moves the deadline when input moves it (:meth:`_rearm`).
        """
        conn = self.conn
        deadline = conn.next_deadline()
        # Under a scope even without a deadline: a direct write may bring one (_rearm()).
        self.writer_idle = True
        try:
            with trio.CancelScope(
                deadline=math.inf if deadline is None else deadline
            ) as self.alarm:
                await self.wake.wait()
        finally:
            self.writer_idle = False
        if self.alarm.cancelled_caught or trio.current_time() >= self.alarm.deadline:
            self._tick()

    def _tick(self) -> None:
        """Run the core's timers that are due now, and what they produce."""
        conn = self.conn
        conn.advance(trio.current_time())
        while (batch := self._process()) is not None:
            # Frames are buffered only while the reader checks a batch, so this is rare and
            # small: check it here.
            batch.run()
            conn.signatures_checked(batch)

    async def _write(self, data: bytes | memoryview) -> None:
        """Write ``data`` in pieces, each with ``down_after`` to go out: when one does not
        and no new receipt shows that the peer reads, the writer's scope is cancelled.

        Meanwhile the writer cannot run the core's timers: the backup timer does, so that a
        peer that stops reading is still declared suspect and down on time.
        """
        if self._direct:
            # Mostly the socket takes it all, and the write costs no scheduling round.
            written = self._write_direct(data)
            if written == len(data):
                return
            data = memoryview(data)[written:]
        patience = self._config.down_after
        self._write_deadline = trio.current_time() + patience
        deadline = self.conn.next_deadline()
        if deadline is None or deadline > self._write_deadline:
            deadline = self._write_deadline
        self._backup_deadline = self.backup.deadline = deadline
        self.in_write = True
        finished = False
        try:
            if len(data) <= WRITE_PIECE:
                await self.stream.send_all(data)
                self._stats.bytes_sent += len(data)
            else:
                view = memoryview(data)
                for start in range(0, len(view), WRITE_PIECE):
                    # The backup timer finds the later deadline when it wakes at the earlier.
                    self._write_deadline = trio.current_time() + patience
                    piece = view[start : start + WRITE_PIECE]
                    await self.stream.send_all(piece)
                    self._stats.bytes_sent += len(piece)
            finished = True
        finally:
            # Cancelled or failed part way, send_all leaves unknown how much went out.
            self.write_cut_short = self.write_cut_short or not finished
            self.in_write = False
            self._write_deadline = math.inf
            self._backup_deadline = self.backup.deadline = math.inf

    async def _backup_timer(self) -> None:
        """Run the core's timers while the writer is busy writing (an idle writer runs them
        itself, see :meth:`_idle`), and end a write that stalls: armed by :meth:`_write` for
        the duration of a write, by the earlier of the core's next deadline and the write's.
        """
        while True:
            with trio.CancelScope(deadline=self._backup_deadline) as self.backup:
                await trio.sleep_forever()
            self._backup_deadline = math.inf
            if not self.in_write:
                continue  # The write ended in the same instant.
            if trio.current_time() >= self._write_deadline:
                self.writing.cancel()
                continue
            # Run the timers, and stay armed for the next deadline while the write goes on
            # (a receipt may have put off the write's own, which is then the next).
            self._tick()
            deadline = self.conn.next_deadline()
            if deadline is None or deadline > self._write_deadline:
                deadline = self._write_deadline
            self._backup_deadline = deadline

    # --- in: from the stream, through the core, to the inbox and the outbox --------------

    async def _reader(self) -> None:
        conn = self.conn
        try:
            # Frames that arrived with the handshake are already buffered in the core.
            await self._process_checking_signatures()
            while True:
                if self._inbox.full():
                    # Stop reading until the application catches up (TCP pushes back on the
                    # peer); the silence that follows is ours, not the peer's.
                    conn.hold()
                    await self._inbox.wait_for_room()
                    conn.release(trio.current_time())
                data = await self.stream.receive_some(READ_SIZE)
                self._stats.bytes_received += len(data)
                conn.receive_data(data, trio.current_time())
                await self._process_checking_signatures()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.end(f"the connection failed: {exc!r}")

    async def _process_checking_signatures(self) -> None:
        """Drain the core's events, checking bursts of signatures on a second core.

        Checking is most of the cost of receiving and pynacl releases the GIL, so a burst
        checked in a worker thread overlaps with everything else this process does. The
        thread is not abandoned on cancellation: a batch takes milliseconds.
        """
        while (batch := self._process()) is not None:
            await trio.to_thread.run_sync(batch.run)
            self.conn.signatures_checked(batch)
        # Input moves the idle writer's deadline; after a timer tick the writer asks the
        # core again anyway before it waits.
        self._rearm()

    def _process(self) -> SignatureBatch | None:
        """Drain the core's events. Ends the session on a terminal event or a peer fault.

        Returns a batch of signatures the core waits for, which the caller must check.
        """
        conn = self.conn
        handlers = self._handlers
        # Runs for every read and every timer tick: the core's closed/broken errors are caught
        # here directly rather than through line_errors(), a context manager per call being a
        # measurable part of what an idle line costs.
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, SignaturesToCheck):
                    return event.batch
                handler = handlers.get(type(event))
                if handler is not None and handler(event):
                    break
        except AuthenticationError as exc:
            logger.warning("session %d: authentication failed: %s", self.id, exc.reason)
            self.end(f"authentication failed ({exc.reason})")
        except RemoteProtocolError as exc:
            logger.warning("session %d: protocol error from the peer: %s", self.id, exc)
            self.end(f"protocol error: {exc}")
        except (ConnectionClosedError, ConnectionBrokenError) as exc:
            self.end(str(exc))
        # The writer needs waking only for output: a ping from the peer mostly brings none.
        if conn.has_output or conn.state is not ConnectionState.OPEN:
            self._write_now()
        return None

    def _on_message(self, event: MessageReceived) -> bool:
        self._inbox.queue(event.message)
        return False

    def _on_receipt(self, event: ReceiptReceived) -> bool:
        self._outbox.on_peer_receipt(event.receipt)
        # A new receipt proves the peer reads what we write: the piece being written may
        # take until then (a slow link drains a piece in bursts, not byte by byte). Only the
        # write's deadline moves: the backup timer finds it when it wakes, so a busy line
        # pays no trio deadline update per receipt.
        if self.in_write:
            self._write_deadline = max(
                self._write_deadline, trio.current_time() + self._config.down_after
            )
        return False

    def _on_round_trip(self, event: RoundTrip) -> bool:
        self._notify(event)
        return False

    def _on_liveness(self, event: LivenessChanged) -> bool:
        self._set_liveness(event.state, f"silent for {event.silent_for:.3f} s")
        return False

    def _on_goodbye(self, event: PeerClosed) -> bool:
        self.replaced_by_peer = event.reason == REPLACED
        self.end(f"the peer said goodbye: {event.reason}")
        return True

    def _on_broken(self, event: ConnectionBroken) -> bool:
        self.end(event.reason)
        return True

    # --- time ----------------------------------------------------------------------------

    def _rearm(self) -> None:
        """Wake the idle writer by the core's next deadline, which input moves: closer (a
        peer that asks for a shorter heartbeat interval) or later (what we hear from the
        peer puts off suspecting it).

        Moving a trio deadline costs a heap entry; a wake-up at a deadline that had moved
        later costs a task step and a pass through the core, many times more.
        """
        deadline = self.conn.next_deadline()
        if deadline is not None and deadline != self.alarm.deadline:
            self.alarm.deadline = deadline

    # --- the end -------------------------------------------------------------------------

    async def finish(self) -> None:
        """Flush what is unwritten (briefly) and close the stream."""
        with trio.CancelScope(shield=True):
            # After a write cut short, more bytes would only arrive as a broken frame.
            if self.started and not self.write_cut_short:
                with trio.move_on_after(CLOSE_TIMEOUT / 2):
                    # What a direct write left, if the session ended before the writer took
                    # it, comes first: the rest of a frame the peer has begun to read.
                    data = bytes(self._unwritten) + self.conn.data_to_send()
                    self._unwritten = b""
                    if data:
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError, OSError
                        ):
                            await self.stream.send_all(data)
                            self._stats.bytes_sent += len(data)
            await trio.aclose_forcefully(self.stream)
