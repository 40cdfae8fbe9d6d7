"""Fuzz target: the frame layer of an open connection.

Input: raw bytes from the network, fed to Bob's connection at OPEN (fixed keys, after a real
handshake; see ``_harness``) whole and in chunks of 1..16 bytes, then end of stream.
Exercises the 2-byte length prefix, frame reassembly, the tag-length check and AEAD
rejection; the seed corpus is Alice's real ciphertext, so its prefixes decrypt.

Invariant (checked by ``_harness.exercise``): only RemoteProtocolError or
AuthenticationError (connection in ERROR, the same error raised again), or
ConnectionClosedError / ConnectionBrokenError once the connection is CLOSED / BROKEN, ever
escape; no other exception, no hang, no unbounded buffer, and the same outcome whole or chunked.

Run: python fuzz/run.py frames -runs=1000000
"""

from __future__ import annotations

import _harness as h


def test_one_input(data: bytes) -> None:
    h.exercise(h.open_victim, data)


if __name__ == "__main__":
    h.fuzz(test_one_input)
