"""``hotline run``: one end of a line, driven by standard input, shown on standard output.

Four tasks share the open line: one reads standard input and queues each line, one prints
their events in the order the lines were read, one prints what the line reports (the peer's
liveness, receipts, dial failures), one prints each message received and acknowledges it once
its line is written (see :mod:`._output`).

The reader does not wait for a line to be stored before it queues the next
(:meth:`~hotline.Line.queue`), so lines piped in share commits: one fsync for everything read
while the last commit was in flight, instead of one per line. The reporter waits for each
line's :meth:`~hotline.Outgoing.stored` in turn and only then prints ``queued``, so the event
still means stored and comes in input order. The lines between the two are kept in
:class:`_Unreported` (at most ``outbox_limit`` of them: a slow standard output holds back
standard input, not memory); whatever is left there when the line closes is accounted for
after the close from the stored state, so a line queued but never stored counts as not sent.

Standard input is read by blocking reads in a worker thread, never by changing the
terminal's flags, so job control (Ctrl-Z, ``fg``) and signals keep working; a thread left
blocked there is abandoned at exit.

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
import signal
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._errors import HotlineError
from ._input import read_lines
from ._output import JSON_SCHEMA, Output, body_fields, iso_utc, package_version, printable
from ._status import EXIT_INTERRUPTED, EXIT_NOT_SENT, EXIT_OK, CliError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import trio

    from .._keys import Identity, PublicKey
    from ..driver import Line, Outgoing
    from ._control import LiveState

STORE_NAME = "hotline.db"
#: How long the events of lines read may take to write once the run is stopping: the one being
#: written when the stop came, and those written after the close.
_EVENT_TIMEOUT = 2.0
logger = logging.getLogger("hotline")


class PeerOutput:
    """The node's one output, as one line sees it: every event names its peer."""

    def __init__(self, shared: Output, name: str) -> None:
        self._shared = shared
        self.name = name

    @property
    def as_json(self) -> bool:
        return self._shared.as_json

    async def emit(self, event: str, human: str | None, **fields: Any) -> bool:
        shown = None if human is None else f"[{self.name}] {human}"
        return await self._shared.emit(event, shown, peer=self.name, **fields)


@dataclass
class NodeLine:
    """What one line of a node gets from the node instead of owning it (see the module)."""

    bodies: trio.MemoryReceiveChannel[tuple[int, bytes]]
    """Each body with the number of its input line."""
    out: PeerOutput
    stop: trio.Event
    network: dict[str, Any]
    report_done: Callable[[trio.Event], Awaitable[None]]
    opened: Callable[[Line], None]
    """Called with the line once it is open: the node shows its state (control socket,
    metrics)."""


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


