"""One signature per burst, in the sans-io core (docs/protocol.md, "Bursts").

A message may travel with an empty signature; the signature of the next signed message of
its direction covers it through the hash chain. The receiving core releases nothing of an
unsigned run until that signature verifies, bounds the run, and forgets it when the
connection ends. Two cores talk directly (``corepair.handshake``), with numbers for time.
"""

from __future__ import annotations

import dataclasses

import pytest
from corepair import drain, emit_record, kinds

from hotline import (
    AuthenticationError,
    Config,
    Connection,
    ConnectionState,
    Identity,
    LineState,
    LocalProtocolError,
    MessageProof,
    MessageReceived,
    RemoteProtocolError,
    SignaturesToCheck,
    SignedMessage,
    check_message_proof,
)
from hotline.protocol import (
    MAX_BURST_MESSAGES,
    MAX_BURST_UNSIGNED_BYTES,
    cover_message,
    unsigned_message,
)

ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)


def send_burst(
    sender: Connection, state: LineState, bodies: list[bytes], *, signed_last: bool = True
) -> list[SignedMessage]:
    """``bodies`` as our next messages, each unsigned but the last (if ``signed_last``)."""
    messages = []
    for index, body in enumerate(bodies):
        message = unsigned_message(ALICE.public_key, sender.line_id, state.sent_seq + 1, 1,
                                   state.sent_head, body)
        if signed_last and index == len(bodies) - 1:
            message = cover_message(ALICE, message)
        state.append_sent(message)
        sender.send_message(message)
        messages.append(message)
    return messages


def connect(
    sender_state: LineState, receiver_state: LineState, *, timestamp: int = 1,
    config: Config | None = None,
) -> tuple[Connection, Connection]:
    """Alice (sender, initiator) and Bob (receiver, with ``config``) resuming the states."""
    ca = Connection.initiate(ALICE, BOB.public_key, now=0.0, timestamp=timestamp)
    cb = Connection.respond(BOB, [ALICE.public_key], now=0.0, config=config)
    cb.receive_data(ca.data_to_send(), 0.0)
    drain(cb)
    cb.start(receiver_state, 0.0)
    receiver_state.record_initiations(peers=cb.initiation_timestamp)
    ca.receive_data(cb.data_to_send(), 0.0)
    drain(ca)
    ca.start(sender_state, 0.0)
    sender_state.record_initiations(ours=ca.initiation_timestamp)
    return ca, cb


def settled(config: Config | None = None) -> tuple[Connection, Connection, LineState, LineState]:
    """Alice and Bob, connected, with the opening flights read."""
    sender_state, receiver_state = LineState(), LineState()
    sender, receiver = connect(sender_state, receiver_state, config=config)
    for _ in range(3):
        for source, sink in ((sender, receiver), (receiver, sender)):
            data = source.data_to_send()
            if data:
                sink.receive_data(data, 0.0)
            drain(sink)
    return sender, receiver, sender_state, receiver_state


def received(events: list[object]) -> list[int]:
    return [e.message.seq for e in events if isinstance(e, MessageReceived)]


def test_an_unsigned_run_comes_out_with_the_signature_that_covers_it() -> None:
    sender, receiver, state, _ = settled()
    burst = send_burst(sender, state, [b"one", b"", b"three"])
    data = sender.data_to_send()
    receiver.receive_data(data[:-1], 0.0)  # All but the last byte of the signed message.
    assert received(drain(receiver)) == []
    receiver.receive_data(data[-1:], 0.0)
    events = drain(receiver)
    assert kinds(events) == ["MessageReceived"] * 3
    assert [e.message for e in events if isinstance(e, MessageReceived)] == burst
    assert [m.signed for m in burst] == [False, False, True]


def test_an_unsigned_tail_is_forgotten_when_the_connection_ends() -> None:
    sender, receiver, state, receiver_state = settled()
    run = send_burst(sender, state, [b"one", b"two"], signed_last=False)
    receiver.receive_data(sender.data_to_send(), 0.0)
    receiver.receive_data(b"", 0.0)
    assert kinds(drain(receiver)) == ["ConnectionBroken"]
    # A new connection: the sender resends its pending messages, unsigned as stored, and the
    # signed one that covers them follows; all three come out, once.
    again, peer = connect(state, receiver_state, timestamp=2)
    peer.receive_data(again.data_to_send(), 0.0)
    assert received(drain(peer)) == []
    covering = send_burst(again, state, [b"three"])
    peer.receive_data(again.data_to_send(), 0.0)
    events = drain(peer)
    assert [e.message for e in events if isinstance(e, MessageReceived)] == [*run, *covering]


