"""A stateful hypothesis test of two cores talking through ``corepair``, and the record
decoder against a general msgpack decoder.

Random sends both ways, partial transfers, delivered receipts, acknowledgements, time
passing (usually below the down threshold, sometimes above it), reconnects that drop what is
in flight, frequent rekeys and tampered frames, with the line's invariants checked after
every step and, at the end, a final reconnect after which everything sent must have arrived
exactly once and in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import msgpack
import pytest
from corepair import Pair, snapshot
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hotline import AuthenticationError, Config, ConnectionState, RemoteProtocolError
from hotline.protocol import MAX_STR_LEN, pack, strict_unpack
from hotline.protocol._records import _unpack

SIDES = st.sampled_from(["a", "b"])
CONFIG = Config(rekey_after_messages=4, rekey_after_seconds=2.5)


class LineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(config=CONFIG, auto_deliver=False)
        self.pair.connect()

    def _both_open(self) -> bool:
        return all(node.is_open for node in self.pair.nodes)

    # --- rules ------------------------------------------------------------------------

    @rule(side=SIDES, body=st.binary(max_size=48))
    def send(self, side: str, body: bytes) -> None:
        self.pair.send(side, body)

    @rule(side=SIDES, bodies=st.lists(st.binary(max_size=32), min_size=2, max_size=8))
    def send_burst(self, side: str, bodies: list[bytes]) -> None:
        self.pair.send_burst(side, bodies)  # One signature, on the last message.

    @rule(side=SIDES, nbytes=st.integers(min_value=1, max_value=400))
    def transfer_some(self, side: str, nbytes: int) -> None:
        self.pair.transfer(side, nbytes)

    @rule()
    def pump(self) -> None:
        self.pair.pump()

    @rule(side=SIDES, count=st.none() | st.integers(min_value=1, max_value=4))
    def deliver(self, side: str, count: int | None) -> None:
        self.pair.node(side).deliver(self.pair.now, count)

    @rule(side=SIDES)
    def acknowledge(self, side: str) -> None:
        self.pair.node(side).acknowledge(self.pair.now)

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.75, 4.0]))
    def advance(self, dt: float) -> None:
        """Time passes and the link carries everything: the line stays up."""
        self.pair.advance(dt)

    @rule(dt=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.5]))
    def advance_silently(self, dt: float) -> None:
        """Time passes and nothing moves: the peers grow suspect, or give each other up."""
        self.pair.advance(dt, pump=False)
        for node in self.pair.nodes:
            if node.conn is not None and node.conn.state is ConnectionState.BROKEN:
                event("a peer was declared down")

    @rule(initiator=SIDES)
    def reconnect(self, initiator: str) -> None:
        self.pair.reconnect(initiator=initiator)

    @precondition(lambda self: self._both_open())
    @rule(side=SIDES, body=st.binary(max_size=16), position=st.integers(min_value=0),
          initiator=SIDES)
    def tamper(self, side: str, body: bytes, position: int, initiator: str) -> None:
        """One flipped byte in a message's frame: refused, and nothing changes."""
        pair = self.pair
        pair.pump()  # Frame boundaries line up again.
        if not self._both_open():
            return
        pair.send(side, body)
        pair.collect()
        wire = pair.wire[side]
        data = bytearray(wire)
        wire.clear()
        frame_length = 2 + int.from_bytes(data[:2], "big")
        data[2 + position % (frame_length - 2)] ^= 0x40
        receiver = pair.node("b" if side == "a" else "a")
        before = (snapshot(receiver.state), len(receiver.events), len(receiver.held))
        try:
            pair.feed(receiver.name, bytes(data))
        except AuthenticationError:
            pass
        else:
            raise AssertionError("a tampered frame was accepted")
        assert receiver.conn is not None
        assert receiver.conn.state is ConnectionState.ERROR
        assert (snapshot(receiver.state), len(receiver.events), len(receiver.held)) == before
        event("a tampered frame was refused")
        pair.reconnect(initiator=initiator)

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def exactly_once_in_order(self) -> None:
        for node in self.pair.nodes:
            peer = node.peer
            assert peer is not None
            n = len(node.delivered)
            assert node.delivered == [m.body for m in peer.sent[:n]]
            assert [m.seq for m in node.delivered_messages] == list(range(1, n + 1))
            assert node.state.received_seq == n
            held = [m.seq for m in node.held]
            assert held == list(range(n + 1, n + 1 + len(held)))

    @invariant()
    def receipts_cover_only_delivered_messages(self) -> None:
        for node in self.pair.nodes:
            peer = node.peer
            assert peer is not None
            state = node.state
            state.check()
            assert 0 <= state.peer_acknowledged <= state.peer_delivered <= state.sent_seq
            assert state.acknowledged_upto <= state.delivered_upto <= len(node.delivered)
            assert state.peer_delivered <= peer.state.delivered_upto
            assert state.peer_acknowledged <= peer.state.acknowledged_upto
            for receipt in node.receipts:
                assert receipt.upto <= len(peer.delivered)
                assert receipt.head == peer.delivered_messages[receipt.upto - 1].hash
            assert [m.seq for m in state.pending] == list(
                range(state.peer_delivered + 1, state.sent_seq + 1)
            )

    @invariant()
    def rekeys_match(self) -> None:
        for node in self.pair.nodes:
            peer = node.peer
            assert peer is not None
            if node.conn is not None and peer.conn is not None and node.is_open:
                assert node.conn.rekeys_sent >= peer.conn.rekeys_received

    def teardown(self) -> None:
        """A clean connection at the end delivers everything ever sent, once, in order."""
        pair = self.pair
        rekeys = sum(node.conn.rekeys_sent for node in pair.nodes if node.conn is not None)
        event("rekeys on the last connection", "many" if rekeys >= 5 else str(rekeys))
        sent = sum(len(node.sent) for node in pair.nodes)
        event("messages sent", f"{min(sent // 10 * 10, 50)}+")
        pair.reconnect()
        for node in pair.nodes:
            node.deliver(pair.now)
            node.acknowledge(pair.now)
        pair.pump()
        for node in pair.nodes:
            node.deliver(pair.now)
            node.acknowledge(pair.now)
        pair.pump()
        self.exactly_once_in_order()
        self.receipts_cover_only_delivered_messages()
        for node in pair.nodes:
            peer = node.peer
            assert peer is not None
            assert node.delivered == [m.body for m in peer.sent]
            assert node.state.peer_delivered == node.state.peer_acknowledged == node.state.sent_seq
            assert not node.state.pending


