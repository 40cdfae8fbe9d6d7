"""What a :class:`~hotline.testing.FaultProxy` injects, and what it counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["CLEAN", "DirectionStats", "Faults", "ProxyStats"]


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults of one direction of the proxy. The default injects nothing.

    Probabilities are per chunk (a read from the socket) or per connection, as marked.
    """

    latency: float = 0.0
    """Seconds every delayed chunk is held back."""
    jitter: float = 0.0
    """Extra delay, uniform in ``[0, jitter)`` seconds per delayed chunk (order is kept)."""
    delay_probability: float = 1.0
    """Per chunk: the chance that ``latency`` and ``jitter`` apply to it."""
    bandwidth: float | None = None
    """Bytes per second this direction may carry (None: unlimited)."""
    bandwidth_probability: float = 1.0
    """Per connection: the chance that ``bandwidth`` applies to it."""
    slice_probability: float = 0.0
    """Per chunk: the chance that it is forwarded in tiny segments."""
    max_segment: int = 7
    """Largest segment of a sliced chunk (segments are 1 to ``max_segment`` bytes)."""
    cut_probability: float = 0.0
    """Per connection: the chance of a reset at an offset uniform in ``[0, strike_within)``."""
    blackhole_probability: float = 0.0
    """Per connection: the chance of a black hole from an offset in ``[0, strike_within)``."""
    strike_within: int = 16384
    """Cuts and black holes strike at a byte offset (of this direction) below this."""
    close_probability: float = 0.0
    """Per connection: the chance of a half-close after exactly ``close_after`` bytes."""
    close_after: int = 0
    """Bytes of this direction forwarded before a half-close."""
    bitflip_probability: float = 0.0
    """Per chunk: the chance that one random bit of it is flipped."""
    replay_probability: float = 0.0
    """Per chunk: the chance that an earlier chunk of this direction is sent again before it."""
    connections: int | None = None
    """Only the first this many connections of the proxy are faulty (None: all of them)."""
    buffer: int = 256 * 1024
    """Bytes a direction holds (read, not yet forwarded) before it stops reading, so that a
    slow or delayed direction pushes back on the sender through TCP, as a router queue does."""

    def __post_init__(self) -> None:
        probabilities = (
            self.delay_probability, self.bandwidth_probability, self.slice_probability,
            self.cut_probability, self.blackhole_probability, self.close_probability,
            self.bitflip_probability, self.replay_probability,
        )
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError("probabilities must be in [0, 1]")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ValueError("bandwidth must be > 0 bytes per second")
        if self.buffer < 1:
            raise ValueError("buffer must be >= 1 byte")
        if self.max_segment < 1 or self.strike_within < 1 or self.close_after < 0:
            raise ValueError("need max_segment >= 1, strike_within >= 1, close_after >= 0")
        if self.connections is not None and self.connections < 0:
            raise ValueError("connections must be >= 0")


CLEAN = Faults()


@dataclass
class DirectionStats:
    """Counters of one direction, over every connection of the proxy."""

    bytes_read: int = 0
    bytes_forwarded: int = 0
    """Bytes written to the receiver, replayed ones included."""
    bytes_dropped: int = 0
    """Bytes read and never forwarded (black hole, after a half-close, after a cut)."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults injected, by kind."""


@dataclass
class ProxyStats:
    """Counters of a :class:`FaultProxy` since it started."""

    connections: int = 0
    upstream: DirectionStats = field(default_factory=DirectionStats)
    downstream: DirectionStats = field(default_factory=DirectionStats)

    @property
    def faults(self) -> Counter[str]:
        """Faults injected, by ``"upstream.kind"`` / ``"downstream.kind"``."""
        total: Counter[str] = Counter()
        for name, stats in (("upstream", self.upstream), ("downstream", self.downstream)):
            for kind, count in stats.faults.items():
                total[f"{name}.{kind}"] += count
        return total
