"""Frames and transport plaintexts, built by hand.

For tests and fuzz targets that play a peer on the wire: the byte layouts of docs/protocol.md
("Frames", "Transport messages"), with any part of them wrong on purpose. They encrypt
nothing: seal a plaintext with the sending CipherState of a handshake.
"""

from __future__ import annotations

__all__ = ["EPOCH_NS", "frame", "split_frames", "transport_plaintext", "wall_ns"]

#: Nanoseconds since the epoch at ``now == 0`` of a manual clock (see :func:`wall_ns`).
EPOCH_NS = 1_700_000_000_000_000_000


def frame(noise_message: bytes) -> bytes:
    """One frame: ``uint16_be(len) || noise_message``."""
    return len(noise_message).to_bytes(2, "big") + noise_message


def split_frames(data: bytes) -> list[bytes]:
    """Cut a stream of whole frames into frames, each with its 2-byte length prefix."""
    frames = []
    pos = 0
    while pos < len(data):
        end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
        if end > len(data):
            raise ValueError("the stream ends inside a frame")
        frames.append(bytes(data[pos:end]))
        pos = end
    return frames


def transport_plaintext(
    flags: int, content: bytes, *, length: int | None = None, padding: bytes = b""
) -> bytes:
    """A transport plaintext ``flags || length || content || padding``: ``length`` (default
    the content's) and ``padding`` (zero bytes on the wire) may be anything."""
    size = len(content) if length is None else length
    return bytes([flags]) + size.to_bytes(2, "big") + content + padding


def wall_ns(now: float, *, epoch_ns: int = EPOCH_NS) -> int:
    """The wall clock (nanoseconds since the epoch) of a manual clock's ``now`` (seconds),
    for message, receipt and initiation timestamps that are the same on every run."""
    return epoch_ns + round(now * 1_000_000_000)