LineMachine.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLine = LineMachine.TestCase


# --------------------------------------------------------------------------- record decoder

MAX_FIELDS = 6
MAX_BIN = 40
SCALARS = (
    st.integers(min_value=0, max_value=2**64 - 1)
    | st.binary(max_size=MAX_BIN)
    | st.text(max_size=40)
)
ANY_VALUE = st.recursive(
    SCALARS | st.none() | st.booleans() | st.floats(allow_nan=False)
    | st.integers(min_value=-(2**63), max_value=-1) | st.binary(min_size=MAX_BIN + 1),
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.integers(0, 9), inner,
                                                                 max_size=3),
    max_leaves=20,
)


def _within_limits(value: Any) -> bool:
    """What strict_unpack accepts: a flat array of uint, bin and str within the limits."""
    if type(value) is not list or len(value) > MAX_FIELDS:
        return False
    for field in value:
        if type(field) is int and 0 <= field < 2**64:
            continue
        if type(field) is bytes and len(field) <= MAX_BIN:
            continue
        if type(field) is str and len(field.encode()) <= MAX_STR_LEN:
            continue
        return False
    return True


@given(st.lists(SCALARS, max_size=MAX_FIELDS))
@settings(derandomize=True, database=None)
def test_every_flat_array_of_scalars_decodes(fields: list[Any]) -> None:
    assert strict_unpack(pack(fields), max_bin_len=MAX_BIN, max_array_len=MAX_FIELDS) == fields


@given(st.one_of(ANY_VALUE.map(lambda v: msgpack.packb(v, use_bin_type=True)),
                 st.binary(max_size=64)))
