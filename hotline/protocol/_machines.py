"""Every state machine of a connection, as tables keyed by (state, input).

Rule 1 (after h11's ``_state.py``): every state transition of a connection and of the peer's
liveness is decided here, by looking up ``(state, input)`` in a table; a pair that is not in
the table is a bug of the caller (:class:`LocalProtocolError`), never a guess. Rule 2: this
file knows nothing of bytes, keys or stores, only states and inputs named for what happened.

The *connection* machine (:data:`CONNECTION`) follows docs/protocol.md's lifecycle: an
initiator waits for the response, a responder for an initiation; the peer's handshake
message authenticates it, and the driver's ``start()`` opens the connection. Every state
that is not terminal may end: a goodbye or our own ``close()`` closes it; the end of the
stream, the handshake timer or the peer's silence breaks it; a fault of the peer (a protocol
or an authentication error) leaves it in ``ERROR`` for good.

The *liveness* machine (:data:`LIVENESS`) is what this side believes about the peer, from
the traffic it has (not) seen: ``UP`` once the connection opens, ``SUSPECT`` after
``suspect_after`` silent intervals, back to ``UP`` when anything authentic arrives, and
``DOWN`` after ``down_after`` seconds of silence, which also breaks the connection.

Extra bits of state that do not fit the tables, and where they live (those of the connection
machine here, in :class:`ConnectionMachine`):

- ``held`` (:class:`~._liveness.PeerLiveness`): the driver has stopped reading, so silence
  proves nothing; the liveness timers pause until it reads again.
- ``checking`` (``_batching.py``): a batch of signatures is out with the driver; no event
  comes out, whatever the state, until the batch is back.
- ``failure`` (:class:`ConnectionMachine`): the error that put the connection in ``ERROR``
  (or that a batch found after it closed), raised again by every later ``next_event()``.
- ``end_of_stream`` (:class:`ConnectionMachine`): the peer ended its stream; frames already
  buffered still count, and the connection breaks once they are used up.
- ``ping owed`` (``Transport``): a ping (and any rekey it carries) fell due while output was
  unsent; it goes out with the next ``data_to_send()``, not at a time.
"""

from __future__ import annotations

import enum

from .._errors import (
    ConnectionBrokenError,
    ConnectionClosedError,
    HotlineError,
    LocalProtocolError,
)
from ._events import Liveness

__all__ = [
    "CONNECTION", "INITIAL_STATE", "LIVENESS", "TERMINAL_STATES", "ConnectionInput",
    "ConnectionMachine", "ConnectionState", "LivenessInput", "Role", "next_connection_state",
    "next_liveness",
]


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


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class ConnectionInput(enum.Enum):
    AUTHENTICATED = "the peer's handshake message authenticated it"
    STARTED = "the driver started the connection"
    GOODBYE_RECEIVED = "the peer said goodbye"
    CLOSED_HERE = "this side closed the connection"
    END_OF_STREAM = "the peer's stream ended without a goodbye"
    HANDSHAKE_EXPIRED = "the handshake timed out"
    PEER_SILENT = "the peer went down"
    PEER_FAULT = "the peer broke the protocol or failed authentication"


_S = ConnectionState
_I = ConnectionInput
#: The states a connection never leaves.
TERMINAL_STATES = frozenset({_S.CLOSED, _S.BROKEN, _S.ERROR})

#: Where each role's machine starts.
INITIAL_STATE = {Role.INITIATOR: _S.AWAIT_RESPONSE, Role.RESPONDER: _S.AWAIT_INITIATION}

#: Every way out of any state that is not terminal.
_ENDINGS = {
    _I.CLOSED_HERE: _S.CLOSED,
    _I.END_OF_STREAM: _S.BROKEN,
    _I.PEER_FAULT: _S.ERROR,
}

