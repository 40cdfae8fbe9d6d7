"""The network side: the handshake over a stream, and the dialler.

Dialers and listeners (:mod:`._listener`) produce authenticated connections and hand them
to :meth:`Line.accept <hotline.Line.accept>`; the line decides which one lives. Neither
knows the line's class: they see it as a :class:`LineEnd`.

A dialling line calls whenever it has no session, with capped exponential backoff and
jitter. A failed call is reported to watchers as :class:`DialFailed` (at once, then at most
every 30 s while its reason stays the same), so that a wrong address or a wrong key is not
mere silence.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

import trio

from .._config import Config
from .._errors import AuthenticationError, HotlineError, LineBroken, RemoteProtocolError
from .._keys import Identity, PublicKey
from ..protocol import NEED_DATA, Connection, ConnectionBroken, LineState, PeerAuthenticated
from ._events import DialFailed
from ._session import READ_SIZE, line_errors

__all__ = [
    "DIAL_REPORT_INTERVAL",
    "Address",
    "Connector",
    "LineEnd",
    "authenticate",
    "dial",
    "unwrap_single_exception",
]

logger = logging.getLogger("hotline")

#: While calls keep failing for the same reason, DialFailed is reported at most this often
#: (seconds); the first failure and each new reason are reported at once. A caller retries
#: every few seconds for as long as the peer is away, which would bury every other event.
DIAL_REPORT_INTERVAL = 30.0
#: Why a handshake may get no answer: a responder answers nothing to an initiator it does not
#: know, to a key it cannot decrypt for, or beyond its rate limits (docs/security.md).
_NO_ANSWER_CAUSES = (
    "the peer may not know our key, we may have pinned the wrong key for it, "
    "or it is rate-limiting our calls"
)

Address = tuple[str, int]
Connector = Callable[[], Awaitable[trio.abc.Stream]]


class LineEnd(Protocol):
    """What the network side needs of a line: whom it is for, and where connections go."""

    @property
    def identity(self) -> Identity: ...

    @property
    def peer(self) -> PublicKey: ...

    @property
    def config(self) -> Config: ...

    @property
    def state(self) -> LineState: ...

    async def accept(
        self, stream: trio.abc.Stream, conn: Connection, hello: PeerAuthenticated
    ) -> bool: ...


async def authenticate(stream: trio.abc.Stream, conn: Connection) -> PeerAuthenticated:
    """Run ``conn``'s handshake over ``stream`` until the peer is authenticated.

    Bounded by the connection's handshake timeout (:class:`LineBroken` when it expires).
    """
    deadline = conn.next_deadline()
    assert deadline is not None
    with trio.move_on_at(deadline), line_errors():
        data = conn.data_to_send()
        if data:
            await stream.send_all(data)
        while True:
            event = conn.next_event()
            if isinstance(event, PeerAuthenticated):
                return event
            if isinstance(event, ConnectionBroken):
                raise LineBroken(event.reason)
            if event is NEED_DATA:
                received = await stream.receive_some(READ_SIZE)
                conn.receive_data(received, trio.current_time())
    raise LineBroken("the handshake timed out")


async def dial(
    line: LineEnd,
    connect: Connector,
    address: str | None,
    *,
    initiate: Callable[[], Connection],
    no_session: Callable[[], trio.Event],
    backoff: Callable[[int], float],
    report: Callable[[DialFailed], None],
) -> None:
    """Call the peer whenever the line has no session (``no_session()`` is set), forever.

    ``address`` is what reports call the destination; ``backoff(attempt)`` is the wait
    before the next call after ``attempt`` calls.
    """
    config = line.config
    attempt = 0
    failures = 0
    retry_in: float | None = None
    reported: tuple[str, float] | None = None  # The last reason reported, and when.
    while True:
        await no_session().wait()
        if attempt > 0:
            await trio.sleep(backoff(attempt) if retry_in is None else retry_in)
            retry_in = None
            if not no_session().is_set():
                continue  # The peer called us meanwhile.
        attempt += 1
        try:
            with trio.fail_after(config.connect_timeout):
                stream = await connect()
        except (OSError, trio.TooSlowError) as exc:
            logger.debug("dial %d failed: %r", attempt, exc)
            reason = connect_failure(exc, config.connect_timeout)
        else:
            conn = initiate()
            try:
                hello = await authenticate(stream, conn)
            except (HotlineError, trio.BrokenResourceError, OSError) as exc:
                detail = exc.reason if isinstance(exc, AuthenticationError) else str(exc)
                logger.warning("handshake with %s failed: %s: %s", line.peer.fingerprint(),
                               type(exc).__name__, detail)
                await trio.aclose_forcefully(stream)
                reason = handshake_failure(exc, config.handshake_timeout)
            else:
                if await line.accept(stream, conn, hello):
                    attempt = 1
                    failures = 0
                    reported = None
                continue
        failures += 1
        retry_in = backoff(attempt)
        now = trio.current_time()
        if reported is None or reported[0] != reason or now >= reported[1] + (
            DIAL_REPORT_INTERVAL
        ):
            reported = (reason, now)
            report(DialFailed(address, reason, failures, retry_in))


def as_connector(connect: Address | Connector) -> Connector:
    if callable(connect):
        return connect
    host, port = connect
    family = _literal_family(host)
    if family is None:

        async def tcp() -> trio.abc.Stream:
            return await trio.open_tcp_stream(host, port)

        return tcp

    async def direct() -> trio.abc.Stream:
        # An IP address has one target and needs no resolver: trio's open_tcp_stream would
        # still run its happy-eyeballs race in a nursery of its own, a task and two
        # scheduling rounds on every call, which is a good part of a loopback connect.
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    return direct


def _literal_family(host: str) -> socket.AddressFamily | None:
    """The address family of an IP address written out, None for a host name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def address_text(connect: Address | Connector) -> str | None:
    if callable(connect):
        return None
    host, port = connect
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_failure(exc: OSError | trio.TooSlowError, timeout: float) -> str:
    """Why the TCP connection failed, in words (stable for one cause: reports compare it)."""
    if isinstance(exc, trio.TooSlowError):
        return (f"no TCP connection within {timeout:g} s: the host is down or unreachable, "
                "or a firewall drops the call")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    # trio tries every address of the name and reports each failure in the cause.
    errors: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        errors = list(exc.__cause__.exceptions)
    if all(isinstance(error, ConnectionRefusedError) for error in errors):
        return "connection refused: nothing listens on that port"
    causes = dict.fromkeys(
        (error.strerror if isinstance(error, OSError) and error.strerror else str(error)).lower()
        for error in errors
    )
    return f"cannot connect: {'; '.join(causes)}"


def handshake_failure(exc: Exception, handshake_timeout: float) -> str:
    """Why the handshake of a call failed, in words, with the likely causes."""
    if isinstance(exc, AuthenticationError):
        return (f"the answer to our handshake failed authentication ({exc.reason}): whoever "
                "answered does not hold the key we pinned")
    if isinstance(exc, RemoteProtocolError):
        return f"the answer is not a hotline handshake ({exc}): is this the peer's address?"
    if isinstance(exc, LineBroken) and str(exc) == "the handshake timed out":
        return f"connected, but no answer to our handshake within {handshake_timeout:g} s: " + (
            _NO_ANSWER_CAUSES)
    # The connection closed or was reset: a listener closes without a word on a call it
    # refuses, whichever of the causes it was.
    return "connected, but the peer closed the connection during the handshake: " + (
        _NO_ANSWER_CAUSES)


@contextlib.contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Let an error leave a nursery as itself, not inside a group of one.

    trio wraps whatever leaves a nursery (the body included) in an exception group. Callers
    of ``open_line`` should see ``OSError`` for a port in use, ``StoreMismatch`` for another
    line's store, or their own exception from the body, as they would without a nursery.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if error is group:
            raise
        raise error from group.__cause__
