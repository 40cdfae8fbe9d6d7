"""Tests for the sans-io core, hotline.protocol: the connection, line state and records.

Two cores talk through the in-memory harness in ``corepair`` with a manual clock, so every
test is deterministic and instant. Hostile peers are built from a real connection whose
``corepair.emit_record`` (or ``corepair.emit_raw``) writes validly encrypted records with
whatever content the test wants.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corepair
import msgpack
import pytest
from corepair import Pair, drain, handshake, kinds, snapshot

import hotline.protocol
from hotline import (
    GENESIS_HEAD,
    NEED_DATA,
    PROLOGUE,
    PROTOCOL_NAME,
    AuthenticationError,
    Config,
    Connection,
    ConnectionBroken,
    ConnectionBrokenError,
    ConnectionClosedError,
    ConnectionState,
    Event,
    Identity,
    LineState,
    Liveness,
    LivenessChanged,
    LocalProtocolError,
    MessageReceived,
    MessageTooLarge,
    PeerAuthenticated,
    PeerClosed,
    PublicKey,
    ReceiptKind,
    ReceiptReceived,
    RemoteProtocolError,
    RoundTrip,
    SignedMessage,
    line_id,
    open_message,
    open_receipt,
    sign_message,
    sign_receipt,
)
from hotline._config import MIN_BODY_SIZE
from hotline.protocol import (
    DOMAIN_MESSAGE,
    DOMAIN_RECEIPT,
    FLAG_FINAL,
    FLAG_REKEY,
    MAX_CONTENT,
    MIN_REQUESTED_INTERVAL,
    REPLACED,
    CipherState,
    HandshakeState,
    decode_message,
    handshake_prologue,
)
from hotline.protocol._codec import Frames, TransportCodec
from hotline.protocol._records import pack
from hotline.protocol._transport import T_MESSAGE, message_record
from hotline.store import MemoryStore
from hotline.testing import split_frames, transport_plaintext, wall_ns

PEER_FAULTS = (RemoteProtocolError, AuthenticationError)
#: A body that needs two transport messages, with a pattern that shows misplaced bytes.
BIG = bytes(i % 251 for i in range(70_000))
MALLORY = Identity.from_seed(bytes([9]) * 32)


# --------------------------------------------------------------------------- imports


PROTOCOL_DIR = Path(hotline.protocol.__file__).parent
FORBIDDEN = ("trio", "sqlite3", "_sqlite3")


def _imported_modules(path: Path) -> list[str]:
    """Every module an import statement in ``path`` names, wherever the statement is (inside
    functions and ``if TYPE_CHECKING:`` too), relative ones resolved against the package."""
    package = "hotline.protocol"
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_protocol_folder_imports_neither_trio_nor_sqlite3() -> None:
    """The sans-io core is a folder: no file in it imports trio or sqlite3, directly, and
    importing all of it (with what it imports from the rest of hotline) loads neither."""
    files = sorted(PROTOCOL_DIR.rglob("*.py"))
    assert PROTOCOL_DIR / "_connection.py" in files
    offending = [
        f"{path.relative_to(PROTOCOL_DIR)}: {name}"
        for path in files
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offending == []
    # The package itself and the stores' interface are imported with it by every user.
    modules = ["hotline", "hotline.store"]
    modules += [f"hotline.protocol.{path.stem}" for path in files if path.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_the_connection_never_writes_the_line_state_it_was_given() -> None:
    """start() reads the line state; the connection's own marks follow our messages and
    receipts and the peer's, and what the driver must record comes out as events."""
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    lid = line_id(a.public_key, b.public_key)
    given_a, given_b = LineState(initiation_timestamp=5), LineState(peer_initiation_watermark=5)
    queued = given_a.next_message(a, lid, b"queued before start", 1)
    before_a, before_b = snapshot(given_a), snapshot(given_b)
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=10)
    cb = Connection.respond(b, [a.public_key], now=0.0)
    cb.receive_data(ca.data_to_send(), 0.0)
    drain(cb)
    cb.start(given_b, 0.0)
    ca.receive_data(cb.data_to_send(), 0.0)
    drain(ca)
    ca.start(given_a, 0.0)
    assert (snapshot(given_a), snapshot(given_b)) == (before_a, before_b)
    assert ca.initiation_timestamp == cb.initiation_timestamp == 10
    # Each driver moves a state of its own, as a committer does.
    driver_a, driver_b = given_a.copy(), given_b.copy()
    second = driver_a.next_message(a, lid, b"second", 2)
    ca.send_message(second)
    cb.receive_data(ca.data_to_send(), 0.0)
    received = [e.message for e in drain(cb) if isinstance(e, MessageReceived)]
    assert received == [queued, second]
    for message in received:
        driver_b.record_received(message)
    delivered = driver_b.sign_own_receipt(b, lid, ReceiptKind.DELIVERED, 2, second.hash, 3)
    acknowledged = driver_b.sign_own_receipt(b, lid, ReceiptKind.ACKNOWLEDGED, 1, queued.hash, 4)
    cb.send_receipt(delivered)
    cb.send_receipt(acknowledged)
    ca.receive_data(cb.data_to_send(), 0.0)
    receipts = [e.receipt for e in drain(ca) if isinstance(e, ReceiptReceived)]
    assert receipts == [delivered, acknowledged]
    assert (snapshot(given_a), snapshot(given_b)) == (before_a, before_b)


def test_a_copy_advances_on_its_own() -> None:
    """Connection.copy() shares nothing that changes: the copy and the original, fed the same
    bytes, give the same events and write the same bytes, and neither sees the other's."""
    pair = Pair(auto_deliver=False)
    pair.connect()
    pair.send("a", b"to both")
    pair.send("a", b"and again")
    pair.collect()
    data = bytes(pair.wire["a"])
    original = pair.b.conn
    assert original is not None
    twin = original.copy()
    twin.receive_data(data, pair.now)
    seen_by_twin = drain(twin)
    assert [type(e) for e in seen_by_twin] == [MessageReceived, MessageReceived]
    assert original.next_event() is NEED_DATA  # Nothing of the twin's input reached it.
    original.receive_data(data, pair.now)
    assert drain(original) == seen_by_twin
    assert twin.data_to_send() == original.data_to_send()
    twin.close("only the twin")
    assert original.state is ConnectionState.OPEN
    assert twin.data_to_send() != original.data_to_send()


# --------------------------------------------------------------------------- delivery


def test_messages_arrive_in_order_exactly_once_both_ways() -> None:
    pair = Pair(auto_ack=True)
    pair.connect()
    bodies_a = [b"a%d" % i for i in range(25)] + [b""]
    bodies_b = [bytes([i]) * i for i in range(25)]
    for i in range(26):
        pair.send("a", bodies_a[i])
        if i < 25:
            pair.send("b", bodies_b[i])
        if i % 4 == 0:
            pair.pump()
    pair.pump()
    assert pair.b.delivered == bodies_a
    assert pair.a.delivered == bodies_b
    for receiver, sender in ((pair.b, pair.a), (pair.a, pair.b)):
        seqs = [m.seq for m in receiver.delivered_messages]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [m.timestamp for m in receiver.delivered_messages] == [
            m.timestamp for m in sender.sent
        ]
        for message in receiver.delivered_messages:
            opened = open_message(
                message.envelope, message.signature, sender=sender.public_key,
                line_id=receiver.line_id, max_body_size=receiver.config.max_body_size,
            )
            assert opened == message
        # The sender's view: every message delivered and acknowledged, nothing pending.
        assert sender.state.peer_delivered == sender.state.peer_acknowledged == len(seqs)
        assert not sender.state.pending
        for receipt in sender.receipts:
            assert open_receipt(
                receipt.envelope, receipt.signature, signer=receiver.public_key,
                line_id=sender.line_id,
            ) == receipt
            assert receipt.head == sender.sent[receipt.upto - 1].hash
        assert {r.kind for r in sender.receipts} == set(ReceiptKind)
        sender.state.check()


def _busy_scenario(pair: Pair) -> None:
    """A bit of everything: handshake, small and multi-part messages, receipts, pings,
    a cut with messages in flight and the retransmission after it, a goodbye."""
    pair.connect()
    for i in range(3):
        pair.send("a", b"small %d" % i)
        pair.send("b", b"reply %d" % i)
    pair.send("a", BIG)
    pair.pump()
    pair.a.acknowledge(pair.now)
    pair.advance(2.5)
    pair.send("b", BIG[::-1])
    pair.send("a", b"lost in the cut")
    pair.transfer("a")
    pair.drop()  # b holds the message but its receipt is lost; b's BIG never arrives.
    pair.advance(0.25, pump=False)
    pair.reconnect()
    pair.send("a", b"after")
    pair.pump()
    pair.close("b", "done")


def test_whole_and_bytewise_feeding_give_the_same_events() -> None:
    whole, bytewise = Pair(), Pair(bytewise=True)
    _busy_scenario(whole)
    _busy_scenario(bytewise)
    assert whole.a.events == bytewise.a.events
    assert whole.b.events == bytewise.b.events
    # And the scenario did what it says.
    assert whole.b.delivered == [b"small 0", b"small 1", b"small 2", BIG, b"lost in the cut",
                                 b"after"]
    assert whole.a.delivered == [b"reply 0", b"reply 1", b"reply 2", BIG[::-1]]
    assert isinstance(whole.a.events[-1], PeerClosed)
    assert kinds(whole.a.events).count("PeerAuthenticated") == 2
    assert "RoundTrip" in kinds(whole.a.events)


