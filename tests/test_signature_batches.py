"""Signature checks in batches: Connection.check_signatures_in_batches and its trio driver.

The core gathers a burst of new messages, hands their signatures to the driver in one
:class:`SignaturesToCheck`, and releases nothing of the burst (nor anything after it) until
the driver hands the checked batch back. A bad signature anywhere fails the connection as it
would inline, and none of the burst comes out.
"""

from __future__ import annotations

import threading

import pytest
from corepair import drain, handshake, kinds

from hotline import (
    AuthenticationError,
    Config,
    Connection,
    ConnectionState,
    Identity,
    LineState,
    LocalProtocolError,
    MemoryStore,
    MessageReceived,
    PeerClosed,
    SignatureBatch,
    SignaturesToCheck,
    SignedMessage,
    line_id,
    open_line,
    sign_message,
)
from hotline._config import MAX_SIGNATURE_BATCH
from hotline.protocol import DOMAIN_MESSAGE
from hotline.store import Batch

ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)


def burst(sender: Connection, state: LineState, count: int, *, bad: int | None = None,
          ) -> list[SignedMessage]:
    """``count`` messages from ``sender``; the one at index ``bad`` with a forged signature."""
    messages = []
    for index in range(count):
        if index == bad:
            # The next message in the chain, in Alice's name, signed by Bob: only its
            # signature is bad.
            real = sign_message(ALICE, sender.line_id, state.sent_seq + 1, 1, state.sent_head,
                                b"forged")
            signature = BOB.sign(DOMAIN_MESSAGE + real.envelope)
            forged = SignedMessage(real.seq, real.timestamp, real.prev, real.body, real.envelope,
                                   signature, real.hash)
            state.append_sent(forged)
            sender.send_message(forged)
            messages.append(forged)
            continue
        message = state.next_message(ALICE, sender.line_id, b"body %d" % index, 1)
        sender.send_message(message)
        messages.append(message)
    return messages


def pair() -> tuple[Connection, Connection, LineState]:
    sender, receiver, sender_state, _ = handshake(ALICE, BOB)
    for _ in range(3):  # Settle the opening pings.
        for source, sink in ((sender, receiver), (receiver, sender)):
            data = source.data_to_send()
            if data:
                sink.receive_data(data, 0.0)
            drain(sink)
    receiver.check_signatures_in_batches(8)
    return sender, receiver, sender_state


def test_a_burst_is_handed_over_and_released_only_once_checked() -> None:
    sender, receiver, state = pair()
    sent = burst(sender, state, 20)
    receiver.receive_data(sender.data_to_send(), 0.0)
    event = receiver.next_event()
    assert isinstance(event, SignaturesToCheck)
    assert [m.seq for m in event.batch.messages] == [m.seq for m in sent]
    # Nothing of the burst comes out while the batch is out, however often asked.
    assert drain(receiver) == []
    with pytest.raises(LocalProtocolError, match="run"):
        receiver.signatures_checked(event.batch)
    event.batch.run()
    receiver.signatures_checked(event.batch)
    events = drain(receiver)
    assert kinds(events) == ["MessageReceived"] * 20
    assert [e.message.body for e in events if isinstance(e, MessageReceived)] == [
        m.body for m in sent
    ]


def test_a_burst_smaller_than_the_minimum_is_checked_at_once() -> None:
    sender, receiver, state = pair()
    burst(sender, state, 7)
    receiver.receive_data(sender.data_to_send(), 0.0)
    assert kinds(drain(receiver)) == ["MessageReceived"] * 7


def test_events_after_the_burst_come_out_after_it() -> None:
    sender, receiver, state = pair()
    burst(sender, state, 10)
    sender.close("done")
    receiver.receive_data(sender.data_to_send(), 0.0)
    event = receiver.next_event()
    assert isinstance(event, SignaturesToCheck)
    event.batch.run()
    receiver.signatures_checked(event.batch)
    events = drain(receiver)
    assert kinds(events) == ["MessageReceived"] * 10 + ["PeerClosed"]
    assert isinstance(events[-1], PeerClosed)