class _Unreported:
    """The lines read from standard input that have no event yet, in the order they were read.

    Each is the :class:`~hotline.Outgoing` of a queued line, or the reason a line was not
    sent, with the line's number in the input (for its event). The reader adds an
    ``Outgoing`` in the same step as ``queue()`` returns it (no checkpoint between), so
    however the run ends, every queued line is here until its event is written. One reader
    adds and one reporter takes, each waiting on ``_changed``.
    """

    def __init__(self, limit: int) -> None:
        import trio

        self._items: deque[tuple[int, Outgoing | str]] = deque()
        self._limit = limit
        self._ended = False
        self._changed = trio.Event()

    def _change(self) -> None:
        import trio

        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_room(self) -> None:
        while len(self._items) >= self._limit:
            await self._changed.wait()

    def add(self, number: int, item: Outgoing | str) -> None:
        self._items.append((number, item))
        self._change()

    def end(self) -> None:
        """No more lines: standard input is at its end."""
        self._ended = True
        self._change()

    async def first(self) -> tuple[int, Outgoing | str] | None:
        """The oldest line without an event (left in place), or None once input has ended
        and every line has had its event."""
        while not self._items:
            if self._ended:
                return None
            await self._changed.wait()
        return self._items[0]

    def reported(self) -> None:
        """The oldest line has had its event (or is counted and need not have one)."""
        self._items.popleft()
        self._change()

    async def wait_reported(self, upto: int) -> None:
        """Wait until no line numbered up to ``upto`` is without its event (a refused line
        at the head is waited for too: its event is written at once)."""
        while self._items:
            item = self._items[0][1]
            if not isinstance(item, str) and item.seq > upto:
                return
            await self._changed.wait()

    def take_all(self) -> list[tuple[int, Outgoing | str]]:
        items = list(self._items)
        self._items.clear()
        return items


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

    from ..driver import AckOverdue, DialFailed, PeerState, open_line
    from ..protocol import ReceiptKind, ReceiptReceived, RoundTrip
    from ._control import line_live_state

    done = trio.Event()  # --until-delivered: all is delivered
    stop = trio.Event()  # a signal, or standard output failed
    # Standard input has ended and every line read has had its event (queued: stored).
    stdin_done = trio.Event()
    unreported = _Unreported(config.outbox_limit)
    unsent = 0  # lines read but not sent (counted when known, before any event is written)
    failure = ""
    delivered = False
    # --until-delivered ends once the delivered receipt of the last line queued is shown,
    # not merely received: a script reading the events must see it before the exit.
    last_queued = 0
    shown_delivered = 0

    def all_shown_delivered(line: Line) -> bool:
        return (
            stdin_done.is_set() and line.outbox_size == 0 and shown_delivered >= last_queued
        )

    async def read_stdin(line: Line) -> None:
        if node is not None:  # The node reads standard input and hands this line its own.
            async for number, body in node.bodies:
                await send(line, body, number)
            unreported.end()
            return
        if sys.stdin is None:  # Started with standard input closed: nothing to send.
            unreported.end()
            return
        number = 0  # of the input line, for error events
        async for item in read_lines(sys.stdin.fileno(), config.max_body_size):
            number += 1
            if isinstance(item, int):
                await too_large(item, number)
            else:
                await send(line, item, number)
        unreported.end()

    async def too_large(size: int, number: int) -> None:
        nonlocal unsent
        unsent += 1
        await unreported.wait_for_room()
        reason = f"body of {size} bytes is over the limit of {config.max_body_size}"
        unreported.add(number, reason)

    async def send(line: Line, body: bytes, number: int) -> None:
        nonlocal unsent
        # Cancelled while waiting for room here or in queue(), the line is not queued.
        await unreported.wait_for_room()
        try:
            outgoing = await line.queue(body, ack_within=args.ack_within)
        except HotlineError as exc:
            unsent += 1
            unreported.add(number, str(exc))
            return
        unreported.add(number, outgoing)

    async def report_in_order() -> None:
        nonlocal unsent, last_queued
        while (oldest := await unreported.first()) is not None:
            number, item = oldest
            if isinstance(item, str):
                await emit_whole("error", f"!! not sent: {item}", message=item, line=number)
            else:
                try:
                    await item.stored()
                except HotlineError as exc:
                    unsent += 1
                    await emit_whole("error", f"!! not sent: {exc}", message=str(exc),
                                     line=number)
                else:
                    await emit_whole("queued", f"-> #{item.seq} queued", seq=item.seq)
                    last_queued = item.seq
            unreported.reported()
        stdin_done.set()

    async def emit_whole(event: str, human: str, **fields: Any) -> None:
        """Write the event of the oldest line, even if the run is stopping meanwhile: a stop
        must not lose it (nor write it twice after the close, when a cancelled write may
        already be under way). Bounded: a stopped terminal must not hold the exit."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _EVENT_TIMEOUT
            await out.emit(event, human, **fields)

    async def report_the_rest(line: Line) -> None:
        """After the close: the lines read whose event the run did not get to write. The
        stored state decides which were sent."""
        nonlocal unsent
        stored_upto = line.state.sent_seq
        events: list[tuple[str, str, dict[str, Any]]] = []
        for number, item in unreported.take_all():
            if isinstance(item, str):  # Counted when it was read.
                events.append(("error", f"!! not sent: {item}", {"message": item, "line": number}))
            elif item.seq <= stored_upto:
                events.append(("queued", f"-> #{item.seq} queued", {"seq": item.seq}))
            else:
                unsent += 1
                reason = "the line closed before the message was stored"
                events.append(("error", f"!! not sent: {reason}",
                               {"message": reason, "line": number}))
        # Bounded like the close itself: a stopped terminal must not hold the exit.
        with trio.move_on_after(_EVENT_TIMEOUT):
            for event, human, fields in events:
                await out.emit(event, human, **fields)

    async def watch(line: Line) -> None:
        nonlocal shown_delivered
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
                # The peer receipts a commit while its lines' queued events may still be
                # being written: shown after them, as the sender's events always were.
                await unreported.wait_reported(receipt.upto)
                await out.emit(kind, f"<- {kind} up to #{receipt.upto}", upto=receipt.upto)
                if receipt.kind is ReceiptKind.DELIVERED:
                    shown_delivered = max(shown_delivered, receipt.upto)
                    if args.until_delivered and all_shown_delivered(line):
                        done.set()
            elif isinstance(event, RoundTrip):
                logger.debug("rtt %.3f ms", event.rtt * 1000)
            elif isinstance(event, AckOverdue):
                held = "held by the peer" if event.delivered else "not yet held by the peer"
                await out.emit("overdue", f"!! #{event.seq} not acknowledged within "
                               f"{event.ack_within:g} s ({held})", seq=event.seq,
                               ack_within=event.ack_within, delivered=event.delivered)
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
        if all_shown_delivered(line):
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
            nursery.start_soon(report_in_order)
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
        await report_the_rest(line)
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