@pytest.mark.parametrize("size", [300 * 1024, MAX_CONTENT - 200, MAX_CONTENT * 3])
def test_multipart_body_arrives_intact(size: int) -> None:
    body = bytes((i * 7 + size) % 256 for i in range(size))
    pair = Pair()
    pair.connect()
    pair.send("a", body)
    pair.collect()
    frames = split_frames(bytes(pair.wire["a"]))
    assert len(frames) == -(-(size + 200) // MAX_CONTENT)
    pair.pump()
    assert pair.b.delivered == [body]
    assert pair.a.state.peer_delivered == 1


@pytest.mark.parametrize("padding", [0, 64])
@pytest.mark.parametrize("size", [0, 255, 256, MAX_CONTENT - 300, MAX_CONTENT - 4, 0xFFFF,
                                  0x10000, MAX_CONTENT * 2 + 5, 1 << 20])
def test_a_message_record_in_parts_is_the_same_bytes_as_packed(size: int, padding: int) -> None:
    # Messages are written from their envelope without packing the record first; the
    # transport messages must be exactly those of the packed record, at every bin width of
    # the envelope and wherever the pieces cut it.
    envelope = bytes((i * 7 + size) % 256 for i in range(size))
    config = Config(padding=padding)
    for signature in (b"", bytes(range(64))):
        packed = pack([T_MESSAGE, envelope, signature])
        parts = message_record(envelope, signature)
        assert b"".join(parts) == packed
        outputs = []
        for record in (parts, packed):
            frames = Frames()
            keys = (CipherState("ChaChaPoly", bytes(32)), CipherState("ChaChaPoly", bytes(32)))
            codec = TransportCodec(frames, *keys, now=0.0)
            codec.write_record(record, 0.0, config)
            outputs.append(frames.take_output())
        assert outputs[0] == outputs[1]
        assert len(split_frames(outputs[0])) == -(-len(packed) // MAX_CONTENT)


def test_body_of_exactly_max_body_size_arrives() -> None:
    config = Config(max_body_size=100_000)
    pair = Pair(config=config)
    pair.connect()
    body = BIG + BIG[:30_000]
    assert len(body) == config.max_body_size
    pair.send("a", body)
    pair.send("a", b"next")
    pair.pump()
    assert pair.b.delivered == [body, b"next"]


def test_oversize_body_is_refused_before_anything_is_sent() -> None:
    pair = Pair(config=Config(max_body_size=1000))
    pair.connect()
    conn = pair.a.conn
    assert conn is not None
    with pytest.raises(MessageTooLarge):
        pair.a.state.next_message(
            pair.a.identity, pair.a.line_id, bytes(1001), 5, max_body_size=1000
        )
    assert conn.data_to_send() == b""
    assert conn.state is ConnectionState.OPEN


def test_refused_oversize_body_leaves_the_line_state_unchanged() -> None:
    pair = Pair(config=Config(max_body_size=1000))
    pair.connect()
    before = snapshot(pair.a.state)
    with pytest.raises(MessageTooLarge):
        pair.send("a", bytes(1001))
    assert snapshot(pair.a.state) == before


@pytest.mark.parametrize("then_send", [True, False])
def test_line_still_works_after_a_refused_oversize_body(then_send: bool) -> None:
    pair = Pair(config=Config(max_body_size=1000))
    pair.connect()
    with pytest.raises(MessageTooLarge):
        pair.send("a", bytes(1001))
    expected = []
    try:
        if then_send:
            expected.append(pair.send("a", b"fine").body)
            pair.pump()
        pair.reconnect()  # Retransmits whatever is pending.
        expected.append(pair.send("a", b"later").body)
        pair.pump()
    except RemoteProtocolError as error:
        pytest.fail(f"the peer refused the stream: {error}")
    assert pair.b.delivered == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # The record (at most about 1,300 bytes) is within b's record limit (1,512): the
        # envelope's body is what breaks the limit, and the error names the setting.
        (1001, r"^message body over max_body_size \(1001 bytes, more than 1000\)$"),
        (1100, r"^message body over max_body_size \(1100 bytes, more than 1000\)$"),
        # Past max_record_size the reassembly refuses the record before it is decoded.
        (2000, r"^record larger than the limit$"),
    ],
)
def test_body_over_the_receivers_limit_is_a_protocol_error(size: int, expected: str) -> None:
    pair = Pair(config_b=Config(max_body_size=1000))
    pair.connect()
    before = snapshot(pair.b.state)
    pair.send("a", bytes(size))
    with pytest.raises(RemoteProtocolError, match=expected):
        pair.pump()
    assert snapshot(pair.b.state) == before
    assert pair.b.delivered == []
    assert pair.b.conn is not None
    assert pair.b.conn.state is ConnectionState.ERROR


def test_an_oversize_bin_elsewhere_in_an_envelope_is_a_malformed_record() -> None:
    # Only the body's limit is max_body_size: a line id announced longer than it is no body.
    me, peer = Identity.generate(), Identity.generate()
    lid = line_id(me.public_key, peer.public_key)
    envelope = b"\x96\xc5\x10\x00" + bytes(4096) + msgpack.packb(
        [me.public_key.raw, 1, 0, GENESIS_HEAD, b""], use_bin_type=True)[1:]
    expected = r"^malformed record: 4096 bytes, more than 1000$"
    with pytest.raises(RemoteProtocolError, match=expected):
        decode_message(envelope, b"", sender=me.public_key, line_id=lid, max_body_size=1000)


# --------------------------------------------------------------------------- tampering


def _reference_script(pair: Pair, deliver: Callable[[], None]) -> None:
    """The exchange whose every frame gets tampered with (``deliver`` moves the frames)."""
    pair.connect(pump=False)
    deliver()  # Handshake, then each side's opening ping.
    pair.send("a", b"hello, b")
    deliver()  # The message, its delivered receipt.
    pair.send("a", BIG)
    deliver()  # Two transport messages, a receipt.
    pair.b.acknowledge(pair.now)
    deliver()
    pair.advance(1.0, pump=False)
    deliver()  # Pings at t=1, each echoing the other's opening ping.
    pair.send("b", b"hi, a")
    deliver()
    assert pair.a.conn is not None
    pair.a.conn.close("goodbye")


class FrameRunner:
    """Runs the reference script, delivering frames one by one in the order written.

    With ``target``, frame number ``target`` is handed to ``on_target`` instead, which
    stops the script (by raising :class:`Stop`).
    """

    class Stop(Exception):
        pass

    def __init__(
        self, target: int | None = None, on_target: Callable[[Pair, str, bytes], None] | None = None
    ) -> None:
        self.pair = Pair()
        self.cursor = 0
        self.target = target
        self.on_target = on_target

    def deliver(self) -> None:
        pair = self.pair
        pair.collect()
        while self.cursor < len(pair.frames):
            sender, frame = pair.frames[self.cursor]
            wire = pair.wire[sender]
            assert wire[: len(frame)] == frame
            if self.cursor == self.target:
                assert self.on_target is not None
                del wire[: len(frame)]
                self.on_target(pair, sender, frame)
                raise self.Stop
            pair.transfer(sender, len(frame))
            self.cursor += 1
            pair.collect()

    def run(self) -> list[tuple[str, bytes]]:
        try:
            _reference_script(self.pair, self.deliver)
            self.deliver()
        except self.Stop:
            pass
        return list(self.pair.frames)


REFERENCE_FRAMES = FrameRunner().run()


def _positions(frame: bytes) -> list[int]:
    """Every byte of a small frame; the edges and a stride through a big one."""
    if len(frame) <= 600:
        return list(range(len(frame)))
    edges = set(range(48)) | set(range(len(frame) - 48, len(frame)))
    return sorted(edges | set(range(0, len(frame), 1499)))


def test_reference_script_is_deterministic_and_covers_every_record_type() -> None:
    assert FrameRunner().run() == REFERENCE_FRAMES
    senders = [sender for sender, _ in REFERENCE_FRAMES]
    assert senders.count("a") >= 7
    assert senders.count("b") >= 7
    assert max(len(frame) for _, frame in REFERENCE_FRAMES) == 2 + 65535


def _tamper_outcome(pair: Pair, receiver_name: str, data: bytes) -> tuple[Exception | None, bool]:
    """Feed ``data``; return the peer fault raised (if any) and whether nothing changed."""
    receiver = pair.node(receiver_name)
    before = (len(receiver.events), snapshot(receiver.state), len(receiver.delivered))
    error: Exception | None = None
    try:
        pair.feed(receiver_name, data)
    except PEER_FAULTS as exc:
        error = exc
    after = (len(receiver.events), snapshot(receiver.state), len(receiver.delivered))
    return error, before == after


def _check_tamper_outcome(where: str, position: int, error: Exception | None, unchanged: bool,
                          state: ConnectionState) -> None:
    assert unchanged, f"{where}: an event or a state change"
    if position < 2:
        # A wrong length: the frame is cut short (and fails authentication), or the
        # connection waits for bytes that never come.
        assert error is not None or state is not ConnectionState.ERROR, where
    else:
        assert isinstance(error, AuthenticationError), f"{where}: {error!r}"
        assert state is ConnectionState.ERROR, where


