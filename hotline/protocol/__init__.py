"""Stand-in for the sans-io core package: re-exports the core names the stores, the verifier
and the demo use, from the modules where they live today."""

from .._connection import MIN_REQUESTED_INTERVAL
from .._events import Liveness, ReceiptReceived, RoundTrip
from .._records import (
    GENESIS_HEAD,
    HASH_SIZE,
    Receipt,
    ReceiptKind,
    SignedMessage,
    open_message,
    open_receipt,
)
from .._state import SENT_HEAD_WINDOW, LineState

__all__ = [
    "GENESIS_HEAD",
    "HASH_SIZE",
    "MIN_REQUESTED_INTERVAL",
    "SENT_HEAD_WINDOW",
    "LineState",
    "Liveness",
    "Receipt",
    "ReceiptKind",
    "ReceiptReceived",
    "RoundTrip",
    "SignedMessage",
    "open_message",
    "open_receipt",
]
