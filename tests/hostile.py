"""A byte-level harness that plays a malicious or broken hotline peer over real TCP.

In the spirit of BoringSSL's test runner "shim": the node under test is a real
:func:`hotline.open_line` line listening on ``127.0.0.1`` (its own port, or a shared
:func:`hotline.open_listener`), and the attacker is a raw trio TCP client that writes
whatever bytes it likes. The pieces:

- :func:`initiation` / :class:`HostileSession`: a Noise IK initiator built from the
  primitives in ``hotline.protocol._noise`` (not from :class:`hotline.Connection`), so every byte
  after the handshake is under the test's control: transport plaintexts with any flags,
  length, content and padding; records split anywhere; signed envelopes made with
  :func:`hotline.sign_message` / :func:`hotline.sign_receipt` by any identity.
  Holding the legitimate peer's identity it can misbehave *after* authenticating.
- the relay between a real initiator and a real responder is
  :class:`hotline.testing.FaultProxy` with ``frames=True``: it records every frame of every
  connection and lets a hook drop, replace or insert frames (replays from earlier sessions,
  reflections), or takes the connection over entirely (a man in the middle with a key of its
  own).
- :func:`open_node`, :func:`exchange_with_real_peer`: the node under test and the check
  that, after an attack, it still serves its real peer (a real second line connects and a
  message goes each way with both receipts).
- :class:`FrameReader` (from :mod:`hotline.conformance`, which plays hostile peers against
  any implementation): a stream cut into frames.
- :func:`wait_for_log`, :class:`MemoryProbe`: observation (the ``hotline`` logger) and
  bounded memory (``tracemalloc`` peak growth around an attack).

Import it as ``import hostile`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import trio

from hotline import (
    PROTOCOL_NAME,
    Config,
    Identity,
    MemoryStore,
    PublicKey,
    Receipt,
    ReceiptKind,
    SignedMessage,
    line_id,
    open_line,
    open_listener,
    sign_message,
    sign_receipt,
)
from hotline.conformance import FrameReader
from hotline.driver import Line, Listener
from hotline.protocol import (
    DOMAIN_MESSAGE,
    DOMAIN_RECEIPT,
    MAX_CONTENT,
    T_MESSAGE,
    T_PING,
    T_RECEIPT,
    CipherState,
    HandshakeState,
    handshake_prologue,
    pack,
)
from hotline.protocol import (
    FLAG_FINAL as FINAL,
)
from hotline.protocol import (
    FLAG_REKEY as REKEY,
)
from hotline.store import Batch
from hotline.testing import FaultProxy, frame, open_fault_proxy, transport_plaintext

#: The legitimate caller, whose identity the attacker holds for authenticated misbehaviour.
ALICE = Identity.from_seed(bytes([0xA1]) * 32, "alice")
#: The node under attack.
BOB = Identity.from_seed(bytes([0xB0]) * 32, "bob")
#: A stranger nobody pinned.
MALLORY = Identity.from_seed(bytes([0x3C]) * 32, "mallory")

LOOPBACK = "127.0.0.1"


Address = tuple[str, int]


def now_ns() -> int:
    return time.time_ns()


# --- the hostile initiator -------------------------------------------------------------


def initiation(
    identity: Identity,
    responder: PublicKey,
    timestamp: int | None = None,
    *,
    payload: bytes | None = None,
) -> tuple[HandshakeState, bytes]:
    """A fresh IK initiator and its framed message 1 (payload ``[timestamp, its key]`` by
    default)."""
    handshake = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=handshake_prologue(responder),
        s=identity.x25519_private, rs=responder.x25519,
    )
    if payload is None:
        payload = pack([timestamp if timestamp is not None else now_ns(),
                        identity.public_key.raw])
    return handshake, frame(handshake.write_message(payload))


async def connect(address: Address, source: str | None = None) -> trio.SocketStream:
    """A TCP connection to ``address``, from the loopback address ``source`` if given.

    The listener rate-limits handshakes per source address; every address in 127.0.0.0/8 is
    local on Linux, so a flood from many sources needs no setup (see :func:`source`).
    """
    return await trio.open_tcp_stream(*address, local_address=source)


def source(index: int) -> str:
    """The ``index``-th of many distinct loopback source addresses (127.0.x.y, never .1)."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def many_sources() -> bool:
    """Whether this system can bind 127.0.x.y source addresses (Linux can; macOS by default
    has only 127.0.0.1)."""
    try:
        with socket.socket() as sock:
            sock.bind((source(0), 0))
    except OSError:
        return False
    return True


