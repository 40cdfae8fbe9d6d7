"""Write the seed corpora of the fuzz targets from real exchanges: python fuzz/make_corpus.py

Alice and Bob (the fixed keys and line history of ``_harness``) open the fuzzed session and
talk with the real code: first flights, receipts, pings, new messages (a burst of three, only
the last signed), an acknowledgement, a goodbye; once more with Alice rekeying every two
messages. What Alice wrote (frames), what it decrypts to (plaintexts, records, envelopes), the
handshake messages and Bob's side of the stream become the seeds, in each target's input
format.

Seeds are named ``seed-*`` and rewritten on every run; other files in the corpus
directories (regression inputs such as ``bug-*``) are left alone. Deterministic: a second
run writes the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import _harness as h

from hotline import Config, ConnectionClosedError, ConnectionState, ReceiptKind
from hotline.protocol import (
    FLAG_FINAL,
    FLAG_REKEY,
    MAX_RECORD_FIELDS,
    cover_message,
    strict_unpack,
    unsigned_message,
)
from hotline.testing import split_frames

CORPUS = Path(__file__).resolve().parent / "corpus"


def conversation(alice_config: Config = h.CONFIG) -> tuple[list[bytes], bytes]:
    """Run a session; return Alice's frames (Bob's input) and Bob's whole output stream."""
    s = h.build_session(alice_config)
    alice_frames: list[bytes] = []
    bob_out = bytearray(s.bob_flight)
    events: list[object] = []

    def alice_to_bob() -> None:
        data = s.alice.data_to_send()
        alice_frames.extend(split_frames(data))
        if data:
            s.bob.receive_data(data, h.NOW)
            h.drain(s.bob, s.bob_line, h.BOB, events)

    def bob_to_alice() -> None:
        data = s.bob.data_to_send()
        bob_out.extend(data)
        if data:
            s.alice.receive_data(data, h.NOW)
        h.drain(s.alice, s.alice_line, h.ALICE, events)

    h.drain(s.alice, s.alice_line, h.ALICE, events)  # the rest of Bob's first flight
    alice_to_bob()  # first flight: receipt, pending message 3, ping (after Bob's flight)
    bob_to_alice()
    bodies = (b"four", bytes(range(256)) * 4, b"")
    for index, body in enumerate(bodies):  # One burst: only the last message signed.
        state = s.alice_line
        message = unsigned_message(h.ALICE.public_key, h.LINE_ID, state.sent_seq + 1,
                                   h.wall_ns(h.NOW), state.sent_head, body)
        if index == len(bodies) - 1:
            message = cover_message(h.ALICE, message)
        state.append_sent(message)
        s.alice.send_message(message)
    line = s.alice_line
    assert line.delivered_receipt is not None
    s.alice.send_receipt(line.sign_own_receipt(
        h.ALICE, h.LINE_ID, ReceiptKind.ACKNOWLEDGED, line.received_seq,
        line.delivered_receipt.head, h.wall_ns(h.NOW),
    ))
    alice_to_bob()
    bob_to_alice()
    alice_to_bob()
    s.alice.close("bye " * 60)
    with contextlib.suppress(ConnectionClosedError):  # Bob read the goodbye
        alice_to_bob()
    assert s.bob.state is ConnectionState.CLOSED, s.bob.state
    return alice_frames, bytes(bob_out)


def plaintexts(frames: list[bytes]) -> list[bytes]:
    """Decrypt Alice's frames the way Bob does."""
    cipher = h.Peer().cipher.copy()
    result = []
    for frame in frames:
        plaintext = cipher.decrypt_with_ad(b"", frame[2:])
        if plaintext[0] & FLAG_REKEY:
            cipher.rekey()
        result.append(plaintext)
    return result


def records(texts: list[bytes]) -> list[bytes]:
    result, partial = [], b""
    for text in texts:
        partial += text[3 : 3 + int.from_bytes(text[1:3], "big")]
        if text[0] & FLAG_FINAL:
            result.append(partial)
            partial = b""
    return result


