"""``python -m bench``: hotline against its ceilings and baselines, in one process tree.

See bench/README.md for what each figure means and how it is taken.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import ceilings
from ._plan import Plan, plan_for
from ._proc import ROOT, BenchError, Proc, is_liveness
from ._stats import summarize
from ._wire import make_certificates
from .cli_row import cli_rates

KINDS = ("tcp", "tls", "noise")
A_SEED = "a1" * 32
B_SEED = "b2" * 32
BODY = 1024
MIB = 1 << 20

SECTIONS = ("ceilings", "wire", "hotline", "peers", "cli", "sweep", "scale", "idle", "paths")


@dataclass
class Run:
    plan: Plan
    tmp: Path
    logs: Path
    nursery: trio.Nursery
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    skipped_figures: set[str] = field(default_factory=set)
    peer_failures: list[dict[str, str]] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)
    certs_file: str = ""
    noise_key: str = ""
    noise_pub: str = ""
    store_counter: int = 0

    def store_path(self, name: str) -> str:
        self.store_counter += 1
        return str(self.tmp / f"{self.store_counter:03d}-{name}.db")

    def say(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def skip(self, text: str, figures: tuple[str, ...] = ()) -> None:
        """A measurement that cannot run here: said now, and again under the table."""
        self.say(f"SKIPPED: {text}")
        self.skipped.append(text)
        self.skipped_figures.update(figures)


# --- helpers ------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("hotline", "trio", "pynacl", "cryptography", "msgpack", "noiseprotocol",
                    "matplotlib", "rns", "pyzmq"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _filesystem(path: Path) -> dict[str, str]:
    best = ("", "?", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mount_point, fs_type, *_ = line.split()
                if str(path).startswith(mount_point) and len(mount_point) > len(best[0]):
                    best = (mount_point, fs_type, device)
    except OSError:
        pass
    return {"mount_point": best[0], "type": best[1], "device": best[2]}


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=False,
        ).stdout.strip()
    except OSError:
        return ""


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


async def _hotline_pair(
    run: Run, name: str, store: str, config: dict[str, Any], *, relay: bool = False,
    relay_cut: bool = False,
) -> None:
    a, b = run.procs["A"], run.procs["B"]
    opened = await b.request(
        "open", name=name, me=B_SEED, peer=A_SEED, store=store, path=run.store_path(name + "-b"),
        listen=True, relay=relay, relay_cut=relay_cut, config=config,
    )
    target = opened["relay"] if relay else opened["listen"]
    await a.request("open", name=name, me=A_SEED, peer=B_SEED, store=store,
                    path=run.store_path(name + "-a"), connect=target, config=config)
    if not relay_cut:
        await a.request("wait_up", name=name, timeout=60)


async def _close_pair(run: Run, name: str) -> None:
    await run.procs["A"].request("close", name=name, timeout=60)
    await run.procs["B"].request("close", name=name, timeout=60)


def _heartbeat_config(plan: Plan) -> dict[str, Any]:
    return {"heartbeat_interval": plan.heartbeat_interval,
            "heartbeat_multiplier": plan.heartbeat_multiplier}


def _count(n: int, size: int, budget: int, minimum: int) -> int:
    return max(minimum, min(n, budget // size))


# --- sections -----------------------------------------------------------------------------


async def section_ceilings(run: Run) -> None:
    plan = run.plan
    run.say("ceilings: Ed25519, ChaCha20-Poly1305, fsync")
    run.figures.update(ceilings.crypto_ceilings(plan.crypto_ops, plan.crypto_repeats))
    run.figures.update(ceilings.fsync_ceiling(run.tmp, plan.fsync_count))


async def _start_wire(run: Run) -> Proc:
    if "wire-client" in run.procs:
        return run.procs["wire-client"]
    server = await Proc.start(run.nursery, "wire-server", "bench.wire_peer",
                              ["server", "--certs", run.certs_file, "--noise-key", run.noise_key],
                              run.logs)
    run.procs["wire-server"] = server
    ports = (await server.wait_event(lambda e: e.get("event") == "ports", timeout=30))["ports"]
    client = await Proc.start(
        run.nursery, "wire-client", "bench.wire_peer",
        ["client", "--certs", run.certs_file, "--noise-pub", run.noise_pub,
         "--ports", json.dumps(ports)], run.logs,
    )
    run.procs["wire-client"] = client
    return client


def _wire_prefix(kind: str) -> str:
    return "ceiling.tcp" if kind == "tcp" else f"baseline.{kind}"


async def section_wire(run: Run) -> None:
    plan = run.plan
    client = await _start_wire(run)
    for kind in KINDS:
        prefix = _wire_prefix(kind)
        run.say(f"wire {kind}: throughput, ping-pong, connect")
        result = await client.request("throughput", kind=kind, n=plan.wire_n, size=BODY,
                                      repeats=plan.wire_repeats, timeout=600)
        run.figures[f"{prefix}_throughput"] = summarize(
            result["rates"], "msg/s", records=plan.wire_n, size=BODY,
            method="2 processes, one send_all per length-prefixed record, clock from the "
                   "first send to the receiver's confirmation of the last")
        result = await client.request("pingpong", kind=kind, n=plan.rtt_n, size=BODY,
                                      repeats=plan.rtt_repeats, timeout=600)
        run.figures[f"{prefix}_rtt_ms"] = summarize(result["samples"], "ms", scale=1e3,
                                                    p99=True, size=BODY)
        result = await client.request("connect", kind=kind, repeats=plan.connect_repeats,
                                      timeout=600)
        extra = {"cipher": result["cipher"]} if result.get("cipher") else {}
        run.figures[f"{prefix}_connect_ms"] = summarize(
            result["samples"], "ms", scale=1e3, p99=True,
            method="client side: TCP connect to handshake complete", **extra)


async def _start_hotline(run: Run) -> None:
    if "A" not in run.procs:
        run.procs["A"] = await Proc.start(run.nursery, "A", "bench.hotline_peer", [], run.logs)
        run.procs["B"] = await Proc.start(run.nursery, "B", "bench.hotline_peer", [], run.logs)


async def section_hotline(run: Run) -> None:
    plan = run.plan
    await _start_hotline(run)
    a, b = run.procs["A"], run.procs["B"]
    heartbeat = _heartbeat_config(plan)
    downs: dict[str, int] = {"down": 0, "suspect": 0, "runs": 0}
    down_events: list[dict[str, Any]] = []

    # 1, 2: throughput and latency, per store.
    for store in ("full", "normal", "memory"):
        name = f"tp-{store}"
        run.say(f"hotline {store}: throughput and latency")
        await _hotline_pair(run, name, store, heartbeat)
        await a.request("send_many", name=name, n=min(200, plan.hot_n), size=BODY,
                        concurrency=plan.concurrency, timeout=300)  # Warm-up.
        rates = []
        for _ in range(plan.hot_repeats):
            result = await a.request("send_many", name=name, n=plan.hot_n, size=BODY,
                                     concurrency=plan.concurrency, timeout=600)
            rates.append(result["rate"])
            downs["runs"] += 1
            for who, proc in (("A", a), ("B", b)):
                for event in proc.liveness_events(name, result["t0"], result["t1"]):
                    if event["state"] in ("down", "suspect"):
                        downs[event["state"]] += 1
                        down_events.append({"side": who, "store": store, **event})
        run.figures[f"hotline.throughput_{store}"] = summarize(
            rates, "msg/s", messages=plan.hot_n, size=BODY, concurrency=plan.concurrency,
            method="2 processes; concurrent send() calls; clock from the first send() to the "
                   "delivered receipt covering the last message", **heartbeat)
        if store == "full":
            await _sequential(run, name)
        result = await a.request("latency", name=name, n=plan.latency_n, size=BODY,
                                 timeout=600)
        run.figures[f"hotline.latency_{store}_ms"] = summarize(
            result["samples"], "ms", scale=1e3, p99=True, size=BODY,
            stored_ms=statistics.median(result["stored"]) * 1e3,
            method="one message at a time, send() to its delivered receipt")
        await _close_pair(run, name)
    run.figures["hotline.false_downs_during_throughput"] = {
        "value": downs["down"], "unit": "events", "suspect": downs["suspect"],
        "runs": downs["runs"], "n": downs["runs"], "events": down_events[:20], **heartbeat,
    }

    # 3: connect + handshake.
    run.say("hotline: connect + handshake")
    opened = await b.request(
        "open", name="hs", me=B_SEED, peer=A_SEED, store="memory", listen=True,
        config={"handshake_rate": 1e6, "handshake_burst": 1_000_000}, watch=False,
    )
    result = await a.request("connect_times", me=A_SEED, peer=B_SEED,
                             address=opened["listen"], repeats=plan.connect_repeats, timeout=600)
    await b.request("close", name="hs")
    run.figures["hotline.connect_ms"] = summarize(
        result["samples"], "ms", scale=1e3, p99=True,
        method="dialler side: open_line (MemoryStore) to liveness UP; the listener's "
               "per-address handshake rate limit is lifted")

    # 4: failure detection.
    await section_detection(run)
    # 5: resume.
    await section_resume(run)
    # 7: a 1 MiB body.
    await section_big(run)
    # Memory while queueing to a peer that is away.
    await section_away(run)


async def _sequential(run: Run, name: str) -> None:
    """One task sending one message after another, on the FULL line just measured."""
    plan = run.plan
    rates = []
    for _ in range(plan.sequential_repeats):
        result = await run.procs["A"].request("send_in_turn", name=name, n=plan.sequential_n,
                                              size=BODY, timeout=600)
        rates.append(result["rate"])
    run.figures["hotline.sequential_full"] = summarize(
        rates, "msg/s", messages=plan.sequential_n, size=BODY,
        method="one task, one message after another (await Line.queue in a loop); clock from "
               "the first call to the delivered receipt covering the last message")


async def section_detection(run: Run) -> None:
    plan = run.plan
    a, b = run.procs["A"], run.procs["B"]
    config = _heartbeat_config(plan)
    down_after = plan.heartbeat_interval * plan.heartbeat_multiplier
    name = "detect"
    run.say(f"hotline: failure detection (SIGSTOP, {plan.heartbeat_interval} s x "
            f"{plan.heartbeat_multiplier})")
    await _hotline_pair(run, name, "memory", config)
    samples, suspects = [], []
    for _ in range(plan.detect_repeats):
        await a.request("wait_up", name=name, timeout=60)
        # A random phase against the heartbeats.
        await trio.sleep(plan.heartbeat_interval * (1 + random.random()))
        mark = len(a.events)
        t_stop = b.stop()
        try:
            event = await a.wait_liveness(name, "down", since=mark, timeout=down_after * 4 + 10)
        finally:
            b.resume()
        samples.append(event["t"] - t_stop)
        suspect = [e for e in a.events[mark:] if is_liveness(e, name, "suspect")]
        if suspect:
            suspects.append(suspect[0]["t"] - t_stop)
        await a.request("wait_up", name=name, timeout=60)
    await _close_pair(run, name)
    run.figures["hotline.detection_s"] = summarize(
        samples, "s", interval=plan.heartbeat_interval, multiplier=plan.heartbeat_multiplier,
        down_after=down_after, suspect_s=summarize(suspects, "s") if suspects else None,
        method="SIGSTOP the peer's process at a random phase; time to the 'down' event")


async def section_resume(run: Run) -> None:
    plan = run.plan
    a, b = run.procs["A"], run.procs["B"]
    name = "resume"
    run.say("hotline: resume after a cut link")
    await _hotline_pair(run, name, "full", {}, relay=True)
    resume, reconnect, after_up = [], [], []
    for _ in range(plan.resume_repeats):
        await a.request("wait_up", name=name, timeout=60)
        mark = len(a.events)
        await b.request("relay", name=name, cut=True)
        await a.wait_liveness(name, "down", since=mark, timeout=30)
        queued = await a.request("queue", name=name, k=plan.resume_queue, size=BODY)
        await trio.sleep(plan.resume_hold)
        mark = len(a.events)
        t_restore = await b.request("relay", name=name, cut=False)
        first = queued["first"]
        delivered = await a.wait_event(
            lambda e, first=first: e.get("event") == "first_delivered" and e.get("seq") == first,
            since=0, timeout=60)
        up = await a.wait_liveness(name, "up", since=mark, timeout=60)
        resume.append(delivered["t"] - t_restore)
        reconnect.append(up["t"] - t_restore)
        after_up.append(delivered["t"] - up["t"])
    stats = await a.request("close", name=name)
    await b.request("close", name=name)
    method = ("a relay in the receiver's process is cut (connections closed, new ones refused); "
              f"{plan.resume_queue} messages are queued while the link is down; after "
              f"{plan.resume_hold} s the relay is restored; clock from the restore to the "
              "delivered receipt of the first message queued during the cut (includes the "
              "dialler's reconnect backoff, default Config)")
    run.figures["hotline.resume_s"] = summarize(
        resume, "s", method=method, up_to_delivered_s=statistics.median(after_up),
        sessions=stats["sessions"])
    run.figures["hotline.resume_reconnect_s"] = summarize(
        reconnect, "s", method="relay restored to liveness UP (redial backoff + handshake)")


async def section_big(run: Run) -> None:
    plan = run.plan
    a, b = run.procs["A"], run.procs["B"]
    name = "big"
    run.say("hotline: a 1 MiB body")
    await _hotline_pair(run, name, "full", {})
    result = await a.request("big", name=name, size=plan.big_size, repeats=plan.big_repeats,
                             timeout=300)
    mark = await b.request("mem_begin")
    traced = await a.request("big", name=name, size=plan.big_size, repeats=0, trace=True,
                             timeout=300)
    receiver = await b.request("mem_end", **mark)
    await _close_pair(run, name)
    run.figures["hotline.big_body_s"] = summarize(
        result["samples"], "s", size=plan.big_size, store="full",
        method="send() to delivered receipt, one body at a time")
    run.figures["hotline.big_body_peak_mib_sender"] = summarize(
        [traced["traced_peak"] / MIB], "MiB", rss_peak_mib=_mib(traced["rss_peak"]),
        method="tracemalloc peak above the baseline while one body is sent and receipted "
               "(the application's own copy of the body excluded)")
    run.figures["hotline.big_body_peak_mib_receiver"] = summarize(
        [receiver["traced_peak"] / MIB], "MiB", rss_peak_mib=_mib(receiver["rss_peak"]),
        method="tracemalloc peak above the baseline in the receiver's process")


def _mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


async def section_away(run: Run) -> None:
    plan = run.plan
    a, b = run.procs["A"], run.procs["B"]
    name = "away"
    run.say(f"hotline: {plan.away_total} messages queued to a peer that is away")
    await _hotline_pair(run, name, "full", {}, relay=True, relay_cut=True)
    result: dict[str, Any] = {}
    mark = len(a.events)

    async def produce() -> None:
        result.update(await a.request(
            "queue_away", name=name, total=plan.away_total, size=BODY,
            concurrency=plan.concurrency, block_timeout=plan.away_block_timeout, timeout=1800))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await a.wait_event(lambda e: e.get("event") == "away_blocked", since=mark, timeout=300)
        await trio.sleep(plan.away_hold)
        await b.request("relay", name=name, cut=False)
    await _close_pair(run, name)
    before, at_block = result["before"], result["at_block"]
    peak, after = result["peak"], result["after"]
    run.figures["hotline.away_queued_at_block"] = {
        "value": result["queued_at_block"], "unit": "messages", "n": 1,
        "outbox_limit": result["outbox_limit"], "blocked": result["blocked"],
        "send_wait_false_raises": result["send_wait_false_raises"],
        "attempted": plan.away_total, "delivered_in_the_end": result["total"],
    }
    run.figures["hotline.away_rss_growth_mib"] = summarize(
        [(peak["rss"] - before["rss"]) / MIB], "MiB",
        before_mib=before["rss"] / MIB, at_block_mib=at_block["rss"] / MIB,
        peak_mib=peak["rss"] / MIB, after_mib=after["rss"] / MIB,
        python_blocks={"before": before["blocks"], "at_block": at_block["blocks"],
                       "peak": peak["blocks"], "after": after["blocks"]},
        unbounded_would_be_mib=plan.away_total * BODY / MIB, elapsed_s=result["elapsed"],
        method="RSS sampled every 50 ms from before the first send() until all "
               f"{plan.away_total} are delivered; the peer is away (relay cut) until send() "
               f"has blocked for {plan.away_block_timeout} s, then for {plan.away_hold} s more",
    )


RNS_FIGURES = ("baseline.rns_throughput", "baseline.rns_proof_ms")
ZMQ_FIGURES = ("baseline.zmq_throughput", "baseline.zmq_ack_ms")
IDLE_FIGURES = ("hotline.idle_10k_rss_mib", "hotline.idle_10k_cpu_percent_one_core")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _free_port() -> int:
    # Reticulum's TCP server interface takes its port from its configuration file, so the
    # port is chosen here (a loopback port just released: nothing else races for it).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def section_peers(run: Run) -> None:
    """The peers a user would pick instead: Reticulum and ZeroMQ CURVE, when installed."""
    peers = (("Reticulum", "rns", "RNS", _reticulum, RNS_FIGURES),
             ("ZeroMQ CURVE", "pyzmq", "zmq", _zeromq, ZMQ_FIGURES))
    for title, package, module, measure, figures in peers:
        if not _installed(module):
            run.skip(f"{title} baseline: {package} is not installed "
                     "(pip install 'hotline[bench]')", figures)
            continue
        try:
            await measure(run)
        except BenchError as exc:
            # Another project's software failing (Reticulum does not resend a lost packet)
            # is not hotline's benchmark failing: say so, keep the traceback, go on.
            run.peer_failures.append({"section": f"peers ({package})",
                                      "error": traceback.format_exc()})
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            run.skip(f"{title} baseline: {package} failed in this run: {last}", figures)
            for name in figures:
                run.figures.pop(name, None)


async def _reticulum(run: Run) -> None:
    plan = run.plan
    run.say("peers: Reticulum Link, a proof per packet")
    port = _free_port()
    server = await Proc.start(run.nursery, "rns-server", "bench.rns_peer", ["server"], run.logs)
    client = await Proc.start(run.nursery, "rns-client", "bench.rns_peer", ["client"], run.logs)
    try:
        # Reticulum is another project's threaded stack: every step has a deadline, in the
        # child (`timeout=` of a command) and here, so a stalled Link cannot hang the run.
        limit = plan.peer_timeout
        started = await server.request("start", config_dir=str(run.tmp / "rns-server"),
                                        port=port, timeout=limit)
        link = await client.request(
            "start", config_dir=str(run.tmp / "rns-client"), port=port,
            destination=started["destination"], public_key=started["public_key"],
            timeout=limit)
        # Over TCP, Reticulum's Link MTU discovery gives a data unit well over 1 KiB; should
        # it not, the packet is as large as the Link carries, and the figure says so.
        size = min(BODY, link["mdu"])
        await client.request("throughput", n=min(200, plan.peer_n), size=size,
                             window=plan.concurrency, repeats=1, deadline=limit * 0.9,
                             timeout=limit)  # Warm-up.
        result = await client.request("throughput", n=plan.peer_n, size=size,
                                      window=plan.concurrency, repeats=plan.peer_repeats,
                                      deadline=limit * 0.9, timeout=limit * plan.peer_repeats)
        common = {"size": size, "link_mdu": link["mdu"], "link_mtu": link["mtu"]}
        run.figures["baseline.rns_throughput"] = summarize(
            result["rates"], "packets/s", packets=plan.peer_n, window=plan.concurrency,
            lost=result["lost"], **common,
            method="2 processes, 2 Reticulum instances joined by one loopback TCP interface; "
                   "packets on a Link to a PROVE_ALL destination, at most `window` unproven; "
                   "packets proven / time from the first send to the last proof; a packet "
                   "whose proof does not come within 5 s counts in `lost`, not as proven")
        result = await client.request("latency", n=plan.peer_latency_n, size=size,
                                      timeout=limit)
        run.figures["baseline.rns_proof_ms"] = summarize(
            result["samples"], "ms", scale=1e3, p99=True, lost=result["lost"], **common,
            method="one packet at a time on the Link, send to its proof; a packet without "
                   "a proof within 1 s is counted in `lost`, not sampled (bench/rns_peer.py "
                   "says why Reticulum loses some on an idle Link)")
    finally:
        for proc in (client, server):
            await proc.aclose(timeout=10)


async def _zeromq(run: Run) -> None:
    plan = run.plan
    run.say("peers: ZeroMQ CURVE, DEALER/ROUTER with an acknowledgement per message")
    server = await Proc.start(run.nursery, "zmq-server", "bench.zmq_peer", ["server"], run.logs)
    try:
        started = await server.wait_event(lambda e: e.get("event") == "server", timeout=30)
        client = await Proc.start(
            run.nursery, "zmq-client", "bench.zmq_peer",
            ["client", "--endpoint", started["endpoint"], "--server-key",
             started["public_key"]], run.logs)
        try:
            n = plan.wire_n
            await client.request("throughput", n=min(2000, n), size=BODY,
                                 window=plan.concurrency, repeats=1, timeout=300)  # Warm-up.
            result = await client.request("throughput", n=n, size=BODY,
                                          window=plan.concurrency,
                                          repeats=plan.wire_repeats, timeout=600)
            run.figures["baseline.zmq_throughput"] = summarize(
                result["rates"], "msg/s", messages=n, size=BODY, window=plan.concurrency,
                method="2 processes, DEALER -> ROUTER over loopback TCP with CURVE; the "
                       "server acknowledges every message (unsigned); at most `window` "
                       "unacknowledged; clock from the first send to the last "
                       "acknowledgement")
            result = await client.request("latency", n=plan.rtt_n, size=BODY, timeout=600)
            run.figures["baseline.zmq_ack_ms"] = summarize(
                result["samples"], "ms", scale=1e3, p99=True, size=BODY,
                method="one message at a time, send to its acknowledgement")
        finally:
            await client.aclose(timeout=10)
    finally:
        await server.aclose(timeout=10)


async def section_cli(run: Run) -> None:
    plan = run.plan
    lines, width = plan.cli_lines, 1000
    run.say(f"cli: {lines} lines of {width} characters piped into hotline run --until-delivered")
    result = await cli_rates(run.tmp / "cli", lines, width, plan.cli_repeats)
    run.figures["hotline.cli_throughput"] = summarize(
        result["rates"], "msg/s", lines=lines, line_chars=width, durability="FULL",
        start_to_up_s=[round(r["start_to_up"], 3) for r in result["runs"]],
        process_life_s=[round(r["process_life"], 3) for r in result["runs"]],
        command=" ".join(Path(part).name for part in result["command"]),
        method="a real `hotline run --connect ... --until-delivered` process dialling a "
               "`hotline run --listen` process; clock from the first line written into its "
               "standard input (once it printed `peer up`) to its exit")


async def section_paths(run: Run) -> None:
    """Several paths (bench/failover.py, in a process of its own): the failover gap beside
    the single-path recovery gap of the same run, and what a standby path costs in CPU."""
    plan = run.plan
    run.say("hotline: failover to a standby path vs single-path recovery (black hole)")
    command = [sys.executable, "-m", "bench.failover"] + (["--quick"] if plan.quick else [])
    done = await trio.run_process(command, capture_stdout=True, cwd=str(ROOT))
    result = json.loads(done.stdout)
    timing = {"heartbeat_interval": result["heartbeat_interval"],
              "suspect_s": result["suspect_s"], "down_s": result["down_s"]}
    failover, single = result["failover_gap_s"], result["single_path_gap_s"]
    run.figures["hotline.failover_gap_s"] = summarize(
        failover, "s", **timing, single_path_median_s=statistics.median(single),
        method="two paths, each through a FaultProxy; a message every 5 ms; the active path "
               "black-holed (bytes dropped, connections open); the longest gap between two "
               "deliveries at the receiver (every message checked exactly once, in order)")
    run.figures["hotline.single_path_recovery_s"] = summarize(
        single, "s", **timing,
        method="the same with one path: black-holed until the sender finds the peer down, "
               "then let through; the gap is down + redial backoff + handshake")
    run.figures["hotline.standby_cpu_us_per_s"] = summarize(
        [two - one for one, two in zip(result["idle_cpu_us_per_s"]["1"],
                                       result["idle_cpu_us_per_s"]["2"], strict=True)],
        "us/s", heartbeat_interval=result["idle_heartbeat_s"],
        path_heartbeats_cpu_us_per_s=result["path_heartbeats_cpu_us_per_s"],
        standby_per_heartbeats=result["standby/heartbeats"],
        method="process CPU (both ends of one line in one process) over idle windows with "
               "two paths minus one path; beside it, one path minus no connection (what a "
               "path's heartbeats cost); target: a standby costs no more than its heartbeats")


async def section_sweep(run: Run) -> None:
    plan = run.plan
    client = await _start_wire(run)
    await _start_hotline(run)
    a = run.procs["A"]
    sizes = list(plan.sweep_sizes)
    series: dict[str, dict[str, list[Any]]] = {
        key: {"throughput": [], "latency_ms": []} for key in ("hotline_full", *KINDS)
    }
    name = "sweep"
    await _hotline_pair(run, name, "full", _heartbeat_config(plan))
    for size in sizes:
        run.say(f"sweep: {size} B")
        for kind in KINDS:
            n = _count(plan.wire_n, size, plan.sweep_wire_bytes, plan.sweep_min_n)
            result = await client.request("throughput", kind=kind, n=n, size=size,
                                          repeats=plan.sweep_repeats, timeout=600)
            series[kind]["throughput"].append(summarize(result["rates"], "msg/s", records=n))
            result = await client.request("pingpong", kind=kind, n=plan.sweep_rtt_n, size=size,
                                          repeats=1, timeout=600)
            series[kind]["latency_ms"].append(
                summarize(result["samples"], "ms", scale=1e3, p99=True, what="RTT"))
        n = _count(plan.hot_n, size, plan.sweep_hot_bytes, plan.sweep_min_n)
        rates = []
        for _ in range(plan.sweep_repeats):
            result = await a.request("send_many", name=name, n=n, size=size,
                                     concurrency=plan.concurrency, timeout=600)
            rates.append(result["rate"])
        series["hotline_full"]["throughput"].append(summarize(rates, "msg/s", messages=n))
        result = await a.request("latency", name=name, n=plan.sweep_latency_n, size=size,
                                 timeout=600)
        series["hotline_full"]["latency_ms"].append(
            summarize(result["samples"], "ms", scale=1e3, p99=True,
                      what="send() to delivered receipt"))
    await _close_pair(run, name)
    run.sweep = {"sizes": sizes, "series": series}


async def section_scale(run: Run) -> None:
    plan = run.plan
    n = plan.scale_pairs
    config = {"heartbeat_interval": plan.scale_heartbeat}
    run.say(f"scale: {n} idle lines per process, heartbeat {plan.scale_heartbeat} s, and "
            f"{n} plain trio connections per process, one 82-byte record per "
            f"{plan.scale_heartbeat} s each way, measured in the same windows")
    # Both run at once and are measured over the same windows: the machine's speed moves by
    # tens of percent from minute to minute, and the ratio is what the target is about.
    listen = await Proc.start(run.nursery, "scale-listen", "bench.scale_peer", [], run.logs)
    dial = await Proc.start(run.nursery, "scale-dial", "bench.scale_peer", [], run.logs)
    floor_listen = await Proc.start(run.nursery, "floor-listen", "bench.scale_peer", [],
                                    run.logs)
    floor_dial = await Proc.start(run.nursery, "floor-dial", "bench.scale_peer", [], run.logs)
    try:
        await listen.request("base")
        await dial.request("base")
        opened = await listen.request("open_listen", n=n, config=config, timeout=600)
        dialled = await dial.request("open_dial", n=n, address=opened["address"],
                                     config=config, timeout=1200)
        await listen.request("wait_all_up", timeout=300)
        opened = await floor_listen.request("open_plain_listen", n=n,
                                            interval=plan.scale_heartbeat)
        await floor_dial.request("open_plain_dial", n=n, address=opened["address"],
                                 interval=plan.scale_heartbeat, timeout=600)
        await trio.sleep(min(2.0, plan.scale_window))  # Let the handshakes' garbage settle.
        both = await _idle_windows(plan, {"listen": listen, "dial": dial,
                                          "floor-listen": floor_listen,
                                          "floor-dial": floor_dial})
    finally:
        for proc in (listen, dial, floor_listen, floor_dial):
            await proc.aclose(timeout=5)
    windows = {key: both[key] for key in ("listen", "dial")}
    floor = {key.removeprefix("floor-"): both[key] for key in ("floor-listen", "floor-dial")}

    def per_side(key: str) -> dict[str, Any]:
        rows = windows[key]
        return {
            "rss_per_line_kib": [(w["rss"] - w["base"]["rss"]) / w["lines"] / 1024 for w in rows],
            "cpu_percent": [100 * w["cpu"] / w["wall"] for w in rows],
            "cpu_us_per_line_per_s": [1e6 * w["cpu"] / w["wall"] / w["lines"] for w in rows],
            "not_up": max(w["not_up"] for w in rows),
            "new_sessions": sum(w["new_sessions"] for w in rows),
        }

    sides = {key: per_side(key) for key in windows}
    # The figure is the worse of the two processes (each holds one end of every line).
    # The worse process by the same median the figure reports.
    rss_medians = {k: statistics.median(v["rss_per_line_kib"]) for k, v in sides.items()}
    cpu_medians = {k: statistics.median(v["cpu_percent"]) for k, v in sides.items()}
    worst = max(rss_medians, key=rss_medians.__getitem__)
    worst_cpu = max(cpu_medians, key=cpu_medians.__getitem__)
    common = {"lines_per_process": n, "heartbeat_interval": plan.scale_heartbeat,
              "window_s": plan.scale_window, "dial_time_s": dialled["opened_in"],
              "not_up_at_window_end": {k: v["not_up"] for k, v in sides.items()},
              "new_sessions_during_windows": {k: v["new_sessions"] for k, v in sides.items()}}
    run.figures["hotline.scale_rss_per_line_kib"] = summarize(
        sides[worst]["rss_per_line_kib"], "KiB", process=worst,
        other=rss_medians,
        method="(RSS after all lines are up - RSS before opening) / lines, in the worse of "
               "the two processes (listener: 1 identity, n lines on one port; dialler: n "
               "identities)", **common)
    run.figures["hotline.scale_cpu_percent_one_core"] = summarize(
        sides[worst_cpu]["cpu_percent"], "% of one core", process=worst_cpu,
        other=cpu_medians,
        method="process CPU time (user+system) over an idle window / window", **common)
    run.figures["hotline.scale_cpu_us_per_line_per_s"] = summarize(
        sides[worst_cpu]["cpu_us_per_line_per_s"], "us CPU per line per s", process=worst_cpu,
        **common)

    floor_us = {key: [1e6 * w["cpu"] / w["wall"] / w["lines"] for w in rows]
                for key, rows in floor.items()}
    floor_worst = max(floor_us, key=lambda key: statistics.median(floor_us[key]))
    run.figures["ceiling.trio_idle_us_per_line_per_s"] = summarize(
        floor_us[floor_worst], "us CPU per line per s", process=floor_worst,
        lines_per_process=n, interval=plan.scale_heartbeat,
        percent_of_one_core_for_n=statistics.median(floor_us[floor_worst]) * n / 1e4,
        method="n plain trio TCP connections between two processes; each end a timer task "
               "writing one 82-byte record per interval (random phase) and a reader task; "
               "process CPU time over an idle window / window / n, the worse process; "
               "measured in the same windows as the idle lines, both pairs running")


#: Open files the 10,000-line run wants in each process: one per line end, with room to spare.
IDLE_MANY_FDS = 20_000
#: The many-line run freezes what its lines hold out of the cyclic GC's sight as they come
#: up, this many at a time (see bench/scale_peer.py's cmd_freeze).
IDLE_MANY_FREEZE_EVERY = 1000


async def section_idle(run: Run) -> None:
    """Many idle lines in one process: memory and CPU (full run only)."""
    plan = run.plan
    n = plan.idle_many_lines
    if not n:
        run.skip("the 10,000-idle-line figure is measured in the full run only", IDLE_FIGURES)
        return
    # Two processes with 10,000 lines each at a 1 s heartbeat would need more than this
    # machine's two cores (about 200 us of CPU per line and second each): the many-line run
    # uses a longer heartbeat, which changes its CPU figure but not what the lines hold in
    # memory. The 1,000-line CPU figure (section scale) stays at 1 s.
    heartbeat = plan.idle_many_heartbeat
    config = {"heartbeat_interval": heartbeat}
    listen = await Proc.start(run.nursery, "idle-listen", "bench.scale_peer", [], run.logs)
    dial = await Proc.start(run.nursery, "idle-dial", "bench.scale_peer", [], run.logs)
    try:
        limits = [await proc.request("fd_limit") for proc in (listen, dial)]
        available = min(limit["soft"] if limit["soft"] >= 0 else 1 << 30 for limit in limits)
        if available < IDLE_MANY_FDS:
            run.skip(f"{n:,} idle lines: {IDLE_MANY_FDS:,} open files are needed per process, "
                     f"the hard limit allows {available:,} (raise it with ulimit -Hn)",
                     IDLE_FIGURES)
            return
        run.say(f"idle: {n:,} idle lines per process, heartbeat {heartbeat} s")
        await listen.request("base")
        await dial.request("base")
        opened = await listen.request("open_listen", n=n, config=config, timeout=1200)
        await listen.request("freeze", timeout=120)
        dialled = await dial.request("open_dial", n=n, address=opened["address"],
                                     config=config, budget=plan.idle_many_budget,
                                     freeze_every=IDLE_MANY_FREEZE_EVERY,
                                     timeout=plan.idle_many_budget + 120)
        if dialled["out_of_budget"]:
            # Measured anyway: what many lines cost is the question, and the figure says
            # how many were up.
            run.say(f"idle: {dialled['up']:,} of {n:,} lines up after "
                    f"{plan.idle_many_budget:.0f} s of dialling; measuring those open")
        else:
            await listen.request("wait_all_up", timeout=600)
        for proc in (listen, dial):
            await proc.request("freeze", timeout=120)
        await trio.sleep(min(5.0, plan.scale_window))  # Let the handshakes' garbage settle.
        windows = await _idle_windows(plan, {"listen": listen, "dial": dial})
    finally:
        for proc in (listen, dial):
            await proc.aclose(timeout=30)
    rss_total = {key: [w["rss"] / MIB for w in rows] for key, rows in windows.items()}
    worst = max(rss_total, key=lambda key: statistics.median(rss_total[key]))
    cpu = {key: [100 * w["cpu"] / w["wall"] for w in rows] for key, rows in windows.items()}
    worst_cpu = max(cpu, key=lambda key: statistics.median(cpu[key]))
    rows = windows[worst]
    common = {"lines_per_process": n, "heartbeat_interval": heartbeat,
              "window_s": plan.scale_window, "dial_time_s": dialled["opened_in"],
              "dialled": dialled["opened"], "up_after_dialling": dialled["up"],
              "dial_budget_s": plan.idle_many_budget,
              "not_up_at_window_end": {k: max(w["not_up"] for w in v)
                                       for k, v in windows.items()},
              "new_sessions_during_windows": {k: sum(w["new_sessions"] for w in v)
                                              for k, v in windows.items()}}
    run.figures["hotline.idle_10k_rss_mib"] = summarize(
        rss_total[worst], "MiB", process=worst,
        per_line_kib=statistics.median((w["rss"] - w["base"]["rss"]) / w["lines"] / 1024
                                       for w in rows),
        other={k: statistics.median(v) for k, v in rss_total.items()},
        method="whole-process RSS with the lines dialled (every one, unless the dialling "
               "budget ran out: see up_after_dialling), the worse of the two processes "
               "(listener: 1 identity, n lines on one port; dialler: n identities)", **common)
    run.figures["hotline.idle_10k_cpu_percent_one_core"] = summarize(
        cpu[worst_cpu], "% of one core", process=worst_cpu,
        us_per_line_per_s=statistics.median(
            1e6 * w["cpu"] / w["wall"] / w["lines"] for w in windows[worst_cpu]),
        other={k: statistics.median(v) for k, v in cpu.items()},
        method="process CPU time (user+system) over an idle window / window", **common)


async def _idle_windows(plan: Plan, procs: dict[str, Proc]) -> dict[str, list[dict[str, Any]]]:
    """``plan.scale_windows`` idle windows, measured in every process of ``procs`` at once."""
    windows: dict[str, list[dict[str, Any]]] = {key: [] for key in procs}
    for _ in range(plan.scale_windows):
        async with trio.open_nursery() as nursery:
            for key, proc in procs.items():
                async def measure(key: str = key, proc: Proc = proc) -> None:
                    windows[key].append(await proc.request(
                        "idle", window=plan.scale_window, timeout=plan.scale_window + 120))
                nursery.start_soon(measure)
    return windows


# --- ratios, targets, table ------------------------------------------------------------------


def _median(figures: dict[str, dict[str, Any]], name: str, key: str = "median") -> float | None:
    figure = figures.get(name)
    if figure is None:
        return None
    value = figure.get(key, figure.get("value"))
    return None if value is None else float(value)


def add_latency_floor(run: Run) -> None:
    """The least a durable message's send->delivered can take here, from this run's parts.

    Two fsyncs (the sender stores before sending, the receiver before receipting), one
    loopback round trip (plain TCP), and one Ed25519 signature made and verified for the
    message and again for its receipt (1 KiB each: a receipt is smaller, so this is a little
    generous to the floor). The MemoryStore floor is the same without the fsyncs.
    """
    f = run.figures
    parts = {name: _median(f, name) for name in (
        "ceiling.fsync_ms", "ceiling.tcp_rtt_ms", "ceiling.ed25519_sign_us",
        "ceiling.ed25519_verify_us")}
    if any(value is None for value in parts.values()):
        return
    fsync, rtt, sign, verify = (float(value or 0.0) for value in parts.values())
    crypto_ms = 2 * (sign + verify) / 1e3
    memory_floor = rtt + crypto_ms
    f["ceiling.latency_floor_ms"] = {
        "value": 2 * fsync + memory_floor, "unit": "ms", "n": 1,
        "parts_ms": {"2 x fsync": 2 * fsync, "TCP RTT": rtt,
                     "2 x (sign + verify)": crypto_ms},
        "memory_floor_ms": memory_floor,
        "method": "2 x median fsync + median plain TCP RTT + 2 x (median Ed25519 sign + "
                  "verify of 1 KiB), all measured in this run"}


def ratios_and_targets(run: Run) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    f = run.figures
    plan = run.plan
    m = lambda name, key="median": _median(f, name, key)  # noqa: E731
    ratios: dict[str, Any] = {}

    def ratio(key: str, num: float | None, den: float | None, text: str) -> float | None:
        value = None if num is None or den in (None, 0) else num / den
        ratios[key] = {"value": value, "what": text}
        return value

    for store in ("full", "normal", "memory"):
        tp = m(f"hotline.throughput_{store}")
        ratio(f"throughput_{store}/verify_ceiling", tp, m("ceiling.ed25519_verify_per_s"),
              f"hotline {store.upper()} msg/s / Ed25519 verifications per s")
        ratio(f"throughput_{store}/tls", tp, m("baseline.tls_throughput"),
              f"hotline {store.upper()} / TLS 1.3 records/s")
        ratio(f"throughput_{store}/noise", tp, m("baseline.noise_throughput"),
              f"hotline {store.upper()} / noiseprotocol records/s")
        ratio(f"throughput_{store}/tcp", tp, m("ceiling.tcp_throughput"),
              f"hotline {store.upper()} / plain TCP records/s")
    tls_rtt, fsync = m("baseline.tls_rtt_ms"), m("ceiling.fsync_ms")
    budget = None if tls_rtt is None or fsync is None else tls_rtt + fsync
    lat = ratio("latency_full/(tls_rtt+fsync)", m("hotline.latency_full_ms"), budget,
                "median send->delivered (FULL) / (TLS RTT + one fsync)")
    ratio("latency_full/tls_rtt", m("hotline.latency_full_ms"), tls_rtt,
          "median send->delivered (FULL) / TLS RTT")
    ratio("latency_memory/tls_rtt", m("hotline.latency_memory_ms"), tls_rtt,
          "median send->delivered (MemoryStore) / TLS RTT")
    hs = ratio("connect/tls", m("hotline.connect_ms"), m("baseline.tls_connect_ms"),
               "hotline connect+handshake / TLS 1.3 connect+handshake")
    ratio("connect/noise", m("hotline.connect_ms"), m("baseline.noise_connect_ms"),
          "hotline connect+handshake / noiseprotocol IK connect+handshake")
    down_after = plan.heartbeat_interval * plan.heartbeat_multiplier
    ratio("detection/(interval*multiplier)", m("hotline.detection_s"), down_after,
          "median detection / interval x multiplier")
    detect_max = ratio("detection_max/(interval*multiplier)", m("hotline.detection_s", "max"),
                       down_after, "worst detection / interval x multiplier")
    ratio("scale_cpu/trio_floor", m("hotline.scale_cpu_us_per_line_per_s"),
          m("ceiling.trio_idle_us_per_line_per_s"),
          "idle line CPU / plain trio connection with the same heartbeat traffic")
    floor = m("ceiling.latency_floor_ms", "value")
    memory_floor = m("ceiling.latency_floor_ms", "memory_floor_ms")
    ratio("latency_full/floor", m("hotline.latency_full_ms"), floor,
          "median send->delivered (FULL) / latency floor (2 fsyncs + TCP RTT + 2 x sign+verify)")
    ratio("latency_memory/memory_floor", m("hotline.latency_memory_ms"), memory_floor,
          "median send->delivered (MemoryStore) / latency floor without the fsyncs")
    tp_full = m("hotline.throughput_full")
    tp_rns = ratio("throughput_full/rns", tp_full, m("baseline.rns_throughput"),
                   "hotline FULL msg/s / Reticulum Link packets proven per s")
    ratio("throughput_full/zmq", tp_full, m("baseline.zmq_throughput"),
          "hotline FULL msg/s / ZeroMQ CURVE acknowledged msg/s")
    lat_rns = ratio("latency_memory/rns_proof", m("hotline.latency_memory_ms"),
                    m("baseline.rns_proof_ms"),
                    "median send->delivered (MemoryStore) / Reticulum send->proof")
    ratio("latency_memory/zmq_ack", m("hotline.latency_memory_ms"), m("baseline.zmq_ack_ms"),
          "median send->delivered (MemoryStore) / ZeroMQ CURVE send->ack")
    sequential = ratio("sequential/concurrent", m("hotline.sequential_full"), tp_full,
                       "one task sending in turn / concurrent senders (FULL)")
    cli_tls = ratio("cli/tls", m("hotline.cli_throughput"), m("baseline.tls_throughput"),
                    "hotline run --until-delivered msg/s / TLS 1.3 records/s")
    cli_verify = ratio("cli/verify_ceiling", m("hotline.cli_throughput"),
                       m("ceiling.ed25519_verify_per_s"),
                       "hotline run --until-delivered msg/s / Ed25519 verifications per s")
    big_tls = None
    sweep = run.sweep
    if sweep and 65536 in sweep["sizes"]:
        at = sweep["sizes"].index(65536)
        big_tls = ratio("64k/tls", sweep["series"]["hotline_full"]["throughput"][at]["median"],
                        sweep["series"]["tls"]["throughput"][at]["median"],
                        "64 KiB bodies, hotline FULL bytes/s / TLS 1.3 bytes/s (size sweep)")
    else:
        ratio("64k/tls", None, None, "64 KiB bodies: measured by the full run's size sweep")
    hs_noise = ratios["connect/noise"]["value"]
    idle_cpu = ratios["scale_cpu/trio_floor"]["value"]
    tp_verify = ratios["throughput_full/verify_ceiling"]["value"]
    tp_tls = ratios["throughput_full/tls"]["value"]

    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, op: str, threshold: float, text: str,
               needs: str | None = None) -> None:
        if value is None:
            status = "N/A"
        elif op == "<=":
            status = "PASS" if value <= threshold else "MISS"
        elif op == "<":
            status = "PASS" if value < threshold else "MISS"
        else:
            status = "PASS" if value >= threshold else "MISS"
        targets.append({"name": name, "value": value, "op": op, "threshold": threshold,
                        "status": status, "what": text, "needs": needs})

    target("durable throughput vs verify ceiling", tp_verify, ">=", 1.0,
           "throughput FULL / Ed25519 verify per s")
    target("durable throughput vs TLS", tp_tls, ">=", 0.5, "throughput FULL / TLS")
    target("CLI durable throughput vs verify ceiling", cli_verify, ">=", 1.0,
           "hotline run --until-delivered / Ed25519 verify per s")
    target("CLI durable throughput vs TLS", cli_tls, ">=", 0.5,
           "hotline run --until-delivered / TLS")
    target("sequential producer", sequential, ">=", 0.8,
           "one task sending in turn / concurrent senders, FULL")
    target("durable throughput vs Reticulum", tp_rns, ">=", 4.0,
           "throughput FULL / Reticulum Link proofs per s", needs="rns")
    target("MemoryStore latency vs Reticulum proof", lat_rns, "<=", 1.0,
           "latency MemoryStore / Reticulum send->proof", needs="rns")
    target("64 KiB bodies vs TLS", big_tls, ">=", 0.5,
           "hotline FULL / TLS 1.3 bytes per s at 64 KiB", needs="full run")
    target("median latency", lat, "<=", 2.0, "latency FULL / (TLS RTT + one fsync)")
    target("handshake", hs, "<=", 0.5, "connect+handshake / TLS connect+handshake")
    target("handshake vs Noise IK", hs_noise, "<=", 1.0,
           "connect+handshake to UP / noiseprotocol IK connect+handshake")
    target("failure detection (worst repeat)", detect_max, "<=", 1.1,
           f"detection / ({plan.heartbeat_interval} s x {plan.heartbeat_multiplier})")
    target("no false down while saturated", m("hotline.false_downs_during_throughput", "value"),
           "<=", 0, "down events during the throughput runs")
    n = plan.scale_pairs
    target(f"scale: memory per idle line ({n} lines)", m("hotline.scale_rss_per_line_kib"),
           "<", 100, "KiB per line")
    target(f"scale: CPU of {n} idle lines at 1 s heartbeat",
           m("hotline.scale_cpu_percent_one_core"), "<", 10, "% of one core")
    target(f"scale: CPU of {n} idle lines vs trio floor", idle_cpu, "<=", 1.2,
           "idle line CPU / plain trio connection's")
    many = plan.idle_many_lines or 10_000
    idle_many = f.get("hotline.idle_10k_rss_mib") or {}
    all_up = idle_many.get("up_after_dialling") == idle_many.get("lines_per_process")
    target(f"scale: {many:,} idle lines/process, {plan.idle_many_heartbeat:g} s heartbeat",
           m("hotline.idle_10k_rss_mib") if all_up else None, "<", 1024,
           "MiB RSS of the worse process, every line up", needs="full run")
    growth = m("hotline.away_rss_growth_mib")
    bound = plan.away_total * BODY / MIB * 0.25
    target(f"memory flat with {plan.away_total} queued", growth, "<", bound,
           f"peak RSS growth MiB, < 25% of unbounded queueing ({bound * 4:.0f} MiB)")
    # Several paths: beside the figures, not among the targets (their list is a contract).
    failover = f.get("hotline.failover_gap_s") or {}
    ratio("failover/single_path", m("hotline.failover_gap_s"),
          m("hotline.single_path_recovery_s"),
          "failover gap with two paths / single-path recovery gap (down+redial+handshake)")
    ratio("failover/suspect", m("hotline.failover_gap_s"), failover.get("suspect_s"),
          "failover gap / the path's suspect time")
    standby = f.get("hotline.standby_cpu_us_per_s") or {}
    ratio("standby/heartbeats", m("hotline.standby_cpu_us_per_s"),
          standby.get("path_heartbeats_cpu_us_per_s"),
          "a standby path's idle CPU / one path's heartbeats' (target: at most about 1)")
    return ratios, targets


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


LABELS = {
    "ceiling.ed25519_sign_us": "Ed25519 sign, 1 KiB (pynacl)",
    "ceiling.ed25519_verify_us": "Ed25519 verify, 1 KiB (pynacl)",
    "ceiling.ed25519_sign_per_s": "Ed25519 sign rate",
    "ceiling.ed25519_verify_per_s": "Ed25519 verify rate",
    "ceiling.chacha20poly1305_encrypt_1k_us": "ChaCha20-Poly1305 encrypt 1 KiB",
    "ceiling.chacha20poly1305_decrypt_1k_us": "ChaCha20-Poly1305 decrypt 1 KiB",
    "ceiling.fsync_ms": "write+fsync 1 KiB (store's fs)",
    "ceiling.tcp_throughput": "plain TCP 1 KiB records, 2 procs",
    "ceiling.tcp_rtt_ms": "plain TCP ping-pong RTT",
    "ceiling.tcp_connect_ms": "plain TCP connect",
    "ceiling.trio_idle_us_per_line_per_s": "plain trio idle conn., 82 B/s each way",
    "ceiling.latency_floor_ms": "latency floor (2 fsync+RTT+2 sig)",
    "baseline.tls_throughput": "TLS 1.3 mutual, 1 KiB records",
    "baseline.tls_rtt_ms": "TLS 1.3 ping-pong RTT",
    "baseline.tls_connect_ms": "TLS 1.3 connect+handshake",
    "baseline.noise_throughput": "Noise IK (noiseprotocol) 1 KiB",
    "baseline.noise_rtt_ms": "Noise IK ping-pong RTT",
    "baseline.noise_connect_ms": "Noise IK connect+handshake",
    "baseline.rns_throughput": "Reticulum Link, proof/packet, 1 KiB",
    "baseline.rns_proof_ms": "Reticulum Link send->proof",
    "baseline.zmq_throughput": "ZeroMQ CURVE 1 KiB, ack window",
    "baseline.zmq_ack_ms": "ZeroMQ CURVE send->ack",
    "hotline.throughput_full": "throughput, SQLite FULL",
    "hotline.throughput_normal": "throughput, SQLite NORMAL",
    "hotline.throughput_memory": "throughput, MemoryStore",
    "hotline.sequential_full": "sequential producer, FULL",
    "hotline.cli_throughput": "CLI run --until-delivered, FULL",
    "hotline.latency_full_ms": "send->delivered, FULL",
    "hotline.latency_normal_ms": "send->delivered, NORMAL",
    "hotline.latency_memory_ms": "send->delivered, MemoryStore",
    "hotline.false_downs_during_throughput": "down events while saturated",
    "hotline.connect_ms": "connect+handshake to UP",
    "hotline.detection_s": "failure detection (SIGSTOP)",
    "hotline.resume_s": "link restored -> 1st queued delivered",
    "hotline.resume_reconnect_s": "link restored -> UP",
    "hotline.scale_rss_per_line_kib": "idle line memory (RSS/line)",
    "hotline.scale_cpu_percent_one_core": "idle lines CPU, all lines",
    "hotline.scale_cpu_us_per_line_per_s": "idle line CPU per line",
    "hotline.idle_10k_rss_mib": "10,000 idle lines RSS, 10 s heartbeat",
    "hotline.idle_10k_cpu_percent_one_core": "10,000 idle lines CPU, 10 s heartbeat",
    "hotline.big_body_s": "1 MiB body send->delivered",
    "hotline.big_body_peak_mib_sender": "1 MiB body peak, sender",
    "hotline.big_body_peak_mib_receiver": "1 MiB body peak, receiver",
    "hotline.away_queued_at_block": "queued when send() blocks",
    "hotline.away_rss_growth_mib": "peak RSS growth, peer away",
    "hotline.failover_gap_s": "failover gap, 2 paths (black hole)",
    "hotline.single_path_recovery_s": "recovery gap, 1 path (down+redial)",
    "hotline.standby_cpu_us_per_s": "standby path CPU (idle, both ends)",
}
#: Every figure a complete run produces, in table order (tests/test_bench_quick.py keeps its
#: own list on purpose).
EXPECTED_FIGURES = tuple(LABELS)

BESIDE = {
    "hotline.throughput_normal": ["throughput_normal/verify_ceiling", "throughput_normal/tls"],
    "hotline.throughput_memory": ["throughput_memory/verify_ceiling", "throughput_memory/tls",
                                  "throughput_memory/tcp"],
    "hotline.throughput_full": ["throughput_full/verify_ceiling", "throughput_full/tls",
                                "throughput_full/noise", "throughput_full/rns",
                                "throughput_full/zmq"],
    "hotline.sequential_full": ["sequential/concurrent"],
    "hotline.cli_throughput": ["cli/verify_ceiling", "cli/tls"],
    "hotline.latency_full_ms": ["latency_full/floor", "latency_full/(tls_rtt+fsync)",
                                "latency_full/tls_rtt"],
    "hotline.latency_memory_ms": ["latency_memory/memory_floor", "latency_memory/tls_rtt",
                                  "latency_memory/rns_proof", "latency_memory/zmq_ack"],
    "hotline.connect_ms": ["connect/tls", "connect/noise"],
    "hotline.scale_cpu_us_per_line_per_s": ["scale_cpu/trio_floor"],
    "hotline.detection_s": ["detection/(interval*multiplier)",
                            "detection_max/(interval*multiplier)"],
    "hotline.failover_gap_s": ["failover/single_path", "failover/suspect"],
    "hotline.standby_cpu_us_per_s": ["standby/heartbeats"],
}

SHORT = {
    "throughput_full/verify_ceiling": "verify ceil", "throughput_normal/verify_ceiling":
    "verify ceil", "throughput_memory/verify_ceiling": "verify ceil",
    "throughput_full/tls": "TLS", "throughput_normal/tls": "TLS", "throughput_memory/tls": "TLS",
    "throughput_full/noise": "Noise", "throughput_memory/tcp": "TCP",
    "latency_full/(tls_rtt+fsync)": "(TLS RTT+fsync)", "latency_full/tls_rtt": "TLS RTT",
    "latency_memory/tls_rtt": "TLS RTT", "connect/tls": "TLS", "connect/noise": "Noise",
    "scale_cpu/trio_floor": "trio floor",
    "throughput_full/rns": "Reticulum", "throughput_full/zmq": "ZeroMQ",
    "sequential/concurrent": "concurrent", "cli/verify_ceiling": "verify ceil",
    "cli/tls": "TLS", "latency_full/floor": "floor", "latency_memory/memory_floor":
    "floor w/o fsync", "latency_memory/rns_proof": "Reticulum proof",
    "latency_memory/zmq_ack": "ZeroMQ ack",
    "detection/(interval*multiplier)": "IxM", "detection_max/(interval*multiplier)": "IxM worst",
    "failover/single_path": "1-path recovery", "failover/suspect": "suspect time",
    "standby/heartbeats": "a path's heartbeats",
}


def render_table(result: dict[str, Any]) -> str:
    figures, ratios = result["figures"], result["ratios"]
    meta = result["meta"]
    lines = [
        f"hotline benchmark ({'quick' if meta['quick'] else 'full'} mode), {meta['date']}, "
        f"commit {meta['commit'] or '?'}; load average {meta['loadavg_start']} -> "
        f"{meta['loadavg_end']} on {meta['cpus']} CPUs; store fs {meta['filesystem']['type']}",
    ]
    if meta["loaded"]:
        lines.append("WARNING: the machine was loaded (load average >= half the CPUs): "
                     "treat every timing as indicative only.")
    if meta["quick"]:
        lines.append("Quick mode proves the harness works; its figures are not measurements.")
    header = f"{'figure':<38} {'median':>10} {'spread (min..max)':>21} {'p99':>8} {'n':>5}  unit"
    lines += ["", header, "-" * len(header)]
    section = None
    for name in EXPECTED_FIGURES:
        group = name.split(".")[0]
        if group != section:
            section = group
            lines.append(f"[{group}]")
        figure = figures.get(name)
        label = LABELS[name]
        if figure is None:
            absent = "skipped" if name in result.get("skipped_figures", ()) else "missing"
            lines.append(f"  {label:<36} {absent:>10}")
            continue
        if "median" in figure:
            spread = f"{_fmt(figure['min'])}..{_fmt(figure['max'])}"
            p99 = _fmt(figure.get("p99")) if "p99" in figure else ""
            row = (f"  {label:<36} {_fmt(figure['median']):>10} {spread:>21} {p99:>8} "
                   f"{figure['n']:>5}  {figure['unit']}")
        else:
            row = (f"  {label:<36} {_fmt(figure['value']):>10} {'':>21} {'':>8} "
                   f"{figure.get('n', 1):>5}  {figure['unit']}")
        besides = [f"{ratios[key]['value']:.2f}x {SHORT.get(key, key)}"
                   for key in BESIDE.get(name, []) if ratios.get(key, {}).get("value") is not None]
        if besides:
            row += "   " + "; ".join(besides)
        lines.append(row)
    lines += ["", "Targets (from the issue; printed, not asserted):"]
    for t in result["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(f"  {t['status']:<4}  {t['name']:<44} {value:>8} {t['op']} "
                     f"{t['threshold']:g}   ({t['what']})")
    if result.get("sweep"):
        sweep = result["sweep"]
        lines += ["", "Message size sweep (median msg/s | median latency ms; latency = RTT for "
                      "the baselines, send->delivered for hotline FULL):"]
        lines.append("  " + f"{'size':>7}" + "".join(f"{k:>24}" for k in sweep["series"]))
        for index, size in enumerate(sweep["sizes"]):
            cells = []
            for series in sweep["series"].values():
                tp = series["throughput"][index]["median"]
                lat = series["latency_ms"][index]["median"]
                cells.append(f"{_fmt(tp):>12} | {_fmt(lat):>8}")
            lines.append("  " + f"{size:>7}" + "".join(f"{c:>24}" for c in cells))
    if result.get("skipped"):
        lines += [""] + [f"SKIPPED: {text}" for text in result["skipped"]]
    if result["errors"]:
        lines += ["", "ERRORS:"]
        lines += [f"  {e['section']}: {e['error'].splitlines()[-1]}" for e in result["errors"]]
    if result["missing"]:
        lines.append(f"MISSING FIGURES: {', '.join(result['missing'])}")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, plan: Plan, tmp: Path) -> Run:
    logs = tmp / "logs"
    logs.mkdir()
    sections: list[str] = args.only.split(",") if args.only else list(SECTIONS)
    async with trio.open_nursery() as nursery:
        run = Run(plan=plan, tmp=tmp, logs=logs, nursery=nursery)
        certs = make_certificates(tmp)
        run.certs_file = str(tmp / "certs.json")
        Path(run.certs_file).write_text(json.dumps(certs))
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
            PublicFormat,
        )

        noise_key = X25519PrivateKey.generate()
        run.noise_key = noise_key.private_bytes(Encoding.Raw, PrivateFormat.Raw,
                                                NoEncryption()).hex()
        run.noise_pub = noise_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        steps: dict[str, Callable[[Run], Awaitable[None]]] = {
            "ceilings": section_ceilings, "wire": section_wire, "hotline": section_hotline,
            "sweep": section_sweep, "scale": section_scale, "peers": section_peers,
            "cli": section_cli, "idle": section_idle, "paths": section_paths,
        }
        try:
            for section in sections:
                try:
                    await steps[section](run)
                except Exception as exc:  # Keep the other sections' figures.
                    run.say(f"section {section} failed: {exc}")
                    run.errors.append({"section": section, "error": traceback.format_exc()})
                    # A failure may leave lines open in the hotline children: start afresh.
                    for key in ("A", "B"):
                        proc = run.procs.pop(key, None)
                        if proc is not None:
                            await proc.aclose(timeout=5)
        finally:
            with trio.CancelScope(shield=True):
                for proc in run.procs.values():
                    await proc.aclose(timeout=10)
            nursery.cancel_scope.cancel()
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(
        "hotline's benchmark: ceilings, baselines (TLS 1.3, Noise IK; Reticulum and ZeroMQ "
        "CURVE when installed) and hotline, measured in the same run. Prints a table and "
        "writes the figures as JSON."))
    parser.add_argument("--quick", action="store_true",
                        help="small counts, finishes in under a minute: proves the benchmark "
                             "works, measures nothing worth quoting")
    parser.add_argument("--json-out", metavar="FILE",
                        help="where to write the figures (default: bench/results/latest.json "
                             "for a full run, a temporary file for --quick)")
    parser.add_argument("--tmpdir", metavar="DIR",
                        help="where the stores and the fsync probe live (default: the system's "
                             "temporary directory); put it on the disk you want to measure")
    parser.add_argument("--plot-out", metavar="FILE",
                        help="the size sweep's plot (default: docs/performance.png; full mode "
                             "only, needs matplotlib)")
    parser.add_argument("--only", metavar="SECTIONS",
                        help=f"comma-separated subset of {','.join(SECTIONS)} (for debugging)")
    parser.add_argument("--concurrency", type=int, metavar="N",
                        help="concurrent send() calls in hotline's throughput runs "
                             "(default 256)")
    parser.add_argument("--sweep-sizes", metavar="BYTES",
                        help="comma-separated body sizes for the size sweep (default: "
                             "64,256,1024,4096,16384,65536; 64 KiB's target needs 65536)")
    parser.add_argument("--profile", metavar="DIR",
                        help="run every child under cProfile and write DIR/<child>.prof "
                             "(distorts the timings: for finding where time goes)")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temporary directory (stores, child logs)")
    args = parser.parse_args(argv)
    plan = plan_for(args.quick)
    if args.concurrency:
        plan = dataclasses.replace(plan, concurrency=args.concurrency)
    if args.sweep_sizes:
        sizes = tuple(int(size) for size in args.sweep_sizes.split(","))
        plan = dataclasses.replace(plan, sweep_sizes=sizes)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_PROFILE_DIR"] = str(Path(args.profile).resolve())

    tmp = Path(tempfile.mkdtemp(prefix="hotline-bench-", dir=args.tmpdir))
    started = time.perf_counter()
    load_start = _loadavg()
    try:
        run = trio.run(run_all, args, plan, tmp)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    load_end = _loadavg()
    cpus = os.cpu_count() or 1
    loads = load_start + load_end
    meta = {
        "quick": plan.quick, "date": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"),
        "commit": _git_commit(), "versions": _versions(), "platform": platform.platform(),
        "cpus": cpus, "loadavg_start": load_start, "loadavg_end": load_end,
        "loaded": bool(loads) and max(loads) >= cpus / 2,
        "filesystem": _filesystem(tmp), "duration_s": round(time.perf_counter() - started, 1),
        "plan": plan.as_dict(), "argv": sys.argv[1:], "profiled": bool(args.profile),
        "note": "timings depend on the machine's load; compare runs only with similar load",
    }
    add_latency_floor(run)
    ratios, targets = ratios_and_targets(run)
    result = {"meta": meta, "figures": run.figures, "ratios": ratios, "targets": targets,
              "sweep": run.sweep, "errors": run.errors, "skipped": run.skipped,
              "peer_failures": run.peer_failures,
              "skipped_figures": sorted(run.skipped_figures),
              "missing": [name for name in EXPECTED_FIGURES
                          if name not in run.figures and name not in run.skipped_figures]}
    print(render_table(result))

    if args.json_out:
        out = Path(args.json_out)
    elif plan.quick:
        fd, name = tempfile.mkstemp(prefix="hotline-bench-quick-", suffix=".json")
        os.close(fd)
        out = Path(name)
    else:
        out = ROOT / "bench" / "results" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nfigures written to {out}")

    if not plan.quick and run.sweep:
        from .plot import plot_sweep

        plot_path = Path(args.plot_out) if args.plot_out else ROOT / "docs" / "performance.png"
        print(plot_sweep(run.sweep, plot_path, meta))
    # With --only, the other sections' figures are missing on purpose.
    return 1 if run.errors or (result["missing"] and not args.only) else 0
