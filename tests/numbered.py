"""Numbered messages for tests of live lines.

Each body says who sent it and its number, so a test states what a side must have received
as ``expected(sender, first, last)`` and compares it with what :func:`receive_into` recorded.
Import it as ``import numbered`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from hotline import Line, Outgoing


def body(sender: str, n: int) -> bytes:
    return f"{sender}#{n}".encode()


async def send_numbered(line: Line, sender: str, first: int, last: int) -> list[Outgoing]:
    """Send messages ``first..last``, checking that each gets its number."""
    outs = []
    for n in range(first, last + 1):
        out = await line.send(body(sender, n))
        assert out.seq == n
        outs.append(out)
    return outs


async def receive_into(line: Line, got: list[tuple[int, bytes]], count: int) -> None:
    """The application: read ``count`` messages, acknowledging each once it is recorded."""
    for _ in range(count):
        message = await line.receive()
        got.append((message.seq, message.body))
        message.ack()


def expected(sender: str, first: int, last: int) -> list[tuple[int, bytes]]:
    return [(n, body(sender, n)) for n in range(first, last + 1)]
