"""Fuzz target: the record layer after decryption, and the record decoders themselves.

Input: one mode byte, then the payload. Modes (``data[0] % 6``):

0. the payload is a transport PLAINTEXT (flags, length, content, padding), validly
   encrypted by Alice and fed to Bob's open connection;
1. the payload is a RECORD: wrapped with correct headers and FINAL (in pieces if large);
2. the payload is a message ENVELOPE, validly signed by Alice, sent as ``[1, env, sig]``:
   reaches envelope decoding, the canonical check, line/sender, sequencing and the chain;
3. the payload is a receipt ENVELOPE, validly signed by Alice, sent as ``[2, env, sig]``;
4. the payload is several transport plaintexts (each prefixed by a 2-byte length);
5. no connection: ``strict_unpack``, ``decode_message``, ``open_message`` and
   ``open_receipt`` on the payload (``payload[:64]`` is the signature).

Invariant: modes 0-4 as every target (``_harness``: only the documented protocol errors,
matching the connection's state; same outcome whole or chunked); mode 5: only
RemoteProtocolError or AuthenticationError escape the decoders, and what ``strict_unpack``
returns is flat (uint, bin and str only: nothing a nesting input could amplify).

Run: python fuzz/run.py records -runs=1000000
"""

from __future__ import annotations

import contextlib

import _harness as h

from hotline.protocol import decode_message, open_message, open_receipt, strict_unpack


def check_flat(data: bytes, max_bin_len: int, max_array_len: int) -> None:
    fields = strict_unpack(data, max_bin_len=max_bin_len, max_array_len=max_array_len)
    assert len(fields) <= max_array_len
    assert all(type(field) in (int, bytes, str) for field in fields), fields


def check_decoders(data: bytes) -> None:
    signature, envelope = data[:64], data[64:]
    calls = (
        lambda: check_flat(data, 1 << 20, 16),
        lambda: check_flat(data, 32, 2),
        lambda: decode_message(envelope, signature, sender=h.ALICE.public_key,
                               line_id=h.LINE_ID, max_body_size=1 << 20),
        lambda: open_message(envelope, signature, sender=h.ALICE.public_key,
                             line_id=h.LINE_ID, max_body_size=1 << 20),
        lambda: open_receipt(envelope, signature, signer=h.ALICE.public_key, line_id=h.LINE_ID),
    )
    for call in calls:
        with contextlib.suppress(*h.ERRORS):
            call()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, payload = data[0] % 6, data[1:]
    if mode == 5:
        check_decoders(payload)
        return
    peer = h.Peer()
    if mode == 0:
        peer.plaintext(payload)
    elif mode == 1:
        peer.record(payload)
    elif mode == 2:
        peer.message_envelope(payload)
    elif mode == 3:
        peer.receipt_envelope(payload)
    else:
        while payload:
            size = int.from_bytes(payload[:2], "big")
            peer.plaintext(payload[2 : 2 + size])
            payload = payload[2 + size :]
    h.exercise_peer(peer)


if __name__ == "__main__":
    h.fuzz(test_one_input)
