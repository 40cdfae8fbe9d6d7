"""The live line: a trio driver over the sans-io core and a store.

Theory of operation
-------------------
A :class:`Line` is one party's end of a line to one peer. It outlives connections: it owns
the :class:`~hotline.LineState` (loaded from the store when the line opens), the group-commit
task, the application's inbox and outbox, and at most one live *session* (a transport stream
plus a sans-io :class:`~hotline.Connection`). Dialers and listeners produce authenticated
connections and hand them to :meth:`Line._run_session`; the line decides which one lives.

Durability comes first, and one task writes. ``send()`` signs the next message at once (so
concurrent senders get consecutive numbers), puts it in the open :class:`~hotline.Batch`, and
waits until the committer has made that batch durable. Only then is the message added to the
line state and transmitted, so a message on the wire is always a message on disk: a crash never
makes us reuse a sequence number the peer has seen. Received messages go the same way: their
delivered receipt is signed into the same batch, the two are stored in one transaction, and
only then is the receipt sent and may the application see them.
Everything that arrives while a commit is in flight joins the next batch: one fsync per burst.
The peer's receipts alone do not start a commit: they wait up to 50 ms for one that stores
something else (a commit per receipt would make the next send() wait behind it).

A session runs three tasks: a reader (bytes -> core -> events), a timer (wakes the core at its
next deadline), and a writer (the only task that writes to the stream; others *kick* it).
When a session ends for any reason, the line marks the peer down and, if it dials, redials
with capped exponential backoff and jitter. When two sessions authenticate at once (both
sides dialled), both sides keep the one initiated by the party with the smaller public key;
a newer session from the same initiator replaces the older one (that side redialled because
it gave the old one up). A failed call is reported to watchers as :class:`~hotline.DialFailed`
(at once, then at most every 30 s while its reason stays the same), so that a wrong address
or a wrong key is not mere silence.

The reader stops reading while the application is ``inbox_window`` messages (or
``inbox_window_bytes`` of bodies) behind, and ``send()`` waits while ``outbox_limit``
messages (or bytes) have no delivered receipt, so memory stays bounded however slow the
application or however long the peer is away. Output owed to the peer is bounded too: the
core holds back receipts, pings and messages while earlier output is unwritten, and a peer
that reads nothing for ``down_after`` seconds loses the connection.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import trio

from .._config import Config, check_address
from .._errors import (
    AuthenticationError,
    HotlineError,
    LineBroken,
    LineClosed,
    LocalProtocolError,
    MessageTooLarge,
    OutboxFull,
    RemoteProtocolError,
    StoreError,
)
from .._events import DialFailed
from .._keys import Identity, PublicKey, line_id
from ..protocol import (
    NEED_DATA,
    Connection,
    ConnectionBroken,
    ConnectionState,
    LineState,
    Liveness,
    LivenessChanged,
    MessageReceived,
    PeerAuthenticated,
    PeerClosed,
    Receipt,
    ReceiptKind,
    ReceiptReceived,
    Role,
    RoundTrip,
    SignatureBatch,
    SignaturesToCheck,
    SignedMessage,
    sign_message,
    sign_receipt,
)
from ..store import Batch, Store

if TYPE_CHECKING:
    from ._listener import Listener

__all__ = ["Line", "Message", "Outgoing", "PeerState", "Stats", "open_line"]

logger = logging.getLogger("hotline")

_READ_SIZE = 65536
#: The writer writes at most this much at a time: each piece written is progress, and a peer
#: that takes no piece and sends no new receipt for ``down_after`` seconds is not reading
#: (see _write()).
_WRITE_PIECE = 65536
#: How long a closing line waits to flush its goodbye and its last commit.
_CLOSE_TIMEOUT = 2.0
_INBOX_PAGE = 256
_WATCH_BACKLOG = 10_000
#: How long the peer's receipts may wait for a commit that stores something else as well.
#: Committing each one at once costs a commit per receipt, which the next send() then waits
#: behind. Nothing depends on them being durable sooner: until they are, the messages they
#: cover stay in the stored outbox, and after a crash the next connection retransmits them
#: and the peer, dropping the duplicates, sends its latest delivered receipt again.
_PEER_RECEIPT_DELAY = 0.05
#: The goodbye reason of a connection given up for a newer one (see docs/protocol.md).
REPLACED = "replaced by a newer connection"
#: While calls keep failing for the same reason, DialFailed is reported at most this often
#: (seconds); the first failure and each new reason are reported at once. A caller retries
#: every few seconds for as long as the peer is away, which would bury every other event.
DIAL_REPORT_INTERVAL = 30.0
#: Why a handshake may get no answer: a responder answers nothing to an initiator it does not
#: know, to a key it cannot decrypt for, or beyond its rate limits (docs/security.md).
_NO_ANSWER_CAUSES = (
    "the peer may not know our key, we may have pinned the wrong key for it, "
    "or it is rate-limiting our calls"
)

_T = TypeVar("_T")
Address = tuple[str, int]
Connector = Callable[[], Awaitable[trio.abc.Stream]]


@dataclass(frozen=True, slots=True)
class Message:
    """A message from the peer, as the application sees it."""

    seq: int
    timestamp: int
    """The sender's clock when it queued the message: nanoseconds since the Unix epoch."""
    body: bytes
    hash: bytes
    _line: Line = field(repr=False, compare=False)

    @property
    def sent_at(self) -> datetime:
        """The sender's timestamp as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp / 1e9, tz=UTC)

    def ack(self) -> None:
        """Acknowledge this message and every one before it (persisted, then receipted)."""
        self._line._acknowledge(self.seq, self.hash)


class Outgoing:
    """A message this side queued durably; await its receipts."""

    def __init__(self, line: Line, message: SignedMessage) -> None:
        self._line = line
        self.message = message

    @property
    def seq(self) -> int:
        return self.message.seq

    async def delivered(self) -> Receipt:
        """The peer's signed receipt saying it holds this message (and all before it)."""
        return await self._line._wait_receipt(ReceiptKind.DELIVERED, self.seq)

    async def acknowledged(self) -> Receipt:
        """The peer's signed receipt saying its application processed this message."""
        return await self._line._wait_receipt(ReceiptKind.ACKNOWLEDGED, self.seq)

    def __repr__(self) -> str:
        return f"<Outgoing seq={self.seq}>"


