"""How much each measurement does, in full and in quick mode."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Plan", "plan_for"]


@dataclass(frozen=True)
class Plan:
    quick: bool
    crypto_ops: int
    crypto_repeats: int
    fsync_count: int
    wire_n: int
    wire_repeats: int
    rtt_n: int
    rtt_repeats: int
    connect_repeats: int
    hot_n: int
    hot_repeats: int
    concurrency: int
    latency_n: int
    heartbeat_interval: float
    heartbeat_multiplier: float
    detect_repeats: int
    resume_repeats: int
    resume_hold: float
    resume_queue: int
    scale_pairs: int
    scale_heartbeat: float
    scale_window: float
    scale_windows: int
    big_size: int
    big_repeats: int
    away_total: int
    away_hold: float
    away_block_timeout: float
    sweep_sizes: tuple[int, ...]
    sweep_repeats: int
    sweep_wire_bytes: int
    sweep_hot_bytes: int
    sweep_min_n: int
    sweep_latency_n: int
    sweep_rtt_n: int
    sequential_n: int
    sequential_repeats: int
    peer_n: int
    peer_repeats: int
    peer_latency_n: int
    peer_timeout: float
    cli_lines: int
    cli_repeats: int
    idle_many_lines: int
    idle_many_budget: float
    idle_many_heartbeat: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Plan(
    quick=False, crypto_ops=2000, crypto_repeats=7, fsync_count=200,
    wire_n=20_000, wire_repeats=5, rtt_n=1000, rtt_repeats=3, connect_repeats=30,
    hot_n=5000, hot_repeats=5, concurrency=256, latency_n=300,
    heartbeat_interval=1.0, heartbeat_multiplier=3.0, detect_repeats=5,
    resume_repeats=5, resume_hold=1.0, resume_queue=10,
    scale_pairs=1000, scale_heartbeat=1.0, scale_window=10.0, scale_windows=3,
    big_size=1 << 20, big_repeats=5,
    away_total=100_000, away_hold=2.0, away_block_timeout=1.0,
    sweep_sizes=(64, 256, 1024, 4096, 16384, 65536), sweep_repeats=3,
    sweep_wire_bytes=32 << 20, sweep_hot_bytes=8 << 20, sweep_min_n=100,
    sweep_latency_n=100, sweep_rtt_n=300,
    sequential_n=2000, sequential_repeats=3,
    peer_n=5000, peer_repeats=3, peer_latency_n=300, peer_timeout=120.0,
    cli_lines=5000, cli_repeats=3,
    idle_many_lines=10_000, idle_many_budget=300.0, idle_many_heartbeat=10.0,
)

QUICK = Plan(
    quick=True, crypto_ops=300, crypto_repeats=3, fsync_count=30,
    wire_n=2000, wire_repeats=2, rtt_n=100, rtt_repeats=2, connect_repeats=5,
    hot_n=300, hot_repeats=2, concurrency=256, latency_n=30,
    heartbeat_interval=0.1, heartbeat_multiplier=3.0, detect_repeats=3,
    resume_repeats=2, resume_hold=0.3, resume_queue=5,
    scale_pairs=50, scale_heartbeat=1.0, scale_window=1.0, scale_windows=2,
    big_size=1 << 20, big_repeats=2,
    away_total=5000, away_hold=0.3, away_block_timeout=0.3,
    sweep_sizes=(256, 4096), sweep_repeats=2,
    sweep_wire_bytes=1 << 20, sweep_hot_bytes=256 << 10, sweep_min_n=50,
    sweep_latency_n=10, sweep_rtt_n=30,
    sequential_n=300, sequential_repeats=1,
    peer_n=300, peer_repeats=1, peer_latency_n=20, peer_timeout=20.0,
    cli_lines=300, cli_repeats=1,
    idle_many_lines=0, idle_many_budget=0.0, idle_many_heartbeat=10.0,
)


def plan_for(quick: bool) -> Plan:
    return QUICK if quick else FULL
