"""``log``, ``verify``, ``evidence``, ``check-evidence`` and ``demo``: the commands that read a
store or an evidence document, or show the line at work.

``log`` and ``verify`` only read: the store is opened with ``SQLiteStore.open_existing``,
which refuses an empty or foreign file instead of writing a schema into it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._output import body_fields, iso_utc, printable
from ._run import STORE_NAME
from ._status import CliError


def _open_store_dir(directory: str) -> Any:
    from ..store import SQLiteStore

    path = Path(directory)
    if not path.is_dir():
        raise CliError(f"no such data directory: {directory!r}")
    return SQLiteStore.open_existing(path / STORE_NAME)


def cmd_log(args: argparse.Namespace) -> int:
    import msgpack

    store = _open_store_dir(args.dir)
    try:
        keys = store.keys()
        if keys is None:
            raise CliError("the store is empty")
        identity, peer = keys
        if not args.json:
            print(f"line between {identity.fingerprint()} (this node) "
                  f"and {peer.fingerprint()} (the peer)")
        for index, entry in enumerate(store.transcript(), 1):
            fields = msgpack.unpackb(entry.envelope, raw=False)
            who = entry.direction.value
            if entry.kind == "message":
                timestamp, body = fields[3], fields[5]
                text = body.decode("utf-8", errors="replace")
                record = {"record": index, "direction": who, "kind": "message",
                          "seq": entry.seq, "sent_at": iso_utc(timestamp), **body_fields(body)}
                human = (f"{index:6}  {who:3}  message  #{entry.seq:<6} {iso_utc(timestamp)}  "
                         f"{printable(text)}")
            else:
                timestamp = fields[5]
                record = {"record": index, "direction": who, "kind": entry.kind,
                          "upto": entry.seq, "at": iso_utc(timestamp)}
                human = (
                    f"{index:6}  {who:3}  {entry.kind:<12} up to #{entry.seq}  {iso_utc(timestamp)}"
                )
            print(json.dumps(record, ensure_ascii=False) if args.json else human)
    finally:
        store.close()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .._errors import TranscriptError
    from .._verify import verify_store

    store = _open_store_dir(args.dir)
    try:
        try:
            report = verify_store(store)
        except TranscriptError as exc:
            print(f"INVALID: {exc}")
            return 1
    finally:
        store.close()
    print(f"line between {report.identity.fingerprint()} (this node) "
          f"and {report.peer.fingerprint()} (the peer)")
    print(f"messages: {report.messages_out} sent, {report.messages_in} received")
    print(f"receipts: {report.receipts_out} signed here, {report.receipts_in} signed by the peer")
    print(f"peer holds up to #{report.delivered_in}, acknowledged up to #{report.acknowledged_in}")
    print(f"we hold up to #{report.delivered_out}, acknowledged up to #{report.acknowledged_out}")
    print("valid: every signature, both chains and every receipt verify")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    return run_demo(as_json=args.json)


def _seq_range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("..")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise CliError(f"expected SEQ or SEQ..SEQ, got {text!r}")
    low, high = int(first), int(last) if sep else int(first)
    if not 1 <= low <= high:
        raise CliError(f"expected 1 <= SEQ and the first SEQ no higher than the last: {text!r}")
    return low, high


def cmd_evidence(args: argparse.Namespace) -> int:
    import sys

    from .._evidence import export_evidence

    first, last = _seq_range(args.seq)
    store = _open_store_dir(args.dir)
    try:
        document = export_evidence(store, first, last, received=args.received)
    finally:
        store.close()
    sys.stdout.buffer.write(document)
    sys.stdout.buffer.flush()
    return 0


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:+.3f} s"


def cmd_check_evidence(args: argparse.Namespace) -> int:
    from .._errors import EvidenceError
    from .._evidence import check_evidence
    from ._keys import load_peer

    keys = [load_peer(text) for text in args.key or []]
    if len(keys) != 2 or keys[0] == keys[1]:
        raise CliError("give the two keys you trust: --key PUB --key PUB (two different keys)")
    path = Path(args.file)
    try:
        document = path.read_bytes() if args.file != "-" else _stdin_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file!r}: {exc.strerror}") from None
    try:
        report = check_evidence(document, keys, ack_within=args.ack_within)
    except EvidenceError as exc:
        if args.json:
            print(json.dumps({"valid": False, "reason": str(exc)}))
        else:
            print(f"INVALID: {exc}")
        return 1
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
        return 0
    sender, receiver = report.sender.fingerprint(), report.receiver.fingerprint()
    print(f"VALID: signed by the two trusted keys on line {report.line_id.hex()[:16]}")
    print(f"sender   {sender}")
    print(f"receiver {receiver}")
    for message in report.messages:
        text = printable(message.body.decode("utf-8", errors="replace"))
        print(f"message #{message.seq} sent {iso_utc(message.sent_at)} (sender's clock): "
              f"\"{text}\"")
        if message.delivered_at is None:
            print("  held: no delivered receipt covers it")
        else:
            print(f"  held by the receiver's node {iso_utc(message.delivered_at)} (receiver's "
                  f"clock), {_seconds(message.delivered_at - message.sent_at)} after sending")
        if message.acknowledged_at is None:
            print("  acknowledged: no acknowledged receipt covers it")
        else:
            after_held = ("" if message.delivered_at is None else
                          f", {_seconds(message.acknowledged_at - message.delivered_at)} "
                          "after holding")
            print(f"  acknowledged by its application {iso_utc(message.acknowledged_at)} "
                  f"(receiver's clock), {_seconds(message.acknowledged_at - message.sent_at)} "
                  f"after sending{after_held}")
        if report.ack_within is not None:
            verdict = {True: "met", False: "MISSED",
                       None: "not shown (no acknowledged receipt in the evidence)"}
            print(f"  deadline of {report.ack_within:g} s to acknowledge: "
                  f"{verdict[message.deadline_met]}")
    if report.delivered is None and report.acknowledged is None:
        what = "it" if len(report.messages) == 1 else "them"
        print(f"no receipt covers {what}: this evidence shows what was sent, nothing more")
    print("what this evidence cannot prove:")
    for limit in report.limits:
        print(f"  - {limit}")
    return 0


def _stdin_bytes() -> bytes:
    import sys

    return sys.stdin.buffer.read()
