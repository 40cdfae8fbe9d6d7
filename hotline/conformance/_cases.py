"""The cases, most fundamental first; each names the section of docs/protocol.md it checks.

A case is an async function of the :class:`~._peer.Peer`. It raises
:class:`~._peer.CaseFailed` when the implementation does not do what the section says,
:class:`~._peer.CaseSkipped` when the implementation gave it nothing to work on (receipt
checks need messages from the implementation). After every case the runner opens a fresh
honest connection (:meth:`~._peer.Peer.check_usable`), so "passes" always also means "stays
usable for the honest peer, and delivered nothing it should have refused".

Cases that make the implementation refuse something follow one pattern: open an honest
session, read the first flight, send one bad thing, and require the connection to end while
the suite keeps pinging (:meth:`~._peer.Peer.expect_refusal`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from .._keys import Identity
from ..protocol import (
    DOMAIN_MESSAGE,
    FLAG_FINAL,
    MAX_CONTENT,
    pack,
)
from ._peer import (
    REFUSAL_TIMEOUT,
    T_GOODBYE,
    T_MESSAGE,
    T_PING,
    T_RECEIPT,
    CaseFailed,
    CaseSkipped,
    Peer,
    forged_receipt_envelope,
    random_bytes,
    sign_receipt_envelope,
    unpack_envelope,
)
from ._wire import (
    Session,
    frame,
    initiation_payload,
    initiator_handshake,
    message_hash,
    plaintext,
)

__all__ = ["CASES", "Case"]

#: The default max_record_size of section 13 (max_body_size 1 MiB + 512).
DEFAULT_MAX_RECORD = 1_048_576 + 512
#: Section 8.1: the longest unsigned run a receiver with default settings holds.
DEFAULT_MAX_UNSIGNED_RUN = 63
#: A stranger nobody pinned.
STRANGER = Identity.from_seed(bytes([0x3C]) * 32, "stranger")

CONNECT, LISTEN = "connect", "listen"
BOTH = frozenset({CONNECT, LISTEN})


@dataclass(frozen=True)
class Case:
    section: str
    description: str
    run: Callable[[Peer], Awaitable[None]]
    roles: frozenset[str] = BOTH
    """The suite's roles the case runs in: ``connect`` (the implementation responds) or
    ``listen`` (it initiates)."""

    @property
    def name(self) -> str:
        return self.run.__name__.removeprefix("case_").replace("_", "-")


CASES: list[Case] = []


def case(section: str, description: str, roles: frozenset[str] = BOTH
         ) -> Callable[[Callable[[Peer], Awaitable[None]]], Callable[[Peer], Awaitable[None]]]:
    def register(run: Callable[[Peer], Awaitable[None]]) -> Callable[[Peer], Awaitable[None]]:
        CASES.append(Case(section, description, run, roles))
        return run
    return register


Build = Callable[[Session], Any]


def ping(session: Session, *, echo: int | None = None, interval_us: int = 1_000_000
         ) -> list[Any]:
    """The session's next ping. Hostile pings take their id from the session's sequence too:
    a made-up id would make the suite's own next ping the one refused."""
    session.ping_id += 1
    return [T_PING, session.ping_id, session.peer_ping_id if echo is None else echo, 0,
            interval_us]


async def refuse_record(peer: Peer, record: list[Any] | bytes | Build, what: str) -> None:
    """Send one record on an honest session and require the connection to end."""
    async with peer.opened() as session:
        await session.send_record(record(session) if callable(record) else record)
        await peer.expect_refusal(session, what)


async def refuse_plaintext(peer: Peer, plain: Callable[[Session], bytes], what: str) -> None:
    async with peer.opened() as session:
        await session.send_plaintext(plain(session))
        await peer.expect_refusal(session, what)


async def refuse_message(peer: Peer, envelope: bytes, signature: bytes, what: str,
                         *, hostile_hash: bool = True) -> None:
    if hostile_hash:
        peer.hostile[message_hash(envelope)] = -1
    await refuse_record(peer, [T_MESSAGE, envelope, signature], what)


def need_their_messages(peer: Peer, count: int) -> None:
    if peer.their_seq < count:
        raise CaseSkipped(f"needs at least {count} message(s) from the implementation; it "
                          f"sent {peer.their_seq} (give it lines to send)")