class HostileSession:
    """An authenticated connection to the node, held by an attacker with a real key.

    Everything it sends is built by hand: :meth:`send_plaintext` encrypts any plaintext
    under the next nonce, :meth:`send_record` splits a record into FINAL-terminated pieces.
    :meth:`record` decrypts the node's frames (following its REKEY flags) and reassembles
    its records.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        reader: FrameReader,
        identity: Identity,
        peer: PublicKey,
        send: CipherState,
        recv: CipherState,
        timestamp: int,
    ) -> None:
        self.stream = stream
        self.reader = reader
        self.identity = identity
        self.peer = peer
        self.send = send
        self.recv = recv
        self.timestamp = timestamp
        self.line_id = line_id(identity.public_key, peer)
        self.partial = bytearray()
        self.ping_id = 0

    @classmethod
    async def open(
        cls,
        address: Address,
        identity: Identity = ALICE,
        peer: PublicKey | None = None,
        *,
        timestamp: int | None = None,
        timeout: float = 10.0,
        source: str | None = None,
    ) -> HostileSession:
        peer = peer if peer is not None else BOB.public_key
        timestamp = timestamp if timestamp is not None else now_ns()
        stream = await connect(address, source)
        reader = FrameReader(stream)
        handshake, hello = initiation(identity, peer, timestamp)
        with trio.fail_after(timeout):
            await stream.send_all(hello)
            response = await reader.frame()
        if response is None:
            await stream.aclose()
            raise ConnectionError("the node answered the initiation with silence")
        payload = handshake.read_message(response)
        assert payload == b""
        send, recv = handshake.split()
        return cls(stream, reader, identity, peer, send, recv, timestamp)

    # --- sending ---------------------------------------------------------------------

    def seal(self, plain: bytes) -> bytes:
        """``plain`` as this session's next framed transport message (nonce consumed)."""
        return frame(self.send.encrypt_with_ad(b"", plain))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_plaintext(self, plain: bytes) -> None:
        await self.send_raw(self.seal(plain))

    def record_frames(
        self, record: bytes, *, piece: int = MAX_CONTENT, final: bool = True
    ) -> bytes:
        """``record`` cut into pieces of ``piece`` bytes, sealed; FINAL on the last if asked."""
        out = bytearray()
        offset = 0
        while True:
            chunk = record[offset : offset + piece]
            offset += len(chunk)
            last = offset >= len(record)
            out += self.seal(transport_plaintext(FINAL if last and final else 0, chunk))
            if last:
                return bytes(out)

    async def send_record(self, record: list[Any] | bytes, **kwargs: Any) -> None:
        data = record if isinstance(record, bytes) else pack(record)
        await self.send_raw(self.record_frames(data, **kwargs))

    # --- statements ------------------------------------------------------------------

    def message(
        self,
        seq: int,
        body: bytes,
        prev: bytes,
        *,
        signer: Identity | None = None,
        timestamp: int | None = None,
    ) -> SignedMessage:
        """A message envelope for this line (signed by ``signer``, this identity by default)."""
        return sign_message(
            signer or self.identity, self.line_id, seq,
            timestamp if timestamp is not None else now_ns(), prev, body,
        )

    def receipt(self, kind: ReceiptKind, upto: int, head: bytes) -> Receipt:
        return sign_receipt(self.identity, self.line_id, kind, upto, head, now_ns())

    def forged_message(self, seq: int, body: bytes, prev: bytes, *, sender: PublicKey,
                       signer: Identity) -> tuple[bytes, bytes]:
        """``(envelope, signature)``: an envelope naming ``sender``, signed by ``signer``."""
        envelope = pack([self.line_id, sender.raw, seq, now_ns(), prev, body])
        return envelope, signer.sign(DOMAIN_MESSAGE + envelope)

    def forged_receipt(self, kind: ReceiptKind, upto: int, head: bytes, *, signer_key: PublicKey,
                       signer: Identity) -> tuple[bytes, bytes]:
        envelope = pack([self.line_id, signer_key.raw, kind.value, upto, head, now_ns()])
        return envelope, signer.sign(DOMAIN_RECEIPT + envelope)

    async def send_message(self, message: SignedMessage, *, signature: bytes | None = None) -> None:
        sig = message.signature if signature is None else signature
        await self.send_record([T_MESSAGE, message.envelope, sig])

    async def send_receipt(self, receipt: Receipt, *, signature: bytes | None = None) -> None:
        sig = receipt.signature if signature is None else signature
        await self.send_record([T_RECEIPT, receipt.envelope, sig])

    # --- receiving -------------------------------------------------------------------

    async def record(self) -> list[Any] | None:
        """The node's next record, decoded; None once it closed the stream."""
        while True:
            message = await self.reader.frame()
            if message is None:
                return None
            plain = self.recv.decrypt_with_ad(b"", message)
            flags, length = plain[0], int.from_bytes(plain[1:3], "big")
            if flags & REKEY:
                self.recv.rekey()
            self.partial += plain[3 : 3 + length]
            if flags & FINAL:
                data = bytes(self.partial)
                self.partial.clear()
                return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]

    async def records_until(
        self, predicate: Callable[[list[Any]], bool], *, timeout: float = 10.0
    ) -> list[list[Any]]:
        """Read records until one satisfies ``predicate`` (a ping of ours for each of the
        node's, so that it keeps hearing from us)."""
        seen: list[list[Any]] = []
        with trio.fail_after(timeout):
            while True:
                record = await self.record()
                if record is None:
                    raise ConnectionError(f"the node closed the stream; records: {seen}")
                seen.append(record)
                if record[0] == T_PING:
                    self.ping_id += 1
                    await self.send_record([T_PING, self.ping_id, record[1], 0, 1_000_000])
                if predicate(record):
                    return seen

    async def first_flight(self, *, timeout: float = 10.0) -> list[list[Any]]:
        """The node's first flight: its receipts and pending messages, up to its first ping."""
        return await self.records_until(lambda r: r[0] == T_PING, timeout=timeout)

    async def closed_by_node(self, *, timeout: float = 10.0) -> bytes:
        """Wait for the node to close the stream; return what it sent meanwhile (raw)."""
        with trio.fail_after(timeout):
            return await self.reader.until_eof()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def chain(session: HostileSession, bodies: list[bytes], *, start: int = 1,
          prev: bytes = bytes(32)) -> list[SignedMessage]:
    """Consecutive, correctly linked messages ``start, start + 1, ...`` by the session's key."""
    messages = []
    for offset, body in enumerate(bodies):
        message = session.message(start + offset, body, prev)
        prev = message.hash
        messages.append(message)
    return messages


