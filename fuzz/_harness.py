"""Shared setup of the fuzz targets: fixed keys, a line with history, connections, a hostile
peer, and the one invariant every target checks.

The invariant
-------------
Whatever bytes reach a :class:`~hotline.Connection`, fed whole or in small chunks, only the
documented protocol errors come out of it:

- :class:`RemoteProtocolError` or :class:`AuthenticationError`; the connection is then in
  ``ERROR`` and every later ``next_event()`` raises that same error again;
- :class:`ConnectionClosedError` / :class:`ConnectionBrokenError`, and only once the
  connection is ``CLOSED`` / ``BROKEN`` (the connection is legitimately over).

Anything else is a bug: any other exception (a ``LocalProtocolError`` above all: it means
caller misuse, and the driver here uses the API as documented), a ``next_event()`` loop that
does not settle, a ``next_deadline()`` not after the time ``advance()`` just ran (a driver
would spin), a reassembly buffer past its bound, or an outcome (events, error, final state)
that depends on how the input was cut into chunks.

The scene
---------
Alice (seed ``01 * 32``) and Bob (seed ``02 * 32``) share a line with some history (see
:func:`_history`): each has sent three messages, Bob holds two of Alice's and has receipted
them, and so on. Both use :data:`CONFIG` (small limits, frequent rekeys). A second session
is then opened with fixed ephemerals and timestamps, so every byte of it is the same on
every run. :func:`open_victim` gives Bob's connection at ``OPEN`` (message 1 read,
``start()`` done, nothing from Alice's transport yet) and a :class:`Peer` holds Alice's
sending key at nonce 0: the fuzzer speaks as Alice.

Speed: every starting connection is built once and copied per run (``Connection.copy()``,
about 20 times faster than a handshake); :func:`build_session`, :func:`build_responder` and
:func:`build_initiator` build them from scratch, and ``tests/test_fuzz_corpus.py`` checks
that clones and fresh builds give the same outcomes.
"""

from __future__ import annotations

import gc
import sys
import types
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's hotline, when run as fuzz/fuzz_*.py


from hotline import (  # noqa: E402
    AuthenticationError,
    Config,
    Connection,
    ConnectionBroken,
    ConnectionBrokenError,
    ConnectionClosedError,
    ConnectionState,
    Identity,
    LineState,
    MessageReceived,
    NeedData,
    PeerAuthenticated,
    PeerClosed,
    ReceiptKind,
    RemoteProtocolError,
    SignedMessage,
    line_id,
)
from hotline.protocol import (  # noqa: E402
    DOMAIN_MESSAGE,
    DOMAIN_RECEIPT,
    FLAG_FINAL,
    FLAG_REKEY,
    MAX_CONTENT,
    MAX_MESSAGE_LEN,
    MAX_OUTSTANDING_PINGS,
    MAX_PLAINTEXT,
    PROTOCOL_NAME,
    TERMINAL_STATES,
    CipherState,
    HandshakeState,
    handshake_prologue,
    pack,
    sign_message,
)
from hotline.testing import EPOCH_NS, frame, transport_plaintext  # noqa: E402
from hotline.testing import wall_ns as manual_wall_ns  # noqa: E402

ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
LINE_ID = line_id(ALICE.public_key, BOB.public_key)
#: Alice's initiation timestamp of the fuzzed session (above Bob's watermark, EPOCH_NS).
INITIATION_TS = EPOCH_NS + 10_000_000_000
EPHEMERAL_ALICE = bytes(range(1, 33))
EPHEMERAL_BOB = bytes(range(33, 65))
NOW = 0.0
MAX_NOISE = MAX_MESSAGE_LEN
#: Both sides' settings: defaults, except limits small enough for inputs of a few KiB to
#: reach them (record limit 4,608 bytes) and a rekey of each sending direction every 4
#: messages.
CONFIG = Config(max_body_size=4096, rekey_after_messages=4)

ERRORS = (RemoteProtocolError, AuthenticationError)
_SETTLE = 100_000  # next_event() calls before a loop counts as a hang


def wall_ns(now: float) -> int:
    """Timestamps of the fuzzed session: 20 s after the history's."""
    return manual_wall_ns(now, epoch_ns=EPOCH_NS + 20_000_000_000)


# --- the line before the fuzzed session ---------------------------------------------------