# --- section 10 first: resume before anything is receipted ------------------------------


@case("10", "resume: messages not receipted are sent again on the next connection")
async def case_resend_unreceipted(peer: Peer) -> None:
    # From here to the honest exchange the suite receipts none of the implementation's
    # messages, so that the receipt checks below can be made while they are unreceipted.
    peer.hold_receipts = True
    async with peer.opened() as session:
        # An implementation that calls may queue its messages just after it connected: they
        # then come right after the first flight.
        await peer.read_for(session, 0.5)
        before = dict(peer.their_messages)
        await peer.goodbye(session)
    if not before:
        raise CaseSkipped("the implementation had no message to send (give it lines)")
    peer.their_messages.clear()
    async with peer.opened() as session:
        # Section 10: pending messages come in the first flight, before the first ping.
        again = {seq: peer.their_messages.get(seq) for seq in before}
        if again != before:
            missing = sorted(seq for seq in before if again[seq] is None)
            raise CaseFailed(f"the next connection's first flight lacks messages {missing}"
                             if missing else "the next connection's messages differ")
        await peer.goodbye(session)


async def receipt_checks_while_unreceipted(peer: Peer, what: str, kinds: list[tuple[str, int]]
                                           ) -> None:
    """Send receipts for the implementation's unreceipted messages; all but the last valid,
    the last one refused only by the check ``what`` names."""
    peer.hold_receipts = True
    need_their_messages(peer, max(1, *(upto for _, upto in kinds)))
    if peer.receipted_upto:
        raise CaseSkipped("the suite already receipted the implementation's messages")
    if any(upto not in peer.their_messages for _, upto in kinds):
        raise CaseSkipped("the implementation did not send the messages this case receipts "
                          "(a line it used before?)")
    async with peer.opened() as session:
        for kind, upto in kinds:
            envelope, _ = peer.their_messages[upto]
            await session.send_record(their_receipt(peer, kind, upto, message_hash(envelope)))
        await peer.expect_refusal(session, what)


@case("9.2", "receipt: acknowledged before delivered is refused")
async def case_acknowledged_first(peer: Peer) -> None:
    await receipt_checks_while_unreceipted(
        peer, "an acknowledged receipt before any delivered one",
        [("acknowledged", peer.their_seq)])


@case("9.2", "receipt: going back is refused")
async def case_receipt_back(peer: Peer) -> None:
    await receipt_checks_while_unreceipted(
        peer, "a delivered receipt for 1 after one for 2", [("delivered", 2), ("delivered", 1)])


@case("10", "resume: an honest connection exchanges a message and its delivered receipt")
async def case_honest_exchange(peer: Peer) -> None:
    peer.hold_receipts = False  # The honest peer receipts what it holds, from now on.
    async with peer.opened() as session:
        if peer.their_seq > peer.receipted_upto:
            await peer.send_receipts(session)
        await peer.exchange(session, "honest")
        await peer.exchange(session, "honest again")
        await peer.goodbye(session)


@case("10", "resume: the next connection repeats the latest delivered receipt")
async def case_repeats_receipt(peer: Peer) -> None:
    async with peer.opened() as session:
        await peer.exchange(session, "before resume")
        await peer.goodbye(session)
    session = await peer.session()
    try:
        flight = await peer.first_flight(session)
        delivered = [unpack_envelope(r[1]) for r in flight if r[0] == T_RECEIPT
                     and unpack_envelope(r[1])[2] == "delivered"]
        if not delivered or delivered[-1][3] != peer.seq:
            raise CaseFailed(f"the first flight holds no delivered receipt for {peer.seq}")
        await peer.goodbye(session)
    finally:
        await session.aclose()


@case("8", "resume: a resent message already held is dropped, its receipt sent again")
async def case_duplicate_dropped(peer: Peer) -> None:
    if peer.seq < 1:
        raise CaseFailed("no message was delivered before")
    last = peer.seq
    if last not in peer.sent:
        raise CaseSkipped("the suite did not send the last message in this run")
    async with peer.opened() as session:
        # Section 10: a retransmission is the message exactly as it was first signed.
        prior = peer.sent[last]
        await peer.send_message(session, prior)
        await peer.await_delivered(session, last, peer.head)
        await peer.exchange(session, "after duplicate")
        await peer.goodbye(session)


