"""What lies between ``open_line`` and UP: who writes the handshake's answer, and how an IP
address is dialled.

The session tests run under ``autojump_clock`` over in-memory streams, so the instants they
assert are exact; the dialling tests use real loopback sockets (and the real clock), each
bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from hotline import Identity, Liveness, MemoryStore, open_line
from hotline.driver._network import as_connector, connect_failure

A = Identity.from_seed(bytes([0xA1]) * 32, "a")
B = Identity.from_seed(bytes([0xB2]) * 32, "b")

REFUSED = "connection refused: nothing listens on that port"
LIMIT = 10.0


# --- dialling an address -------------------------------------------------------------


async def test_an_ip_address_is_dialled_without_the_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def resolver_path(*args: object, **kwargs: object) -> trio.SocketStream:
        raise AssertionError("an IP address went through open_tcp_stream")

    with trio.fail_after(LIMIT):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        monkeypatch.setattr(trio, "open_tcp_stream", resolver_path)
        stream = await as_connector(("127.0.0.1", port))()
        accepted = await listeners[0].accept()
        assert isinstance(stream, trio.SocketStream)
        # As open_tcp_stream does: small records are not held back by Nagle's algorithm.
        assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await stream.send_all(b"hello")
        assert await accepted.receive_some() == b"hello"
        for item in (stream, accepted, *listeners):
            await item.aclose()


async def test_a_host_name_still_goes_through_the_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    called: list[tuple[object, ...]] = []

    async def resolver_path(host: str, port: int) -> trio.abc.Stream:
        called.append((host, port))
        near, _ = trio.testing.memory_stream_pair()
        return near

    monkeypatch.setattr(trio, "open_tcp_stream", resolver_path)
    await as_connector(("peer.example", 7700))()
    assert called == [("peer.example", 7700)]


async def test_a_refused_ip_address_is_reported_as_refused() -> None:
    with socket.socket() as held:  # bound, not listening: nothing else takes the port
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with trio.fail_after(LIMIT), pytest.raises(OSError) as refused:
            await as_connector(("127.0.0.1", port))()
    assert connect_failure(refused.value, 5.0) == REFUSED


async def test_an_ipv6_address_is_dialled_directly() -> None:
    try:
        listeners = await trio.open_tcp_listeners(0, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(LIMIT):
        stream = await as_connector(("::1", port))()
        assert stream.socket.family == socket.AF_INET6  # type: ignore[attr-defined]
        await stream.aclose()
        for listener in listeners:
            await listener.aclose()


async def test_a_line_dialling_an_ip_address_comes_up() -> None:
    with trio.fail_after(LIMIT):
        async with open_line(B, A.public_key, store=MemoryStore(),
                             listen=("127.0.0.1", 0)) as line_b:
            address = line_b.listen_addresses[0]
            async with open_line(A, B.public_key, store=MemoryStore(),
                                 connect=address) as line_a:
                await line_a.wait_liveness(Liveness.UP)
                await line_b.wait_liveness(Liveness.UP)