@pytest.mark.parametrize("bad", [0, 9, 19])
def test_a_bad_signature_fails_the_connection_and_releases_nothing(bad: int) -> None:
    sender, receiver, state = pair()
    burst(sender, state, 20, bad=bad)
    receiver.receive_data(sender.data_to_send(), 0.0)
    event = receiver.next_event()
    assert isinstance(event, SignaturesToCheck)
    event.batch.run()
    assert event.batch.failed_at == bad
    receiver.signatures_checked(event.batch)
    for _ in range(2):  # Failed for good, with the same named error.
        with pytest.raises(AuthenticationError):
            receiver.next_event()
    assert receiver.state is ConnectionState.ERROR


def test_a_bad_signature_in_a_small_burst_fails_inline() -> None:
    sender, receiver, state = pair()
    burst(sender, state, 3, bad=2)
    receiver.receive_data(sender.data_to_send(), 0.0)
    with pytest.raises(AuthenticationError):
        receiver.next_event()
    assert receiver.state is ConnectionState.ERROR


def test_batches_are_bounded() -> None:
    sender, receiver, state = pair()
    burst(sender, state, MAX_SIGNATURE_BATCH + 10)
    receiver.receive_data(sender.data_to_send(), 0.0)
    sizes = []
    while True:
        event = receiver.next_event()
        if isinstance(event, SignaturesToCheck):
            sizes.append(len(event.batch))
            event.batch.run()
            receiver.signatures_checked(event.batch)
        elif not isinstance(event, MessageReceived):
            break
    assert sizes == [MAX_SIGNATURE_BATCH, 10]


def test_misuse_is_a_local_error() -> None:
    sender, receiver, state = pair()
    with pytest.raises(LocalProtocolError):
        receiver.check_signatures_in_batches(1)
    burst(sender, state, 10)
    receiver.receive_data(sender.data_to_send(), 0.0)
    event = receiver.next_event()
    assert isinstance(event, SignaturesToCheck)
    stranger = SignatureBatch(event.batch.messages, ALICE.public_key)
    stranger.run()
    with pytest.raises(LocalProtocolError, match="not the batch"):
        receiver.signatures_checked(stranger)
    with pytest.raises(LocalProtocolError):
        Config(signature_batch=1)


async def test_a_line_checking_signatures_in_a_worker_thread_delivers_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []
    run = SignatureBatch.run

    def spy(batch: SignatureBatch) -> None:
        threads.append(threading.current_thread().name)
        run(batch)

    monkeypatch.setattr(SignatureBatch, "run", spy)
    config = Config(signature_batch=4)
    count = 600
    # A line signs one message per commit burst, so bursts of signed messages come from a
    # store that holds messages each signed alone (one per commit, as a line that sends one
    # at a time writes them): all are resent in one flood when the connection opens.
    alice_store = MemoryStore()
    state = alice_store.load(ALICE.public_key, BOB.public_key)
    lid = line_id(ALICE.public_key, BOB.public_key)
    for i in range(count):
        alice_store.commit(Batch(sent=[state.next_message(ALICE, lid, b"%d" % i, 1 + i)]))
    seqs: list[int] = []
    bodies: set[bytes] = set()
    async with (
        open_line(BOB, ALICE.public_key, store=MemoryStore(), listen=("127.0.0.1", 0),
                  config=config) as bob,
        open_line(ALICE, BOB.public_key, store=alice_store,
                  connect=bob.listen_addresses[0], config=config),
    ):
        async for message in bob:
            seqs.append(message.seq)
            bodies.add(message.body)
            if len(seqs) == count:
                break
    assert seqs == list(range(1, count + 1))
    assert len(bodies) == count
    main = threading.main_thread().name
    assert any(name != main for name in threads), "no batch was checked in a worker thread"