def test_replayed_messages_are_dropped_signed_or_not() -> None:
    sender, receiver, state, receiver_state = settled()
    send_burst(sender, state, [b"one", b"two", b"three"])
    receiver.receive_data(sender.data_to_send(), 0.0)
    events = drain(receiver)
    for event in events:
        if isinstance(event, MessageReceived):
            receiver_state.record_received(event.message)
    assert received(events) == [1, 2, 3]
    # No receipt reached the sender: a new connection resends 1..3 (two of them unsigned)
    # then the next burst; only the new messages come out.
    again, peer = connect(state, receiver_state, timestamp=2)
    send_burst(again, state, [b"four", b"five"])
    peer.receive_data(again.data_to_send(), 0.0)
    assert received(drain(peer)) == [4, 5]


def test_a_bad_covering_signature_releases_nothing_of_the_run() -> None:
    sender, receiver, state, _ = settled()
    run = send_burst(sender, state, [b"one", b"two"], signed_last=False)
    last = cover_message(ALICE, unsigned_message(ALICE.public_key, sender.line_id, 3, 1,
                                                 run[-1].hash, b"three"))
    forged = dataclasses.replace(last, signature=BOB.sign(b"anything"))
    state.append_sent(forged)
    sender.send_message(forged)
    receiver.receive_data(sender.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError):
        drain(receiver)
    assert receiver.state is ConnectionState.ERROR


def test_a_fork_inside_an_unsigned_run_is_refused() -> None:
    sender, receiver, _, _ = settled()
    one = unsigned_message(ALICE.public_key, sender.line_id, 1, 1, bytes(32), b"one")
    two = unsigned_message(ALICE.public_key, sender.line_id, 2, 1, b"\x01" * 32, b"two")
    emit_record(sender, [1, one.envelope, b""])
    emit_record(sender, [1, two.envelope, b""])
    receiver.receive_data(sender.data_to_send(), 0.0)
    with pytest.raises(RemoteProtocolError, match="message 2 does not continue the chain"):
        drain(receiver)


@pytest.mark.parametrize("signature", [b"\x00" * 63, b"\x00" * 65, b"\x00"])
def test_a_signature_is_64_bytes_or_empty(signature: bytes) -> None:
    sender, receiver, _, _ = settled()
    one = unsigned_message(ALICE.public_key, sender.line_id, 1, 1, bytes(32), b"one")
    emit_record(sender, [1, one.envelope, signature])
    receiver.receive_data(sender.data_to_send(), 0.0)
    with pytest.raises(RemoteProtocolError, match="signature must be 64 bytes"):
        drain(receiver)


def test_the_run_is_bounded_in_count() -> None:
    sender, receiver, state, _ = settled()
    send_burst(sender, state, [b"%d" % i for i in range(MAX_BURST_MESSAGES - 1)],
               signed_last=False)
    receiver.receive_data(sender.data_to_send(), 0.0)
    assert received(drain(receiver)) == []  # The protocol's most: accepted, held.
    send_burst(sender, state, [b"one too many"], signed_last=False)
    receiver.receive_data(sender.data_to_send(), 0.0)
    with pytest.raises(RemoteProtocolError, match="unsigned message 64 makes a run of 64"):
        drain(receiver)


def test_the_run_is_bounded_in_bytes() -> None:
    sender, receiver, state, _ = settled()
    half = MAX_BURST_UNSIGNED_BYTES // 2 - 200  # Two envelopes fit, three do not.
    send_burst(sender, state, [bytes(half), bytes(half)], signed_last=False)
    receiver.receive_data(sender.data_to_send(), 0.0)
    assert received(drain(receiver)) == []
    send_burst(sender, state, [bytes(half)], signed_last=False)
    receiver.receive_data(sender.data_to_send(), 0.0)
    with pytest.raises(RemoteProtocolError, match="unsigned message 3 makes a run of 3"):
        drain(receiver)


def test_a_receiver_may_accept_longer_runs() -> None:
    sender, receiver, state, _ = settled(Config(max_unsigned_run=200))
    send_burst(sender, state, [b"%d" % i for i in range(150)])
    receiver.receive_data(sender.data_to_send(), 0.0)
    assert received(drain(receiver)) == list(range(1, 151))