# --- section 4: the handshake -----------------------------------------------------------


@case("4.3", "handshake: an unknown initiator key gets no answer", frozenset({CONNECT}))
async def case_unknown_key(peer: Peer) -> None:
    stream = await peer.raw_stream()
    handshake = initiator_handshake(STRANGER, peer.implementation)
    await stream.send_all(frame(handshake.write_message(
        initiation_payload(STRANGER, time.time_ns()))))
    await peer.expect_silence(stream, "an initiation by an unknown key")


@case("4.3", "handshake: a wrong prologue gets no answer", frozenset({CONNECT}))
async def case_wrong_prologue(peer: Peer) -> None:
    stream = await peer.raw_stream()
    handshake = initiator_handshake(peer.identity, peer.implementation,
                                    prologue=b"hotline/2" + peer.implementation.raw)
    await stream.send_all(frame(handshake.write_message(
        initiation_payload(peer.identity, peer.clock.next()))))
    await peer.expect_silence(stream, "an initiation with the prologue of version 2")


@case("4.3", "handshake: a replayed initiation gets no answer", frozenset({CONNECT}))
async def case_replayed_initiation(peer: Peer) -> None:
    if not peer.initiator:
        raise CaseSkipped("only the initiator's message 1 can be replayed")
    async with peer.opened() as session:
        await peer.goodbye(session)
    replay = await peer.raw_stream()
    await replay.send_all(peer.last_initiation)
    await peer.expect_silence(replay, "a replay of the last initiation")


@case("4.3", "handshake: an initiator naming another Ed25519 key gets no answer",
      frozenset({CONNECT}))
async def case_other_ed25519_key(peer: Peer) -> None:
    # Section 2.1: -I, the same X25519 key but the other sign of x.
    raw = bytearray(peer.identity.public_key.raw)
    raw[31] ^= 0x80
    stream = await peer.raw_stream()
    handshake = initiator_handshake(peer.identity, peer.implementation)
    await stream.send_all(frame(handshake.write_message(pack([peer.clock.next(), bytes(raw)]))))
    await peer.expect_silence(stream, "an initiation naming -I")


@case("4.3", "handshake: a malformed initiation payload gets no answer", frozenset({CONNECT}))
async def case_malformed_initiation(peer: Peer) -> None:
    stream = await peer.raw_stream()
    handshake = initiator_handshake(peer.identity, peer.implementation)
    await stream.send_all(frame(handshake.write_message(pack([peer.clock.next()]))))
    await peer.expect_silence(stream, "an initiation payload of one element")


@case("4.4", "handshake: a message 2 that fails authentication is refused",
      frozenset({LISTEN}))
async def case_bad_message2(peer: Peer) -> None:
    stream = await peer.raw_stream()

    def corrupt(message2: bytes) -> bytes:
        return message2[:-1] + bytes([message2[-1] ^ 1])

    await peer.respond(stream, message2=corrupt)
    await peer.expect_silence(stream, "a message 2 with a wrong tag")


@case("4.4", "handshake: a message 2 with a payload is refused", frozenset({LISTEN}))
async def case_message2_payload(peer: Peer) -> None:
    stream = await peer.raw_stream()
    await peer.respond(stream, payload=b"unexpected")
    await peer.expect_silence(stream, "a message 2 carrying a payload")


# --- section 5: transport plaintexts ---------------------------------------------------------


@case("5.2", "transport: a reserved flag bit is refused")
async def case_reserved_flag(peer: Peer) -> None:
    await refuse_plaintext(peer, lambda s: plaintext(FLAG_FINAL | 0x04, pack(ping(s))),
                           "flag bit 0x04")


@case("5.2", "transport: a non-zero padding byte is refused")
async def case_bad_padding(peer: Peer) -> None:
    await refuse_plaintext(
        peer, lambda s: plaintext(FLAG_FINAL, pack(ping(s)), padding=b"\0\0\x01\0"),
        "a padding byte 0x01")