# --- the node under test --------------------------------------------------------------


@dataclass
class Node:
    line: Line
    address: Address
    listener: Listener | None
    store: Any


@asynccontextmanager
async def open_node(
    *,
    identity: Identity = BOB,
    peer: PublicKey | None = None,
    store: Any = None,
    config: Config | None = None,
    shared_listener: bool = False,
    connect: Address | None = None,
) -> AsyncIterator[Node]:
    """A real node: ``open_line(..., listen=(127.0.0.1, 0))``, or a line on a shared
    :func:`open_listener` (which exposes ``pending_handshakes`` and ``rejected_handshakes``)."""
    peer = peer if peer is not None else ALICE.public_key
    store = store if store is not None else MemoryStore()
    if shared_listener:
        async with open_listener(identity, LOOPBACK, 0, config=config) as listener, open_line(
            identity, peer, store=store, listener=listener, config=config, connect=connect,
        ) as line:
            yield Node(line, listener.addresses[0], listener, store)
    else:
        async with open_line(
            identity, peer, store=store, listen=(LOOPBACK, 0), config=config, connect=connect,
        ) as line:
            yield Node(line, line.listen_addresses[0], None, store)


def seeded_store(
    identity: Identity,
    peer: PublicKey,
    sent: list[SignedMessage] = (),  # type: ignore[assignment]
    *,
    received: list[SignedMessage] = (),  # type: ignore[assignment]
    own_receipts: list[Receipt] = (),  # type: ignore[assignment]
) -> MemoryStore:
    """A store for the real peer that already holds what the attacker did in its name.

    When the attacker (holding the real key) got messages or receipts accepted by the node,
    the real peer's store must agree, or its next connection would fork the chain: the
    attacker is, in effect, a broken build of the real peer, and this is its state.
    """
    store = MemoryStore()
    store.load(identity.public_key, peer)
    batch = Batch(sent=list(sent), received=list(received), own_receipts=list(own_receipts))
    if batch:
        store.commit(batch)
    return store


