"""Lines over real TCP on 127.0.0.1: dialling, listening, crossing dials, restarts, strangers.

Real sockets and the real clock (no autojump here: the clock would jump while the kernel
works). Every test is bounded by ``trio.fail_after``; the configs shorten the redial backoff
so that reconnects take tenths of a second, not seconds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
from numbered import expected, receive_into, send_numbered

from hotline import (
    Config,
    Identity,
    Liveness,
    MemoryStore,
    PublicKey,
    open_line,
    open_listener,
)
from hotline.driver import Line, Listener, Outgoing

A = Identity.from_seed(bytes([0x71]) * 32, "a")
B = Identity.from_seed(bytes([0x72]) * 32, "b")
C = Identity.from_seed(bytes([0x73]) * 32, "c")
STRANGER = Identity.from_seed(bytes([0x74]) * 32, "stranger")

HOST = "127.0.0.1"
FAST = Config(reconnect_initial=0.05, reconnect_max=0.3)
LIMIT = 15  # Seconds any one test may take; a test needs a second or two.


class DialCounter:
    """Counts a dial callable's attempts, so a test can wait for redials instead of sleeping."""

    def __init__(self) -> None:
        self.attempts = 0
        self._changed = trio.Event()

    def count(self) -> None:
        self.attempts += 1
        self._changed.set()

    async def more(self, attempts: int) -> None:
        """Return once the callable has been called ``attempts`` more times."""
        start = self.attempts
        while self.attempts < start + attempts:
            self._changed = trio.Event()
            await self._changed.wait()


async def exchange(
    left: Line, left_name: str, right: Line, right_name: str, first: int, last: int
) -> None:
    """Both send messages ``first..last``; each must receive the other's, once, in order."""
    got_left: list[tuple[int, bytes]] = []
    got_right: list[tuple[int, bytes]] = []
    outs: dict[str, list[Outgoing]] = {}

    async def send(line: Line, name: str) -> None:
        outs[name] = await send_numbered(line, name, first, last)

    count = last - first + 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, left, left_name)
        nursery.start_soon(send, right, right_name)
        nursery.start_soon(receive_into, left, got_left, count)
        nursery.start_soon(receive_into, right, got_right, count)
    assert got_left == expected(right_name, first, last)
    assert got_right == expected(left_name, first, last)
    for name in (left_name, right_name):
        assert (await outs[name][-1].delivered()).upto == last
    await left.flush()
    await right.flush()


def socket_ends(line: Line) -> tuple[tuple[str, int], tuple[str, int]]:
    """(local, remote) addresses of the line's live TCP connection."""
    session = line._active
    assert session is not None, "no live session"
    stream = session.stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket.getsockname()[:2], stream.socket.getpeername()[:2]


async def run_until_done(
    *tasks: Callable[[], Awaitable[object]],
) -> None:
    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(task)


# --- one listens, the other dials -----------------------------------------------------------


async def test_one_listens_the_other_dials() -> None:
    with trio.fail_after(LIMIT):
        async with open_line(A, B.public_key, store=MemoryStore(), listen=(HOST, 0),
                             config=FAST) as line_a:
            (host, port), *_ = line_a.listen_addresses
            assert host == HOST
            assert port > 0
            async with open_line(B, A.public_key, store=MemoryStore(), connect=(host, port),
                                 config=FAST) as line_b:
                await exchange(line_a, "a", line_b, "b", 1, 25)
                assert line_a.liveness is Liveness.UP
                assert line_b.liveness is Liveness.UP
                # One connection, seen from both ends.
                local_a, remote_a = socket_ends(line_a)
                local_b, remote_b = socket_ends(line_b)
                assert (local_a, remote_a) == (remote_b, local_b)
                assert remote_b == (host, port)
                assert line_a.stats.sessions == 1
                assert line_b.stats.sessions == 1
                assert line_a.stats.retransmitted == 0
                # The first round trip comes with A's second ping, which echoes B's first.
                async for _event in line_b.watch():
                    if line_b.rtt is not None:
                        break
                assert 0 <= line_b.rtt < 1


# --- both dial at once --------------------------------------------------------------------


async def _settled(line_a: Line, line_b: Line) -> None:
    """Wait until both lines are up on the two ends of one and the same connection."""
    while True:
        if (
            line_a.liveness is Liveness.UP
            and line_b.liveness is Liveness.UP
            and line_a._active is not None
            and line_b._active is not None
        ):
            local_a, remote_a = socket_ends(line_a)
            local_b, remote_b = socket_ends(line_b)
            if (local_a, remote_a) == (remote_b, local_b):
                return
        await trio.sleep(0.01)


