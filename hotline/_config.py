"""Tunable timing and size limits of a connection, with their documented defaults.

The defaults and the reasons for them are listed in docs/protocol.md ("Timers and limits").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ._errors import LocalProtocolError

__all__ = ["Config"]

#: The most received messages whose signatures are checked in one batch (bounds the latency
#: a batch adds); see ``signature_batch``.
MAX_SIGNATURE_BATCH = 256

#: The most messages in one burst: a run of messages sent without a signature of their own,
#: then the signed message that covers them (docs/protocol.md, "Bursts"). At 64 the one
#: signature check costs under 1 us per message of the burst, beside the ~40 us the rest of
#: receiving costs; a longer burst would save almost nothing more, and would make the
#: receiver hold more messages unreleased (and the application wait longer for them).
MAX_BURST_MESSAGES = 64

#: The most envelope bytes of the unsigned messages of one burst (the signed one is not
#: counted): what a receiver holds unreleased at most, whatever the body size limit. A
#: message that would carry the unsigned run past it is signed itself, so a burst of large
#: messages is a burst of one each, where one signature costs little beside the bytes.
MAX_BURST_UNSIGNED_BYTES = 1 << 20

#: The shortest heartbeat interval: the protocol's ping floor (docs/protocol.md, section 11;
#: ``hotline.protocol.MIN_REQUESTED_INTERVAL``). A peer never pings faster than this whatever we
#: ask, so with a shorter interval our silence thresholds (a few intervals) would expire
#: between two of its pings and a healthy line would flap between up and down.
MIN_HEARTBEAT_INTERVAL = 0.01

#: The smallest ``max_body_size``: an envelope's 32-byte fields (line id, sender, prev) are
#: decoded under the same length limit as the body, so below this no message decodes. (The
#: protocol's ``HASH_SIZE``, written out: the protocol imports this module, not the reverse.)
MIN_BODY_SIZE = 32

#: The longest goodbye record a receiver must take: its array and type bytes, a str16
#: header, and the 1,024 bytes of the longest reason the record decoder accepts (a sender
#: cuts its reason to 200 characters, up to 800 bytes of UTF-8). Small body limits would
#: otherwise refuse an honest goodbye as a record over the limit.
_LONGEST_GOODBYE_RECORD = 1 + 1 + 3 + 1024

# Longer durations are a slip of the unit (milliseconds for seconds), not a choice, and
# this bound keeps every deadline and the ping's microsecond field far from overflowing.
_MAX_SECONDS = 86_400.0
# Counts and byte sizes beyond these would exhaust memory long before they bound anything.
_MAX_COUNT = 1 << 30
_MAX_BYTES = 1 << 40


@dataclass(frozen=True, slots=True)
class _Range:
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        opening = "(" if self.low_open else "["
        closing = ")" if self.high_open else "]"
        return f"{opening}{self.low}, {self.high}{closing}"


def _seconds(low: float = 0.0, high: float = _MAX_SECONDS) -> _Range:
    """A duration: more than zero (or at least ``low``), at most ``high``."""
    return _Range(low, high, low_open=low == 0.0)


# Every field's range: a test checks that none is missing. Whether a field is a float (any
# finite real) or an int (an integer, not a bool) is read from its declaration.
_RANGES: dict[str, _Range] = {
    "heartbeat_interval": _seconds(MIN_HEARTBEAT_INTERVAL),
    "heartbeat_multiplier": _Range(1.0, 255.0),  # BFD's detection multiplier is one byte.
    "suspect_after": _Range(0.0, 255.0, low_open=True),
    "handshake_timeout": _seconds(),
    "rekey_after_messages": _Range(1, 2**63 - 1),
    "rekey_after_seconds": _seconds(),
    "max_body_size": _Range(MIN_BODY_SIZE, 1 << 30),
    "padding": _Range(0, 4096),
    "reconnect_initial": _seconds(),
    "reconnect_max": _seconds(),
    "reconnect_jitter": _Range(0.0, 1.0, high_open=True),
    "connect_timeout": _seconds(),
    "outbox_limit": _Range(1, _MAX_COUNT),
    "outbox_limit_bytes": _Range(1, _MAX_BYTES),
    "inbox_window": _Range(1, _MAX_COUNT),
    "max_pending_handshakes": _Range(1, _MAX_COUNT),
    "handshake_rate": _Range(0.0, 1e9, low_open=True),
    "handshake_burst": _Range(1, _MAX_COUNT),
    "signature_batch": _Range(0, MAX_SIGNATURE_BATCH),
    "unsent_limit": _Range(1, _MAX_BYTES),
    "inbox_window_bytes": _Range(1, _MAX_BYTES),
    # Never below the protocol's burst bounds: an honest sender may use all of them.
    "max_unsigned_run": _Range(MAX_BURST_MESSAGES - 1, _MAX_COUNT),
    "max_unsigned_run_bytes": _Range(MAX_BURST_UNSIGNED_BYTES, _MAX_BYTES),
}


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
    max_unsigned_run: int = MAX_BURST_MESSAGES - 1
    """Unsigned messages from the peer held, unreleased, until the signature that covers them
    arrives; a peer that sends more is refused. At least what the protocol lets a sender
    leave unsigned (``MAX_BURST_MESSAGES - 1``), so that every honest peer is accepted."""
    max_unsigned_run_bytes: int = MAX_BURST_UNSIGNED_BYTES
    """The same bound in envelope bytes (at least ``MAX_BURST_UNSIGNED_BYTES``)."""

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
    """Bursts of at least this many received signed messages have their signatures checked
    together in a worker thread (a second core); smaller ones at once. (Unsigned messages,
    covered by a later signature, cost no check of their own.) 0 (the default) checks every one
    at once: the thread only pays where the receiving process has an idle core."""
    unsent_limit: int = 1 << 20
    """Bytes of encrypted output a connection holds for the peer before it holds back its
    messages (the sans-io core applies it too). Receipts and pings never add to it beyond the
    newest receipt of each kind and one ping, so output stays under this plus one message."""
    inbox_window_bytes: int = 64 << 20
    """Bytes of received message bodies the application has not consumed before the line
    stops reading (beside ``inbox_window``, which counts messages)."""

    def __post_init__(self) -> None:
        for name, valid in _RANGES.items():
            _check_field(name, getattr(self, name), valid)
        # Relations between fields, each checked after both are known to be in range.
        if self.suspect_after > self.heartbeat_multiplier:
            raise LocalProtocolError(
                f"suspect_after must be at most heartbeat_multiplier ({self.heartbeat_multiplier}),"
                f" not {self.suspect_after!r}"
            )
        if self.reconnect_initial > self.reconnect_max:
            raise LocalProtocolError(
                f"reconnect_initial must be at most reconnect_max ({self.reconnect_max}),"
                f" not {self.reconnect_initial!r}"
            )
        if self.outbox_limit_bytes < self.max_body_size:
            raise LocalProtocolError(
                "outbox_limit_bytes must hold at least one message of maximum size"
                f" (max_body_size {self.max_body_size}), not {self.outbox_limit_bytes!r}"
            )
        if self.signature_batch == 1:
            raise LocalProtocolError(
                f"signature_batch must be 0 or 2 to {MAX_SIGNATURE_BATCH}, not 1"
            )

    @property
    def down_after(self) -> float:
        """Seconds of silence after which the peer is declared down."""
        return self.heartbeat_interval * self.heartbeat_multiplier

    @property
    def max_record_size(self) -> int:
        """Largest reassembled record accepted: a full message record plus its framing, and
        never less than a goodbye with the longest reason the decoder takes."""
        return max(self.max_body_size + 512, _LONGEST_GOODBYE_RECORD)


_FLOAT_FIELDS = frozenset(f.name for f in fields(Config) if f.type == "float")


def _check_field(name: str, value: object, valid: _Range) -> None:
    """Raise LocalProtocolError, naming the field, unless ``value`` is of its type and range."""
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LocalProtocolError(f"{name} must be a number, not {value!r}")
        if not (math.isfinite(value) and value in valid):
            raise LocalProtocolError(f"{name} must be a finite number in {valid}, not {value!r}")
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LocalProtocolError(f"{name} must be an integer, not {value!r}")
        if value not in valid:
            raise LocalProtocolError(f"{name} must be an integer in {valid}, not {value!r}")


def check_address(address: object, what: str, *, listening: bool) -> tuple[str, int]:
    """Return ``address`` if it is a ``(host, port)`` pair with a TCP port, else raise
    LocalProtocolError naming ``what``. Port 0 (any free port) only when ``listening``.

    The socket layer would take a port above 65535 modulo 65536 and bind or dial another.
    """
    if not (isinstance(address, tuple) and len(address) == 2 and isinstance(address[0], str)):
        raise LocalProtocolError(f"{what} must be a (host, port) pair, not {address!r}")
    port = address[1]
    low = 0 if listening else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise LocalProtocolError(
            f"{what}: the port must be an integer in {low}..65535, not {port!r}"
        )
    return address[0], port