def item(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + len(payload).to_bytes(2, "big") + payload


def seeds() -> dict[str, dict[str, bytes]]:
    frames, bob_stream = conversation()
    rekey_frames, _ = conversation(dataclasses.replace(h.CONFIG, rekey_after_messages=2))
    stream, rekey_stream = b"".join(frames), b"".join(rekey_frames)
    texts = plaintexts(frames)
    recs = records(texts)
    decoded = [strict_unpack(r, max_bin_len=1 << 20, max_array_len=MAX_RECORD_FIELDS)
               for r in recs]
    names = {1: "message", 2: "receipt", 3: "ping", 5: "goodbye"}
    kinds = [names[d[0]] for d in decoded]
    envelopes = [(d[0], d[1], d[2]) for d in decoded if d[0] in (1, 2)]
    tampered = bytearray(stream)
    tampered[len(frames[0]) + 5] ^= 0x40

    out: dict[str, dict[str, bytes]] = {name: {} for name in
                                         ("frames", "records", "handshake", "connection")}
    f = out["frames"]
    f["conversation"] = stream
    f["conversation-rekey"] = rekey_stream
    for k in (1, 2, 3, 5):
        f[f"first-{k}-frames"] = b"".join(frames[:k])
    f["truncated"] = stream[:-5]
    f["tampered"] = bytes(tampered)
    f["short-frame"] = b"\x00\x05" + frames[0][2:7]
    f["empty-frame"] = b"\x00\x00"
    f["longest-length"] = b"\xff\xff" + frames[0][2:]

    r = out["records"]
    for i, (text, kind) in enumerate(zip(texts, kinds, strict=False)):
        r[f"plaintext-{i:02d}-{kind}"] = b"\x00" + text
    for i, (rec, kind) in enumerate(zip(recs, kinds, strict=True)):
        r[f"record-{i:02d}-{kind}"] = b"\x01" + rec
    for i, (kind, env, sig) in enumerate(envelopes):
        name = "message" if kind == 1 else "receipt"
        r[f"envelope-{i:02d}-{name}"] = bytes([2 if kind == 1 else 3]) + env
        r[f"decoders-{i:02d}-{name}"] = b"\x05" + sig + env
    r["plaintexts-conversation"] = b"\x04" + b"".join(
        len(t).to_bytes(2, "big") + t for t in texts
    )
    r["record-goodbye-long"] = b"\x01" + h.pack([5, "x" * 1024])
    for m in h.ALICE_MESSAGES[:2]:  # retransmissions of messages Bob holds
        r[f"envelope-replayed-{m.seq}"] = b"\x02" + m.envelope

    hs = out["handshake"]
    hs["responder-message1"] = b"\x00" + h.MESSAGE1
    hs["responder-message1-conversation"] = b"\x01" + stream
    alice = h.ALICE.public_key.raw
    hs["responder-payload"] = b"\x02" + h.pack([h.INITIATION_TS, alice])
    hs["responder-payload-replayed"] = b"\x02" + h.pack([h.EPOCH_NS, alice])
    # Alice's X25519 key under the Ed25519 key -Alice (sign bit flipped): refused.
    negated = alice[:31] + bytes([alice[31] ^ 0x80])
    hs["responder-payload-negated-key"] = b"\x02" + h.pack([h.INITIATION_TS, negated])
    hs["initiator-bob-stream"] = b"\x03" + bob_stream
    hs["initiator-payload-empty"] = b"\x04"
    hs["initiator-payload"] = b"\x04" + b"\x00"

    c = out["connection"]
    c["frames"] = b"".join(item(0, fr[2:]) for fr in frames)
    c["plaintexts"] = b"".join(item(2, t) for t in texts)
    c["records"] = b"".join(item(3, rec) for rec in recs)
    c["envelopes"] = b"".join(item(4 if k == 1 else 5, env) for k, env, _ in envelopes)
    c["messages-over-time"] = b"".join(
        item(0x36, b"body %d" % i) if i % 2 else item(6, b"x" * i * 40) for i in range(8)
    ) + item(0x03 | 0x08, recs[-1])
    c["replay"] = item(3, recs[0]) + item(7, b"")
    # Alice resumes as if Bob's receipts had not reached her: messages 1 and 2 again, then
    # new ones (Bob never saw her message 3).
    c["resume"] = b"".join(
        item(3, h.pack([1, m.envelope, m.signature])) for m in h.ALICE_MESSAGES[:2]
    ) + item(6, b"three") + item(6, b"four")
    c["silence"] = item(3, recs[0]) + item(0x61, b"") + item(0x71, b"")
    c["held"] = (item(3, recs[0]) + item(0xE1, b"") + item(0x71, b"") + item(0x76, b"late")
                 + item(0x80 | 0x36, b"released") + item(0x71, b""))
    return out


def main() -> None:
    total = 0
    for target, files in seeds().items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for name, data in files.items():
            (directory / f"seed-{name}").write_bytes(data)
            total += len(data)
        print(f"{target}: {len(files)} seeds")
    print(f"{total} bytes")


if __name__ == "__main__":
    main()
