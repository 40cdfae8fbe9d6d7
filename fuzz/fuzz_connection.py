"""Fuzz target: an established connection fed a sequence of frames, records and pauses.

Input: items ``tag(1) || length(2, big-endian) || payload`` (at most 64). The low 3 bits of
the tag say what Alice sends; bit 3 adds the REKEY flag to wrapped records; bits 4-6, when
non-zero, let that many quarter seconds pass first (Bob's timers run: pings, suspect,
down); bit 7 makes Bob's driver call ``hold()`` (or ``release()`` if holding) first. Kinds:

0. the payload as one frame of raw CIPHERTEXT (length-prefixed for it);
1. the payload as raw stream bytes (no framing at all);
2. the payload as a transport PLAINTEXT, validly encrypted;
3. the payload as a RECORD (correct headers, FINAL), validly encrypted;
4. the payload as a message ENVELOPE, validly signed, in a message record;
5. the payload as a receipt ENVELOPE, validly signed, in a receipt record;
6. Alice's next genuine message (her chain continued) with the payload as its body;
7. the previous frame again (a replay).

Invariant: as every target (``_harness``): only RemoteProtocolError or AuthenticationError
(ERROR, raised again), or ConnectionClosedError / ConnectionBrokenError once CLOSED /
BROKEN, escape; no other exception or hang; the same outcome whole or chunked.

Run: python fuzz/run.py connection -runs=1000000
"""

from __future__ import annotations

import _harness as h


def test_one_input(data: bytes) -> None:
    peer = h.Peer()
    pos = items = 0
    while pos < len(data) and items < 64:
        tag = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 3], "big")
        payload = data[pos + 3 : pos + 3 + size]
        pos, items = pos + 3 + size, items + 1
        peer.advance(((tag >> 4) & 7) * 0.25)
        if tag & 0x80:
            peer.toggle_hold()
        kind = tag & 7
        if kind == 0:
            peer.raw(h.frame(payload[: h.MAX_NOISE]))
        elif kind == 1:
            peer.raw(payload)
        elif kind == 2:
            peer.plaintext(payload)
        elif kind == 3:
            peer.record(payload, rekey=bool(tag & 8))
        elif kind == 4:
            peer.message_envelope(payload)
        elif kind == 5:
            peer.receipt_envelope(payload)
        elif kind == 6:
            peer.next_message(payload)
        else:
            peer.raw(peer.last_frame)
    h.exercise_peer(peer)


if __name__ == "__main__":
    h.fuzz(test_one_input)