@pytest.mark.parametrize("round_", range(3))
async def test_simultaneous_dial_keeps_one_connection(round_: int) -> None:
    config = Config(reconnect_initial=0.05, reconnect_max=0.3, heartbeat_interval=0.2)
    with trio.fail_after(LIMIT):
        async with (
            open_listener(A, HOST, 0, config=config) as listener_a,
            open_listener(B, HOST, 0, config=config) as listener_b,
        ):
            port_a = listener_a.addresses[0][1]
            port_b = listener_b.addresses[0][1]
            # Both sides listen and dial each other from the first instant.
            async with (
                open_line(A, B.public_key, store=MemoryStore(), listener=listener_a,
                          connect=(HOST, port_b), config=config) as line_a,
                open_line(B, A.public_key, store=MemoryStore(), listener=listener_b,
                          connect=(HOST, port_a), config=config) as line_b,
            ):
                with trio.fail_after(5):
                    await _settled(line_a, line_b)
                await exchange(line_a, "a", line_b, "b", 1, 20)
                # Several heartbeats later it is still the same single connection.
                ends = socket_ends(line_a)
                sessions = (line_a.stats.sessions, line_b.stats.sessions)
                await trio.sleep(1.0)
                assert socket_ends(line_a) == ends
                assert (line_a.stats.sessions, line_b.stats.sessions) == sessions
                assert line_a.liveness is Liveness.UP
                assert line_b.liveness is Liveness.UP
                # Both keep the connection initiated by the smaller key.
                smaller_dialled = (A.public_key < B.public_key)
                a_dialled = ends[1][1] == port_b
                assert a_dialled == smaller_dialled, (
                    f"kept the connection dialled by {'a' if a_dialled else 'b'}; "
                    f"stats a={line_a.stats} b={line_b.stats}"
                )
                # Each side authenticated each of the two connections at most once, and
                # either refused the loser or replaced it by the winner.
                for stats in (line_a.stats, line_b.stats):
                    assert 1 <= stats.sessions <= 2
                    assert stats.sessions + stats.rejected_connections <= 2
                await exchange(line_a, "a", line_b, "b", 21, 30)


# --- the listener restarts ------------------------------------------------------------------


async def test_dialer_reconnects_after_the_listener_restarts() -> None:
    store_a, store_b = MemoryStore(), MemoryStore()
    got_by_a: list[tuple[int, bytes]] = []
    got_by_b: list[tuple[int, bytes]] = []
    where: dict[str, tuple[str, int]] = {}
    dials = DialCounter()

    async def dial() -> trio.abc.Stream:
        dials.count()
        if "a" not in where:
            raise ConnectionRefusedError("a has not listened yet")
        return await trio.open_tcp_stream(*where["a"])

    with trio.fail_after(LIMIT):
        async with open_line(B, A.public_key, store=store_b, connect=dial,
                             config=FAST) as line_b:
            async with open_line(A, B.public_key, store=store_a, listen=(HOST, 0),
                                 config=FAST) as line_a:
                where["a"] = line_a.listen_addresses[0]
                await run_until_done(
                    functools.partial(send_numbered, line_a, "a", 1, 10),
                    functools.partial(send_numbered, line_b, "b", 1, 10),
                    functools.partial(receive_into, line_a, got_by_a, 10),
                    functools.partial(receive_into, line_b, got_by_b, 10),
                )
            # A is gone. B notices, queues more, and keeps redialling the closed port.
            with trio.fail_after(5):
                await line_b.wait_liveness(Liveness.DOWN)
            outs_b = await send_numbered(line_b, "b", 11, 20)
            await dials.more(3)  # B redials the closed port meanwhile.
            assert line_b.outbox_size == 10
            assert line_b.liveness is not Liveness.UP
            # A comes back on the same port with the same store.
            port = where["a"][1]
            async with open_line(A, B.public_key, store=store_a, listen=(HOST, port),
                                 config=FAST) as line_a:
                assert line_a.listen_addresses[0][1] == port
                assert line_a.state.received_seq == 10
                assert line_a.state.acknowledged_upto == 10
                await run_until_done(
                    functools.partial(send_numbered, line_a, "a", 11, 20),
                    functools.partial(receive_into, line_a, got_by_a, 10),
                    functools.partial(receive_into, line_b, got_by_b, 10),
                )
                assert (await outs_b[-1].delivered()).upto == 20
                assert line_b.outbox_size == 0
                assert line_b.stats.reconnects >= 1
                assert line_a.stats.sessions == 1
                # Nothing more than the twenty arrives on either side.
                with trio.move_on_after(0.3):
                    extra = await line_a.receive()
                    pytest.fail(f"unexpected extra message {extra}")
    assert got_by_a == expected("b", 1, 20)
    assert got_by_b == expected("a", 1, 20)


