"""Stand-in for the stores' package: re-exports the store names the driver uses."""

from .._sqlite import SQLiteStore
from .._store import Batch, MemoryStore, Store

__all__ = ["Batch", "MemoryStore", "SQLiteStore", "Store"]
