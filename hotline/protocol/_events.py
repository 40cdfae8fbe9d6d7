"""Events that the sans-io :class:`~hotline.Connection` hands to its driver."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .._keys import PublicKey
from ._records import Receipt, SignatureBatch, SignedMessage

__all__ = [
    "NEED_DATA",
    "ConnectionBroken",
    "Event",
    "Liveness",
    "LivenessChanged",
    "MessageReceived",
    "NeedData",
    "PeerAuthenticated",
    "PeerClosed",
    "ReceiptReceived",
    "RoundTrip",
    "SignaturesToCheck",
]


class Liveness(enum.Enum):
    """What this side believes about the peer, from the traffic it has (not) seen."""

    CONNECTING = "connecting"
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class PeerAuthenticated:
    """The handshake proved who the peer is. The driver answers with ``Connection.start``."""

    peer: PublicKey
    initiation_timestamp: int | None
    """The initiator's timestamp (responder side only): must exceed the stored watermark."""
    handshake_hash: bytes
    """The initiator's final handshake hash. The responder's is the hash after message 1, as
    it has not written message 2 yet; ``Connection.handshake_hash`` is final after start()."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A new message, verified (signature, sequence, chain), in order, never seen before."""

    message: SignedMessage


@dataclass(frozen=True, slots=True)
class SignaturesToCheck:
    """Only with :meth:`Connection.check_signatures_in_batches`: a burst of new messages waits
    for its signatures. Call ``batch.run()`` (in a worker thread if you like), then
    :meth:`Connection.signatures_checked`; until then the connection yields nothing more."""

    batch: SignatureBatch


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    """A verified receipt from the peer that covers more of our messages than before."""

    receipt: Receipt


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A ping echoed one of ours: the last and the smoothed round-trip time, in seconds."""

    rtt: float
    smoothed_rtt: float


@dataclass(frozen=True, slots=True)
class LivenessChanged:
    """The peer's liveness changed (up -> suspect -> down, or back up)."""

    state: Liveness
    silent_for: float


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer said goodbye: a clean close, told apart from a cut."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionBroken:
    """The connection failed underneath: end of stream without goodbye, peer down, timeout."""

    reason: str


Event = (
    PeerAuthenticated
    | MessageReceived
    | SignaturesToCheck
    | ReceiptReceived
    | RoundTrip
    | LivenessChanged
    | PeerClosed
    | ConnectionBroken
)


class NeedData:
    """Sentinel type: no complete event is buffered; feed more bytes."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()
