"""Stand-in for the stores' package: re-exports the store names the driver uses."""

from .._sqlite import SQLiteStore
from .._store import Batch, Store

__all__ = ["Batch", "SQLiteStore", "Store"]
