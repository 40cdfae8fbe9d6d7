"""A stream that passes every call through, for tests that watch or change one of them."""

from __future__ import annotations

import trio

__all__ = ["StreamWrapper"]


class StreamWrapper(trio.abc.Stream):
    """Passes every call through to ``inner``.

    Subclass it and override only the calls a test watches (when bytes arrive, what is sent)
    or changes (drop, hold, fail): the rest stays a faithful stream.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()
