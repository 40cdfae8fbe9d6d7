"""``hotline conformance``: the conformance suite (:mod:`hotline.conformance`) against any
implementation of the protocol, over TCP."""

from __future__ import annotations

import argparse
import sys

from ._status import EXIT_ERROR, EXIT_OK, CliError

__all__ = ["cmd_conformance"]


def cmd_conformance(args: argparse.Namespace) -> int:
    import trio

    from ..conformance import CaseResult, cases_for, print_result, print_summary, run_suite
    from ._keys import load_identity, load_peer

    identity = load_identity(args.key, args.passphrase_file)
    implementation = load_peer(args.peer)
    try:
        cases_for("connect" if args.connect else "listen", args.case or ())
    except ValueError as exc:
        raise CliError(str(exc)) from None

    def listening(address: tuple[str, int]) -> None:
        print(f"hotline: listening on {address[0]}:{address[1]}", file=sys.stderr, flush=True)

    def report(result: CaseResult) -> None:
        print_result(result, as_json=args.json)

    results = trio.run(lambda: run_suite(
        identity, implementation, connect=args.connect, listen=args.listen,
        only=args.case or (), on_result=report, on_listening=listening,
    ))
    print_summary(results, as_json=args.json)
    return EXIT_OK if all(r.status != "FAIL" for r in results) and results else EXIT_ERROR
