"""Stand-in for the stores package: re-exports from today's modules until it lands."""

from .._store import Batch, MemoryStore

__all__ = ["Batch", "MemoryStore"]
