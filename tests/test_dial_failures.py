"""Failed calls reported as ``DialFailed`` events: when, how often, and with what reason.

The driver tests run under ``autojump_clock`` with a connector (an async callable) whose
behaviour the test switches, over in-memory streams only, so every report time is exact: the
backoff below (1, 2, then 4 s, no jitter) puts the calls at whole seconds. The reasons for a
real closed port and a real name that does not resolve are checked over real sockets.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
import trio
import trio.testing

from hotline import Config, DialFailed, Identity, MemoryStore, open_line
from hotline.driver._network import DIAL_REPORT_INTERVAL, address_text, connect_failure

A = Identity.from_seed(bytes([0xA1]) * 32, "a")
B = Identity.from_seed(bytes([0xB2]) * 32, "b")

#: Calls at t = 0, 1, 3, 7, 11, 15, ...: every 4 s once the backoff reaches its cap.
BACKOFF = Config(reconnect_initial=1.0, reconnect_max=4.0, reconnect_jitter=0.0)
REFUSED = "connection refused: nothing listens on that port"
CLOSED = ("connected, but the peer closed the connection during the handshake: the peer may "
          "not know our key, we may have pinned the wrong key for it, or it is rate-limiting "
          "our calls")


class Switch:
    """A connector whose failure the test chooses: refused, or a peer that hangs up or stays
    silent after TCP connects."""

    def __init__(self) -> None:
        self.mode = "refused"
        self.calls: list[float] = []
        self._silent: list[trio.abc.Stream] = []
        self.answer: Callable[[trio.abc.Stream], None] | None = None
        """In mode "peer": hands the far end of each call to a real responder."""

    async def __call__(self) -> trio.abc.Stream:
        self.calls.append(trio.current_time())
        if self.mode == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        near, far = trio.testing.memory_stream_pair()
        if self.mode == "hangs up":
            await far.aclose()
        elif self.mode == "peer":
            assert self.answer is not None
            self.answer(far)
        else:
            self._silent.append(far)  # Kept open: the handshake gets no answer.
        return near


async def _reports(
    connector: Switch, until: float, config: Config = BACKOFF,
    script: Callable[[float], None] = lambda now: None,
) -> list[tuple[float, DialFailed]]:
    """Open a line that dials through ``connector`` and collect its DialFailed events (with
    their virtual times) until ``until``; ``script`` runs at every whole second."""
    seen: list[tuple[float, DialFailed]] = []
    async with open_line(A, B.public_key, store=MemoryStore(), connect=connector,
                         config=config) as line:

        async def watch() -> None:
            async for event in line.watch():
                if not isinstance(event, DialFailed):
                    continue
                seen.append((trio.current_time(), event))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            for second in range(int(until)):
                script(float(second))
                await trio.sleep_until(second + 1)
            nursery.cancel_scope.cancel()
    return seen


async def test_the_first_failure_is_reported_at_once_then_every_30_s_at_most(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connector = Switch()
    seen = await _reports(connector, until=70)
    assert DIAL_REPORT_INTERVAL == 30.0
    assert connector.calls[:6] == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0]
    assert [(t, e.attempt, e.next_retry_in) for t, e in seen] == [
        (0.0, 1, 1.0),
        (31.0, 10, 4.0),  # the first call at least 30 s after the last report
        (63.0, 18, 4.0),
    ]
    assert {e.reason for _, e in seen} == {REFUSED}
    assert {e.address for _, e in seen} == {None}  # a callable has no address to show


async def test_a_new_reason_is_reported_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Refused, then (from t = 20) a listener that hangs up during the handshake, then (from
    t = 24) refused again: each change is reported at the first call that sees it."""
    connector = Switch()

    def script(now: float) -> None:
        if now == 20.0:
            connector.mode = "hangs up"
        elif now == 24.0:
            connector.mode = "refused"

    seen = await _reports(connector, until=60, script=script)
    assert [(t, e.attempt, e.reason) for t, e in seen] == [
        (0.0, 1, REFUSED),
        (23.0, 8, CLOSED),
        (27.0, 9, REFUSED),
        (59.0, 17, REFUSED),  # 30 s after the last report (at 27), not after the first
    ]


async def test_a_call_that_gets_through_starts_the_reports_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Refused at 0, 1 and 3 s; the call at 7 s reaches the real peer; its session ends at
    10 s and the redial at 11 s is refused again: reported at once, as the first failure of
    a new run, though the same reason was reported 11 s before."""
    connector = Switch()
    peer_sessions: list[trio.CancelScope] = []
    async with open_line(B, A.public_key, store=MemoryStore()) as peer, \
            trio.open_nursery() as peer_side:

        async def respond(stream: trio.abc.Stream) -> None:
            with trio.CancelScope() as scope:
                peer_sessions.append(scope)
                await peer.run_stream(stream, initiator=False)

        connector.answer = lambda stream: peer_side.start_soon(respond, stream)

        def script(now: float) -> None:
            if now == 5.0:
                connector.mode = "peer"
            elif now == 10.0:
                connector.mode = "refused"
                peer_sessions[0].cancel()

        seen = await _reports(connector, until=14, script=script)
        peer_side.cancel_scope.cancel()
    assert connector.calls == [0.0, 1.0, 3.0, 7.0, 11.0, 13.0]
    assert [(t, e.attempt, e.reason) for t, e in seen] == [(0.0, 1, REFUSED), (11.0, 1, REFUSED)]


async def test_a_handshake_without_an_answer_names_the_likely_causes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connector = Switch()
    connector.mode = "silent"
    seen = await _reports(connector, until=12, config=Config(
        handshake_timeout=5.0, reconnect_initial=1.0, reconnect_max=4.0, reconnect_jitter=0.0))
    assert [(t, e.attempt, e.next_retry_in) for t, e in seen] == [(5.0, 1, 1.0)]
    assert seen[0][1].reason == (
        "connected, but no answer to our handshake within 5 s: the peer may not know our "
        "key, we may have pinned the wrong key for it, or it is rate-limiting our calls")
    assert connector.calls == [0.0, 6.0]


async def test_reasons_for_real_connection_failures() -> None:
    with socket.socket() as held:  # bound, not listening: nothing else takes the port
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(OSError) as refused:
            await trio.open_tcp_stream("127.0.0.1", port)
    assert connect_failure(refused.value, 5.0) == REFUSED
    with pytest.raises(OSError) as unknown:
        await trio.open_tcp_stream("no-such-host.invalid", 9)
    assert connect_failure(unknown.value, 5.0).startswith("cannot resolve the host name (")
    assert connect_failure(trio.TooSlowError(), 5.0) == (
        "no TCP connection within 5 s: the host is down or unreachable, or a firewall drops "
        "the call")


def test_addresses_are_shown_as_dialled() -> None:
    assert address_text(("peer.example", 7700)) == "peer.example:7700"
    assert address_text(("::1", 7700)) == "[::1]:7700"
    assert address_text(Switch()) is None
