"""The ``hotline`` command line: keygen, fingerprint, run, log, verify, demo.

The interface is a contract (docs/cli.md): scripts drive ``hotline run --json`` and read one
JSON object per line on standard output, so nothing else is ever printed there in that mode.
Logs go to standard error. Every expected failure (a key file that cannot be used, a port in
use, a store of another line, a malformed peer key) ends with one line on standard error and
exit status 1, never a traceback; usage errors exit with 2 as argparse does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from ._errors import HotlineError
from ._keys import Identity, PublicKey

__all__ = ["main"]

STORE_NAME = "hotline.db"
logger = logging.getLogger("hotline")


class CliError(Exception):
    """An expected failure: its message is the one line the user sees."""


def _die(message: str) -> NoReturn:
    print(f"hotline: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    from ._config import Config

    try:
        Config(heartbeat_interval=value)  # The library's range, so the two cannot disagree.
    except HotlineError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("heartbeat_interval ")) from None
    return value


def _read_passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read passphrase file {path!r}: {exc.strerror}") from None
    return data.rstrip(b"\r\n")


def load_peer(value: str) -> PublicKey:
    """``--peer`` takes a public key file or the ``ssh-ed25519 AAAA...`` text itself."""
    if os.path.isfile(value):
        return PublicKey.load(value)
    if value.lstrip().startswith(("ssh-", "ecdsa-")):
        return PublicKey.from_openssh(value.strip())
    if not os.path.exists(value):
        raise CliError(
            f"peer key {value!r} is neither a public key file nor an 'ssh-ed25519 AAAA...' key"
        )
    return PublicKey.load(value)


def load_identity(path: str, passphrase_file: str | None = None) -> Identity:
    return Identity.load(path, _read_passphrase(passphrase_file))


# --- keygen / fingerprint -------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    if not args.force:
        for path in (args.file, args.file + ".pub"):
            if os.path.exists(path):
                raise CliError(f"{path!r} exists: use --force to replace it")
    identity = Identity.generate(comment=args.comment)
    passphrase = _read_passphrase(args.passphrase_file)
    if passphrase == b"":
        raise CliError(f"the passphrase file {args.passphrase_file!r} is empty")
    identity.save(args.file, passphrase, overwrite=args.force)
    print(identity.public_key.fingerprint())
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    if os.path.exists(args.file):
        with open(args.file, "rb") as handle:
            head = handle.read(64)
        if b"PRIVATE KEY" in head:
            key = load_identity(args.file, args.passphrase_file).public_key
        else:
            key = PublicKey.load(args.file)
    else:
        raise CliError(f"no such key file: {args.file!r}")
    print(key.fingerprint())
    return 0


# --- run ------------------------------------------------------------------------------


def _iso(timestamp_ns: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ns / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Output:
    """Events for people, or one JSON object per line for programs."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, event: str, human: str, **fields: Any) -> None:
        if self.as_json:
            line = json.dumps({"event": event, **fields}, ensure_ascii=False)
        else:
            line = f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]}  {human}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from ._config import Config

    if args.listen is None and args.connect is None:
        raise CliError("give --listen HOST:PORT, --connect HOST:PORT, or both")
    identity = load_identity(args.key, args.passphrase_file)
    peer = load_peer(args.peer)
    if peer == identity.public_key:
        raise CliError("--peer is this node's own key: a line needs the other party's key")
    data_dir = Path(args.data)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create data directory {str(data_dir)!r}: {exc.strerror}") from None
    config = Config(heartbeat_interval=args.heartbeat) if args.heartbeat else Config()
    out = _Output(args.json)
    return trio.run(_run, identity, peer, data_dir / STORE_NAME, args, config, out)


