"""hotline: a secure line between two parties who trust no one in the middle.

Signed, encrypted, sequenced messages between two nodes, with heartbeat liveness and
delivery receipts, and no server in the middle. The protocol core is sans-io and imports
neither trio nor sqlite3.

Every name is loaded on first use (PEP 562), so ``import hotline`` itself loads nothing: the
``hotline`` command starts handling its signals before cryptography, nacl and trio load (see
hotline.cli), and a program that uses only the core never loads the driver or the store.
"""

__version__ = "0.1.0"

# Not typing.TYPE_CHECKING: importing typing takes milliseconds, and this module runs before
# the command line can handle a Ctrl-C. Type checkers treat this name as true.
TYPE_CHECKING = False

_LAZY = {
    "Config": "_config",
    "AuthenticationError": "_errors",
    "ConnectionBrokenError": "_errors",
    "ConnectionClosedError": "_errors",
    "HotlineError": "_errors",
    "KeyFileError": "_errors",
    "LineBroken": "_errors",
    "LineClosed": "_errors",
    "LocalProtocolError": "_errors",
    "MessageTooLarge": "_errors",
    "OutboxFull": "_errors",
    "RemoteProtocolError": "_errors",
    "StoreError": "_errors",
    "StoreInconsistent": "_errors",
    "StoreLocked": "_errors",
    "StoreMismatch": "_errors",
    "StoreVersionError": "_errors",
    "TranscriptError": "_errors",
    "Identity": "_keys",
    "PublicKey": "_keys",
    "line_id": "_keys",
    "GENESIS_HEAD": "protocol",
    "NEED_DATA": "protocol",
    "PROLOGUE": "protocol",
    "PROTOCOL_NAME": "protocol",
    "Connection": "protocol",
    "ConnectionBroken": "protocol",
    "ConnectionState": "protocol",
    "Event": "protocol",
    "LineState": "protocol",
    "Liveness": "protocol",
    "LivenessChanged": "protocol",
    "MessageReceived": "protocol",
    "NeedData": "protocol",
    "PeerAuthenticated": "protocol",
    "PeerClosed": "protocol",
    "Receipt": "protocol",
    "ReceiptKind": "protocol",
    "ReceiptReceived": "protocol",
    "Role": "protocol",
    "RoundTrip": "protocol",
    "SignatureBatch": "protocol",
    "SignaturesToCheck": "protocol",
    "SignedMessage": "protocol",
    "MessageProof": "protocol",
    "check_message_proof": "protocol",
    "open_message": "protocol",
    "open_receipt": "protocol",
    "sign_message": "protocol",
    "sign_receipt": "protocol",
    "Batch": "store",
    "Direction": "store",
    "MemoryStore": "store",
    "Store": "store",
    "TranscriptEntry": "store",
    "SQLiteStore": "store",
    "AckOverdue": "driver",
    "DialFailed": "driver",
    "Line": "driver",
    "Message": "driver",
    "Outgoing": "driver",
    "PeerState": "driver",
    "Stats": "driver",
    "open_line": "driver",
    "Listener": "driver",
    "open_listener": "driver",
    "EvidenceError": "_errors",
    "EvidenceReport": "_evidence",
    "MessageEvidence": "_evidence",
    "check_evidence": "_evidence",
    "export_evidence": "_evidence",
    "VerifyReport": "_verify",
    "verify_store": "_verify",
    "verify_transcript": "_verify",
    "message_proof": "_verify",
    "History": "_history",
    "HistoryEntry": "_history",
    "HistoryMessage": "_history",
    "HistoryReceipt": "_history",
    "open_history": "_history",
    "AsyncioLine": "_aio",
    "AsyncioOutgoing": "_aio",
    "open_asyncio_line": "_aio",
    "BlockingLine": "_blocking",
    "BlockingOutgoing": "_blocking",
    "open_blocking_line": "_blocking",
}


# The subpackages that importing the core used to make attributes of the package.
_SUBPACKAGES = ("protocol", "store")


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hotline' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})


if TYPE_CHECKING:
    from ._aio import (
        AsyncioLine,
        AsyncioOutgoing,
        open_asyncio_line,
    )
    from ._blocking import (
        BlockingLine,
        BlockingOutgoing,
        open_blocking_line,
    )
    from ._config import (
        Config,
    )
    from ._errors import (
        AuthenticationError,
        ConnectionBrokenError,
        ConnectionClosedError,
        EvidenceError,
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
    from ._evidence import (
        EvidenceReport,
        MessageEvidence,
        check_evidence,
        export_evidence,
    )
    from ._history import (
        History,
        HistoryEntry,
        HistoryMessage,
        HistoryReceipt,
        open_history,
    )
    from ._keys import (
        Identity,
        PublicKey,
        line_id,
    )
    from ._verify import (
        VerifyReport,
        message_proof,
        verify_store,
        verify_transcript,
    )
    from .driver import (
        AckOverdue,
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
        MessageProof,
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
        check_message_proof,
        open_message,
        open_receipt,
        sign_message,
        sign_receipt,
    )
    from .store import (
        Batch,
        Direction,
        MemoryStore,
        SQLiteStore,
        Store,
        TranscriptEntry,
    )

__all__ = [
    "GENESIS_HEAD",
    "AckOverdue",
    "EvidenceError",
    "EvidenceReport",
    "MessageEvidence",
    "check_evidence",
    "export_evidence",
    "AsyncioLine",
    "AsyncioOutgoing",
    "BlockingLine",
    "BlockingOutgoing",
    "History",
    "HistoryEntry",
    "HistoryMessage",
    "HistoryReceipt",
    "open_asyncio_line",
    "open_blocking_line",
    "open_history",
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
    "message_proof",
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
    "MessageProof",
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
    "check_message_proof",
    "line_id",
    "open_message",
    "open_receipt",
    "sign_message",
    "sign_receipt",
]
