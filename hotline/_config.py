"""Tunable timing and size limits of a connection, with their documented defaults.

The defaults and the reasons for them are listed in docs/protocol.md ("Timers and limits").
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import LocalProtocolError

__all__ = ["Config"]

#: The most received messages whose signatures are checked in one batch (bounds the latency
#: a batch adds); see ``signature_batch``.
MAX_SIGNATURE_BATCH = 256


@dataclass(frozen=True, slots=True)
class Config:
    """Per-connection settings. Both sides may choose their own; none must match."""

    heartbeat_interval: float = 1.0
    """Seconds between pings. Any authenticated traffic from the peer counts as proof of life."""
    heartbeat_multiplier: float = 3.0
    """The peer is *down* after ``interval x multiplier`` seconds of silence (BFD's rule)."""
    suspect_after: float = 1.5
    """The peer is *suspect* after this many intervals of silence (one heartbeat missed)."""
    handshake_timeout: float = 10.0
    """Seconds from the connection's start until the handshake must be complete."""
    rekey_after_messages: int = 2**20
    """Transport messages sent under one key before this side rekeys its sending direction."""
    rekey_after_seconds: float = 120.0
    """Seconds under one key before this side rekeys its sending direction (WireGuard: 120 s)."""
    max_body_size: int = 1 << 20
    """Largest message body this side sends or accepts (bytes)."""
    padding: int = 64
    """Pad every transport plaintext up to a multiple of this many bytes; 0 turns padding off."""

    # The settings below are the trio driver's (hotline.open_line); the sans-io core ignores them.
    reconnect_initial: float = 0.1
    """Seconds before the first redial after a connection ends."""
    reconnect_max: float = 5.0
    """The cap of the exponential redial backoff (WireGuard retries its handshake every 5 s)."""
    reconnect_jitter: float = 0.25
    """Each backoff delay is scaled by a random factor in [1 - jitter, 1]."""
    connect_timeout: float = 5.0
    """Seconds to wait for a TCP connection to be established."""
    outbox_limit: int = 1024
    """Our messages held without a delivered receipt before send() waits (or raises)."""
    outbox_limit_bytes: int = 64 << 20
    """The same limit in bytes of message bodies."""
    inbox_window: int = 1024
    """Received messages the application has not consumed before the line stops reading."""
    max_pending_handshakes: int = 32
    """A listener's bound on connections that have not finished their handshake."""
    handshake_rate: float = 20.0
    """Handshakes a listener starts per second per source address (WireGuard: 20)."""
    handshake_burst: int = 5
    """How many handshakes from one address may start at once before the rate applies."""
    signature_batch: int = 0
    """Bursts of at least this many received messages have their signatures checked together
    in a worker thread (a second core); smaller ones at once. 0 (the default) checks every one
    at once: the thread only pays where the receiving process has an idle core."""
    unsent_limit: int = 1 << 20
    """Bytes of encrypted output a connection holds for the peer before it holds back its
    messages (the sans-io core applies it too). Receipts and pings never add to it beyond the
    newest receipt of each kind and one ping, so output stays under this plus one message."""
    inbox_window_bytes: int = 64 << 20
    """Bytes of received message bodies the application has not consumed before the line
    stops reading (beside ``inbox_window``, which counts messages)."""

    def __post_init__(self) -> None:
        if not self.heartbeat_interval > 0:
            raise LocalProtocolError("heartbeat_interval must be > 0")
        if not self.heartbeat_multiplier >= 1:
            raise LocalProtocolError("heartbeat_multiplier must be >= 1")
        if not 0 < self.suspect_after <= self.heartbeat_multiplier:
            raise LocalProtocolError("suspect_after must be in (0, heartbeat_multiplier]")
        if not self.handshake_timeout > 0:
            raise LocalProtocolError("handshake_timeout must be > 0")
        if not 1 <= self.rekey_after_messages < 2**63:
            raise LocalProtocolError("rekey_after_messages must be >= 1")
        if not self.rekey_after_seconds > 0:
            raise LocalProtocolError("rekey_after_seconds must be > 0")
        if not 0 <= self.max_body_size <= 1 << 30:
            raise LocalProtocolError("max_body_size must be between 0 and 1 GiB")
        if not 0 <= self.padding <= 4096:
            raise LocalProtocolError("padding must be between 0 and 4096")
        if not 0 < self.reconnect_initial <= self.reconnect_max:
            raise LocalProtocolError("need 0 < reconnect_initial <= reconnect_max")
        if not 0 <= self.reconnect_jitter < 1:
            raise LocalProtocolError("reconnect_jitter must be in [0, 1)")
        if not self.connect_timeout > 0:
            raise LocalProtocolError("connect_timeout must be > 0")
        if self.outbox_limit < 1 or self.outbox_limit_bytes < self.max_body_size:
            raise LocalProtocolError("the outbox must hold at least one message of maximum size")
        if self.inbox_window < 1 or self.max_pending_handshakes < 1:
            raise LocalProtocolError("inbox_window and max_pending_handshakes must be >= 1")
        if not self.handshake_rate > 0 or self.handshake_burst < 1:
            raise LocalProtocolError("need handshake_rate > 0 and handshake_burst >= 1")
        if self.signature_batch != 0 and not 2 <= self.signature_batch <= MAX_SIGNATURE_BATCH:
            raise LocalProtocolError(f"signature_batch must be 0 or 2 to {MAX_SIGNATURE_BATCH}")
        if self.unsent_limit < 1 or self.inbox_window_bytes < 1:
            raise LocalProtocolError("unsent_limit and inbox_window_bytes must be >= 1")

    @property
    def down_after(self) -> float:
        """Seconds of silence after which the peer is declared down."""
        return self.heartbeat_interval * self.heartbeat_multiplier

    @property
    def max_record_size(self) -> int:
        """Largest reassembled record accepted: a full message record plus its framing."""
        return self.max_body_size + 512
