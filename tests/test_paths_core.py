"""Several paths in the sans-io core: connections that share a PathGroup's marks.

Two nodes, two authenticated connections between them (two paths), bytes moved by hand. What
docs/protocol.md section 10.1 promises: only the active connection transmits our messages;
the one that becomes active resends everything without a delivered receipt; the receiver
takes each message once, whichever path brings it, and a late copy on the old path is a
duplicate, not a protocol error; a receipt counts whichever path brings it, once.
"""

from __future__ import annotations

import pytest
from corepair import drain, emit_record

from hotline import (
    Connection,
    Event,
    Identity,
    LineState,
    MessageReceived,
    PeerAuthenticated,
    ReceiptKind,
    ReceiptReceived,
    RemoteProtocolError,
    SignedMessage,
    line_id,
)
from hotline.protocol import T_MESSAGE, PathGroup

A = Identity.from_seed(bytes([0x31]) * 32, "a")
B = Identity.from_seed(bytes([0x32]) * 32, "b")
LINE = line_id(A.public_key, B.public_key)
NOW = 0.0


class Side:
    """One node's driver state and its connections, one per path."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.state = LineState()
        self.group = PathGroup()
        self.paths: list[Connection] = []

    def send(self, body: bytes, path: int) -> SignedMessage:
        message = self.state.next_message(self.identity, LINE, body, timestamp=1)
        self.paths[path].send_message(message)
        return message


def two_paths() -> tuple[Side, Side]:
    a, b = Side(A), Side(B)
    for timestamp in (1, 2):
        ca = Connection.initiate(A, B.public_key, now=NOW, timestamp=timestamp)
        cb = Connection.respond(B, [A.public_key], now=NOW)
        cb.receive_data(ca.data_to_send(), NOW)
        assert isinstance(cb.next_event(), PeerAuthenticated)
        cb.start(b.state, NOW, paths=b.group)
        ca.receive_data(cb.data_to_send(), NOW)
        assert isinstance(ca.next_event(), PeerAuthenticated)
        ca.start(a.state, NOW, paths=a.group)
        a.paths.append(ca)
        b.paths.append(cb)
    for side in (a, b):
        assert not any(conn.active for conn in side.paths)
        side.paths[0].activate()
    return a, b


def carry(sender: Connection, receiver: Connection) -> list[Event]:
    """Move what ``sender`` has written to ``receiver``; every event that comes out."""
    data = sender.data_to_send()
    if data:  # (b"" would be the end of the stream)
        receiver.receive_data(data, NOW)
    return drain(receiver)


def bodies(events: list[Event]) -> list[bytes]:
    return [event.message.body for event in events if isinstance(event, MessageReceived)]


def test_only_the_active_path_transmits_messages() -> None:
    a, b = two_paths()
    carry(a.paths[1], b.paths[1])
    a.send(b"one", 0)
    assert bodies(carry(a.paths[1], b.paths[1])) == []
    assert bodies(carry(a.paths[0], b.paths[0])) == [b"one"]


def test_failover_resends_and_a_late_copy_on_the_old_path_is_dropped() -> None:
    a, b = two_paths()
    old, new = a.paths
    carry(new, b.paths[1])  # The standby's first flight (a ping).
    for n in (1, 2, 3):
        a.send(b"m%d" % n, 0)
    assert bodies(carry(old, b.paths[0])) == [b"m1", b"m2", b"m3"]
    a.send(b"m4", 0)
    a.send(b"m5", 0)
    late = old.data_to_send()  # m4 and m5, still on their way over the old path.
    old.deactivate()
    new.activate()
    # No receipt came back: the new path sends m1 .. m5 again; the receiver takes m4, m5.
    assert bodies(carry(new, b.paths[1])) == [b"m4", b"m5"]
    b.paths[0].receive_data(late, NOW)
    assert bodies(carry(old, b.paths[0])) == []  # Duplicates, and no protocol error.
    a.send(b"m6", 1)
    assert bodies(carry(new, b.paths[1])) == [b"m6"]


def test_switching_back_resumes_on_a_path_that_carried_later_messages_before() -> None:
    a, b = two_paths()
    first, second = a.paths
    carry(second, b.paths[1])
    for n in (1, 2, 3):
        a.send(b"m%d" % n, 0)
    assert bodies(carry(first, b.paths[0])) == [b"m1", b"m2", b"m3"]
    first.deactivate()
    second.activate()
    a.send(b"m4", 1)
    assert bodies(carry(second, b.paths[1])) == [b"m4"]
    second.deactivate()
    first.activate()  # Resends m1 .. m4 on a path whose last message was m3.
    a.send(b"m5", 0)
    assert bodies(carry(first, b.paths[0])) == [b"m5"]


def deliver_receipt(b: Side, upto: int, path: int) -> None:
    """B signs a delivered receipt up to ``upto`` and sends it on ``path``."""
    receipt = b.state.sign_own_receipt(B, LINE, ReceiptKind.DELIVERED, upto,
                                       b.state.received_head, 2)
    b.paths[path].send_receipt(receipt)


def test_a_receipt_counts_once_whichever_path_brings_it() -> None:
    a, b = two_paths()
    carry(a.paths[1], b.paths[1])
    carry(b.paths[1], a.paths[1])
    sent = [a.send(b"m%d" % n, 0) for n in (1, 2)]
    received = carry(a.paths[0], b.paths[0])
    for event in received:
        if isinstance(event, MessageReceived):
            b.state.record_received(event.message)
    deliver_receipt(b, 2, 1)
    receipts = [e for e in carry(b.paths[1], a.paths[1]) if isinstance(e, ReceiptReceived)]
    assert [r.receipt.upto for r in receipts] == [sent[-1].seq]
    # The same receipt again on the other path: nothing new, and no error.
    b.paths[1].deactivate()
    b.paths[0].activate()  # Sends B's newest receipts first on the path it moves to.
    again = [e for e in carry(b.paths[0], a.paths[0]) if isinstance(e, ReceiptReceived)]
    assert again == []
    # The stand-by path's resend has nothing left to send: the receipt retired it.
    a.paths[0].deactivate()
    a.paths[1].activate()
    assert bodies(carry(a.paths[1], b.paths[1])) == []


def test_a_new_message_must_still_be_the_lines_next() -> None:
    a, b = two_paths()
    carry(a.paths[1], b.paths[1])
    a.send(b"m1", 0)
    second = a.send(b"m2", 0)
    # A hostile peer sends m2 on the other path while m1 has not arrived anywhere.
    emit_record(a.paths[1], [T_MESSAGE, second.envelope, second.signature])
    with pytest.raises(RemoteProtocolError, match="skips ahead"):
        carry(a.paths[1], b.paths[1])