def _history() -> tuple[LineState, LineState, list[SignedMessage]]:
    """(alice, bob) line states after an earlier session, and Alice's messages.

    Alice sent 1..3; Bob holds 1..2, delivered 2, acknowledged 1 (Alice has both receipts).
    Bob sent 1..3; Alice holds 1, delivered 1 (Bob has that receipt).
    """
    alice, bob = LineState(), LineState()
    sent_a = [alice.next_message(ALICE, LINE_ID, b"alice %d" % i, EPOCH_NS + i) for i in (1, 2, 3)]
    sent_b = [bob.next_message(BOB, LINE_ID, b"bob %d" % i, EPOCH_NS + i) for i in (1, 2, 3)]
    for message in sent_a[:2]:
        bob.record_received(message)
    alice.record_received(sent_b[0])
    dk, ak = ReceiptKind.DELIVERED, ReceiptKind.ACKNOWLEDGED
    for receipt in (
        bob.sign_own_receipt(BOB, LINE_ID, dk, 2, sent_a[1].hash, EPOCH_NS + 5),
        bob.sign_own_receipt(BOB, LINE_ID, ak, 1, sent_a[0].hash, EPOCH_NS + 6),
    ):
        alice.apply_peer_receipt(receipt)
    bob.apply_peer_receipt(
        alice.sign_own_receipt(ALICE, LINE_ID, dk, 1, sent_b[0].hash, EPOCH_NS + 7)
    )
    alice.initiation_timestamp = bob.peer_initiation_watermark = EPOCH_NS
    alice.check()
    bob.check()
    return alice, bob, sent_a


ALICE_LINE, BOB_LINE, ALICE_MESSAGES = _history()


# --- the fuzzed session ---------------------------------------------------------------


def build_responder() -> Connection:
    """Bob waiting for an initiation (fixed ephemeral)."""
    return Connection.respond(
        BOB, [ALICE.public_key], now=NOW, config=CONFIG, ephemeral=EPHEMERAL_BOB
    )


def build_initiator() -> Connection:
    """Alice waiting for message 2, her message 1 sent (fixed ephemeral and timestamp)."""
    conn = Connection.initiate(
        ALICE, BOB.public_key, now=NOW, timestamp=INITIATION_TS, ephemeral=EPHEMERAL_ALICE,
        config=CONFIG,
    )
    conn.data_to_send()
    return conn


_RESPONDER = build_responder()
_INITIATOR = build_initiator()


def new_responder() -> tuple[Connection, LineState]:
    """Bob's fresh responder (a clone of a cached one) and his line state."""
    return _RESPONDER.copy(), BOB_LINE.copy()


def new_initiator() -> tuple[Connection, LineState]:
    """Alice's fresh initiator (a clone of a cached one) and her line state."""
    return _INITIATOR.copy(), ALICE_LINE.copy()


def _alice_sending_cipher(bob_flight: bytes) -> CipherState:
    """Alice's sending cipher state at nonce 0, from her side of the same handshake."""
    hs = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=handshake_prologue(BOB.public_key),
        s=ALICE.x25519_private, e=EPHEMERAL_ALICE, rs=BOB.public_key.x25519,
    )
    hs.write_message(pack([INITIATION_TS, ALICE.public_key.raw]))
    length = int.from_bytes(bob_flight[:2], "big")
    hs.read_message(bob_flight[2 : 2 + length])
    send, _ = hs.split()
    return send


class Session(NamedTuple):
    alice: Connection  # OPEN; its first flight is in its data_to_send()
    alice_line: LineState
    alice_cipher0: CipherState  # Alice's sending cipher at nonce 0 (before her first flight)
    bob: Connection  # OPEN; nothing of Alice's transport read yet; data_to_send() drained
    bob_line: LineState
    message1: bytes  # framed
    bob_flight: bytes  # message 2 (framed) and Bob's first flight


def build_session(alice_config: Config = CONFIG) -> Session:
    """Run the fuzzed session's handshake from scratch with the real code.

    ``alice_config`` changes only how Alice sends (e.g. how often she rekeys), not a byte of
    the handshake.
    """
    alice = Connection.initiate(
        ALICE, BOB.public_key, now=NOW, timestamp=INITIATION_TS, ephemeral=EPHEMERAL_ALICE,
        config=alice_config,
    )
    alice_line = ALICE_LINE.copy()
    bob, bob_line = build_responder(), BOB_LINE.copy()
    message1 = alice.data_to_send()
    bob.receive_data(message1, NOW)
    event = bob.next_event()
    assert isinstance(event, PeerAuthenticated), event
    bob.start(bob_line, NOW)
    bob_flight = bob.data_to_send()
    alice.receive_data(bob_flight, NOW)
    event = alice.next_event()
    assert isinstance(event, PeerAuthenticated), event
    alice.start(alice_line, NOW)
    alice_cipher0 = _alice_sending_cipher(bob_flight)
    return Session(alice, alice_line, alice_cipher0, bob, bob_line, message1, bob_flight)


_BASE = build_session()
MESSAGE1 = _BASE.message1
BOB_FLIGHT = _BASE.bob_flight


def open_victim() -> tuple[Connection, LineState]:
    """Bob's connection at OPEN (a copy of the cached one) and his line state (a copy)."""
    return _BASE.bob.copy(), _BASE.bob_line.copy()


