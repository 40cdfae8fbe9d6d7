"""Test scaffolding for hotline and for applications built on it.

- :class:`FaultProxy` (:mod:`hotline.testing._proxy`): the one TCP relay of the project. It
  sits between two real lines and injects network faults, holds and cuts the link on demand,
  and can parse the stream into frames to record, replace or insert them.
- :class:`StreamWrapper`: a stream that passes every call through, to subclass in tests that
  watch or change one call of a line's stream.
- :func:`frame`, :func:`split_frames`, :func:`transport_plaintext`, :func:`wall_ns`
  (:mod:`hotline.testing._wire`): frames and transport plaintexts built by hand, for tests and
  fuzz targets that play a peer on the wire.
"""

from ._connections import FrameHook, ProxiedConnection, Takeover
from ._faults import DirectionStats, Faults, ProxyStats
from ._proxy import FaultProxy, open_fault_proxy
from ._streams import StreamWrapper
from ._wire import EPOCH_NS, frame, split_frames, transport_plaintext, wall_ns

__all__ = [
    "EPOCH_NS",
    "DirectionStats",
    "FaultProxy",
    "Faults",
    "FrameHook",
    "ProxiedConnection",
    "ProxyStats",
    "StreamWrapper",
    "Takeover",
    "frame",
    "open_fault_proxy",
    "split_frames",
    "transport_plaintext",
    "wall_ns",
]
