"""``hotline run --config FILE`` with several peers: one process, one port, a line per peer.

Theory of operation
-------------------
Noise IK names the caller in its first message, so one listener (:func:`hotline.open_listener`)
answers every peer on one port and hands each authenticated connection to that peer's line.
Each line is run by the same code as a single-peer ``run`` (:func:`._run._run`), given a
:class:`NodeLine` that replaces what the process would otherwise own alone: its input (a
channel instead of standard input), its output (a :class:`PeerOutput` that names the peer on
every event), its network (the shared listener, and the peer's own address to call) and its
stop (one event for the whole node, set by a signal, an output failure or the end of
``--until-delivered``). Each line keeps its own store, ``DATA/peers/NAME/hotline.db``.

Standard input is read here, once, and split at ``\\n`` as in a single-peer run. A line reads
``@NAME body``: the body (the bytes after the first space) goes to peer NAME. A line addressed
to no peer, or to an unknown one, is not sent: an ``error`` event says why and the exit
status is 3, as for a line over the size limit. Each peer's channel holds no line: reading
waits while the addressed line is storing the previous one, so a peer whose outbox is full
holds up the input of all (the input is one ordered stream, and reordering it would be worse).

The node, not its lines, writes the ``start`` event (naming every peer) and serves the
control socket ``DATA/hotline.sock`` and ``--metrics`` with the state of all its lines, once
every line has opened and handed itself over (:attr:`NodeLine.opened`).

``--until-delivered`` ends the node once standard input is at its end and every line has no
message of ours without a delivered receipt: the lines close together, so none says goodbye
to its peer while another is still waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .._errors import HotlineError
from ._config_file import PeerSpec, valid_peer_name
from ._control import line_live_state
from ._input import read_lines
from ._output import JSON_SCHEMA, Output, package_version
from ._run import STORE_NAME, NodeLine, PeerOutput, _run, _StopRequest, start_monitoring
from ._status import EXIT_INTERRUPTED, EXIT_NOT_SENT, EXIT_OK, CliError

if TYPE_CHECKING:
    from .._config import Config
    from .._keys import Identity
    from ..driver import Line

__all__ = ["NodeLine", "PeerOutput", "check_node_args", "run_node"]

logger = logging.getLogger("hotline")

PEERS_DIR = "peers"
# The longest "@NAME " prefix: "@", a name of at most 64 characters, and the space.
_MAX_PREFIX = 66


def check_node_args(args: argparse.Namespace) -> None:
    """Every peer must be reachable: by the node's listen address or by its own connect."""
    if args.listen is None:
        unreachable = [spec.name for spec in args.peers if spec.connect is None]
        if unreachable:
            args.usage_error(
                f"{args.config}: peer {unreachable[0]!r} has no connect address and the "
                "node no listen address: give listen (or --listen), or peers."
                f"{unreachable[0]}.connect"
            )


def _addressed(text: bytes, names: list[str]) -> tuple[str, bytes] | str:
    """``@NAME body`` as (NAME, body), or why the line cannot be sent."""
    shown = ", ".join(names)
    if not text.startswith(b"@"):
        return f"a line must start with @NAME and a space (the peers: {shown})"
    raw_name, _, body = text[1:].partition(b" ")
    name = raw_name.decode("ascii", errors="replace")
    if name not in names:
        if not valid_peer_name(name):
            return f"a line must start with @NAME and a space (the peers: {shown})"
        return f"no peer named {name!r} (the peers: {shown})"
    return name, body


def run_node(
    args: argparse.Namespace, identity: Identity, config: Config, stop_request: _StopRequest
) -> int:
    data_dir = Path(args.data)
    for spec in args.peers:
        directory = data_dir / PEERS_DIR / spec.name
        if spec.key == identity.public_key:
            raise CliError(f"peer {spec.name!r} has this node's own key: a line needs the "
                           "other party's key")
        try:
            # Created one level at a time, each with mode 0700 like DATA itself.
            for level in (data_dir, data_dir / PEERS_DIR, directory):
                level.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create data directory {str(directory)!r}: "
                           f"{exc.strerror}") from None
    return trio.run(_node, identity, args, config, stop_request)