@dataclass(frozen=True, slots=True)
class PeerState:
    """A change of the peer's liveness, as :meth:`Line.watch` reports it."""

    state: Liveness
    rtt: float | None
    reason: str = ""


@dataclass
class Stats:
    """Counters of one line since it was opened."""

    sent: int = 0
    received: int = 0
    retransmitted: int = 0
    reconnects: int = 0
    """Sessions started after the first."""
    sessions: int = 0
    rejected_connections: int = 0


LineEvent = PeerState | ReceiptReceived | RoundTrip | DialFailed


class _Commit:
    """Set once, when a batch is durable (or will never be).

    A sender waits for its batch without a cancel scope of its own: a shielded scope per
    send() costs more than the rest of the call's bookkeeping, and the wait must not be
    cancelled anyway (the message is part of the chain once signed). Other waiters (flush,
    close) stay cancellable.
    """

    __slots__ = ("_done", "_tasks")

    def __init__(self) -> None:
        self._done = False
        self._tasks: list[trio.lowlevel.Task] = []

    def set(self) -> None:
        if self._done:
            return
        self._done = True
        for task in self._tasks:
            trio.lowlevel.reschedule(task)
        self._tasks.clear()

    async def wait_uncancellable(self) -> None:
        if self._done:
            return
        self._tasks.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    async def wait(self) -> None:
        if self._done:
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        self._tasks.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._tasks.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class _Session:
    """One transport connection while it is (about to be) the line's live one."""

    _ids = itertools.count(1)

    def __init__(self, stream: trio.abc.Stream, conn: Connection) -> None:
        self.id = next(self._ids)
        self.stream = stream
        self.conn = conn
        self.wake = trio.Event()
        self.scope = trio.CancelScope()
        self.alarm = trio.CancelScope()  # The timer's sleep, until the core's next deadline.
        self.end_reason = ""
        self.started = False
        self.replaced_by_peer = False
        self.stalled = False  # The writer gave up part way through a write.
        self.writing = trio.CancelScope()  # The writer's current piece, with its deadline.

    @property
    def initiated_by_us(self) -> bool:
        return self.conn.role is Role.INITIATOR

    def kick(self) -> None:
        self.wake.set()

    def peer_reads(self, deadline: float) -> None:
        """A new receipt proves the peer reads what we write: the piece being written may
        take until ``deadline`` (a slow link drains a piece in bursts, not byte by byte)."""
        self.writing.deadline = max(self.writing.deadline, deadline)

    def rearm(self) -> None:
        """Wake the timer by the core's next deadline, which input may have brought closer
        (a peer that asks for a shorter heartbeat interval).

        Only ever earlier: a deadline that moved later costs the timer one early wake-up,
        cheaper than moving trio's deadline on every read.
        """
        deadline = self.conn.next_deadline()
        if deadline is not None and deadline < self.alarm.deadline:
            self.alarm.deadline = deadline

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
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + _CLOSE_TIMEOUT / 2)


