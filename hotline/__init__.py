"""hotline: a secure line between two parties who trust no one in the middle.

Signed, encrypted, sequenced messages between two nodes, with heartbeat liveness and
delivery receipts, and no server in the middle. The protocol core (this package's eager
imports) is sans-io and imports neither trio nor sqlite3; the trio driver and the SQLite
store are imported on first use of their names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._config import Config
from ._errors import (
    AuthenticationError,
    ConnectionBrokenError,
    ConnectionClosedError,
    HotlineError,
    KeyFileError,
    LineBroken,
    LineClosed,
    LocalProtocolError,
    MessageTooLarge,
    OutboxFull,
    RemoteProtocolError,
    StoreError,
    StoreInconsistent,
    StoreLocked,
    StoreMismatch,
    StoreVersionError,
    TranscriptError,
)
from ._keys import Identity, PublicKey, line_id
from .protocol import (
    GENESIS_HEAD,
    NEED_DATA,
    PROLOGUE,
    PROTOCOL_NAME,
    Connection,
    ConnectionBroken,
    ConnectionState,
    Event,
    LineState,
    Liveness,
    LivenessChanged,
    MessageReceived,
    NeedData,
    PeerAuthenticated,
    PeerClosed,
    Receipt,
    ReceiptKind,
    ReceiptReceived,
    Role,
    RoundTrip,
    SignatureBatch,
    SignaturesToCheck,
    SignedMessage,
    open_message,
    open_receipt,
    sign_message,
    sign_receipt,
)
from .store import Batch, Direction, MemoryStore, Store, TranscriptEntry

__version__ = "0.1.0"

# The driver, the listener, the SQLite store and the verifier import trio or sqlite3, so they
# load on first use of their names (PEP 562): the sans-io core above stays free of both.
_LAZY = {
    "DialFailed": "driver",
    "Line": "driver",
    "Message": "driver",
    "Outgoing": "driver",
    "PeerState": "driver",
    "Stats": "driver",
    "open_line": "driver",
    "Listener": "driver",
    "open_listener": "driver",
    "SQLiteStore": "store",
    "VerifyReport": "_verify",
    "verify_store": "_verify",
    "verify_transcript": "_verify",
}


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hotline' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:
    from ._verify import VerifyReport, verify_store, verify_transcript
    from .driver import (
        DialFailed,
        Line,
        Listener,
        Message,
        Outgoing,
        PeerState,
        Stats,
        open_line,
        open_listener,
    )
    from .store import SQLiteStore

__all__ = [
    "GENESIS_HEAD",
    "Batch",
    "Direction",
    "Line",
    "Listener",
    "MemoryStore",
    "Message",
    "Outgoing",
    "PeerState",
    "SQLiteStore",
    "Stats",
    "Store",
    "TranscriptEntry",
    "VerifyReport",
    "open_line",
    "open_listener",
    "verify_store",
    "verify_transcript",
    "NEED_DATA",
    "PROLOGUE",
    "PROTOCOL_NAME",
    "AuthenticationError",
    "Config",
    "Connection",
    "ConnectionBroken",
    "ConnectionBrokenError",
    "ConnectionClosedError",
    "ConnectionState",
    "DialFailed",
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
    "SignatureBatch",
    "SignaturesToCheck",
    "SignedMessage",
    "StoreError",
    "StoreInconsistent",
    "StoreLocked",
    "StoreMismatch",
    "StoreVersionError",
    "TranscriptError",
    "line_id",
    "open_message",
    "open_receipt",
    "sign_message",
    "sign_receipt",
]