async def receive_body(line: Line, body: bytes, *, timeout: float = 20.0) -> int:
    """Receive (and acknowledge) messages until one has ``body``; return how many came."""
    count = 0
    with trio.fail_after(timeout):
        while True:
            message = await line.receive()
            message.ack()
            count += 1
            if message.body == body:
                return count


async def exchange(real: Line, node: Line, *, tag: str = "after", timeout: float = 30.0) -> None:
    """One message each way between two live lines, each with both of its receipts."""
    there = f"{tag}: real peer to node".encode()
    back = f"{tag}: node to real peer".encode()
    with trio.fail_after(timeout):
        outgoing = await real.send(there)
        await receive_body(node, there)
        await outgoing.delivered()
        await outgoing.acknowledged()
        reply = await node.send(back)
        await receive_body(real, back)
        await reply.delivered()
        await reply.acknowledged()


async def exchange_with_real_peer(
    node: Node,
    *,
    identity: Identity = ALICE,
    store: Any = None,
    config: Config | None = None,
    connect: Address | None = None,
    tag: str = "after",
    timeout: float = 30.0,
) -> Line:
    """A real second line connects to ``node``; one message goes each way, each with its
    delivered and acknowledged receipts. Returns the (closed) real line, for its stats."""
    store = store if store is not None else MemoryStore()
    with trio.fail_after(timeout):
        async with open_line(
            identity, node.line.identity.public_key, store=store,
            connect=connect or node.address, config=config,
        ) as real:
            await exchange(real, node.line, tag=tag, timeout=timeout)
    return real


# --- the relay ------------------------------------------------------------------------

#: The directions of a relayed connection (:class:`hotline.testing.FaultProxy`): what the
#: caller (alice) sends, and what comes back.
A2B, B2A = "upstream", "downstream"


def open_relay(target: Address) -> AbstractAsyncContextManager[FaultProxy]:
    """A relay in front of ``target`` that reads both directions as frames."""
    return open_fault_proxy(*target, frames=True)


# --- observation ------------------------------------------------------------------------


def hotline_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("hotline")]


async def wait_for_log(
    caplog: pytest.LogCaptureFixture, pattern: str, *, timeout: float = 10.0
) -> re.Match[str]:
    """Wait until a ``hotline`` log message matches ``pattern`` (``re.search``)."""
    regex = re.compile(pattern)
    with trio.move_on_after(timeout):
        while True:
            for text in hotline_messages(caplog):
                match = regex.search(text)
                if match:
                    return match
            await trio.sleep(0.01)
    raise AssertionError(
        f"no hotline log matched {pattern!r} within {timeout} s; got:\n  "
        + "\n  ".join(hotline_messages(caplog))
    )


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0,
                     what: str = "condition") -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"{what} did not hold within {timeout} s")


class MemoryProbe:
    """``tracemalloc`` around an attack: ``peak`` and ``current`` growth in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self.current = 0

    def __str__(self) -> str:
        return f"peak +{self.peak / 1024:.0f} KiB, retained +{self.current / 1024:.0f} KiB"


@contextlib.contextmanager
def memory_probe() -> Iterator[MemoryProbe]:
    probe = MemoryProbe()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield probe
    finally:
        current, peak = tracemalloc.get_traced_memory()
        probe.peak = peak - base
        probe.current = current - base
        if not was_tracing:
            tracemalloc.stop()
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        print(f"memory {test}: {probe}")  # shown by pytest -s


def capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hotline")
