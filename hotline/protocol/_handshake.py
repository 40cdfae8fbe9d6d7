"""The handshake phase of a connection: ``Noise_IK_25519_ChaChaPoly_BLAKE2b`` with hotline's
prologue and payloads (docs/protocol.md, "Handshake").

Theory of operation
-------------------
The prologue names the responder's Ed25519 key and the initiator's payload carries its own
with its initiation timestamp, so a session binds exactly the two pinned Ed25519 keys, not
merely the X25519 keys derived from them (which cannot tell a key from its negation); the
responder's payload is empty. The responder names the peer to its driver
(:class:`PeerAuthenticated`) and waits: the driver loads that peer's :class:`LineState`,
checks nothing itself, and calls ``Connection.start``, which hands the line state to
:meth:`Handshake.into_transport`. That rejects a timestamp not above the stored watermark (a
replayed initiation) before anything is sent back, answers, and splits the two transport
cipher states, which is all the transport phase keeps of the handshake (with its hash). The
line state is only read: the driver records the accepted timestamp (the event's, or
``Connection.initiation_timestamp``) with the next batch it stores.

A :class:`Handshake` lives until ``start()``; nothing in it outlives the phase, and the
transport phase (``_transport.py``) has nothing of it but what
:meth:`Handshake.into_transport` hands over (as snow's ``into_transport_mode``).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable, Mapping

from .._config import Config
from .._errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from .._keys import Identity, PublicKey, line_id
from ._batching import SignatureBatches
from ._codec import Frames, TransportCodec
from ._events import Event, Liveness, PeerAuthenticated
from ._linestate import LineState
from ._machines import ConnectionInput, Role
from ._noise import CipherState, HandshakeState
from ._records import pack, strict_unpack
from ._transport import Transport

__all__ = ["PROLOGUE", "PROTOCOL_NAME", "Handshake", "handshake_prologue"]

PROTOCOL_NAME = "Noise_IK_25519_ChaChaPoly_BLAKE2b"
#: hotline's name and protocol version: the start of every handshake's prologue.
PROLOGUE = b"hotline/3"


def handshake_prologue(responder: PublicKey) -> bytes:
    """The prologue of a handshake with ``responder``: :data:`PROLOGUE`, then its Ed25519 key.

    Both sides know the responder's Ed25519 key before message 1 (the initiator has pinned
    it), so it goes here; the initiator's, which the responder learns only from message 1,
    travels in that message's payload.
    """
    return PROLOGUE + responder.raw


def known_peer_table(
    known_peers: Iterable[PublicKey] | Mapping[bytes, PublicKey],
) -> Mapping[bytes, PublicKey]:
    """Known peers by X25519 key."""
    if isinstance(known_peers, Mapping):
        # A listener's own table, shared rather than copied: with many lines, a copy per
        # pending connection would cost memory quadratic in the number of lines.
        return known_peers
    table: dict[bytes, PublicKey] = {}
    for key in known_peers:
        if key.x25519 in table and table[key.x25519] != key:
            raise LocalProtocolError("two known peers share one X25519 key")
        table[key.x25519] = key
    return table


class Handshake:
    """One side of the handshake, from its first message to the split."""

    # What the transport phase measures, before there is any (the connection's views).
    liveness_state = Liveness.CONNECTING
    rtt: float | None = None
    smoothed_rtt: float | None = None
    rekeys_sent = rekeys_received = buffered_record = outstanding_pings = 0

    def __init__(
        self,
        identity: Identity,
        role: Role,
        frames: Frames,
        *,
        deadline: float,
        peer: PublicKey | None,
        known: Mapping[bytes, PublicKey],
        ephemeral: bytes | None,
    ) -> None:
        self.role = role
        self.deadline = deadline
        self._identity = identity
        self._frames = frames
        self._known = known
        self.peer = peer
        self.line_id = line_id(identity.public_key, peer) if peer is not None else b""
        self.handshake_hash = b""
        self.held = False  # The driver's reading pauses; the transport phase inherits it.
        #: Initiator: the timestamp it sent. Responder: the one it received (once it has).
        self.initiation_timestamp: int | None = None
        pinned = peer if role is Role.INITIATOR else None
        self._noise = HandshakeState(
            PROTOCOL_NAME,
            initiator=role is Role.INITIATOR,
            prologue=handshake_prologue(pinned if pinned is not None else identity.public_key),
            s=identity.x25519_key,
            e=ephemeral,
            rs=pinned.x25519 if pinned is not None else None,
        )

    def copy(self, frames: Frames) -> Handshake:
        """An independent copy that writes to ``frames``."""
        clone = copy.copy(self)
        clone._frames = frames
        clone._noise = self._noise.copy()
        return clone

    def next_deadline(self) -> float:
        return self.deadline

    def advance(self, now: float) -> tuple[ConnectionInput, str] | None:
        """Why the connection breaks at ``now``, if the handshake has run out of time."""
        if now >= self.deadline:
            return ConnectionInput.HANDSHAKE_EXPIRED, "the handshake timed out"
        return None

    def hold(self) -> None:
        self.held = True

    def release(self, now: float) -> None:
        self.held = False

    def initiate(self, timestamp: int) -> None:
        """Write message 1, carrying ``timestamp`` and our Ed25519 key."""
        self.initiation_timestamp = timestamp
        payload = pack([timestamp, self._identity.public_key.raw])
        self._frames.write(self._noise.write_message(payload))

    def read(self, frame: bytes) -> PeerAuthenticated:
        """Read the peer's handshake message: it authenticates the peer, or raises."""
        if self.role is Role.RESPONDER:
            return self._read_initiation(frame)
        return self._read_response(frame)

    def _read_noise(self, frame: bytes) -> bytes:
        try:
            return self._noise.read_message(frame)
        except AuthenticationError as exc:
            # Noise's own error says nothing, on purpose; this side's logs should.
            raise AuthenticationError(
                reason=exc.reason or "handshake message failed authentication "
                "(wrong key, tampered, or not a hotline peer)"
            ) from None

    def _read_initiation(self, frame: bytes) -> PeerAuthenticated:
        payload = self._read_noise(frame)
        remote = self._noise.remote_static
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
        self.peer = peer
        self._known = {}  # Needed no more.
        self.line_id = line_id(self._identity.public_key, peer)
        self.initiation_timestamp = value
        self.handshake_hash = self._noise.handshake_hash
        return PeerAuthenticated(peer, value, self.handshake_hash)

    def _read_response(self, frame: bytes) -> PeerAuthenticated:
        payload = self._read_noise(frame)
        if payload:
            raise RemoteProtocolError("the handshake response carries no payload")
        self.handshake_hash = self._noise.handshake_hash
        return PeerAuthenticated(self._authenticated_peer(), None, self.handshake_hash)

    def _authenticated_peer(self) -> PublicKey:
        if self.peer is None:
            raise LocalProtocolError("the peer is not authenticated yet")
        return self.peer

    def into_transport(
        self,
        line: LineState,
        events: deque[Event],
        signatures: SignatureBatches,
        *,
        config: Config,
        now: float,
    ) -> Transport:
        """At ``start()``: end the handshake and begin the transport phase on ``line``.

        The initiation is checked against ``line`` (which is only read); the responder answers.
        """
        peer, send, receive = self._accept(line)
        return Transport(
            TransportCodec(self._frames, send, receive, now=now), line, events, signatures,
            peer=peer, line_id=self.line_id, config=config, now=now, held=self.held,
            role=self.role, handshake_hash=self.handshake_hash,
            initiation_timestamp=self.initiation_timestamp,
        )

    def _accept(self, line: LineState) -> tuple[PublicKey, CipherState, CipherState]:
        timestamp = self.initiation_timestamp
        if timestamp is None:
            raise LocalProtocolError("the handshake has not authenticated the peer")
        if self.role is Role.RESPONDER:
            if timestamp <= line.peer_initiation_watermark:
                raise AuthenticationError(reason="replayed initiation")
            self._frames.write(self._noise.write_message(b""))
        self.handshake_hash = self._noise.handshake_hash
        send, receive = self._noise.split()
        return self._authenticated_peer(), send, receive
