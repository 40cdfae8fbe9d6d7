"""The inbox: how far we have received, and what the application has taken.

A message the session reads is queued here once (a message already queued, from an earlier
connection, is dropped), joins the committer's batch, and waits in memory as the application
will see it: the body alone, not the envelope that also contains it (the store keeps the
envelope). Once the committer has stored it with its delivered receipt, ``receive()`` may
return it; messages beyond the memory window are paged back from the store.

The inbox is the one owner of how far we received (the highest queued) and of how far the
application has taken (the next to yield), and of the window between them: the session
stops reading while the application is ``inbox_window`` messages (or
``inbox_window_bytes`` of bodies) behind, so memory stays bounded however slow the
application. One task receives at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from .._config import Config
from .._errors import LocalProtocolError
from ..protocol import SignedMessage
from ._committer import Committer, usable_or_cancelled
from ._events import Stats

__all__ = ["Inbox", "Message"]

#: Stored messages paged back into memory at once (fewer if the byte window says so).
INBOX_PAGE = 256


@dataclass(frozen=True, slots=True)
class Message:
    """A message from the peer, as the application sees it."""

    seq: int
    timestamp: int
    """The sender's clock when it queued the message: nanoseconds since the Unix epoch."""
    body: bytes
    hash: bytes
    _inbox: Inbox = field(repr=False, compare=False)

    @property
    def sent_at(self) -> datetime:
        """The sender's timestamp as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp / 1e9, tz=UTC)

    def ack(self) -> None:
        """Acknowledge this message and every one before it (persisted, then receipted)."""
        self._inbox.acknowledge(self.seq, self.hash)


class Inbox:
    """The peer's messages, from the session's reader to ``receive()``."""

    def __init__(
        self,
        config: Config,
        committer: Committer,
        *,
        auto_ack: bool,
        stats: Stats,
        check_usable: Callable[[], None],
    ) -> None:
        self._config = config
        self._committer = committer
        self._auto_ack = auto_ack
        self._stats = stats
        self._check_usable = check_usable
        self._highest_queued = 0
        self._cache: dict[int, Message] = {}
        self._cache_bytes = 0  # The bodies in _cache: the inbox's byte window.
        self._yield_next = 1
        self._last_yielded: Message | None = None
        self._stored = trio.Event()
        self._consumed = trio.Event()
        self._receiving = False

    def load(self) -> None:
        state = self._committer.state
        self._highest_queued = state.received_seq
        self._yield_next = state.acknowledged_upto + 1

    # --- 1. from the session's reader ----------------------------------------------------

    def queue(self, message: SignedMessage) -> None:
        """Queue a message the peer sent, unless it is already queued."""
        if message.seq <= self._highest_queued:
            return  # Already being stored from an earlier connection.
        self._highest_queued = message.seq
        self._committer.add_received(message)
        self._cache_message(message)
        self._stats.received += 1

    def full(self) -> bool:
        return (
            self._highest_queued - (self._yield_next - 1) >= self._config.inbox_window
            or self._cache_bytes >= self._config.inbox_window_bytes
        )

    async def wait_for_room(self) -> None:
        while self.full():
            self._consumed = trio.Event()
            await self._consumed.wait()

    # --- 2. stored by the committer ------------------------------------------------------

    def stored(self) -> None:
        self._stored.set()

    # --- 3. to the application -----------------------------------------------------------

    async def receive(self) -> Message:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this line")
        self._receiving = True
        try:
            return await self._receive()
        finally:
            self._receiving = False

    async def _receive(self) -> Message:
        if self._auto_ack and self._last_yielded is not None:
            # Made while waiting for more: it may ride with the next message's receipt.
            last = self._last_yielded
            self._committer.acknowledge(last.seq, last.hash, wait=True)
        while self._yield_next > self._committer.state.received_seq:
            await usable_or_cancelled(self._check_usable)
            self._stored = trio.Event()
            await self._stored.wait()
        seq = self._yield_next
        message = self._cache.pop(seq, None)
        if message is None:
            # A page of whole bodies, within the byte window too.
            config = self._config
            size = min(INBOX_PAGE, config.inbox_window_bytes // max(config.max_body_size, 1))
            for signed in await self._committer.stored_inbox(seq - 1, max(size, 1)):
                self._cache_message(signed)
            message = self._cache.pop(seq)
        self._cache_bytes -= len(message.body)
        self._yield_next = seq + 1
        self._consumed.set()
        self._last_yielded = message
        return message

    def _cache_message(self, signed: SignedMessage) -> None:
        if signed.seq not in self._cache:
            self._cache[signed.seq] = Message(
                signed.seq, signed.timestamp, signed.body, signed.hash, self
            )
            self._cache_bytes += len(signed.body)

    def acknowledge(self, seq: int, head: bytes) -> None:
        if seq >= self._yield_next:
            raise LocalProtocolError(f"message {seq} has not been received yet")
        self._committer.acknowledge(seq, head)

    def wake_all(self) -> None:
        """Wake the receiving task, to see that the line has stopped."""
        self._stored.set()
