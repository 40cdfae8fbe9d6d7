"""``python -m bench --quick`` runs every measurement and writes every figure.

This proves the benchmark works; it asserts no timing (the machine running the tests may be
busy with anything). The list of figures is spelled out here on purpose, as the contract the
benchmark's JSON keeps, independently of bench/runner.py's own list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("noise", reason="the Noise baseline needs noiseprotocol")
pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs SIGSTOP and /proc-like memory")

ROOT = Path(__file__).resolve().parent.parent

FIGURES = [
    # Ceilings.
    "ceiling.ed25519_sign_us",
    "ceiling.ed25519_verify_us",
    "ceiling.ed25519_sign_per_s",
    "ceiling.ed25519_verify_per_s",
    "ceiling.chacha20poly1305_encrypt_1k_us",
    "ceiling.chacha20poly1305_decrypt_1k_us",
    "ceiling.fsync_ms",
    "ceiling.tcp_throughput",
    "ceiling.tcp_rtt_ms",
    "ceiling.tcp_connect_ms",
    # Baselines.
    "baseline.tls_throughput",
    "baseline.tls_rtt_ms",
    "baseline.tls_connect_ms",
    "baseline.noise_throughput",
    "baseline.noise_rtt_ms",
    "baseline.noise_connect_ms",
    # hotline.
    "hotline.throughput_full",
    "hotline.throughput_normal",
    "hotline.throughput_memory",
    "hotline.latency_full_ms",
    "hotline.latency_normal_ms",
    "hotline.latency_memory_ms",
    "hotline.connect_ms",
    "hotline.detection_s",
    "hotline.resume_s",
    "hotline.resume_reconnect_s",
    "hotline.scale_rss_per_line_kib",
    "hotline.scale_cpu_percent_one_core",
    "hotline.scale_cpu_us_per_line_per_s",
    "ceiling.trio_idle_us_per_line_per_s",
    "hotline.big_body_s",
    "hotline.big_body_peak_mib_sender",
    "hotline.big_body_peak_mib_receiver",
    "hotline.away_rss_growth_mib",
]
# Counts rather than timings: a value, no spread.
COUNTS = ["hotline.false_downs_during_throughput", "hotline.away_queued_at_block"]
# Figures measured per operation carry a tail as well.
WITH_P99 = [
    "ceiling.fsync_ms", "ceiling.tcp_rtt_ms", "baseline.tls_rtt_ms", "baseline.noise_rtt_ms",
    "hotline.latency_full_ms", "hotline.latency_normal_ms", "hotline.latency_memory_ms",
]
RATIOS = [
    "throughput_full/verify_ceiling", "throughput_full/tls", "throughput_normal/tls",
    "throughput_memory/tls", "latency_full/(tls_rtt+fsync)", "connect/tls",
    "detection/(interval*multiplier)",
]
TARGETS = 9
SERIES = ["hotline_full", "tcp", "tls", "noise"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--json-out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"python -m bench --quick took over 120 s\n{exc.stderr}")
    assert completed.returncode == 0, (
        f"exit status {completed.returncode}\n--- stdout\n{completed.stdout}\n"
        f"--- stderr\n{completed.stderr}"
    )
    return json.loads(out.read_text()), completed.stdout


def test_every_figure_is_a_median_with_its_spread_and_count(quick: tuple[dict, str]) -> None:
    result, _ = quick
    figures = result["figures"]
    assert result["errors"] == []
    assert result["missing"] == []
    for name in FIGURES:
        figure = figures[name]
        for key in ("median", "min", "max", "q1", "q3", "n", "unit"):
            assert key in figure, (name, key)
        assert figure["n"] >= 1
        assert figure["min"] <= figure["median"] <= figure["max"], name
    for name in WITH_P99:
        assert "p99" in figures[name], name
    for name in COUNTS:
        assert isinstance(figures[name]["value"], int), name


def test_ratios_targets_and_sweep(quick: tuple[dict, str]) -> None:
    result, stdout = quick
    for name in RATIOS:
        assert result["ratios"][name]["value"] is not None, name
    assert len(result["targets"]) == TARGETS
    for target in result["targets"]:
        assert target["status"] in ("PASS", "MISS"), target
        assert f"{target['status']:<4}  {target['name']}" in stdout
    sweep = result["sweep"]
    assert len(sweep["sizes"]) == 2
    assert sorted(sweep["series"]) == sorted(SERIES)
    for series in sweep["series"].values():
        assert len(series["throughput"]) == len(series["latency_ms"]) == 2


def test_the_run_is_described(quick: tuple[dict, str]) -> None:
    result, stdout = quick
    meta = result["meta"]
    assert meta["quick"] is True
    assert meta["plan"]["scale_pairs"] == 50
    assert meta["versions"]["hotline"]
    assert "loadavg_start" in meta
    # Quick mode says its figures are not measurements, and draws no plot.
    assert "Quick mode" in stdout
    assert "plot" not in stdout.split("figures written to")[-1]
    # The peer-away run really filled the outbox and made send() block.
    away = result["figures"]["hotline.away_queued_at_block"]
    assert away["blocked"] is True
    assert away["send_wait_false_raises"] is True
    assert away["value"] == away["outbox_limit"]
    assert away["delivered_in_the_end"] == away["attempted"]
