"""hotline child: one process holding one end of one or more lines, driven by commands.

``python -m bench.hotline_peer`` speaks the protocol of :mod:`bench._child`. Lines are opened
with the public API only (``open_line``, ``Line.send``, ``Outgoing.delivered``, ``Line.watch``):

- ``open``: open a named line (store ``full``/``normal`` = SQLite with that ``synchronous``,
  or ``memory``); it listens and/or dials, and may put a *relay* in front of its listener
  (:class:`hotline.testing.FaultProxy` in this process, which the bench cuts, with new
  connections refused, and restores); every line consumes
  its inbox (``auto_ack``) and reports each liveness change as an event with the
  system-wide monotonic time it happened at;
- ``send_many``: ``n`` bodies by ``concurrency`` concurrent senders (``send()`` returns once a
  message is durable, so concurrency is what lets group commit batch them); the clock runs
  from the first ``send()`` to the delivered receipt covering the last message;
- ``send_in_turn``: ``n`` bodies from one task, one after another through ``queue()``, to
  the delivered receipt of the last;
- ``latency``: one message at a time, ``send()`` to its delivered receipt;
- ``connect_times``: a fresh line (MemoryStore) dialling a listener, from ``open_line`` to
  liveness UP;
- ``queue``: queue messages (during a cut) and report when the first is delivered;
- ``big``: one large body, ``send()`` to delivered, optionally under tracemalloc;
- ``queue_away``: queue far more messages than the outbox holds to a peer that is away.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import trio

from hotline import (
    Config,
    Identity,
    Line,
    Liveness,
    MemoryStore,
    OutboxFull,
    Outgoing,
    PeerState,
    open_line,
)
from hotline.testing import FaultProxy

from . import _memory
from ._child import Commands, emit, run_child, serve


@dataclass
class Handle:
    name: str
    line: Line | None = None
    relay: FaultProxy | None = None
    stop: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)


def identity(seed_hex: str) -> Identity:
    return Identity.from_seed(bytes.fromhex(seed_hex))


async def produce(
    line: Line, body: bytes, count: int, concurrency: int, block_timeout: float | None = None
) -> tuple[int, Outgoing | None, bool]:
    """Send ``count`` bodies with ``concurrency`` tasks; returns (sent, last, blocked).

    With ``block_timeout``, a sender that waits longer than that for ``send()`` while the
    outbox is full stops: ``blocked`` is then true and fewer than ``count`` may have been sent.
    """
    sent = 0
    remaining = count
    last: Outgoing | None = None
    blocked = False

    async def worker() -> None:
        nonlocal sent, remaining, last, blocked
        while remaining > 0 and not blocked:
            remaining -= 1
            out = None
            if block_timeout is None:
                out = await line.send(body)
            else:
                with trio.move_on_after(block_timeout):
                    out = await line.send(body)
            if out is None:
                remaining += 1
                if line.outbox_size >= line.config.outbox_limit:
                    blocked = True  # Full: send() waits for receipts that cannot come.
                    return
                continue  # Only slow (a stalled commit): try again.
            sent += 1
            if last is None or out.seq > last.seq:
                last = out

    async with trio.open_nursery() as nursery:
        for _ in range(max(1, min(concurrency, count))):
            nursery.start_soon(worker)
    return sent, last, blocked


async def send_in_turn(line: Line, body: bytes, count: int) -> Outgoing:
    """``count`` bodies from one task, one after another; returns the last one's Outgoing.

    This is the loop a simple producer writes with the pipelined API: ``queue()`` returns
    once the body has its number (waiting only for room in the outbox), so consecutive
    bodies share commits; the caller then waits for the last one's receipt.
    """
    last: Outgoing | None = None
    for _ in range(count):
        last = await line.queue(body)
    assert last is not None
    return last


class Peer(Commands):
    def __init__(self) -> None:
        self.lines: dict[str, Handle] = {}

    def line(self, name: str) -> Line:
        line = self.lines[name].line
        assert line is not None
        return line

    # --- lines ---------------------------------------------------------------------------

    async def cmd_open(
        self, name: str, me: str, peer: str, store: str, path: str | None = None,
        listen: bool = False, connect: list[Any] | None = None, relay: bool = False,
        relay_cut: bool = False, config: dict[str, Any] | None = None, watch: bool = True,
    ) -> dict[str, Any]:
        if name in self.lines:
            raise ValueError(f"line {name!r} is open")
        handle = Handle(name)
        self.lines[name] = handle
        config_obj = Config(**(config or {}))
        result: dict[str, Any] = {}

        async def run(*, task_status: trio.TaskStatus[None]) -> None:
            the_store: Any = MemoryStore() if store == "memory" else path
            try:
                async with open_line(
                    identity(me), identity(peer).public_key, store=the_store,
                    durability="NORMAL" if store == "normal" else "FULL",
                    listen=("127.0.0.1", 0) if listen else None,
                    connect=tuple(connect) if connect else None,
                    config=config_obj,
                ) as line, trio.open_nursery() as nursery:
                    handle.line = line
                    if watch:  # Liveness events are stdout writes: keep them out of timings.
                        nursery.start_soon(self._watch, handle)
                    nursery.start_soon(self._consume, handle)
                    if listen:
                        result["listen"] = list(line.listen_addresses[0])
                    if relay:
                        handle.relay = FaultProxy(*line.listen_addresses[0])
                        handle.relay.refusing = relay_cut
                        await nursery.start(handle.relay.serve)
                        result["relay"] = list(handle.relay.address)
                    task_status.started()
                    await handle.stop.wait()
                    nursery.cancel_scope.cancel()
            finally:
                handle.closed.set()
                self.lines.pop(name, None)

        await self.nursery.start(run)
        return result

    async def _watch(self, handle: Handle) -> None:
        assert handle.line is not None
        async for event in handle.line.watch():
            if isinstance(event, PeerState):
                emit(event="liveness", name=handle.name, state=event.state.value,
                     t=time.monotonic(), reason=event.reason)

    async def _consume(self, handle: Handle) -> None:
        assert handle.line is not None
        async for _ in handle.line:
            pass

    async def cmd_close(self, name: str) -> dict[str, Any]:
        handle = self.lines[name]
        stats = self.line(name).stats
        handle.stop.set()
        await handle.closed.wait()
        return {"sent": stats.sent, "received": stats.received, "sessions": stats.sessions,
                "retransmitted": stats.retransmitted}

    async def cmd_wait_up(self, name: str) -> float:
        await self.line(name).wait_liveness(Liveness.UP)
        return time.monotonic()

    async def cmd_relay(self, name: str, cut: bool) -> float:
        relay = self.lines[name].relay
        assert relay is not None
        relay.refusing = cut
        if cut:
            relay.cut()
        return time.monotonic()

    # --- measurements --------------------------------------------------------------------

    async def cmd_send_many(self, name: str, n: int, size: int, concurrency: int) -> dict[str, Any]:
        line = self.line(name)
        body = os.urandom(size)
        start = time.monotonic()
        t0 = time.perf_counter()
        sent, last, _ = await produce(line, body, n, concurrency)
        t_queued = time.perf_counter()
        assert last is not None
        assert sent == n
        await last.delivered()
        elapsed = time.perf_counter() - t0
        return {"elapsed": elapsed, "rate": n / elapsed, "queued_in": t_queued - t0,
                "t0": start, "t1": time.monotonic(), "last_seq": last.seq}

    async def cmd_send_in_turn(self, name: str, n: int, size: int) -> dict[str, Any]:
        line = self.line(name)
        body = os.urandom(size)
        t0 = time.perf_counter()
        last = await send_in_turn(line, body, n)
        t_queued = time.perf_counter()
        await last.delivered()
        elapsed = time.perf_counter() - t0
        return {"elapsed": elapsed, "rate": n / elapsed, "queued_in": t_queued - t0}

    async def cmd_latency(self, name: str, n: int, size: int, warmup: int = 3) -> dict[str, Any]:
        line = self.line(name)
        body = os.urandom(size)
        total, stored = [], []
        for index in range(n + warmup):
            t0 = time.perf_counter()
            out = await line.send(body)
            t1 = time.perf_counter()
            await out.delivered()
            t2 = time.perf_counter()
            if index >= warmup:
                total.append(t2 - t0)
                stored.append(t1 - t0)
        return {"samples": total, "stored": stored}

    async def cmd_connect_times(
        self, me: str, peer: str, address: list[Any], repeats: int
    ) -> dict[str, Any]:
        # A node that connects again keeps its keys: loading them is no part of connecting.
        me_id, peer_key = identity(me), identity(peer).public_key
        samples = []
        for index in range(repeats + 1):  # The first one warms up and is not counted.
            t0 = time.perf_counter()
            async with open_line(me_id, peer_key, store=MemoryStore(),
                                 connect=tuple(address)) as line:
                await line.wait_liveness(Liveness.UP)
                elapsed = time.perf_counter() - t0
            if index:
                samples.append(elapsed)
            await trio.sleep(0.01)
        return {"samples": samples}

    async def cmd_queue(self, name: str, k: int, size: int) -> dict[str, Any]:
        line = self.line(name)
        body = os.urandom(size)
        outs = [await line.send(body) for _ in range(k)]
        first = outs[0]

        async def report_first() -> None:
            await first.delivered()
            emit(event="first_delivered", name=name, seq=first.seq, t=time.monotonic())

        self.nursery.start_soon(report_first)
        return {"first": first.seq, "last": outs[-1].seq, "t": time.monotonic()}

    async def cmd_big(self, name: str, size: int, repeats: int, trace: bool = False
                      ) -> dict[str, Any]:
        line = self.line(name)
        body = os.urandom(size)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = await line.send(body)
            await out.delivered()
            samples.append(time.perf_counter() - t0)
        result: dict[str, Any] = {"samples": samples}
        if trace:
            mark = await self.cmd_mem_begin()
            t0 = time.perf_counter()
            out = await line.send(body)
            await out.delivered()
            result["traced_elapsed"] = time.perf_counter() - t0
            result.update(await self.cmd_mem_end(**mark))
        return result

    async def cmd_mem_begin(self) -> dict[str, Any]:
        gc.collect()
        reset = _memory.reset_peak_rss()
        rss0 = _memory.rss()
        tracemalloc.start()
        return {"traced0": tracemalloc.get_traced_memory()[0], "rss0": rss0, "reset": reset}

    async def cmd_mem_end(self, traced0: int, rss0: int, reset: bool) -> dict[str, Any]:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"traced_peak": peak - traced0,
                "rss_peak": _memory.peak_rss() - rss0 if reset else None}

    async def cmd_queue_away(
        self, name: str, total: int, size: int, concurrency: int, block_timeout: float
    ) -> dict[str, Any]:
        line = self.line(name)
        body = os.urandom(size)
        samples: list[dict[str, float]] = []

        async def sampler() -> None:
            while True:
                samples.append({"t": time.monotonic(), **_memory.now()})
                await trio.sleep(0.05)

        gc.collect()
        before = _memory.now()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            t0 = time.perf_counter()
            sent, last, blocked = await produce(line, body, total, concurrency, block_timeout)
            queued = line.outbox_size
            try:
                await line.send(body, wait=False)
                raises = False
                sent += 1
            except OutboxFull:
                raises = True
            gc.collect()
            at_block = _memory.now()
            t_block = time.monotonic()
            emit(event="away_blocked", name=name, sent=sent, queued=queued, t=t_block)
            more, last2, _ = await produce(line, body, total - sent, concurrency)
            t_all_queued = time.perf_counter()
            last = last2 or last
            assert last is not None
            await last.delivered()
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
        gc.collect()
        after = _memory.now()
        return {
            "total": sent + more, "blocked": blocked, "queued_at_block": queued,
            "send_wait_false_raises": raises, "before": before, "at_block": at_block,
            "peak": {"rss": max(s["rss"] for s in samples),
                     "blocks": max(s["blocks"] for s in samples)},
            "after": after, "elapsed": elapsed, "all_queued_in": t_all_queued - t0,
            "outbox_limit": line.config.outbox_limit,
            "samples": len(samples),
        }


def main() -> None:
    run_child(serve, Peer())


if __name__ == "__main__":
    main()
