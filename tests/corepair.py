"""An in-memory harness for the sans-io core: two nodes, two wires and a manual clock.

A :class:`Node` is one party: its identity, its :class:`~hotline.LineState`, its current
:class:`~hotline.Connection` and what its application saw. A :class:`Pair` joins two nodes:
bytes one connection writes wait on a *wire* until :meth:`Pair.transfer` or :meth:`Pair.pump`
feeds them to the other, and every event is handled the way a simple driver would (start on
authentication, record and receipt received messages, keep received receipts).

Everything is deterministic: the identities come from fixed seeds, every connection's
ephemeral key from the node's name and a counter, timestamps from the manual clock
(``hotline.testing.wall_ns``). Two pairs
driven through the same steps write the same bytes.

Import it from a test module as ``import corepair`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import msgpack

from hotline import (
    Config,
    Connection,
    ConnectionBrokenError,
    ConnectionClosedError,
    ConnectionState,
    Event,
    Identity,
    LineState,
    MessageReceived,
    NeedData,
    PeerAuthenticated,
    PublicKey,
    Receipt,
    ReceiptKind,
    ReceiptReceived,
    SignedMessage,
    line_id,
)
from hotline.protocol import cover_message, unsigned_message
from hotline.protocol._machines import ConnectionInput
from hotline.protocol._transport import Transport
from hotline.store import Batch, MemoryStore
from hotline.testing import split_frames, wall_ns

SEED_A = bytes([1]) * 32
SEED_B = bytes([2]) * 32
TERMINAL = frozenset({ConnectionState.CLOSED, ConnectionState.BROKEN, ConnectionState.ERROR})


def ephemeral(name: str, counter: int) -> bytes:
    """The fixed X25519 ephemeral private key of ``name``'s connection number ``counter``."""
    return hashlib.blake2b(f"corepair {name} {counter}".encode(), digest_size=32).digest()


def snapshot(state: LineState) -> dict[str, Any]:
    """Every field of a line state, copied, so that ``snapshot(s) == snapshot(t)`` compares."""
    result = {f.name: getattr(state, f.name) for f in fields(state)}
    result["pending"] = tuple(state.pending)
    result["sent_heads"] = dict(state.sent_heads)
    return result


def _transport(conn: Connection) -> Transport:
    phase = conn._phase
    assert isinstance(phase, Transport), "the connection has not started"
    return phase


def emit_raw(conn: Connection, plaintext: bytes, *, rekey: bool = False) -> None:
    """Encrypt ``plaintext`` as ``conn``'s next transport message and queue its frame.

    Bypasses records, fragmentation and rekey bookkeeping: for building hostile peers. With
    ``rekey``, the sending key changes after it (whatever its flags say).
    """
    _transport(conn).codec.write_plaintext(plaintext, rekey=rekey)


def emit_record(conn: Connection, record: list[Any]) -> None:
    """Queue any record, unchecked, as ``conn``'s next: for building hostile peers."""
    _transport(conn).emit_record(record)


