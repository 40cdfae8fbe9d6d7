"""The ``hotline`` command line: keygen, fingerprint, run, log, verify, demo.

The interface is a contract (docs/cli.md): scripts drive ``hotline run --json`` and read one
JSON object per line on standard output, so nothing else is ever printed there in that mode.
Logs go to standard error. Every expected failure (a key file that cannot be used, a port in
use, a store of another line, a malformed peer key) ends with one line on standard error and
exit status 1, never a traceback; usage errors exit with 2 as argparse does. The exit statuses
are one table for every command (:mod:`._status`, docs/cli.md "Exit status").

The modules, in the order a reader needs them: :mod:`._parser` (the
grammar and help), :mod:`._keys` (``keygen``, ``fingerprint``, key loading), :mod:`._run`
(``run``), :mod:`._output` (what ``run`` and ``log`` print), :mod:`._commands` (``log``,
``verify``, ``demo``).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from ._signals import in_main_thread, only_interrupts, sigterm_as_sigint

if TYPE_CHECKING:
    import argparse

__all__ = ["main"]


def _die(message: str) -> NoReturn:
    from ._status import EXIT_ERROR

    print(f"hotline: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
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
    handles_signals = in_main_thread()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if handles_signals:
        signal.signal(signal.SIGTERM, sigterm_as_sigint)
    try:
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
    finally:
        for signum, action in previous.items() if handles_signals else ():
            # The status is decided: as the program, a late signal must not replace it
            # (with 130 or 143) while the interpreter shuts down.
            signal.signal(signum, signal.SIG_IGN if argv is None else action)
