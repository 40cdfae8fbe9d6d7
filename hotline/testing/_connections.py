"""A connection a :class:`~hotline.testing.FaultProxy` accepted, and the callables that
tamper with one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["FrameHook", "ProxiedConnection", "Takeover"]


class ProxiedConnection:
    """One connection the proxy accepted: its place in the order, and its frames if parsed."""

    def __init__(self, index: int) -> None:
        self.index = index
        """0 for the first connection the proxy accepted."""
        self.frames: dict[str, list[bytes]] = {"upstream": [], "downstream": []}
        """With ``frames=True``: every whole frame each way, length prefix included, as it
        arrived at the proxy (before the hook)."""
        self.live = True
        self.scope = trio.CancelScope()
        self.reset = False
        self._arrived = {"upstream": trio.Event(), "downstream": trio.Event()}

    async def wait_frames(self, direction: str, count: int) -> None:
        """Wait until ``count`` frames of ``direction`` have arrived."""
        while len(self.frames[direction]) < count:
            await self._arrived[direction].wait()

    def abort(self, *, reset: bool) -> None:
        self.reset = self.reset or reset
        self.scope.cancel()

    def record(self, direction: str, frame: bytes) -> int:
        self.frames[direction].append(frame)
        self._arrived[direction].set()
        self._arrived[direction] = trio.Event()
        return len(self.frames[direction]) - 1


FrameHook = Callable[[ProxiedConnection, str, int, bytes], Awaitable[list[bytes]]]
"""``hook(connection, direction, index, frame)``: the frames to forward in place of frame
``index`` (0 is the first) of ``direction`` (``"upstream"`` or ``"downstream"``)."""
Takeover = Callable[[trio.SocketStream, ProxiedConnection], Awaitable[None]]
"""``takeover(client, connection)``: play the other end of a new connection instead of
forwarding it."""
