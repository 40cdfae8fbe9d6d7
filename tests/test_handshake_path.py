"""What lies between ``open_line`` and UP: who writes the handshake's answer, and how an IP
address is dialled.

The session tests run under ``autojump_clock`` over in-memory streams, so the instants they
assert are exact; the dialling tests use real loopback sockets (and the real clock), each
bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from hotline import Config, Identity, Liveness, MemoryStore, open_line
from hotline.driver import Line
from hotline.driver._network import as_connector, connect_failure
from hotline.testing import StreamWrapper

A = Identity.from_seed(bytes([0xA1]) * 32, "a")
B = Identity.from_seed(bytes([0xB2]) * 32, "b")

REFUSED = "connection refused: nothing listens on that port"
LIMIT = 10.0


class Writers(StreamWrapper):
    """Records which task makes each write; from write number ``stuck_from`` on (counting
    from 0), a write never completes, as to a peer that has stopped reading."""

    def __init__(self, inner: trio.abc.Stream, stuck_from: int | None = None) -> None:
        super().__init__(inner)
        self.tasks: list[trio.lowlevel.Task] = []
        self.stuck_from = stuck_from

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.tasks.append(trio.lowlevel.current_task())
        if self.stuck_from is not None and len(self.tasks) > self.stuck_from:
            await trio.sleep_forever()
        await self.inner.send_all(data)


async def _run(line: object, stream: trio.abc.Stream, initiator: bool,
               runners: dict[bool, trio.lowlevel.Task]) -> None:
    runners[initiator] = trio.lowlevel.current_task()
    await line.run_stream(stream, initiator=initiator)  # type: ignore[attr-defined]


async def test_the_answer_is_written_by_the_accepting_task_and_up_comes_before_any_ping(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The initiator waits on the responder's answer: it must not wait for the session's
    # writer task to be scheduled first, so the responder's first write (its answer, with its
    # opening ping) comes from the task that accepted the connection. The initiator's
    # opening ping is the writer's, and waits until the tasks woken by UP have run.
    end_a, end_b = trio.testing.memory_stream_pair()
    tap_a, tap_b = Writers(end_a), Writers(end_b)
    runners: dict[bool, trio.lowlevel.Task] = {}
    writes_at_up: list[int] = []
    async with open_line(A, B.public_key, store=MemoryStore()) as line_a, \
            open_line(B, A.public_key, store=MemoryStore()) as line_b, \
            trio.open_nursery() as nursery:

        async def up_a() -> None:
            await line_a.wait_liveness(Liveness.UP)
            writes_at_up.append(len(tap_a.tasks))

        nursery.start_soon(up_a)
        await trio.sleep(0.1)  # up_a() waits before the handshake starts.
        nursery.start_soon(_run, line_a, tap_a, True, runners)
        nursery.start_soon(_run, line_b, tap_b, False, runners)
        await line_b.wait_liveness(Liveness.UP)
        await trio.sleep(0.5)  # Both openings are written by now.
        assert writes_at_up == [1]  # Message 1 only: the opening ping came after.
        assert tap_a.tasks[0] is runners[True]
        assert tap_a.tasks[1] is not runners[True]
        assert tap_b.tasks[0] is runners[False]
        # Later writes are the session writer's.
        await trio.sleep(Config().heartbeat_interval)
        assert tap_b.tasks[-1] is not runners[False]
        nursery.cancel_scope.cancel()


async def test_a_responder_whose_answer_is_not_read_gives_up_after_down_after(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = Config()
    end_a, end_b = trio.testing.memory_stream_pair()
    tap_b = Writers(end_b, stuck_from=0)  # The responder's first write is its answer.
    async with open_line(A, B.public_key, store=MemoryStore()) as line_a, \
            open_line(B, A.public_key, store=MemoryStore(), config=config) as line_b, \
            trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(line_a.run_stream, end_a, initiator=True))
        start = trio.current_time()
        await line_b.run_stream(tap_b, initiator=False)
        # UP at the handshake, then down once the answer has waited down_after.
        assert trio.current_time() - start == pytest.approx(config.down_after)
        assert line_b.liveness is Liveness.DOWN
        assert line_b.stats.sessions == 1
        assert line_a.liveness is Liveness.CONNECTING  # It never had an answer.
        nursery.cancel_scope.cancel()


async def test_a_responder_whose_answer_fails_ends_the_session_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Broken(StreamWrapper):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            raise trio.BrokenResourceError("reset by the peer")

    end_a, end_b = trio.testing.memory_stream_pair()
    async with open_line(A, B.public_key, store=MemoryStore()) as line_a, \
            open_line(B, A.public_key, store=MemoryStore()) as line_b, \
            trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(line_a.run_stream, end_a, initiator=True))
        start = trio.current_time()
        await line_b.run_stream(Broken(end_b), initiator=False)
        assert trio.current_time() == start
        assert line_b.liveness is Liveness.DOWN
        nursery.cancel_scope.cancel()


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


# --- a line's set-up -----------------------------------------------------------------


def test_lines_share_the_default_config_and_still_jitter_their_redials() -> None:
    # A Config is validated when it is made: lines given none share one rather than each
    # validating its own. The redial jitter's generator is made when first needed.
    first, second = Line(A, B.public_key, MemoryStore()), Line(A, B.public_key, MemoryStore())
    assert first.config is second.config
    assert first.config == Config()
    config = first.config
    nominal = min(config.reconnect_max, config.reconnect_initial * 4)
    delays = {first._backoff(3) for _ in range(20)}
    assert all(nominal * (1 - config.reconnect_jitter) <= d <= nominal for d in delays)
    assert len(delays) > 1


async def test_a_listener_answers_each_call_with_a_new_ephemeral_key() -> None:
    # The listener derives the key of its answer before message 1 arrives (off the
    # initiator's wait); it must still be a fresh one for every call.
    answers: list[bytes] = []

    class FirstRead(StreamWrapper):
        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            data = await self.inner.receive_some(max_bytes)
            if not answers or len(answers[-1]) < 34:
                answers[-1] += data
            return data

    with trio.fail_after(LIMIT):
        async with open_line(B, A.public_key, store=MemoryStore(),
                             listen=("127.0.0.1", 0)) as line_b:
            address = line_b.listen_addresses[0]

            async def connect() -> trio.abc.Stream:
                answers.append(b"")
                return FirstRead(await trio.open_tcp_stream(*address))

            for _ in range(3):
                async with open_line(A, B.public_key, store=MemoryStore(),
                                     connect=connect) as line_a:
                    await line_a.wait_liveness(Liveness.UP)
    # Message 2 opens with its 2-byte frame length, then the responder's ephemeral key.
    keys = [answer[2:34] for answer in answers]
    assert len(keys) == 3
    assert all(len(key) == 32 for key in keys)
    assert len(set(keys)) == 3


def test_the_connect_path_benchmark_runs() -> None:
    # It asserts no timing: the machine running the tests may be busy with anything.
    pytest.importorskip("noise", reason="the Noise baseline needs noiseprotocol")
    root = Path(__file__).resolve().parent.parent
    for processes in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "bench.connect_path", "--processes", processes, "-n", "4"],
            cwd=root, capture_output=True, text=True, timeout=120, check=True,
        )
        assert done.stdout.startswith(f"{processes} process(es), n=4: hotline open_line to UP ")
        assert "Noise IK" in done.stdout
        assert "ratio" in done.stdout