class Line:
    """One end of a line to one peer. Open it with :func:`open_line`."""

    def __init__(
        self,
        identity: Identity,
        peer: PublicKey,
        store: Store,
        *,
        config: Config | None = None,
        auto_ack: bool = True,
        rng: random.Random | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if identity.public_key == peer:
            raise LocalProtocolError("a line needs two different keys")
        self.identity = identity
        self.peer = peer
        self.config = config or Config()
        self.auto_ack = auto_ack
        self.line_id = line_id(identity.public_key, peer)
        self.stats = Stats()
        self._store = store
        self._store_lock = trio.Lock()
        self._rng = rng or random.Random()
        # The wall clock, in nanoseconds since the epoch, for the timestamps we sign (trio's
        # clock is for deadlines only): passed in so that tests can fix it.
        self._clock = clock
        self._state = LineState()
        self._liveness = Liveness.CONNECTING
        self._active: _Session | None = None
        self._closed = False
        self._failure: BaseException | None = None
        # Group commit.
        self._batch = Batch()
        self._batch_done = _Commit()
        self._commit_wanted = trio.Event()
        self._commit_alarm = trio.CancelScope()  # The committer's wait, until receipts are due.
        self._receipts_due: float | None = None
        self._inflight: _Commit | None = None
        self._nursery: trio.Nursery | None = None
        self._committer_alive = True
        # Outbound.
        self._next_seq = 1
        self._next_head = b""
        self._sizes: deque[tuple[int, int]] = deque()
        self._outbox_bytes = 0
        self._outbox_space = trio.Event()
        self._transmitted_high = 0
        self._peer_receipts: dict[ReceiptKind, Receipt] = {}
        self._waiters: dict[ReceiptKind, list[tuple[int, int, trio.Event]]] = {
            ReceiptKind.DELIVERED: [],
            ReceiptKind.ACKNOWLEDGED: [],
        }
        self._waiter_ids = itertools.count()
        # Inbound.
        self._highest_queued_in = 0
        # Received messages the application has not taken yet, as it will see them: the body
        # alone, not the envelope that also contains it (the store keeps the envelope).
        self._cache: dict[int, Message] = {}
        self._cache_bytes = 0  # The bodies in _cache: the inbox's byte window.
        self._yield_next = 1
        self._last_yielded: Message | None = None
        self._inbox_changed = trio.Event()
        self._inbox_consumed = trio.Event()
        self._receiving = False
        self._ack_target: tuple[int, bytes] | None = None
        # Observers.
        self._watchers: list[tuple[deque[LineEvent], list[trio.Event]]] = []
        self._no_session = trio.Event()
        self._no_session.set()
        self.listen_addresses: list[Address] = []

    # --- opening and closing ----------------------------------------------------------

    async def _load(self) -> None:
        state = await self._store_call(self._store.load, self.identity.public_key, self.peer)
        self._state = state
        self._next_seq = state.sent_seq + 1
        self._next_head = state.sent_head
        for message in state.pending:
            self._sizes.append((message.seq, len(message.body)))
            self._outbox_bytes += len(message.body)
        self._highest_queued_in = state.received_seq
        self._yield_next = state.acknowledged_upto + 1
        if state.received_seq > state.delivered_upto:
            # Messages stored without their delivered receipt (this driver commits both at
            # once; a store written otherwise may differ): sign it now.
            self._queue_delivered_receipt()
        logger.debug(
            "line %s loaded: sent %d (peer holds %d), received %d (acknowledged %d)",
            self.line_id.hex()[:16], state.sent_seq, state.peer_delivered,
            state.received_seq, state.acknowledged_upto,
        )

    async def aclose(self) -> None:
        """Say goodbye to the peer, flush what is pending, and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            if self._failure is None:
                await self._flush_commits()
            session = self._active
            if session is not None:
                session.close("the line was closed")
                await self._no_session.wait()
        self._wake_everyone()

    def _wake_everyone(self) -> None:
        for waiters in self._waiters.values():
            for _, _, event in waiters:
                event.set()
            waiters.clear()
        self._inbox_changed.set()
        self._outbox_space.set()
        self._batch_done.set()
        for _, events in self._watchers:
            for event in events:
                event.set()

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise StoreError(f"the line's store failed: {self._failure}") from self._failure
        if self._closed:
            raise LineClosed("the line is closed")

    # --- public state ------------------------------------------------------------------

    @property
    def liveness(self) -> Liveness:
        """What this side believes about the peer: connecting, up, suspect or down."""
        return self._liveness

    @property
    def rtt(self) -> float | None:
        """The last measured round-trip time in seconds (None until a ping of the peer's
        echoes one of ours)."""
        return self._active.conn.rtt if self._active is not None else None

    @property
    def smoothed_rtt(self) -> float | None:
        return self._active.conn.smoothed_rtt if self._active is not None else None

    @property
    def outbox_size(self) -> int:
        """Our messages queued without a delivered receipt."""
        return self._next_seq - 1 - self._state.peer_delivered

    @property
    def state(self) -> LineState:
        """The line's resumable state (read it; do not change it)."""
        return self._state

    async def wait_liveness(self, state: Liveness) -> None:
        """Return once the peer's liveness is ``state``."""
        async for change in self.watch():
            if self._liveness is state:
                return
            del change

    async def watch(self) -> AsyncIterator[LineEvent]:
        """Every change of liveness, every new receipt from the peer, every round trip, and
        failed calls to the peer (:class:`~hotline.DialFailed`, rate-limited).

        Events are queued per watcher (the oldest are dropped past 10,000), so a watcher
        that reads slowly still sees every transition in order.
        """
        queue: deque[LineEvent] = deque(maxlen=_WATCH_BACKLOG)
        events: list[trio.Event] = [trio.Event()]
        entry = (queue, events)
        self._watchers.append(entry)
        try:
            yield PeerState(self._liveness, self.rtt)
            while not self._closed or queue:
                if not queue:
                    await events[0].wait()
                    events[0] = trio.Event()
                    continue
                yield queue.popleft()
        finally:
            self._watchers.remove(entry)

    def _notify(self, event: LineEvent) -> None:
        for queue, events in self._watchers:
            queue.append(event)
            events[0].set()

    def _set_liveness(self, state: Liveness, reason: str = "") -> None:
        if state is self._liveness:
            return
        self._liveness = state
        logger.info("peer %s is %s%s", self.peer.fingerprint(), state.value,
                    f" ({reason})" if reason else "")
        self._notify(PeerState(state, self.rtt, reason))

    # --- sending -----------------------------------------------------------------------

    async def send(self, body: bytes, *, wait: bool = True) -> Outgoing:
        """Queue ``body`` durably and return once it is stored, with its sequence number.

        Waits while the outbox is full, or raises :class:`OutboxFull` if ``wait`` is false.
        Once this call has assigned the message its sequence number, the message belongs to
        the line: cancelling the call then does not unsend it (it is stored and delivered).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_usable()
        if not isinstance(body, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"a body is bytes, not {type(body).__name__}")
        body = bytes(body)
        if len(body) > self.config.max_body_size:
            raise MessageTooLarge(
                f"body of {len(body)} bytes is over the limit of {self.config.max_body_size}"
            )
        while self._outbox_full(len(body)):
            if not wait:
                raise OutboxFull(
                    f"{self.outbox_size} messages ({self._outbox_bytes} bytes) await receipts"
                )
            self._outbox_space = trio.Event() if self._outbox_space.is_set() else (
                self._outbox_space
            )
            await self._outbox_space.wait()
            self._check_usable()
        message = sign_message(
            self.identity, self.line_id, self._next_seq, self._clock(), self._next_head, body
        )
        self._next_seq += 1
        self._next_head = message.hash
        self._sizes.append((message.seq, len(body)))
        self._outbox_bytes += len(body)
        self._batch.sent.append(message)
        done = self._batch_done
        self._commit_wanted.set()
        self.stats.sent += 1
        # The message is already part of the chain: its commit finishes, cancelled or not.
        await done.wait_uncancellable()
        if message.seq <= self._state.sent_seq:
            # Stored (and so it will be delivered): report it, even to a caller whose scope
            # was cancelled meanwhile, who must not think it unsent and send it again.
            return Outgoing(self, message)
        # Not stored: the line stopped first. Cancelled if that is why, else say how.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_usable()
        raise LineClosed("the line closed before the message was stored")

    def _outbox_full(self, size: int) -> bool:
        return self.outbox_size >= self.config.outbox_limit or (
            self.outbox_size > 0 and self._outbox_bytes + size > self.config.outbox_limit_bytes
        )

    async def _wait_receipt(self, kind: ReceiptKind, seq: int) -> Receipt:
        while True:
            receipt = self._peer_receipts.get(kind)
            if receipt is not None and receipt.upto >= seq:
                return receipt
            self._check_usable()
            event = trio.Event()
            heapq.heappush(self._waiters[kind], (seq, next(self._waiter_ids), event))
            await event.wait()

    def _on_peer_receipt(self, receipt: Receipt) -> None:
        self._peer_receipts[receipt.kind] = receipt
        self._batch.peer_receipts.append(receipt)
        if self._receipts_due is None:
            self._receipts_due = trio.current_time() + _PEER_RECEIPT_DELAY
            self._commit_alarm.deadline = self._receipts_due
        waiters = self._waiters[receipt.kind]
        while waiters and waiters[0][0] <= receipt.upto:
            heapq.heappop(waiters)[2].set()
        if receipt.kind is ReceiptKind.DELIVERED:
            while self._sizes and self._sizes[0][0] <= receipt.upto:
                self._outbox_bytes -= self._sizes.popleft()[1]
            self._outbox_space.set()
        self._notify(ReceiptReceived(receipt))

    # --- receiving ---------------------------------------------------------------------

    def __aiter__(self) -> Line:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except LineClosed:
            raise StopAsyncIteration from None

    async def receive(self) -> Message:
        """The next message from the peer, in order, each once (again only if unacknowledged
        when this node crashed). With ``auto_ack``, asking for the next message acknowledges
        the previous one.

        One task at a time: a second task calling while one waits gets
        :class:`trio.BusyResourceError` (which of them would get the next message is
        undefined, and with auto-ack each would acknowledge what the other has not seen).
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this line")
        self._receiving = True
        try:
            return await self._receive()
        finally:
            self._receiving = False

    async def _receive(self) -> Message:
        if self.auto_ack and self._last_yielded is not None:
            self._last_yielded.ack()
        while self._yield_next > self._state.received_seq:
            self._check_usable()
            self._inbox_changed = trio.Event()
            await self._inbox_changed.wait()
        seq = self._yield_next
        message = self._cache.pop(seq, None)
        if message is None:
            # A page of whole bodies, within the byte window too.
            config = self.config
            size = min(_INBOX_PAGE, config.inbox_window_bytes // max(config.max_body_size, 1))
            page = await self._store_call(self._store.inbox, seq - 1, max(size, 1))
            for signed in page:
                self._cache_message(signed)
            message = self._cache.pop(seq)
        self._cache_bytes -= len(message.body)
        self._yield_next = seq + 1
        self._inbox_consumed.set()
        self._last_yielded = message
        return message

    def _cache_message(self, signed: SignedMessage) -> None:
        if signed.seq not in self._cache:
            self._cache[signed.seq] = Message(
                signed.seq, signed.timestamp, signed.body, signed.hash, self
            )
            self._cache_bytes += len(signed.body)

    def _inbox_full(self) -> bool:
        return (
            self._highest_queued_in - (self._yield_next - 1) >= self.config.inbox_window
            or self._cache_bytes >= self.config.inbox_window_bytes
        )

    def _acknowledge(self, seq: int, head: bytes) -> None:
        if seq >= self._yield_next:
            raise LocalProtocolError(f"message {seq} has not been received yet")
        if self._ack_target is None or seq > self._ack_target[0]:
            self._ack_target = (seq, head)
            self._commit_wanted.set()

    def _sign_pending_ack(self) -> None:
        target = self._ack_target
        if target is None or target[0] <= self._state.acknowledged_upto:
            return
        receipt = self._state.sign_own_receipt(
            self.identity, self.line_id, ReceiptKind.ACKNOWLEDGED, target[0], target[1],
            self._clock(),
        )
        # Sent only once committed (see _after_commit): a crash must never make the next
        # connection re-send an older acknowledged receipt than the peer already holds.
        self._batch.own_receipts.append(receipt)

    def _sign_delivered_receipt(self) -> None:
        """Sign the delivered receipt for the messages of this batch into the batch itself.

        Stored with the messages it covers, in one commit (one fsync per burst, not two), and
        sent once that commit is durable (see _after_commit). Last in the batch's receipts.
        """
        if not self._batch.received:
            return
        last = self._batch.received[-1]
        self._batch.own_receipts.append(sign_receipt(
            self.identity, self.line_id, ReceiptKind.DELIVERED, last.seq, last.hash,
            self._clock(),
        ))

    def _queue_delivered_receipt(self) -> None:
        state = self._state
        receipt = state.sign_own_receipt(
            self.identity, self.line_id, ReceiptKind.DELIVERED, state.received_seq,
            state.received_head, self._clock(),
        )
        self._batch.own_receipts.append(receipt)
        self._commit_wanted.set()
        self._send_receipt(receipt)

    def _live_session(self) -> _Session | None:
        """The session to transmit on: started, and its connection still open.

        A session whose connection has closed (a goodbye arrived) stays active until its
        tasks finish; whatever it cannot carry any more, the next session's start() resends.
        """
        session = self._active
        if session is not None and session.started and session.conn.state is ConnectionState.OPEN:
            return session
        return None

    def _send_receipt(self, receipt: Receipt) -> None:
        session = self._live_session()
        if session is not None:
            session.conn.send_receipt(receipt)
            session.kick()

    # --- the store ---------------------------------------------------------------------

    async def _store_call(self, fn: Callable[..., _T], *args: object) -> _T:
        async with self._store_lock:
            if not self._store.commits_block:
                return fn(*args)
            return await trio.to_thread.run_sync(fn, *args)

    async def _committer(self) -> None:
        try:
            await self._commit_forever()
        finally:
            self._committer_alive = False
            # Cancelled with the line's scope: nothing will commit any more, so release every
            # sender waiting on a batch (they see the line closed) instead of leaving them
            # shielded and waiting forever.
            if self._failure is None:
                self._closed = True
            if self._inflight is not None:
                self._inflight.set()
            self._wake_everyone()

    async def _commit_forever(self) -> None:
        while True:
            with trio.CancelScope() as self._commit_alarm:
                if self._receipts_due is not None:
                    self._commit_alarm.deadline = self._receipts_due
                await self._commit_wanted.wait()
            self._commit_wanted = trio.Event()
            self._receipts_due = None
            self._sign_pending_ack()
            self._sign_delivered_receipt()
            batch, done = self._batch, self._batch_done
            self._batch, self._batch_done = Batch(), _Commit()
            self._inflight = done
            if batch:
                try:
                    await self._store_call(self._store.commit, batch)
                except Exception as exc:
                    # The line cannot go on without its store: stop it, and let open_line
                    # raise this one error (_committer wakes everyone waiting on the batch).
                    self._failure = exc
                    logger.error("the store failed; the line stops: %s", exc)  # noqa: TRY400
                    if self._nursery is not None:
                        self._nursery.cancel_scope.cancel()
                    return
                self._after_commit(batch)
            self._inflight = None
            done.set()
            # Not kept while the next commit is awaited: the envelopes it holds are stored,
            # and the inbox keeps only their bodies.
            del batch

    def _after_commit(self, batch: Batch) -> None:
        live = self._live_session()
        for message in batch.sent:
            self._state.append_sent(message)
            if live is not None:
                live.conn.send_message(message)
                self._transmitted_high = message.seq
        for receipt in batch.own_receipts:
            if (
                receipt.kind is ReceiptKind.ACKNOWLEDGED
                and receipt is self._state.acknowledged_receipt
            ):
                self._send_receipt(receipt)
        if batch.received:
            for message in batch.received:
                self._state.record_received(message)
            delivered = batch.own_receipts[-1]
            self._state.record_own_receipt(delivered)
            self._send_receipt(delivered)
            self._inbox_changed.set()
        if live is not None:
            live.kick()

    async def _flush_commits(self) -> None:
        """Wait until everything queued so far is durable."""
        while self._batch or self._commit_wanted.is_set() or self._inflight is not None:
            if not self._committer_alive:
                return
            if self._inflight is not None:
                await self._inflight.wait()
            else:
                done = self._batch_done
                self._commit_wanted.set()
                await done.wait()
            if self._failure is not None:
                return

    async def flush(self) -> None:
        """Return once every message queued and every acknowledgement made so far is stored."""
        self._check_usable()
        await self._flush_commits()
        self._check_usable()

    # --- sessions ----------------------------------------------------------------------

    def _admit(self, session: _Session) -> bool:
        """Decide whether ``session`` may replace the live one (the same rule on both sides)."""
        old = self._active
        if old is None or old.conn.liveness is not Liveness.UP:
            return True
        if session.initiated_by_us == old.initiated_by_us:
            return True  # Its initiator gave the old one up and dialled again.
        # Crossing dials: keep the one initiated by the smaller key.
        we_are_smaller = self.identity.public_key < self.peer
        return session.initiated_by_us == we_are_smaller

    async def _run_session(
        self, stream: trio.abc.Stream, conn: Connection, hello: PeerAuthenticated
    ) -> bool:
        """Run an authenticated connection as the live session until it ends.

        Returns whether it became the live session.
        """
        session = _Session(stream, conn)
        try:
            if self._closed:
                return False
            await self._flush_commits()
            if self._closed or self._failure is not None or not self._admit(session):
                self.stats.rejected_connections += 1
                logger.info("session %d: another connection to %s is kept", session.id,
                            self.peer.fingerprint())
                return False
            old = self._active
            try:
                conn.start(self._state, trio.current_time(), config=self.config)
                if self.config.signature_batch:
                    conn.check_signatures_in_batches(self.config.signature_batch)
            except AuthenticationError as exc:
                logger.warning("session %d: refused: %s", session.id, exc.reason)
                return False
            if old is not None:
                old.close(REPLACED)
            self._active = session
            self._no_session = trio.Event()
            session.started = True
            self.stats.sessions += 1
            if self.stats.sessions > 1:
                self.stats.reconnects += 1
            retransmitted = sum(1 for m in self._state.pending if m.seq <= self._transmitted_high)
            self.stats.retransmitted += retransmitted
            self._transmitted_high = max(self._transmitted_high, self._state.sent_seq)
            if conn.role is Role.RESPONDER:
                self._batch.peer_initiation_watermark = self._state.peer_initiation_watermark
            else:
                self._batch.initiation_timestamp = self._state.initiation_timestamp
            self._commit_wanted.set()
            logger.info(
                "session %d: up with %s as %s; resending %d",
                session.id, self.peer.fingerprint(), conn.role.value, len(self._state.pending),
            )
            self._set_liveness(Liveness.UP)
            with session.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, session)
                    nursery.start_soon(self._writer, session)
                    nursery.start_soon(self._timer, session)
            return True
        finally:
            await self._finish_session(session)

    async def _finish_session(self, session: _Session) -> None:
        with trio.CancelScope(shield=True):
            # After a write cut short, more bytes would only arrive as a broken frame.
            if session.started and not session.stalled:
                with trio.move_on_after(_CLOSE_TIMEOUT / 2):
                    data = session.conn.data_to_send()
                    if data:
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError, OSError
                        ):
                            await session.stream.send_all(data)
            await trio.aclose_forcefully(session.stream)
        if self._active is session:
            self._active = None
            self._no_session.set()
            reason = session.end_reason or "the connection ended"
            logger.info("session %d: ended: %s", session.id, reason)
            if self._closed:
                return
            if session.replaced_by_peer:
                # The peer moved to another connection (crossing dials): not down, switching.
                self._set_liveness(Liveness.CONNECTING, reason)
                if self._nursery is not None:
                    self._nursery.start_soon(self._expect_session, reason)
            else:
                self._set_liveness(Liveness.DOWN, reason)

    async def _expect_session(self, reason: str) -> None:
        """After a switch, the peer's new connection must arrive within a handshake timeout."""
        await trio.sleep(self.config.handshake_timeout)
        if self._active is None and not self._closed:
            self._set_liveness(Liveness.DOWN, f"{reason}; no new connection followed")

    async def _reader(self, session: _Session) -> None:
        conn = session.conn
        try:
            # Frames that arrived with the handshake are already buffered in the core.
            await self._process_checking_signatures(session)
            while True:
                if self._inbox_full():
                    # Stop reading until the application catches up (TCP pushes back on the
                    # peer); the silence that follows is ours, not the peer's.
                    conn.hold()
                    while self._inbox_full():
                        self._inbox_consumed = trio.Event()
                        await self._inbox_consumed.wait()
                    conn.release(trio.current_time())
                data = await session.stream.receive_some(_READ_SIZE)
                conn.receive_data(data, trio.current_time())
                await self._process_checking_signatures(session)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            session.end(f"the connection failed: {exc!r}")

    async def _process_checking_signatures(self, session: _Session) -> None:
        """Drain the core's events, checking bursts of signatures on a second core.

        Checking is most of the cost of receiving and pynacl releases the GIL, so a burst
        checked in a worker thread overlaps with everything else this process does. The
        thread is not abandoned on cancellation: a batch takes milliseconds.
        """
        while (batch := self._process(session)) is not None:
            await trio.to_thread.run_sync(batch.run)
            session.conn.signatures_checked(batch)

    def _process(self, session: _Session) -> SignatureBatch | None:
        """Drain the core's events. Ends the session on a terminal event or a peer fault.

        Returns a batch of signatures the core waits for, which the caller must check.
        """
        conn = session.conn
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, SignaturesToCheck):
                    return event.batch
                if isinstance(event, MessageReceived):
                    message = event.message
                    if message.seq <= self._highest_queued_in:
                        continue  # Already being stored from an earlier connection.
                    self._highest_queued_in = message.seq
                    self._batch.received.append(message)
                    self._cache_message(message)
                    self._commit_wanted.set()
                    self.stats.received += 1
                elif isinstance(event, ReceiptReceived):
                    self._on_peer_receipt(event.receipt)
                    session.peer_reads(trio.current_time() + self.config.down_after)
                elif isinstance(event, RoundTrip):
                    self._notify(event)
                elif isinstance(event, LivenessChanged):
                    self._set_liveness(event.state, f"silent for {event.silent_for:.3f} s")
                elif isinstance(event, PeerClosed):
                    session.replaced_by_peer = event.reason == REPLACED
                    session.end(f"the peer said goodbye: {event.reason}")
                    break
                elif isinstance(event, ConnectionBroken):
                    session.end(event.reason)
                    break
        except AuthenticationError as exc:
            logger.warning("session %d: authentication failed: %s", session.id, exc.reason)
            session.end(f"authentication failed ({exc.reason})")
        except RemoteProtocolError as exc:
            logger.warning("session %d: protocol error from the peer: %s", session.id, exc)
            session.end(f"protocol error: {exc}")
        except (LineClosed, LineBroken) as exc:
            session.end(str(exc))
        session.kick()
        session.rearm()
        return None

    async def _writer(self, session: _Session) -> None:
        conn = session.conn
        try:
            while True:
                session.wake = trio.Event()
                # Asked again only once the last output is written: the core holds back
                # what it owes the peer until then (see Connection.data_to_send).
                data = conn.data_to_send()
                if data:
                    # An owed ping went out with it: the timer's next deadline moved.
                    session.rearm()
                    if not await self._write(session, data):
                        return
                    continue
                if conn.state is ConnectionState.CLOSED:
                    session.end(session.end_reason or "closed")
                    return
                await session.wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            session.end(f"the connection failed: {exc!r}")

    async def _write(self, session: _Session, data: bytes) -> bool:
        """Write ``data`` in pieces; end the session if for ``down_after`` no piece is
        written and no new receipt shows that the peer reads.

        A peer that sends but never reads leaves our writes blocked for good: its traffic
        keeps it from looking silent, so this is what ends such a connection.
        """
        patience = self.config.down_after
        view = memoryview(data)
        for start in range(0, len(view), _WRITE_PIECE):
            session.writing = trio.CancelScope(deadline=trio.current_time() + patience)
            with session.writing:
                await session.stream.send_all(view[start : start + _WRITE_PIECE])
            if session.writing.cancelled_caught:
                session.stalled = True
                session.end(f"the peer read nothing for {patience:.3f} s")
                return False
        return True

    async def _timer(self, session: _Session) -> None:
        conn = session.conn
        while True:
            with trio.CancelScope() as session.alarm:
                session.rearm()
                await trio.sleep_forever()
            conn.advance(trio.current_time())
            while (batch := self._process(session)) is not None:
                # Frames are buffered only while the reader checks a batch, so this is rare
                # and small: check it here.
                batch.run()
                conn.signatures_checked(batch)

    # --- dialling, listening, foreign streams -------------------------------------------

    def _initiate(self) -> Connection:
        timestamp = max(self._clock(), self._state.initiation_timestamp + 1)
        self._state.initiation_timestamp = timestamp
        return Connection.initiate(
            self.identity, self.peer, now=trio.current_time(), timestamp=timestamp,
            config=self.config,
        )

    async def run_stream(self, stream: trio.abc.Stream, *, initiator: bool) -> None:
        """Run the line over a stream the caller already has, until that connection ends.

        Raises :class:`AuthenticationError` or :class:`RemoteProtocolError` if the handshake
        fails, :class:`LineBroken` if it times out or the stream ends during it.
        """
        self._check_usable()
        if initiator:
            conn = self._initiate()
        else:
            conn = Connection.respond(
                self.identity, [self.peer], now=trio.current_time(), config=self.config
            )
        try:
            hello = await authenticate(stream, conn)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        await self._run_session(stream, conn, hello)

    def _backoff(self, attempt: int) -> float:
        config = self.config
        delay = min(config.reconnect_max, config.reconnect_initial * 2.0 ** (attempt - 1))
        return delay * (1 - config.reconnect_jitter * self._rng.random())

    async def _dialer(self, connect: Connector, address: str | None = None) -> None:
        attempt = 0
        failures = 0
        retry_in: float | None = None
        reported: tuple[str, float] | None = None  # The last reason reported, and when.
        while True:
            await self._no_session.wait()
            if attempt > 0:
                await trio.sleep(self._backoff(attempt) if retry_in is None else retry_in)
                retry_in = None
                if self._active is not None:
                    continue
            attempt += 1
            try:
                with trio.fail_after(self.config.connect_timeout):
                    stream = await connect()
            except (OSError, trio.TooSlowError) as exc:
                logger.debug("dial %d failed: %r", attempt, exc)
                reason = _connect_failure(exc, self.config.connect_timeout)
            else:
                conn = self._initiate()
                try:
                    hello = await authenticate(stream, conn)
                except (HotlineError, trio.BrokenResourceError, OSError) as exc:
                    detail = exc.reason if isinstance(exc, AuthenticationError) else str(exc)
                    logger.warning("handshake with %s failed: %s: %s", self.peer.fingerprint(),
                                   type(exc).__name__, detail)
                    await trio.aclose_forcefully(stream)
                    reason = _handshake_failure(exc, self.config.handshake_timeout)
                else:
                    if await self._run_session(stream, conn, hello):
                        attempt = 1
                        failures = 0
                        reported = None
                    continue
            failures += 1
            retry_in = self._backoff(attempt)
            now = trio.current_time()
            if reported is None or reported[0] != reason or now >= reported[1] + (
                DIAL_REPORT_INTERVAL
            ):
                reported = (reason, now)
                self._notify(DialFailed(address, reason, failures, retry_in))

    async def _serve(
        self, listener: Listener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listener.add(self)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            listener.remove(self)


async def authenticate(stream: trio.abc.Stream, conn: Connection) -> PeerAuthenticated:
    """Run ``conn``'s handshake over ``stream`` until the peer is authenticated.

    Bounded by the connection's handshake timeout (:class:`LineBroken` when it expires).
    """
    deadline = conn.next_deadline()
    assert deadline is not None
    with trio.move_on_at(deadline):
        data = conn.data_to_send()
        if data:
            await stream.send_all(data)
        while True:
            event = conn.next_event()
            if isinstance(event, PeerAuthenticated):
                return event
            if isinstance(event, ConnectionBroken):
                raise LineBroken(event.reason)
            if event is NEED_DATA:
                received = await stream.receive_some(_READ_SIZE)
                conn.receive_data(received, trio.current_time())
    raise LineBroken("the handshake timed out")


@contextlib.contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Let an error leave a nursery as itself, not inside a group of one.

    trio wraps whatever leaves a nursery (the body included) in an exception group. Callers
    of ``open_line`` should see ``OSError`` for a port in use, ``StoreMismatch`` for another
    line's store, or their own exception from the body, as they would without a nursery.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if error is group:
            raise
        raise error from group.__cause__


def _as_connector(connect: Address | Connector) -> Connector:
    if callable(connect):
        return connect
    host, port = connect

    async def tcp() -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    return tcp


def _address_text(connect: Address | Connector) -> str | None:
    if callable(connect):
        return None
    host, port = connect
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect_failure(exc: OSError | trio.TooSlowError, timeout: float) -> str:
    """Why the TCP connection failed, in words (stable for one cause: reports compare it)."""
    if isinstance(exc, trio.TooSlowError):
        return (f"no TCP connection within {timeout:g} s: the host is down or unreachable, "
                "or a firewall drops the call")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    # trio tries every address of the name and reports each failure in the cause.
    errors: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        errors = list(exc.__cause__.exceptions)
    if all(isinstance(error, ConnectionRefusedError) for error in errors):
        return "connection refused: nothing listens on that port"
    causes = dict.fromkeys(
        (error.strerror if isinstance(error, OSError) and error.strerror else str(error)).lower()
        for error in errors
    )
    return f"cannot connect: {'; '.join(causes)}"


def _handshake_failure(exc: Exception, handshake_timeout: float) -> str:
    """Why the handshake of a call failed, in words, with the likely causes."""
    if isinstance(exc, AuthenticationError):
        return (f"the answer to our handshake failed authentication ({exc.reason}): whoever "
                "answered does not hold the key we pinned")
    if isinstance(exc, RemoteProtocolError):
        return f"the answer is not a hotline handshake ({exc}): is this the peer's address?"
    if isinstance(exc, LineBroken) and str(exc) == "the handshake timed out":
        return f"connected, but no answer to our handshake within {handshake_timeout:g} s: " + (
            _NO_ANSWER_CAUSES)
    # The connection closed or was reset: a listener closes without a word on a call it
    # refuses, whichever of the causes it was.
    return "connected, but the peer closed the connection during the handshake: " + (
        _NO_ANSWER_CAUSES)


@asynccontextmanager
async def open_line(
    identity: Identity,
    peer: PublicKey,
    *,
    store: Store | str | os.PathLike[str],
    listen: Address | None = None,
    connect: Address | Connector | None = None,
    listener: Listener | None = None,
    config: Config | None = None,
    durability: str = "FULL",
    auto_ack: bool = True,
    rng: random.Random | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> AsyncIterator[Line]:
    """Open this node's end of the line to ``peer``.

    ``store`` is a :class:`~hotline.Store` or the path of a SQLite file (created if absent,
    with ``durability`` "FULL" or "NORMAL"). ``listen`` binds a TCP port for this line
    alone; ``listener`` shares one :func:`open_listener` port among several lines.
    ``connect`` is a ``(host, port)`` to dial, or an async callable returning any
    ``trio.abc.Stream`` (a Unix socket, a tunnel). Neither is needed if the caller runs
    streams itself with :meth:`Line.run_stream`. ``rng`` draws the reconnection jitter;
    ``clock`` gives the wall-clock timestamps this side signs, in nanoseconds since the Unix
    epoch.
    """
    if listen is not None:
        listen = check_address(listen, "listen", listening=True)
    if connect is not None and not callable(connect):
        connect = check_address(connect, "connect", listening=False)
    owned_store: Store | None = None
    if isinstance(store, str | os.PathLike):
        from ..store import SQLiteStore

        owned_store = store = SQLiteStore(store, synchronous=durability)
    try:
        with unwrap_single_exception():
            line = Line(identity, peer, store, config=config, auto_ack=auto_ack, rng=rng,
                        clock=clock)
            await line._load()
            async with trio.open_nursery() as nursery:
                line._nursery = nursery
                nursery.start_soon(line._committer)
                if listen is not None:
                    from ._listener import Listener

                    own = Listener(identity, config=config)
                    line.listen_addresses = await nursery.start(own.serve, *listen)
                    await nursery.start(line._serve, own)
                if listener is not None:
                    await nursery.start(line._serve, listener)
                if connect is not None:
                    nursery.start_soon(line._dialer, _as_connector(connect),
                                       _address_text(connect))
                try:
                    yield line
                finally:
                    await line.aclose()
                    nursery.cancel_scope.cancel()
            if line._failure is not None:
                raise StoreError(f"the line's store failed: {line._failure}") from line._failure
    finally:
        if owned_store is not None:
            owned_store.close()
