"""Process memory figures without third-party packages (Linux /proc, with fallbacks)."""

from __future__ import annotations

import contextlib
import resource
import sys

__all__ = ["allocated_blocks", "cpu_seconds", "peak_rss", "reset_peak_rss", "rss"]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss() -> int:
    """Resident set size now, in bytes (the peak so far where /proc is missing)."""
    kib = _status_kib("VmRSS")
    if kib is None:
        return peak_rss()
    return kib * 1024


def peak_rss() -> int:
    """The resident set's high-water mark in bytes (since the last :func:`reset_peak_rss`)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            return kib
    return kib * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
        return True
    return False


def allocated_blocks() -> int:
    """Memory blocks held by Python's allocator (a cheap proxy for the Python heap)."""
    return sys.getallocatedblocks()


def cpu_seconds() -> float:
    """User + system CPU time of this process (every thread), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def now() -> dict[str, int]:
    """RSS and live allocated blocks, as one sample."""
    return {"rss": rss(), "blocks": allocated_blocks()}
