"""Standard input, read as ``run`` reads it: whole lines, by blocking reads in a worker thread.

Standard input is never switched to non-blocking mode: it is often the terminal, shared with
the shell, and job control (Ctrl-Z, ``fg``) must keep working. A thread left blocked in a read
is abandoned at exit.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import AsyncIterator

import trio

__all__ = ["read_lines", "read_some"]

logger = logging.getLogger("hotline")

_STDIN_CHUNK = 65536


def read_some(fd: int) -> bytes:
    """One blocking read of standard input, in a worker thread. A descriptor that someone
    else left non-blocking is waited on, never changed: it is shared with the terminal."""
    while True:
        try:
            return os.read(fd, _STDIN_CHUNK)
        except BlockingIOError:
            select.select([fd], [], [])



async def read_lines(fd: int, limit: int) -> AsyncIterator[bytes | int]:
    """The lines of ``fd`` without their ``\\n`` (or ``\\r\\n``), as ``run`` splits them.

    A line that grows past ``limit`` bytes before its end is read comes as its length, an
    int, its bytes not kept, so a line without end cannot fill the memory. A longer line read
    whole in one chunk comes as it is: the caller still checks the size of what it sends."""
    pending = bytearray()
    skipped = 0  # bytes of a line over the limit, counted but not kept
    while True:
        try:
            chunk = await trio.to_thread.run_sync(read_some, fd, abandon_on_cancel=True)
        except OSError as exc:
            logger.warning("cannot read standard input: %s: no more lines", exc.strerror)
            break
        if not chunk:
            break
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            text = bytes(pending[:end]).rstrip(b"\r")
            del pending[: end + 1]
            if skipped:
                yield skipped + len(text)
                skipped = 0
            else:
                yield text
        if len(pending) > limit + 1:  # + 1: room for the "\r" of a line at the limit
            skipped += len(pending) - 1
            del pending[:-1]  # the last byte may be the "\r" before the "\n"
    if skipped:
        yield skipped + len(pending)
    elif pending:
        yield bytes(pending)