class Node:
    """One party: identity, line state, current connection, and what its application saw.

    ``delivered`` holds the bodies the application took (recorded in the line state and
    covered by a delivered receipt), each once, in order. With ``auto_deliver`` off, received
    messages wait in ``held`` until :meth:`deliver`; they are lost with the connection (the
    peer retransmits them). With ``store``, every change is committed as a :class:`Batch`
    (or queued in ``batch`` while ``autocommit`` is off) and :meth:`restart` reloads the state
    from the store, forgetting anything not committed.
    """

    def __init__(
        self,
        name: str,
        identity: Identity,
        *,
        config: Config | None = None,
        auto_deliver: bool = True,
        auto_ack: bool = False,
        store: MemoryStore | None = None,
    ) -> None:
        self.name = name
        self.identity = identity
        self.config = config or Config()
        self.auto_deliver = auto_deliver
        self.auto_ack = auto_ack
        self.store = store
        self.autocommit = True
        self.batch = Batch()
        self.state = LineState()
        self.peer: Node | None = None
        self.conn: Connection | None = None
        self.connections = 0
        self.sent: list[SignedMessage] = []
        self.held: list[SignedMessage] = []
        self.delivered: list[bytes] = []
        self.delivered_messages: list[SignedMessage] = []
        self.receipts: list[Receipt] = []
        self.events: list[Event] = []

    def __repr__(self) -> str:
        state = self.conn.state.value if self.conn else "no connection"
        return f"<Node {self.name} {state} sent={self.state.sent_seq} got={len(self.delivered)}>"

    @property
    def public_key(self) -> PublicKey:
        return self.identity.public_key

    @property
    def line_id(self) -> bytes:
        assert self.peer is not None
        return line_id(self.public_key, self.peer.public_key)

    @property
    def is_open(self) -> bool:
        return self.conn is not None and self.conn.state is ConnectionState.OPEN

    # --- store ----------------------------------------------------------------------

    def _persist(self, **changes: Any) -> None:
        if self.store is None:
            return
        for key, value in changes.items():
            if isinstance(value, list):
                getattr(self.batch, key).extend(value)
            else:
                setattr(self.batch, key, value)
        if self.autocommit:
            self.commit()

    def commit(self) -> None:
        assert self.store is not None
        if self.batch:
            self.store.commit(self.batch)
        self.batch = Batch()

    def restart(self) -> None:
        """Lose everything in memory and reload the line state from the store."""
        assert self.store is not None
        assert self.peer is not None
        self.conn = None
        self.held.clear()
        self.batch = Batch()
        self.state = self.store.load(self.public_key, self.peer.public_key)

    # --- application actions ----------------------------------------------------------

    def send(self, body: bytes, now: float) -> SignedMessage:
        """Sign the next message (persisting it first) and send it if connected."""
        message = self.state.next_message(
            self.identity, self.line_id, body, wall_ns(now),
            max_body_size=self.config.max_body_size,
        )
        self.sent.append(message)
        self._persist(sent=[message])
        if self.is_open:
            assert self.conn is not None
            self.conn.send_message(message)
        return message

    def send_burst(self, bodies: list[bytes], now: float) -> list[SignedMessage]:
        """Our next messages as one burst (only the last signed: protocol.md, section 8.1),
        persisted together, then sent if connected."""
        burst = []
        for index, body in enumerate(bodies):
            message = unsigned_message(self.public_key, self.line_id, self.state.sent_seq + 1,
                                       wall_ns(now), self.state.sent_head, body)
            if index == len(bodies) - 1:
                message = cover_message(self.identity, message)
            self.state.append_sent(message)
            burst.append(message)
        self.sent.extend(burst)
        self._persist(sent=burst)
        if self.is_open:
            assert self.conn is not None
            for message in burst:
                self.conn.send_message(message)
        return burst

    def deliver(self, now: float, count: int | None = None) -> Receipt | None:
        """Record ``count`` (default: all) held messages and send a delivered receipt."""
        take = self.held[: len(self.held) if count is None else count]
        if not take:
            return None
        del self.held[: len(take)]
        for message in take:
            self.state.record_received(message)
            self.delivered.append(message.body)
            self.delivered_messages.append(message)
        last = take[-1]
        receipt = self.state.sign_own_receipt(
            self.identity, self.line_id, ReceiptKind.DELIVERED, last.seq, last.hash, wall_ns(now)
        )
        self._persist(received=take, own_receipts=[receipt])
        if self.is_open:
            assert self.conn is not None
            self.conn.send_receipt(receipt)
        if self.auto_ack:
            self.acknowledge(now)
        return receipt

    def acknowledge(self, now: float) -> Receipt | None:
        """Acknowledge everything delivered, if that is more than already acknowledged."""
        state = self.state
        upto = state.delivered_upto
        if upto <= state.acknowledged_upto:
            return None
        assert state.delivered_receipt is not None
        receipt = state.sign_own_receipt(
            self.identity, self.line_id, ReceiptKind.ACKNOWLEDGED, upto,
            state.delivered_receipt.head, wall_ns(now),
        )
        self._persist(own_receipts=[receipt])
        if self.is_open:
            assert self.conn is not None
            self.conn.send_receipt(receipt)
        return receipt

    # --- driver ---------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> None:
        self.events.append(event)
        if isinstance(event, PeerAuthenticated):
            assert self.conn is not None
            self.conn.start(self.state, now)
            # The connection only reads the state: recording what it accepted is ours.
            if event.initiation_timestamp is not None:
                self.state.record_initiations(peers=event.initiation_timestamp)
                self._persist(peer_initiation_watermark=event.initiation_timestamp)
        elif isinstance(event, MessageReceived):
            self.held.append(event.message)
            if self.auto_deliver:
                self.deliver(now)
        elif isinstance(event, ReceiptReceived):
            self.receipts.append(event.receipt)
            self.state.apply_peer_receipt(event.receipt)
            self._persist(peer_receipts=[event.receipt])

    def drain(self, now: float) -> None:
        """Handle events until the connection needs data (peer faults propagate)."""
        while self.conn is not None:
            conn = self.conn
            try:
                event = conn.next_event()
            except (ConnectionClosedError, ConnectionBrokenError):
                return
            if isinstance(event, NeedData):
                return
            self.handle(event, now)


