"""``hotline run``: one end of a line, driven by standard input, shown on standard output.

Three tasks share the open line: one reads standard input and sends each line, one prints
what the line reports (the peer's liveness, receipts, dial failures), one prints each message
received and acknowledges it once its line is written (see :mod:`._output`). Standard input
is read by blocking reads in a worker thread, never by changing the terminal's flags, so job
control (Ctrl-Z, ``fg``) and signals keep working; a thread left blocked there is abandoned at
exit.

A signal asks the line to close (:class:`_StopRequest`) instead of raising KeyboardInterrupt
inside trio, so the close runs whole and the status follows the rules of :mod:`._status`:
a signal is how a plain ``run`` ends (0); with ``--until-delivered`` the status says whether
every line was stored and delivered (0), some line was not sent (3, which takes precedence),
or the wait was cut short (4).

A node serving several peers (:mod:`._node`) runs this same flow once per line, handing each
its input, output, network and stop (:class:`._node.NodeLine`); the settings may come from a
configuration file (:mod:`._config_file`), read before anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._errors import HotlineError
from ._config_file import ConfigFileError, apply_config_file, run_config
from ._keys import load_identity, load_peer
from ._output import JSON_SCHEMA, Output, body_fields, iso_utc, package_version, printable
from ._signals import in_main_thread
from ._status import EXIT_INTERRUPTED, EXIT_NOT_SENT, EXIT_OK, CliError

if TYPE_CHECKING:
    import trio

    from .._keys import Identity, PublicKey
    from ._control import LiveState
    from ._node import NodeLine, PeerOutput

STORE_NAME = "hotline.db"
_STDIN_CHUNK = 65536
logger = logging.getLogger("hotline")


def _read_some(fd: int) -> bytes:
    """One blocking read of standard input, in a worker thread. A descriptor that someone
    else left non-blocking is waited on, never changed: it is shared with the terminal."""
    while True:
        try:
            return os.read(fd, _STDIN_CHUNK)
        except BlockingIOError:
            select.select([fd], [], [])


class _StopRequest:
    """``run``'s SIGINT handler (SIGTERM reaches it too, see :func:`._signals.sigterm_as_sigint`).

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


async def start_monitoring(
    nursery: trio.Nursery,
    data_dir: Path,
    metrics: list[trio.SocketListener] | None,
    live_state: LiveState,
) -> None:
    """The control socket in ``data_dir`` (for ``hotline status``), and the metrics endpoint
    on the ``metrics`` listeners if any, serving ``live_state`` until the nursery is
    cancelled."""
    from ._control import CONTROL_SOCKET, serve_control

    await nursery.start(serve_control, data_dir / CONTROL_SOCKET, live_state)
    if metrics is not None:
        from ._metrics import bound_address, serve_metrics

        host, port = bound_address(metrics)
        nursery.start_soon(serve_metrics, metrics, live_state)
        print(f"hotline: metrics on http://{host}:{port}/metrics", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    try:
        apply_config_file(args)
    except ConfigFileError as exc:
        args.usage_error(str(exc))
    if args.peers is not None:  # a node serving several peers (see _node)
        from ._node import check_node_args, run_node

        check_node_args(args)
    elif args.listen is None and args.connect is None:
        raise CliError("give --listen HOST:PORT, --connect HOST:PORT, or both")
    identity = load_identity(args.key, args.passphrase_file)
    if args.peers is not None:
        return run_node(args, identity, run_config(args), _install_stop_request())
    peer = load_peer(args.peer)
    if peer == identity.public_key:
        raise CliError("--peer is this node's own key: a line needs the other party's key")
    data_dir = Path(args.data)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create data directory {str(data_dir)!r}: {exc.strerror}") from None
    config = run_config(args)
    stop_request = _install_stop_request()
    return trio.run(_run, identity, peer, data_dir / STORE_NAME, args, config, stop_request)


def _install_stop_request() -> _StopRequest:
    stop_request = _StopRequest()
    if in_main_thread():
        # Left in place until the process ends (main restores them for in-process callers),
        # so that a signal during the close cannot end the process with another status. A
        # SIGINT that the parent ignores (a background job of a script) stays ignored.
        signal.signal(signal.SIGTERM, stop_request.handle)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, stop_request.handle)
    return stop_request