@case("5.2", "transport: a length beyond the plaintext is refused")
async def case_length_beyond(peer: Peer) -> None:
    def beyond(session: Session) -> bytes:
        record = pack(ping(session))
        return plaintext(FLAG_FINAL, record, length=len(record) + 40)

    await refuse_plaintext(peer, beyond, "a length 40 bytes beyond the plaintext")


@case("5.2", "transport: a record over max_record_size is refused")
async def case_oversize_record(peer: Peer) -> None:
    async with peer.opened() as session:
        piece = bytes(MAX_CONTENT)
        sent = 0
        # Never FINAL: an implementation must refuse before it has buffered the record.
        while sent <= DEFAULT_MAX_RECORD + MAX_CONTENT and not session.closed:
            await session.send_plaintext(plaintext(0, piece))
            sent += len(piece)
        # Kept alive by empty pieces of the same record: a ping would end the record, and
        # a record of zeros fails to decode whatever its size.
        await peer.expect_refusal(session, f"{sent} bytes of one record",
                                  proof_of_life=lambda s: s.send_plaintext(plaintext(0, b"")))


@case("5.2", "transport: a record split into many messages is accepted")
async def case_split_record(peer: Peer) -> None:
    async with peer.opened() as session:
        message = peer.message(peer.next_body("split into 7-byte pieces"))
        await session.send_record([T_MESSAGE, message.envelope, message.signature], piece=7)
        peer.commit(message)
        await peer.await_delivered(session, message.seq, message.hash)
        await peer.goodbye(session)


@case("5.3", "rekey: a rekeyed stream is accepted")
async def case_rekey(peer: Peer) -> None:
    async with peer.opened() as session:
        await session.send_ping()
        # REKEY on every piece of a split message: the receiver rekeys after each.
        message = peer.message(peer.next_body("rekeyed"))
        await session.send_record([T_MESSAGE, message.envelope, message.signature], piece=50,
                                  rekey=True)
        peer.commit(message)
        await peer.await_delivered(session, message.seq, message.hash)
        await peer.exchange(session, "after rekey")
        await peer.goodbye(session)


# --- section 6: records ---------------------------------------------------------------------


@case("6", "record: an unknown type is refused")
async def case_unknown_type(peer: Peer) -> None:
    await refuse_record(peer, [4, 1], "a record of type 4")


@case("6", "record: a wrong element count is refused")
async def case_wrong_count(peer: Peer) -> None:
    await refuse_record(peer, lambda s: ping(s)[:4], "a ping of 4 elements")


@case("6", "record: a wrong element type is refused")
async def case_wrong_type(peer: Peer) -> None:
    message = peer.message(peer.next_body("envelope as str"))
    peer.hostile[message.hash] = message.seq
    await refuse_record(peer, [T_MESSAGE, message.envelope.hex(), message.signature],
                        "a message whose envelope is a str")


@case("6", "record: nil and nested elements are refused")
async def case_nil_element(peer: Peer) -> None:
    # [5, nil] and [5, []]: neither is a str.
    async with peer.opened() as session:
        await session.send_record(b"\x92\x05\xc0")
        await peer.expect_refusal(session, "a goodbye whose reason is nil")
    await refuse_record(peer, b"\x92\x05\x90", "a goodbye whose reason is an array")


@case("6", "record: trailing bytes after the record are refused")
async def case_trailing_bytes(peer: Peer) -> None:
    await refuse_record(peer, lambda s: pack(ping(s)) + b"\x00", "a ping followed by a byte")


# --- section 7: envelopes -----------------------------------------------------------------------


@case("7.3", "envelope: a non-canonical encoding is refused")
async def case_non_canonical(peer: Peer) -> None:
    message = peer.message(peer.next_body("non-canonical"))
    canonical = message.envelope
    seq_at = 1 + 34 + 34  # fixarray, bin8 line_id, bin8 sender
    # The smallest form that fits is canonical; uint64 (cf) is the widest and never is for a
    # seq this small.
    width = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}.get(canonical[seq_at], 1)
    envelope = canonical[:seq_at] + b"\xcf" + message.seq.to_bytes(8, "big") + \
        canonical[seq_at + width:]
    signature = peer.identity.sign(DOMAIN_MESSAGE + envelope)
    await refuse_message(peer, envelope, signature, "seq encoded as uint16")


