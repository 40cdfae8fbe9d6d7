"""A hand-built peer on the wire: frames, the Noise IK handshake in either role, and a
session whose every transport plaintext the suite chooses.

Frames and plaintexts are those of :mod:`hotline.testing`. Nothing here goes through
:class:`hotline.Connection`: the handshake is driven from the Noise
primitives and records are packed by hand, so a case can put any byte wrong on purpose (a
reserved flag, non-zero padding, a record split anywhere, a signature by the wrong key). The
only hotline code it leans on is what docs/protocol.md specifies byte for byte: the Noise
state machine, the prologue, msgpack packing and the signing of envelopes.

Reading is deliberately lenient (a general msgpack decoder): the suite observes what the
implementation under test sends, it does not test its own parser.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgpack
import trio

from .._keys import Identity, PublicKey
from ..protocol import (
    FLAG_FINAL,
    FLAG_REKEY,
    MAX_CONTENT,
    PROTOCOL_NAME,
    CipherState,
    HandshakeState,
    handshake_prologue,
    pack,
)
from ..testing._wire import frame, transport_plaintext

__all__ = [
    "DOMAIN_MESSAGE_HASH",
    "FrameReader",
    "Session",
    "frame",
    "message_hash",
    "plaintext",
]

DOMAIN_MESSAGE_HASH = b"hotline-v1/message-hash\x00"


def plaintext(flags: int, content: bytes, *, length: int | None = None,
              padding: bytes = b"") -> bytes:
    """Section 5.1: ``flags || length || content || padding``, any part of it wrong if asked."""
    return transport_plaintext(flags, content, length=length, padding=padding)


def message_hash(envelope: bytes) -> bytes:
    """Section 7.1: BLAKE2b-256 of the hash domain and the envelope."""
    return hashlib.blake2b(DOMAIN_MESSAGE_HASH + envelope, digest_size=32).digest()


class FrameReader:
    """Cuts a stream into frames. A reset counts as the end of the stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False
        self.received = 0
        """Bytes read from the stream so far."""

    async def _fill(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
        self.received += len(data)
        self.buffer += data

    async def frame(self) -> bytes | None:
        """The next whole frame's Noise message, or None at the end of the stream."""
        while True:
            if len(self.buffer) >= 2:
                size = int.from_bytes(self.buffer[:2], "big")
                if len(self.buffer) >= 2 + size:
                    message = bytes(self.buffer[2 : 2 + size])
                    del self.buffer[: 2 + size]
                    return message
            if self.eof:
                return None
            await self._fill()

    async def until_eof(self) -> bytes:
        """Everything the peer sends until it closes (what is already buffered included)."""
        while not self.eof:
            await self._fill()
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class InitiationClock:
    """Initiation timestamps that always increase (section 4.2), across every connection the
    suite makes with one key."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last = max(time.time_ns(), self.last + 1)
        return self.last


def initiator_handshake(identity: Identity, responder: PublicKey, *,
                        prologue: bytes | None = None) -> HandshakeState:
    return HandshakeState(
        PROTOCOL_NAME, initiator=True,
        prologue=handshake_prologue(responder) if prologue is None else prologue,
        s=identity.x25519_private, rs=responder.x25519,
    )


def initiation_payload(identity: Identity, timestamp: int) -> bytes:
    """Section 4.2: ``[timestamp, I]``."""
    return pack([timestamp, identity.public_key.raw])


class Session:
    """An authenticated connection the suite holds, in either role.

    :meth:`send_record` and :meth:`send_plaintext` encrypt under the next nonce (one lock, so
    that a keep-alive task and a case never interleave two frames' nonces); :meth:`record`
    decrypts the implementation's frames, follows its REKEY flags and reassembles its records.
    """

    def __init__(self, stream: trio.abc.Stream, reader: FrameReader, send: CipherState,
                 recv: CipherState) -> None:
        self.stream = stream
        self.reader = reader
        self.send = send
        self.recv = recv
        self.partial = bytearray()
        self.lock = trio.Lock()
        self.ping_id = 0
        self.peer_ping_id = 0
        self.closed = False
        self.rekeyed_by_peer = 0

    def seal(self, plain: bytes) -> bytes:
        """``plain`` as this session's next framed transport message (a nonce is used)."""
        return frame(self.send.encrypt_with_ad(b"", plain))

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True

    async def send_plaintext(self, plain: bytes, *, rekey_after: bool = False) -> None:
        async with self.lock:
            data = self.seal(plain)
            if rekey_after:
                self.send.rekey()
            await self.send_raw(data)

    async def send_record(self, record: list[Any] | bytes, *, piece: int = MAX_CONTENT,
                          rekey: bool = False) -> None:
        """``record`` cut into FINAL-terminated pieces of at most ``piece`` bytes; with
        ``rekey`` every piece carries REKEY and the sending key is rekeyed after each."""
        data = record if isinstance(record, bytes) else pack(record)
        async with self.lock:
            out = bytearray()
            offset = 0
            while True:
                chunk = data[offset : offset + piece]
                offset += len(chunk)
                last = offset >= len(data)
                flags = (FLAG_FINAL if last else 0) | (FLAG_REKEY if rekey else 0)
                out += self.seal(plaintext(flags, chunk))
                if rekey:
                    self.send.rekey()
                if last:
                    break
            await self.send_raw(bytes(out))

    async def send_ping(self, *, interval_us: int = 1_000_000) -> None:
        self.ping_id += 1
        await self.send_record([3, self.ping_id, self.peer_ping_id, 0, interval_us])

    async def record(self) -> list[Any] | None:
        """The implementation's next record, decoded; None once the stream ended."""
        while True:
            message = await self.reader.frame()
            if message is None:
                self.closed = True
                return None
            plain = self.recv.decrypt_with_ad(b"", message)
            flags, length = plain[0], int.from_bytes(plain[1:3], "big")
            if flags & FLAG_REKEY:
                self.recv.rekey()
                self.rekeyed_by_peer += 1
            self.partial += plain[3 : 3 + length]
            if flags & FLAG_FINAL:
                data = bytes(self.partial)
                self.partial.clear()
                record = msgpack.unpackb(data, raw=False)
                if not isinstance(record, list) or not record:
                    raise ValueError(f"the implementation sent a record that is not an array: "
                                     f"{record!r}")
                if record[0] == 3 and len(record) == 5:
                    self.peer_ping_id = int(record[1])
                return record

    async def aclose(self) -> None:
        self.closed = True
        await trio.aclose_forcefully(self.stream)
