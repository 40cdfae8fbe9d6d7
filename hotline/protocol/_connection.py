"""The sans-io line protocol: one :class:`Connection` object per transport connection.

Theory of operation
-------------------
The connection never touches a socket or a clock. The driver feeds it received bytes with
:meth:`~Connection.receive_data` (``b""`` for end of stream), pulls :mod:`events
<hotline.protocol._events>` with :meth:`~Connection.next_event` until it returns
``NEED_DATA``, submits actions (:meth:`~Connection.send_message`, :meth:`~Connection.send_receipt`,
:meth:`~Connection.close`), writes whatever :meth:`~Connection.data_to_send` returns, and wakes
the connection at :meth:`~Connection.next_deadline` with :meth:`~Connection.advance`. Every
call that depends on time takes ``now``: seconds on any monotonic scale.

Layers, bottom up (docs/protocol.md specifies each byte):

1. *Frames*: a 2-byte big-endian length, then one Noise message (at most 65,535 bytes).
2. *Handshake*: ``Noise_IK_25519_ChaChaPoly_BLAKE2b``. The prologue names the responder's
   Ed25519 key and the initiator's payload carries its own with its initiation timestamp, so
   a session binds exactly the two pinned Ed25519 keys, not merely the X25519 keys derived
   from them (which cannot tell a key from its negation); the responder's payload is empty.
   The responder names the peer to its driver (:class:`PeerAuthenticated`) and waits: the
   driver loads that peer's :class:`LineState`, checks nothing itself, and calls
   :meth:`~Connection.start`, which rejects a timestamp not above the stored watermark (a
   replayed initiation) before anything is sent back.
3. *Transport plaintexts*: ``flags(1) || length(2) || content || zero padding``. Flags say
   whether the content ends a record and whether the sender rekeys after this message. A
   record is the concatenation of contents up to a final one, so bodies larger than one
   Noise message travel in pieces; the reassembly buffer is bounded before it grows.
4. *Records*: msgpack arrays: message, receipt, ping, goodbye.

State lives in one table, ``_TRANSITIONS``; every change goes through ``_set_state``. After a
remote or authentication error the connection stays in ``ERROR`` for good, and re-raises.

Output is bounded however much the peer sends and however little it reads. What
:meth:`~Connection.data_to_send` returned counts as unsent until the driver asks again (it
asks once it has written it); meanwhile receipts wait as the newest of each kind, a due ping
waits (one), and our messages wait in the line state's ``pending`` once ``unsent_limit``
bytes are unsent. The next call adds what waited.

Sequencing inside one connection is strict: each message is the one after the previous. Only
the first message of a connection may repeat what we already hold, because after a reconnect
the sender replays everything it has no delivered receipt for; such duplicates are dropped
and answered with our latest delivered receipt again.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from .._config import MAX_SIGNATURE_BATCH, Config
from .._errors import (
    AuthenticationError,
    ConnectionBrokenError,
    ConnectionClosedError,
    HotlineError,
    LocalProtocolError,
    RemoteProtocolError,
)
from .._keys import Identity, PublicKey, line_id
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
from ._linestate import LineState
from ._noise import MAX_MESSAGE_LEN, TAG_LEN, CipherState, HandshakeState
from ._records import (
    GENESIS_HEAD,
    Receipt,
    ReceiptKind,
    SignatureBatch,
    SignedMessage,
    decode_message,
    open_receipt,
    pack,
    strict_unpack,
    verify_message,
)

__all__ = [
    "PROLOGUE", "PROTOCOL_NAME", "Connection", "ConnectionState", "Role", "handshake_prologue",
]

PROTOCOL_NAME = "Noise_IK_25519_ChaChaPoly_BLAKE2b"
#: hotline's name and protocol version: the start of every handshake's prologue.
PROLOGUE = b"hotline/2"


def handshake_prologue(responder: PublicKey) -> bytes:
    """The prologue of a handshake with ``responder``: :data:`PROLOGUE`, then its Ed25519 key.

    Both sides know the responder's Ed25519 key before message 1 (the initiator has pinned
    it), so it goes here; the initiator's, which the responder learns only from message 1,
    travels in that message's payload.
    """
    return PROLOGUE + responder.raw

MAX_PLAINTEXT = MAX_MESSAGE_LEN - TAG_LEN
_HEADER = struct.Struct(">BH")
MAX_CONTENT = MAX_PLAINTEXT - _HEADER.size
FLAG_FINAL = 0x01
FLAG_REKEY = 0x02
_KNOWN_FLAGS = FLAG_FINAL | FLAG_REKEY

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

# Our pings whose echo we still wait for; a peer that echoes none is declared down long
# before this fills (it is only the source of round-trip samples).
MAX_OUTSTANDING_PINGS = 16
#: The shortest interval between our pings that a peer can ask for: an authenticated peer
#: that asks for more draws at most this many pings a second.
MIN_REQUESTED_INTERVAL = 0.01
_MAX_REASON = 200


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class ConnectionState(enum.Enum):
    AWAIT_RESPONSE = "await-response"
    """Initiator: the first handshake message is out; waiting for the answer."""
    AWAIT_INITIATION = "await-initiation"
    """Responder: waiting for an initiator's first handshake message."""
    AUTHENTICATED = "authenticated"
    """The peer is known; waiting for the driver to call :meth:`Connection.start`."""
    OPEN = "open"
    CLOSED = "closed"
    """A goodbye was sent or received, or the driver closed the connection."""
    BROKEN = "broken"
    """End of stream without goodbye, handshake timeout, or the peer went silent."""
    ERROR = "error"
    """The peer broke the protocol or failed authentication."""