# --- one port, several peers; strangers -----------------------------------------------------


async def test_one_listener_serves_two_peers() -> None:
    with trio.fail_after(LIMIT):
        async with open_listener(A, HOST, 0, config=FAST) as listener:
            port = listener.addresses[0][1]
            async with (
                open_line(A, B.public_key, store=MemoryStore(), listener=listener,
                          config=FAST) as a_to_b,
                open_line(A, C.public_key, store=MemoryStore(), listener=listener,
                          config=FAST) as a_to_c,
                open_line(B, A.public_key, store=MemoryStore(), connect=(HOST, port),
                          config=FAST) as b_to_a,
                open_line(C, A.public_key, store=MemoryStore(), connect=(HOST, port),
                          config=FAST) as c_to_a,
            ):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(exchange, a_to_b, "a", b_to_a, "b", 1, 15)
                    nursery.start_soon(exchange, a_to_c, "a", c_to_a, "c", 1, 15)
                # Two connections to one port, each on its own line.
                assert socket_ends(a_to_b)[0] == socket_ends(a_to_c)[0] == (HOST, port)
                assert socket_ends(a_to_b)[1] == socket_ends(b_to_a)[0]
                assert socket_ends(a_to_c)[1] == socket_ends(c_to_a)[0]
                assert listener.rejected_handshakes == 0


async def test_a_stranger_is_refused_and_the_peer_still_works() -> None:
    # The stranger redials slowly: the listener's per-address rate limit is not what
    # refuses it (and must not lock the real peer, on the same address, out).
    slow = Config(reconnect_initial=0.2, reconnect_max=0.2, reconnect_jitter=0)
    with trio.fail_after(LIMIT):
        async with open_listener(A, HOST, 0, config=FAST) as listener:
            port = listener.addresses[0][1]
            async with (
                open_line(A, B.public_key, store=MemoryStore(), listener=listener,
                          config=FAST) as a_to_b,
                open_line(STRANGER, A.public_key, store=MemoryStore(), connect=(HOST, port),
                          config=slow) as stranger,
            ):
                while listener.rejected_handshakes < 3:
                    await trio.sleep(0.05)
                assert listener.rate_limited == 0
                assert stranger.liveness is Liveness.CONNECTING
                assert stranger.stats.sessions == 0
                assert a_to_b.stats.rejected_connections == 0  # Never got past the listener.
                assert a_to_b.liveness is Liveness.CONNECTING
                # Meanwhile the real peer connects and the line works.
                async with open_line(B, A.public_key, store=MemoryStore(),
                                     connect=(HOST, port), config=FAST) as b_to_a:
                    await exchange(a_to_b, "a", b_to_a, "b", 1, 10)
                    assert stranger.stats.sessions == 0
                    assert stranger.liveness is Liveness.CONNECTING


async def test_a_raw_client_sending_garbage_is_dropped() -> None:
    with trio.fail_after(LIMIT):
        async with open_listener(A, HOST, 0, config=FAST) as listener:
            port = listener.addresses[0][1]
            async with open_line(A, B.public_key, store=MemoryStore(), listener=listener,
                                 config=FAST) as a_to_b:
                raw = await trio.open_tcp_stream(HOST, port)
                await raw.send_all(b"\x00\x30" + b"GET / HTTP/1.0\r\n" * 3)
                # The listener hangs up without a word.
                data = b""
                while chunk := await raw.receive_some():
                    data += chunk
                assert data == b""
                await raw.aclose()
                assert listener.rejected_handshakes == 1
                async with open_line(B, A.public_key, store=MemoryStore(),
                                     connect=(HOST, port), config=FAST) as b_to_a:
                    await exchange(a_to_b, "a", b_to_a, "b", 1, 5)


# --- queued while away ---------------------------------------------------------------------


