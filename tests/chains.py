"""Both ends of a line as two :class:`~hotline.LineState`, signing real records without a driver.

The store and verifier tests build their transcripts with :class:`Line`: ``ours`` is what the
driver of the store's owner (a) keeps, ``theirs`` the peer's (b) end, so every message and
receipt is signed and chained as a real line would. Import it as ``from chains import Line``
(pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hotline import (
    Direction,
    Identity,
    LineState,
    PublicKey,
    Receipt,
    ReceiptKind,
    SignedMessage,
    TranscriptEntry,
    line_id,
    sign_receipt,
)


@dataclass
class Line:
    """Both ends of a line, seen from a (the store's owner)."""

    a: Identity = field(default_factory=Identity.generate)
    b: Identity = field(default_factory=Identity.generate)
    ours: LineState = field(default_factory=LineState)
    theirs: LineState = field(default_factory=LineState)
    clock: int = 1_700_000_000_000_000_000
    our_hashes: dict[int, bytes] = field(default_factory=dict)
    their_hashes: dict[int, bytes] = field(default_factory=dict)

    @property
    def lid(self) -> bytes:
        return line_id(self.a.public_key, self.b.public_key)

    @property
    def keys(self) -> tuple[PublicKey, PublicKey]:
        return self.a.public_key, self.b.public_key

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def send(self, count: int) -> list[SignedMessage]:
        """Our next messages (the peer receives them too, so it can receipt them)."""
        sent = []
        for _ in range(count):
            body = f"from a {self.ours.sent_seq + 1}".encode()
            message = self.ours.next_message(self.a, self.lid, body, self.tick())
            self.theirs.record_received(message)
            self.our_hashes[message.seq] = message.hash
            sent.append(message)
        return sent

    def receive(self, count: int) -> list[SignedMessage]:
        """The peer's next messages, as we hold them."""
        received = []
        for _ in range(count):
            body = f"from b {self.theirs.sent_seq + 1}".encode()
            message = self.theirs.next_message(self.b, self.lid, body, self.tick())
            self.ours.record_received(message)
            self.their_hashes[message.seq] = message.hash
            received.append(message)
        return received

    def our_receipt(self, kind: ReceiptKind, upto: int) -> Receipt:
        head = self.their_hashes[upto]
        return self.ours.sign_own_receipt(self.a, self.lid, kind, upto, head, self.tick())

    def peer_receipt(self, kind: ReceiptKind, upto: int) -> Receipt:
        head = self.our_hashes[upto]
        receipt = self.theirs.sign_own_receipt(self.b, self.lid, kind, upto, head, self.tick())
        self.ours.apply_peer_receipt(receipt)
        return receipt

    def forged(self, signer: str, kind: ReceiptKind, upto: int, head: bytes | None = None) -> (
        TranscriptEntry
    ):
        """A correctly signed receipt entry that no LineState would have let through."""
        if signer == "a":
            identity, direction, hashes = self.a, Direction.OUT, self.their_hashes
        else:
            identity, direction, hashes = self.b, Direction.IN, self.our_hashes
        head = hashes[upto] if head is None else head
        receipt = sign_receipt(identity, self.lid, kind, upto, head, self.tick())
        return TranscriptEntry(direction, kind.value, upto, receipt.envelope, receipt.signature)
