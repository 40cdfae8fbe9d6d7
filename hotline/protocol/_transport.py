"""The transport phase of a connection: records over the wire codec (docs/protocol.md,
"Records" and the sections after it).

Theory of operation
-------------------
A :class:`Transport` exists from ``Connection.start`` on and holds everything the handshake
left: the peer, the line id, the handshake hash and the codec with the two cipher states. It
copies the driver's :class:`LineState` into marks of its own (``marks``: how far the peer has
receipted us, our messages to resend, the chain heads to check receipts with, what we
received and receipted) and keeps them current from its own inputs: our messages and
receipts as the driver hands them over, the peer's messages and receipts as they are
checked. The driver's state is never written here; what it must record comes out as events.
Records are msgpack arrays: message, receipt, ping, goodbye. Each decoded record is checked
against the marks and becomes an event in the connection's queue; a goodbye, and the peer's
silence (from :class:`~._liveness.PeerLiveness`), come back as inputs of the connection
machine.

Output is bounded however much the peer sends and however little it reads. What
``data_to_send()`` returned counts as unsent until the driver asks again (it asks once it has
written it); meanwhile receipts wait as the newest of each kind, a due ping waits (one), and
our messages wait in the marks' ``pending`` once ``unsent_limit`` bytes are unsent.
:meth:`Transport.flush` adds what waited.

Sequencing inside one connection is strict: each message is the one after the previous. Only
the first message of a connection may repeat what we already hold, because after a reconnect
the sender replays everything it has no delivered receipt for; such duplicates are dropped
and answered with our latest delivered receipt again.

A connection of a line with several paths (docs/protocol.md, "Several paths") shares its
marks with the line's other connections through a :class:`PathGroup`: what one path receives
or learns from a receipt, every path knows at once. Only the *active* connection transmits our
messages; on :meth:`Transport.activate` it resends everything the peer has not receipted, on
whichever path that went before. Sequencing is then line-wide rather than per connection: a
message at or below the newest one received (on any path) is a duplicate and dropped wherever
it falls in its connection, a new one must be the line's next, and a receipt no newer than the
line's mark is ignored (each connection's own receipts must still never go back).

A new message without a signature of its own (docs/protocol.md, "Bursts") passes the same
sequencing and chain checks and is then held here, not released: its event comes out only
with the signed message that covers it, once that signature is verified, so the driver never
stores, receipts or delivers a message no signature covers. The held run is bounded by
``max_unsigned_run`` messages and ``max_unsigned_run_bytes`` envelope bytes; it dies with the
connection (the peer resends it, as nothing receipted it).
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

from .._config import Config
from .._errors import LocalProtocolError, RemoteProtocolError
from .._keys import PublicKey
from ._batching import SignatureBatches
from ._codec import Frames, TransportCodec
from ._events import (
    Event,
    Liveness,
    MessageReceived,
    PeerClosed,
    ReceiptReceived,
)
from ._linestate import LineState
from ._liveness import PeerLiveness
from ._machines import ConnectionInput, Role
from ._records import (
    Receipt,
    ReceiptKind,
    SignedMessage,
    decode_message,
    open_receipt,
    pack,
    strict_unpack,
    verify_message,
)

__all__ = [
    "MAX_RECORD_FIELDS", "REPLACED", "PathGroup", "T_GOODBYE", "T_MESSAGE", "T_PING", "T_RECEIPT",
    "Transport",
]

# Record types (the first element of every record array).
T_MESSAGE = 1
T_RECEIPT = 2
T_PING = 3
# 4 is unassigned: it was an answering pong; each ping now carries the echo instead.
T_GOODBYE = 5
#: The goodbye reason that announces a replacement: the sender has a newer connection on the
#: same line, so this one's end is no failure of the line (compared exactly: protocol.md).
REPLACED = "replaced by a newer connection"
#: The most elements of any record (a ping: its type and four fields).
MAX_RECORD_FIELDS = 5
_MAX_REASON = 200

_PACKER_ERRORS = (ValueError, OverflowError, TypeError)


class PathGroup:
    """The marks shared by the connections of one line's several paths.

    The driver makes one when a line with several paths has no open connection, and starts
    every further connection of that line in it while any is open (``Connection.start``):
    the first one copies the line state into :attr:`marks`, the others share those marks.
    """

    def __init__(self) -> None:
        self.marks: LineState | None = None


class Transport:
    """The open phase: records in and out, sequencing, receipts, heartbeats and rekeying."""

    def __init__(
        self,
        codec: TransportCodec,
        line: LineState,
        events: deque[Event],
        signatures: SignatureBatches,
        *,
        peer: PublicKey,
        line_id: bytes,
        config: Config,
        now: float,
        held: bool,
        role: Role,
        handshake_hash: bytes,
        initiation_timestamp: int | None,
    ) -> None:
        self.codec = codec
        # A copy, once per connection: the driver's state changes only when it commits.
        self.marks = line.copy()
        self._events = events
        # What the handshake established, kept for the connection's read-only views.
        self.peer = peer
        self.line_id = line_id
        self.role = role
        self.handshake_hash = handshake_hash
        self.initiation_timestamp = initiation_timestamp
        self.config = config
        self.now = now
        self.liveness = PeerLiveness(config, now, held=held)
        # Inbound sequencing.
        self._last_seq_here: int | None = None
        # New messages that arrived unsigned, after the last signed one: held back until the
        # signature that covers them arrives, dropped if the connection ends first (the peer
        # resends them, as nothing here receipted them).
        self._unsigned_run: list[SignedMessage] = []
        self._unsigned_bytes = 0
        self._transmitted_high = line.peer_delivered
        # Output held back until the driver next asks for data (see flush()): the newest
        # receipt of each kind and at most one ping, so that a peer that never reads costs
        # us no more than that however much it sends.
        self._owed_receipts: dict[ReceiptKind, Receipt] = {}
        self._ping_owed = False
        self._signatures = signatures
        # Several paths: the group whose marks this connection shares (None: the only
        # connection of its line, which always transmits).
        self.group: PathGroup | None = None
        self.active = True
        # The newest receipt of each kind this connection carried: a path's own receipts
        # never go back, even where the line's mark is already further on.
        self._peer_marks_here: dict[ReceiptKind, int] = {}

    def join(self, group: PathGroup) -> None:
        """Share ``group``'s marks (or give it ours, if first) and stand by: before
        :meth:`open`, and before any frame is handled."""
        if group.marks is None:
            group.marks = self.marks
        self.marks = group.marks
        self.group = group
        self.active = False
        self._transmitted_high = self.marks.peer_delivered

    def activate(self) -> None:
        """Carry our messages from now on: everything the peer has not receipted goes again
        (it may have gone on a path that failed), after our newest receipts."""
        if self.active:
            return
        self.active = True
        self._transmitted_high = self.marks.peer_delivered
        for receipt in (self.marks.delivered_receipt, self.marks.acknowledged_receipt):
            if receipt is not None:
                self._owe(receipt)

    def deactivate(self) -> None:
        """Stop carrying our messages (another path does): only pings and receipts go here."""
        if self.group is not None:
            self.active = False

    def copy(
        self, frames: Frames, events: deque[Event], signatures: SignatureBatches
    ) -> Transport:
        """An independent copy that writes to ``frames``, queueing to ``events`` and
        ``signatures``."""
        clone = copy.copy(self)
        clone.codec = self.codec.copy(frames)
        clone._events = events
        clone._signatures = signatures
        clone.marks = self.marks.copy()
        clone.liveness = self.liveness.copy()
        clone._owed_receipts = dict(self._owed_receipts)
        clone._unsigned_run = list(self._unsigned_run)
        return clone

    # --- what the connection's read-only views show -----------------------------------

    @property
    def liveness_state(self) -> Liveness:
        return self.liveness.state

    @property
    def rtt(self) -> float | None:
        return self.liveness.rtt

    @property
    def smoothed_rtt(self) -> float | None:
        return self.liveness.smoothed_rtt

    @property
    def rekeys_sent(self) -> int:
        return self.codec.rekeys_sent

    @property
    def rekeys_received(self) -> int:
        return self.codec.rekeys_received

    @property
    def buffered_record(self) -> int:
        return self.codec.partial_size

    @property
    def outstanding_pings(self) -> int:
        return self.liveness.outstanding_pings

    def open(self) -> None:
        """The first flight: our receipts, what the peer has not received, and a ping."""
        # Our receipts first, so the peer can retire what we hold before it replays it.
        for receipt in (self.marks.delivered_receipt, self.marks.acknowledged_receipt):
            if receipt is not None:
                self.emit_record([T_RECEIPT, receipt.envelope, receipt.signature])
        self._transmit()
        self.liveness.ping_timer_restarted(self.now)
        self._send_ping()

    # --- input ------------------------------------------------------------------------

    def handle_frame(self, frame: bytes) -> ConnectionInput | None:
        """Decrypt and handle one frame; a goodbye comes back as the machine's input."""
        plaintext = self.codec.decrypt(frame)
        self._event(self.liveness.heard(self.now))
        record = self.codec.open_plaintext(plaintext, self.config.max_record_size)
        if record is None:
            return None
        return self._handle_record(record)

    def _event(self, event: Event | None) -> None:
        if event is not None:
            self._events.append(event)

    def _handle_record(self, record: bytes) -> ConnectionInput | None:
        fields = strict_unpack(
            record, max_bin_len=self.config.max_record_size, max_array_len=MAX_RECORD_FIELDS
        )
        if not fields or type(fields[0]) is not int:
            raise RemoteProtocolError("a record is an array that starts with its type")
        kind = fields[0]
        if kind == T_MESSAGE:
            envelope, signature = _fields(fields, 3, bytes, bytes)
            self._receive_message(envelope, signature)
        elif kind == T_RECEIPT:
            envelope, signature = _fields(fields, 3, bytes, bytes)
            self._receive_receipt(envelope, signature)
        elif kind == T_PING:
            ping_id, echo_id, hold_us, interval_us = _fields(fields, 5, int, int, int, int)
            self._event(
                self.liveness.ping_received(ping_id, echo_id, hold_us, interval_us, self.now)
            )
        elif kind == T_GOODBYE:
            (reason,) = _fields(fields, 2, str)
            self._events.append(PeerClosed(reason[:_MAX_REASON]))
            return ConnectionInput.GOODBYE_RECEIVED
        else:
            raise RemoteProtocolError(f"unknown record type {kind}")
        return None

    def _receive_message(self, envelope: bytes, signature: bytes) -> None:
        marks = self.marks
        message = decode_message(
            envelope, signature, sender=self.peer, line_id=self.line_id,
            max_body_size=self.config.max_body_size,
        )
        seq = message.seq
        received = marks.received_seq  # The newest message handed to the driver.
        unsigned = self._unsigned_run
        if self.group is not None:
            if unsigned and unsigned[0].seq != received + 1:
                # Another path brought and released these meanwhile: the run is stale.
                unsigned.clear()
                self._unsigned_bytes = 0
            # Line-wide sequencing: a message at or below what any path received is a
            # duplicate wherever it falls (the sender resends on the path it moves to), and a
            # new one must be the line's next (checked below).
            self._last_seq_here = None
        if self._last_seq_here is not None and seq != self._last_seq_here + 1:
            raise RemoteProtocolError(
                f"message {seq} follows message {self._last_seq_here} in one connection"
            )
        if seq > received + len(unsigned) + 1:
            raise RemoteProtocolError(
                f"message {seq} skips ahead of {received + len(unsigned) + 1}"
            )
        self._last_seq_here = seq
        if seq <= received:
            # A replay after reconnect. The head we hold catches a fork at our newest message;
            # older replays are dropped unread (nothing of them is kept to compare with),
            # signed or not.
            if seq == received and message.hash != marks.received_head:
                raise RemoteProtocolError(f"message {seq} differs from the one received before")
            if marks.delivered_receipt is not None and seq <= marks.delivered_receipt.upto:
                self._owe(marks.delivered_receipt)
            return
        head = unsigned[-1].hash if unsigned else marks.received_head
        if message.prev != head:
            raise RemoteProtocolError(f"message {seq} does not continue the chain")
        if not message.signed:
            # Held until the signature that covers it arrives; nothing of it is released,
            # so nothing of it is stored or receipted before then.
            self._unsigned_bytes += len(envelope)
            if (len(unsigned) >= self.config.max_unsigned_run
                    or self._unsigned_bytes > self.config.max_unsigned_run_bytes):
                raise RemoteProtocolError(
                    f"unsigned message {seq} makes a run of {len(unsigned) + 1} messages"
                    f" ({self._unsigned_bytes} bytes) that no signature covers yet:"
                    " over this side's bound"
                )
            unsigned.append(message)
            return
        if not self._signatures.minimum:
            verify_message(message, self.peer)
        else:
            # Checked with its burst before its events come out (see _batching.py); the
            # checks above need only the hash chain.
            self._signatures.unverified.append(message)
            self._signatures.gated += len(unsigned) + 1
        for covered in unsigned:
            marks.record_received(covered)
            self._events.append(MessageReceived(covered))
        unsigned.clear()
        self._unsigned_bytes = 0
        marks.record_received(message)
        self._events.append(MessageReceived(message))

    def _receive_receipt(self, envelope: bytes, signature: bytes) -> None:
        line = self.marks
        receipt = open_receipt(envelope, signature, signer=self.peer, line_id=self.line_id)
        upto = receipt.upto
        if upto > line.sent_seq:
            raise RemoteProtocolError(f"receipt for message {upto}, which was never sent")
        if receipt.kind is ReceiptKind.DELIVERED:
            mark = line.peer_delivered
        else:
            mark = line.peer_acknowledged
            if upto > line.peer_delivered:
                raise RemoteProtocolError(f"message {upto} acknowledged before it was delivered")
        if self.group is not None:
            # Several paths: only this connection's own receipts must not go back; one
            # another path already brought is nothing new.
            here = self._peer_marks_here.get(receipt.kind, 0)
            if upto < here:
                raise RemoteProtocolError(
                    f"{receipt.kind.value} receipt went back from {here} to {upto}"
                )
            self._peer_marks_here[receipt.kind] = upto
            if upto <= mark:
                return
        if upto < mark:
            raise RemoteProtocolError(
                f"{receipt.kind.value} receipt went back from {mark} to {upto}"
            )
        known = line.head_of_sent(upto)
        if known is None or known != receipt.head:
            raise RemoteProtocolError(f"receipt for {upto} names a chain head we never sent")
        if upto == mark:
            return  # A receipt repeated on resume: nothing new.
        line.apply_peer_receipt(receipt)  # Our marks: the driver records the event's.
        self._events.append(ReceiptReceived(receipt))

    # --- actions ----------------------------------------------------------------------

    def send_message(self, message: SignedMessage) -> None:
        if message.seq <= self.marks.sent_seq:
            raise LocalProtocolError(f"message {message.seq} was already transmitted")
        self.marks.append_sent(message)  # Raises unless it is our next message.
        self._transmit()

    def send_receipt(self, receipt: Receipt) -> None:
        # Raises for a receipt older than the one sent, or for messages never received here.
        self.marks.record_own_receipt(receipt)
        self._owe(receipt)

    def close(self, reason: str) -> None:
        self._emit_owed_receipts()
        self.emit_record([T_GOODBYE, reason[:_MAX_REASON]])

    @property
    def has_output(self) -> bool:
        """Whether :meth:`flush` would produce anything, or output is already waiting."""
        return bool(
            self.codec.unsent
            or self._owed_receipts
            or self._ping_owed
            or (self.active and self._transmitted_high < self.marks.sent_seq)
        )

    def flush(self) -> None:
        """The driver asks for output: add what waited for it."""
        self._emit_owed_receipts()
        if self._ping_owed:
            self._send_ping()
        self._transmit()

    # --- time -------------------------------------------------------------------------

    def next_deadline(self) -> float:
        deadline = self.liveness.next_deadline()
        if self._ping_owed:
            # An owed ping carries a due rekey: it waits for data_to_send(), not for time.
            return deadline
        rekey_at = self.codec.rekey_at(self.config)
        return rekey_at if rekey_at < deadline else deadline

    def hold(self) -> None:
        self.liveness.held()

    def release(self, now: float) -> None:
        self.liveness.released(now)

    def advance(self, now: float) -> tuple[ConnectionInput, str] | None:
        """Run the timers due at ``now``; returns why the connection breaks, if the peer is
        down."""
        change = self.liveness.advance(now)
        self._event(change)
        if change is not None and change.state is Liveness.DOWN:
            return ConnectionInput.PEER_SILENT, f"the peer was silent for {change.silent_for:.3f} s"
        if now >= self.liveness.ping_at() or (
            not self._ping_owed and now >= self.codec.rekey_at(self.config)
        ):
            # An idle line still rekeys on time: the ping carries the rekey flag. A ping is
            # queued only behind written output: behind output the peer has not read yet it
            # waits, and the pings due meanwhile are that one.
            self.liveness.ping_timer_restarted(now)
            if self.codec.unsent:
                self._ping_owed = True
            else:
                self._send_ping()
        return None

    # --- output -----------------------------------------------------------------------

    def _send_ping(self) -> None:
        self._ping_owed = False
        self.emit_record([T_PING, *self.liveness.next_ping(self.now)])

    def _owe(self, receipt: Receipt) -> None:
        self._owed_receipts[receipt.kind] = receipt

    def _emit_owed_receipts(self) -> None:
        # Delivered first: the peer refuses an acknowledgement ahead of its delivered mark.
        for kind in (ReceiptKind.DELIVERED, ReceiptKind.ACKNOWLEDGED):
            receipt = self._owed_receipts.pop(kind, None)
            if receipt is not None:
                self.emit_record([T_RECEIPT, receipt.envelope, receipt.signature])

    def _transmit(self) -> None:
        """Encrypt our next untransmitted messages while output is under ``unsent_limit``.

        The rest wait in the marks' ``pending`` (held there anyway until the peer's
        delivered receipt), not as a second, encrypted copy here.
        """
        if not self.active:
            return
        line = self.marks
        # A delivered receipt may cover messages a former connection transmitted.
        self._transmitted_high = max(self._transmitted_high, line.peer_delivered)
        limit = self.config.unsent_limit
        while self._transmitted_high < line.sent_seq and self.codec.unsent < limit:
            # pending holds peer_delivered + 1 .. sent_seq, in order.
            message = line.pending[self._transmitted_high - line.peer_delivered]
            self._transmitted_high = message.seq
            self.codec.write_record(
                message_record(message.envelope, message.signature), self.now, self.config
            )

    def emit_record(self, record: list[Any]) -> None:
        """Encrypt and queue one record as it is (tests use it to play a hostile peer)."""
        try:
            data = pack(record)
        except _PACKER_ERRORS as exc:  # pragma: no cover - our own records always pack
            raise LocalProtocolError(f"cannot encode record: {exc}") from None
        self.codec.write_record(data, self.now, self.config)


def _bin_header(length: int) -> bytes:
    """The msgpack header of a bin of ``length`` bytes, in the form :func:`pack` writes."""
    if length <= 0xFF:
        return b"\xc4" + length.to_bytes(1, "big")
    if length <= 0xFFFF:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


def message_record(envelope: bytes, signature: bytes) -> tuple[bytes, ...]:
    """A message record as the parts whose concatenation is ``pack([T_MESSAGE, envelope,
    signature])``: encoded around the envelope, so that a large body is not copied into a
    record before it is copied into its transport messages."""
    head = b"\x93" + T_MESSAGE.to_bytes(1, "big") + _bin_header(len(envelope))
    return head, envelope, _bin_header(len(signature)) + signature


def _fields(fields: list[Any], count: int, *types: type) -> list[Any]:
    """Check a record's length and the types of the fields after its type tag."""
    if len(fields) != count:
        raise RemoteProtocolError(f"record type {fields[0]} has {count} fields")
    values = fields[1:]
    for value, expected in zip(values, types, strict=True):
        if type(value) is not expected:
            raise RemoteProtocolError(
                f"record type {fields[0]}: expected {expected.__name__}, got {type(value).__name__}"
            )
    return values
