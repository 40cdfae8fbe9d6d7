"""``hotline status DIR``: each line's state from its store, and the node's live state.

The store part is read as ``log`` and ``verify`` read: read-only, without the store lock
(``SQLiteStore.open_existing``), in one read transaction, so it is safe beside a running
node and its numbers are of one moment. The live part comes from the running node's control
socket (:mod:`._control`); without a node there is no live part, which is not an error.

A directory holds one line (``DIR/hotline.db``) or, for a node serving several peers, one
line per peer (``DIR/peers/NAME/hotline.db``); every line found is shown, and each live
state is matched to its store by the peer's key.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._output import iso_utc
from ._run import STORE_NAME
from ._status import EXIT_OK, CliError

__all__ = ["cmd_status", "find_stores", "store_state"]

#: Where a node serving several peers keeps each line's store: DIR/peers/NAME/hotline.db.
PEERS_DIR = "peers"


def find_stores(directory: Path) -> list[tuple[str | None, Path]]:
    """``(name, store path)`` of every line in ``directory``: the single line's (name None)
    first, then each peer's, by name."""
    found: list[tuple[str | None, Path]] = []
    if (directory / STORE_NAME).exists():
        found.append((None, directory / STORE_NAME))
    peers = directory / PEERS_DIR
    if peers.is_dir():
        found.extend(
            (entry.name, entry / STORE_NAME)
            for entry in sorted(peers.iterdir())
            if not entry.name.startswith(".") and (entry / STORE_NAME).exists()
        )
    return found


def _receipt(latest: dict[Any, tuple[int, int]], key: Any) -> dict[str, Any] | None:
    if key not in latest:
        return None
    upto, timestamp = latest[key]
    return {"upto": upto, "at": iso_utc(timestamp)}


def store_state(path: Path) -> dict[str, Any]:
    """What the store at ``path`` says about its line (the keys of docs/cli.md)."""
    from ..store import Direction, SQLiteStore

    store = SQLiteStore.open_existing(path)
    try:
        with store.read_snapshot():
            keys = store.keys()
            if keys is None:
                raise CliError(f"the store {str(path)!r} is empty")
            state = store.resume_rows().state
            latest = store.latest_receipts()
    finally:
        store.close()
    identity, peer = keys
    marks = {column: value for column, value in state.items() if isinstance(value, int)}
    return {
        "store": str(path),
        "identity": identity.fingerprint(),
        "peer": peer.fingerprint(),
        "sent_seq": marks["sent_seq"],
        "received_seq": marks["received_seq"],
        "peer_delivered": marks["peer_delivered"],
        "peer_acknowledged": marks["peer_acknowledged"],
        "outbox": marks["sent_seq"] - marks["peer_delivered"],
        "receipts": {
            # Signed by the peer, for our messages.
            "in": {kind: _receipt(latest, (Direction.IN, kind))
                   for kind in ("delivered", "acknowledged")},
            # Signed by this node, for the peer's messages.
            "out": {kind: _receipt(latest, (Direction.OUT, kind))
                    for kind in ("delivered", "acknowledged")},
        },
    }


def _live_lines(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """The running node's document (or None) and why it has no live state (or "")."""
    from ._control import CONTROL_SOCKET, query_control

    path = directory / CONTROL_SOCKET
    try:
        document = query_control(path)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return None, f"the control socket {str(path)!r} does not answer: {reason}"
    if document is None:
        return None, "no node is running"
    return document, str(document.get("error", ""))


def cmd_status(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        raise CliError(f"no such data directory: {args.dir!r}")
    stores = find_stores(directory)
    if not stores:
        raise CliError(f"no store in {args.dir!r}: neither {STORE_NAME} nor "
                       f"{PEERS_DIR}/NAME/{STORE_NAME}")
    document, not_live = _live_lines(directory)
    live_by_peer = {}
    if document is not None:
        live_by_peer = {line.get("peer"): line for line in document.get("lines", [])
                        if isinstance(line, dict)}
    lines = []
    for name, path in stores:
        line = {"name": name, **store_state(path)}
        line["live"] = live_by_peer.get(line["peer"])
        lines.append(line)
    report = {
        "dir": str(directory),
        "running": document is not None,
        "pid": None if document is None else document.get("pid"),
        "lines": lines,
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(_human(report, not_live))
    return EXIT_OK


def _receipt_text(receipt: dict[str, Any] | None) -> str:
    return "none" if receipt is None else f"#{receipt['upto']} at {receipt['at']}"


def _row(label: str, value: str) -> str:
    return f"  {label:<22}{value}"


def _human(report: dict[str, Any], not_live: str) -> str:
    out = []
    if report["running"]:
        out.append(f"node running (pid {report['pid']})" + (f": {not_live}" if not_live else ""))
    else:
        out.append(f"node not running: {not_live}")
    for line in report["lines"]:
        title = f"line {line['name']}" if line["name"] else "line"
        by_peer = line["receipts"]["in"]
        by_us = line["receipts"]["out"]
        out += [
            "",
            f"{title}: {line['identity']} (this node) - {line['peer']} (the peer)",
            _row("store", line["store"]),
            _row("sent", f"up to #{line['sent_seq']}, outbox {line['outbox']}"),
            _row("received", f"up to #{line['received_seq']}"),
            _row("peer's delivered", _receipt_text(by_peer["delivered"])),
            _row("peer's acknowledged", _receipt_text(by_peer["acknowledged"])),
            _row("our delivered", _receipt_text(by_us["delivered"])),
            _row("our acknowledged", _receipt_text(by_us["acknowledged"])),
        ]
        live = line["live"]
        if live is None:
            out.append(_row("live", "-"))
            continue
        rtt = "-" if live["rtt_ms"] is None else f"{live['rtt_ms']:.1f} ms"
        out += [
            _row("peer", f"{live['liveness']}, rtt {rtt}"),
            _row("last handshake", live["last_handshake"] or "none"),
            _row("sent since start",
                 f"{live['messages_sent']} messages, {live['bytes_sent']} bytes"),
            _row("received since start",
                 f"{live['messages_received']} messages, {live['bytes_received']} bytes"),
        ]
    return "\n".join(out)