@pytest.mark.parametrize("index", range(2, len(REFERENCE_FRAMES)))
def test_every_tampered_byte_of_every_frame_is_rejected(index: int) -> None:
    """One fresh pair per transport frame; each tampered copy goes to a clone of the receiving
    connection (see ``Connection.copy``), then the genuine frame to the original.
    (Frames 0 and 1 are the handshake: see test_every_tampered_byte_of_the_handshake_...)"""
    sender, frame = REFERENCE_FRAMES[index]
    receiver_name = "b" if sender == "a" else "a"
    positions = _positions(frame)

    def on_target(pair: Pair, _sender: str, genuine: bytes) -> None:
        receiver = pair.node(receiver_name)
        original = receiver.conn
        assert original is not None
        for position in positions:
            tampered = bytearray(genuine)
            tampered[position] ^= 0xFF
            receiver.conn = clone = original.copy()
            error, unchanged = _tamper_outcome(pair, receiver_name, bytes(tampered))
            where = f"frame {index} ({len(genuine)} bytes) byte {position}"
            _check_tamper_outcome(where, position, error, unchanged, clone.state)
        receiver.conn = original
        pair.feed(receiver_name, genuine)  # The original is untouched and accepts it.
        assert original.state is not ConnectionState.ERROR

    FrameRunner(index, on_target).run()


@pytest.mark.parametrize("index", range(len(REFERENCE_FRAMES)))
def test_tampered_frame_on_a_fresh_pair_is_rejected(index: int) -> None:
    """The same without clones, for a few positions: a fresh pair for each."""
    sender, frame = REFERENCE_FRAMES[index]
    receiver_name = "b" if sender == "a" else "a"
    for position in (0, 1, 2, len(frame) // 2, len(frame) - 1):
        tampered = bytearray(frame)
        tampered[position] ^= 0x01
        outcome: list[Any] = []

        def on_target(pair: Pair, _sender: str, _frame: bytes, tampered: bytes = bytes(tampered),
                      outcome: list[Any] = outcome) -> None:
            error, unchanged = _tamper_outcome(pair, receiver_name, tampered)
            conn = pair.node(receiver_name).conn
            assert conn is not None
            outcome.extend((error, unchanged, conn.state))

        FrameRunner(index, on_target).run()
        _check_tamper_outcome(f"frame {index} byte {position}", position, *outcome)


def test_replayed_frame_is_rejected() -> None:
    pair = Pair()
    pair.connect()
    pair.send("a", b"once")
    pair.collect()
    frame = bytes(pair.wire["a"])
    pair.pump()
    assert pair.b.delivered == [b"once"]
    with pytest.raises(AuthenticationError):
        pair.feed("b", frame)
    assert pair.b.delivered == [b"once"]


def test_reordered_frames_are_rejected() -> None:
    pair = Pair()
    pair.connect()
    pair.send("a", b"first")
    pair.send("a", b"second")
    pair.collect()
    first, second = split_frames(bytes(pair.wire["a"]))
    pair.drop("a")
    with pytest.raises(AuthenticationError):
        pair.feed("b", second + first)
    assert pair.b.delivered == []


def test_frame_from_an_earlier_connection_is_rejected() -> None:
    pair = Pair()
    pair.connect()
    pair.send("a", b"old")
    pair.collect()
    old = bytes(pair.wire["a"])
    pair.pump()
    pair.reconnect()
    with pytest.raises(AuthenticationError):
        pair.feed("b", old)


def test_frame_reflected_back_to_its_sender_is_rejected() -> None:
    pair = Pair()
    pair.connect()
    pair.send("a", b"mirror")
    pair.collect()
    frame = bytes(pair.wire["a"])
    with pytest.raises(AuthenticationError):
        pair.feed("a", frame)


@pytest.mark.parametrize("which", ["initiation", "response"])
def test_every_tampered_byte_of_the_handshake_is_rejected(which: str) -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ea, eb = corepair.ephemeral("a", 1), corepair.ephemeral("b", 1)

    def fresh() -> tuple[Connection, Connection]:
        ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=7, ephemeral=ea)
        cb = Connection.respond(b, [a.public_key], now=0.0, ephemeral=eb)
        return ca, cb

    ca, cb = fresh()
    msg1 = ca.data_to_send()
    cb.receive_data(msg1, 0.0)
    drain(cb)
    cb.start(LineState(), 0.0)
    msg2 = split_frames(cb.data_to_send())[0]
    frame = msg1 if which == "initiation" else msg2
    for position in range(len(frame)):
        tampered = bytearray(frame)
        tampered[position] ^= 0xFF
        ca, cb = fresh()
        if which == "initiation":
            victim = cb
        else:
            victim = ca
            cb.receive_data(ca.data_to_send(), 0.0)
            drain(cb)
            cb.start(LineState(), 0.0)
        victim.receive_data(bytes(tampered), 0.0)
        try:
            events = drain(victim)
        except AuthenticationError:
            assert victim.state is ConnectionState.ERROR
        else:
            assert position < 2, f"byte {position} accepted"
            assert events == []


# --------------------------------------------------------------------------- hostile records


def _prepared(pair: Pair, *, sent: int = 2, delivered: int | None = None) -> list[SignedMessage]:
    """Open the line and have ``a`` send ``sent`` messages, ``delivered`` of them receipted."""
    pair.connect()
    pair.b.auto_deliver = False
    messages = [pair.send("a", b"m%d" % (i + 1)) for i in range(sent)]
    pair.pump()
    pair.b.deliver(pair.now, sent if delivered is None else delivered)
    pair.pump()
    return messages


def _message(pair: Pair, seq: int, prev: bytes, *, body: bytes = b"evil",
             identity: Identity | None = None, lid: bytes | None = None) -> SignedMessage:
    return sign_message(identity or pair.a.identity, lid or pair.a.line_id, seq,
                        wall_ns(pair.now), prev, body)


def _manual_message(pair: Pair, fields: list[Any]) -> list[Any]:
    """A record carrying the envelope ``fields``, correctly signed by ``a``."""
    envelope = msgpack.packb(fields, use_bin_type=True)
    return [1, envelope, pair.a.identity.sign(DOMAIN_MESSAGE + envelope)]


def _noncanonical_envelope(pair: Pair, prev: bytes) -> list[Any]:
    # Message 3 with its sequence number as a uint64 instead of a positive fixint.
    lid, sender = pair.a.line_id, pair.a.public_key.raw
    head = msgpack.packb([lid, sender], use_bin_type=True)[1:]
    tail = msgpack.packb([wall_ns(0), prev, b"x"], use_bin_type=True)[1:]
    envelope = b"\x96" + head + b"\xcf" + (3).to_bytes(8, "big") + tail
    assert msgpack.unpackb(envelope)[2] == 3
    return [1, envelope, pair.a.identity.sign(DOMAIN_MESSAGE + envelope)]


def _raw(flags: int, content: bytes, **kwargs: Any) -> bytes:
    return transport_plaintext(flags, content, **kwargs)


PING = msgpack.packb([3, 77, 0, 0, 1_000_000])

