"""What ``run`` and ``log`` print: peer text made safe for a screen, and the event writer.

Whatever the peer wrote (message bodies, goodbye reasons) reaches human output only through
:func:`printable`, so it cannot move the cursor, forge a line or reorder text; ``--json``
carries it exactly.

The terminal is shared with the shell and with whatever else runs in it, so its flags are
never changed: a descriptor that someone else left non-blocking is waited on with ``select``.
Each event is written whole, by a worker thread when it cannot be written at once, before the
caller goes on: ``run`` acknowledges a message only after :meth:`Output.emit` has returned
True, so the peer's "acknowledged" means the line was shown, never a part of it.

Every JSON event carries its ``time`` (ISO 8601 UTC, when it was written); the first one of a
run is ``start``, with the :data:`JSON_SCHEMA` version a program can check before reading on.
A body travels as text in ``body`` and, when its bytes are not UTF-8, also exactly in
``body_base64`` (:func:`body_fields`).
"""

from __future__ import annotations

import base64
import json
import os
import select
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["JSON_SCHEMA", "Output", "body_fields", "iso_utc", "package_version", "printable"]

JSON_SCHEMA = 2
"""The version of the ``--json`` events, in the ``start`` event. Version 1 was the events
before they had a version: without ``time``, ``start``, ``reason``, ``line`` and
``body_base64``. A version grows by new fields and events only; a field changing its meaning
or going away makes a new version."""


def _escape_table() -> dict[int, str]:
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    escaped = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
    # Every Bidi_Control code point: they reorder the text around them on screen.
    escaped += [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    table: dict[int, str] = {}
    for code in escaped:
        char = chr(code)
        if char in named:
            table[code] = named[char]
        elif code < 0x100:
            table[code] = f"\\x{code:02x}"
        else:
            table[code] = f"\\u{code:04x}"
    return table


_ESCAPES = _escape_table()


def printable(text: str) -> str:
    """``text`` fit to show a person: controls, line and paragraph separators and bidi
    controls become ``\\n``, ``\\x1b``, ``\\u202e``...; everything else is unchanged."""
    return text.translate(_ESCAPES)


def iso_utc(timestamp_ns: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ns / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def package_version() -> str:
    """hotline's version, as installed (or as the checkout says when run from one)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("hotline")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def body_fields(body: bytes) -> dict[str, str]:
    """A message body for JSON: ``body`` as text always (replacement characters where the
    bytes are not UTF-8, so a reader of the old events keeps working), and ``body_base64``
    with the exact bytes whenever they are not UTF-8."""
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body": body.decode("utf-8", errors="replace"),
                "body_base64": base64.b64encode(body).decode("ascii")}


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data``, in a worker thread; like the reading of standard input, it
    never changes the descriptor's flags."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def write_now(fd: int, data: bytes) -> int:
    """Write what can be written at once without a thread: the bytes written, maybe none.

    A thread per line costs more than the line when a program reads the events fast (a run
    of 5,000 messages took half as long again). A pipe that polls writable has a free page,
    and a socket most of its buffer, so a write of up to PIPE_BUF bytes does not block; a
    file never does. A terminal may poll writable with less room than the line, so it is
    never written here.
    """
    if len(data) > select.PIPE_BUF or not select.select([], [fd], [], 0)[1]:
        return 0
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0



class Output:
    """Events for people, or one JSON object per line for programs.

    Each line is written whole by a worker thread, one at a time and in order, so a slow or
    paused terminal never stops the heartbeats. If standard output fails, the run stops.

    The ``start`` event comes first: other events wait until it is written. So the tasks
    that report the line may start (and subscribe to its events) before it is written,
    and miss nothing of what happens meanwhile.
    """

    def __init__(self, as_json: bool, on_failure: Callable[[str], None]) -> None:
        import trio

        self.as_json = as_json
        self._lock = trio.StrictFIFOLock()
        self._on_failure = on_failure
        self.failed = False
        self._encoding = (sys.stdout.encoding if sys.stdout is not None else None) or "utf-8"
        self._direct = not os.isatty(1)
        self._started = trio.Event()

    async def emit(self, event: str, human: str | None, **fields: Any) -> bool:
        """Write one event; True once it is written and flushed (it is never buffered).

        ``human`` None: an event for programs only, which people do not see."""

        if event == "start":
            try:
                return await self._write(event, human, fields)
            finally:
                self._started.set()
        if not self._started.is_set():  # (wait() checkpoints even when set)
            await self._started.wait()
        return await self._write(event, human, fields)

    async def _write(self, event: str, human: str | None, fields: dict[str, Any]) -> bool:
        import trio

        if self.as_json:
            record = {"event": event, **fields, "time": iso_utc(time.time_ns())}
            data = json.dumps(record, ensure_ascii=False).encode("utf-8")
        elif human is None:
            return True
        else:
            line = f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]}  {human}"
            data = line.encode(self._encoding, errors="backslashreplace")
        async with self._lock:
            if self.failed:
                return False
            data += b"\n"
            try:
                written = write_now(1, data) if self._direct else 0
                if written < len(data):
                    await trio.to_thread.run_sync(
                        write_all, 1, memoryview(data)[written:], abandon_on_cancel=True
                    )
            except OSError as exc:
                self.failed = True
                self._on_failure(f"cannot write to standard output: {exc.strerror}")
                return False
        return True