# --- the hostile peer -----------------------------------------------------------------


class Peer:
    """Alice as the fuzzer plays her: writes frames, validly encrypted or not, in order.

    ``segments`` is what the victim will read: a list of ``(now, held, bytes)``; a new clock
    value starts a new segment, so that the victim's timers run before those bytes, and so
    does a toggle of ``held`` (whether the victim's driver has called ``hold()``).
    """

    def __init__(self, cipher: CipherState | None = None) -> None:
        self.cipher = (cipher if cipher is not None else _BASE.alice_cipher0).copy()
        self.now = NOW
        self.held = False
        self.segments: list[tuple[float, bool, bytearray]] = [(NOW, False, bytearray())]
        # Alice's chain as Bob knows it (her message 3 never reached him: a fork is fine).
        self.seq = BOB_LINE.received_seq
        self.head = BOB_LINE.received_head
        self.last_frame = b""

    def advance(self, dt: float) -> None:
        if dt > 0:
            self.now += dt
            self.segments.append((self.now, self.held, bytearray()))

    def toggle_hold(self) -> None:
        """The victim's driver calls ``hold()`` (stops reading) or ``release()`` here."""
        self.held = not self.held
        self.segments.append((self.now, self.held, bytearray()))

    def raw(self, data: bytes) -> None:
        self.segments[-1][2].extend(data)

    def plaintext(self, plaintext: bytes) -> None:
        """Encrypt any plaintext as the next transport message (cut to the Noise maximum).

        A REKEY flag in it makes this side rekey too, as a conforming sender would.
        """
        plaintext = plaintext[:MAX_PLAINTEXT]
        self.last_frame = frame(self.cipher.encrypt_with_ad(b"", plaintext))
        self.raw(self.last_frame)
        if plaintext[:1] and plaintext[0] & FLAG_REKEY:
            self.cipher.rekey()

    def record(self, record: bytes, *, rekey: bool = False) -> None:
        """Send any bytes as one record: correct headers, in pieces if needed, FINAL last."""
        pieces = [record[i : i + MAX_CONTENT] for i in range(0, len(record), MAX_CONTENT)]
        for i, piece in enumerate(pieces or [b""]):
            flags = FLAG_FINAL if i == len(pieces or [b""]) - 1 else 0
            flags |= FLAG_REKEY if rekey and flags else 0
            self.plaintext(transport_plaintext(flags, piece))

    def message_envelope(self, envelope: bytes) -> None:
        """Any bytes as a message envelope, with Alice's valid signature over them."""
        self.record(pack([1, envelope, ALICE.sign(DOMAIN_MESSAGE + envelope)]))

    def receipt_envelope(self, envelope: bytes) -> None:
        """Any bytes as a receipt envelope, with Alice's valid signature over them."""
        self.record(pack([2, envelope, ALICE.sign(DOMAIN_RECEIPT + envelope)]))

    def next_message(self, body: bytes) -> None:
        """Alice's next genuine message (continuing her chain) with any body."""
        self.seq += 1
        message = sign_message(ALICE, LINE_ID, self.seq, wall_ns(self.now), self.head, body)
        self.head = message.hash
        self.record(pack([1, message.envelope, message.signature]))


# --- driving a victim and checking the invariant --------------------------------------


Segment = tuple[float, bool, bytes]  # (now, driver holds reading, bytes from the peer)


class Outcome(NamedTuple):
    events: list[Any]
    error: tuple[str, str, str] | None
    state: ConnectionState
    sent: bytes


def drain(
    conn: Connection, line: LineState, identity: Identity, events: list[Any], now: float = NOW
) -> None:
    """Handle events as a simple, correct driver does, until the connection needs data."""
    for _ in range(_SETTLE):
        event = conn.next_event()
        if isinstance(event, NeedData):
            return
        events.append(event)
        if isinstance(event, PeerAuthenticated):
            conn.start(line, now)
        elif isinstance(event, MessageReceived):
            message = event.message
            line.record_received(message)
            receipt = line.sign_own_receipt(
                identity, LINE_ID, ReceiptKind.DELIVERED, message.seq, message.hash,
                wall_ns(now),
            )
            conn.send_receipt(receipt)
    raise AssertionError("next_event() did not settle")


def _check_over(conn: Connection, exc: BaseException, events: list[Any]) -> None:
    """The escaped exception is a documented one and matches the connection's state."""
    if isinstance(exc, ERRORS):
        assert conn.state is ConnectionState.ERROR, (exc, conn.state)
        try:
            after = conn.next_event()
        except ERRORS as again:
            if again is not exc:
                raise AssertionError(f"{again!r} the second time, not {exc!r}") from again
            return
        raise AssertionError(f"next_event() returned {after} after {exc!r}")
    if isinstance(exc, ConnectionClosedError):
        assert conn.state is ConnectionState.CLOSED, conn.state
        assert any(isinstance(e, PeerClosed) for e in events), "closed without a goodbye"
    else:
        assert isinstance(exc, ConnectionBrokenError)
        assert conn.state is ConnectionState.BROKEN, conn.state
        assert any(isinstance(e, ConnectionBroken) for e in events), "broken without event"


