"""Lines to real child processes: a peer frozen with SIGSTOP, a sender killed with SIGKILL.

The child is tests/line_peer.py, run with ``sys.executable``; it reports what it does as JSON
lines on stdout. The parent is a line in this process. Real processes, real sockets, the
real clock: every wait is bounded by ``trio.fail_after``, and a child is always killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from hotline import Config, Identity, Liveness, MemoryStore, PeerState, open_line
from hotline.driver import Line
from hotline.testing import StreamWrapper

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

PEER_PROGRAM = Path(__file__).with_name("line_peer.py")
PARENT_SEED = bytes([0x91]) * 32
CHILD_SEED = bytes([0x92]) * 32
PARENT = Identity.from_seed(PARENT_SEED, "parent")
CHILD = Identity.from_seed(CHILD_SEED, "child")
HOST = "127.0.0.1"


class Child:
    """A running line_peer.py: its process and the JSON records it printed so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.records: list[dict[str, object]] = []
        self._changed = trio.Event()
        self.ended = False

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := await self.process.stdout.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.records.append(json.loads(line))
            self._changed.set()
            self._changed = trio.Event()
        self.ended = True
        self._changed.set()

    async def wait_for(self, predicate: Callable[[dict[str, object]], bool]) -> dict[str, object]:
        """The first record (printed so far or later) that matches ``predicate``."""
        seen = 0
        while True:
            for record in self.records[seen:]:
                if predicate(record):
                    return record
            seen = len(self.records)
            if self.ended:
                raise AssertionError(f"the child ended without printing it: {self.records}")
            await self._changed.wait()

    async def wait_ended(self) -> None:
        """Until the child's output has ended (and every record in it is read)."""
        while not self.ended:
            await self._changed.wait()

    def values(self, key: str) -> list[object]:
        return [record[key] for record in self.records if key in record]


@asynccontextmanager
async def child_peer(*args: str) -> AsyncIterator[Child]:
    command = [
        sys.executable, str(PEER_PROGRAM), "--me", CHILD_SEED.hex(), "--peer", PARENT_SEED.hex(),
        *args,
    ]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    child = Child(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.read)
            yield child
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()


class RxTap(StreamWrapper):
    """Wraps the parent's TCP stream and notes when bytes from the child last arrived."""

    def __init__(self, inner: trio.abc.Stream, clock: list[float]) -> None:
        super().__init__(inner)
        self.clock = clock

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.clock.append(trio.current_time())
        return data