# Each case: (prepare the pair and return (records, raw plaintexts), expected error).
# The attacker is ``a`` (messages, pings, goodbyes, framing) and the victim ``b``.
MessageCase = Callable[[Pair, list[SignedMessage]], tuple[list[Any], list[bytes]]]
MESSAGE_CASES: dict[str, tuple[MessageCase, type[Exception]]] = {
    "bad signature": (lambda p, m: ([[1, _message(p, 3, m[1].hash).envelope, bytes(64)]], []),
                      AuthenticationError),
    "signature by another key": (
        lambda p, m: ([[1, (e := _message(p, 3, m[1].hash).envelope),
                        MALLORY.sign(DOMAIN_MESSAGE + e)]], []), AuthenticationError),
    "receipt signature on a message": (
        lambda p, m: ([[1, (e := _message(p, 3, m[1].hash).envelope),
                        p.a.identity.sign(DOMAIN_RECEIPT + e)]], []), AuthenticationError),
    "signed by the peer's own key": (
        lambda p, m: ([[1, (x := _message(p, 3, m[1].hash, identity=p.b.identity)).envelope,
                        x.signature]], []), RemoteProtocolError),
    "another line": (
        lambda p, m: ([[1, (x := _message(p, 3, m[1].hash, lid=bytes(32))).envelope,
                        x.signature]], []), RemoteProtocolError),
    "sequence skip": (lambda p, m: ([[1, (x := _message(p, 4, m[1].hash)).envelope,
                                      x.signature]], []), RemoteProtocolError),
    "regression": (lambda p, m: ([[1, m[0].envelope, m[0].signature]], []),
                   RemoteProtocolError),
    "repeat of the last message": (lambda p, m: ([[1, m[1].envelope, m[1].signature]], []),
                                   RemoteProtocolError),
    "broken chain": (lambda p, m: ([[1, (x := _message(p, 3, bytes(32))).envelope,
                                     x.signature]], []), RemoteProtocolError),
    "sequence zero": (lambda p, m: ([_manual_message(
        p, [p.a.line_id, p.a.public_key.raw, 0, 1, m[1].hash, b"x"])], []),
        RemoteProtocolError),
    "short prev": (lambda p, m: ([_manual_message(
        p, [p.a.line_id, p.a.public_key.raw, 3, 1, m[1].hash[:31], b"x"])], []),
        RemoteProtocolError),
    "body is str": (lambda p, m: ([_manual_message(
        p, [p.a.line_id, p.a.public_key.raw, 3, 1, m[1].hash, "x"])], []),
        RemoteProtocolError),
    "envelope with 7 fields": (lambda p, m: ([_manual_message(
        p, [p.a.line_id, p.a.public_key.raw, 3, 1, m[1].hash, b"x", b""])], []),
        RemoteProtocolError),
    "non-canonical envelope": (lambda p, m: ([_noncanonical_envelope(p, m[1].hash)], []),
                               RemoteProtocolError),
    "short signature": (lambda p, m: ([[1, _message(p, 3, m[1].hash).envelope, bytes(63)]], []),
                        RemoteProtocolError),
    "str where bytes expected": (lambda p, m: ([[1, "envelope", bytes(64)]], []),
                                 RemoteProtocolError),
    "int where bytes expected": (lambda p, m: ([[1, 5, bytes(64)]], []), RemoteProtocolError),
    "extra field": (lambda p, m: ([[1, m[1].envelope, m[1].signature, b""]], []),
                    RemoteProtocolError),
    "missing field": (lambda p, m: ([[1, m[1].envelope]], []), RemoteProtocolError),
    "map instead of array": (lambda p, m: ([{1: m[1].envelope}], []), RemoteProtocolError),
    "empty array": (lambda p, m: ([[]], []), RemoteProtocolError),
    "not an array": (lambda p, m: ([b"hello"], []), RemoteProtocolError),
    "unknown record type": (lambda p, m: ([[9, b"", b""]], []), RemoteProtocolError),
    "record type zero": (lambda p, m: ([[0]], []), RemoteProtocolError),
    "record type as str": (lambda p, m: ([["1", b"", b""]], []), RemoteProtocolError),
    "echo of a ping never sent": (lambda p, m: ([[3, 50, 999, 0, 1]], []), RemoteProtocolError),
    "ping id repeated": (lambda p, m: ([[3, 50, 0, 0, 1], [3, 50, 0, 0, 1]], []),
                         RemoteProtocolError),
    "ping id going back": (lambda p, m: ([[3, 50, 0, 0, 1], [3, 49, 0, 0, 1]], []),
                           RemoteProtocolError),
    "a pong (type 4 is unassigned)": (lambda p, m: ([[4, 1, 0]], []), RemoteProtocolError),
    "ping id is a bool": (lambda p, m: ([[3, True, 0, 0, 1]], []), RemoteProtocolError),
    "negative ping id": (lambda p, m: ([[3, -1, 0, 0, 1]], []), RemoteProtocolError),
    "hold is a float": (lambda p, m: ([[3, 50, 0, 0.5, 1]], []), RemoteProtocolError),
    "ping without its interval": (lambda p, m: ([[3, 50, 0, 0]], []), RemoteProtocolError),
    "ping asking for no interval": (lambda p, m: ([[3, 50, 0, 0, 0]], []), RemoteProtocolError),
    "goodbye reason as bytes": (lambda p, m: ([[5, b"bye"]], []), RemoteProtocolError),
    "goodbye with an extra field": (lambda p, m: ([[5, "bye", 1]], []), RemoteProtocolError),
    "goodbye reason too long to decode": (lambda p, m: ([[5, "x" * 2000]], []),
                                          RemoteProtocolError),
    "trailing bytes after a record": (lambda p, m: ([], [_raw(FLAG_FINAL, PING + b"\x00")]),
                                      RemoteProtocolError),
    "empty record": (lambda p, m: ([], [_raw(FLAG_FINAL, b"")]), RemoteProtocolError),
    "unknown transport flag": (lambda p, m: ([], [_raw(FLAG_FINAL | 0x04, PING)]),
                               RemoteProtocolError),
    "non-zero padding": (lambda p, m: ([], [_raw(FLAG_FINAL, PING, padding=b"\x00\x01")]),
                         RemoteProtocolError),
    "length beyond the plaintext": (lambda p, m: ([], [_raw(FLAG_FINAL, PING, length=200)]),
                                    RemoteProtocolError),
    "plaintext shorter than its header": (lambda p, m: ([], [b"\x01\x00"]), RemoteProtocolError),
    "empty plaintext": (lambda p, m: ([], [b""]), RemoteProtocolError),
    "deeply nested arrays": (lambda p, m: ([], [_raw(FLAG_FINAL, b"\x91" * 5000 + b"\xc0")]),
                             RemoteProtocolError),
    "invalid UTF-8 in a goodbye": (lambda p, m: ([], [_raw(FLAG_FINAL, b"\x92\x05\xa2\xff\xfe")]),
                                   RemoteProtocolError),
    "extension type": (lambda p, m: ([[3, msgpack.ExtType(1, b"x"), 0]], []),
                       RemoteProtocolError),
    "negative timestamp in an envelope": (lambda p, m: ([_manual_message(
        p, [p.a.line_id, p.a.public_key.raw, 3, -1, m[1].hash, b"x"])], []),
        RemoteProtocolError),
}

ReceiptCase = Callable[[Pair, list[SignedMessage]], list[Any]]


def _receipt(pair: Pair, kind: ReceiptKind, upto: int, head: bytes, *,
             lid: bytes | None = None) -> list[Any]:
    r = sign_receipt(pair.b.identity, lid or pair.b.line_id, kind, upto, head, wall_ns(pair.now))
    return [2, r.envelope, r.signature]


def _manual_receipt(pair: Pair, fields: list[Any]) -> list[Any]:
    envelope = msgpack.packb(fields, use_bin_type=True)
    return [2, envelope, pair.b.identity.sign(DOMAIN_RECEIPT + envelope)]


def _acknowledged_receipt_going_backwards(
    pair: Pair, messages: list[SignedMessage]
) -> list[Any]:
    pair.b.acknowledge(pair.now)  # A valid acknowledged receipt for 2 first.
    pair.pump()
    assert pair.a.state.peer_acknowledged == 2
    return [_receipt(pair, A, 1, messages[0].hash)]


D, A = ReceiptKind.DELIVERED, ReceiptKind.ACKNOWLEDGED
# The victim is ``a``, which sent messages 1..4; ``b`` delivered 1..2. Each case returns the
# records ``b`` sends (after any valid preparation).
RECEIPT_CASES: dict[str, tuple[ReceiptCase, type[Exception]]] = {
    "receipt for a message never sent": (lambda p, m: [_receipt(p, D, 5, bytes(32))],
                                         RemoteProtocolError),
    "delivered receipt going backwards": (lambda p, m: [_receipt(p, D, 1, m[0].hash)],
                                          RemoteProtocolError),
    "acknowledged receipt going backwards": (_acknowledged_receipt_going_backwards,
                                             RemoteProtocolError),
    "acknowledged beyond delivered": (lambda p, m: [_receipt(p, A, 3, m[2].hash)],
                                      RemoteProtocolError),
    "wrong head": (lambda p, m: [_receipt(p, D, 3, m[1].hash)], RemoteProtocolError),
    "wrong head on a repeated receipt": (lambda p, m: [_receipt(p, D, 2, m[0].hash)],
                                         RemoteProtocolError),
    "another line": (lambda p, m: [_receipt(p, D, 3, m[2].hash, lid=bytes(32))],
                     RemoteProtocolError),
    "bad signature": (lambda p, m: [[2, _receipt(p, D, 3, m[2].hash)[1], bytes(64)]],
                      AuthenticationError),
    "message signature on a receipt": (
        lambda p, m: [[2, (e := _receipt(p, D, 3, m[2].hash)[1]),
                       p.b.identity.sign(DOMAIN_MESSAGE + e)]], AuthenticationError),
    "our own receipt reflected": (
        lambda p, m: [[2, (r := sign_receipt(p.a.identity, p.a.line_id, D, 3, m[2].hash, 1))
                       .envelope, r.signature]], AuthenticationError),
    "unknown receipt kind": (lambda p, m: [_manual_receipt(
        p, [p.b.line_id, p.b.public_key.raw, "read", 3, m[2].hash, 1])], RemoteProtocolError),
    "receipt up to 0": (lambda p, m: [_manual_receipt(
        p, [p.b.line_id, p.b.public_key.raw, "delivered", 0, m[2].hash, 1])],
        RemoteProtocolError),
    "receipt head too short": (lambda p, m: [_manual_receipt(
        p, [p.b.line_id, p.b.public_key.raw, "delivered", 3, m[2].hash[:16], 1])],
        RemoteProtocolError),
}


def _assert_failed_for_good(conn: Connection, error_type: type[Exception],
                            message: SignedMessage) -> None:
    assert conn.state is ConnectionState.ERROR
    for _ in range(2):
        with pytest.raises(error_type):
            conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send_message(message)
    conn.receive_data(b"\x00\x10" + bytes(16), 0.0)  # More bytes change nothing.
    with pytest.raises(error_type):
        conn.next_event()


@pytest.mark.parametrize("case", MESSAGE_CASES)
def test_hostile_record_from_the_sender(case: str) -> None:
    build, error_type = MESSAGE_CASES[case]
    pair = Pair()
    messages = _prepared(pair)
    records, plaintexts = build(pair, messages)
    attacker, victim = pair.a.conn, pair.b.conn
    assert attacker is not None
    assert victim is not None
    for record in records:
        corepair.emit_record(attacker, record)
    for plaintext in plaintexts:
        corepair.emit_raw(attacker, plaintext)
    before = (snapshot(pair.b.state), len(pair.b.events))
    with pytest.raises(error_type):
        pair.transfer("a")
    assert (snapshot(pair.b.state), len(pair.b.events)) == before
    assert pair.b.delivered == [b"m1", b"m2"]
    _assert_failed_for_good(victim, error_type, messages[0])


