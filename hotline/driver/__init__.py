"""Stand-in for the driver package: re-exports from today's modules until it lands."""

from .._line import Line
from .._listener import PENDING_PER_SOURCE, Listener

__all__ = ["PENDING_PER_SOURCE", "Line", "Listener"]
