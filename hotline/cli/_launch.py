"""``hotline run``'s entry: read the configuration file, then run one line (:mod:`._run`) or a
node serving several peers (:mod:`._node`), which runs that same flow once per line."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from ._config_file import ConfigFileError, apply_config_file, run_config
from ._keys import load_identity, load_peer
from ._run import STORE_NAME, _run, _StopRequest
from ._signals import in_main_thread
from ._status import CliError


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