@pytest.mark.parametrize(("field", "value"), [
    ("max_unsigned_run", MAX_BURST_MESSAGES - 2),
    ("max_unsigned_run_bytes", MAX_BURST_UNSIGNED_BYTES - 1),
])
def test_no_setting_refuses_an_honest_sender(field: str, value: int) -> None:
    with pytest.raises(LocalProtocolError, match=field):
        Config(**{field: value})


def test_bursts_in_batches_come_out_once_their_signatures_are_checked() -> None:
    sender, receiver, state, _ = settled()
    receiver.check_signatures_in_batches(4)
    for index in range(10):
        send_burst(sender, state, [b"%d-a" % index, b"%d-b" % index, b"%d-c" % index])
    receiver.receive_data(sender.data_to_send(), 0.0)
    event = receiver.next_event()
    assert isinstance(event, SignaturesToCheck)
    # Only the signed messages are checked: one per burst.
    assert [m.seq for m in event.batch.messages] == list(range(3, 31, 3))
    assert drain(receiver) == []
    event.batch.run()
    receiver.signatures_checked(event.batch)
    assert received(drain(receiver)) == list(range(1, 31))


def test_a_bad_signature_in_a_batch_releases_no_burst() -> None:
    sender, receiver, state, _ = settled()
    receiver.check_signatures_in_batches(2)
    for index in range(3):
        send_burst(sender, state, [b"%d-a" % index, b"%d-b" % index])
    run = send_burst(sender, state, [b"x"], signed_last=False)
    last = cover_message(ALICE, unsigned_message(ALICE.public_key, sender.line_id,
                                                 state.sent_seq + 1, 1, run[-1].hash, b"y"))
    forged = dataclasses.replace(last, signature=BOB.sign(b"anything"))
    state.append_sent(forged)
    sender.send_message(forged)
    receiver.receive_data(sender.data_to_send(), 0.0)
    event = receiver.next_event()
    assert isinstance(event, SignaturesToCheck)
    event.batch.run()
    assert event.batch.failed_at == 3
    receiver.signatures_checked(event.batch)
    with pytest.raises(AuthenticationError):
        drain(receiver)


# --- signing and proofs --------------------------------------------------------------


LID = bytes(range(32))


def chain_of(count: int) -> list[SignedMessage]:
    messages: list[SignedMessage] = []
    prev = bytes(32)
    for seq in range(1, count + 1):
        message = unsigned_message(ALICE.public_key, LID, seq, seq, prev, b"m%d" % seq)
        prev = message.hash
        messages.append(message)
    messages[-1] = cover_message(ALICE, messages[-1])
    return messages


def test_cover_message_signs_only_for_the_sender_the_envelope_names() -> None:
    message = unsigned_message(ALICE.public_key, LID, 1, 1, bytes(32), b"x")
    with pytest.raises(LocalProtocolError, match="sender its envelope names"):
        cover_message(BOB, message)


def test_a_proof_carries_an_unsigned_message_to_its_covering_signature() -> None:
    messages = chain_of(4)
    proof = MessageProof(tuple(m.envelope for m in messages[1:]), messages[-1].signature)
    proven = check_message_proof(proof, sender=ALICE.public_key, line_id=LID)
    assert (proven.seq, proven.body, proven.signed) == (2, b"m2", False)
    alone = MessageProof((messages[-1].envelope,), messages[-1].signature)
    assert check_message_proof(alone, sender=ALICE.public_key, line_id=LID) == messages[-1]


@pytest.mark.parametrize("flaw", ["gap", "other-body", "bad-signature", "other-signer",
                                  "other-line", "empty"])
def test_a_proof_that_does_not_hold_is_refused(flaw: str) -> None:
    messages = chain_of(4)
    envelopes = [m.envelope for m in messages]
    signature = messages[-1].signature
    sender, lid = ALICE.public_key, LID
    if flaw == "gap":
        del envelopes[1]
    elif flaw == "other-body":
        envelopes[1] = unsigned_message(ALICE.public_key, LID, 2, 2, messages[0].hash,
                                        b"changed").envelope
    elif flaw == "bad-signature":
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    elif flaw == "other-signer":
        sender = BOB.public_key
    elif flaw == "other-line":
        lid = bytes(32)
    else:
        envelopes = []
    proof = MessageProof(tuple(envelopes), signature)
    error = AuthenticationError if flaw == "bad-signature" else RemoteProtocolError
    with pytest.raises(error):
        check_message_proof(proof, sender=sender, line_id=lid)
