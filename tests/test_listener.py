"""The listener's bounds on strangers: the handshake rate per source, the first-message
deadline and the pending slots, under a virtual clock (real TCP where the source matters)."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing
from hostile import many_sources

from hotline import Config, Identity
from hotline.driver._listener import (
    FIRST_MESSAGE_TIMEOUT,
    PENDING_PER_SOURCE,
    Listener,
    _TokenBuckets,
    source_group,
)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    buckets = _TokenBuckets(rate=20.0, burst=5)
    assert [buckets.take("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert buckets.take("b", 0.0)  # Each source has its own bucket.
    assert not buckets.take("a", 0.049)
    assert buckets.take("a", 0.05)  # One token per 1/20 s.
    assert not buckets.take("a", 0.05)
    assert [buckets.take("a", 10.0) for _ in range(6)] == [True] * 5 + [False]  # Capped.


def test_token_buckets_forget_the_idlest_keys() -> None:
    buckets = _TokenBuckets(rate=1.0, burst=1, max_keys=3)
    for key in "abcd":
        assert buckets.take(key, 0.0)
    assert buckets.take("a", 0.0)  # "a" was forgotten, so it starts with a full bucket.
    assert not buckets.take("d", 0.0)


async def test_listener_refuses_handshakes_beyond_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = Listener(Identity.generate(), config=Config(handshake_rate=2.0, handshake_burst=3))

    async def attempt() -> None:
        near, _far = trio.testing.memory_stream_pair()
        with trio.move_on_after(0.01):  # Accepted attempts then wait for a handshake.
            await listener.handle_stream(near)

    for _ in range(5):
        await attempt()
    assert listener.rate_limited == 2
    await trio.sleep(1.0)  # Two more tokens at 2 per second.
    for _ in range(3):
        await attempt()
    assert listener.rate_limited == 3


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s() -> None:
    assert source_group("192.0.2.7") == "192.0.2.7"
    assert source_group("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_group("2001:db8:1:2:aaaa::1") == source_group("2001:db8:1:2:ffff::9")
    assert source_group("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_group("2001:db8:1:3::1") != source_group("2001:db8:1:2::1")
    assert source_group("fe80::1%eth0") == "fe80::/64"
    assert source_group("local") == "local"


async def _closed_at(far: trio.abc.Stream) -> float:
    """When the listener closes its end (it never writes to a stranger)."""
    assert await far.receive_some() == b""
    return trio.current_time()


async def test_a_connection_that_sends_nothing_is_dropped_at_the_first_message_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = Listener(Identity.generate())
    assert listener.config.handshake_timeout == 10.0
    near, far = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.handle_stream, near)
        assert await _closed_at(far) == FIRST_MESSAGE_TIMEOUT == 2.0
    assert listener.rejected_handshakes == 1
    assert listener.pending_handshakes == 0


async def test_the_first_message_deadline_is_never_beyond_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = Listener(Identity.generate(), config=Config(handshake_timeout=0.5))
    near, far = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.handle_stream, near)
        assert await _closed_at(far) == 0.5


async def test_a_source_over_its_share_gives_up_its_own_oldest_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Memory streams all come from one source ("local"): the fifth connection, 0.1 s after
    the fourth, pushes the first out at once; the others keep their deadlines."""
    listener = Listener(Identity.generate())
    closed: dict[int, float] = {}

    async def stranger(index: int, task_status: trio.TaskStatus[None]) -> None:
        near, far = trio.testing.memory_stream_pair()
        nursery.start_soon(listener.handle_stream, near)
        task_status.started()
        closed[index] = await _closed_at(far)

    async with trio.open_nursery() as nursery:
        for index in range(PENDING_PER_SOURCE + 1):
            await nursery.start(stranger, index)
            await trio.sleep(0.1)
            assert listener.pending_handshakes == min(index + 1, PENDING_PER_SOURCE)
    assert PENDING_PER_SOURCE == 4
    assert closed == {0: 0.4, 1: 2.1, 2: 2.2, 3: 2.3, 4: 2.4}
    assert listener.evicted_handshakes == 1
    assert listener.rejected_handshakes == 5


@pytest.mark.skipif(not many_sources(), reason="cannot bind several loopback source addresses")
async def test_a_full_table_gives_up_its_oldest_slot_for_a_newcomer() -> None:
    """Real TCP from four loopback addresses to a table of three: the fourth connection
    pushes out the first at once, and the others stay pending."""
    listener = Listener(Identity.generate(), config=Config(max_pending_handshakes=3))
    async with trio.open_nursery() as nursery:
        host, port = (await nursery.start(listener.serve, "127.0.0.1", 0))[0]
        streams: list[trio.SocketStream] = []
        with trio.fail_after(10):
            try:
                for index in range(4):
                    streams.append(await trio.open_tcp_stream(
                        host, port, local_address=f"127.0.0.{2 + index}"))
                    while listener.pending_handshakes + listener.evicted_handshakes <= index:
                        await trio.sleep(0.001)
                assert listener.pending_handshakes == 3
                assert listener.evicted_handshakes == 1
                assert await streams[0].receive_some() == b""
                for stream in streams[1:]:
                    with trio.move_on_after(0.2) as still_open:
                        await stream.receive_some()
                    assert still_open.cancelled_caught
            finally:
                for stream in streams:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()
