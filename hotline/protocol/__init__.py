"""Stand-in for the sans-io core's package: re-exports the core names the driver uses."""

from .._connection import Connection, ConnectionState, Role
from .._events import (
    NEED_DATA,
    REPLACED,
    ConnectionBroken,
    Liveness,
    LivenessChanged,
    MessageReceived,
    PeerAuthenticated,
    PeerClosed,
    ReceiptReceived,
    RoundTrip,
    SignaturesToCheck,
)
from .._records import (
    Receipt,
    ReceiptKind,
    SignatureBatch,
    SignedMessage,
    sign_message,
)
from .._state import LineState

__all__ = [
    "NEED_DATA",
    "REPLACED",
    "Connection",
    "ConnectionBroken",
    "ConnectionState",
    "LineState",
    "Liveness",
    "LivenessChanged",
    "MessageReceived",
    "PeerAuthenticated",
    "PeerClosed",
    "Receipt",
    "ReceiptKind",
    "ReceiptReceived",
    "Role",
    "RoundTrip",
    "SignatureBatch",
    "SignaturesToCheck",
    "SignedMessage",
    "sign_message",
]
