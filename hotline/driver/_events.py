"""What the driver reports about a line: its watchers' events and its counters.

The core's events (:class:`~hotline.ReceiptReceived`, :class:`~hotline.RoundTrip`) reach
watchers as they are; :class:`PeerState`, :class:`DialFailed` and :class:`AckOverdue` are the
driver's own, for what only the driver knows: whether any connection is live, why calls fail,
and which of our messages missed the acknowledgement deadline ``send()`` was given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import trio

from ..protocol import Liveness, ReceiptReceived, RoundTrip

__all__ = ["AckOverdue", "DialFailed", "LineEvent", "PeerState", "Stats", "Watchers"]

#: Events queued per watcher; the oldest are dropped past this.
WATCH_BACKLOG = 10_000


@dataclass(frozen=True, slots=True)
class PeerState:
    """A change of the peer's liveness, as :meth:`Line.watch <hotline.Line.watch>` reports it."""

    state: Liveness
    rtt: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DialFailed:
    """The driver's call to the peer failed; it calls again in ``next_retry_in`` seconds.

    Not an event of the core: :meth:`Line.watch <hotline.Line.watch>` reports it. The first
    failure and every change of ``reason`` are reported at once; while the reason stays the
    same, at most one report every 30 s (``attempt`` counts the failures in between).
    """

    address: str | None
    """``host:port`` as dialled, or None when the line dials through a callable."""
    reason: str
    """What failed, in words, with the likely causes when the handshake got no answer."""
    attempt: int
    """Calls that failed in a row, this one included."""
    next_retry_in: float
    """Seconds until the next call (the backoff, with its jitter)."""


@dataclass(frozen=True, slots=True)
class AckOverdue:
    """No acknowledged receipt covered message ``seq`` within the ``ack_within`` seconds that
    :meth:`Line.send <hotline.Line.send>` was given (a local deadline: nothing on the wire).

    Reported once per message, by :meth:`Line.watch <hotline.Line.watch>`; the receipt may
    still come later (a :class:`~hotline.ReceiptReceived`).
    """

    seq: int
    ack_within: float
    delivered: bool
    """Whether a delivered receipt covered it by then: the peer's node holds it, but its
    application has not acknowledged it."""


LineEvent = PeerState | ReceiptReceived | RoundTrip | DialFailed | AckOverdue


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
    bytes_sent: int = 0
    """Bytes the line's sessions wrote to the peer. Counted from the moment a session is
    authenticated, so a responder's handshake answer (written by its session) counts and an
    initiator's handshake message does not."""
    bytes_received: int = 0
    """Bytes the line's sessions read from the peer, from the moment each is authenticated:
    what arrived with the handshake (an initiator reads the answer, and what came with it,
    before its session starts) is not counted."""
    last_handshake_ns: int | None = None
    """When the last session came up, in nanoseconds since the Unix epoch by the system's
    clock, or None before the first."""


class Watchers:
    """The tasks in :meth:`Line.watch <hotline.Line.watch>`, each with its own queue, so that
    one that reads slowly still sees every event in order."""

    def __init__(self, closed: Callable[[], bool]) -> None:
        self._watchers: list[tuple[deque[LineEvent], list[trio.Event]]] = []
        self._closed = closed

    def notify(self, event: LineEvent) -> None:
        for queue, events in self._watchers:
            queue.append(event)
            events[0].set()

    async def watch(self, first: Callable[[], LineEvent]) -> AsyncIterator[LineEvent]:
        """``first()``, then every event notified, until the line is closed and the queue
        empty."""
        queue: deque[LineEvent] = deque(maxlen=WATCH_BACKLOG)
        events: list[trio.Event] = [trio.Event()]
        entry = (queue, events)
        self._watchers.append(entry)
        try:
            yield first()
            while not self._closed() or queue:
                if not queue:
                    await events[0].wait()
                    events[0] = trio.Event()
                    continue
                yield queue.popleft()
        finally:
            self._watchers.remove(entry)

    def wake_all(self) -> None:
        """Let every watcher see that the line is closed."""
        for _, events in self._watchers:
            for event in events:
                event.set()