@pytest.mark.parametrize("case", RECEIPT_CASES)
def test_hostile_receipt_from_the_receiver(case: str) -> None:
    build, error_type = RECEIPT_CASES[case]
    pair = Pair()
    messages = _prepared(pair, sent=4, delivered=2)
    assert pair.a.state.peer_delivered == 2
    records = build(pair, messages)
    attacker, victim = pair.b.conn, pair.a.conn
    assert attacker is not None
    assert victim is not None
    for record in records:
        corepair.emit_record(attacker, record)
    before = (snapshot(pair.a.state), len(pair.a.events))
    with pytest.raises(error_type):
        pair.transfer("b")
    assert (snapshot(pair.a.state), len(pair.a.events)) == before
    _assert_failed_for_good(victim, error_type, messages[-1])


def test_repeated_receipt_is_ignored() -> None:
    pair = Pair()
    messages = _prepared(pair, sent=4, delivered=2)
    events = len(pair.a.events)
    assert pair.b.conn is not None
    corepair.emit_record(pair.b.conn, _receipt(pair, D, 2, messages[1].hash))
    pair.pump()
    assert len(pair.a.events) == events
    assert pair.a.state.peer_delivered == 2
    assert pair.a.conn is not None
    assert pair.a.conn.state is ConnectionState.OPEN


def test_duplicate_at_the_start_of_a_new_connection_is_receipted_again() -> None:
    pair = Pair()
    messages = _prepared(pair, sent=2)
    assert pair.a.state.peer_delivered == 2
    assert not pair.a.state.pending
    pair.b.auto_deliver = True
    pair.reconnect()
    assert pair.a.conn is not None
    assert pair.b.conn is not None
    seen_by_a = corepair.tap_records(pair.a.conn)
    b_events, a_events = len(pair.b.events), len(pair.a.events)
    # A sender that lost the receipt replays its last message first on the new connection.
    corepair.emit_record(pair.a.conn, [1, messages[1].envelope, messages[1].signature])
    pair.pump()
    assert pair.b.events[b_events:] == []
    assert pair.b.delivered == [b"m1", b"m2"]
    delivered = pair.b.state.delivered_receipt
    assert delivered is not None
    assert [2, delivered.envelope, delivered.signature] in seen_by_a
    assert pair.a.events[a_events:] == []  # Nothing new for a, and no error either.
    # Strictness resumes after the first message: the line goes on normally...
    pair.send("a", b"m3")
    pair.pump()
    assert pair.b.delivered == [b"m1", b"m2", b"m3"]
    # ...and a second repeat inside this connection is an error.
    corepair.emit_record(pair.a.conn, [1, messages[1].envelope, messages[1].signature])
    with pytest.raises(RemoteProtocolError):
        pair.transfer("a")


def test_forked_duplicate_at_the_start_of_a_new_connection_is_an_error() -> None:
    pair = Pair()
    messages = _prepared(pair, sent=2)
    pair.reconnect()
    assert pair.a.conn is not None
    fork = _message(pair, 2, messages[0].hash, body=b"another m2")
    corepair.emit_record(pair.a.conn, [1, fork.envelope, fork.signature])
    with pytest.raises(RemoteProtocolError):
        pair.transfer("a")


def test_record_over_max_record_size_is_refused() -> None:
    small = Config(max_body_size=1000)
    pair = Pair(config_b=small)
    pair.connect()
    pair.send("a", bytes(1500))
    with pytest.raises(RemoteProtocolError, match="larger than the limit"):
        pair.pump()
    assert pair.b.delivered == []


def test_oversize_record_is_refused_before_it_is_buffered() -> None:
    small = Config(max_body_size=1000)
    assert small.max_record_size == 1512
    pair = Pair(config_b=small)
    pair.connect()
    attacker, victim = pair.a.conn, pair.b.conn
    assert attacker is not None
    assert victim is not None
    for _ in range(3):  # 1,500 bytes of fragments without FINAL: still within the limit.
        corepair.emit_raw(attacker, _raw(0, bytes(500)))
        pair.transfer("a")
    assert victim.state is ConnectionState.OPEN
    corepair.emit_raw(attacker, _raw(0, bytes(500)))
    with pytest.raises(RemoteProtocolError, match="larger than the limit"):
        pair.transfer("a")
    assert victim.buffered_record <= small.max_record_size


def _nested_empty_arrays(depth: int) -> bytes:
    """A full tree of 5-element msgpack arrays with empty arrays at the leaves: one byte per
    array, which a general decoder turns into a Python list of 56 to 96 bytes."""
    if depth == 0:
        return b"\x90"
    return b"\x95" + _nested_empty_arrays(depth - 1) * 5


@pytest.mark.parametrize("where", ["record", "message envelope", "receipt envelope"])
def test_nested_empty_arrays_are_refused_within_a_small_multiple_of_their_size(
    where: str,
) -> None:
    tree = _nested_empty_arrays(8)  # 488,281 bytes: within the default max_record_size.
    pair = Pair()
    pair.connect()
    attacker = pair.a.conn if where != "receipt envelope" else pair.b.conn
    victim = pair.b.conn if where != "receipt envelope" else pair.a.conn
    assert attacker is not None
    assert victim is not None
    if where == "record":
        for start in range(0, len(tree), MAX_CONTENT):
            piece = tree[start : start + MAX_CONTENT]
            final = start + MAX_CONTENT >= len(tree)
            corepair.emit_raw(attacker, _raw(FLAG_FINAL if final else 0, piece))
    elif where == "message envelope":
        corepair.emit_record(attacker, [1, tree, pair.a.identity.sign(DOMAIN_MESSAGE + tree)])
    else:
        corepair.emit_record(attacker, [2, tree, pair.b.identity.sign(DOMAIN_RECEIPT + tree)])
    pair.collect()
    wire = pair.wire["a" if where != "receipt envelope" else "b"]
    victim.receive_data(bytes(wire), pair.now)
    wire.clear()
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            victim.next_event()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Decryption, reassembly and a signature check (pynacl copies the signed bytes twice)
    # hold a few copies of the record; decoding must add nothing like the 64 times its size
    # that a tree of Python lists costs.
    assert peak < 6 * len(tree), f"peak {peak} bytes for a {len(tree)}-byte record"
    assert "malformed record: msgpack type 0x95 is not allowed" in str(info.value)
    assert victim.state is ConnectionState.ERROR


def test_fragmented_record_is_reassembled() -> None:
    pair = Pair()
    pair.connect()
    attacker = pair.a.conn
    assert attacker is not None
    record = msgpack.packb([5, "one byte at a time"])
    for i, byte in enumerate(record):
        flags = FLAG_FINAL if i == len(record) - 1 else 0
        corepair.emit_raw(attacker, _raw(flags, bytes([byte])))
    pair.pump()
    assert pair.b.events[-1] == PeerClosed("one byte at a time")


def test_api_misuse_is_a_local_error_and_changes_nothing() -> None:
    pair = Pair(auto_deliver=False)
    pair.connect()
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    first = pair.send("a", b"1")
    pair.send("a", b"2")
    with pytest.raises(LocalProtocolError):
        a.send_message(first)  # Not the line's newest message.
    with pytest.raises(LocalProtocolError):
        a.start(pair.a.state, 0.0)  # Already started.
    pair.pump()
    old = pair.b.deliver(pair.now, 1)
    pair.b.deliver(pair.now)
    with pytest.raises(LocalProtocolError):
        b.send_receipt(old)  # type: ignore[arg-type]  # Not the newest of its kind.
    pair.pump()
    assert a.state is b.state is ConnectionState.OPEN
    assert pair.a.state.peer_delivered == 2
    # An inconsistent line state is refused by start().
    fresh = Pair()
    fresh.connect(pump=False)
    fresh.b.state = LineState(peer_delivered=1)
    with pytest.raises(LocalProtocolError):
        fresh.pump()


# --------------------------------------------------------------------------- rekeying


@pytest.mark.parametrize("sender_rekeys", [True, False])
def test_rekey_flag_switches_the_receiving_key(sender_rekeys: bool) -> None:
    pair = Pair()
    pair.connect()
    attacker = pair.a.conn
    assert attacker is not None
    corepair.emit_raw(attacker, _raw(FLAG_FINAL | FLAG_REKEY, PING), rekey=sender_rekeys)
    corepair.emit_record(attacker, [5, "after the rekey"])
    if sender_rekeys:
        pair.transfer("a")
        assert pair.b.events[-1] == PeerClosed("after the rekey")
        assert pair.b.conn is not None
        assert pair.b.conn.rekeys_received == 1
    else:
        with pytest.raises(AuthenticationError):
            pair.transfer("a")



def test_rekey_after_messages() -> None:
    pair = Pair(config=Config(rekey_after_messages=3))
    pair.connect()
    for i in range(300):
        pair.send("a", b"a%d" % i)
        pair.send("b", b"b%d" % i)
        if i % 7 == 0:
            pair.pump()
    pair.send("a", BIG)  # Every part of a multi-part record counts.
    pair.pump()
    assert pair.b.delivered == [b"a%d" % i for i in range(300)] + [BIG]
    assert pair.a.delivered == [b"b%d" % i for i in range(300)]
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    assert a.rekeys_sent == b.rekeys_received > 90
    assert b.rekeys_sent == a.rekeys_received > 90


def test_rekey_every_transport_message() -> None:
    pair = Pair(config=Config(rekey_after_messages=1))
    pair.connect()
    pair.send("a", BIG)
    pair.send("b", BIG)
    pair.pump()
    assert pair.b.delivered == pair.a.delivered == [BIG]
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    assert a.rekeys_sent == b.rekeys_received == len([f for f in pair.frames if f[0] == "a"]) - 1