@case("7.3", "envelope: a wrong line id is refused")
async def case_wrong_line(peer: Peer) -> None:
    envelope = pack([bytes(32), peer.identity.public_key.raw, peer.seq + 1, time.time_ns(),
                     peer.head, peer.next_body("wrong line")])
    signature = peer.identity.sign(DOMAIN_MESSAGE + envelope)
    await refuse_message(peer, envelope, signature, "a message of another line")


@case("8", "message: a bad signature is refused")
async def case_bad_signature(peer: Peer) -> None:
    message = peer.message(peer.next_body("bad signature"))
    signature = bytes([message.signature[0] ^ 1]) + message.signature[1:]
    await refuse_message(peer, message.envelope, signature, "a flipped signature bit")


@case("8", "message: a signature by another key is refused")
async def case_other_signer(peer: Peer) -> None:
    message = peer.message(peer.next_body("signed by a stranger"))
    signature = STRANGER.sign(DOMAIN_MESSAGE + message.envelope)
    await refuse_message(peer, message.envelope, signature, "a stranger's signature")


@case("7.3", "envelope: a reflected receipt (the implementation's own) is refused")
async def case_reflected_receipt(peer: Peer) -> None:
    if not peer.their_receipts:
        raise CaseFailed("the implementation has sent no receipt to reflect")
    envelope, signature = peer.their_receipts[-1]
    await refuse_record(peer, [T_RECEIPT, envelope, signature], "its own receipt sent back")


@case("7.3", "envelope: a reflected message (the implementation's own) is refused")
async def case_reflected_message(peer: Peer) -> None:
    need_their_messages(peer, 1)
    envelope, signature = peer.their_messages[max(peer.their_messages)]
    await refuse_message(peer, envelope, signature, "its own message sent back")


# --- section 8: sequencing -------------------------------------------------------------------


@case("8", "message: a gap in seq is refused")
async def case_gap(peer: Peer) -> None:
    # prev names the head the implementation holds, so that only the gap is wrong.
    message = peer.message(peer.next_body("gap"), seq=peer.seq + 2, prev=peer.head)
    await refuse_message(peer, message.envelope, message.signature,
                         "message S + 2 linked to message S")


@case("8", "message: a wrong prev is refused")
async def case_wrong_prev(peer: Peer) -> None:
    message = peer.message(peer.next_body("wrong prev"), prev=random_bytes(32))
    await refuse_message(peer, message.envelope, message.signature,
                         "a message whose prev is not the chain head")


@case("8", "message: a fork (same seq, other content) is refused")
async def case_fork(peer: Peer) -> None:
    if peer.seq < 1:
        raise CaseFailed("no message was delivered before")
    message = peer.message(peer.next_body("fork"), seq=peer.seq,
                           prev=peer.hashes.get(peer.seq - 1, random_bytes(32)))
    await refuse_message(peer, message.envelope, message.signature,
                         "another message with the last delivered seq")


@case("8", "message: a repeat inside one connection is refused")
async def case_repeat_inside(peer: Peer) -> None:
    async with peer.opened() as session:
        message = peer.message(peer.next_body("sent twice"))
        await peer.send_message(session, message)
        peer.commit(message)
        await peer.await_delivered(session, message.seq, message.hash)
        await peer.send_message(session, message)
        await peer.expect_refusal(session, "the same message twice in one connection")


# --- section 8.1: bursts ---------------------------------------------------------------------


def burst(peer: Peer, count: int, tag: str) -> list[Any]:
    """``count`` linked messages after the honest head (not committed)."""
    messages = []
    prev, seq = peer.head, peer.seq
    for index in range(count):
        seq += 1
        message = peer.message(peer.next_body(f"{tag} {index + 1}"), seq=seq, prev=prev)
        prev = message.hash
        messages.append(message)
    return messages


async def deliver_burst(peer: Peer, session: Session, messages: list[Any]) -> None:
    """Send ``messages`` as one burst (only the last signed) and wait until the delivered
    receipt covers them all."""
    for message in messages[:-1]:
        await peer.send_message(session, message, signature=b"")
    await peer.send_message(session, messages[-1])
    for message in messages:
        peer.commit(message)
    await peer.await_delivered(session, peer.seq, peer.head)


