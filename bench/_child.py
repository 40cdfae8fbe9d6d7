"""The command loop of a bench child process.

A child reads one JSON command per line on standard input, ``{"id": 7, "cmd": "send_many",
...arguments}``, runs each as its own trio task (so a long command and a short one can run at
once), and answers on standard output with ``{"id": 7, "ok": true, "result": {...}}`` or
``{"id": 7, "ok": false, "error": "traceback"}``. Anything it wants to report unasked (a
liveness change, with the system-wide monotonic time it happened at) is a line with an
``"event"`` key. The child ends when its standard input closes. Logs go to standard error.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

__all__ = ["Commands", "emit", "run_child", "serve"]

Handler = Callable[..., Awaitable[Any]]


def emit(**record: Any) -> None:
    """Write one JSON line to standard output, flushed."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Commands:
    """Base class of a child's command set: every ``cmd_NAME`` coroutine is command NAME."""

    nursery: trio.Nursery

    def handler(self, name: str) -> Handler:
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            raise KeyError(f"unknown command {name!r}")
        return handler  # type: ignore[no-any-return]


async def _run_one(commands: Commands, request: dict[str, Any]) -> None:
    request_id = request.pop("id")
    name = request.pop("cmd")
    try:
        result = await commands.handler(name)(**request)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        emit(id=request_id, ok=False, error=traceback.format_exc())
    else:
        emit(id=request_id, ok=True, result=result)


async def serve(commands: Commands) -> None:
    """Run ``commands`` until standard input closes."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with trio.open_nursery() as nursery:
        commands.nursery = nursery
        emit(event="ready", pid=os.getpid())
        buffer = b""
        async with stdin:
            while chunk := await stdin.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        nursery.start_soon(_run_one, commands, json.loads(line))
        nursery.cancel_scope.cancel()


def run_child(async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """``trio.run(async_fn, *args)``, under cProfile when BENCH_PROFILE_DIR is set.

    The profile (main thread only: store commits run in worker threads) is written to
    ``$BENCH_PROFILE_DIR/$BENCH_CHILD_NAME.prof`` when the child ends normally.
    """
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if not profile_dir:
        trio.run(async_fn, *args)
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(trio.run, async_fn, *args)
    finally:
        name = os.environ.get("BENCH_CHILD_NAME", f"child-{os.getpid()}")
        profiler.dump_stats(str(Path(profile_dir) / f"{name}.prof"))