def test_rekey_after_seconds_on_an_idle_line() -> None:
    pair = Pair(config=Config(rekey_after_seconds=5))
    pair.connect()
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    pair.advance(4.5)
    assert a.rekeys_sent == b.rekeys_sent == 0
    pair.advance(0.5)
    assert a.rekeys_sent == b.rekeys_sent == 1
    pair.advance(15.0)
    assert a.rekeys_sent == b.rekeys_sent == 4
    assert a.rekeys_received == b.rekeys_sent
    assert b.rekeys_received == a.rekeys_sent
    assert a.liveness is b.liveness is Liveness.UP
    pair.send("a", b"still fine")
    pair.pump()
    assert pair.b.delivered == [b"still fine"]


# --------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("arrived", [0, 1, 6, 10])
def test_resume_retransmits_exactly_once_in_order(arrived: int) -> None:
    pair = Pair()
    pair.connect()
    bodies = [b"msg %d" % i for i in range(10)]
    for body in bodies:
        pair.send("a", body)
    pair.collect()
    frames = split_frames(bytes(pair.wire["a"]))
    assert len(frames) == 10
    pair.drop("a")
    pair.feed("b", b"".join(frames[:arrived]))
    pair.drop("b")  # The receipts are lost in the cut.
    assert pair.b.delivered == bodies[:arrived]
    assert pair.a.state.sent_seq == 10
    assert len(pair.a.state.pending) == 10
    pair.reconnect(initiator="b")
    assert pair.b.delivered == bodies
    assert [m.seq for m in pair.b.delivered_messages] == list(range(1, 11))
    assert pair.a.state.peer_delivered == 10
    assert not pair.a.state.pending
    pair.send("a", b"more")
    pair.pump()
    assert pair.b.delivered == [*bodies, b"more"]


def test_resume_resends_receipts_signed_while_away() -> None:
    pair = Pair(auto_deliver=False)
    pair.connect()
    for i in range(3):
        pair.send("a", b"%d" % i)
    pair.pump()
    pair.b.deliver(pair.now)
    pair.drop()
    pair.a.conn = pair.b.conn = None  # Cut: both sides notice and drop their connections.
    pair.b.acknowledge(pair.now)  # Offline: the next connection carries it.
    assert pair.a.state.peer_delivered == 0
    pair.reconnect()
    assert pair.a.state.peer_delivered == pair.a.state.peer_acknowledged == 3
    assert [r.kind for r in pair.a.receipts] == [D, A]
    assert pair.b.delivered == [b"0", b"1", b"2"]


@pytest.mark.parametrize("commit_last", [True, False])
def test_restart_from_a_memory_store(commit_last: bool) -> None:
    stores = {"a": MemoryStore(), "b": MemoryStore()}
    pair = Pair(store_a=stores["a"], store_b=stores["b"])
    pair.connect()
    for i in range(5):
        pair.send("a", b"first %d" % i)
        pair.send("b", b"back %d" % i)
    pair.pump()
    pair.b.autocommit = False
    for i in range(5):
        pair.send("a", b"second %d" % i)
    pair.transfer("a")
    pair.drop()
    if commit_last:
        pair.b.commit()
    held_before = stores["b"].inbox(0, 100)
    assert len(held_before) == (10 if commit_last else 5)
    seen_before = len(pair.b.delivered)
    for node in pair.nodes:
        node.restart()
        node.autocommit = True
    assert pair.a.state.sent_seq == 10
    # No receipt for the second five reached a before the cut.
    assert [m.seq for m in pair.a.state.pending] == [6, 7, 8, 9, 10]
    pair.reconnect()
    pair.send("a", b"third")
    pair.pump()
    sent = [m.body for m in pair.a.sent]
    inbox = stores["b"].inbox(0, 100)
    assert [m.body for m in inbox] == sent
    assert [m.seq for m in inbox] == list(range(1, 12))
    assert pair.a.state.peer_delivered == 11
    # After the restart, the application sees exactly what the store did not hold yet.
    assert pair.b.delivered[:seen_before] == sent[:seen_before]
    assert pair.b.delivered[seen_before:] == sent[len(held_before) :]
    # Both stores' transcripts verify.
    for node in pair.nodes:
        assert node.peer is not None
        for entry in stores[node.name].transcript():
            signer = node.public_key if entry.direction.value == "out" else node.peer.public_key
            if entry.kind == "message":
                open_message(entry.envelope, entry.signature, sender=signer,
                             line_id=node.line_id, max_body_size=1 << 20)
            else:
                open_receipt(entry.envelope, entry.signature, signer=signer,
                             line_id=node.line_id)
    # A restarted responder still refuses the initiation it accepted before the restart.
    assert pair.b.state.peer_initiation_watermark == pair.a.state.initiation_timestamp


# --------------------------------------------------------------------------- heartbeats


def test_pings_every_interval_at_exact_times() -> None:
    pair = Pair()
    pair.connect(0.0)
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    pings = corepair.tap_records(b)
    for t in range(1, 8):
        assert a.next_deadline() == float(t)
        assert b.next_deadline() == float(t)
        pair.advance(1.0)
        assert pair.now == float(t)
    sent = [record for record in pings if record[0] == 3]
    assert [r[1] for r in sent] == list(range(2, 9))  # Ping 1 went out at start().
    # Each echoes b's newest ping, which arrived one interval before.
    assert [r[2] for r in sent] == list(range(1, 8))
    assert [r[3] for r in sent] == [1_000_000] * 7
    assert a.liveness is b.liveness is Liveness.UP
    assert a.rtt == 0.0


def test_round_trip_time_is_the_injected_delay() -> None:
    pair = Pair()
    pair.connect(0.0)  # Both opening pings arrive at once; they echo nothing yet.
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    assert a.rtt is None
    assert b.rtt is None
    pair.now = 1.0
    a.advance(1.0)  # a pings, echoing b's ping 1 after holding it 1 s.
    pair.now = 1.25
    pair.transfer("a")  # b sent ping 1 at 0: 1.25 - 0 - 1.0 held by a.
    assert b.rtt == b.smoothed_rtt == 0.25
    assert pair.b.events[-1] == RoundTrip(0.25, 0.25)
    pair.now = 1.5
    b.advance(1.5)  # b's ping (due at 1.0, its timer ran late) echoes a's, held 0.25 s.
    pair.now = 2.0
    pair.transfer("b")  # a sent ping 2 at 1.0: 2.0 - 1.0 - 0.25.
    assert a.rtt == a.smoothed_rtt == 0.75
    a.advance(2.0)  # a echoes b's ping, just received (held 0).
    pair.now = 2.5
    pair.transfer("a")  # b sent it at 1.5: 2.5 - 1.5 - 0 = 1.0.
    assert b.rtt == 1.0
    assert b.smoothed_rtt == 0.34375  # RFC 6298: 7/8 * 0.25 + 1/8 * 1.0.
    assert pair.b.events[-1] == RoundTrip(1.0, 0.34375)


def test_each_echo_gives_one_sample_and_a_negative_one_none() -> None:
    pair = Pair()
    pair.connect(0.0)
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    pair.now = 1.0
    a.advance(1.0)  # Echoes b's ping 1, held 1 s.
    a.advance(1.5)  # Not due: nothing.
    pair.now = 2.0
    a.advance(2.0)  # Echoes b's ping 1 again (nothing newer came), held 2 s.
    pair.transfer("a")
    samples = [event for event in pair.b.events if isinstance(event, RoundTrip)]
    assert samples == [RoundTrip(1.0, 1.0)]  # Only the first echo of ping 1 is a sample.
    # A peer whose clock runs fast claims a hold longer than the round trip: no sample.
    b.advance(2.0)  # b's ping 2, sent at 2.0.
    corepair.emit_record(a, [3, 100, 2, 5_000_000, 1_000_000])
    pair.transfer("a")
    assert b.rtt == 1.0
    assert b.state is ConnectionState.OPEN


def test_each_side_pings_at_the_shorter_interval_down_to_a_floor() -> None:
    # (a tolerates 50 intervals of silence: the floor keeps b slower than a asks.)
    fast = Config(heartbeat_multiplier=50, suspect_after=50)
    # A peer below the floor (Config refuses it here; the wire carries any interval).
    object.__setattr__(fast, "heartbeat_interval", 0.001)
    pair = Pair(config_a=fast, config_b=Config(heartbeat_interval=5.0))
    pair.connect(0.0)
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    assert a.next_deadline() == 0.001  # Asked for 5 s, a keeps its own shorter interval.
    # a asks for 1 ms; b pings a hundred times a second at most.
    assert b.next_deadline() == MIN_REQUESTED_INTERVAL == 0.01
    pings = corepair.tap_records(a)
    pair.advance(0.1)
    from_b = [record for record in pings if record[0] == 3]
    assert len(from_b) == 10
    assert {record[4] for record in from_b} == {5_000_000}
    assert a.liveness is b.liveness is Liveness.UP


def test_suspect_then_down_at_exact_times() -> None:
    pair = Pair()
    pair.connect(0.0)
    pair.now = 0.5
    pair.send("b", b"last words")
    pair.transfer("b")  # a last hears b at 0.5, then b's bytes stop arriving.
    a = pair.a.conn
    assert a is not None
    events: list[tuple[float, Event]] = []
    times = []
    while (deadline := a.next_deadline()) is not None:
        times.append(deadline)
        a.advance(deadline - 1e-9)
        assert drain(a) == []
        a.advance(deadline)
        events += [(deadline, event) for event in drain(a)]
    assert times == [1.0, 2.0, 3.0, 3.5]
    assert events == [
        (2.0, LivenessChanged(Liveness.SUSPECT, 1.5)),
        (3.5, LivenessChanged(Liveness.DOWN, 3.0)),
        (3.5, ConnectionBroken("the peer was silent for 3.000 s")),
    ]
    assert a.state is ConnectionState.BROKEN
    assert a.liveness is Liveness.DOWN
    with pytest.raises(ConnectionBrokenError):
        a.next_event()
    with pytest.raises(ConnectionBrokenError):
        a.send_message(pair.a.state.next_message(pair.a.identity, pair.a.line_id, b"", 1))