async def send_unsigned(peer: Peer, session: Session, messages: list[Any]) -> None:
    """Send ``messages`` without their signatures, as messages the implementation must not
    deliver (each marked hostile until something covers it)."""
    for message in messages:
        peer.hostile[message.hash] = message.seq
        await peer.send_message(session, message, signature=b"")


@case("8.1", "burst: an unsigned run covered by a signature is accepted")
async def case_burst_accepted(peer: Peer) -> None:
    messages = burst(peer, 4, "burst")
    async with peer.opened() as session:
        await deliver_burst(peer, session, messages)
        await peer.goodbye(session)


@case("8.1", "burst: an unsigned run cut by the end of a connection is not delivered")
async def case_burst_cut(peer: Peer) -> None:
    messages = burst(peer, 3, "cut burst")
    async with peer.opened() as session:
        await send_unsigned(peer, session, messages[:-1])
        await session.send_ping()
        await trio.sleep(0.2)
        await peer.goodbye(session)
    async with peer.opened() as session:
        # Section 8: the run is resent with the signature that covers it.
        await deliver_burst(peer, session, messages)
        await peer.goodbye(session)


@case("8.1", "burst: an unsigned run covered by a bad signature is refused")
async def case_burst_bad_signature(peer: Peer) -> None:
    messages = burst(peer, 4, "badly covered burst")
    async with peer.opened() as session:
        await send_unsigned(peer, session, messages[:-1])
        last = messages[-1]
        peer.hostile[last.hash] = last.seq
        await peer.send_message(session, last, signature=bytes([last.signature[0] ^ 1])
                                + last.signature[1:])
        await peer.expect_refusal(session, "a burst whose signature does not verify")


@case("8.1", "burst: an unsigned run over the bound is refused")
async def case_burst_over_bound(peer: Peer) -> None:
    messages = burst(peer, DEFAULT_MAX_UNSIGNED_RUN + 1, "overlong run")
    async with peer.opened() as session:
        await send_unsigned(peer, session, messages)
        await peer.expect_refusal(session, f"{len(messages)} unsigned messages in a row")


# --- section 9.2: receipts -------------------------------------------------------------------


def their_receipt(peer: Peer, kind: str, upto: int, head: bytes,
                  signer: Identity | None = None) -> list[Any]:
    envelope = forged_receipt_envelope(peer, kind, upto, head)
    return [T_RECEIPT, envelope, sign_receipt_envelope(signer or peer.identity, envelope)]


@case("9.2", "receipt: upto beyond what was sent is refused")
async def case_receipt_beyond(peer: Peer) -> None:
    upto = peer.their_seq + 1
    await refuse_record(peer, their_receipt(peer, "delivered", upto, random_bytes(32)),
                        f"a delivered receipt for message {upto}, never sent")


@case("9.2", "receipt: a bad signature is refused")
async def case_receipt_bad_signature(peer: Peer) -> None:
    need_their_messages(peer, 1)
    record = their_receipt(peer, "delivered", peer.their_seq, peer.their_head)
    record[2] = bytes([record[2][0] ^ 1]) + record[2][1:]
    await refuse_record(peer, record, "a receipt with a flipped signature bit")


@case("9.2", "receipt: a signature by another key is refused")
async def case_receipt_other_signer(peer: Peer) -> None:
    need_their_messages(peer, 1)
    record = their_receipt(peer, "delivered", peer.their_seq, peer.their_head, STRANGER)
    await refuse_record(peer, record, "a receipt signed by a stranger")


@case("9.2", "receipt: a wrong head is refused")
async def case_receipt_wrong_head(peer: Peer) -> None:
    need_their_messages(peer, 1)
    record = their_receipt(peer, "delivered", peer.their_seq, random_bytes(32))
    await refuse_record(peer, record, "a delivered receipt naming a head never sent")


# --- section 11: heartbeats ------------------------------------------------------------------


@case("11", "heartbeat: a ping asking for an interval of 0 is refused")
async def case_ping_interval_zero(peer: Peer) -> None:
    await refuse_record(peer, lambda s: ping(s, interval_us=0), "a ping with interval_us 0")


