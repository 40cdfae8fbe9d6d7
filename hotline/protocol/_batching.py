"""When the events of new messages come out: at once, or after their signatures are checked
together in a batch.

Theory of operation
-------------------
By default the transport checks each message's signature as it arrives. A driver with a spare
core asks for batches instead (``Connection.check_signatures_in_batches``): the transport then
checks only the hash chain and gathers each new signed message here, its ``MessageReceived``
(and those of the unsigned messages it covers) queued but not released. Once the connection has
read what it has (at most ``MAX_SIGNATURE_BATCH`` signed messages),
:meth:`SignatureBatches.settle` makes the burst one :class:`SignatureBatch`: a burst of at
least ``minimum`` goes to the driver (which runs it in a worker thread and hands it back), a
smaller one is checked here at once, as a hop to a thread costs about as much as three checks.
Nothing a batch covers, nor anything after it, comes out before it is back; a bad signature
fails the connection as it would inline.

Alternatives not taken: checking each burst in the connection itself would keep the cost on
the protocol's thread, which is the point of batching; releasing the events before the
check and recalling them on a bad signature would let an unchecked message reach the
application.
"""

from __future__ import annotations

import copy

from .._config import MAX_SIGNATURE_BATCH
from .._errors import LocalProtocolError
from .._keys import PublicKey
from ._records import SignatureBatch, SignedMessage

__all__ = ["SignatureBatches"]


class SignatureBatches:
    """New messages whose signatures are not checked yet, and the batch out for checking."""

    def __init__(self) -> None:
        self.minimum = 0  # 0: every signature is checked as its message arrives.
        self.unverified: list[SignedMessage] = []
        # Events queued behind the signatures in ``unverified``: each signed message's and
        # those of the unsigned run it covers (docs/protocol.md, "Bursts").
        self.gated = 0
        self.checking: SignatureBatch | None = None

    def copy(self) -> SignatureBatches:
        clone = copy.copy(self)
        clone.unverified = list(self.unverified)
        return clone

    def enable(self, minimum: int) -> None:
        if not 2 <= minimum <= MAX_SIGNATURE_BATCH:
            raise LocalProtocolError(f"minimum must be 2 to {MAX_SIGNATURE_BATCH}")
        self.minimum = minimum

    @property
    def gather_limit(self) -> int:
        """How many new messages may gather before their signatures are settled."""
        return MAX_SIGNATURE_BATCH if self.minimum else 1

    def settle(self, sender: PublicKey) -> SignatureBatch:
        """The gathered burst as a batch: out for checking if it is large enough (then it is
        :attr:`checking`), else checked here, now."""
        batch = SignatureBatch(tuple(self.unverified), sender)
        if self.minimum and len(batch) >= self.minimum:
            self.checking = batch
        else:
            batch.run()
            self.clear()
        return batch

    def clear(self) -> None:
        self.unverified.clear()
        self.gated = 0

    def take_back(self, batch: SignatureBatch) -> None:
        """The driver hands back the batch that was out, checked."""
        if batch is not self.checking:
            raise LocalProtocolError("this is not the batch the connection is waiting for")
        if not batch.done:
            raise LocalProtocolError("run() the batch before handing it back")
        self.checking = None
        self.clear()
