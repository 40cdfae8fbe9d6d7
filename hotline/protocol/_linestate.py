"""The line's state that outlives a connection: sequence numbers, chain heads, receipts.

A :class:`LineState` is what a new connection resumes from. The store persists it; the
driver (or a test) evolves it with the methods below as messages are queued, persisted and
receipted, and hands it to :meth:`Connection.start` when a connection authenticates. The
connection reads it there and never writes it: it keeps marks of its own from then on and
reports, as events, what the driver must record here. Only
the *outbound* messages not yet covered by a delivered receipt are held (``pending``): they
are what a new connection retransmits. Inbound messages live in the application's store,
not here: the connection needs only the chain head to check the next one.

The rules that keep a line consistent are checked here, once, for every caller: sequence
numbers advance by one, chains link, our own receipts only move forward and never past what
we hold. The peer's receipts are checked by the connection that receives them (never past
what was sent, never backwards, acknowledged never ahead of delivered, the right head);
:meth:`apply_peer_receipt` only applies them.

Checking a receipt's head needs the chain head after the message it names. The state keeps
those of the outbox and of the last ``SENT_HEAD_WINDOW`` messages sent; an acknowledged
receipt may name an older message (a peer acknowledges as its application gets round to
it, or never), and for those it asks the store that loaded it (``sent_head_lookup``), so
that a peer that never acknowledges does not make this state grow with every message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .._config import Config
from .._errors import LocalProtocolError, MessageTooLarge
from .._keys import Identity
from ._records import (
    GENESIS_HEAD,
    Receipt,
    ReceiptKind,
    SignedMessage,
    sign_message,
    sign_receipt,
)

__all__ = ["LineState"]

DEFAULT_MAX_BODY = Config().max_body_size
#: Chain heads of our latest messages kept in ``sent_heads``: acknowledged receipts that lag
#: our sending by less than this are checked without asking the store.
SENT_HEAD_WINDOW = 1024


@dataclass
class LineState:
    """Both directions' sequence numbers, chain heads and receipt marks for one line."""

    # Outbound: what we sent and what the peer has receipted.
    sent_seq: int = 0
    sent_head: bytes = GENESIS_HEAD
    peer_delivered: int = 0
    peer_acknowledged: int = 0
    pending: deque[SignedMessage] = field(default_factory=deque)
    """Our messages ``peer_delivered + 1 .. sent_seq``, in order: retransmitted on resume."""
    sent_heads: dict[int, bytes] = field(default_factory=dict)
    """Chain heads of our messages ``peer_acknowledged .. sent_seq``, to check receipts with:
    at most the last ``SENT_HEAD_WINDOW`` of them."""
    # Inbound: what we hold of the peer's messages and what we have receipted.
    received_seq: int = 0
    received_head: bytes = GENESIS_HEAD
    delivered_receipt: Receipt | None = None
    acknowledged_receipt: Receipt | None = None
    # The highest handshake initiation timestamp accepted from the peer.
    peer_initiation_watermark: int = 0
    # The highest initiation timestamp this side has used (so it never repeats one).
    initiation_timestamp: int = 0
    sent_head_lookup: Callable[[int], bytes | None] | None = field(
        default=None, repr=False, compare=False
    )
    """The chain head after our message ``seq``, from the store, for heads older than
    ``sent_heads`` (set by the store's ``load()``; without it such heads are unknown)."""

    @property
    def delivered_upto(self) -> int:
        return self.delivered_receipt.upto if self.delivered_receipt else 0

    @property
    def acknowledged_upto(self) -> int:
        return self.acknowledged_receipt.upto if self.acknowledged_receipt else 0

    def check(self) -> None:
        """Raise :class:`LocalProtocolError` if the fields contradict each other."""
        if not 0 <= self.peer_acknowledged <= self.peer_delivered <= self.sent_seq:
            raise LocalProtocolError("need 0 <= peer_acknowledged <= peer_delivered <= sent_seq")
        expected = self.peer_delivered + 1
        prev: bytes | None = None
        for message in self.pending:
            if message.seq != expected or (prev is not None and message.prev != prev):
                raise LocalProtocolError("pending messages must continue the chain in order")
            expected += 1
            prev = message.hash
        if expected != self.sent_seq + 1:
            raise LocalProtocolError("pending must hold exactly peer_delivered+1 .. sent_seq")
        if self.pending and self.pending[-1].hash != self.sent_head:
            raise LocalProtocolError("the last pending message must be the chain head")
        if not 0 <= self.acknowledged_upto <= self.delivered_upto <= self.received_seq:
            raise LocalProtocolError("need acknowledged <= delivered <= received_seq")
        if len(self.sent_head) != 32 or len(self.received_head) != 32:
            raise LocalProtocolError("chain heads are 32 bytes")

    def copy(self, *, outbox: bool = True) -> LineState:
        """An independent copy. Without ``outbox``, only the marks (no pending messages, no
        sent heads): enough to validate a store batch, whose checks read only the marks, and
        cheap however many messages wait for a peer that is away."""
        state = self.successor()
        state.pending = deque(self.pending) if outbox else deque()
        state.sent_heads = dict(self.sent_heads) if outbox else {}
        return state

    def successor(self) -> LineState:
        """A copy of the marks that takes over this state's outbox (``pending`` and
        ``sent_heads`` are shared, not copied): for a single writer that applies a batch to
        it and then uses it in place of this one, at a cost independent of the outbox size.
        This state must not be used once the successor has changed."""
        # Every field, so one added later cannot be left out; a shallow copy of the instance
        # dictionary, several times cheaper than dataclasses.replace(), which runs __init__
        # (the committer makes two or three of these per commit).
        state = object.__new__(LineState)
        state.__dict__.update(self.__dict__)
        return state

    def head_of_sent(self, seq: int) -> bytes | None:
        """The chain head after our message ``seq``, if this state (or its store) knows it."""
        if seq == self.sent_seq:
            return self.sent_head
        head = self.sent_heads.get(seq)
        if head is not None or not max(self.peer_acknowledged, 1) <= seq < self.sent_seq:
            return head
        if self.pending and self.pending[0].seq <= seq:
            return self.pending[seq - self.pending[0].seq].hash
        return self.sent_head_lookup(seq) if self.sent_head_lookup is not None else None

    # --- outbound -------------------------------------------------------------------

    def next_message(
        self,
        identity: Identity,
        line_id: bytes,
        body: bytes,
        timestamp: int,
        *,
        max_body_size: int = DEFAULT_MAX_BODY,
    ) -> SignedMessage:
        """Sign the next message and append it to ``pending``.

        A body over ``max_body_size`` raises :class:`MessageTooLarge` before it is signed:
        once signed, a message is part of the chain and must be delivered. A durable caller
        persists the returned message (and so the new ``sent_seq``) before it transmits it,
        so that a restart never reuses a sequence number.
        """
        if len(body) > max_body_size:
            raise MessageTooLarge(
                f"body of {len(body)} bytes is over the limit of {max_body_size}"
            )
        message = sign_message(
            identity, line_id, self.sent_seq + 1, timestamp, self.sent_head, body
        )
        self.append_sent(message)
        return message

    def append_sent(self, message: SignedMessage) -> None:
        """Record an already signed message as the next one sent (used when reloading)."""
        if message.seq != self.sent_seq + 1 or message.prev != self.sent_head:
            raise LocalProtocolError("a sent message must continue our chain")
        self.sent_seq = message.seq
        self.sent_head = message.hash
        self.sent_heads[message.seq] = message.hash
        # The heads held are consecutive and end here: this drops the oldest, if any.
        self.sent_heads.pop(message.seq - SENT_HEAD_WINDOW, None)
        self.pending.append(message)

    def apply_peer_receipt(self, receipt: Receipt) -> None:
        """Move the peer's receipt marks forward (a delivered receipt retires pending messages).

        The connection has already checked the receipt against this state; this only applies it.
        """
        if receipt.kind is ReceiptKind.DELIVERED:
            if receipt.upto > self.peer_delivered:
                self.peer_delivered = receipt.upto
                while self.pending and self.pending[0].seq <= receipt.upto:
                    self.pending.popleft()
        elif receipt.upto > self.peer_acknowledged:
            held_from = max(self.peer_acknowledged, self.sent_seq - SENT_HEAD_WINDOW + 1)
            for seq in range(held_from, receipt.upto):
                self.sent_heads.pop(seq, None)
            self.peer_acknowledged = receipt.upto

    def record_initiations(self, *, ours: int | None = None, peers: int | None = None) -> None:
        """Record an initiation timestamp this side used, or one accepted from the peer (as
        reported by ``Connection.initiation_timestamp`` or :class:`PeerAuthenticated`).
        Both marks only move forward: recording an older one changes nothing."""
        if ours is not None:
            self.initiation_timestamp = max(self.initiation_timestamp, ours)
        if peers is not None:
            self.peer_initiation_watermark = max(self.peer_initiation_watermark, peers)

    # --- inbound --------------------------------------------------------------------

    def record_received(self, message: SignedMessage) -> None:
        """Record a peer message as held (persisted, for a durable caller)."""
        if message.seq != self.received_seq + 1 or message.prev != self.received_head:
            raise LocalProtocolError("a received message must continue the peer's chain")
        self.received_seq = message.seq
        self.received_head = message.hash

    def sign_own_receipt(
        self,
        identity: Identity,
        line_id: bytes,
        kind: ReceiptKind,
        upto: int,
        head: bytes,
        timestamp: int,
    ) -> Receipt:
        """Sign a receipt for the peer's messages up to ``upto`` and record it here.

        A delivered receipt may cover only messages recorded as held (:meth:`record_received`;
        a durable caller records them after storing them), an acknowledged one only messages
        already covered by a delivered receipt. ``head`` is the hash of message ``upto``.
        Receipts are signed here, not by a connection, so that an application can acknowledge
        while the peer is away; the next connection sends the latest of each kind.
        """
        if kind is ReceiptKind.DELIVERED:
            low, high = self.delivered_upto, self.received_seq
        else:
            low, high = self.acknowledged_upto, self.delivered_upto
        if not low < upto <= high:
            raise LocalProtocolError(
                f"a {kind.value} receipt now must cover a held message in {low + 1}..{high}"
            )
        if upto == self.received_seq and head != self.received_head:
            raise LocalProtocolError(f"head does not match message {upto}")
        if kind is ReceiptKind.ACKNOWLEDGED and self.delivered_receipt is not None and (
            upto == self.delivered_upto and head != self.delivered_receipt.head
        ):
            raise LocalProtocolError(f"head does not match message {upto}")
        receipt = sign_receipt(identity, line_id, kind, upto, head, timestamp)
        self.record_own_receipt(receipt)
        return receipt

    def record_own_receipt(self, receipt: Receipt) -> None:
        """Record a receipt this side signed for the peer (so it is re-sent on resume)."""
        if receipt.kind is ReceiptKind.DELIVERED:
            if receipt.upto < self.delivered_upto or receipt.upto > self.received_seq:
                raise LocalProtocolError("delivered receipts move forward, up to received_seq")
            self.delivered_receipt = receipt
        else:
            if receipt.upto < self.acknowledged_upto or receipt.upto > self.delivered_upto:
                raise LocalProtocolError("acknowledged receipts move forward, up to delivered")
            self.acknowledged_receipt = receipt
