"""Stand-in for the trio driver package: re-exports from today's modules until it lands."""

from .._line import Line, PeerState, open_line
from .._listener import PENDING_PER_SOURCE, Listener

__all__ = ["PENDING_PER_SOURCE", "Line", "Listener", "PeerState", "open_line"]
