"""Heartbeats and the peer's liveness: one small object, fed with what happened.

Theory of operation
-------------------
:class:`PeerLiveness` never reads a clock and never writes a byte. The transport tells it
what happened, each with ``now``: a transport message was :meth:`~PeerLiveness.heard`, a ping
was received (:meth:`~PeerLiveness.ping_received`) or sent (:meth:`~PeerLiveness.next_ping`),
the driver :meth:`~PeerLiveness.held` or :meth:`~PeerLiveness.released` its reading; and
:meth:`~PeerLiveness.advance` runs the silence timers. Its states and their transitions are
the liveness table in ``_machines.py``.

Heartbeats run as BFD's asynchronous mode: each side pings on its own timer and nothing
answers, so an idle line carries one frame per interval each way. Each ping asks for the
sender's own interval: a side detects silence on its own schedule only if the peer pings at
least that often, so both ping at the shorter of the two. The round trip comes as in RTCP
(RFC 3550, LSR/DLSR): each ping echoes the newest ping received and how long it was held
since, so ``rtt = now - sent - hold``.

While the driver holds its reading (its application is behind), silence proves nothing:
suspect and down detection pause until it reads again, and the silence clock then restarts.
Pings still go out, so the peer keeps hearing from us.
"""

from __future__ import annotations

import copy

from .._config import Config
from .._errors import RemoteProtocolError
from ._events import Liveness, LivenessChanged, RoundTrip
from ._machines import LivenessInput, next_liveness

__all__ = ["MAX_OUTSTANDING_PINGS", "MIN_REQUESTED_INTERVAL", "PeerLiveness"]

# Our pings whose echo we still wait for; a peer that echoes none is declared down long
# before this fills (it is only the source of round-trip samples).
MAX_OUTSTANDING_PINGS = 16
#: The shortest interval between our pings that a peer can ask for: an authenticated peer
#: that asks for more draws at most this many pings a second.
MIN_REQUESTED_INTERVAL = 0.01


class PeerLiveness:
    """The peer's liveness and our heartbeat, from the moment a connection opens."""

    def __init__(self, config: Config, now: float, *, held: bool = False) -> None:
        self._config = config
        self.state = next_liveness(Liveness.CONNECTING, LivenessInput.OPENED)
        self._held = held
        self._last_heard = now
        self._last_ping_at = now
        self._ping_interval = config.heartbeat_interval
        self._ping_id = 0
        self._pings: dict[int, float] = {}  # ping id -> when we sent it
        self._peer_ping_id = 0  # The peer's newest ping, echoed in ours.
        self._peer_ping_at = now
        self.rtt: float | None = None
        self.smoothed_rtt: float | None = None

    def copy(self) -> PeerLiveness:
        clone = copy.copy(self)
        clone._pings = dict(self._pings)
        return clone

    @property
    def outstanding_pings(self) -> int:
        return len(self._pings)

    # --- inputs -----------------------------------------------------------------------

    def heard(self, now: float) -> LivenessChanged | None:
        """An authentic transport message arrived (before anything in it is checked)."""
        silent = now - self._last_heard
        self._last_heard = now
        before = self.state
        self.state = next_liveness(before, LivenessInput.HEARD)
        return LivenessChanged(self.state, silent) if self.state is not before else None

    def held(self) -> None:
        self._held = True

    def released(self, now: float) -> None:
        if self._held:
            self._held = False
            self._last_heard = max(self._last_heard, now)

    def ping_received(
        self, ping_id: int, echo_id: int, hold_us: int, interval_us: int, now: float
    ) -> RoundTrip | None:
        """Take the peer's ping: its interval request, and a round-trip sample if it echoes
        one of ours."""
        if ping_id <= self._peer_ping_id:
            raise RemoteProtocolError("ping ids must increase")
        if echo_id > self._ping_id:
            raise RemoteProtocolError("a ping echoes a ping that was never sent")
        if interval_us == 0:
            raise RemoteProtocolError("a ping asks for an interval of 0")
        self._peer_ping_id = ping_id
        self._peer_ping_at = now
        # The next ping is then due one new interval after the last (see ping_at()).
        self._ping_interval = min(
            self._config.heartbeat_interval,
            max(interval_us / 1_000_000, MIN_REQUESTED_INTERVAL),
        )
        sent_at = self._pings.get(echo_id)
        if sent_at is None:
            return None  # No echo yet, one already sampled, or a ping too old to be tracked.
        for old in [key for key in self._pings if key <= echo_id]:
            del self._pings[old]
        rtt = now - sent_at - hold_us / 1_000_000
        if rtt < 0:
            # The peer's clock runs a little fast against ours (or it claims a hold it did
            # not have): no sample, and nothing worse, as the peer controls its hold anyway.
            return None
        self.rtt = rtt
        # RFC 6298's smoothing (alpha = 1/8).
        self.smoothed_rtt = rtt if self.smoothed_rtt is None else (
            0.875 * self.smoothed_rtt + 0.125 * rtt
        )
        return RoundTrip(rtt, self.smoothed_rtt)

    def next_ping(self, now: float) -> tuple[int, int, int, int]:
        """The fields of the ping we send now: its id, the echo, the hold and our interval."""
        self._ping_id += 1
        self._pings[self._ping_id] = now
        if len(self._pings) > MAX_OUTSTANDING_PINGS:
            del self._pings[min(self._pings)]
        hold_us = 0
        if self._peer_ping_id:
            hold_us = max(0, int((now - self._peer_ping_at) * 1_000_000))
        interval_us = max(1, round(self._config.heartbeat_interval * 1_000_000))
        return self._ping_id, self._peer_ping_id, hold_us, interval_us

    def ping_timer_restarted(self, now: float) -> None:
        """A ping went out, or was queued behind unsent output: the next is due from ``now``."""
        self._last_ping_at = now

    # --- timers -----------------------------------------------------------------------

    # advance() compares ``now`` with these very expressions, never with a difference such
    # as ``now - last_heard``: in floating point the two can disagree, and a deadline that
    # has passed but does not fire would make a driver spin at one instant.
    def _down_at(self) -> float:
        return self._last_heard + self._config.down_after

    def _suspect_at(self) -> float:
        return self._last_heard + self._config.suspect_after * self._config.heartbeat_interval

    def ping_at(self) -> float:
        return self._last_ping_at + self._ping_interval

    def next_deadline(self) -> float:
        """The earliest of the ping timer and the silence timers (which do not run while
        the driver holds its reading).

        Asked after every read and every wake-up of an idle line: it compares plain floats
        rather than building a list of them.
        """
        deadline = self.ping_at()
        if self._held:
            return deadline
        down_at = self._down_at()
        if down_at < deadline:
            deadline = down_at
        if self.state is Liveness.UP:
            suspect_at = self._suspect_at()
            if suspect_at < deadline:
                return suspect_at
        return deadline

    def advance(self, now: float) -> LivenessChanged | None:
        """Run the silence timers due at ``now``; the peer may now be suspect or down."""
        if self._held:
            return None
        silent = now - self._last_heard
        if now >= self._down_at():
            self.state = next_liveness(self.state, LivenessInput.DOWN_TIMER)
            return LivenessChanged(self.state, silent)
        if self.state is Liveness.UP and now >= self._suspect_at():
            self.state = next_liveness(self.state, LivenessInput.SUSPECT_TIMER)
            return LivenessChanged(self.state, silent)
        return None