async def _run(
    identity: Identity,
    peer: PublicKey,
    store_path: Path,
    args: argparse.Namespace,
    config: Any,
    stop_request: _StopRequest | None,
    node: NodeLine | None = None,
) -> int:
    """One line, from its opening to its exit status. Alone in the process (``node`` is
    None) it reads standard input and owns the output and the signals; as one of a node's
    lines, ``node`` gives it its input, its output, its network and the node's stop."""
    import trio

    from ..driver import DialFailed, Line, PeerState, open_line
    from ..protocol import ReceiptKind, ReceiptReceived, RoundTrip
    from ._control import line_live_state

    done = trio.Event()  # --until-delivered: all is delivered
    stop = trio.Event()  # a signal, or standard output failed
    stdin_done = trio.Event()
    unsent = 0  # lines read but not sent
    failure = ""
    delivered = False

    async def read_stdin(line: Line) -> None:
        if node is not None:  # The node reads standard input and hands this line its own.
            async for number, body in node.bodies:
                await send(line, body, number)
            stdin_done.set()
            return
        if sys.stdin is None:  # Started with standard input closed: nothing to send.
            stdin_done.set()
            return
        fd = sys.stdin.fileno()
        limit = config.max_body_size
        pending = bytearray()
        skipped = 0  # bytes of a line over the limit, counted but not kept
        number = 0  # of the input line being read, for error events
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
                number += 1
                if skipped:
                    await too_large(skipped + len(text.rstrip(b"\r")), number)
                    skipped = 0
                else:
                    await send(line, text.rstrip(b"\r"), number)
            if len(pending) > limit + 1:  # + 1: room for the "\r" of a line at the limit
                skipped += len(pending) - 1
                del pending[:-1]  # the last byte may be the "\r" before the "\n"
        if skipped:
            await too_large(skipped + len(pending), number + 1)
        elif pending:
            await send(line, bytes(pending), number + 1)
        stdin_done.set()

    async def too_large(size: int, number: int) -> None:
        nonlocal unsent
        unsent += 1
        reason = f"body of {size} bytes is over the limit of {config.max_body_size}"
        await out.emit("error", f"!! not sent: {reason}", message=reason, line=number)

    async def send(line: Line, body: bytes, number: int) -> None:
        nonlocal unsent
        try:
            outgoing = await line.send(body)
        except HotlineError as exc:
            unsent += 1
            await out.emit("error", f"!! not sent: {exc}", message=str(exc), line=number)
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
                                   state=event.state.value, rtt_ms=rtt_ms, reason=event.reason)
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
            shown = f"<- #{message.seq} [{iso_utc(message.timestamp)}] {printable(text)}"
            # The peer's "acknowledged" means it was shown: only once the line is written.
            if not await out.emit("message", shown, seq=message.seq,
                                  sent_at=iso_utc(message.timestamp), **body_fields(message.body)):
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

    out: Output | PeerOutput
    if node is None:
        assert stop_request is not None
        out = Output(args.json, output_failed)
        stop_request.attach(stop)
        network: dict[str, Any] = {"listen": args.listen, "connect": args.connect}
    else:
        out, stop, network = node.out, node.stop, node.network
    metrics = None
    if node is None and args.metrics is not None:
        from ._metrics import open_metrics_listeners

        metrics = await open_metrics_listeners(args.metrics)
    try:
        async with open_line(
            identity, peer, store=store_path, **network,
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
            if node is None:
                await out.emit("start", None, schema=JSON_SCHEMA, version=package_version(),
                               identity=identity.public_key.fingerprint(),
                               peer_key=peer.fingerprint(),
                               listen=[f"{h}:{p}" for h, p in line.listen_addresses])
                await start_monitoring(nursery, store_path.parent, metrics,
                                       lambda: [line_live_state(line)])
            else:  # The node says start, and serves every line's state (see _node).
                node.opened(line)

            async def wait_for(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            if node is None:
                nursery.start_soon(wait_for, done)
            else:  # The node stops once every one of its lines is done.
                nursery.start_soon(node.report_done, done)
            nursery.start_soon(wait_for, stop)
            await trio.sleep_forever()
        # Decided after the close: its last receipts count, as they would have a moment later.
        delivered = stdin_done.is_set() and line.outbox_size == 0
    except OSError as exc:
        if node is None and args.listen is not None and exc.errno is not None:
            host, port = args.listen
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        raise CliError(str(exc)) from None
    if stop_request is not None and stop_request.signum is not None:
        logger.info("%s: closed", signal.Signals(stop_request.signum).name)
    if failure:
        raise CliError(f"{failure}: stopped (messages not shown are shown by the next run)")
    if unsent:
        return EXIT_NOT_SENT
    if args.until_delivered and not delivered:
        return EXIT_INTERRUPTED
    return EXIT_OK

