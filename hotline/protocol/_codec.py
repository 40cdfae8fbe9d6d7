"""The wire codec: frames, and the transport plaintexts inside them (docs/protocol.md, the
"Frames" and "Transport messages" sections).

Theory of operation
-------------------
Two layers that know nothing of records, keys or peers:

1. *Frames* (:class:`Frames`): a 2-byte big-endian length, then one Noise message (at most
   65,535 bytes). Both phases of a connection read and write through the one
   :class:`Frames`, which also counts what is unsent: output counts as unsent from when it
   is written here until the driver asks for more (it asks once it has written the last).
2. *Transport plaintexts* (:class:`TransportCodec`): ``flags(1) || length(2) || content ||
   zero padding``, encrypted under the two cipher states the handshake split into. Flags say
   whether the content ends a record and whether the sender rekeys after this message. A
   record is the concatenation of contents up to a final one, so bodies larger than one Noise
   message travel in pieces; the reassembly buffer is bounded before it grows.

Our sending direction rekeys after ``rekey_after_messages`` messages or
``rekey_after_seconds`` under one key, whichever comes first: the flag goes on the message
that is the last under the old key. The receiving direction rekeys when the flag says so.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Sequence

from .._config import Config
from .._errors import AuthenticationError, RemoteProtocolError
from ._noise import MAX_MESSAGE_LEN, TAG_LEN, CipherState

__all__ = [
    "FLAG_FINAL", "FLAG_REKEY", "MAX_CONTENT", "MAX_PLAINTEXT", "Frames", "TransportCodec",
]

MAX_PLAINTEXT = MAX_MESSAGE_LEN - TAG_LEN
_HEADER = struct.Struct(">BH")
MAX_CONTENT = MAX_PLAINTEXT - _HEADER.size
FLAG_FINAL = 0x01
FLAG_REKEY = 0x02
_KNOWN_FLAGS = FLAG_FINAL | FLAG_REKEY
_PREFIX = 2
_ZEROS = memoryview(bytes(MAX_PLAINTEXT))  # Padding is sliced from it, never allocated.


class Frames:
    """Length-prefixed frames both ways: bytes in and whole frames out, frames in and bytes
    out, with the count of output not known to be written."""

    def __init__(self) -> None:
        self._inbuf = bytearray()
        # Output as the pieces written, joined once when the driver takes them: appending
        # each to one growing buffer copied it again at every reallocation, and a body of
        # 64 KiB or more made that most of the sender's work.
        self._outbuf: list[bytes] = []
        self._outlen = 0
        self._in_flight = 0  # What the last take_output() returned: unsent until the next.

    def copy(self) -> Frames:
        clone = copy.copy(self)
        clone._inbuf = bytearray(self._inbuf)
        clone._outbuf = list(self._outbuf)
        return clone

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._inbuf += data

    @property
    def buffered(self) -> int:
        """Received bytes not yet taken as frames: at most one incomplete frame's worth."""
        return len(self._inbuf)

    def take(self) -> bytes | None:
        """The next whole frame's Noise message, or ``None`` until one has arrived."""
        if len(self._inbuf) < _PREFIX:
            return None
        length = (self._inbuf[0] << 8) | self._inbuf[1]
        if len(self._inbuf) < _PREFIX + length:
            return None
        # Through a view, so the frame is copied once (a bytearray slice is a copy itself).
        with memoryview(self._inbuf) as view:
            frame = bytes(view[_PREFIX : _PREFIX + length])
        del self._inbuf[: _PREFIX + length]
        return frame

    def write(self, noise_message: bytes) -> None:
        self._outbuf.append(len(noise_message).to_bytes(_PREFIX, "big"))
        self._outbuf.append(noise_message)
        self._outlen += _PREFIX + len(noise_message)

    def written(self) -> None:
        """The driver asks for more: what it took before is written."""
        self._in_flight = 0

    def take_output(self) -> bytes:
        """Everything buffered, which counts as unsent until :meth:`written`."""
        data = b"".join(self._outbuf)
        self._outbuf.clear()
        self._outlen = 0
        self._in_flight = len(data)
        return data

    @property
    def unsent(self) -> int:
        return self._in_flight + self._outlen


