"""The outbox: our next message number and chain head, the outbox limits, receipt waiters.

Three calls put a message in the outbox, and differ only in what they wait for. Each checks the
body and the outbox limits, then builds the next message (``_enqueue``: the one place a message
is made, with our next sequence number and chain head, so that concurrent senders get
consecutive numbers; the committer signs it with its burst) and hands it to the committer,
which stores every message queued while its last commit was in flight with one fsync:

- ``send_nowait()`` waits for nothing: it raises :class:`OutboxFull` when there is no room;
- ``queue()`` waits only for room, like trio's ``MemorySendChannel.send``;
- ``send()`` waits for room and then until the message is durable.

From ``_enqueue`` on, the message is part of the chain (the next one's signature covers its
hash): it is stored even if its caller is cancelled. ``send()`` therefore waits for the commit
uncancellably and reports a stored message even to a cancelled caller; ``queue()`` and
``send_nowait()`` return the :class:`Outgoing` as soon as the message is queued, and
:meth:`Outgoing.stored` waits (cancellably: cancelling that wait unsends nothing) for the
same commit. Whoever waits decides "stored" the same way: the line's state, which only the
committer moves and only after a commit, holds the message. A commit released because the
line stopped first is reported as :class:`LineClosed` or :class:`StoreError`, never as
stored.

The committer hands stored messages to the session to transmit. The outbox is the one owner
of where our chain has got to (the line's state says where it is *stored*), of how much
waits for a delivered receipt (a sender waits while ``outbox_limit`` messages or
``outbox_limit_bytes`` have none), and of the highest message ever transmitted (what a new
session resends counts as retransmitted). The peer's receipts come back here: they wake
:meth:`Outgoing.delivered` and retire messages.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable

import trio

from .._config import Config
from .._errors import LineClosed, LocalProtocolError, MessageTooLarge, OutboxFull
from .._keys import Identity
from ..protocol import (
    LineState,
    Receipt,
    ReceiptKind,
    ReceiptReceived,
    SignedMessage,
    unsigned_message,
)
from ._committer import Commit, Committer, usable_or_cancelled
from ._events import LineEvent, Stats

__all__ = ["Outbox", "Outgoing"]


class Outgoing:
    """One of our messages, from the moment it has its number: await it stored, then its
    receipts."""

    def __init__(self, outbox: Outbox, message: SignedMessage, commit: Commit) -> None:
        self._outbox = outbox
        self._commit = commit
        self._seq = message.seq  # All that the waits below need of the message.
        self.message = message

    @property
    def seq(self) -> int:
        return self._seq

    async def stored(self) -> None:
        """Return once this message is durable; at once if it is already.

        Raises :class:`LineClosed` (or :class:`StoreError`) if the line stopped before the
        message was stored. Cancelling this wait does not unsend the message.
        """
        await self._outbox.wait_stored(self.seq, self._commit)

    async def delivered(self) -> Receipt:
        """The peer's signed receipt saying it holds this message (and all before it)."""
        return await self._outbox.wait_receipt(ReceiptKind.DELIVERED, self.seq)

    async def acknowledged(self) -> Receipt:
        """The peer's signed receipt saying its application processed this message."""
        return await self._outbox.wait_receipt(ReceiptKind.ACKNOWLEDGED, self.seq)

    def __repr__(self) -> str:
        return f"<Outgoing seq={self.seq}>"


