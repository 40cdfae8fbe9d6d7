"""Acknowledgement deadlines: ``send(body, ack_within=SECONDS)`` and the ``overdue`` event.

A deadline is local: it is not signed and not sent, and it does not survive a restart. Each
one is a (due time on trio's clock, seq) pair in a heap; one task sleeps until the earliest is
due. Acknowledged receipts are cumulative, so whether a message was acknowledged in time is
one comparison with the line's acknowledged mark *at its due time*: nothing needs to happen
when a receipt arrives, and a settled deadline is simply dropped when it falls due. A message
still unacknowledged then is reported once, as :class:`~hotline.driver.AckOverdue`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import trio

from ._events import AckOverdue, LineEvent

__all__ = ["AckDeadlines"]


class AckDeadlines:
    """The pending acknowledgement deadlines of one line's messages."""

    def __init__(
        self,
        *,
        acknowledged_upto: Callable[[], int],
        delivered_upto: Callable[[], int],
        notify: Callable[[LineEvent], None],
    ) -> None:
        self._acknowledged_upto = acknowledged_upto
        self._delivered_upto = delivered_upto
        self._notify = notify
        self._due: list[tuple[float, int, float]] = []
        self._changed = trio.Event()

    def add(self, seq: int, ack_within: float, *, since: float) -> None:
        """Expect an acknowledged receipt covering ``seq`` by ``since + ack_within`` (trio's
        clock; ``since`` is when ``send()`` was called)."""
        if seq <= self._acknowledged_upto():
            return
        heapq.heappush(self._due, (since + ack_within, seq, ack_within))
        self._changed.set()

    async def run(self) -> None:
        """Report each deadline that passes unacknowledged; runs until cancelled."""
        while True:
            now = trio.current_time()
            while self._due and self._due[0][0] <= now:
                _, seq, ack_within = heapq.heappop(self._due)
                if seq > self._acknowledged_upto():
                    self._notify(AckOverdue(seq, ack_within, seq <= self._delivered_upto()))
            self._changed = trio.Event()
            with trio.move_on_at(self._due[0][0] if self._due else math.inf):
                await self._changed.wait()
