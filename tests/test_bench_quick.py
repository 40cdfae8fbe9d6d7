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
    "hotline.sequential_full",
    "hotline.cli_throughput",
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
# Derived from other figures of the same run: a value, no spread.
DERIVED = ["ceiling.latency_floor_ms"]
# The optional peers: measured when their package is installed, else skipped with a line
# naming the package. The quick run needs neither.
OPTIONAL = {
    "rns": ["baseline.rns_throughput", "baseline.rns_proof_ms"],
    "pyzmq": ["baseline.zmq_throughput", "baseline.zmq_ack_ms"],
}
# Measured by the full run only: the quick run says so.
FULL_ONLY = ["hotline.idle_10k_rss_mib", "hotline.idle_10k_cpu_percent_one_core"]
# Figures measured per operation carry a tail as well.
WITH_P99 = [
    "ceiling.fsync_ms", "ceiling.tcp_rtt_ms", "baseline.tls_rtt_ms", "baseline.noise_rtt_ms",
    "hotline.latency_full_ms", "hotline.latency_normal_ms", "hotline.latency_memory_ms",
]
RATIOS = [
    "throughput_full/verify_ceiling", "throughput_full/tls", "throughput_normal/tls",
    "throughput_memory/tls", "latency_full/(tls_rtt+fsync)", "connect/tls",
    "detection/(interval*multiplier)", "sequential/concurrent", "cli/tls",
    "cli/verify_ceiling", "latency_full/floor", "latency_memory/memory_floor",
]
TARGETS = 18
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
    for name in DERIVED:
        assert figures[name]["value"] > 0, name


def test_optional_peers_are_measured_or_skipped_with_a_line(quick: tuple[dict, str]) -> None:
    result, stdout = quick
    figures = result["figures"]
    for package, names in OPTIONAL.items():
        if all(name in figures for name in names):
            for name in names:
                assert figures[name]["min"] <= figures[name]["median"] <= figures[name]["max"]
            assert f"{package} is not installed" not in stdout
        else:
            assert not any(name in figures for name in names), package
            assert set(names) <= set(result["skipped_figures"]), package
            # Not installed, or the peer's own software failed (its traceback is kept).
            failed = any(f"({package})" in f["section"] for f in result["peer_failures"])
            said = f"{package} failed in this run" if failed else f"{package} is not installed"
            assert f"SKIPPED: {'ZeroMQ CURVE' if package == 'pyzmq' else 'Reticulum'}" in stdout
            assert said in stdout, package
    for name in FULL_ONLY:
        assert name not in figures
        assert name in result["skipped_figures"]
    assert "measured in the full run only" in stdout


def test_the_sequential_row_is_measured(quick: tuple[dict, str]) -> None:
    figure = quick[0]["figures"]["hotline.sequential_full"]
    assert figure["n"] >= 1
    assert figure["median"] > 0


def test_ratios_targets_and_sweep(quick: tuple[dict, str]) -> None:
    result, stdout = quick
    for name in RATIOS:
        assert result["ratios"][name]["value"] is not None, name
    assert len(result["targets"]) == TARGETS
    rns_measured = "baseline.rns_throughput" in result["figures"]
    for target in result["targets"]:
        # N/A only where the figure cannot exist in this run: a full-run figure, or a peer
        # that is not installed.
        can_be_missing = (target["needs"] == "full run"
                          or (target["needs"] == "rns" and not rns_measured))
        expected = ("N/A",) if can_be_missing else ("PASS", "MISS")
        assert target["status"] in expected, target
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