@case("11", "heartbeat: ping ids that do not increase are refused")
async def case_ping_id_repeat(peer: Peer) -> None:
    async with peer.opened() as session:
        record = ping(session)
        await session.send_record(record)
        await session.send_record(record)
        await peer.expect_refusal(session, "the same ping id twice")


@case("11", "heartbeat: an echo of a ping never sent is refused")
async def case_ping_echo_unsent(peer: Peer) -> None:
    await refuse_record(peer, lambda s: ping(s, echo=1_000_000),
                        "a ping echoing ping 1000000")


@case("11", "heartbeat: the implementation pings at the interval asked, and no faster")
async def case_ping_pacing(peer: Peer) -> None:
    asked_us = 100_000
    window = 2.0
    async with peer.opened() as session:
        await session.send_ping(interval_us=asked_us)
        await trio.sleep(0)
        times: list[float] = []

        async def keepalive() -> None:
            while True:
                await trio.sleep(asked_us / 1e6)
                await session.send_ping(interval_us=asked_us)

        ended = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keepalive)
            with trio.move_on_after(window + 0.5):
                while True:
                    record = await session.record()
                    if record is None:
                        ended = True
                        break
                    await peer.handle(session, record)
                    if record[0] == T_PING:
                        times.append(trio.current_time())
            nursery.cancel_scope.cancel()
        # Raised out here: an exception inside the nursery would come out in a group.
        if ended:
            raise CaseFailed("the implementation closed the connection")
        await peer.goodbye(session)
    # Half a second to take the new interval into account, then count.
    counted = [t for t in times if t >= times[0] + 0.5] if times else []
    expected = window / (asked_us / 1e6)
    # Generous bounds, as timers on a loaded machine are late, but tight enough to catch a
    # side that ignores the request (2 pings) or answers every ping of ours (about 40).
    if not expected / 2 <= len(counted) <= expected * 1.5 + 2:
        raise CaseFailed(f"asked for a ping every {asked_us // 1000} ms, it sent {len(counted)} "
                         f"in {window:g} s (expected about {expected:.0f}; section 11: at its "
                         f"interval, never in answer to a ping)")


@case("11", "heartbeat: silence makes the implementation end the connection")
async def case_silence_down(peer: Peer) -> None:
    session = await peer.session()
    try:
        flight = await peer.first_flight(session)
        interval = max(r[4] for r in flight if r[0] == T_PING) / 1e6
        # Down after heartbeat_interval x heartbeat_multiplier (3 by default); allow twice.
        limit = 6 * interval + 1.0
        start = trio.current_time()
        with trio.move_on_after(limit):
            while True:
                record = await session.record()
                if record is None:
                    return
        raise CaseFailed(f"the connection was still open {trio.current_time() - start:.1f} s "
                         f"into the suite's silence (its ping interval: {interval:g} s)")
    finally:
        await session.aclose()


# --- section 12: closing, section 10: replacement ------------------------------------------------


@case("12", "goodbye: a goodbye ends the connection")
async def case_goodbye(peer: Peer) -> None:
    async with peer.opened() as session:
        await session.send_record([T_GOODBYE, "conformance: goodbye"])
        # Not a refusal, but observable the same way: the connection ends.
        await peer.expect_refusal(session, "a goodbye", goodbye_allowed=True)


@case("10", "resume: a newer connection replaces the live one", frozenset({CONNECT}))
async def case_replaced(peer: Peer) -> None:
    old = await peer.session()
    try:
        await peer.first_flight(old)
        async with peer.opened() as new:
            reason = None
            with trio.move_on_after(REFUSAL_TIMEOUT):
                while True:
                    record = await old.record()
                    if record is None:
                        break
                    if record[0] == T_GOODBYE:
                        reason = record[1]
            if not old.closed:
                raise CaseFailed("the older connection stayed open beside the newer one")
            if reason != "replaced by a newer connection":
                raise CaseFailed(f"the older connection ended with goodbye {reason!r}, not "
                                 f"'replaced by a newer connection'")
            await peer.exchange(new, "on the newer connection")
            await peer.goodbye(new)
    finally:
        await old.aclose()
