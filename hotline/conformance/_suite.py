"""Running the cases in order, each under a deadline, and reporting one line per case."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import trio

from .._errors import HotlineError
from .._keys import Identity, PublicKey
from ._cases import CASES, CONNECT, LISTEN, Case
from ._peer import CaseFailed, CaseSkipped, Peer

__all__ = ["CaseResult", "print_result", "print_summary", "run_suite"]

#: The most one case (with the honest connection after it) may take.
CASE_TIMEOUT = 60.0

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class CaseResult:
    case: Case
    status: str
    """``PASS``, ``FAIL`` or ``SKIP``."""
    detail: str
    """Why it failed or was skipped; empty when it passed."""
    seconds: float


def cases_for(role: str, only: Sequence[str] = ()) -> list[Case]:
    """The cases that run in ``role``, in order; ``only`` selects by name."""
    chosen = [c for c in CASES if role in c.roles]
    if only:
        unknown = set(only) - {c.name for c in CASES}
        if unknown:
            raise ValueError(f"no such case: {', '.join(sorted(unknown))}")
        chosen = [c for c in chosen if c.name in only]
    return chosen


async def run_case(peer: Peer, case: Case, *, timeout: float = CASE_TIMEOUT) -> CaseResult:
    start = trio.current_time()
    status, detail = PASS, ""
    with trio.move_on_after(timeout) as scope:
        try:
            await case.run(peer)
            # Every case ends the same way: the honest peer is served afterwards.
            await peer.check_usable()
        except CaseSkipped as exc:
            status, detail = SKIP, str(exc)
        except CaseFailed as exc:
            status, detail = FAIL, str(exc)
        except (HotlineError, OSError, ValueError, trio.TooSlowError,
                trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            status, detail = FAIL, f"{type(exc).__name__}: {exc}"
    if scope.cancelled_caught:
        status, detail = FAIL, f"the case did not finish within {timeout:g} s"
    return CaseResult(case, status, detail, trio.current_time() - start)


async def run_suite(
    identity: Identity,
    implementation: PublicKey,
    *,
    connect: tuple[str, int] | None = None,
    listen: tuple[str, int] | None = None,
    only: Sequence[str] = (),
    on_result: Callable[[CaseResult], None] | None = None,
    on_listening: Callable[[tuple[str, int]], None] | None = None,
    case_timeout: float = CASE_TIMEOUT,
) -> list[CaseResult]:
    """Play the cases against the implementation whose public key is ``implementation``,
    which trusts ``identity``: dial it at ``connect``, or let it dial ``listen``."""
    if (connect is None) == (listen is None):
        raise ValueError("give exactly one of connect and listen")
    results: list[CaseResult] = []

    async def play(peer: Peer, role: str) -> None:
        for case in cases_for(role, only):
            result = await run_case(peer, case, timeout=case_timeout)
            results.append(result)
            if on_result is not None:
                on_result(result)

    if connect is not None:
        await play(Peer(identity, implementation, connect=connect), CONNECT)
        return results

    assert listen is not None
    listeners = await trio.open_tcp_listeners(listen[1], host=listen[0] or None)
    send_channel, receive_channel = trio.open_memory_channel[trio.SocketStream](math.inf)

    async def accept(listener: trio.SocketListener) -> None:
        while True:
            stream = await listener.accept()
            await send_channel.send(stream)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept, listener)
        if on_listening is not None:
            host, port = listeners[0].socket.getsockname()[:2]
            on_listening((host, port))
        await play(Peer(identity, implementation, incoming=receive_channel), LISTEN)
        nursery.cancel_scope.cancel()
    for listener in listeners:
        await listener.aclose()
    return results


def print_result(result: CaseResult, *, as_json: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        print(json.dumps({"case": result.case.name, "section": result.case.section,
                          "description": result.case.description, "status": result.status,
                          "detail": result.detail, "seconds": round(result.seconds, 3)}),
              file=out, flush=True)
        return
    print(f"{result.status:<5} {result.case.section:<5} {result.case.description}",
          file=out, flush=True)
    if result.detail:
        print(f"{'':11} {result.detail}", file=out, flush=True)


def print_summary(results: Sequence[CaseResult], *, as_json: bool,
                  out: TextIO = sys.stdout) -> None:
    counts = {status: sum(r.status == status for r in results) for status in (PASS, FAIL, SKIP)}
    if as_json:
        print(json.dumps({"summary": {"passed": counts[PASS], "failed": counts[FAIL],
                                      "skipped": counts[SKIP], "cases": len(results)}}),
              file=out, flush=True)
        return
    print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped "
          f"of {len(results)} cases", file=out, flush=True)