async def _run(
    identity: Identity,
    peer: PublicKey,
    store_path: Path,
    args: argparse.Namespace,
    config: Any,
    out: _Output,
) -> int:
    import trio

    from ._events import ReceiptReceived, RoundTrip
    from ._records import ReceiptKind
    from .driver import DialFailed, Line, PeerState, open_line

    async def read_stdin(line: Line, stdin_done: trio.Event) -> None:
        if sys.stdin is None:  # Started with standard input closed: nothing to send.
            stdin_done.set()
            return
        stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        async with stream:
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for text in lines:
                    await send(line, text.rstrip(b"\r"))
            if buffer:
                await send(line, buffer)
        stdin_done.set()

    async def send(line: Line, body: bytes) -> None:
        try:
            outgoing = await line.send(body)
        except HotlineError as exc:
            out.emit("error", f"!! not sent: {exc}", message=str(exc))
            return
        out.emit("queued", f"-> #{outgoing.seq} queued", seq=outgoing.seq)

    async def watch(line: Line) -> None:
        async for event in line.watch():
            if isinstance(event, PeerState):
                rtt_ms = None if line.rtt is None else round(line.rtt * 1000, 3)
                shown = "" if rtt_ms is None else f", rtt {rtt_ms:.1f} ms"
                reason = f" ({event.reason})" if event.reason else ""
                if event.state.value in ("up", "suspect", "down"):
                    out.emit("peer", f"peer {event.state.value}{shown}{reason}",
                             state=event.state.value, rtt_ms=rtt_ms)
            elif isinstance(event, ReceiptReceived):
                receipt = event.receipt
                kind = receipt.kind.value
                out.emit(kind, f"<- {kind} up to #{receipt.upto}", upto=receipt.upto)
                if (
                    args.until_delivered
                    and receipt.kind is ReceiptKind.DELIVERED
                    and stdin_done.is_set()
                    and line.outbox_size == 0
                ):
                    done.set()
            elif isinstance(event, RoundTrip):
                logger.debug("rtt %.3f ms", event.rtt * 1000)
            elif isinstance(event, DialFailed):
                out.emit("dial", f"!! cannot reach {event.address or 'the peer'} "
                         f"(attempt {event.attempt}, next in {event.next_retry_in:.1f} s): "
                         f"{event.reason}",
                         address=event.address, reason=event.reason, attempt=event.attempt,
                         next_retry_in=round(event.next_retry_in, 3))

    async def receive(line: Line) -> None:
        async for message in line:
            text = message.body.decode("utf-8", errors="replace")
            out.emit("message", f"<- #{message.seq} [{_iso(message.timestamp)}] {text}",
                     seq=message.seq, sent_at=_iso(message.timestamp), body=text)
            message.ack()

    async def until_delivered(line: Line) -> None:
        await stdin_done.wait()
        await line.flush()
        if line.outbox_size == 0:
            done.set()

    done = trio.Event()
    stdin_done = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with open_line(
                identity, peer, store=store_path, listen=args.listen, connect=args.connect,
                config=config, auto_ack=False, durability=args.durability,
            ) as line, trio.open_nursery() as nursery:
                for host, port in line.listen_addresses:
                    # On stderr: standard output belongs to the events (and with --json to
                    # the JSON stream alone); this tells a person which port :0 picked.
                    print(f"hotline: listening on {host}:{port}", file=sys.stderr, flush=True)
                nursery.start_soon(read_stdin, line, stdin_done)
                nursery.start_soon(watch, line)
                nursery.start_soon(receive, line)
                if args.until_delivered:
                    nursery.start_soon(until_delivered, line)

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        logger.info("%s: closing", signal.Signals(signum).name)
                        done.set()

                nursery.start_soon(stop_on_signal)
                await done.wait()
                nursery.cancel_scope.cancel()
        except OSError as exc:
            if args.listen is not None and exc.errno is not None:
                host, port = args.listen
                raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            raise CliError(str(exc)) from None
    return 0


# --- log / verify ---------------------------------------------------------------------


def _open_store_dir(directory: str) -> Any:
    from ._sqlite import SQLiteStore

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
                          "seq": entry.seq, "sent_at": _iso(timestamp), "body": text}
                human = f"{index:6}  {who:3}  message  #{entry.seq:<6} {_iso(timestamp)}  {text}"
            else:
                timestamp = fields[5]
                record = {"record": index, "direction": who, "kind": entry.kind,
                          "upto": entry.seq, "at": _iso(timestamp)}
                human = (
                    f"{index:6}  {who:3}  {entry.kind:<12} up to #{entry.seq}  {_iso(timestamp)}"
                )
            print(json.dumps(record, ensure_ascii=False) if args.json else human)
    finally:
        store.close()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ._errors import TranscriptError
    from ._verify import verify_store

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
    from ._demo import run_demo

    return run_demo(as_json=args.json)


# --- entry point ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotline",
        description="A secure line between two parties: signed, encrypted, sequenced "
        "messages with receipts and heartbeats, and no server in the middle.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging on standard error (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="make a key pair (OpenSSH format)")
    keygen.add_argument("file", help="private key file; the public key goes to FILE.pub")
    keygen.add_argument("--comment", default="", help="comment for the public key")
    keygen.add_argument("--passphrase-file", metavar="F", help="encrypt with this passphrase")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    keygen.set_defaults(handler=cmd_keygen)

    fingerprint = commands.add_parser("fingerprint", help="print a key's SHA256 fingerprint")
    fingerprint.add_argument("file", help="a private or public key file")
    fingerprint.add_argument("--passphrase-file", metavar="F")
    fingerprint.set_defaults(handler=cmd_fingerprint)

    run = commands.add_parser("run", help="run one end of a line")
    run.add_argument("--key", required=True, metavar="FILE", help="this node's private key")
    run.add_argument("--peer", required=True, metavar="PUBFILE",
                     help="the peer's public key file, or the 'ssh-ed25519 AAAA...' text")
    run.add_argument("--data", required=True, metavar="DIR", help="directory of the store")
    run.add_argument("--listen", type=_address, metavar="HOST:PORT")
    run.add_argument("--connect", type=_address, metavar="HOST:PORT")
    run.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    run.add_argument("--heartbeat", type=_positive, metavar="SECONDS",
                     help="heartbeat interval (default 1)")
    run.add_argument("--until-delivered", action="store_true",
                     help="exit once standard input is done and every message is delivered")
    run.add_argument("--passphrase-file", metavar="F", help="passphrase of the key")
    run.add_argument("--durability", choices=("FULL", "NORMAL"), default="FULL",
                     help="FULL (default): a receipted message survives power loss; NORMAL: "
                     "it survives a crash of the process")
    run.set_defaults(handler=cmd_run)

    log = commands.add_parser("log", help="print the transcript held in a store")
    log.add_argument("dir", metavar="DIR")
    log.add_argument("--json", action="store_true")
    log.set_defaults(handler=cmd_log)

    verify = commands.add_parser("verify", help="verify a store's transcript offline")
    verify.add_argument("dir", metavar="DIR")
    verify.set_defaults(handler=cmd_verify)

    demo = commands.add_parser("demo", help="two nodes on loopback: a first look")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (CliError, HotlineError) as exc:
        _die(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (| head): that is its choice, not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
