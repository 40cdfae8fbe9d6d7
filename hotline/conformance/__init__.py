"""A conformance suite for any implementation of the hotline protocol (docs/protocol.md).

In the manner of h2spec and the Autobahn testsuite: the suite plays the peer of the
implementation under test over TCP, first honestly and then with one fault at a time, and
judges only what it sees on the wire. It needs nothing from the implementation but a running
node that trusts the suite's key and listens (``hotline conformance --connect``) or calls
(``--listen``), so it tests a second implementation as well as hotline itself.

Theory of operation:

- :mod:`._wire` builds every byte by hand from the Noise primitives: a case can send any
  transport plaintext, any record, any envelope, signed by any key.
- :mod:`._peer` is the honest end of the line. It keeps its own direction's chain and what it
  received, receipts the implementation's messages, pings while it waits, and judges:
  *refused* (the implementation ends the connection while the suite keeps it alive),
  *not delivered* (no delivered receipt ever covers a message sent to be refused: the first
  flight of every connection repeats the latest one, section 10), *still usable* (after every
  case, a fresh honest connection delivers a message).
- :mod:`._cases` holds the cases, each citing the section it checks; :mod:`._suite` runs them
  in order, each under a deadline, and reports ``PASS``, ``FAIL`` or ``SKIP`` per case.

The cases share one line, so they run in order against one implementation: a case that lets
a bad message through is failed, and the suite continues the chain from that message so that
later cases judge their own check only.
"""

from __future__ import annotations

from ._cases import CASES, Case
from ._peer import CaseFailed, CaseSkipped, Peer
from ._suite import CaseResult, cases_for, print_result, print_summary, run_suite
from ._wire import FrameReader, Session

__all__ = [
    "CASES",
    "Case",
    "CaseFailed",
    "CaseResult",
    "CaseSkipped",
    "FrameReader",
    "Peer",
    "Session",
    "cases_for",
    "print_result",
    "print_summary",
    "run_suite",
]
