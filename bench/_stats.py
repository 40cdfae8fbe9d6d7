"""Summaries of repeated measurements: every figure is a median with its spread and count."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

__all__ = ["percentile", "summarize"]

#: Raw samples are kept in the JSON only for figures with at most this many of them.
_KEEP_SAMPLES = 100


def percentile(sorted_samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (``fraction`` in [0, 1])."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, math.ceil(fraction * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def summarize(
    samples: Iterable[float], unit: str, *, scale: float = 1.0, p99: bool = False, **extra: Any
) -> dict[str, Any]:
    """Median, min, max, quartiles (and optionally p99) of ``samples`` times ``scale``.

    ``n`` is the number of repeats (or of individual operations, for per-operation timings
    such as a round trip); ``extra`` is stored beside them (a method, a configuration).
    """
    values = sorted(float(s) * scale for s in samples)
    if not values:
        raise ValueError("no samples to summarize")
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    summary: dict[str, Any] = {
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "q1": q1,
        "q3": q3,
        "n": len(values),
        "unit": unit,
    }
    if p99:
        summary["p99"] = percentile(values, 0.99)
    if len(values) <= _KEEP_SAMPLES:
        summary["samples"] = [round(v, 6) for v in values]
    summary.update(extra)
    return summary
