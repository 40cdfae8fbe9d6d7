"""The test scaffolding of :mod:`hotline.testing`.

The relay's hand controls (:class:`~hotline.testing.FaultProxy`), over real loopback TCP: the
drawn faults are tested in test_faults.py; these are what the demo, the benchmark and the
hostile suite drive by hand: hold and release, cut, refusing, frames with a hook, takeover.
The target is an echo server, so every byte that crosses the proxy both ways comes back.

:class:`~hotline.testing.StreamWrapper` goes through trio's own generic stream checks.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from hotline.testing import FaultProxy, ProxiedConnection, StreamWrapper, open_fault_proxy

LIMIT = 10.0


class Echo:
    def __init__(self) -> None:
        self.accepted = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def echo_behind_proxy(*, frames: bool = False) -> AsyncIterator[tuple[Echo, FaultProxy]]:
    echo = Echo()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, echo.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with open_fault_proxy("127.0.0.1", port, frames=frames) as proxy:
            yield echo, proxy
        nursery.cancel_scope.cancel()


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"end of stream after {data!r}"
        data += chunk
    return data


async def wait_until_dropped(proxy: FaultProxy, upstream: int) -> None:
    # The proxy reports no event for a dropped byte: poll its counter, under the test's deadline.
    while proxy.stats.upstream.bytes_dropped < upstream:
        await trio.sleep(0.001)


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


async def test_hold_drops_both_ways_on_a_live_connection_until_released() -> None:
    with trio.fail_after(LIMIT):
        async with echo_behind_proxy() as (_, proxy):
            client = await trio.open_tcp_stream(*proxy.address)
            await client.send_all(b"before")
            assert await receive_exactly(client, 6) == b"before"
            proxy.hold()
            await client.send_all(b"lost")
            await wait_until_dropped(proxy, 4)
            proxy.release()
            await client.send_all(b"after")
            assert await receive_exactly(client, 5) == b"after"
            assert proxy.stats.upstream.faults["hold"] == 1
            assert proxy.stats.upstream.bytes_forwarded == len(b"beforeafter")
            await client.aclose()


async def test_cut_resets_the_live_connections_and_counts_them() -> None:
    with trio.fail_after(LIMIT):
        async with echo_behind_proxy() as (_, proxy):
            first = await trio.open_tcp_stream(*proxy.address)
            second = await trio.open_tcp_stream(*proxy.address)
            third = await trio.open_tcp_stream(*proxy.address)
            for client in (first, second, third):
                await client.send_all(b"x")
                assert await receive_exactly(client, 1) == b"x"
            await first.aclose()
            while proxy.connections[0].live:
                await trio.sleep(0.001)
            assert proxy.cut(1) == 1
            with pytest.raises(trio.BrokenResourceError):
                await second.receive_some(1)
            assert proxy.cut() == 1  # Only the third is still live.
            with pytest.raises(trio.BrokenResourceError):
                await third.receive_some(1)
            assert [c.index for c in proxy.connections] == [0, 1, 2]


async def test_refusing_resets_new_connections_without_dialling_the_target() -> None:
    with trio.fail_after(LIMIT):
        async with echo_behind_proxy() as (echo, proxy):
            proxy.refusing = True
            refused = await trio.open_tcp_stream(*proxy.address)
            with pytest.raises(trio.BrokenResourceError):
                await refused.receive_some(1)
            assert echo.accepted == 0
            proxy.refusing = False
            client = await trio.open_tcp_stream(*proxy.address)
            await client.send_all(b"back")
            assert await receive_exactly(client, 4) == b"back"
            assert echo.accepted == 1
            await client.aclose()


async def test_frames_are_recorded_whole_and_the_hook_replaces_them() -> None:
    with trio.fail_after(LIMIT):
        async with echo_behind_proxy(frames=True) as (_, proxy):
            seen: list[tuple[int, str, int, bytes]] = []

            async def hook(
                connection: ProxiedConnection, direction: str, index: int, data: bytes
            ) -> list[bytes]:
                seen.append((connection.index, direction, index, data))
                if direction == "upstream" and index == 1:
                    return [frame(b"in its place"), frame(b"and one more")]
                if direction == "upstream" and index == 2:
                    return []
                return [data]

            proxy.hook = hook
            client = await trio.open_tcp_stream(*proxy.address)
            wire = frame(b"zero") + frame(b"one") + frame(b"two") + frame(b"three")
            # Split inside a length prefix and inside a body: frames are reassembled first.
            for piece in (wire[:1], wire[1:9], wire[9:]):
                await client.send_all(piece)
            expected = frame(b"zero") + frame(b"in its place") + frame(b"and one more") + frame(
                b"three"
            )
            assert await receive_exactly(client, len(expected)) == expected
            connection = proxy.connections[0]
            await connection.wait_frames("downstream", 4)
            assert connection.frames["upstream"] == [
                frame(b"zero"), frame(b"one"), frame(b"two"), frame(b"three")
            ]
            assert b"".join(connection.frames["downstream"]) == expected
            assert seen[:4] == [
                (0, "upstream", 0, frame(b"zero")),
                (0, "upstream", 1, frame(b"one")),
                (0, "upstream", 2, frame(b"two")),
                (0, "upstream", 3, frame(b"three")),
            ]
            await client.aclose()


async def test_takeover_plays_the_other_end_instead_of_the_target() -> None:
    with trio.fail_after(LIMIT):
        async with echo_behind_proxy() as (echo, proxy):

            async def takeover(client: trio.SocketStream, connection: ProxiedConnection) -> None:
                request = await receive_exactly(client, 5)
                await client.send_all(b"not the target: " + request)

            proxy.takeover = takeover
            client = await trio.open_tcp_stream(*proxy.address)
            await client.send_all(b"hello")
            answer = b"not the target: hello"
            assert await receive_exactly(client, len(answer)) == answer
            assert await client.receive_some(1) == b""
            await proxy.wait_connections(1)
            assert echo.accepted == 0


async def test_stream_wrapper_is_a_faithful_stream() -> None:
    async def wrapped(
        make: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]],
    ) -> tuple[StreamWrapper, StreamWrapper]:
        left, right = make()
        return StreamWrapper(left), StreamWrapper(right)

    with trio.fail_after(LIMIT):
        await trio.testing.check_two_way_stream(
            functools.partial(wrapped, trio.testing.memory_stream_pair),
            functools.partial(wrapped, trio.testing.lockstep_stream_pair),
        )