_S = ConnectionState
#: The states a connection never leaves.
TERMINAL_STATES = frozenset({_S.CLOSED, _S.BROKEN, _S.ERROR})
_TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    _S.AWAIT_RESPONSE: frozenset({_S.AUTHENTICATED}) | TERMINAL_STATES,
    _S.AWAIT_INITIATION: frozenset({_S.AUTHENTICATED}) | TERMINAL_STATES,
    _S.AUTHENTICATED: frozenset({_S.OPEN}) | TERMINAL_STATES,
    _S.OPEN: TERMINAL_STATES,
    _S.CLOSED: frozenset(),
    _S.BROKEN: frozenset(),
    _S.ERROR: frozenset(),
}

_PACKER_ERRORS = (ValueError, OverflowError, TypeError)


class Connection:
    """One transport connection of a line, as a pure state machine.

    Build one with :meth:`initiate` or :meth:`respond`.
    """

    _ERROR_TYPES: ClassVar[tuple[type[HotlineError], ...]] = (
        RemoteProtocolError,
        AuthenticationError,
    )

    def __init__(
        self,
        identity: Identity,
        role: Role,
        *,
        now: float,
        config: Config | None = None,
        peer: PublicKey | None = None,
        known_peers: Iterable[PublicKey] | Mapping[bytes, PublicKey] = (),
        ephemeral: bytes | None = None,
    ) -> None:
        """Prefer :meth:`initiate` and :meth:`respond`, which say what each role needs."""
        self._identity = identity
        self._role = role
        self._config = config or Config()
        self._peer = peer
        self._line_id = line_id(identity.public_key, peer) if peer is not None else b""
        self._known: Mapping[bytes, PublicKey]
        if isinstance(known_peers, Mapping):
            # A listener's own table, shared rather than copied: with many lines, a copy per
            # pending connection would cost memory quadratic in the number of lines.
            self._known = known_peers
        else:
            table: dict[bytes, PublicKey] = {}
            for key in known_peers:
                if key.x25519 in table and table[key.x25519] != key:
                    raise LocalProtocolError("two known peers share one X25519 key")
                table[key.x25519] = key
            self._known = table
        self._state = (
            _S.AWAIT_RESPONSE if role is Role.INITIATOR else _S.AWAIT_INITIATION
        )
        self._handshake: HandshakeState | None = HandshakeState(
            PROTOCOL_NAME,
            initiator=role is Role.INITIATOR,
            prologue=handshake_prologue(
                peer if role is Role.INITIATOR and peer is not None else identity.public_key
            ),
            s=identity.x25519_key,
            e=ephemeral,
            rs=peer.x25519 if role is Role.INITIATOR and peer is not None else None,
        )
        self._handshake_hash = b""
        self._send_cipher: CipherState | None = None
        self._recv_cipher: CipherState | None = None
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._eof = False
        self._events: deque[Event] = deque()
        self._failure: HotlineError | None = None
        self._now = now
        self._handshake_deadline = now + self._config.handshake_timeout
        self._initiation_timestamp: int | None = None
        self._line: LineState | None = None
        # Reassembly of a record that spans several transport messages.
        self._partial = bytearray()
        # Inbound sequencing.
        self._last_seq_here: int | None = None
        self._received_seq = 0  # The newest message handed to the driver (held or not yet).
        self._received_head = GENESIS_HEAD
        self._transmitted_high = 0
        # Output held back until the driver next asks for data (see data_to_send()): the
        # newest receipt of each kind and at most one ping, so that a peer that never reads
        # costs us no more than that however much it sends.
        self._owed_receipts: dict[ReceiptKind, Receipt] = {}
        self._ping_owed = False
        self._in_flight = 0  # What the last data_to_send() returned: unsent until the next.
        # Signature checks in batches (off unless the driver asks): new messages whose
        # MessageReceived events wait in _events until their signatures are checked.
        self._batch_minimum = 0  # 0: every signature is checked as its message arrives.
        self._unverified: list[SignedMessage] = []
        self._checking: SignatureBatch | None = None
        # Liveness.
        self._held = False
        self._liveness = Liveness.CONNECTING
        self._last_heard = now
        self._last_ping_at = now
        self._ping_interval = self._config.heartbeat_interval
        self._ping_id = 0
        self._pings: dict[int, float] = {}  # ping id -> when we sent it
        self._peer_ping_id = 0  # The peer's newest ping, echoed in ours.
        self._peer_ping_at = now
        self.rtt: float | None = None
        self.smoothed_rtt: float | None = None
        # Rekeying of our sending direction.
        self._sent_under_key = 0
        self._key_since = now
        self.rekeys_sent = 0
        self.rekeys_received = 0

    # --- construction ---------------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        identity: Identity,
        peer: PublicKey,
        *,
        now: float,
        timestamp: int,
        config: Config | None = None,
        ephemeral: bytes | None = None,
    ) -> Connection:
        """Start a handshake with ``peer``; the first message is ready in :meth:`data_to_send`.

        ``timestamp`` must exceed every initiation timestamp this identity used towards
        ``peer`` before (nanoseconds since the epoch; the line state keeps the last one in
        ``LineState.initiation_timestamp``).
        ``ephemeral`` fixes the ephemeral key, for test vectors only.
        """
        if not 0 < timestamp < 2**64:
            raise LocalProtocolError("the initiation timestamp is a positive 64-bit integer")
        conn = cls(identity, Role.INITIATOR, now=now, config=config, peer=peer,
                   ephemeral=ephemeral)
        assert conn._handshake is not None
        conn._initiation_timestamp = timestamp
        payload = pack([timestamp, identity.public_key.raw])
        conn._write_frame(conn._handshake.write_message(payload))
        return conn

    @classmethod
    def respond(
        cls,
        identity: Identity,
        known_peers: Iterable[PublicKey] | Mapping[bytes, PublicKey],
        *,
        now: float,
        config: Config | None = None,
        ephemeral: bytes | None = None,
    ) -> Connection:
        """Wait for an initiation from any of ``known_peers``.

        ``known_peers`` may be a mapping from each peer's X25519 key to its public key, which
        is then used as it is (and may change while the connection waits).
        """
        return cls(identity, Role.RESPONDER, now=now, config=config,
                   known_peers=known_peers, ephemeral=ephemeral)

    # --- read-only views ------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def role(self) -> Role:
        return self._role

    @property
    def peer(self) -> PublicKey | None:
        """The peer, once known (at once for an initiator, after authentication otherwise)."""
        return self._peer

    @property
    def line_id(self) -> bytes:
        return self._line_id

    @property
    def liveness(self) -> Liveness:
        return self._liveness

    @property
    def config(self) -> Config:
        return self._config

    @property
    def handshake_hash(self) -> bytes:
        return self._handshake_hash

    @property
    def initiation_timestamp(self) -> int | None:
        """Initiator: the timestamp it sent. Responder: the one it received."""
        return self._initiation_timestamp

    # --- state ----------------------------------------------------------------------

    def _set_state(self, new: ConnectionState) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise LocalProtocolError(f"no transition from {self._state.value} to {new.value}")
        self._state = new

    def _fail(self, error: HotlineError) -> HotlineError:
        """Remember ``error`` for good; an open connection moves to ``ERROR``. (One that was
        closed or broken meanwhile, with a burst of signatures out, keeps its state but still
        raises the error, once its events are drained.)"""
        self._failure = error
        if self._state not in TERMINAL_STATES:
            self._set_state(_S.ERROR)
        return error

    def _break(self, reason: str) -> None:
        self._set_state(_S.BROKEN)
        self._events.append(ConnectionBroken(reason))

    def _require_open(self) -> LineState:
        if self._state is _S.OPEN:
            assert self._line is not None
            return self._line
        if self._state is _S.CLOSED:
            raise ConnectionClosedError("the connection is closed")
        if self._state is _S.BROKEN:
            raise ConnectionBrokenError("the connection is broken")
        if self._state is _S.ERROR:
            raise LocalProtocolError("the connection failed and cannot be used")
        raise LocalProtocolError(f"the connection is not open yet ({self._state.value})")

    # --- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its side of the stream."""
        self._now = now
        if self._eof and data:
            raise LocalProtocolError("received data after end of stream")
        if not data:
            self._eof = True
        elif self._state not in TERMINAL_STATES:
            self._inbuf += data

    def next_event(self) -> Event | NeedData:
        """Return the next event, or ``NEED_DATA`` when more bytes (or time) are needed.

        Raises :class:`RemoteProtocolError` or :class:`AuthenticationError` when the peer's
        bytes break the protocol; the connection is then in ``ERROR`` for good, and every
        later call raises the same error again.
        """
        if self._checking is not None:
            return NEED_DATA  # Nothing comes out past messages whose signatures are out.
        if self._events:
            return self._events.popleft()
        if self._failure is not None:
            raise self._failure
        if self._state is _S.CLOSED:
            raise ConnectionClosedError("the connection is closed")
        if self._state is _S.BROKEN:
            raise ConnectionBrokenError("the connection is broken")
        try:
            # Frames are handled only while no event waits, except that a burst of new
            # messages may gather (their events queued, unreleased) to be checked together.
            gather = MAX_SIGNATURE_BATCH if self._batch_minimum else 1
            while len(self._events) == len(self._unverified) < gather:
                if self._state is _S.AUTHENTICATED:
                    break  # Frames wait until the driver has called start().
                frame = self._take_frame()
                if frame is None:
                    if self._eof and self._state not in TERMINAL_STATES:
                        self._break("the peer closed the connection without a goodbye")
                    break
                self._handle_frame(frame)
                if self._state in TERMINAL_STATES:
                    break
        except self._ERROR_TYPES as error:
            # Whatever is queued now came from the frame that failed, or from a burst whose
            # signatures nobody checked: none of it may come out after the error. (Messages
            # of that burst are not lost: without their receipt, the peer sends them again.)
            self._events.clear()
            self._unverified.clear()
            raise self._fail(error) from None
        if self._unverified:
            return self._settle_unverified()
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def check_signatures_in_batches(self, minimum: int = 8) -> None:
        """Hand bursts of at least ``minimum`` new messages to the driver to check together.

        From now on, :meth:`next_event` may return :class:`SignaturesToCheck`; smaller bursts
        are still checked here, at once. A driver with a spare core runs the batch in a
        worker thread. Nothing a batch covers (nor anything after it) comes out before
        :meth:`signatures_checked`; a bad signature fails the connection as it would inline.
        """
        if not 2 <= minimum <= MAX_SIGNATURE_BATCH:
            raise LocalProtocolError(f"minimum must be 2 to {MAX_SIGNATURE_BATCH}")
        self._batch_minimum = minimum

    def signatures_checked(self, batch: SignatureBatch) -> None:
        """Take back the batch of the last :class:`SignaturesToCheck`, after ``batch.run()``."""
        if batch is not self._checking:
            raise LocalProtocolError("this is not the batch the connection is waiting for")
        if not batch.done:
            raise LocalProtocolError("run() the batch before handing it back")
        self._checking = None
        self._release_unverified(batch)

    def _settle_unverified(self) -> Event | NeedData:
        """Check the gathered burst here, or hand it to the driver if it is large enough."""
        batch = SignatureBatch(tuple(self._unverified), self._peer_key())
        if self._batch_minimum and len(batch) >= self._batch_minimum:
            self._checking = batch
            return SignaturesToCheck(batch)
        batch.run()
        self._release_unverified(batch)
        return self.next_event()

    def _release_unverified(self, batch: SignatureBatch) -> None:
        self._unverified.clear()
        if batch.failed_at is None:
            return
        # The events of the whole burst and of every frame after it go: as if the bad
        # message had failed inline, with the messages before it resent by the peer.
        self._events.clear()
        self._fail(AuthenticationError(reason="bad signature"))

    def _peer_key(self) -> PublicKey:
        assert self._peer is not None
        return self._peer

    def _take_frame(self) -> bytes | None:
        if len(self._inbuf) < 2:
            return None
        length = (self._inbuf[0] << 8) | self._inbuf[1]
        if len(self._inbuf) < 2 + length:
            return None
        frame = bytes(self._inbuf[2 : 2 + length])
        del self._inbuf[: 2 + length]
        return frame

    def _handle_frame(self, frame: bytes) -> None:
        if self._state is _S.AWAIT_INITIATION:
            self._read_initiation(frame)
        elif self._state is _S.AWAIT_RESPONSE:
            self._read_response(frame)
        elif self._state is _S.OPEN:
            self._read_transport(frame)

    def _read_handshake(self, frame: bytes) -> bytes:
        assert self._handshake is not None
        try:
            return self._handshake.read_message(frame)
        except AuthenticationError as exc:
            # Noise's own error says nothing, on purpose; this side's logs should.
            raise AuthenticationError(
                reason=exc.reason or "handshake message failed authentication "
                "(wrong key, tampered, or not a hotline peer)"
            ) from None

    def _read_initiation(self, frame: bytes) -> None:
        assert self._handshake is not None
        payload = self._read_handshake(frame)
        remote = self._handshake.remote_static
        peer = self._known.get(remote) if remote is not None else None
        if peer is None:
            raise AuthenticationError(reason="unknown initiator key")
        fields = strict_unpack(payload, max_bin_len=32, max_array_len=2)
        if len(fields) != 2 or type(fields[1]) is not bytes or len(fields[1]) != 32:
            raise RemoteProtocolError("the initiation payload is [timestamp, Ed25519 key]")
        value, claimed = fields
        if type(value) is not int or not 0 < value < 2**64:
            raise RemoteProtocolError("the initiation timestamp is a positive 64-bit integer")
        if claimed != peer.raw:
            # The X25519 key matched, but it is the image of two Ed25519 keys (A and -A): a
            # node that pinned the other one is not on this line.
            raise AuthenticationError(reason="initiator's Ed25519 key is not the pinned one")
        self._peer = peer
        self._known = {}  # Needed no more.
        self._line_id = line_id(self._identity.public_key, peer)
        self._initiation_timestamp = value
        self._handshake_hash = self._handshake.handshake_hash
        self._set_state(_S.AUTHENTICATED)
        self._events.append(PeerAuthenticated(peer, value, self._handshake_hash))

    def _read_response(self, frame: bytes) -> None:
        assert self._handshake is not None
        assert self._peer is not None
        payload = self._read_handshake(frame)
        if payload:
            raise RemoteProtocolError("the handshake response carries no payload")
        self._finish_handshake()
        self._set_state(_S.AUTHENTICATED)
        self._events.append(PeerAuthenticated(self._peer, None, self._handshake_hash))

    def _finish_handshake(self) -> None:
        assert self._handshake is not None
        assert self._handshake.complete
        self._handshake_hash = self._handshake.handshake_hash
        self._send_cipher, self._recv_cipher = self._handshake.split()
        self._handshake = None
        self._key_since = self._now

    def _read_transport(self, frame: bytes) -> None:
        assert self._recv_cipher is not None
        if len(frame) < TAG_LEN:
            raise AuthenticationError(reason="transport message shorter than its tag")
        try:
            plaintext = self._recv_cipher.decrypt_with_ad(b"", frame)
        except AuthenticationError:
            raise AuthenticationError(reason="transport message failed decryption") from None
        self._heard()
        if len(plaintext) < _HEADER.size:
            raise RemoteProtocolError("transport plaintext shorter than its header")
        flags, length = _HEADER.unpack_from(plaintext)
        if flags & ~_KNOWN_FLAGS:
            raise RemoteProtocolError(f"unknown transport flags {flags:#04x}")
        end = _HEADER.size + length
        if end > len(plaintext):
            raise RemoteProtocolError("transport content longer than its message")
        if plaintext.count(0, end) != len(plaintext) - end:
            raise RemoteProtocolError("transport padding must be zero bytes")
        if len(self._partial) + length > self._config.max_record_size:
            raise RemoteProtocolError("record larger than the limit")
        if flags & FLAG_REKEY:
            # The sender switched keys after this message: so do we, before the next one.
            self._recv_cipher.rekey()
            self.rekeys_received += 1
        if not flags & FLAG_FINAL:
            self._partial += memoryview(plaintext)[_HEADER.size : end]
            return
        if self._partial:
            self._partial += memoryview(plaintext)[_HEADER.size : end]
            record = bytes(self._partial)
            self._partial.clear()
        else:
            record = plaintext[_HEADER.size : end]
        self._handle_record(record)

    def _heard(self) -> None:
        silent = self._now - self._last_heard
        self._last_heard = self._now
        if self._liveness is Liveness.SUSPECT:
            self._liveness = Liveness.UP
            self._events.append(LivenessChanged(Liveness.UP, silent))

    def _handle_record(self, record: bytes) -> None:
        fields = strict_unpack(
            record, max_bin_len=self._config.max_record_size, max_array_len=MAX_RECORD_FIELDS
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
            self._receive_ping(ping_id, echo_id, hold_us, interval_us)
        elif kind == T_GOODBYE:
            (reason,) = _fields(fields, 2, str)
            self._set_state(_S.CLOSED)
            self._events.append(PeerClosed(reason[:_MAX_REASON]))
        else:
            raise RemoteProtocolError(f"unknown record type {kind}")

    def _receive_message(self, envelope: bytes, signature: bytes) -> None:
        assert self._line is not None
        assert self._peer is not None
        line = self._line
        message = decode_message(
            envelope, signature, sender=self._peer, line_id=self._line_id,
            max_body_size=self._config.max_body_size,
        )
        seq = message.seq
        received = self._received_seq
        if self._last_seq_here is not None and seq != self._last_seq_here + 1:
            raise RemoteProtocolError(
                f"message {seq} follows message {self._last_seq_here} in one connection"
            )
        if seq > received + 1:
            raise RemoteProtocolError(f"message {seq} skips ahead of {received + 1}")
        self._last_seq_here = seq
        if seq <= received:
            # A replay after reconnect. The head we hold catches a fork at our newest message;
            # older replays are dropped unread (nothing of them is kept to compare with).
            if seq == received and message.hash != self._received_head:
                raise RemoteProtocolError(f"message {seq} differs from the one received before")
            if line.delivered_receipt is not None and seq <= line.delivered_receipt.upto:
                self._owe(line.delivered_receipt)
            return
        if message.prev != self._received_head:
            raise RemoteProtocolError(f"message {seq} does not continue the chain")
        if not self._batch_minimum:
            verify_message(message, self._peer)
        else:
            # Checked with its burst before its event comes out: see next_event(). (The
            # checks above need only the hash chain.)
            self._unverified.append(message)
        self._received_seq = seq
        self._received_head = message.hash
        self._events.append(MessageReceived(message))

    def _receive_receipt(self, envelope: bytes, signature: bytes) -> None:
        assert self._line is not None
        assert self._peer is not None
        line = self._line
        receipt = open_receipt(envelope, signature, signer=self._peer, line_id=self._line_id)
        upto = receipt.upto
        if upto > line.sent_seq:
            raise RemoteProtocolError(f"receipt for message {upto}, which was never sent")
        if receipt.kind is ReceiptKind.DELIVERED:
            mark = line.peer_delivered
        else:
            mark = line.peer_acknowledged
            if upto > line.peer_delivered:
                raise RemoteProtocolError(f"message {upto} acknowledged before it was delivered")
        if upto < mark:
            raise RemoteProtocolError(
                f"{receipt.kind.value} receipt went back from {mark} to {upto}"
            )
        known = line.head_of_sent(upto)
        if known is None or known != receipt.head:
            raise RemoteProtocolError(f"receipt for {upto} names a chain head we never sent")
        if upto == mark:
            return  # A receipt repeated on resume: nothing new.
        line.apply_peer_receipt(receipt)
        self._events.append(ReceiptReceived(receipt))

    def _receive_ping(self, ping_id: int, echo_id: int, hold_us: int, interval_us: int) -> None:
        # Heartbeats run as BFD's asynchronous mode: each side pings on its own timer and
        # nothing answers, so an idle line carries one frame per interval each way. Each ping
        # asks for the sender's own interval: a side detects silence on its own schedule
        # only if the peer pings at least that often, so both ping at the shorter of the two.
        # The round trip comes as in RTCP (RFC 3550, LSR/DLSR): each ping echoes the newest
        # ping received and how long it was held since, so rtt = now - sent - hold.
        if ping_id <= self._peer_ping_id:
            raise RemoteProtocolError("ping ids must increase")
        if echo_id > self._ping_id:
            raise RemoteProtocolError("a ping echoes a ping that was never sent")
        if interval_us == 0:
            raise RemoteProtocolError("a ping asks for an interval of 0")
        self._peer_ping_id = ping_id
        self._peer_ping_at = self._now
        # The next ping is then due one new interval after the last (see _ping_at()).
        self._ping_interval = min(
            self._config.heartbeat_interval,
            max(interval_us / 1_000_000, MIN_REQUESTED_INTERVAL),
        )
        sent_at = self._pings.get(echo_id)
        if sent_at is None:
            return  # No echo yet, one already sampled, or a ping too old to be tracked.
        for old in [key for key in self._pings if key <= echo_id]:
            del self._pings[old]
        rtt = self._now - sent_at - hold_us / 1_000_000
        if rtt < 0:
            # The peer's clock runs a little fast against ours (or it claims a hold it did
            # not have): no sample, and nothing worse, as the peer controls its hold anyway.
            return
        self.rtt = rtt
        # RFC 6298's smoothing (alpha = 1/8).
        self.smoothed_rtt = rtt if self.smoothed_rtt is None else (
            0.875 * self.smoothed_rtt + 0.125 * rtt
        )
        self._events.append(RoundTrip(rtt, self.smoothed_rtt))

    # --- actions --------------------------------------------------------------------

    def start(self, line: LineState, now: float, *, config: Config | None = None) -> None:
        """Open the authenticated connection, resuming ``line``.

        The connection takes ``line`` and keeps it current as receipts arrive; the driver
        must not start a second connection on the same state while this one is open.
        On the responder side this is where a replayed initiation is refused
        (:class:`AuthenticationError`), before any answer is sent. ``config`` replaces the
        connection's settings from here on (a listener shared by several lines handshakes
        with its own settings, then each line runs with its own).
        """
        if self._state is not _S.AUTHENTICATED:
            raise LocalProtocolError(
                f"start() needs an authenticated connection, not {self._state.value}"
            )
        line.check()
        if config is not None:
            self._config = config
        self._now = now
        if self._role is Role.RESPONDER:
            assert self._handshake is not None
            assert self._initiation_timestamp is not None
            if self._initiation_timestamp <= line.peer_initiation_watermark:
                raise self._fail(AuthenticationError(reason="replayed initiation"))
            line.peer_initiation_watermark = self._initiation_timestamp
            self._write_frame(self._handshake.write_message(b""))
            self._finish_handshake()
        else:
            assert self._initiation_timestamp is not None
            line.initiation_timestamp = max(line.initiation_timestamp, self._initiation_timestamp)
        self._line = line
        self._received_seq = line.received_seq
        self._received_head = line.received_head
        self._set_state(_S.OPEN)
        self._liveness = Liveness.UP
        self._last_heard = now
        self._ping_interval = self._config.heartbeat_interval
        self._key_since = now
        # Our receipts first, so the peer can retire what we hold before it replays it.
        for receipt in (line.delivered_receipt, line.acknowledged_receipt):
            if receipt is not None:
                self._emit_record([T_RECEIPT, receipt.envelope, receipt.signature])
        self._transmitted_high = line.peer_delivered
        self._transmit()
        self._last_ping_at = now
        self._send_ping()

    def send_message(self, message: SignedMessage) -> None:
        """Transmit the message just added to the line state by :meth:`LineState.next_message`.

        It is encrypted now, or by a later :meth:`data_to_send` while ``unsent_limit`` bytes
        are unsent.

        A message added before :meth:`start` is already transmitted by it: do not send it again.
        """
        line = self._require_open()
        if message.seq != line.sent_seq or line.head_of_sent(message.seq) != message.hash:
            raise LocalProtocolError("send_message() takes the line's newest message")
        if message.seq <= self._transmitted_high:
            raise LocalProtocolError(f"message {message.seq} was already transmitted")
        self._transmit()

    def send_receipt(self, receipt: Receipt) -> None:
        """Transmit a receipt just signed with :meth:`LineState.sign_own_receipt`.

        It goes out with the next :meth:`data_to_send`, unless a newer one of its kind
        replaces it first.
        """
        line = self._require_open()
        current = (
            line.delivered_receipt
            if receipt.kind is ReceiptKind.DELIVERED
            else line.acknowledged_receipt
        )
        if current is not receipt:
            raise LocalProtocolError("send_receipt() takes the line's newest receipt of its kind")
        self._owe(receipt)

    def close(self, reason: str = "closed") -> None:
        """Say goodbye (when open) and close; the goodbye is in :meth:`data_to_send`."""
        if self._state in TERMINAL_STATES:
            return
        if self._state is _S.OPEN:
            self._emit_owed_receipts()
            self._emit_record([T_GOODBYE, reason[:_MAX_REASON]])
        self._set_state(_S.CLOSED)

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer, in order; empties the buffer.

        Call it again once everything it returned is written: until then that output
        counts as :attr:`unsent`. While anything is unsent, receipts wait here (a newer one
        replaces an older one of its kind), a due ping waits, and messages wait in the line
        state once ``unsent_limit`` is reached; this call adds what waited.
        """
        self._in_flight = 0
        if self._state is _S.OPEN:
            self._emit_owed_receipts()
            if self._ping_owed:
                self._send_ping()
            self._transmit()
        data = bytes(self._outbuf)
        self._outbuf.clear()
        self._in_flight = len(data)
        return data

    @property
    def unsent(self) -> int:
        """Bytes of output not known to be written: buffered here, or returned by the last
        :meth:`data_to_send` (the driver is still writing them)."""
        return self._in_flight + len(self._outbuf)

    # --- time -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`advance` must be called next, or ``None`` if no timer runs."""
        if self._state in (_S.AWAIT_RESPONSE, _S.AWAIT_INITIATION, _S.AUTHENTICATED):
            return self._handshake_deadline
        if self._state is not _S.OPEN:
            return None
        deadlines = [self._ping_at()]
        if not self._ping_owed:
            # An owed ping carries a due rekey: it waits for data_to_send(), not for time.
            deadlines.append(self._rekey_at())
        if not self._held:
            deadlines.append(self._down_at())
            if self._liveness is Liveness.UP:
                deadlines.append(self._suspect_at())
        return min(deadlines)

    def hold(self) -> None:
        """The driver stops reading (its application is behind): silence proves nothing now.

        Suspect and down detection pause until :meth:`release`; pings still go out, so the
        peer keeps hearing from us.
        """
        self._held = True

    def release(self, now: float) -> None:
        """The driver reads again: the silence clock restarts from ``now``."""
        if self._held:
            self._held = False
            self._last_heard = max(self._last_heard, now)

    # advance() compares ``now`` with these very expressions, never with a difference such as
    # ``now - last_heard``: in floating point the two can disagree, and a deadline that has
    # passed but does not fire would make a driver spin at one instant.
    def _down_at(self) -> float:
        return self._last_heard + self._config.down_after

    def _suspect_at(self) -> float:
        return self._last_heard + self._config.suspect_after * self._config.heartbeat_interval

    def _rekey_at(self) -> float:
        return self._key_since + self._config.rekey_after_seconds

    def _ping_at(self) -> float:
        return self._last_ping_at + self._ping_interval

    def advance(self, now: float) -> None:
        """Run the timers that are due at ``now``: handshake timeout, pings, liveness, rekey."""
        self._now = now
        state = self._state
        if state in (_S.AWAIT_RESPONSE, _S.AWAIT_INITIATION, _S.AUTHENTICATED):
            if now >= self._handshake_deadline:
                self._break("the handshake timed out")
            return
        if state is not _S.OPEN:
            return
        silent = now - self._last_heard
        if not self._held:
            if now >= self._down_at():
                self._liveness = Liveness.DOWN
                self._events.append(LivenessChanged(Liveness.DOWN, silent))
                self._break(f"the peer was silent for {silent:.3f} s")
                return
            if self._liveness is Liveness.UP and now >= self._suspect_at():
                self._liveness = Liveness.SUSPECT
                self._events.append(LivenessChanged(Liveness.SUSPECT, silent))
        if now >= self._ping_at() or (not self._ping_owed and now >= self._rekey_at()):
            # An idle line still rekeys on time: the ping carries the rekey flag. A ping is
            # queued only behind written output: behind output the peer has not read yet it
            # waits, and the pings due meanwhile are that one.
            self._last_ping_at = now
            if self.unsent:
                self._ping_owed = True
            else:
                self._send_ping()

    @property
    def _requested_interval_us(self) -> int:
        return max(1, round(self._config.heartbeat_interval * 1_000_000))

    def _send_ping(self) -> None:
        self._ping_owed = False
        self._ping_id += 1
        self._pings[self._ping_id] = self._now
        if len(self._pings) > MAX_OUTSTANDING_PINGS:
            del self._pings[min(self._pings)]
        hold_us = 0
        if self._peer_ping_id:
            hold_us = max(0, int((self._now - self._peer_ping_at) * 1_000_000))
        self._emit_record([
            T_PING, self._ping_id, self._peer_ping_id, hold_us, self._requested_interval_us,
        ])

    # --- output ---------------------------------------------------------------------

    def _owe(self, receipt: Receipt) -> None:
        self._owed_receipts[receipt.kind] = receipt

    def _emit_owed_receipts(self) -> None:
        # Delivered first: the peer refuses an acknowledgement ahead of its delivered mark.
        for kind in (ReceiptKind.DELIVERED, ReceiptKind.ACKNOWLEDGED):
            receipt = self._owed_receipts.pop(kind, None)
            if receipt is not None:
                self._emit_record([T_RECEIPT, receipt.envelope, receipt.signature])

    def _transmit(self) -> None:
        """Encrypt our next untransmitted messages while output is under ``unsent_limit``.

        The rest wait in the line state's ``pending`` (held there anyway until the peer's
        delivered receipt), not as a second, encrypted copy here.
        """
        line = self._line
        assert line is not None
        # A delivered receipt may cover messages a former connection transmitted.
        self._transmitted_high = max(self._transmitted_high, line.peer_delivered)
        limit = self._config.unsent_limit
        while self._transmitted_high < line.sent_seq and self.unsent < limit:
            # pending holds peer_delivered + 1 .. sent_seq, in order.
            self._emit_message(line.pending[self._transmitted_high - line.peer_delivered])

    def _emit_message(self, message: SignedMessage) -> None:
        self._transmitted_high = message.seq
        self._emit_record([T_MESSAGE, message.envelope, message.signature])

    def _write_frame(self, noise_message: bytes) -> None:
        self._outbuf += len(noise_message).to_bytes(2, "big")
        self._outbuf += noise_message

    def _emit_record(self, record: list[Any]) -> None:
        try:
            data = pack(record)
        except _PACKER_ERRORS as exc:  # pragma: no cover - our own records always pack
            raise LocalProtocolError(f"cannot encode record: {exc}") from None
        cipher = self._send_cipher
        assert cipher is not None
        config = self._config
        view = memoryview(data)
        offset = 0
        while True:
            chunk = view[offset : offset + MAX_CONTENT]
            offset += len(chunk)
            flags = FLAG_FINAL if offset >= len(data) else 0
            self._sent_under_key += 1
            rekey = (
                self._sent_under_key >= config.rekey_after_messages
                or self._now >= self._rekey_at()
            )
            if rekey:
                flags |= FLAG_REKEY
            size = _HEADER.size + len(chunk)
            if config.padding:
                size = min(-(-size // config.padding) * config.padding, MAX_PLAINTEXT)
            plaintext = bytearray(size)
            _HEADER.pack_into(plaintext, 0, flags, len(chunk))
            plaintext[_HEADER.size : _HEADER.size + len(chunk)] = chunk
            self._write_frame(cipher.encrypt_with_ad(b"", bytes(plaintext)))
            if rekey:
                cipher.rekey()
                self.rekeys_sent += 1
                self._sent_under_key = 0
                self._key_since = self._now
            if flags & FLAG_FINAL:
                return


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
