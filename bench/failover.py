"""Several paths: the failover gap beside the single-path recovery gap, and a standby's CPU.

``python -m bench.failover [--quick] [--repeats R]`` prints one JSON object.

Both ends run in this process over real TCP on 127.0.0.1, each path through its own
:class:`~hotline.testing.FaultProxy`. A sends a steady stream (one message every
``SEND_EVERY`` s) and B's application records when each message arrives; then the path that
carries the stream is black-holed (the proxy drops every byte both ways, the connections stay
open). The *gap* is the longest time between two deliveries at B:

- with two paths, the stream moves to the standby when A finds the active path suspect
  (``suspect_after`` heartbeats of silence) and resends what had no receipt: the failover gap;
- with one path, A must find the peer down (``heartbeat_multiplier`` heartbeats), the proxy
  lets calls through again at that moment, and the dialler backs off, calls and handshakes:
  the single-path recovery gap (down + redial + handshake).

Every run also checks that B took every message exactly once and in order.

The standby's CPU: the process's CPU time over idle windows with no connection, with one path
and with two paths (both ends' share, heartbeats every ``IDLE_HEARTBEAT`` s). One path's
heartbeats cost (one path - none); a standby costs (two paths - one path). The target is a
standby costing no more than its heartbeats: a ratio of about 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from typing import Any

import trio

from hotline import Config, Identity, Liveness, MemoryStore, open_line
from hotline.testing import open_fault_proxy

A = Identity.from_seed(b"p" * 32)
B = Identity.from_seed(b"q" * 32)
SEND_EVERY = 0.005
#: Heartbeat interval of the idle CPU windows: often enough that heartbeats stand out.
IDLE_HEARTBEAT = 0.05


async def gap_once(paths: int, config: Config, warmup: float, after: float) -> dict[str, Any]:
    """One black-holed stream over ``paths`` paths; the longest gap between deliveries."""
    delivered: list[tuple[float, bytes]] = []
    sent: list[bytes] = []
    listen = [("127.0.0.1", 0)] * paths
    async with open_line(B, A.public_key, store=MemoryStore(), config=config, listen=listen,
                         max_paths=paths) as b:
        ports = [port for _, port in b.listen_addresses]
        async with trio.open_nursery() as proxies:
            opened = [await proxies.start(_proxy, port) for port in ports]
            async with open_line(A, B.public_key, store=MemoryStore(), config=config,
                                 connect=[proxy.address for proxy in opened],
                                 max_paths=paths) as a, trio.open_nursery() as tasks:

                async def receive() -> None:
                    # Each stamped as it arrives (a comprehension would add nothing until
                    # the line closes).
                    async for message in b:
                        delivered.append((trio.current_time(), message.body))  # noqa: PERF401

                async def stream(until: trio.Event) -> None:
                    while not until.is_set():
                        body = b"%08d" % len(sent)
                        await a.queue(body)
                        sent.append(body)
                        await trio.sleep(SEND_EVERY)

                tasks.start_soon(receive)
                while not (a.liveness is Liveness.UP and b.liveness is Liveness.UP
                           and len(a.paths) == paths * (paths > 1)
                           and all(p.rtt is not None for p in a.paths)):
                    await trio.sleep(0.01)
                stop = trio.Event()
                tasks.start_soon(stream, stop)
                await trio.sleep(warmup)
                if paths == 1:
                    proxy = opened[0]
                    proxy.hold()
                    await a.wait_liveness(Liveness.DOWN)
                    proxy.release()  # The peer is back: the dialler calls again.
                else:
                    (active,) = [p for p in a.paths if p.active]
                    proxy = next(p for p in opened if active.label.endswith(f":{p.port}"))
                    proxy.hold()
                mark = len(sent)
                while len(delivered) <= mark:
                    await trio.sleep(0.005)
                await trio.sleep(after)
                stop.set()
                while len(delivered) < len(sent):
                    await trio.sleep(0.005)
                await trio.sleep(0.05)  # A late copy would show up now.
                tasks.cancel_scope.cancel()
            proxies.cancel_scope.cancel()
    bodies = [body for _, body in delivered]
    if bodies != sent:
        raise AssertionError(f"{paths} path(s): {len(sent)} sent, {len(bodies)} delivered, "
                             "not exactly once in order")
    times = [t for t, _ in delivered]
    return {"gap_s": max(later - earlier for earlier, later in itertools.pairwise(times)),
            "messages": len(sent)}


async def _proxy(port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_fault_proxy("127.0.0.1", port) as proxy:
        task_status.started(proxy)
        await trio.sleep_forever()


async def idle_cpu(paths: int, window: float) -> float:
    """CPU microseconds per second of this process with an idle line of ``paths`` paths
    (0: both ends open, nothing connects them)."""
    config = Config(heartbeat_interval=IDLE_HEARTBEAT)
    listen = [("127.0.0.1", 0)] * max(paths, 1)
    async with open_line(B, A.public_key, store=MemoryStore(), config=config, listen=listen,
                         max_paths=max(paths, 1)) as b:
        connect = [("127.0.0.1", port) for _, port in b.listen_addresses][:paths]
        async with open_line(A, B.public_key, store=MemoryStore(), config=config,
                             connect=connect or None, max_paths=max(paths, 1)) as a:
            while paths and not (len(a.paths) == paths * (paths > 1)
                                 and a.liveness is Liveness.UP):
                await trio.sleep(0.01)
            await trio.sleep(IDLE_HEARTBEAT * 4)  # Past the opening flights.
            start_cpu, start = time.process_time(), trio.current_time()
            await trio.sleep(window)
            used = time.process_time() - start_cpu
            return used / (trio.current_time() - start) * 1e6


async def measure(quick: bool, repeats: int) -> dict[str, Any]:
    interval = 0.1 if quick else 1.0
    config = Config(heartbeat_interval=interval, reconnect_jitter=0)
    warmup = 0.3 if quick else 1.0
    failover, single = [], []
    for _ in range(repeats):
        failover.append(await gap_once(2, config, warmup, after=0.1))
        single.append(await gap_once(1, config, warmup, after=0.1))
    window = 0.5 if quick else 5.0
    idle: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for _ in range(repeats):
        for paths in (0, 1, 2):
            idle[paths].append(await idle_cpu(paths, window))
    none, one, two = (statistics.median(idle[n]) for n in (0, 1, 2))
    heartbeats = one - none
    standby = two - one
    return {
        "heartbeat_interval": interval,
        "suspect_s": config.suspect_after * interval,
        "down_s": config.down_after,
        "failover_gap_s": [round(run["gap_s"], 4) for run in failover],
        "single_path_gap_s": [round(run["gap_s"], 4) for run in single],
        "messages": [run["messages"] for run in failover + single],
        "idle_heartbeat_s": IDLE_HEARTBEAT,
        "idle_window_s": window,
        "idle_cpu_us_per_s": {str(n): [round(v, 1) for v in idle[n]] for n in idle},
        "path_heartbeats_cpu_us_per_s": round(heartbeats, 1),
        "standby_cpu_us_per_s": round(standby, 1),
        "standby/heartbeats": round(standby / heartbeats, 3) if heartbeats > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="heartbeat 0.1 s, short windows")
    parser.add_argument("--repeats", type=int, default=None, help="default 2 quick, 5 full")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    print(json.dumps(trio.run(measure, args.quick, repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