def test_traffic_restores_up_from_suspect() -> None:
    pair = Pair()
    pair.connect(0.0)
    a = pair.a.conn
    assert a is not None
    a.advance(1.0)
    a.advance(1.5)
    assert drain(a) == [LivenessChanged(Liveness.SUSPECT, 1.5)]
    assert a.liveness is Liveness.SUSPECT
    assert a.next_deadline() == 2.0  # The next ping; no more suspect deadline.
    pair.now = 2.75
    pair.send("b", b"any authenticated traffic")
    pair.transfer("b")
    assert a.liveness is Liveness.UP
    assert LivenessChanged(Liveness.UP, 2.75) in pair.a.events
    assert a.next_deadline() == 2.0


def test_down_without_suspect_when_the_timer_runs_late() -> None:
    pair = Pair()
    pair.connect(0.0)
    a = pair.a.conn
    assert a is not None
    a.advance(10.0)
    assert drain(a) == [LivenessChanged(Liveness.DOWN, 10.0),
                        ConnectionBroken("the peer was silent for 10.000 s")]
    assert a.next_deadline() is None


def test_late_echoes_from_an_honest_peer_are_not_a_protocol_error() -> None:
    pair = Pair(config_a=Config(heartbeat_multiplier=30))
    pair.connect(0.0)
    for _ in range(20):
        pair.advance(1.0, pump=False)
        pair.transfer("a")  # b gets every ping at once; its own are stuck on the way back.
    assert pair.a.conn is not None
    assert pair.a.conn.liveness is Liveness.SUSPECT
    # Only a's last 16 pings are remembered; echoes of older ones still prove life.
    pair.transfer("b")
    assert pair.a.conn.state is ConnectionState.OPEN
    assert pair.a.conn.liveness is Liveness.UP
    # b's last ping (t=20) echoed a's ping of t=19, held 1 s: no time on the wire.
    assert pair.a.conn.rtt == 0.0


# --------------------------------------------------------------------------- handshake


def test_unknown_initiator_is_refused() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=1)
    cb = Connection.respond(b, [MALLORY.public_key], now=0.0)
    cb.receive_data(ca.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError) as info:
        cb.next_event()
    assert str(info.value) == "authentication failed"
    assert info.value.reason == "unknown initiator key"
    assert cb.state is ConnectionState.ERROR
    assert cb.peer is None
    assert cb.data_to_send() == b""
    with pytest.raises(AuthenticationError):
        cb.next_event()


def test_initiator_with_the_wrong_responder_key_is_refused() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    # a believes it talks to mallory's key, but b answers (or the other way round).
    ca = Connection.initiate(a, MALLORY.public_key, now=0.0, timestamp=1)
    cb = Connection.respond(b, [a.public_key], now=0.0)
    cb.receive_data(ca.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError) as info:
        cb.next_event()
    assert str(info.value) == "authentication failed"
    assert cb.data_to_send() == b""
    # A man in the middle with his own key cannot read an initiation meant for b.
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=2)
    cm = Connection.respond(MALLORY, [a.public_key], now=0.0)
    cm.receive_data(ca.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError):
        cm.next_event()


def test_response_to_another_initiation_is_refused() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    first = Connection.initiate(a, b.public_key, now=0.0, timestamp=1)
    second = Connection.initiate(a, b.public_key, now=0.0, timestamp=2)
    cb = Connection.respond(b, [a.public_key], now=0.0)
    cb.receive_data(first.data_to_send(), 0.0)
    drain(cb)
    cb.start(LineState(), 0.0)
    second.receive_data(cb.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError):
        second.next_event()


def test_replayed_initiation_is_refused_before_anything_is_sent() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=1000)
    msg1 = ca.data_to_send()
    state_b = LineState()
    cb = Connection.respond(b, [a.public_key], now=0.0)
    cb.receive_data(msg1, 0.0)
    drain(cb)
    cb.start(state_b, 0.0)
    assert state_b.peer_initiation_watermark == 0  # Read, never written: the driver records
    state_b.record_initiations(peers=cb.initiation_timestamp)  # what the connection accepted.
    assert state_b.peer_initiation_watermark == 1000
    # The recorded initiation, replayed to a new responder of the same line.
    replay = Connection.respond(b, [a.public_key], now=5.0)
    replay.receive_data(msg1, 5.0)
    (event,) = drain(replay)
    assert isinstance(event, PeerAuthenticated)
    assert event.initiation_timestamp == 1000
    before = snapshot(state_b)
    with pytest.raises(AuthenticationError) as info:
        replay.start(state_b, 5.0)
    assert info.value.reason == "replayed initiation"
    assert replay.data_to_send() == b""
    assert replay.state is ConnectionState.ERROR
    assert snapshot(state_b) == before
    with pytest.raises(AuthenticationError):
        replay.next_event()


@pytest.mark.parametrize(("timestamp", "accepted"), [(999, False), (1000, False), (1001, True)])
def test_initiation_watermark(timestamp: int, accepted: bool) -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    state_b = LineState(peer_initiation_watermark=1000)
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=timestamp)
    cb = Connection.respond(b, [a.public_key], now=0.0)
    cb.receive_data(ca.data_to_send(), 0.0)
    drain(cb)
    if accepted:
        cb.start(state_b, 0.0)
        assert cb.initiation_timestamp == timestamp
        assert state_b.peer_initiation_watermark == 1000  # The driver records it.
        ca.receive_data(cb.data_to_send(), 0.0)
        assert isinstance(ca.next_event(), PeerAuthenticated)
    else:
        with pytest.raises(AuthenticationError):
            cb.start(state_b, 0.0)
        assert cb.data_to_send() == b""
        assert state_b.peer_initiation_watermark == 1000


def test_initiator_records_its_timestamp_and_both_sides_agree_on_the_handshake() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca, cb, state_a, state_b = handshake(a, b, timestamp=4242)
    assert state_a.initiation_timestamp == 4242
    assert state_b.peer_initiation_watermark == 4242
    assert ca.initiation_timestamp == cb.initiation_timestamp == 4242
    assert ca.handshake_hash == cb.handshake_hash
    assert len(ca.handshake_hash) == 64
    assert ca.peer == b.public_key
    assert cb.peer == a.public_key
    assert ca.line_id == cb.line_id == line_id(a.public_key, b.public_key)


def test_peer_authenticated_handshake_hashes() -> None:
    """The initiator's event carries the final handshake hash; the responder's, the hash after
    message 1 (it has not written message 2 yet). Both connections agree after start()."""
    pair = Pair()
    pair.connect()
    (auth_a,) = [e for e in pair.a.events if isinstance(e, PeerAuthenticated)]
    (auth_b,) = [e for e in pair.b.events if isinstance(e, PeerAuthenticated)]
    assert pair.a.conn is not None
    assert pair.b.conn is not None
    assert auth_a.handshake_hash == pair.a.conn.handshake_hash == pair.b.conn.handshake_hash
    assert auth_b.handshake_hash != auth_a.handshake_hash
    assert auth_a.initiation_timestamp is None
    assert auth_b.initiation_timestamp == pair.a.state.initiation_timestamp


def _fake_initiation(payload: bytes, prologue: bytes | None = None) -> bytes:
    """The initiation frame of a non-hotline initiator (a's key) carrying ``payload``."""
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    hs = HandshakeState(PROTOCOL_NAME, initiator=True,
                        prologue=handshake_prologue(b.public_key) if prologue is None else prologue,
                        s=a.x25519_private, rs=b.public_key.x25519)
    message = hs.write_message(payload)
    return len(message).to_bytes(2, "big") + message


A_KEY = Identity.from_seed(corepair.SEED_A).public_key.raw


@pytest.mark.parametrize(
    "payload",
    [b"", msgpack.packb([0, A_KEY]), msgpack.packb([-5, A_KEY]), msgpack.packb(["1", A_KEY]),
     msgpack.packb([True, A_KEY]), msgpack.packb([1]), msgpack.packb([1, A_KEY, 2]),
     msgpack.packb([1, A_KEY[:31]]), msgpack.packb([1, A_KEY.hex()]), msgpack.packb([A_KEY, 1]),
     msgpack.packb(1), msgpack.packb({1: 1}), msgpack.packb([[1], A_KEY]), b"\xc1"],
)
def test_initiation_payload_must_be_a_timestamp_and_a_key(payload: bytes) -> None:
    b = Identity.from_seed(corepair.SEED_B)
    cb = Connection.respond(b, [Identity.from_seed(corepair.SEED_A).public_key], now=0.0)
    cb.receive_data(_fake_initiation(payload), 0.0)
    with pytest.raises(RemoteProtocolError):
        cb.next_event()
    assert cb.state is ConnectionState.ERROR
    assert cb.data_to_send() == b""