@settings(derandomize=True, database=None, max_examples=500)
def test_the_record_decoder_agrees_with_msgpack_or_refuses(data: bytes) -> None:
    try:
        expected = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        expected = None
    if expected is not None and _within_limits(expected):
        assert strict_unpack(data, max_bin_len=MAX_BIN, max_array_len=MAX_FIELDS) == expected
    else:
        with pytest.raises(RemoteProtocolError, match=r"^malformed record: "):
            strict_unpack(data, max_bin_len=MAX_BIN, max_array_len=MAX_FIELDS)


def _header(fix: int | None, fix_limit: int, wide: list[tuple[int, int]], value: int,
            choice: int) -> bytes:
    """One msgpack header for ``value`` in the ``choice``-th of the forms that hold it, the
    shortest first (the widest if there are fewer): 0 is the form msgpack writes."""
    forms = [bytes([fix + value])] if fix is not None and value < fix_limit else []
    forms += [bytes([tag]) + value.to_bytes(width, "big")
              for tag, width in wide if value < 256**width]
    return forms[min(choice, len(forms) - 1)]


# Numbers and lengths on both sides of each form's limit, where a wrong bound would show.
_LIMITS = (0, 15, 16, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1)
_EDGES = (
    st.sampled_from(_LIMITS)
    | st.sampled_from([n for n in _LIMITS if n <= 65536]).map(bytes)
    | st.sampled_from([n for n in _LIMITS if n <= MAX_STR_LEN]).map(lambda n: "x" * n)
)
_WIDE_BIN = 65536


def _examples(values: list[bytes]) -> Callable[[Callable[[bytes], None]], Any]:
    def add(test: Callable[[bytes], None]) -> Any:
        for value in values:
            test = example(value)(test)
        return test
    return add


def _encode(fields: list[Any], wide: int, choice: int) -> bytes:
    """``fields`` as msgpack writes them, except the header at ``wide`` (0: the array's,
    i: field i - 1's, -1: none) in its ``choice``-th form."""

    def width(index: int) -> int:
        return choice if index == wide else 0

    out = [_header(0x90, 16, [(0xDC, 2), (0xDD, 4)], len(fields), width(0))]
    for index, field in enumerate(fields, 1):
        if type(field) is int:
            out.append(_header(0x00, 128, [(0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)], field,
                               width(index)))
        elif type(field) is bytes:
            out += [_header(None, 0, [(0xC4, 1), (0xC5, 2), (0xC6, 4)], len(field),
                            width(index)), field]
        else:
            raw = field.encode()
            out += [_header(0xA0, 32, [(0xD9, 1), (0xDA, 2), (0xDB, 4)], len(raw),
                            width(index)), raw]
    return b"".join(out)


@st.composite
def _any_width_array(draw: st.DrawFn) -> bytes:
    """A flat array of uint, bin and str written as msgpack writes it, except that at most
    one header (the array's or a field's) may be in a wider form than its value needs: with
    one alone, a wrong bound for that form cannot hide behind another field's."""
    fields = draw(st.lists(_EDGES | SCALARS, max_size=MAX_FIELDS))
    return _encode(fields, draw(st.integers(-1, len(fields))), draw(st.integers(1, 4)))


# Every value at the limits of each form, alone in an array, in each form that holds it; and
# arrays too long for a drawn one to be likely, their lengths in each form around the limits.
_BOUNDARIES = [
    _encode([field], wide, choice)
    for field in [
        *_LIMITS,
        *(bytes(n) for n in _LIMITS if n <= 65536),
        *("x" * n for n in _LIMITS if n <= MAX_STR_LEN),
    ]
    for wide, choice in [(-1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
] + [_encode([0] * n, 0, choice) for n in (15, 16, 65535, 65536) for choice in (0, 1, 2)]


@given(_any_width_array())
@settings(derandomize=True, database=None, max_examples=1000)
@_examples(_BOUNDARIES)
def test_an_envelope_is_canonical_exactly_when_msgpack_writes_it_so(data: bytes) -> None:
    # The envelope check reads the headers' widths instead of encoding the fields again: it
    # must agree with encoding them again, every time.
    fields, canonical = _unpack(data, _WIDE_BIN, 1 << 17)
    assert canonical == (pack(fields) == data)