def run(
    conn: Connection,
    line: LineState,
    identity: Identity,
    segments: Iterable[Segment],
    chunk: int,
) -> Outcome:
    """Feed ``segments`` (then end of stream) in pieces of ``chunk`` bytes (0: whole)."""
    events: list[Any] = []
    error = None
    held = False
    now = NOW
    try:
        for when, hold, data in segments:
            if when != now:
                now = when
                conn.advance(when)
                drain(conn, line, identity, events, now)
                deadline = conn.next_deadline()  # every due timer ran: a driver cannot spin
                assert deadline is None or deadline > when, (deadline, when)
            if hold != held:
                held = hold
                if hold:
                    conn.hold()
                else:
                    conn.release(when)
            step = chunk or len(data) or 1
            for start in range(0, len(data), step):
                if conn.state in TERMINAL_STATES:
                    break  # a driver stops reading; the bytes could change nothing
                conn.receive_data(data[start : start + step], when)
                now = when
                drain(conn, line, identity, events, now)
                assert conn.buffered_record <= conn.config.max_record_size
                # Every whole frame was taken: at most one incomplete frame waits.
                assert conn.buffered_frames < 2 + MAX_NOISE
                assert conn.outstanding_pings <= MAX_OUTSTANDING_PINGS
        if conn.state not in TERMINAL_STATES:
            conn.receive_data(b"", now)
            drain(conn, line, identity, events, now)
    except (*ERRORS, ConnectionClosedError, ConnectionBrokenError) as exc:
        _check_over(conn, exc, events)
        error = (type(exc).__name__, str(exc), getattr(exc, "reason", ""))
    return Outcome(events, error, conn.state, conn.data_to_send())


def exercise(
    make: Callable[[], tuple[Connection, LineState]],
    segments: bytes | list[Segment],
    identity: Identity = BOB,
) -> Outcome:
    """Run ``segments`` (or bytes, all at once) through two fresh victims, whole and in
    chunks; both must agree."""
    if isinstance(segments, bytes):
        segments = [(NOW, False, segments)]
    whole = run(*make(), identity, segments, 0)
    flat = b"".join(bytes(data) for _, _, data in segments)
    chunk = 1 + zlib.crc32(flat) % 16
    pieces = run(*make(), identity, segments, chunk)
    # Not the bytes sent back: a replayed message makes the connection send its delivered
    # receipt again once the events are consumed, that is once per read that ends with one,
    # unless a newer receipt went out first; so their number depends on the reads.
    assert whole._replace(sent=b"") == pieces._replace(sent=b""), (
        f"outcome depends on chunking ({chunk}):\n{whole}\n{pieces}"
    )
    return whole


def exercise_peer(peer: Peer) -> Outcome:
    """Feed what ``peer`` wrote to Bob's open connection (whole and chunked)."""
    return exercise(open_victim, [(when, held, bytes(d)) for when, held, d in peer.segments])


# --- handshake helpers ----------------------------------------------------------------


def message1_with_payload(payload: bytes) -> bytes:
    """Alice's genuine message 1 (fixed keys) carrying any payload, framed."""
    hs = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=handshake_prologue(BOB.public_key),
        s=ALICE.x25519_private,
        e=EPHEMERAL_ALICE, rs=BOB.public_key.x25519,
    )
    return frame(hs.write_message(payload[: MAX_NOISE - 96]))


def message2_with_payload(payload: bytes) -> bytes:
    """Bob's genuine answer to :data:`MESSAGE1` carrying any payload, framed."""
    hs = HandshakeState(
        PROTOCOL_NAME, initiator=False, prologue=handshake_prologue(BOB.public_key),
        s=BOB.x25519_private,
        e=EPHEMERAL_BOB,
    )
    hs.read_message(MESSAGE1[2:])
    return frame(hs.write_message(payload[: MAX_NOISE - 48]))


# --- atheris ------------------------------------------------------------------------------


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under atheris, instrumenting hotline and the fuzz modules."""
    import atheris

    # Coverage of hotline and of the target's own mode switch; not of this harness, whose
    # feeding loops would only slow every run down.
    hotline_dir = str(ROOT / "hotline")
    target = test_one_input.__code__.co_filename
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType):
            filename = obj.__code__.co_filename
            if filename.startswith(hotline_dir) or filename == target:
                atheris.instrument_func(obj)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
