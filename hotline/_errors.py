"""The exceptions hotline raises, named by cause.

Everything derives from :class:`HotlineError`, so ``except HotlineError`` catches all of
them. Beneath it the split is by *who is at fault*, because that is what decides what
the caller should do:

- :class:`LocalProtocolError`: the caller misused the API (a bug in the caller's code).
- :class:`RemoteProtocolError`: the peer broke the protocol after it authenticated.
- :class:`AuthenticationError`: something could not be authenticated: a handshake with the
  wrong key, a record that fails decryption, a signature that does not verify. It carries
  one fixed message on purpose: an attacker learns nothing from it.
- :class:`LineClosed` / :class:`LineBroken`: the line was closed on purpose (by us or by the
  peer's goodbye) / it failed underneath (the connection was cut, the peer went silent).
  The sans-io core says the same of one connection with :class:`ConnectionClosedError` /
  :class:`ConnectionBrokenError`; the driver maps them to the line's words.
- :class:`KeyFileError`, :class:`StoreError`, :class:`OutboxFull`: a key file that cannot be
  used, a store that cannot be used (:class:`StoreLocked`: another process writes it), a full
  outbox when the caller asked not to wait.
- :class:`TranscriptError`: an offline check found a record that does not verify
  (:class:`StoreInconsistent`: or a stored row that disagrees with the records;
  :class:`EvidenceError`: or an evidence document that does not check).

After a :class:`RemoteProtocolError` or :class:`AuthenticationError` the connection that
raised it is in its error state for good.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConnectionBrokenError",
    "ConnectionClosedError",
    "EvidenceError",
    "HotlineError",
    "KeyFileError",
    "LineBroken",
    "LineClosed",
    "LocalProtocolError",
    "MessageTooLarge",
    "OutboxFull",
    "RemoteProtocolError",
    "StoreError",
    "StoreInconsistent",
    "StoreLocked",
    "StoreMismatch",
    "StoreVersionError",
    "TranscriptError",
]


class HotlineError(Exception):
    """Base class of every error hotline raises on purpose."""


class LocalProtocolError(HotlineError):
    """The caller used the API in a way it does not allow."""


class MessageTooLarge(LocalProtocolError):
    """A body is larger than the configured maximum; nothing was sent."""


class RemoteProtocolError(HotlineError):
    """The authenticated peer sent something the protocol does not allow."""


class AuthenticationError(HotlineError):
    """Authentication failed.

    ``str(error)`` is always "authentication failed", whatever went wrong, so nothing that
    reaches the peer or a user-facing message helps an attacker. ``reason`` says what went
    wrong for this side's own logs ("bad signature", "unknown initiator key", ...).
    """

    def __init__(self, *, reason: str = "") -> None:
        super().__init__("authentication failed")
        self.reason = reason


class LineClosed(HotlineError):
    """The line or connection was closed on purpose, by this side or by the peer's goodbye."""


class LineBroken(HotlineError):
    """The connection underneath the line failed: cut, reset, timed out or gone silent."""


class ConnectionClosedError(HotlineError):
    """The sans-io connection was closed on purpose, by this side or by the peer's goodbye.

    The core's own word for it: a driver maps it to its own (the trio driver to
    :class:`LineClosed`), so a caller of the driver never sees it.
    """


class ConnectionBrokenError(HotlineError):
    """The sans-io connection failed: the stream ended, a timer expired or the peer erred.

    The trio driver maps it to :class:`LineBroken`.
    """


class OutboxFull(HotlineError):
    """The outbox is at its limit and the caller asked not to wait."""


class KeyFileError(HotlineError):
    """A key file could not be used: missing, malformed, wrong passphrase or unsafe mode."""


class StoreError(HotlineError):
    """The store could not be used."""


class StoreMismatch(StoreError):
    """The store belongs to another line (another identity or another peer)."""


class StoreVersionError(StoreError):
    """The store was written by a newer version of hotline with a schema this one cannot read."""


class TranscriptError(HotlineError):
    """An offline check of a transcript found a record that does not verify."""


class StoreLocked(StoreError):
    """Another open store (in this process or another) holds the store's lock: one at a time."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid
        """The holder's process id, as it wrote it into the lock file (None if unknown)."""


class StoreInconsistent(TranscriptError):
    """A store's transcript verifies, but a table the line resumes from disagrees with it."""


class EvidenceError(TranscriptError):
    """An evidence document does not check: changed, incomplete, or signed by other keys."""