class Outbox:
    """Our side of the chain, from ``send()`` to the peer's receipts."""

    def __init__(
        self,
        identity: Identity,
        line_id: bytes,
        config: Config,
        committer: Committer,
        *,
        clock: Callable[[], int],
        stats: Stats,
        notify: Callable[[LineEvent], None],
        check_usable: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._line_id = line_id
        self._config = config
        self._committer = committer
        self._clock = clock
        self._stats = stats
        self._notify = notify
        self._check_usable = check_usable
        self._next_seq = 1
        self._next_head = b""
        self._sizes: deque[tuple[int, int]] = deque()
        self._bytes = 0
        self._space = trio.Event()
        self._transmitted_high = 0
        self._peer_receipts: dict[ReceiptKind, Receipt] = {}
        self._waiters: dict[ReceiptKind, list[tuple[int, int, trio.Event]]] = {
            ReceiptKind.DELIVERED: [],
            ReceiptKind.ACKNOWLEDGED: [],
        }
        self._waiter_ids = itertools.count()

    def load(self, state: LineState) -> None:
        self._next_seq = state.sent_seq + 1
        self._next_head = state.sent_head
        for message in state.pending:
            self._sizes.append((message.seq, len(message.body)))
            self._bytes += len(message.body)

    @property
    def size(self) -> int:
        """Our messages queued without a delivered receipt."""
        return self._next_seq - 1 - self._committer.state.peer_delivered

    # --- 1. send_nowait(), queue(), send(): into the outbox, maybe until stored ---------

    def send_nowait(self, body: bytes) -> Outgoing:
        body = self._admissible(body)
        if self._full(len(body)):
            raise OutboxFull(f"{self.size} messages ({self._bytes} bytes) await receipts")
        return self._enqueue(body)

    async def queue(self, body: bytes) -> Outgoing:
        await trio.lowlevel.checkpoint_if_cancelled()
        body = self._admissible(body)
        while self._full(len(body)):
            await self._wait_for_room()
        outgoing = self._enqueue(body)
        # A checkpoint that cannot raise (as MemorySendChannel.send): a cancelled caller must
        # not lose the Outgoing of a message that now belongs to the line. It also lets the
        # committer take the batch while a sequential producer builds the next messages.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return outgoing

    async def send(self, body: bytes, *, wait: bool) -> Outgoing:
        await trio.lowlevel.checkpoint_if_cancelled()
        body = self._admissible(body)
        while self._full(len(body)):
            if not wait:
                raise OutboxFull(f"{self.size} messages ({self._bytes} bytes) await receipts")
            await self._wait_for_room()
        outgoing = self._enqueue(body)
        message, done = outgoing.message, outgoing._commit
        # The message is already part of the chain: its commit finishes, cancelled or not.
        await done.wait_uncancellable()
        if message.seq <= self._committer.state.sent_seq:
            # Stored (and so it will be delivered): report it, even to a caller whose scope
            # was cancelled meanwhile, who must not think it unsent and send it again.
            return outgoing
        # Not stored: the line stopped first. Cancelled if that is why, else say how.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_usable()
        raise LineClosed("the line closed before the message was stored")

    async def wait_stored(self, seq: int, commit: Commit) -> None:
        await commit.wait()
        if seq <= self._committer.state.sent_seq:
            return
        await usable_or_cancelled(self._check_usable)
        raise LineClosed("the line closed before the message was stored")

    def _admissible(self, body: bytes) -> bytes:
        """``body`` as bytes, if the line takes it: nothing is queued or numbered otherwise."""
        self._check_usable()
        if not isinstance(body, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"a body is bytes, not {type(body).__name__}")
        body = bytes(body)
        if len(body) > self._config.max_body_size:
            raise MessageTooLarge(
                f"body of {len(body)} bytes is over the limit of {self._config.max_body_size}"
            )
        return body

    async def _wait_for_room(self) -> None:
        """Wait until a receipt frees room (or the line stops). Cancelled here, the caller
        has queued nothing."""
        self._space = trio.Event() if self._space.is_set() else self._space
        await self._space.wait()
        await usable_or_cancelled(self._check_usable)

    def _enqueue(self, body: bytes) -> Outgoing:
        """Make ``body`` our next message and hand it to the committer; no checkpoint."""
        # Numbered and chained now; the committer signs it with its burst (one signature
        # covers the messages of a commit).
        message = unsigned_message(
            self._identity.public_key, self._line_id, self._next_seq, self._clock(),
            self._next_head, body,
        )
        self._next_seq += 1
        self._next_head = message.hash
        self._sizes.append((message.seq, len(body)))
        self._bytes += len(body)
        done = self._committer.add_sent(message)
        self._stats.sent += 1
        return Outgoing(self, message, done)

    def _full(self, size: int) -> bool:
        return self.size >= self._config.outbox_limit or (
            self.size > 0 and self._bytes + size > self._config.outbox_limit_bytes
        )

    # --- 2. transmitted by a session -----------------------------------------------------

    def transmitted(self, seq: int) -> None:
        self._transmitted_high = seq

    def resending(self, state: LineState) -> int:
        """A new session resends ``state.pending``: how many of them went out before."""
        retransmitted = sum(1 for m in state.pending if m.seq <= self._transmitted_high)
        self._transmitted_high = max(self._transmitted_high, state.sent_seq)
        return retransmitted

    # --- 3. the peer's receipts ----------------------------------------------------------

    def on_peer_receipt(self, receipt: Receipt) -> None:
        self._peer_receipts[receipt.kind] = receipt
        self._committer.add_peer_receipt(receipt)
        waiters = self._waiters[receipt.kind]
        while waiters and waiters[0][0] <= receipt.upto:
            heapq.heappop(waiters)[2].set()
        if receipt.kind is ReceiptKind.DELIVERED:
            while self._sizes and self._sizes[0][0] <= receipt.upto:
                self._bytes -= self._sizes.popleft()[1]
            self._space.set()
        self._notify(ReceiptReceived(receipt))

    async def wait_receipt(self, kind: ReceiptKind, seq: int) -> Receipt:
        while True:
            receipt = self._peer_receipts.get(kind)
            if receipt is not None and receipt.upto >= seq:
                return receipt
            await usable_or_cancelled(self._check_usable)
            event = trio.Event()
            heapq.heappush(self._waiters[kind], (seq, next(self._waiter_ids), event))
            await event.wait()

    def wake_all(self) -> None:
        """Wake every task waiting here, to see that the line has stopped."""
        for waiters in self._waiters.values():
            for _, _, event in waiters:
                event.set()
            waiters.clear()
        self._space.set()
