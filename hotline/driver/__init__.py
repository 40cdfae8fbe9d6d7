"""The trio driver: lines, listeners and the network side, over the sans-io core."""

from ._line import (
    DIAL_REPORT_INTERVAL,
    Line,
    Message,
    Outgoing,
    PeerState,
    Stats,
    authenticate,
    open_line,
)
from ._listener import PENDING_PER_SOURCE, Listener, open_listener

__all__ = [
    "DIAL_REPORT_INTERVAL",
    "PENDING_PER_SOURCE",
    "Line",
    "Listener",
    "Message",
    "Outgoing",
    "PeerState",
    "Stats",
    "authenticate",
    "open_line",
    "open_listener",
]