def test_handshake_response_must_carry_no_payload() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=1)
    hs = HandshakeState(PROTOCOL_NAME, initiator=False, prologue=handshake_prologue(b.public_key),
                        s=b.x25519_private)
    hs.read_message(split_frames(ca.data_to_send())[0][2:])
    response = hs.write_message(b"surprise")
    ca.receive_data(len(response).to_bytes(2, "big") + response, 0.0)
    with pytest.raises(RemoteProtocolError):
        ca.next_event()
    assert ca.state is ConnectionState.ERROR


@pytest.mark.parametrize("prologue", ["version 1", "label without the key", "version 1 label",
                                      "version 2 label"])
def test_handshake_with_another_prologue_fails(prologue: str) -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    other = {
        "version 1": b"hotline/1",
        "label without the key": PROLOGUE,
        "version 1 label": b"hotline/1" + b.public_key.raw,
        "version 2 label": b"hotline/2" + b.public_key.raw,
    }[prologue]
    initiation = _fake_initiation(msgpack.packb([1, a.public_key.raw]), other)
    cb = Connection.respond(b, [a.public_key], now=0.0)
    cb.receive_data(initiation, 0.0)
    with pytest.raises(AuthenticationError):
        cb.next_event()
    assert cb.data_to_send() == b""


def _negated(key: PublicKey) -> PublicKey:
    """The Ed25519 key of the point -A: ``key`` with the sign bit of x flipped. The map to
    X25519 keeps only the u-coordinate, so both have the same X25519 key."""
    raw = bytearray(key.raw)
    raw[31] ^= 0x80
    negated = PublicKey(bytes(raw))
    assert negated != key
    assert negated.x25519 == key.x25519
    return negated


def test_an_initiator_that_pinned_the_negated_responder_key_is_refused() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca = Connection.initiate(a, _negated(b.public_key), now=0.0, timestamp=1)
    cb = Connection.respond(b, [a.public_key], now=0.0)
    cb.receive_data(ca.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError) as info:
        cb.next_event()
    assert str(info.value) == "authentication failed"
    assert cb.state is ConnectionState.ERROR
    assert cb.peer is None
    assert cb.data_to_send() == b""
    assert ca.state is ConnectionState.AWAIT_RESPONSE


def test_a_responder_that_pinned_the_negated_initiator_key_refuses_it() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=1)
    cb = Connection.respond(b, [_negated(a.public_key)], now=0.0)
    cb.receive_data(ca.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError) as info:
        cb.next_event()
    assert info.value.reason == "initiator's Ed25519 key is not the pinned one"
    assert cb.state is ConnectionState.ERROR
    assert cb.peer is None
    assert cb.data_to_send() == b""



@pytest.mark.parametrize("who", ["initiator", "responder", "responder before start"])
def test_handshake_timeout_is_exact(who: str) -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    config = Config(handshake_timeout=2.5)
    ca = Connection.initiate(a, b.public_key, now=3.0, timestamp=1, config=config)
    cb = Connection.respond(b, [a.public_key], now=3.0, config=config)
    conn = ca if who == "initiator" else cb
    if who == "responder before start":
        cb.receive_data(ca.data_to_send(), 4.0)
        assert isinstance(cb.next_event(), PeerAuthenticated)
        assert cb.state is ConnectionState.AUTHENTICATED
    assert conn.next_deadline() == 5.5
    conn.advance(5.5 - 1e-9)
    assert drain(conn) == []
    conn.advance(5.5)
    assert drain(conn) == [ConnectionBroken("the handshake timed out")]
    assert conn.state is ConnectionState.BROKEN
    assert conn.next_deadline() is None
    with pytest.raises(ConnectionBrokenError):
        conn.next_event()
    if who == "responder before start":
        with pytest.raises(LocalProtocolError):
            cb.start(LineState(), 6.0)


def test_end_of_stream_during_the_handshake_breaks_the_connection() -> None:
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca = Connection.initiate(a, b.public_key, now=0.0, timestamp=1)
    ca.receive_data(b"\x00", 0.0)
    ca.receive_data(b"", 0.0)
    assert drain(ca) == [ConnectionBroken("the peer closed the connection without a goodbye")]
    with pytest.raises(LocalProtocolError):
        ca.receive_data(b"more", 0.0)


# --------------------------------------------------------------------------- closing


def test_goodbye_closes_both_sides() -> None:
    pair = Pair()
    pair.connect()
    pair.send("b", b"before the goodbye")
    pair.pump()
    pair.close("a", "x" * 300)
    assert pair.a.delivered == [b"before the goodbye"]
    assert pair.b.events[-1] == PeerClosed("x" * 200)
    a, b = pair.a.conn, pair.b.conn
    assert a is not None
    assert b is not None
    assert a.state is b.state is ConnectionState.CLOSED
    assert a.next_deadline() is None
    assert b.next_deadline() is None
    for conn, node in ((a, pair.a), (b, pair.b)):
        with pytest.raises(ConnectionClosedError):
            conn.next_event()
        with pytest.raises(ConnectionClosedError):
            conn.send_message(node.state.next_message(node.identity, node.line_id, b"", 1))
    a.close()  # Closing twice is harmless.
    assert a.data_to_send() == b""


def test_message_crossing_a_goodbye_is_sent_again_on_the_next_connection() -> None:
    pair = Pair()
    pair.connect()
    assert pair.a.conn is not None
    pair.a.conn.close("bye")
    pair.send("b", b"crossed")  # b has not read the goodbye yet.
    pair.pump()
    assert pair.b.events[-1] == PeerClosed("bye")
    assert pair.a.delivered == []
    assert [m.body for m in pair.b.state.pending] == [b"crossed"]
    pair.reconnect(initiator="b")
    assert pair.a.delivered == [b"crossed"]
    assert not pair.b.state.pending


def test_goodbye_reason_is_delivered() -> None:
    pair = Pair()
    pair.connect()
    pair.close("b", "maintenance")
    assert pair.a.events[-1] == PeerClosed("maintenance")


def test_the_replacement_goodbye_is_the_protocol_constant_of_the_spec() -> None:
    """The reason that announces a newer connection is compared exactly, so it is a protocol
    constant, spelled as docs/protocol.md spells it, and arrives as sent."""
    spec = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    assert f"`{REPLACED}`" in " ".join(spec.split())
    pair = Pair()
    pair.connect()
    pair.close("a", REPLACED)
    assert pair.b.events[-1] == PeerClosed(REPLACED)


def test_end_of_stream_without_goodbye_breaks_the_connection() -> None:
    pair = Pair()
    pair.connect()
    pair.send("a", b"last")
    pair.pump()
    pair.eof("b")
    b = pair.b.conn
    assert b is not None
    assert pair.b.events[-1] == ConnectionBroken("the peer closed the connection without a goodbye")
    assert b.state is ConnectionState.BROKEN
    with pytest.raises(ConnectionBrokenError):
        b.next_event()
    with pytest.raises(ConnectionBrokenError):
        b.send_receipt(pair.b.state.delivered_receipt)  # type: ignore[arg-type]
    assert pair.b.delivered == [b"last"]


def test_frames_before_end_of_stream_are_still_read() -> None:
    pair = Pair()
    pair.connect()
    pair.send("a", b"in flight")
    pair.collect()
    b = pair.b.conn
    assert b is not None
    b.receive_data(bytes(pair.wire["a"]), 0.0)
    b.receive_data(b"", 0.0)
    events = drain(b)
    assert isinstance(events[0], MessageReceived)
    assert events[-1] == ConnectionBroken("the peer closed the connection without a goodbye")


def test_receipt_received_event_and_line_state_update() -> None:
    pair = Pair(auto_deliver=False)
    pair.connect()
    m1 = pair.send("a", b"1")
    pair.send("a", b"2")
    pair.pump()
    receipt = pair.b.deliver(pair.now, 1)
    assert receipt is not None
    pair.pump()
    assert pair.a.events[-1] == ReceiptReceived(receipt)
    assert receipt.head == m1.hash
    assert pair.a.state.peer_delivered == 1
    assert [m.body for m in pair.a.state.pending] == [b"2"]


def test_has_output_says_whether_data_to_send_would_write_anything() -> None:
    """The driver wakes its writer only when this is true, so it must never be false while
    output waits: after a timer's ping, and while a returned chunk is still being written."""
    a, b = Identity.from_seed(corepair.SEED_A), Identity.from_seed(corepair.SEED_B)
    ca, cb, _, _ = handshake(a, b)
    cb.receive_data(ca.data_to_send(), 0.0)
    drain(cb)
    assert ca.has_output  # What it returned counts as being written until asked again.
    assert ca.data_to_send() == b""
    assert not ca.has_output
    # The peer's ping needs no answer: nothing to write.
    cb.data_to_send()
    cb.advance(1.0)
    ping = cb.data_to_send()
    assert ping
    ca.receive_data(ping, 1.0)
    assert kinds(drain(ca)) == ["RoundTrip"]
    assert not ca.has_output
    # Our own ping falls due: output, until it is taken and written.
    ca.advance(1.0)
    assert ca.has_output
    chunk = ca.data_to_send()
    assert chunk
    assert ca.has_output  # Being written.
    assert ca.data_to_send() == b""
    assert not ca.has_output


def test_the_longest_goodbye_reaches_a_side_with_the_smallest_body_limit() -> None:
    # 200 characters of four UTF-8 bytes each: an 805-byte record, more than the smallest
    # body limit plus the room a message record needs.
    pair = Pair(config_b=Config(max_body_size=MIN_BODY_SIZE))
    pair.connect()
    reason = "\U0001f600" * 200
    pair.close("a", reason)
    pair.pump()
    assert pair.b.events[-1] == PeerClosed(reason)
