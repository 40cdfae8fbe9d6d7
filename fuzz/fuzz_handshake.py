"""Fuzz target: the handshake, from both ends.

Input: one mode byte, then the payload. Modes (``data[0] % 5``):

0. a responder (Bob) reads the payload as its raw input stream: arbitrary first messages;
1. a responder reads Alice's genuine message 1, then the payload: the driver calls
   ``start()`` on authentication, and what follows is read as transport frames;
2. a responder reads a genuine message 1 (Alice's keys) whose PAYLOAD is the input: reaches
   the strict decoding of the initiation payload (timestamp and Ed25519 key), the check of
   that key against the pinned one, and the replay watermark in ``start()``;
3. an initiator (Alice, after sending her genuine message 1) reads the payload as the
   responder's stream (message 2 and what follows);
4. an initiator reads Bob's genuine message 2 whose PAYLOAD is the input.

Invariant: as every target (``_harness``): only RemoteProtocolError or AuthenticationError
(ERROR, raised again), or ConnectionClosedError / ConnectionBrokenError once CLOSED /
BROKEN, escape; no other exception or hang; the same outcome whole or chunked.

Run: python fuzz/run.py handshake -runs=1000000
"""

from __future__ import annotations

import _harness as h


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, payload = data[0] % 5, data[1:]
    if mode == 0:
        h.exercise(h.new_responder, payload)
    elif mode == 1:
        h.exercise(h.new_responder, h.MESSAGE1 + payload)
    elif mode == 2:
        h.exercise(h.new_responder, h.message1_with_payload(payload))
    elif mode == 3:
        h.exercise(h.new_initiator, payload, h.ALICE)
    else:
        h.exercise(h.new_initiator, h.message2_with_payload(payload), h.ALICE)


if __name__ == "__main__":
    h.fuzz(test_one_input)
