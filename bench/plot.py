"""The size sweep as a picture: throughput and latency against message size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_sweep"]

NAMES = {"hotline_full": "hotline (SQLite FULL)", "tls": "TLS 1.3 (mutual)",
         "noise": "Noise IK (noiseprotocol)", "tcp": "plain TCP"}


def plot_sweep(sweep: dict[str, Any], path: Path, meta: dict[str, Any]) -> str:
    """Save the plot to ``path``; returns a line saying what happened (skips without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    sizes = sweep["sizes"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, series in sweep["series"].items():
        for axis, metric in ((left, "throughput"), (right, "latency_ms")):
            rows = series[metric]
            medians = [r["median"] for r in rows]
            low = [r["median"] - r["min"] for r in rows]
            high = [r["max"] - r["median"] for r in rows]
            axis.errorbar(sizes, medians, yerr=[low, high], marker="o", capsize=3,
                          label=NAMES.get(key, key))
    left.set_title("throughput (messages/s)")
    right.set_title("latency (ms): RTT; hotline send -> delivered")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("message body (bytes)")
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(f"hotline benchmark {meta['date']} (load {meta['loadavg_start']}; "
                    f"{meta['cpus']} CPUs)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"plot written to {path}"
