"""Stores: where a line keeps its transcript, its outbox, its inbox and the marks it resumes
from.

:class:`Store` is the interface the driver talks to (see :mod:`hotline.store._interface`);
:class:`MemoryStore` keeps a line in memory, :class:`SQLiteStore` in one SQLite file. The SQLite
store loads on first use of its names (PEP 562), so that ``import hotline`` stays free of
``sqlite3``.
"""

from typing import TYPE_CHECKING

from ._interface import (
    Batch,
    Direction,
    Store,
    TranscriptEntry,
    apply_batch,
    apply_batch_but_peer_receipts,
)
from ._memory import MemoryStore
from ._schema import StoredRecord

_LAZY = {"SQLiteStore"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'hotline.store' has no attribute {name!r}")
    from . import _sqlite

    value = getattr(_sqlite, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:
    from ._sqlite import SQLiteStore

__all__ = [
    "Batch",
    "Direction",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoredRecord",
    "TranscriptEntry",
    "apply_batch",
    "apply_batch_but_peer_receipts",
]
