"""The sans-io line protocol: one :class:`Connection` object per transport connection.

Theory of operation
-------------------
The connection never touches a socket or a clock. The driver feeds it received bytes with
:meth:`~Connection.receive_data` (``b""`` for end of stream), pulls :mod:`events
<hotline.protocol._events>` with :meth:`~Connection.next_event` until it returns
``NEED_DATA``, submits actions (:meth:`~Connection.send_message`,
:meth:`~Connection.send_receipt`, :meth:`~Connection.close`), writes whatever
:meth:`~Connection.data_to_send` returns, and wakes the connection at
:meth:`~Connection.next_deadline` with :meth:`~Connection.advance`. Every call that depends on
time takes ``now``: seconds on any monotonic scale.

A connection is a thin composition, one object per layer of docs/protocol.md:

- :class:`~._codec.Frames` and :class:`~._codec.TransportCodec` (``_codec.py``): the wire
  codec, frames and transport plaintexts;
- :class:`~._handshake.Handshake` (``_handshake.py``), the phase until :meth:`start`, then
  :class:`~._transport.Transport` (``_transport.py``), the phase of records: the connection
  holds one or the other, never both, so neither has fields of the other phase;
- :class:`~._liveness.PeerLiveness` (``_liveness.py``), inside the transport: heartbeats and
  what we believe about the peer;
- ``_machines.py``: the state tables. Every change of :attr:`state` is a lookup of
  ``(state, input)`` there (through a ``ConnectionMachine``, which also keeps the leftovers:
  the end of stream and the error that ended the connection);
- :class:`~._batching.SignatureBatches` (``_batching.py``): signatures checked in batches.

After a remote or authentication error the connection stays in ``ERROR`` for good, and
re-raises. This class adds what belongs to the connection as a whole: the event queue, and
when events come out. What a phase knows (round trips, rekeys, holding, its timers), the
phase in force answers; the handshake answers with the transport's "not yet" values.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable, Mapping

from .._config import Config
from .._errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
)
from .._keys import Identity, PublicKey
from ._batching import SignatureBatches
from ._codec import Frames
from ._events import (
    NEED_DATA,
    ConnectionBroken,
    Event,
    Liveness,
    NeedData,
    SignaturesToCheck,
)
from ._handshake import Handshake, known_peer_table
from ._linestate import LineState
from ._machines import ConnectionInput, ConnectionMachine, ConnectionState, Role
from ._records import Receipt, SignatureBatch, SignedMessage
from ._transport import PathGroup, Transport

__all__ = ["Connection"]

_S = ConnectionState
_I = ConnectionInput
#: The peer's faults: after one, the connection stays in ``ERROR`` and raises it again.
_PEER_ERRORS = (RemoteProtocolError, AuthenticationError)


class Connection:
    """One transport connection of a line, as a pure state machine.

    Build one with :meth:`initiate` or :meth:`respond`.
    """

    def __init__(self, handshake: Handshake, frames: Frames, config: Config) -> None:
        """Use :meth:`initiate` and :meth:`respond`, which say what each role needs."""
        self._config = config
        self._machine = ConnectionMachine(handshake.role)
        self._frames = frames
        self._phase: Handshake | Transport = handshake
        self._events: deque[Event] = deque()
        self._signatures = SignatureBatches()

    def copy(self) -> Connection:
        """An independent copy: the same state, keys, nonces, buffers, events and marks,
        each advancing on its own from here.

        Keys, settings and a responder's table of known peers are shared, as they never change.
        """
        clone = copy.copy(self)
        clone._machine = copy.copy(self._machine)
        clone._frames = self._frames.copy()
        clone._events = deque(self._events)
        clone._signatures = self._signatures.copy()
        phase = self._phase
        clone._phase = (phase.copy(clone._frames) if isinstance(phase, Handshake)
                        else phase.copy(clone._frames, clone._events, clone._signatures))
        return clone

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
        ``peer`` before (nanoseconds since the epoch; the driver records the last one with
        ``LineState.record_initiations``).
        ``ephemeral`` fixes the ephemeral key, for test vectors only.
        """
        if not 0 < timestamp < 2**64:
            raise LocalProtocolError("the initiation timestamp is a positive 64-bit integer")
        config, frames = config or Config(), Frames()
        handshake = Handshake(identity, Role.INITIATOR, frames, peer=peer, known={},
                              deadline=now + config.handshake_timeout, ephemeral=ephemeral)
        handshake.initiate(timestamp)
        return cls(handshake, frames, config)

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
        is then used as it is (and may change while the connection waits). ``ephemeral``
        (32 random bytes; fixed ones only for test vectors) is the key pair message 2 will
        carry, derived here rather than while the initiator waits for that message.
        """
        config, frames = config or Config(), Frames()
        handshake = Handshake(identity, Role.RESPONDER, frames, peer=None,
                              known=known_peer_table(known_peers),
                              deadline=now + config.handshake_timeout, ephemeral=ephemeral)
        return cls(handshake, frames, config)

    # --- read-only views ------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._machine.state

    @property
    def role(self) -> Role:
        return self._phase.role

    @property
    def peer(self) -> PublicKey | None:
        """The peer, once known (at once for an initiator, after authentication otherwise)."""
        return self._phase.peer

    @property
    def line_id(self) -> bytes:
        return self._phase.line_id

    @property
    def liveness(self) -> Liveness:
        return self._phase.liveness_state

    @property
    def config(self) -> Config:
        return self._config

    @property
    def handshake_hash(self) -> bytes:
        return self._phase.handshake_hash

    @property
    def initiation_timestamp(self) -> int | None:
        """Initiator: the timestamp it sent. Responder: the one it received."""
        return self._phase.initiation_timestamp

    @property
    def rtt(self) -> float | None:
        """The latest round-trip sample (seconds), once a ping echo has given one."""
        return self._phase.rtt

    @property
    def smoothed_rtt(self) -> float | None:
        return self._phase.smoothed_rtt

    @property
    def rekeys_sent(self) -> int:
        return self._phase.rekeys_sent

    @property
    def rekeys_received(self) -> int:
        return self._phase.rekeys_received

    @property
    def buffered_frames(self) -> int:
        """Received bytes not yet handled: once the events are drained, at most one
        incomplete frame."""
        return self._frames.buffered

    @property
    def buffered_record(self) -> int:
        """Bytes of a record whose final piece has not arrived (never over
        ``max_record_size``)."""
        return self._phase.buffered_record

    @property
    def outstanding_pings(self) -> int:
        """Our pings whose echo we still wait for (never over ``MAX_OUTSTANDING_PINGS``)."""
        return self._phase.outstanding_pings

    # --- state ----------------------------------------------------------------------

    def _clock(self, now: float) -> None:
        if isinstance(self._phase, Transport):
            self._phase.now = now

    def _break(self, event: ConnectionInput, reason: str) -> None:
        self._machine.apply(event)
        self._events.append(ConnectionBroken(reason))

    def _require_open(self) -> Transport:
        self._machine.check_open()
        phase = self._phase
        if not isinstance(phase, Transport):  # pragma: no cover - OPEN holds the transport
            raise LocalProtocolError("the connection has not started")
        return phase

    # --- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its side of the stream."""
        self._clock(now)
        if self._machine.stream_received(data):
            self._frames.feed(data)

    def next_event(self) -> Event | NeedData:
        """Return the next event, or ``NEED_DATA`` when more bytes (or time) are needed.

        Raises :class:`RemoteProtocolError` or :class:`AuthenticationError` when the peer's
        bytes break the protocol; the connection is then in ``ERROR`` for good, and every
        later call raises the same error again.
        """
        signatures = self._signatures
        if signatures.checking is not None:
            return NEED_DATA  # Nothing comes out past messages whose signatures are out.
        if self._events:
            return self._events.popleft()
        machine = self._machine
        machine.check_readable()
        try:
            # Frames are handled only while no event waits, except that a burst of new
            # messages may gather (their events queued, unreleased) to be checked together.
            while (len(self._events) == signatures.gated
                   and len(signatures.unverified) < signatures.gather_limit):
                if machine.state is _S.AUTHENTICATED:
                    break  # Frames wait until the driver has called start().
                frame = self._frames.take()
                if frame is None:
                    if machine.end_of_stream and not machine.over:
                        self._break(
                            _I.END_OF_STREAM, "the peer closed the connection without a goodbye"
                        )
                    break
                self._handle_frame(frame)
                if machine.over:
                    break
        except _PEER_ERRORS as error:
            # Whatever is queued now came from the frame that failed, or from a burst whose
            # signatures nobody checked: none of it may come out after the error. (Messages
            # of that burst are not lost: without their receipt, the peer sends them again.)
            self._events.clear()
            signatures.clear()
            raise self._machine.fail(error) from None
        phase = self._phase
        if signatures.unverified and isinstance(phase, Transport):
            batch = signatures.settle(phase.peer)
            if batch is signatures.checking:
                return SignaturesToCheck(batch)
            self._checked(batch)
            return self.next_event()
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def _handle_frame(self, frame: bytes) -> None:
        phase = self._phase
        if isinstance(phase, Handshake):
            self._events.append(phase.read(frame))
            self._machine.apply(_I.AUTHENTICATED)
            return
        outcome = phase.handle_frame(frame)
        if outcome is not None:
            self._machine.apply(outcome)

    def check_signatures_in_batches(self, minimum: int = 8) -> None:
        """Hand bursts of at least ``minimum`` new messages to the driver to check together.

        From now on, :meth:`next_event` may return :class:`SignaturesToCheck`; smaller bursts
        are still checked here, at once. A driver with a spare core runs the batch in a
        worker thread. Nothing a batch covers (nor anything after it) comes out before
        :meth:`signatures_checked`; a bad signature fails the connection as it would inline.
        """
        self._signatures.enable(minimum)

    def signatures_checked(self, batch: SignatureBatch) -> None:
        """Take back the batch of the last :class:`SignaturesToCheck`, after ``batch.run()``."""
        self._signatures.take_back(batch)
        self._checked(batch)

    def _checked(self, batch: SignatureBatch) -> None:
        if batch.failed_at is not None:
            # The events of the whole burst and of every frame after it go: as if the bad
            # message had failed inline, with the messages before it resent by the peer.
            self._events.clear()
            self._machine.fail(AuthenticationError(reason="bad signature"))

    # --- actions --------------------------------------------------------------------

    def start(
        self,
        line: LineState,
        now: float,
        *,
        config: Config | None = None,
        paths: PathGroup | None = None,
    ) -> None:
        """Open the authenticated connection, resuming ``line``.

        The connection reads ``line`` here and never writes it: it keeps its own marks
        from then on, and reports what the driver records (:class:`ReceiptReceived`, the
        accepted :attr:`initiation_timestamp`). On the responder side this is where a
        replayed initiation is refused (:class:`AuthenticationError`), before any answer is
        sent. With ``paths`` (a line with several paths, docs/protocol.md "Several paths")
        the connection shares that group's marks and starts on standby: it transmits our
        messages only once :meth:`activate` is called. ``config`` replaces the
        connection's settings from here on (a listener shared by several lines handshakes
        with its own settings, then each line runs with its own).
        """
        handshake = self._phase
        if self._machine.state is not _S.AUTHENTICATED or not isinstance(handshake, Handshake):
            raise LocalProtocolError(
                f"start() needs an authenticated connection, not {self._machine.state.value}"
            )
        line.check()
        if config is not None:
            self._config = config
        try:
            transport = handshake.into_transport(
                line, self._events, self._signatures, config=self._config, now=now
            )
        except AuthenticationError as error:
            raise self._machine.fail(error) from None
        if paths is not None:
            transport.join(paths)
        self._phase = transport
        self._machine.apply(_I.STARTED)
        transport.open()

    @property
    def active(self) -> bool:
        """Whether this connection transmits our messages (always, unless it is one of
        several paths on standby)."""
        phase = self._phase
        return isinstance(phase, Transport) and phase.active

    def activate(self) -> None:
        """Make this path the one that carries our messages: it resends, from the peer's
        delivered mark, what no receipt covers yet, after our newest receipts."""
        self._require_open().activate()

    def deactivate(self) -> None:
        """Put this path on standby: pings and receipts only."""
        phase = self._phase
        if isinstance(phase, Transport):
            phase.deactivate()

    def send_message(self, message: SignedMessage) -> None:
        """Transmit our next message (from :meth:`LineState.next_message`), each in order.

        It is encrypted now, or by a later :meth:`data_to_send` while ``unsent_limit`` bytes
        are unsent.

        A message in the line state given to :meth:`start` is already transmitted by it: do not
        send it again (:class:`LocalProtocolError`, as for one that does not continue the
        chain).
        """
        self._require_open().send_message(message)

    def send_receipt(self, receipt: Receipt) -> None:
        """Transmit a receipt just signed with :meth:`LineState.sign_own_receipt` (never an
        older one than the last of its kind, nor past the messages received here).

        It goes out with the next :meth:`data_to_send`, unless a newer one of its kind
        replaces it first.
        """
        self._require_open().send_receipt(receipt)

    def close(self, reason: str = "closed") -> None:
        """Say goodbye (when open) and close; the goodbye is in :meth:`data_to_send`."""
        if self._machine.over:
            return
        phase = self._phase
        if self._machine.state is _S.OPEN and isinstance(phase, Transport):
            phase.close(reason)
        self._machine.apply(_I.CLOSED_HERE)

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer, in order; empties the buffer.

        Call it again once everything it returned is written: until then that output
        counts as :attr:`unsent`. While anything is unsent, receipts wait here (a newer one
        replaces an older one of its kind), a due ping waits, and messages wait in the line
        state once ``unsent_limit`` is reached; this call adds what waited.
        """
        self._frames.written()
        phase = self._phase
        if self._machine.state is _S.OPEN and isinstance(phase, Transport):
            phase.flush()
        return self._frames.take_output()

    @property
    def has_output(self) -> bool:
        """Whether :meth:`data_to_send` has (or, once the last output is written, would have)
        something to write: a driver whose writer is idle need not wake it otherwise."""
        if self._frames.unsent:
            return True
        phase = self._phase
        return (
            self._machine.state is _S.OPEN and isinstance(phase, Transport) and phase.has_output
        )

    @property
    def unsent(self) -> int:
        """Bytes of output not known to be written: buffered here, or returned by the last
        :meth:`data_to_send` (the driver is still writing them)."""
        return self._frames.unsent

    # --- time -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`advance` must be called next, or ``None`` if no timer runs."""
        return None if self._machine.over else self._phase.next_deadline()

    def hold(self) -> None:
        """The driver stops reading (its application is behind): silence proves nothing now.

        Suspect and down detection pause until :meth:`release`; pings still go out, so the
        peer keeps hearing from us.
        """
        self._phase.hold()

    def release(self, now: float) -> None:
        """The driver reads again: the silence clock restarts from ``now``."""
        self._phase.release(now)

    def advance(self, now: float) -> None:
        """Run the timers that are due at ``now``: handshake timeout, pings, liveness, rekey."""
        self._clock(now)
        if not self._machine.over and (broken := self._phase.advance(now)) is not None:
            self._break(*broken)
