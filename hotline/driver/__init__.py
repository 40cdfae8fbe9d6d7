"""Stand-in for the driver package: re-exports from today's modules until it lands."""

from .._line import Line
from .._listener import Listener

__all__ = ["Line", "Listener"]
