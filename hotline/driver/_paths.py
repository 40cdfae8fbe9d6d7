"""Several paths per line: one active connection, hot standbys (docs/protocol.md, "Several
paths").

Theory of operation
-------------------
A line opened with several addresses (``connect=[...]``, ``listen=[...]``, or ``max_paths``
above 1) keeps one session per path, each a full :class:`~hotline.Connection` with its own
handshake, keys, heartbeat and round-trip time. Their connections share the line's marks
through one :class:`~hotline.protocol.PathGroup`, so what arrives on any path is received
once, in order, and a receipt counts whichever path brings it.

Exactly one path is *active* in our direction: the committer hands it what it stores, and the
others carry pings and the receipts their duplicates call for. :func:`choose_active` picks it:
a path that is up beats one that is suspect; among paths that are up the active one stays
unless another has a round-trip time shorter by :data:`RTT_MARGIN` of it (and by at least
:data:`RTT_MARGIN_FLOOR`), and not within :data:`DWELL` heartbeat intervals of the last
change of the active path (the first choice included), so two paths of about the same delay
do not take turns. The moment the active path
turns suspect, an up path takes over and resends everything the peer has not receipted; a
late copy on the old path is a duplicate, dropped by the receiver's line-wide sequencing.

Each side chooses for its own direction: nothing about the choice goes on the wire.

Paths come and go without replacing each other: a dialler per address redials its own path
when its session ends, with the usual backoff; an accepting side keeps every authenticated
connection as a path, up to ``max_paths``, and makes room for a new one by closing the
worst path that is not active (its peer most likely gave it up already).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from ..protocol import Liveness, PathGroup, RoundTrip
from ._events import LineEvent, PathState
from ._session import Session

__all__ = ["DWELL", "RTT_MARGIN", "RTT_MARGIN_FLOOR", "Path", "Paths", "choose_active"]

logger = logging.getLogger("hotline")

#: A healthy active path gives way only to one whose smoothed round trip is shorter by this
#: fraction of its own ...
RTT_MARGIN = 0.5
#: ... and by at least this many seconds (below it, a difference is scheduling noise).
RTT_MARGIN_FLOOR = 0.005
#: Heartbeat intervals after a switch during which a healthy active path is not switched
#: away from for a better round trip (a suspect one is left at once).
DWELL = 10.0

_RANK = {Liveness.UP: 0, Liveness.CONNECTING: 1, Liveness.SUSPECT: 2, Liveness.DOWN: 3}


@dataclass(eq=False)
class Path:
    """One path of a line: a session, and what watchers are told about it."""

    id: int
    label: str
    session: Session | None = None
    since: float = 0.0  # When it started.

    @property
    def liveness(self) -> Liveness:
        session = self.session
        return session.conn.liveness if session is not None else Liveness.CONNECTING

    @property
    def live(self) -> bool:
        return self.session is not None and self.session.live

    @property
    def smoothed_rtt(self) -> float | None:
        return self.session.smoothed_rtt if self.session is not None else None


def choose_active(
    paths: Sequence[Path], current: Path | None, *, now: float, switched_at: float,
    interval: float,
) -> Path | None:
    """The path that should carry our messages now (``current`` unless another is better)."""
    live = [path for path in paths if path.live]
    if not live:
        return None
    best = min(live, key=lambda path: (_RANK[path.liveness], _rtt_key(path), path.id))
    if current is None or not current.live:
        return best
    if _RANK[best.liveness] < _RANK[current.liveness]:
        return best  # The active path is suspect: leave it at once.
    if best is current or current.liveness is not Liveness.UP:
        return current
    if now < switched_at + DWELL * interval:
        return current
    best_rtt, current_rtt = best.smoothed_rtt, current.smoothed_rtt
    if best_rtt is None or current_rtt is None:
        return current
    if current_rtt - best_rtt > max(RTT_MARGIN * current_rtt, RTT_MARGIN_FLOOR):
        return best
    return current


def _rtt_key(path: Path) -> float:
    rtt = path.smoothed_rtt
    return math.inf if rtt is None else rtt


class Paths:
    """The paths of one line and which of them is active."""

    def __init__(
        self, max_paths: int, interval: float, notify: Callable[[LineEvent], None]
    ) -> None:
        self.max_paths = max_paths
        self._interval = interval
        self._notify = notify
        self.paths: list[Path] = []
        self.active: Path | None = None
        self.group = PathGroup()
        self._switched_at = -math.inf
        self._ids = itertools.count(1)

    def new_path(self, label: str) -> Path:
        return Path(next(self._ids), label)

    def group_for_new_path(self) -> PathGroup:
        """The marks a new connection joins: those of the open paths, or fresh ones (copied
        from the stored state) when none is open."""
        if not any(path.live for path in self.paths):
            self.group = PathGroup()
        return self.group

    def room_for(self) -> Path | None:
        """A path to close so that a new one fits within ``max_paths`` (None if it fits)."""
        if len(self.paths) < self.max_paths:
            return None
        others = [path for path in self.paths if path is not self.active] or self.paths
        return max(others, key=lambda path: (_RANK[path.liveness], -path.since))

    def add(self, path: Path) -> None:
        path.since = trio.current_time()
        self.paths.append(path)
        if path not in self.reselect(f"path {path.id} is up"):
            self._report(path, path.liveness, "a standby path")

    def remove(self, path: Path, reason: str) -> None:
        if path not in self.paths:
            return  # Closed to make room, and reported then.
        self.paths.remove(path)
        if self.active is path:
            self.active = None
        self._report(path, Liveness.DOWN, reason)
        self.reselect(f"path {path.id} is down")

    def liveness(self) -> Liveness:
        """The peer's liveness over all paths: up while any path is up."""
        if not self.paths:
            return Liveness.DOWN
        return min((path.liveness for path in self.paths), key=_RANK.__getitem__)

    def reselect(self, reason: str) -> tuple[Path, ...]:
        """Make the best path active (see :func:`choose_active`); returns the paths whose
        change it reported (none if the active path stays)."""
        now = trio.current_time()
        chosen = choose_active(self.paths, self.active, now=now,
                               switched_at=self._switched_at, interval=self._interval)
        old = self.active
        if chosen is None or chosen is old:
            return ()
        assert chosen.session is not None
        if old is not None and old.session is not None:
            old.session.conn.deactivate()
        chosen.session.conn.activate()
        chosen.session.kick()
        self.active = chosen
        self._switched_at = now
        self._report(chosen, chosen.liveness, reason)
        if old is None:
            return (chosen,)
        logger.info("path %d is active instead of path %d (%s)", chosen.id, old.id, reason)
        self._report(old, old.liveness, reason)
        return (chosen, old)

    def liveness_changed(self, path: Path, state: Liveness, reason: str) -> None:
        if path not in self.reselect(f"path {path.id} is {state.value}"):
            self._report(path, state, reason)

    def round_trip(self, event: RoundTrip) -> bool:
        """A new round trip may make another path the better one: whether it did."""
        if len(self.paths) == 1 and self.active is self.paths[0]:
            # Every ping brings one, and with one path that is active there is nothing to
            # choose between: choose_active() would keep it.
            return False
        return bool(self.reselect("a shorter round trip"))

    def _report(self, path: Path, state: Liveness, reason: str) -> None:
        rtt = path.session.rtt if path.session is not None else None
        self._notify(PathState(path.id, path.label, state, rtt, path is self.active, reason))
