"""The ``hotline`` command line: keygen, fingerprint, run, log, verify, evidence,
check-evidence, demo.

The interface is a contract (docs/cli.md): scripts drive ``hotline run --json`` and read one
JSON object per line on standard output, so nothing else is ever printed there in that mode.
Logs go to standard error. Every expected failure (a key file that cannot be used, a port in
use, a store of another line, a malformed peer key) ends with one line on standard error and
exit status 1, never a traceback; usage errors exit with 2 as argparse does. The exit statuses
are one table for every command (:mod:`._status`, docs/cli.md "Exit status").

A signal must end every command with its documented status, from the first instant, so this
module imports nothing but :mod:`._signals` and the standard library's cheapest modules:
:func:`main` puts the signal handling in place before anything else is loaded (see
:mod:`._signals`). The modules, in the order a reader needs them: :mod:`._parser` (the
grammar and help), :mod:`._keys` (``keygen``, ``fingerprint``, key loading), :mod:`._run`
(``run``), :mod:`._config_file` (``run --config``) and :mod:`._node` (``run`` serving several
peers), :mod:`._output` (what ``run`` and ``log`` print), :mod:`._commands` (``log``,
``verify``, ``evidence``, ``check-evidence``, ``demo``), :mod:`._status_cmd` (``status``),
:mod:`._control` (the control socket ``status`` reads) and :mod:`._metrics` (``run --metrics``).
"""

from __future__ import annotations

import sys

from ._signals import StartupSignals, only_interrupts

# As in hotline/__init__.py: typing would be the slowest import before main() runs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import NoReturn

__all__ = ["main"]


def _die(message: str) -> NoReturn:
    from ._status import EXIT_ERROR

    print(f"hotline: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        startup = StartupSignals.take_over()
    except KeyboardInterrupt:
        # A SIGINT that came before the handler was in place, raised at Python's first check.
        startup = StartupSignals.take_over(interrupted=True)
    try:
        return _main(argv, startup)
    finally:
        startup.restore(as_program=argv is None)


# What each command imports, imported before a signal may raise KeyboardInterrupt. Importing
# runs code compiled from strings (dataclasses, namedtuples), and once a KeyboardInterrupt has
# passed through such code CPython ends the process by SIGINT at exit, whatever the status
# main returned and even if the interrupt was caught.
_IMPORTS = {
    "keygen": ("hotline._keys",),
    "fingerprint": ("hotline._keys",),
    "run": ("trio", "hotline._config", "hotline._keys", "hotline.driver", "hotline.protocol",
            "tomllib", "hotline.cli._launch", "hotline.cli._node"),
    "log": ("msgpack", "hotline.store"),
    "verify": ("hotline._verify", "hotline.store"),
    "status": ("hotline.store", "hotline.cli._control"),
    "demo": ("trio", "hotline._demo"),
    "evidence": ("hotline._evidence", "hotline.store"),
    "check-evidence": ("hotline._evidence",),
    "conformance": ("trio", "msgpack", "hotline.conformance", "hotline.cli._keys"),
}


def _main(argv: Sequence[str] | None, startup: StartupSignals) -> int:
    import importlib
    import logging
    import os

    from .._errors import HotlineError
    from ._parser import build_parser
    from ._status import EXIT_INTERRUPTED, EXIT_OK, CliError

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
    try:
        for module in _IMPORTS[args.command]:
            importlib.import_module(module)
        startup.hand_over()
        if startup.signum is not None:
            return interrupted
        return handler(args)
    except (CliError, HotlineError) as exc:
        _die(str(exc))
    except KeyboardInterrupt:
        return interrupted
    except BaseExceptionGroup as group:
        if only_interrupts(group):
            return interrupted
        raise
    except BrokenPipeError:
        # The reader of our output went away (| head): that is its choice, not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
