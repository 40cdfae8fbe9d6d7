"""The ``hotline`` command line: keygen, fingerprint, run, log, verify, demo.

The interface is a contract (docs/cli.md): scripts drive ``hotline run --json`` and read one
JSON object per line on standard output, so nothing else is ever printed there in that mode.
Logs go to standard error. Every expected failure (a key file that cannot be used, a port in
use, a store of another line, a malformed peer key) ends with one line on standard error and
exit status 1, never a traceback; usage errors exit with 2 as argparse does. The exit statuses
are one table for every command (docs/cli.md, "Exit status").

The terminal is shared with the shell and with whatever else runs in it, so ``run`` never
changes its flags: standard input is read by blocking reads in a worker thread (a thread left
blocked there is abandoned at exit), and each output line is written whole by a worker thread
before the message it shows is acknowledged. SIGTERM is handled as SIGINT is, by every
command; once a command has its result, later signals cannot change its exit status.

Whatever the peer wrote (message bodies, goodbye reasons) reaches human output only through
:func:`printable`, so it cannot move the cursor, forge a line or reorder text; ``--json``
carries it exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib.metadata
import json
import logging
import os
import select
import signal
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from ._errors import HotlineError
from ._keys import (
    Identity,
    PublicKey,
    identity_from_file_data,
    load_identity_file,
    public_key_from_file_data,
)

if TYPE_CHECKING:
    import trio

__all__ = ["main", "printable"]

STORE_NAME = "hotline.db"
logger = logging.getLogger("hotline")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_SENT = 3
"""``run``: a line read from standard input was not sent (over the size limit, or refused)."""
EXIT_INTERRUPTED = 4
"""SIGINT or SIGTERM came before the command's work was done (``run --until-delivered``: before
every message was delivered). ``run`` without ``--until-delivered`` has no end of its own: a
signal is how it stops, and that is a success."""

# The passphrase and key files read from disk or standard input are small; the cap keeps a
# mistaken path (a log, a device) from being read whole.
_MAX_SMALL_FILE = 64 * 1024
_STDIN_CHUNK = 65536


def _escape_table() -> dict[int, str]:
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    escaped = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
    # Every Bidi_Control code point: they reorder the text around them on screen.
    escaped += [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    table: dict[int, str] = {}
    for code in escaped:
        char = chr(code)
        if char in named:
            table[code] = named[char]
        elif code < 0x100:
            table[code] = f"\\x{code:02x}"
        else:
            table[code] = f"\\u{code:04x}"
    return table


_ESCAPES = _escape_table()


def printable(text: str) -> str:
    """``text`` fit to show a person: controls, line and paragraph separators and bidi
    controls become ``\\n``, ``\\x1b``, ``\\u202e``...; everything else is unchanged."""
    return text.translate(_ESCAPES)


class CliError(Exception):
    """An expected failure: its message is the one line the user sees."""


def _die(message: str) -> NoReturn:
    print(f"hotline: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


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
    """The passphrase in file ``path``, refused, like a private key, if others may read it."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(_MAX_SMALL_FILE + 1)
    except IsADirectoryError:
        raise CliError(f"{path!r} is a directory, not a passphrase file") from None
    except OSError as exc:
        raise CliError(f"cannot read passphrase file {path!r}: {exc.strerror}") from None
    if os.name == "posix" and mode & 0o077:
        raise CliError(
            f"permissions {stat.S_IMODE(mode):04o} for {path!r} are too open: a passphrase "
            f"file must be readable only by its owner (chmod 600 {path!r})"
        )
    if len(data) > _MAX_SMALL_FILE:
        raise CliError(f"{path!r} is too large to be a passphrase file")
    return data.rstrip(b"\r\n")


def _passphrase(
    passphrase_file: str | None, key_name: str
) -> bytes | Callable[[], bytes | None] | None:
    """The passphrase file's content or, with none and a terminal on standard input, a prompt
    that is shown only if the key turns out to be encrypted."""
    if passphrase_file is not None:
        return _read_passphrase(passphrase_file)
    if sys.stdin is None or not sys.stdin.isatty():
        return None

    def ask() -> bytes | None:
        try:
            typed = getpass.getpass(f"passphrase for {key_name}: ")
        except EOFError:
            return None
        return typed.encode("utf-8") or None

    return ask


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
    return load_identity_file(path, _passphrase(passphrase_file, repr(path)))


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


