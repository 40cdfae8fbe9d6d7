"""Stand-in for the trio driver package: re-exports the driver names the demo uses, from the
modules where they live today."""

from .._line import Line, PeerState, open_line

__all__ = ["Line", "PeerState", "open_line"]