class TransportCodec:
    """Records to and from transport messages under the two cipher states of a session."""

    def __init__(
        self, frames: Frames, send: CipherState, receive: CipherState, *, now: float
    ) -> None:
        self._frames = frames
        self._send = send
        self._receive = receive
        # Reassembly of a record that spans several transport messages.
        self._partial = bytearray()
        self._sent_under_key = 0
        self.key_since = now
        self.rekeys_sent = 0
        self.rekeys_received = 0

    def copy(self, frames: Frames) -> TransportCodec:
        """An independent copy that writes to ``frames``."""
        clone = copy.copy(self)
        clone._frames = frames
        clone._send = self._send.copy()
        clone._receive = self._receive.copy()
        clone._partial = bytearray(self._partial)
        return clone

    @property
    def unsent(self) -> int:
        return self._frames.unsent

    @property
    def partial_size(self) -> int:
        """Bytes of a record whose final piece has not arrived yet."""
        return len(self._partial)

    # --- receiving --------------------------------------------------------------------

    def decrypt(self, frame: bytes) -> bytes:
        """The plaintext of one transport message (an authentication error if it is forged)."""
        if len(frame) < TAG_LEN:
            raise AuthenticationError(reason="transport message shorter than its tag")
        try:
            return self._receive.decrypt_with_ad(b"", frame)
        except AuthenticationError:
            raise AuthenticationError(reason="transport message failed decryption") from None

    def open_plaintext(self, plaintext: bytes, max_record_size: int) -> bytes | None:
        """Check a decrypted plaintext; the whole record once its final piece is here."""
        if len(plaintext) < _HEADER.size:
            raise RemoteProtocolError("transport plaintext shorter than its header")
        flags, length = _HEADER.unpack_from(plaintext)
        if flags & ~_KNOWN_FLAGS:
            raise RemoteProtocolError(f"unknown transport flags {flags:#04x}")
        end = _HEADER.size + length
        if end > len(plaintext):
            raise RemoteProtocolError("transport content longer than its message")
        if plaintext.count(0, end) != len(plaintext) - end:
            raise RemoteProtocolError("transport padding must be zero bytes")
        if len(self._partial) + length > max_record_size:
            raise RemoteProtocolError("record larger than the limit")
        if flags & FLAG_REKEY:
            # The sender switched keys after this message: so do we, before the next one.
            self._receive.rekey()
            self.rekeys_received += 1
        if not flags & FLAG_FINAL:
            self._partial += memoryview(plaintext)[_HEADER.size : end]
            return None
        if self._partial:
            record = b"".join((self._partial, memoryview(plaintext)[_HEADER.size : end]))
            self._partial.clear()
            return record
        return plaintext[_HEADER.size : end]

    # --- sending ----------------------------------------------------------------------

    def rekey_at(self, config: Config) -> float:
        return self.key_since + config.rekey_after_seconds

    def write_record(
        self, data: bytes | Sequence[bytes], now: float, config: Config
    ) -> None:
        """Encrypt ``data`` as one record: in pieces of at most :data:`MAX_CONTENT`, padded.

        ``data`` may be given as the parts it is the concatenation of, which are then never
        joined into one record: each piece is copied once, from the parts into its plaintext.
        """
        parts = [memoryview(data)] if isinstance(data, bytes) else [memoryview(p) for p in data]
        left = sum(len(part) for part in parts)
        parts.reverse()  # Taken from the end: the next part is parts[-1].
        while True:
            length = min(left, MAX_CONTENT)
            left -= length
            # This piece of the record: slices of its parts, ``length`` bytes in all.
            piece: list[memoryview] = []
            need = length
            while need:
                part = parts[-1]
                if len(part) > need:
                    piece.append(part[:need])
                    parts[-1] = part[need:]
                    break
                piece.append(part)
                need -= len(part)
                parts.pop()
            flags = 0 if left else FLAG_FINAL
            self._sent_under_key += 1
            rekey = (
                self._sent_under_key >= config.rekey_after_messages
                or now >= self.rekey_at(config)
            )
            if rekey:
                flags |= FLAG_REKEY
            size = _HEADER.size + length
            padded = size
            if config.padding:
                padded = min(-(-size // config.padding) * config.padding, MAX_PLAINTEXT)
            # Joined in one copy: the header, the piece of the record, the zero padding.
            plaintext = b"".join((_HEADER.pack(flags, length), *piece, _ZEROS[: padded - size]))
            self._frames.write(self._send.encrypt_with_ad(b"", plaintext))
            if rekey:
                self._send.rekey()
                self.rekeys_sent += 1
                self._sent_under_key = 0
                self.key_since = now
            if flags & FLAG_FINAL:
                return

    def write_plaintext(self, plaintext: bytes, *, rekey: bool = False) -> None:
        """Encrypt any plaintext as the next transport message, bypassing every rule above
        (for tests that play a hostile peer); with ``rekey``, switch keys after it."""
        self._frames.write(self._send.encrypt_with_ad(b"", plaintext))
        if rekey:
            self._send.rekey()