CONNECTION: dict[tuple[ConnectionState, ConnectionInput], ConnectionState] = {
    **{(_S.AWAIT_RESPONSE, i): s for i, s in _ENDINGS.items()},
    (_S.AWAIT_RESPONSE, _I.AUTHENTICATED): _S.AUTHENTICATED,
    (_S.AWAIT_RESPONSE, _I.HANDSHAKE_EXPIRED): _S.BROKEN,
    **{(_S.AWAIT_INITIATION, i): s for i, s in _ENDINGS.items()},
    (_S.AWAIT_INITIATION, _I.AUTHENTICATED): _S.AUTHENTICATED,
    (_S.AWAIT_INITIATION, _I.HANDSHAKE_EXPIRED): _S.BROKEN,
    **{(_S.AUTHENTICATED, i): s for i, s in _ENDINGS.items()},
    (_S.AUTHENTICATED, _I.STARTED): _S.OPEN,
    (_S.AUTHENTICATED, _I.HANDSHAKE_EXPIRED): _S.BROKEN,
    **{(_S.OPEN, i): s for i, s in _ENDINGS.items()},
    (_S.OPEN, _I.GOODBYE_RECEIVED): _S.CLOSED,
    (_S.OPEN, _I.PEER_SILENT): _S.BROKEN,
}


def next_connection_state(state: ConnectionState, event: ConnectionInput) -> ConnectionState:
    new = CONNECTION.get((state, event))
    if new is None:
        raise LocalProtocolError(f"{event.value}: impossible in state {state.value}")
    return new


class ConnectionMachine:
    """A connection's state, moved only through :data:`CONNECTION`, with the leftovers that
    decide what its calls do once it is over."""

    def __init__(self, role: Role) -> None:
        self.state = INITIAL_STATE[role]
        self.failure: HotlineError | None = None
        self.end_of_stream = False

    @property
    def over(self) -> bool:
        return self.state in TERMINAL_STATES

    def apply(self, event: ConnectionInput) -> None:
        self.state = next_connection_state(self.state, event)

    def fail(self, error: HotlineError) -> HotlineError:
        """Remember ``error`` for good; a connection not over yet moves to ``ERROR``. (One
        that closed or broke meanwhile, with a burst of signatures out, keeps its state but
        still raises the error, once its events are drained.)"""
        self.failure = error
        if not self.over:
            self.apply(ConnectionInput.PEER_FAULT)
        return error

    def stream_received(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether ``data`` from the peer is to be read (``b""`` ends the stream)."""
        if self.end_of_stream and data:
            raise LocalProtocolError("received data after end of stream")
        if not data:
            self.end_of_stream = True
        return bool(data) and not self.over

    def check_readable(self) -> None:
        """What ``next_event()`` raises once the events are drained: the failure, or that
        the connection is closed or broken."""
        if self.failure is not None:
            raise self.failure
        if self.state is _S.CLOSED:
            raise ConnectionClosedError("the connection is closed")
        if self.state is _S.BROKEN:
            raise ConnectionBrokenError("the connection is broken")

    def check_open(self) -> None:
        """What sending on a connection that is not open raises."""
        if self.state is _S.OPEN:
            return
        if self.state is _S.CLOSED:
            raise ConnectionClosedError("the connection is closed")
        if self.state is _S.BROKEN:
            raise ConnectionBrokenError("the connection is broken")
        if self.state is _S.ERROR:
            raise LocalProtocolError("the connection failed and cannot be used")
        raise LocalProtocolError(f"the connection is not open yet ({self.state.value})")


class LivenessInput(enum.Enum):
    OPENED = "the connection opened"
    HEARD = "an authentic transport message arrived"
    SUSPECT_TIMER = "suspect_after intervals passed in silence"
    DOWN_TIMER = "down_after seconds passed in silence"


_L = Liveness
LIVENESS: dict[tuple[Liveness, LivenessInput], Liveness] = {
    (_L.CONNECTING, LivenessInput.OPENED): _L.UP,
    (_L.UP, LivenessInput.HEARD): _L.UP,
    (_L.UP, LivenessInput.SUSPECT_TIMER): _L.SUSPECT,
    (_L.UP, LivenessInput.DOWN_TIMER): _L.DOWN,
    (_L.SUSPECT, LivenessInput.HEARD): _L.UP,
    (_L.SUSPECT, LivenessInput.DOWN_TIMER): _L.DOWN,
}


def next_liveness(state: Liveness, event: LivenessInput) -> Liveness:
    new = LIVENESS.get((state, event))
    if new is None:
        raise LocalProtocolError(f"{event.value}: impossible while the peer is {state.value}")
    return new