async def record_liveness(
    line: Line, log: list[tuple[float, Liveness]],
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    started = False
    async for event in line.watch():
        if isinstance(event, PeerState):
            log.append((trio.current_time(), event.state))
        if not started:
            started = True
            task_status.started()


def received(child: Child) -> list[tuple[int, str]]:
    return [
        (int(record["received"]), str(record["body"]))  # type: ignore[call-overload]
        for record in child.records
        if "received" in record
    ]


async def test_frozen_child_is_declared_down_and_comes_back(tmp_path: Path) -> None:
    interval = 0.2
    config = Config(heartbeat_interval=interval, reconnect_initial=0.05, reconnect_max=0.3)
    bound = interval * config.heartbeat_multiplier * 1.1 + 0.3
    rx: list[float] = []
    log: list[tuple[float, Liveness]] = []
    with trio.fail_after(30):
        async with child_peer("--store", str(tmp_path), "--listen",
                              "--interval", str(interval)) as child:
            record = await child.wait_for(lambda r: "listening" in r)
            host, port = record["listening"]  # type: ignore[misc]

            async def dial() -> trio.abc.Stream:
                return RxTap(await trio.open_tcp_stream(host, port), rx)

            async with (
                open_line(PARENT, CHILD.public_key, store=MemoryStore(), connect=dial,
                          config=config) as line,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(record_liveness, line, log)
                for n in range(1, 6):
                    await line.send(f"p{n}".encode())
                await child.wait_for(lambda r: r.get("received") == 5)
                await line.wait_liveness(Liveness.UP)
                await trio.sleep(3 * interval)  # A few heartbeats both ways.
                assert line.liveness is Liveness.UP

                child.process.send_signal(signal.SIGSTOP)
                stopped_at = trio.current_time()
                with trio.fail_after(5):
                    await line.wait_liveness(Liveness.DOWN)
                await trio.sleep(0)
                down_at = next(t for t, s in reversed(log) if s is Liveness.DOWN)
                last_heard = max(t for t in rx if t <= down_at)
                silent = down_at - last_heard
                assert last_heard <= stopped_at + 0.1
                assert interval * config.heartbeat_multiplier - 0.01 <= silent <= bound, (
                    f"declared down {silent:.3f} s after the last traffic (bound {bound:.3f} s)"
                )
                print(f"SIGSTOP: down {silent:.3f} s after the last traffic "
                      f"({down_at - stopped_at:.3f} s after the signal)")
                suspects = [t for t, s in log if s is Liveness.SUSPECT and t >= last_heard]
                assert suspects, log
                assert suspects[0] - last_heard >= config.suspect_after * interval - 0.01

                # Messages queued while the child is frozen wait for it.
                for n in range(6, 11):
                    await line.send(f"p{n}".encode())
                await trio.sleep(0.5)
                assert received(child)[-1][0] == 5
                assert line.liveness is not Liveness.UP

                child.process.send_signal(signal.SIGCONT)
                resumed_at = trio.current_time()
                with trio.fail_after(5):
                    await line.wait_liveness(Liveness.UP)
                back = trio.current_time() - resumed_at
                print(f"SIGCONT: up again after {back:.3f} s")
                await child.wait_for(lambda r: r.get("received") == 10)
                assert received(child) == [(n, f"p{n}") for n in range(1, 11)]
                assert line.stats.reconnects >= 1
                assert (await line.send(b"p11")).seq == 11
                await child.wait_for(lambda r: r.get("received") == 11)
                nursery.cancel_scope.cancel()


async def test_sender_killed_mid_stream_resumes_without_loss_or_duplicates(
    tmp_path: Path,
) -> None:
    total = 300
    kill_after = 40
    got: list[tuple[int, bytes]] = []
    queued_before_kill: list[int] = []
    with trio.fail_after(60):
        async with (
            open_line(PARENT, CHILD.public_key, store=MemoryStore(), listen=(HOST, 0)) as line,
            trio.open_nursery() as nursery,
        ):
            port = line.listen_addresses[0][1]
            everything = trio.Event()

            async def receive_all() -> None:
                async for message in line:
                    got.append((message.seq, message.body))
                    message.ack()
                    if message.seq == total:
                        everything.set()

            nursery.start_soon(receive_all)
            args = ("--store", str(tmp_path), "--connect", f"{HOST}:{port}", "--send", str(total))
            async with child_peer(*args) as child:
                await child.wait_for(lambda r: int(r.get("queued", 0)) >= kill_after)  # type: ignore[call-overload]
                child.process.send_signal(signal.SIGKILL)
                held_at_kill = len(got)
                await child.process.wait()
                await child.wait_ended()
                queued_before_kill = [int(q) for q in child.values("queued")]  # type: ignore[call-overload]
            assert not everything.is_set()
            last_queued = queued_before_kill[-1]
            assert queued_before_kill == list(range(1, last_queued + 1))
            assert last_queued < total, "the child finished before it was killed"

            async with child_peer(*args, "--resume") as child:
                opened = await child.wait_for(lambda r: "opened" in r)
                resumed_from = opened["opened"]["sent_seq"]  # type: ignore[index]
                # Everything it reported as queued is in its store.
                assert resumed_from >= last_queued
                await child.wait_for(lambda r: r.get("delivered") == total)
                with trio.fail_after(10):
                    await everything.wait()
                queued_after = [int(q) for q in child.values("queued")]  # type: ignore[call-overload]
                assert queued_after == list(range(resumed_from + 1, total + 1))
                print(f"SIGKILL: {last_queued} reported queued, {resumed_from} stored, "
                      f"{held_at_kill} read by the parent at the kill")
            nursery.cancel_scope.cancel()
    assert got == [(n, f"m{n}".encode()) for n in range(1, total + 1)]


async def test_receiver_killed_mid_stream_reads_on_from_its_acknowledgement(
    tmp_path: Path,
) -> None:
    """A receiver killed while it reads: after restart it yields exactly the messages after
    its last durable acknowledgement, and no receipt it had sent claimed more than its store
    held (receipts follow the commit, never precede it)."""
    total = 150
    kill_after = 40
    with trio.fail_after(60):
        async with open_line(PARENT, CHILD.public_key, store=MemoryStore(),
                             listen=(HOST, 0)) as line:
            port = line.listen_addresses[0][1]
            args = ("--store", str(tmp_path), "--connect", f"{HOST}:{port}", "--pace", "0.004")
            for n in range(1, total + 1):
                last = await line.send(f"m{n}".encode())
            async with child_peer(*args) as child:
                await child.wait_for(lambda r: int(r.get("received", 0)) >= kill_after)  # type: ignore[call-overload]
                child.process.send_signal(signal.SIGKILL)
                # What the parent holds receipts for at the moment of the kill (nothing the
                # child sends can arrive after it).
                delivered_seen = line.state.peer_delivered
                acknowledged_seen = line.state.peer_acknowledged
                await child.process.wait()
                await child.wait_ended()
                first_life = received(child)
            printed = [seq for seq, _ in first_life]
            assert printed == list(range(1, len(printed) + 1))
            assert len(printed) < total, "the child read everything before it was killed"

            async with child_peer(*args) as child:
                opened = (await child.wait_for(lambda r: "opened" in r))["opened"]
                held = opened["received_seq"]  # type: ignore[index]
                acknowledged = opened["acknowledged_upto"]  # type: ignore[index]
                assert delivered_seen <= held, (delivered_seen, held)
                assert acknowledged_seen <= acknowledged, (acknowledged_seen, acknowledged)
                # Acknowledged only after printing; re-yielded: exactly the unacknowledged.
                assert acknowledged <= len(printed)
                await child.wait_for(lambda r: r.get("received") == total)
                second_life = received(child)
                assert second_life == [(n, f"m{n}") for n in range(acknowledged + 1, total + 1)]
                with trio.fail_after(10):
                    await last.acknowledged()
                print(f"SIGKILL receiver: printed {len(printed)}, held {held}, "
                      f"acknowledged {acknowledged}; the parent had receipts for "
                      f"{delivered_seen} delivered / {acknowledged_seen} acknowledged")
