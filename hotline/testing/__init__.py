"""Test scaffolding for hotline and for applications built on it.

- :class:`FaultProxy` (:mod:`hotline.testing._proxy`): the one TCP relay of the project. It
  sits between two real lines and injects network faults, holds and cuts the link on demand,
  and can parse the stream into frames to record, replace or insert them.
- :class:`StreamWrapper`: a stream that passes every call through, to subclass in tests that
  watch or change one call of a line's stream.
"""

from ._connections import FrameHook, ProxiedConnection, Takeover
from ._faults import DirectionStats, Faults, ProxyStats
from ._proxy import FaultProxy, open_fault_proxy
from ._streams import StreamWrapper

__all__ = [
    "DirectionStats",
    "FaultProxy",
    "Faults",
    "FrameHook",
    "ProxiedConnection",
    "ProxyStats",
    "StreamWrapper",
    "Takeover",
    "open_fault_proxy",
]
