"""``log``, ``verify`` and ``demo``: the commands that read a store or show the line at work.

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
