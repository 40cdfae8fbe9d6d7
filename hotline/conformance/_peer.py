"""The honest peer the suite plays, and what every case uses to judge the implementation.

The suite holds one end of a line (its own key, the implementation's pinned public key) and
keeps that end's state in memory for the whole run: the sequence number and chain head of its
own direction, what it received of the implementation's direction, and the initiation
timestamps it used. It learns nothing from the implementation but what crosses the wire, so
it can test any implementation of docs/protocol.md.

Judging rests on three observations, each defined by the specification:

- *refused*: after a bad input the implementation ends the connection without a goodbye
  (section 14.2: it produces nothing more and closes the stream). While it waits, the suite
  keeps sending valid pings, so that a peer that ignored the bad input has no reason to close
  (a silent suite would be declared down, section 11, and look like a refusal);
- *not delivered*: the delivered receipt the implementation sends at the start of every
  connection (section 10) never covers a message the suite sent to be refused;
- *still usable*: a fresh honest connection exchanges a message and its delivered receipt.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import trio

from .._errors import HotlineError
from .._keys import Identity, PublicKey
from .._keys import line_id as compute_line_id
from ..protocol import (
    DOMAIN_RECEIPT,
    GENESIS_HEAD,
    PROTOCOL_NAME,
    HandshakeState,
    ReceiptKind,
    SignedMessage,
    handshake_prologue,
    pack,
    sign_message,
    sign_receipt,
)
from ._wire import (
    FrameReader,
    InitiationClock,
    Session,
    frame,
    initiation_payload,
    initiator_handshake,
    message_hash,
)

__all__ = ["CaseFailed", "CaseSkipped", "Peer", "unpack_envelope"]


#: How long an implementation may take to end a connection after a bad input.
REFUSAL_TIMEOUT = 5.0
#: How long any one exchange (a handshake, a receipt) may take.
STEP_TIMEOUT = 10.0
#: The suite's own heartbeat while it waits, well under any sensible ping interval.
KEEPALIVE = 0.2
#: The least time between two of the suite's calls. A listener may limit handshakes per
#: source address and per key (hotline: 20 a second, bursts of 5), and a call refused for
#: that looks exactly like a refused key.
DIAL_SPACING = 0.15

T_MESSAGE, T_RECEIPT, T_PING, T_GOODBYE = 1, 2, 3, 5


class CaseFailed(Exception):
    """The implementation did not do what the cited section says."""


class CaseSkipped(Exception):
    """The case cannot run against this implementation as it is (it says why)."""


class DialledAndClosed(CaseFailed):
    """A call from the implementation ended before its first handshake message."""


Address = tuple[str, int]


class Peer:
    """The suite's end of the line, over TCP, as initiator (``connect``) or responder
    (``listener``)."""

    def __init__(self, identity: Identity, implementation: PublicKey, *,
                 connect: Address | None = None,
                 incoming: trio.MemoryReceiveChannel[trio.SocketStream] | None = None) -> None:
        if (connect is None) == (incoming is None):
            raise ValueError("give exactly one of connect and incoming")
        self.identity = identity
        self.implementation = implementation
        self.connect_address = connect
        self.incoming = incoming
        self.line_id = compute_line_id(identity.public_key, implementation)
        self.clock = InitiationClock()
        # Our direction: the honest chain so far, and the hashes of the messages sent to be
        # refused, so that a receipt naming one can be told from one naming nothing we sent.
        self.seq = 0
        self.head = GENESIS_HEAD
        self.hashes: dict[int, bytes] = {0: GENESIS_HEAD}
        self.sent: dict[int, SignedMessage] = {}
        self.hostile: dict[bytes, int] = {}
        # The implementation's direction, as received.
        self.their_seq = 0
        self.their_head = GENESIS_HEAD
        self.their_messages: dict[int, tuple[bytes, bytes]] = {}
        self.their_receipts: list[tuple[bytes, bytes]] = []
        self.receipted_upto = 0
        self.hold_receipts = False
        self.adopted = False
        self.counter = 0
        self.last_dial = -math.inf
        self.last_initiation = b""

    @property
    def initiator(self) -> bool:
        return self.connect_address is not None

    # --- connections ------------------------------------------------------------------

    async def raw_stream(self) -> trio.SocketStream:
        """A new TCP connection: dialled, or the next one the implementation made."""
        with trio.fail_after(STEP_TIMEOUT):
            if self.connect_address is not None:
                await trio.sleep_until(self.last_dial + DIAL_SPACING)
                self.last_dial = trio.current_time()
                return await trio.open_tcp_stream(*self.connect_address)
            assert self.incoming is not None
            return await self.incoming.receive()

    async def initiate(self, stream: trio.SocketStream) -> Session:
        """Complete a handshake as initiator (its message 1 kept in ``last_initiation``)."""
        handshake = initiator_handshake(self.identity, self.implementation)
        hello = frame(handshake.write_message(
            initiation_payload(self.identity, self.clock.next())))
        self.last_initiation = hello
        reader = FrameReader(stream)
        with trio.fail_after(STEP_TIMEOUT):
            await stream.send_all(hello)
            response = await reader.frame()
        if response is None:
            raise CaseFailed("the implementation closed the connection instead of answering "
                             "an honest handshake (section 4.3)")
        if handshake.read_message(response) != b"":
            raise CaseFailed("message 2 carried a payload (section 4.4)")
        send, recv = handshake.split()
        return Session(stream, reader, send, recv)

    async def respond(self, stream: trio.SocketStream, *,
                      message2: Callable[[bytes], bytes] | None = None,
                      payload: bytes = b"") -> Session:
        """Complete a handshake as responder; ``message2`` may rewrite the answer."""
        reader = FrameReader(stream)
        with trio.fail_after(STEP_TIMEOUT):
            first = await reader.frame()
        if first is None:
            raise DialledAndClosed("the implementation dialled and closed without a handshake")
        handshake = HandshakeState(
            PROTOCOL_NAME, initiator=False,
            prologue=handshake_prologue(self.identity.public_key),
            s=self.identity.x25519_private,
        )
        initiation = handshake.read_message(first)
        if handshake.remote_static != self.implementation.x25519:
            raise CaseFailed("message 1 came from a key the suite does not know")
        fields = msgpack.unpackb(initiation, raw=False)
        if not isinstance(fields, list) or len(fields) != 2 \
                or fields[1] != self.implementation.raw:
            raise CaseFailed("message 1's payload is not [timestamp, initiator key] "
                             "(section 4.2)")
        answer = frame(handshake.write_message(payload))
        if message2 is not None:
            answer = message2(answer)
        await stream.send_all(answer)
        recv, send = handshake.split()[::-1]
        return Session(stream, reader, send, recv)

    async def session(self) -> Session:
        """An honest, authenticated connection in the suite's role."""
        for _attempt in range(3):
            stream = await self.raw_stream()
            try:
                if self.initiator:
                    return await self.initiate(stream)
                return await self.respond(stream)
            except DialledAndClosed:
                # A call that waited in the queue past the implementation's own handshake
                # timeout; it calls again.
                await trio.aclose_forcefully(stream)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        raise CaseFailed("the implementation's calls closed before their handshake, 3 times")

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[Session]:
        """An honest session whose first flight (section 10) has been read."""
        session = await self.session()
        try:
            await self.first_flight(session)
            yield session
        finally:
            await session.aclose()

    # --- reading like an honest peer -------------------------------------------------------

    async def handle(self, session: Session, record: list[Any]) -> None:
        """What an honest peer does with each record: answer nothing to pings (our own
        keep-alive pings them), hold the implementation's messages and receipt them."""
        kind = record[0]
        if kind == T_MESSAGE and len(record) == 3:
            envelope, signature = record[1], record[2]
            fields = unpack_envelope(envelope)
            seq = fields[2]
            self.their_messages[seq] = (envelope, signature)
            if seq == self.their_seq + 1 or (self.their_seq == 0 and seq > 0):
                self.their_seq = seq
                self.their_head = message_hash(envelope)
            if signature and not self.hold_receipts and self.their_seq > self.receipted_upto:
                await self.send_receipts(session)
        elif kind == T_RECEIPT and len(record) == 3:
            self.their_receipts.append((record[1], record[2]))
            fields = unpack_envelope(record[1])

    async def send_receipts(self, session: Session) -> None:
        upto, head = self.their_seq, self.their_head
        for kind in (ReceiptKind.DELIVERED, ReceiptKind.ACKNOWLEDGED):
            receipt = sign_receipt(self.identity, self.line_id, kind, upto, head, time.time_ns())
            await session.send_record([T_RECEIPT, receipt.envelope, receipt.signature])
        self.receipted_upto = upto

    async def read_until(self, session: Session, predicate: Callable[[list[Any]], bool], *,
                         timeout: float = STEP_TIMEOUT, what: str = "a record"
                         ) -> list[list[Any]]:
        """Records until one satisfies ``predicate``, answering pings with ours."""
        seen: list[list[Any]] = []
        with trio.move_on_after(timeout):
            while True:
                record = await session.record()
                if record is None:
                    raise CaseFailed(f"the implementation closed the connection while the "
                                     f"suite waited for {what}; it had sent {_kinds(seen)}")
                seen.append(record)
                await self.handle(session, record)
                if record[0] == T_PING:
                    await session.send_ping()
                if predicate(record):
                    return seen
        raise CaseFailed(f"no {what} within {timeout:g} s; the implementation sent "
                         f"{_kinds(seen)}")

    async def read_for(self, session: Session, seconds: float) -> None:
        """Read (and answer) what comes for ``seconds``, as an honest peer."""
        with trio.move_on_after(seconds):
            while (record := await session.record()) is not None:
                await self.handle(session, record)
                if record[0] == T_PING:
                    await session.send_ping()

    async def first_flight(self, session: Session) -> list[list[Any]]:
        """Section 10: receipts and pending messages, up to the first ping. The first time,
        the suite adopts the chain position the implementation's delivered receipt names,
        so a run can follow an earlier one."""
        flight = await self.read_until(session, lambda r: r[0] == T_PING,
                                       what="the first flight (section 10)")
        for record in flight:
            if record[0] != T_RECEIPT:
                continue
            fields = unpack_envelope(record[1])
            if fields[2] != "delivered":
                continue
            upto, head = fields[3], fields[4]
            if not self.adopted and upto > self.seq:
                self.seq, self.head = upto, head
                self.hashes[upto] = head
            elif upto > self.seq:
                self.resync(upto, head)
                raise CaseFailed(f"its delivered receipt covers message {upto}, "
                                 f"{self.describe(head)}")
            elif self.hashes.get(upto) not in (None, head):
                raise CaseFailed(f"its delivered receipt names a head for message {upto} "
                                 f"that the suite never sent")
        self.adopted = True
        return flight

    def describe(self, head: bytes) -> str:
        if head in self.hostile:
            return "which the suite sent to be refused"
        return "with a head the suite never sent"

    def resync(self, upto: int, head: bytes) -> None:
        """After a failure that let a hostile message through, continue the chain from it,
        so that one broken check fails one case and not every case after it."""
        self.seq, self.head = upto, head
        self.hashes[upto] = head

    # --- our direction -----------------------------------------------------------------------

    def next_body(self, tag: str) -> bytes:
        self.counter += 1
        return f"conformance {self.counter}: {tag}".encode()

    def message(self, body: bytes, *, seq: int | None = None, prev: bytes | None = None,
                signer: Identity | None = None) -> SignedMessage:
        """A message of our direction; by default the next honest one (not yet counted)."""
        seq = self.seq + 1 if seq is None else seq
        prev = self.hashes.get(seq - 1, self.head) if prev is None else prev
        return sign_message(signer or self.identity, self.line_id, seq, time.time_ns(),
                            prev, body)

    def commit(self, message: SignedMessage) -> None:
        self.sent[message.seq] = message
        self.seq, self.head = message.seq, message.hash
        self.hashes[message.seq] = message.hash

    async def send_message(self, session: Session, message: SignedMessage, *,
                           signature: bytes | None = None) -> None:
        sig = message.signature if signature is None else signature
        await session.send_record([T_MESSAGE, message.envelope, sig])

    async def await_delivered(self, session: Session, upto: int, head: bytes) -> None:
        """Read until a delivered receipt covers ``upto`` and check it names ``head``."""
        def covers(record: list[Any]) -> bool:
            if record[0] != T_RECEIPT:
                return False
            fields = unpack_envelope(record[1])
            return fields[2] == "delivered" and int(fields[3]) >= upto
        seen = await self.read_until(session, covers, what=f"a delivered receipt for {upto}")
        fields = unpack_envelope(seen[-1][1])
        if fields[3] > upto:
            raise CaseFailed(f"the delivered receipt covers {fields[3]}, beyond the {upto} "
                             f"messages the suite sent honestly")
        if fields[4] != head:
            raise CaseFailed("the delivered receipt names a head the suite never sent")

    async def exchange(self, session: Session, tag: str) -> None:
        """One honest message, and its delivered receipt (section 9)."""
        message = self.message(self.next_body(tag))
        await self.send_message(session, message)
        self.commit(message)
        await self.await_delivered(session, message.seq, message.hash)

    async def goodbye(self, session: Session, reason: str = "conformance: done") -> None:
        await session.send_record([T_GOODBYE, reason])
        await session.aclose()

    async def check_usable(self) -> None:
        """A fresh honest connection: its first flight repeats the delivered receipt without
        any refused message, and one more message is delivered (section 10)."""
        async with self.opened() as session:
            await self.exchange(session, "still usable")
            await self.goodbye(session)

    # --- judging refusals -------------------------------------------------------------------

    async def expect_refusal(self, session: Session, what: str, *,
                             timeout: float = REFUSAL_TIMEOUT,
                             proof_of_life: Callable[[Session], Awaitable[None]] | None = None,
                             goodbye_allowed: bool = False) -> None:
        """Pass when the implementation ends the connection within ``timeout`` while the
        suite keeps it alive (``proof_of_life``, a ping by default); fail when it stays open,
        or receipts something hostile."""
        alive = proof_of_life or (lambda s: s.send_ping())
        ended = False
        failure: CaseFailed | None = None
        seen: list[list[Any]] = []

        async def keepalive(cancel: trio.CancelScope) -> None:
            while not session.closed:
                await trio.sleep(KEEPALIVE)
                await alive(session)
            cancel.cancel()

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keepalive, nursery.cancel_scope)
                while True:
                    record: list[Any] | None = None
                    try:
                        record = await session.record()
                        if record is not None:
                            seen.append(record)
                            self.watch_hostile(record, what, goodbye_allowed=goodbye_allowed)
                    except (HotlineError, ValueError) as exc:
                        failure = CaseFailed(f"after {what}, the implementation sent a frame "
                                             f"the suite cannot read: {exc!r}")
                    except CaseFailed as exc:
                        failure = exc
                    if record is None or failure is not None:
                        ended = record is None
                        nursery.cancel_scope.cancel()
                        break
        # Raised out here: an exception inside the nursery would come out in a group.
        await session.aclose()
        if failure is not None:
            raise failure
        if not ended:
            raise CaseFailed(f"the connection was still open {timeout:g} s after {what}; "
                             f"the implementation sent {_kinds(seen)}")

    def watch_hostile(self, record: list[Any], what: str, *, goodbye_allowed: bool) -> None:
        """Fail on what a refusing implementation must not send."""
        if record[0] == T_GOODBYE and not goodbye_allowed:
            # Section 14.2: a failed connection produces nothing more.
            raise CaseFailed(f"it answered {what} with a goodbye {record[1:]!r}; a failing "
                             f"connection sends none (section 14.2)")
        if record[0] == T_RECEIPT and len(record) == 3:
            fields = unpack_envelope(record[1])
            if fields[3] > self.seq:
                self.resync(fields[3], fields[4])
                raise CaseFailed(f"it sent a {fields[2]} receipt for message {fields[3]}, "
                                 f"{self.describe(fields[4])}")

    async def expect_silence(self, stream: trio.SocketStream, what: str, *,
                             timeout: float = STEP_TIMEOUT + 2) -> None:
        """Section 4.3: a refused handshake gets no answer at all, and the stream ends."""
        received = b""
        ended = False
        with trio.move_on_after(timeout):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    ended = True
                    break
                received += data
        await trio.aclose_forcefully(stream)
        if received:
            raise CaseFailed(f"the implementation answered {what} with {len(received)} bytes "
                             f"(section 4.3: it must send nothing)")
        if not ended:
            raise CaseFailed(f"the connection was still open {timeout:g} s after {what}")


def unpack_envelope(data: bytes) -> list[Any]:
    value = msgpack.unpackb(data, raw=False)
    if not isinstance(value, list) or len(value) != 6:
        raise CaseFailed(f"the implementation sent an envelope that is not 6 fields: {value!r}")
    return value


def _kinds(records: list[list[Any]]) -> str:
    names = {T_MESSAGE: "message", T_RECEIPT: "receipt", T_PING: "ping", T_GOODBYE: "goodbye"}
    if not records:
        return "nothing"
    return ", ".join(names.get(r[0], f"type {r[0]!r}") for r in records[-8:])


def forged_receipt_envelope(peer: Peer, kind: str, upto: int, head: bytes) -> bytes:
    return pack([peer.line_id, peer.identity.public_key.raw, kind, upto, head, time.time_ns()])


def sign_receipt_envelope(identity: Identity, envelope: bytes) -> bytes:
    return identity.sign(DOMAIN_RECEIPT + envelope)


def random_bytes(size: int) -> bytes:
    return os.urandom(size)