def _is_private(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def cmd_fingerprint(args: argparse.Namespace) -> int:
    if args.file == "-":
        label = "the key on standard input"
        data = sys.stdin.buffer.read(_MAX_SMALL_FILE + 1) if sys.stdin is not None else b""
        if len(data) > _MAX_SMALL_FILE:
            raise CliError(f"{label} is too large to be a key")
        if _is_private(data):
            passphrase = _read_passphrase(args.passphrase_file)
            key = identity_from_file_data(data, passphrase, label).public_key
        else:
            key = public_key_from_file_data(data, label)
    else:
        try:
            with open(args.file, "rb") as handle:
                head = handle.read(64)
        except FileNotFoundError:
            raise CliError(f"no such key file: {args.file!r}") from None
        except IsADirectoryError:
            raise CliError(f"{args.file!r} is a directory, not a key file") from None
        except OSError as exc:
            raise CliError(f"cannot read key file {args.file!r}: {exc.strerror}") from None
        if _is_private(head):
            key = load_identity(args.file, args.passphrase_file).public_key
        else:
            key = PublicKey.load(args.file)
    print(key.fingerprint())
    return 0


# --- run ------------------------------------------------------------------------------


def _iso(timestamp_ns: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ns / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _read_some(fd: int) -> bytes:
    """One blocking read of standard input, in a worker thread. A descriptor that someone
    else left non-blocking is waited on, never changed: it is shared with the terminal."""
    while True:
        try:
            return os.read(fd, _STDIN_CHUNK)
        except BlockingIOError:
            select.select([fd], [], [])


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data``, in a worker thread; as :func:`_read_some`, never changes flags."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _write_now(fd: int, data: bytes) -> int:
    """Write what can be written at once without a thread: the bytes written, maybe none.

    A thread per line costs more than the line when a program reads the events fast (a run
    of 5,000 messages took half as long again). A pipe that polls writable has a free page,
    and a socket most of its buffer, so a write of up to PIPE_BUF bytes does not block; a
    file never does. A terminal may poll writable with less room than the line, so it is
    never written here.
    """
    if len(data) > select.PIPE_BUF or not select.select([], [fd], [], 0)[1]:
        return 0
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


class _StopRequest:
    """``run``'s SIGINT handler (SIGTERM reaches it too, see :func:`_sigterm_as_sigint`).

    It asks the running line to close instead of raising KeyboardInterrupt somewhere inside
    trio. A signal that comes before trio runs is remembered and acted on at once; one that
    comes after trio has returned finds the run finished and changes nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._event: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        import trio

        if self.signum is None:
            self.signum = signum
        if self._token is not None and self._event is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._event.set, idempotent=True)

    def attach(self, event: trio.Event) -> None:
        """Set ``event`` on a signal; called from inside the trio run."""
        import trio

        self._event = event
        self._token = trio.lowlevel.current_trio_token()
        if self.signum is not None:
            event.set()


class _Output:
    """Events for people, or one JSON object per line for programs.

    Each line is written whole by a worker thread, one at a time and in order, so a slow or
    paused terminal never stops the heartbeats. If standard output fails, the run stops.
    """

    def __init__(self, as_json: bool, on_failure: Callable[[str], None]) -> None:
        import trio

        self.as_json = as_json
        self._lock = trio.StrictFIFOLock()
        self._on_failure = on_failure
        self.failed = False
        self._encoding = (sys.stdout.encoding if sys.stdout is not None else None) or "utf-8"
        self._direct = not os.isatty(1)

    async def emit(self, event: str, human: str, **fields: Any) -> bool:
        """Write one event; True once it is written and flushed (it is never buffered)."""
        import trio

        if self.as_json:
            data = json.dumps({"event": event, **fields}, ensure_ascii=False).encode("utf-8")
        else:
            line = f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]}  {human}"
            data = line.encode(self._encoding, errors="backslashreplace")
        async with self._lock:
            if self.failed:
                return False
            data += b"\n"
            try:
                written = _write_now(1, data) if self._direct else 0
                if written < len(data):
                    await trio.to_thread.run_sync(
                        _write_all, 1, memoryview(data)[written:], abandon_on_cancel=True
                    )
            except OSError as exc:
                self.failed = True
                self._on_failure(f"cannot write to standard output: {exc.strerror}")
                return False
        return True


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
    stop_request = _StopRequest()
    if _in_main_thread():
        # Left in place until the process ends (main restores them for in-process callers),
        # so that a signal during the close cannot end the process with another status. A
        # SIGINT that the parent ignores (a background job of a script) stays ignored.
        signal.signal(signal.SIGTERM, stop_request.handle)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, stop_request.handle)
    return trio.run(_run, identity, peer, data_dir / STORE_NAME, args, config, stop_request)


async def _run(
    identity: Identity,
    peer: PublicKey,
    store_path: Path,
    args: argparse.Namespace,
    config: Any,
    stop_request: _StopRequest,
) -> int:
    import trio

    from .driver import DialFailed, Line, PeerState, open_line
    from .protocol import ReceiptKind, ReceiptReceived, RoundTrip

    done = trio.Event()  # --until-delivered: all is delivered
    stop = trio.Event()  # a signal, or standard output failed
    stdin_done = trio.Event()
    unsent = 0  # lines read but not sent
    failure = ""
    delivered = False

    async def read_stdin(line: Line) -> None:
        if sys.stdin is None:  # Started with standard input closed: nothing to send.
            stdin_done.set()
            return
        fd = sys.stdin.fileno()
        limit = config.max_body_size
        pending = bytearray()
        skipped = 0  # bytes of a line over the limit, counted but not kept
        while True:
            try:
                chunk = await trio.to_thread.run_sync(_read_some, fd, abandon_on_cancel=True)
            except OSError as exc:
                logger.warning("cannot read standard input: %s: no more lines", exc.strerror)
                break
            if not chunk:
                break
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                text = bytes(pending[:end])
                del pending[: end + 1]
                if skipped:
                    await too_large(skipped + len(text.rstrip(b"\r")))
                    skipped = 0
                else:
                    await send(line, text.rstrip(b"\r"))
            if len(pending) > limit + 1:  # + 1: room for the "\r" of a line at the limit
                skipped += len(pending) - 1
                del pending[:-1]  # the last byte may be the "\r" before the "\n"
        if skipped:
            await too_large(skipped + len(pending))
        elif pending:
            await send(line, bytes(pending))
        stdin_done.set()

    async def too_large(size: int) -> None:
        nonlocal unsent
        unsent += 1
        reason = f"body of {size} bytes is over the limit of {config.max_body_size}"
        await out.emit("error", f"!! not sent: {reason}", message=reason)

    async def send(line: Line, body: bytes) -> None:
        nonlocal unsent
        try:
            outgoing = await line.send(body)
        except HotlineError as exc:
            unsent += 1
            await out.emit("error", f"!! not sent: {exc}", message=str(exc))
            return
        await out.emit("queued", f"-> #{outgoing.seq} queued", seq=outgoing.seq)

    async def watch(line: Line) -> None:
        async for event in line.watch():
            if isinstance(event, PeerState):
                rtt_ms = None if line.rtt is None else round(line.rtt * 1000, 3)
                shown = "" if rtt_ms is None else f", rtt {rtt_ms:.1f} ms"
                reason = f" ({printable(event.reason)})" if event.reason else ""
                if event.state.value in ("up", "suspect", "down"):
                    await out.emit("peer", f"peer {event.state.value}{shown}{reason}",
                                   state=event.state.value, rtt_ms=rtt_ms)
            elif isinstance(event, ReceiptReceived):
                receipt = event.receipt
                kind = receipt.kind.value
                await out.emit(kind, f"<- {kind} up to #{receipt.upto}", upto=receipt.upto)
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
                await out.emit("dial", f"!! cannot reach {event.address or 'the peer'} "
                         f"(attempt {event.attempt}, next in {event.next_retry_in:.1f} s): "
                         f"{event.reason}",
                         address=event.address, reason=event.reason, attempt=event.attempt,
                         next_retry_in=round(event.next_retry_in, 3))

    async def receive(line: Line) -> None:
        async for message in line:
            text = message.body.decode("utf-8", errors="replace")
            shown = f"<- #{message.seq} [{_iso(message.timestamp)}] {printable(text)}"
            # The peer's "acknowledged" means it was shown: only once the line is written.
            if not await out.emit("message", shown, seq=message.seq,
                                  sent_at=_iso(message.timestamp), body=text):
                return
            message.ack()

    async def until_delivered(line: Line) -> None:
        await stdin_done.wait()
        await line.flush()
        if line.outbox_size == 0:
            done.set()

    def output_failed(reason: str) -> None:
        nonlocal failure
        failure = reason
        stop.set()

    out = _Output(args.json, output_failed)
    stop_request.attach(stop)
    try:
        async with open_line(
            identity, peer, store=store_path, listen=args.listen, connect=args.connect,
            config=config, auto_ack=False, durability=args.durability,
        ) as line, trio.open_nursery() as nursery:
            for host, port in line.listen_addresses:
                # On stderr: standard output belongs to the events (and with --json to
                # the JSON stream alone); this tells a person which port :0 picked.
                print(f"hotline: listening on {host}:{port}", file=sys.stderr, flush=True)
            nursery.start_soon(read_stdin, line)
            nursery.start_soon(watch, line)
            nursery.start_soon(receive, line)
            if args.until_delivered:
                nursery.start_soon(until_delivered, line)

            async def wait_for(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait_for, done)
            nursery.start_soon(wait_for, stop)
            await trio.sleep_forever()
        # Decided after the close: its last receipts count, as they would have a moment later.
        delivered = stdin_done.is_set() and line.outbox_size == 0
    except OSError as exc:
        if args.listen is not None and exc.errno is not None:
            host, port = args.listen
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        raise CliError(str(exc)) from None
    if stop_request.signum is not None:
        logger.info("%s: closed", signal.Signals(stop_request.signum).name)
    if failure:
        raise CliError(f"{failure}: stopped (messages not shown are shown by the next run)")
    if unsent:
        return EXIT_NOT_SENT
    if args.until_delivered and not delivered:
        return EXIT_INTERRUPTED
    return EXIT_OK


# --- log / verify ---------------------------------------------------------------------


def _open_store_dir(directory: str) -> Any:
    from .store import SQLiteStore

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
                human = (f"{index:6}  {who:3}  message  #{entry.seq:<6} {_iso(timestamp)}  "
                         f"{printable(text)}")
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


def _version() -> str:
    try:
        return importlib.metadata.version("hotline")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        from . import __version__

        return __version__


_RUN_EXAMPLES = """\
examples:
  listen for the peer and talk, one message per line typed:
    hotline run --key bob --peer alice.pub --data bob-data --listen 0.0.0.0:7400

  send one message and wait up to a minute for the peer to hold it:
    echo "Convoy moving north." | timeout 60 hotline run --key alice --peer bob.pub \\
        --data alice-data --connect 192.0.2.20:7400 --until-delivered --json

  receive only, one JSON object per event:
    hotline run --key bob --peer alice.pub --data bob-data --listen 0.0.0.0:7400 \\
        --json </dev/null

exit status: 0 stopped by SIGINT/SIGTERM, or --until-delivered done; 1 error;
  2 usage; 3 a line was not sent; 4 --until-delivered interrupted before every
  message was delivered (see docs/cli.md)
"""

_EXIT_STATUSES = """\
exit status (every command):
  0  success (run: stopped by SIGINT or SIGTERM, or --until-delivered done)
  1  an error, reported in one line on standard error
  2  a usage error
  3  run: a line read from standard input was not sent
  4  interrupted by SIGINT or SIGTERM before the command's work was done
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotline",
        description="A secure line between two parties: signed, encrypted, sequenced "
        "messages with receipts and heartbeats, and no server in the middle.",
        epilog=_EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hotline {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging on standard error (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="make a key pair (OpenSSH format)",
                                 description="Make an Ed25519 key pair in OpenSSH format and "
                                 "print its fingerprint.")
    keygen.add_argument("file", metavar="FILE",
                        help="private key file (mode 0600); the public key goes to FILE.pub")
    keygen.add_argument("--comment", default="", metavar="TEXT",
                        help="comment at the end of FILE.pub")
    keygen.add_argument("--passphrase-file", metavar="F",
                        help="encrypt the private key with the passphrase in file F "
                        "(mode 0600)")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    keygen.set_defaults(handler=cmd_keygen)

    fingerprint = commands.add_parser("fingerprint", help="print a key's SHA256 fingerprint",
                                      description="Print the SHA256 fingerprint of a key, as "
                                      "ssh-keygen -lf does.")
    fingerprint.add_argument("file", metavar="FILE",
                             help="a private or public key file; - reads the key from "
                             "standard input")
    fingerprint.add_argument("--passphrase-file", metavar="F",
                             help="the passphrase of an encrypted private key (without it, "
                             "it is asked for when standard input is a terminal)")
    fingerprint.set_defaults(handler=cmd_fingerprint)

    run = commands.add_parser(
        "run", help="run one end of a line",
        description="Run this node's end of the line until it is stopped: each line of "
        "standard input is sent as a message; messages, receipts and the peer's liveness "
        "are printed on standard output.",
        epilog=_RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--key", required=True, metavar="FILE",
                     help="this node's private key (asked for its passphrase when it is "
                     "encrypted, standard input is a terminal and --passphrase-file is not "
                     "given)")
    run.add_argument("--peer", required=True, metavar="PUBFILE",
                     help="the peer's public key file, or the 'ssh-ed25519 AAAA...' text")
    run.add_argument("--data", required=True, metavar="DIR",
                     help="the line's data directory (created if absent)")
    run.add_argument("--listen", type=_address, metavar="HOST:PORT",
                     help="accept the peer's calls on this address (0.0.0.0:PORT for every "
                     "IPv4 interface, [::]:PORT for IPv6)")
    run.add_argument("--connect", type=_address, metavar="HOST:PORT",
                     help="call the peer at this address, and again whenever the "
                     "connection ends")
    run.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    run.add_argument("--heartbeat", type=_positive, metavar="SECONDS",
                     help="heartbeat interval (default 1)")
    run.add_argument("--until-delivered", action="store_true",
                     help="exit once standard input is done and every message is delivered")
    run.add_argument("--passphrase-file", metavar="F",
                     help="the passphrase of an encrypted --key (file mode 0600)")
    run.add_argument("--durability", choices=("FULL", "NORMAL"), default="FULL",
                     help="FULL (default): a receipted message survives power loss; NORMAL: "
                     "it survives a crash of the process")
    run.set_defaults(handler=cmd_run)

    log = commands.add_parser("log", help="print the transcript held in a store",
                              description="Print every signed message and receipt held in "
                              "DIR/hotline.db, in both directions.")
    log.add_argument("dir", metavar="DIR", help="the data directory given to run --data")
    log.add_argument("--json", action="store_true",
                     help="one JSON object per record, and no header line")
    log.set_defaults(handler=cmd_log)

    verify = commands.add_parser("verify", help="verify a store's transcript offline",
                                 description="Check every signature, both hash chains and "
                                 "every receipt of the transcript in DIR/hotline.db.")
    verify.add_argument("dir", metavar="DIR", help="the data directory given to run --data")
    verify.set_defaults(handler=cmd_verify)

    demo = commands.add_parser("demo", help="two nodes on loopback: a first look",
                               description="Run two nodes, alice and bob, in one process "
                               "over loopback TCP, with fresh keys and temporary stores.")
    demo.add_argument("--json", action="store_true", help="one JSON object per line")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _in_main_thread() -> bool:
    """Only the main thread may set signal handlers (an in-process caller may be another)."""
    return threading.current_thread() is threading.main_thread()


def _sigterm_as_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGTERM does what SIGINT does at that moment, so every command treats them alike."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        # trio's own SIGINT handler (in the demo) accepts nothing but SIGINT.
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def _only_interrupts(error: BaseExceptionGroup[BaseException]) -> bool:
    """A group of nothing but KeyboardInterrupts (how trio may report one)."""
    rest = error.split(KeyboardInterrupt)[1]
    return rest is None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    # A signal stops run as its normal end; other commands (and run --until-delivered) were
    # stopped before their work was done.
    interrupted = (
        EXIT_OK if args.command == "run" and not args.until_delivered else EXIT_INTERRUPTED
    )
    handles_signals = _in_main_thread()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if handles_signals:
        signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    try:
        return handler(args)
    except (CliError, HotlineError) as exc:
        _die(str(exc))
    except KeyboardInterrupt:
        return interrupted
    except BaseExceptionGroup as group:
        if _only_interrupts(group):
            return interrupted
        raise
    except BrokenPipeError:
        # The reader of our output went away (| head): that is its choice, not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        for signum, action in previous.items() if handles_signals else ():
            # The status is decided: as the program, a late signal must not replace it
            # (with 130 or 143) while the interpreter shuts down.
            signal.signal(signum, signal.SIG_IGN if argv is None else action)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