async def _node(
    identity: Identity, args: argparse.Namespace, config: Config, stop_request: _StopRequest
) -> int:
    from ..driver import open_listener

    peers: list[PeerSpec] = args.peers
    names = [spec.name for spec in peers]
    stop = trio.Event()
    failures: list[str] = []
    statuses: dict[str, int] = {}
    done_lines: set[str] = set()
    unsent = 0

    def output_failed(reason: str) -> None:
        failures.append(f"{reason}: stopped (messages not shown are shown by the next run)")
        stop.set()

    out = Output(args.json, output_failed)
    stop_request.attach(stop)
    open_lines: dict[str, Line] = {}
    all_open = trio.Event()

    def opened(name: str, line: Line) -> None:
        open_lines[name] = line
        if len(open_lines) == len(peers):
            all_open.set()
    metrics = None
    if args.metrics is not None:
        from ._metrics import open_metrics_listeners

        metrics = await open_metrics_listeners(args.metrics)

    def live_state() -> list[dict[str, Any]]:
        return [line_live_state(open_lines[name], name) for name in names if name in open_lines]

    async def report_done(name: str, done: trio.Event) -> None:
        await done.wait()
        done_lines.add(name)
        if len(done_lines) == len(peers):
            stop.set()

    async def run_line(spec: PeerSpec, bodies: trio.MemoryReceiveChannel[tuple[int, bytes]],
                       listener: Any) -> None:
        network: dict[str, Any] = {"connect": spec.connect}
        if listener is not None:
            network["listener"] = listener
        line = NodeLine(bodies, PeerOutput(out, spec.name), stop, network,
                        lambda done: report_done(spec.name, done),
                        lambda line: opened(spec.name, line))
        store = Path(args.data) / PEERS_DIR / spec.name / STORE_NAME
        try:
            statuses[spec.name] = await _run(identity, spec.key, store, args, config, None, line)
        except (CliError, HotlineError) as exc:
            failures.append(f"peer {spec.name!r}: {exc}")
            stop.set()

    async def dispatch(senders: dict[str, trio.MemorySendChannel[tuple[int, bytes]]]) -> None:
        nonlocal unsent
        async with contextlib.AsyncExitStack() as channels:
            for sender in senders.values():
                channels.enter_context(sender)
            if sys.stdin is None:  # Started with standard input closed: nothing to send.
                return
            number = 0  # of the input line, for error events
            async for item in read_lines(sys.stdin.fileno(), config.max_body_size + _MAX_PREFIX):
                number += 1
                if isinstance(item, int):
                    reason = f"line of {item} bytes is over the limit of {config.max_body_size}"
                    unsent += 1
                    await out.emit("error", f"!! not sent: {reason}", message=reason,
                                   line=number)
                    continue
                target = _addressed(item, names)
                if isinstance(target, str):
                    unsent += 1
                    await out.emit("error", f"!! not sent: {target}", message=target,
                                   line=number)
                    continue
                name, body = target
                if len(body) > config.max_body_size:
                    unsent += 1
                    reason = (f"body of {len(body)} bytes is over the limit of "
                              f"{config.max_body_size}")
                    await out.emit("error", f"[{name}] !! not sent: {reason}", peer=name,
                                   message=reason, line=number)
                    continue
                try:
                    await senders[name].send((number, body))
                except trio.BrokenResourceError:
                    return  # That line has ended: the node is stopping.

    async def announce(nursery: trio.Nursery, listener: Any) -> None:
        """Once every line is open, as a single-peer run once its line is: the start event
        (every other event waits for it, see Output), the control socket and the metrics."""
        await all_open.wait()
        addresses = [] if listener is None else listener.addresses
        await out.emit("start", None, schema=JSON_SCHEMA, version=package_version(),
                       identity=identity.public_key.fingerprint(),
                       peer_keys={spec.name: spec.key.fingerprint() for spec in peers},
                       listen=[f"{host}:{port}" for host, port in addresses])
        await start_monitoring(nursery, Path(args.data), metrics, live_state)

    async def run_lines(listener: Any) -> None:
        channels = {name: trio.open_memory_channel[tuple[int, bytes]](0) for name in names}
        async with trio.open_nursery() as outer:
            outer.start_soon(announce, outer, listener)
            outer.start_soon(dispatch, {name: pair[0] for name, pair in channels.items()})
            async with trio.open_nursery() as lines:
                for spec in peers:
                    lines.start_soon(run_line, spec, channels[spec.name][1], listener)
            outer.cancel_scope.cancel()  # Every line has ended: no more input is wanted.

    if args.listen is None:
        await run_lines(None)
    else:
        host, port = args.listen
        try:
            async with open_listener(identity, host, port, config=config) as listener:
                for bound_host, bound_port in listener.addresses:
                    # On stderr, as a single-peer run says it: stdout belongs to the events.
                    print(f"hotline: listening on {bound_host}:{bound_port}", file=sys.stderr,
                          flush=True)
                await run_lines(listener)
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if stop_request.signum is not None:
        logger.info("%s: closed", signal.Signals(stop_request.signum).name)
    if failures:
        raise CliError(failures[0])
    if unsent or EXIT_NOT_SENT in statuses.values():
        return EXIT_NOT_SENT
    if EXIT_INTERRUPTED in statuses.values():
        return EXIT_INTERRUPTED
    return EXIT_OK