async def test_messages_queued_while_the_peer_is_away_are_delivered_when_it_appears() -> None:
    where: dict[str, tuple[str, int]] = {}
    dials = DialCounter()

    async def dial() -> trio.abc.Stream:
        dials.count()
        if "a" not in where:
            raise ConnectionRefusedError("a is not there yet")
        return await trio.open_tcp_stream(*where["a"])

    got: list[tuple[int, bytes]] = []
    with trio.fail_after(LIMIT):
        async with open_line(B, A.public_key, store=MemoryStore(), connect=dial,
                             config=FAST) as line_b:
            outs = await send_numbered(line_b, "b", 1, 12)
            await dials.more(3)  # B redials a few times into the void.
            assert line_b.outbox_size == 12
            assert line_b.liveness is Liveness.CONNECTING
            assert line_b.state.peer_delivered == 0
            async with open_line(A, B.public_key, store=MemoryStore(), listen=(HOST, 0),
                                 config=FAST) as line_a:
                where["a"] = line_a.listen_addresses[0]
                await receive_into(line_a, got, 12)
                receipts = [await out.delivered() for out in outs]
                assert receipts[-1].upto == 12
                assert all(r.upto >= out.seq for r, out in zip(receipts, outs, strict=True))
                assert line_b.outbox_size == 0
                # Nothing more than the twelve arrives.
                with trio.move_on_after(0.3):
                    extra = await line_a.receive()
                    pytest.fail(f"unexpected extra message {extra}")
                assert line_a.stats.received == 12
                assert line_b.stats.retransmitted == 0
    assert got == expected("b", 1, 12)


async def test_dialling_a_closed_port_is_harmless() -> None:
    # A port nobody listens on: the dialer keeps trying, the line keeps working locally.
    probe = trio.socket.socket()
    await probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    dials = DialCounter()

    async def dial() -> trio.abc.Stream:
        dials.count()
        return await trio.open_tcp_stream(HOST, port)

    with trio.fail_after(LIMIT):
        async with open_line(B, A.public_key, store=MemoryStore(), connect=dial,
                             config=FAST) as line_b:
            await dials.more(3)  # Refused, and tried again: the dialer keeps going.
            assert line_b.liveness is Liveness.CONNECTING
            out = await line_b.send(b"later")
            assert out.seq == 1
            with trio.move_on_after(0.2) as scope:
                await out.delivered()
            assert scope.cancelled_caught
            assert line_b.outbox_size == 1


# --- a negated key ------------------------------------------------------------------------


def negated(key: PublicKey) -> PublicKey:
    """The key of the point -A (the sign bit of x flipped): the same X25519 key as ``key``."""
    raw = bytearray(key.raw)
    raw[31] ^= 0x80
    return PublicKey(bytes(raw))


async def _until_refused_or_admitted(listener: Listener, *lines: Line) -> None:
    """Wait for three refused handshakes, or for any of ``lines`` to get a session."""
    while listener.rejected_handshakes < 3 and not any(line.stats.sessions for line in lines):
        await trio.sleep(0.05)


async def test_a_dialler_that_pinned_the_negated_key_cannot_displace_the_genuine_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hotline")
    slow = Config(reconnect_initial=0.2, reconnect_max=0.2, reconnect_jitter=0)
    with trio.fail_after(LIMIT):
        async with open_listener(B, HOST, 0, config=FAST) as listener:
            port = listener.addresses[0][1]
            async with (
                open_line(B, A.public_key, store=MemoryStore(), listener=listener,
                          config=FAST) as b_to_a,
                open_line(A, B.public_key, store=MemoryStore(), connect=(HOST, port),
                          config=FAST) as a_to_b,
            ):
                await exchange(a_to_b, "a", b_to_a, "b", 1, 5)
                genuine = socket_ends(b_to_a)
                # A second node with A's key that pinned -B, which maps to B's X25519 key.
                async with open_line(A, negated(B.public_key), store=MemoryStore(),
                                     connect=(HOST, port), config=slow) as impostor:
                    await _until_refused_or_admitted(listener, impostor)
                    assert impostor.stats.sessions == 0
                    assert impostor.liveness is Liveness.CONNECTING
                    assert b_to_a.stats.sessions == 1
                    assert socket_ends(b_to_a) == genuine
                    await exchange(a_to_b, "a", b_to_a, "b", 6, 10)
                    assert socket_ends(b_to_a) == genuine
    assert "incoming handshake refused: AuthenticationError" in caplog.text


async def test_a_listener_that_pinned_the_negated_key_refuses_the_genuine_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hotline")
    slow = Config(reconnect_initial=0.2, reconnect_max=0.2, reconnect_jitter=0)
    with trio.fail_after(LIMIT):
        async with open_listener(A, HOST, 0, config=FAST) as listener:
            port = listener.addresses[0][1]
            async with (
                open_line(A, negated(B.public_key), store=MemoryStore(), listener=listener,
                          config=FAST) as a_to_minus_b,
                open_line(B, A.public_key, store=MemoryStore(), connect=(HOST, port),
                          config=slow) as b_to_a,
            ):
                await _until_refused_or_admitted(listener, a_to_minus_b, b_to_a)
                assert a_to_minus_b.stats.sessions == b_to_a.stats.sessions == 0
                assert b_to_a.liveness is Liveness.CONNECTING
    assert ("incoming handshake refused: AuthenticationError: "
            "initiator's Ed25519 key is not the pinned one") in caplog.text