class Pair:
    """Two nodes, ``a`` and ``b``, a wire each way and a manual clock (``now``, seconds).

    ``wire[name]`` holds bytes that ``name`` wrote and the other side has not read yet;
    ``frames`` lists every frame written since the last :meth:`connect`, in the order
    written, as ``(sender name, frame)``. With ``bytewise``, bytes are fed one at a time and
    events drained after each.
    """

    def __init__(
        self,
        *,
        config: Config | None = None,
        config_a: Config | None = None,
        config_b: Config | None = None,
        bytewise: bool = False,
        auto_deliver: bool = True,
        auto_ack: bool = False,
        store_a: MemoryStore | None = None,
        store_b: MemoryStore | None = None,
        seed_a: bytes = SEED_A,
        seed_b: bytes = SEED_B,
    ) -> None:
        common = {"auto_deliver": auto_deliver, "auto_ack": auto_ack}
        self.a = Node("a", Identity.from_seed(seed_a), config=config_a or config, store=store_a,
                      **common)
        self.b = Node("b", Identity.from_seed(seed_b), config=config_b or config, store=store_b,
                      **common)
        self.a.peer, self.b.peer = self.b, self.a
        for node, peer in ((self.a, self.b), (self.b, self.a)):
            if node.store is not None:
                node.state = node.store.load(node.public_key, peer.public_key)
        self.now = 0.0
        self.bytewise = bytewise
        self.wire: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}
        self.frames: list[tuple[str, bytes]] = []

    @property
    def nodes(self) -> tuple[Node, Node]:
        return (self.a, self.b)

    def node(self, name: str) -> Node:
        return self.a if name == "a" else self.b

    # --- connections ------------------------------------------------------------------

    def connect(self, now: float | None = None, *, initiator: str = "a", pump: bool = True) -> None:
        """Open new connections (``initiator`` dials), resuming each node's line state.

        Anything still on the wires is dropped, and so are messages received but not
        delivered: this is what a link cut or a restart does.
        """
        if now is not None:
            self.now = now
        init = self.node(initiator)
        resp = init.peer
        assert resp is not None
        for wire in self.wire.values():
            wire.clear()
        self.frames.clear()
        for node in self.nodes:
            node.held.clear()
            node.connections += 1
        timestamp = max(init.state.initiation_timestamp + 1, wall_ns(self.now))
        init.state.record_initiations(ours=timestamp)
        init._persist(initiation_timestamp=timestamp)
        init.conn = Connection.initiate(
            init.identity, resp.public_key, now=self.now, timestamp=timestamp,
            config=init.config, ephemeral=ephemeral(init.name, init.connections),
        )
        resp.conn = Connection.respond(
            resp.identity, [init.public_key], now=self.now, config=resp.config,
            ephemeral=ephemeral(resp.name, resp.connections),
        )
        if pump:
            self.pump()

    reconnect = connect

    def close(self, name: str, reason: str = "closed") -> None:
        conn = self.node(name).conn
        assert conn is not None
        conn.close(reason)
        self.pump()

    def eof(self, name: str) -> None:
        """``name`` sees the end of the stream from its peer."""
        node = self.node(name)
        assert node.conn is not None
        node.conn.receive_data(b"", self.now)
        node.drain(self.now)

    # --- bytes ------------------------------------------------------------------------

    def collect(self) -> None:
        """Move what each connection wrote onto its wire."""
        for node in self.nodes:
            if node.conn is not None:
                data = node.conn.data_to_send()
                if data:
                    self.wire[node.name] += data
                    self.frames.extend((node.name, frame) for frame in split_frames(data))

    def feed(self, name: str, data: bytes) -> None:
        """Feed ``data`` to node ``name`` (whole, or byte by byte) and drain its events."""
        node = self.node(name)
        assert node.conn is not None
        chunks: Iterator[bytes] = (
            (data[i : i + 1] for i in range(len(data))) if self.bytewise else iter((data,))
        )
        for chunk in chunks:
            if node.conn.state in TERMINAL:
                return  # A real driver stops reading; nothing more can come of the bytes.
            node.conn.receive_data(chunk, self.now)
            node.drain(self.now)

    def transfer(self, sender: str, nbytes: int | None = None) -> int:
        """Deliver up to ``nbytes`` (default: all) of ``sender``'s wire; return how many."""
        self.collect()
        wire = self.wire[sender]
        data = bytes(wire[: len(wire) if nbytes is None else nbytes])
        del wire[: len(data)]
        if data:
            self.feed("b" if sender == "a" else "a", data)
        return len(data)

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything more to say."""
        for _ in range(100_000):
            self.collect()
            if not any(self.wire.values()):
                return
            for name in ("a", "b"):
                self.transfer(name)
        raise AssertionError("pump() did not settle")

    def drop(self, sender: str | None = None) -> None:
        """Lose the bytes in flight from ``sender`` (default: both ways)."""
        self.collect()
        for name, wire in self.wire.items():
            if sender in (None, name):
                wire.clear()

    # --- time -------------------------------------------------------------------------

    def advance(self, dt: float, *, pump: bool = True) -> None:
        """Move the clock ``dt`` on, running each timer at its deadline (and pumping)."""
        target = self.now + dt
        for _ in range(100_000):
            due = [
                deadline
                for node in self.nodes
                if node.conn is not None
                and (deadline := node.conn.next_deadline()) is not None
                and deadline <= target
            ]
            self.now = min(due) if due else target
            for node in self.nodes:
                if node.conn is not None:
                    node.conn.advance(self.now)
                    node.drain(self.now)
            if pump:
                self.pump()
            if not due:
                return
        raise AssertionError("advance() did not settle")

    # --- shortcuts ----------------------------------------------------------------------

    def send(self, name: str, body: bytes) -> SignedMessage:
        return self.node(name).send(body, self.now)

    def send_burst(self, name: str, bodies: list[bytes]) -> list[SignedMessage]:
        return self.node(name).send_burst(bodies, self.now)


def tap_records(conn: Connection) -> list[Any]:
    """Record (decoded) every record ``conn`` handles from now on, before it is checked."""
    seen: list[Any] = []
    transport = _transport(conn)
    original = transport._handle_record

    def spy(record: bytes) -> ConnectionInput | None:
        seen.append(msgpack.unpackb(record, raw=False, strict_map_key=False))
        return original(record)

    transport._handle_record = spy  # type: ignore[method-assign]
    return seen


def drain(conn: Connection) -> list[Event]:
    """Every event ``conn`` has now, up to NEED_DATA or the end (peer faults propagate)."""
    events: list[Event] = []
    while True:
        try:
            event = conn.next_event()
        except (ConnectionClosedError, ConnectionBrokenError):
            return events
        if isinstance(event, NeedData):
            return events
        events.append(event)


def handshake(
    a: Identity, b: Identity, *, now: float = 0.0, timestamp: int = 1
) -> tuple[Connection, Connection, LineState, LineState]:
    """Two open connections between ``a`` (initiator) and ``b``, without the harness."""
    ca = Connection.initiate(a, b.public_key, now=now, timestamp=timestamp)
    cb = Connection.respond(b, [a.public_key], now=now)
    state_a, state_b = LineState(), LineState()
    cb.receive_data(ca.data_to_send(), now)
    assert isinstance(cb.next_event(), PeerAuthenticated)
    cb.start(state_b, now)
    state_b.record_initiations(peers=cb.initiation_timestamp)
    ca.receive_data(cb.data_to_send(), now)
    assert isinstance(ca.next_event(), PeerAuthenticated)
    ca.start(state_a, now)
    state_a.record_initiations(ours=ca.initiation_timestamp)
    return ca, cb, state_a, state_b


def kinds(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]
