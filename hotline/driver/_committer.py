"""The committer: the one task that writes the store, and the only writer of ``LineState``.

Everything the line must make durable joins the open :class:`~hotline.Batch`: our new messages
(:mod:`._outbox`, which numbers and chains them; they are signed here, one signature per
burst, so that no commit ends with a message no signature covers), the peer's messages
(:mod:`._inbox`), the peer's receipts, and the acknowledgement the application asked for, the
initiation timestamps. One task commits it, while everything that arrives meanwhile joins the
next batch: one fsync per burst. Before a batch is stored, it is checked on a copy of the
state's marks through ``LineState``'s rule-checked methods, and our receipts are signed there
(the delivered receipt last, so it is stored with the messages it covers); once it is durable,
the batch is applied through the same methods to a successor of the line's state, which then
replaces it, and the batch is handed on to be transmitted. A message on the wire is always a
message on disk.

Nothing else writes the line's state: the connection keeps marks of its own and reports the
peer's receipts and the initiation it accepted, which come here. Neither copy grows with
the outbox: the marks' copy leaves it out, and the successor shares the outbox
(``pending`` and the recent chain heads) with the state it replaces, which is dropped in the
same step (nothing awaits in between, so no reader sees the two disagree).

The peer's receipts are the exception: checked by the connection, they move the state (a
successor swapped in at once, as for a commit) when they arrive and join the batch to be
stored, but alone they do not start a commit: they wait up to 50 ms for one that stores
something else (a commit per receipt would make the next send() wait behind it). So does
the acknowledgement ``auto_ack`` makes when the application asks for the next message, for
up to 25 ms (:data:`AUTO_ACK_DELAY`): the next message's commit then carries it, and its
receipt goes in the same write as that message's delivered receipt. One the application makes
itself, with ``Message.ack()``, is committed at once, and ``flush()`` commits a waiting one.

Where a commit runs. A store whose commits wait on the disk is committed in a worker thread,
so that the event loop goes on (the line's other tasks, other lines, the next batch filling)
while the fsync waits. The thread costs two switches, which on the latency path (one
message in flight, send() to delivered receipt) cost as much as a commit itself. So a commit
runs on the event loop instead when the process's commits are idle: none is in a thread, and
none has ended for at least as long as the last one took (nothing is gathering behind a
commit, in this line or another, so nothing gains from overlapping with it), and the store
says its commits are short (``Store.short_commits``). What that costs the process's other
tasks is the loop's time blocked in such commits: one commit at a time, and, as each follows
an idle spell at least as long as the commit before it, at most about half of the time
(``python -m bench.loop_commits`` measures both sides of the trade). A disk that stalls
stalls the loop, heartbeats included, once: after a commit slower than
``LOOP_COMMIT_LIMIT``, commits stay in threads until one is quick again. And only a small
batch (at most ``LOOP_COMMIT_BYTES`` of messages) is committed there: the latency path's one
message is; a burst of large bodies, whose commit writes many pages, is not.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import trio

from .._errors import LineClosed
from .._keys import Identity, PublicKey
from ..protocol import (
    MAX_BURST_MESSAGES,
    MAX_BURST_UNSIGNED_BYTES,
    LineState,
    Receipt,
    ReceiptKind,
    SignedMessage,
    cover_message,
)
from ..store import Batch, Store, apply_batch_but_peer_receipts

__all__ = ["Commit", "Committer"]

logger = logging.getLogger("hotline")

#: How long the peer's receipts may wait for a commit that stores something else as well.
#: Committing each one at once costs a commit per receipt, which the next send() then waits
#: behind. Nothing depends on them being durable sooner: until they are, the messages they
#: cover stay in the stored outbox, and after a crash the next connection retransmits them
#: and the peer, dropping the duplicates, sends its latest delivered receipt again.
PEER_RECEIPT_DELAY = 0.05

#: How long an acknowledgement made by asking for the next message (``auto_ack``) may wait for
#: a commit that stores something else as well: the next message's, mostly, which then carries
#: both receipts in one write. Committed at once, it costs a commit, a write and a read of its
#: own per message, and a durable store an fsync that the next message's commit waits behind.
#: QUIC's default ``max_ack_delay`` (RFC 9000, 18.2); TCP's delayed acknowledgement is 40 ms.
#: An acknowledgement the application makes itself (``Message.ack()``) goes at once.
AUTO_ACK_DELAY = 0.025

#: A commit slower than this (seconds) sends the next ones to worker threads until one is
#: quick again: a disk that takes this long is not one whose commits are short.
LOOP_COMMIT_LIMIT = 0.005
#: The most message bytes (envelopes, both directions) a commit on the loop may hold.
LOOP_COMMIT_BYTES = 16384

_T = TypeVar("_T")

#: What commits are timed with: real time (a test's virtual clock does not move while a
#: commit blocks the loop). Tests replace it to decide the durations themselves.
real_time: Callable[[], float] = time.perf_counter


class _ProcessCommits:
    """The commits of every line of one trio run: whether one may run on the event loop."""

    __slots__ = ("_last_end", "_last_seconds", "in_threads")

    def __init__(self) -> None:
        self.in_threads = 0
        self._last_end = self._last_seconds = 0.0

    def idle(self) -> bool:
        return (not self.in_threads and self._last_seconds <= LOOP_COMMIT_LIMIT
                and real_time() - self._last_end >= self._last_seconds)

    def ended(self, started: float) -> None:
        self._last_end = real_time()
        self._last_seconds = self._last_end - started


def _small(batch: Batch) -> bool:
    size = 0
    for message in itertools.chain(batch.sent, batch.received):
        size += len(message.envelope)
        if size > LOOP_COMMIT_BYTES:
            return False
    return True


_process_commits: trio.lowlevel.RunVar[_ProcessCommits] = trio.lowlevel.RunVar("commits")


def _commits() -> _ProcessCommits:
    try:
        return _process_commits.get()
    except LookupError:
        commits = _ProcessCommits()
        _process_commits.set(commits)
        return commits


async def usable_or_cancelled(check_usable: Callable[[], None]) -> None:
    """``check_usable()`` for a call that waited while the line may have stopped.

    A line that failed raises its error. A line that merely closed raises LineClosed, unless
    the caller's own scope is cancelled: that may be what closed it (the line's ``async with``
    inside the cancelled scope), and then the caller must see Cancelled, as from any trio
    call, not a LineClosed that would escape the cancellation as an error.
    """
    try:
        check_usable()
    except LineClosed:
        await trio.lowlevel.checkpoint_if_cancelled()
        raise

class Commit:
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


class Committer:
    """Group commit of one line's records, and the line's :class:`LineState`.

    ``committed`` receives each batch once it is durable (the line transmits it);
    ``stopped`` is called when the committer ends, for whatever reason.
    """

    def __init__(
        self,
        identity: Identity,
        line_id: bytes,
        store: Store,
        *,
        clock: Callable[[], int],
        committed: Callable[[Batch], None],
        stopped: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._line_id = line_id
        self.store = store
        self._store_lock = trio.Lock()
        self._clock = clock
        self._committed = committed
        self._stopped = stopped
        self.state = LineState()
        self.failure: Exception | None = None
        self.alive = True
        self.batch = Batch()
        self.batch_done = Commit()
        self._wanted = trio.Event()
        self._alarm = trio.CancelScope()  # The wait for work, until receipts are due.
        self._receipts_due: float | None = None
        self._inflight: Commit | None = None
        self._ack_target: tuple[int, bytes] | None = None
        self._initiation_used = 0  # The newest handshake timestamp handed out, maybe unstored.
        self._may_commit_on_loop = store.commits_block and getattr(store, "short_commits", False)

    async def store_call(self, fn: Callable[..., _T], *args: object) -> _T:
        if not self.store.commits_block:
            # Never called from a thread, so nothing to wait for: no lock, and no scheduling
            # round (acquiring even a free trio.Lock is one).
            return fn(*args)
        async with self._store_lock:
            return await trio.to_thread.run_sync(fn, *args)

    async def load(self, me: PublicKey, peer: PublicKey) -> LineState:
        state = self.state = await self.store_call(self.store.load, me, peer)
        if state.received_seq > state.delivered_upto:
            # Messages stored without their delivered receipt (this driver commits both at
            # once; a store written otherwise may differ): sign it now, on a copy (the state
            # records it once it is stored). The next session sends it with the other marks.
            self.batch.own_receipts.append(state.copy(outbox=False).sign_own_receipt(
                self._identity, self._line_id, ReceiptKind.DELIVERED, state.received_seq,
                state.received_head, self._clock(),
            ))
            self._wanted.set()
        return state

    async def stored_inbox(self, after: int, limit: int) -> list[SignedMessage]:
        return await self.store_call(self.store.inbox, after, limit)

    # --- what joins the batch, along the path of a message -------------------------------

    def add_sent(self, message: SignedMessage) -> Commit:
        """Queue our signed ``message``; the returned commit is set once it is durable."""
        self.batch.sent.append(message)
        self._wanted.set()
        return self.batch_done

    def add_received(self, message: SignedMessage) -> None:
        self.batch.received.append(message)
        self._wanted.set()

    def acknowledge(self, seq: int, head: bytes, *, wait: bool = False) -> None:
        """Sign an acknowledged receipt up to ``seq`` with the next batch: at once, or with
        ``wait`` when a commit comes within :data:`AUTO_ACK_DELAY`."""
        if self._ack_target is None or seq > self._ack_target[0]:
            self._ack_target = (seq, head)
            if wait:
                self._commit_by(trio.current_time() + AUTO_ACK_DELAY)
            else:
                self._wanted.set()

    def add_peer_receipt(self, receipt: Receipt) -> None:
        """Record a receipt the connection checked: in the state at once (the outbox and
        ``Line.state`` show it), and in the store with a later batch."""
        state = self.state.successor()
        state.apply_peer_receipt(receipt)
        self.state = state
        self.batch.peer_receipts.append(receipt)
        self._commit_by(trio.current_time() + PEER_RECEIPT_DELAY)

    def _commit_by(self, due: float) -> None:
        """Commit at ``due`` at the latest: sooner if something else starts a commit."""
        if self._receipts_due is None or due < self._receipts_due:
            self._receipts_due = self._alarm.deadline = due

    def next_initiation(self) -> int:
        """A handshake timestamp this side has never used (stored with the next batch)."""
        used = max(self.state.initiation_timestamp, self._initiation_used)
        self._initiation_used = max(self._clock(), used + 1)
        return self._initiation_used

    def session_started(self, *, responder: bool, timestamp: int | None) -> None:
        """Store the initiation timestamp of the new session: the peer's it accepted (the new
        watermark), or ours (``Connection.initiation_timestamp``, set once started)."""
        if timestamp is None:
            return
        if responder:
            self.batch.peer_initiation_watermark = timestamp
        else:
            self.batch.initiation_timestamp = timestamp
        self._wanted.set()

    # --- committing ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._commit_forever()
        finally:
            self.alive = False
            # Cancelled with the line's scope: nothing will commit any more, so release every
            # sender waiting on a batch (they see the line closed) instead of leaving them
            # shielded and waiting forever.
            if self._inflight is not None:
                self._inflight.set()
            self._stopped()

    async def _commit_forever(self) -> None:
        while True:
            with trio.CancelScope() as self._alarm:
                if self._receipts_due is not None:
                    self._alarm.deadline = self._receipts_due
                await self._wanted.wait()
            self._wanted = trio.Event()
            self._receipts_due = None
            batch, done = self.batch, self.batch_done
            self.batch, self.batch_done = Batch(), Commit()
            self._inflight = done
            self._stage(batch)
            if batch:
                try:
                    await self._commit(batch)
                except Exception as exc:
                    # The line cannot go on without its store: stop it, and let open_line
                    # raise this one error (run() wakes everyone waiting on the batch).
                    self.failure = exc
                    logger.error("the store failed; the line stops: %s", exc)  # noqa: TRY400
                    return
                self.state = self._successor(batch)
                self._committed(batch)
            self._inflight = None
            done.set()
            # Not kept while the next commit is awaited: the envelopes it holds are stored,
            # and the inbox keeps only their bodies.
            del batch

    async def _commit(self, batch: Batch) -> None:
        """Store ``batch``: on the event loop when the process's commits are idle (see the
        module docstring), else as ``store_call`` does."""
        commits = _commits()
        # The lock is free unless an inbox read is in a thread; then so is this commit.
        on_loop = (self._may_commit_on_loop and not self._store_lock.locked()
                   and _small(batch) and commits.idle())
        started = real_time()
        try:
            if on_loop:
                self.store.commit(batch)  # Nothing awaits: no other call can begin meanwhile.
            elif not self.store.commits_block:
                # A scheduling round before the commit, as a thread's hand-off would be: what
                # the line's producers queue meanwhile joins the next batch, so under load
                # batches grow and fewer of their messages need a signature of their own.
                await trio.lowlevel.checkpoint()
                self.store.commit(batch)
            else:
                commits.in_threads += 1
                try:
                    await self.store_call(self.store.commit, batch)
                finally:
                    commits.in_threads -= 1
        finally:
            commits.ended(started)

    def _stage(self, batch: Batch) -> None:
        """Check ``batch`` on a copy of the state's marks and sign our receipts there.

        The copy has no outbox (its cost does not grow with the messages waiting for the
        peer); the acknowledgement comes first, the delivered receipt for this batch's
        messages last, as the stores and :meth:`_successor` expect.
        """
        target, self._ack_target = self._ack_target, None
        if target is not None and target[0] <= self.state.acknowledged_upto:
            target = None
        if not (batch.sent or batch.received or target):
            return
        if batch.sent:
            self._cover_bursts(batch.sent)
        staged = self.state.copy(outbox=False)
        for message in batch.sent:
            staged.append_sent(message)
        for receipt in batch.own_receipts:
            staged.record_own_receipt(receipt)  # Signed at load(), not yet in the state.
        now = self._clock() if target or batch.received else 0
        if target is not None:
            batch.own_receipts.append(staged.sign_own_receipt(
                self._identity, self._line_id, ReceiptKind.ACKNOWLEDGED, *target, now
            ))
        if batch.received:
            for message in batch.received:
                staged.record_received(message)
            batch.own_receipts.append(staged.sign_own_receipt(
                self._identity, self._line_id, ReceiptKind.DELIVERED, staged.received_seq,
                staged.received_head, now,
            ))

    def _cover_bursts(self, sent: list[SignedMessage]) -> None:
        """Sign the last of our new messages, and each one that closes a full burst.

        The outbox numbers and chains each message at send() but signs none: one signature
        over the burst's last envelope covers the burst through the chain. The last message
        of a commit is always signed, so what is stored (and then sent) is always covered; a
        message is left unsigned only while its run stays within the protocol's burst bounds
        (``MAX_BURST_MESSAGES``, ``MAX_BURST_UNSIGNED_BYTES``), which every receiver accepts.
        """
        run = run_bytes = 0
        last = len(sent) - 1
        for index, message in enumerate(sent):
            if message.signed:  # pragma: no cover - the outbox signs nothing
                run = run_bytes = 0
                continue
            size = len(message.envelope)
            if (index == last or run + 1 >= MAX_BURST_MESSAGES
                    or run_bytes + size > MAX_BURST_UNSIGNED_BYTES):
                sent[index] = cover_message(self._identity, message)
                run = run_bytes = 0
            else:
                run += 1
                run_bytes += size

    def _successor(self, batch: Batch) -> LineState:
        """The line's state once ``batch`` is durable, in the stores' order (the peer's
        receipts are in it already: :meth:`add_peer_receipt`)."""
        state = self.state.successor()
        apply_batch_but_peer_receipts(state, batch)
        return state

    async def flush(self) -> None:
        """Wait until everything queued so far is durable (or the committer has stopped)."""
        while (self.batch or self._ack_target is not None or self._wanted.is_set()
               or self._inflight is not None):
            if not self.alive:
                return
            if self._inflight is not None:
                await self._inflight.wait()
            else:
                done = self.batch_done
                self._wanted.set()
                await done.wait()
            if self.failure is not None:
                return
