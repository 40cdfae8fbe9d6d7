"""hotline: a secure line between two parties who trust no one in the middle.

Signed, encrypted, sequenced messages between two nodes, with heartbeat liveness and
delivery receipts, and no server in the middle. The protocol core (this package's eager
imports) is sans-io and imports neither trio nor sqlite3; the trio driver and the SQLite
store are imported on first use of their names.
"""

from __future__ import annotations

from ._config import Config
from ._connection import PROLOGUE, PROTOCOL_NAME, Connection, ConnectionState, Role
from ._errors import (
    AuthenticationError,
    HotlineError,
    KeyFileError,
    LineBroken,
    LineClosed,
    LocalProtocolError,
    MessageTooLarge,
    OutboxFull,
    RemoteProtocolError,
    StoreError,
    StoreMismatch,
    StoreVersionError,
    TranscriptError,
)
from ._events import (
    NEED_DATA,
    ConnectionBroken,
    Event,
    Liveness,
    LivenessChanged,
    MessageReceived,
    NeedData,
    PeerAuthenticated,
    PeerClosed,
    ReceiptReceived,
    RoundTrip,
)
from ._keys import Identity, PublicKey, line_id
from ._records import (
    GENESIS_HEAD,
    Receipt,
    ReceiptKind,
    SignedMessage,
    open_message,
    open_receipt,
    sign_message,
    sign_receipt,
)
from ._state import LineState

__version__ = "0.1.0"

__all__ = [
    "GENESIS_HEAD",
    "NEED_DATA",
    "PROLOGUE",
    "PROTOCOL_NAME",
    "AuthenticationError",
    "Config",
    "Connection",
    "ConnectionBroken",
    "ConnectionState",
    "Event",
    "HotlineError",
    "Identity",
    "KeyFileError",
    "LineBroken",
    "LineClosed",
    "LineState",
    "Liveness",
    "LivenessChanged",
    "LocalProtocolError",
    "MessageReceived",
    "MessageTooLarge",
    "NeedData",
    "OutboxFull",
    "PeerAuthenticated",
    "PeerClosed",
    "PublicKey",
    "Receipt",
    "ReceiptKind",
    "ReceiptReceived",
    "RemoteProtocolError",
    "Role",
    "RoundTrip",
    "SignedMessage",
    "StoreError",
    "StoreMismatch",
    "StoreVersionError",
    "TranscriptError",
    "line_id",
    "open_message",
    "open_receipt",
    "sign_message",
    "sign_receipt",
]
