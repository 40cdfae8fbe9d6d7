"""The sans-io core of hotline: the line protocol of docs/protocol.md, with no I/O.

Nothing in this folder imports trio or sqlite3, touches a socket or reads a clock (a test
walks it): bytes and ``now`` go in, events and bytes come out. The trio driver and the stores
build on the names re-exported here; the modules behind them are private.
"""

from .._config import MAX_BURST_MESSAGES, MAX_BURST_UNSIGNED_BYTES
from ._codec import FLAG_FINAL, FLAG_REKEY, MAX_CONTENT, MAX_PLAINTEXT
from ._connection import Connection
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
    SignaturesToCheck,
)
from ._handshake import PROLOGUE, PROTOCOL_NAME, handshake_prologue
from ._linestate import SENT_HEAD_WINDOW, LineState
from ._liveness import MAX_OUTSTANDING_PINGS, MIN_REQUESTED_INTERVAL
from ._machines import TERMINAL_STATES, ConnectionState, Role
from ._noise import MAX_MESSAGE_LEN, TAG_LEN, CipherState, HandshakeState
from ._records import (
    DOMAIN_MESSAGE,
    DOMAIN_RECEIPT,
    GENESIS_HEAD,
    HASH_SIZE,
    MAX_STR_LEN,
    MessageProof,
    Receipt,
    ReceiptKind,
    SignatureBatch,
    SignedMessage,
    check_message_proof,
    cover_message,
    decode_message,
    message_hash,
    open_message,
    open_receipt,
    pack,
    sign_message,
    sign_receipt,
    strict_unpack,
    unsigned_message,
    verify_message,
)
from ._transport import MAX_RECORD_FIELDS, REPLACED, T_GOODBYE, T_MESSAGE, T_PING, T_RECEIPT

__all__ = [
    "DOMAIN_MESSAGE",
    "DOMAIN_RECEIPT",
    "FLAG_FINAL",
    "FLAG_REKEY",
    "GENESIS_HEAD",
    "HASH_SIZE",
    "MAX_BURST_MESSAGES",
    "MAX_BURST_UNSIGNED_BYTES",
    "MAX_CONTENT",
    "MAX_MESSAGE_LEN",
    "MAX_OUTSTANDING_PINGS",
    "MAX_PLAINTEXT",
    "MAX_RECORD_FIELDS",
    "MAX_STR_LEN",
    "MIN_REQUESTED_INTERVAL",
    "NEED_DATA",
    "PROLOGUE",
    "PROTOCOL_NAME",
    "REPLACED",
    "SENT_HEAD_WINDOW",
    "TAG_LEN",
    "TERMINAL_STATES",
    "T_GOODBYE",
    "T_MESSAGE",
    "T_PING",
    "T_RECEIPT",
    "CipherState",
    "Connection",
    "ConnectionBroken",
    "ConnectionState",
    "Event",
    "HandshakeState",
    "LineState",
    "Liveness",
    "LivenessChanged",
    "MessageProof",
    "MessageReceived",
    "NeedData",
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
    "check_message_proof",
    "cover_message",
    "decode_message",
    "handshake_prologue",
    "message_hash",
    "open_message",
    "open_receipt",
    "pack",
    "sign_message",
    "sign_receipt",
    "strict_unpack",
    "unsigned_message",
    "verify_message",
]
