"""The listener's bounds on strangers: the handshake rate per source, under a virtual clock."""

from __future__ import annotations

import trio
import trio.testing

from hotline import Config, Identity
from hotline._listener import Listener, _TokenBuckets


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
