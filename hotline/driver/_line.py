"""The live line: the public :class:`Line` and :func:`open_line`.

A :class:`Line` is one party's end of a line to one peer. It outlives connections: it holds
the outbox, the inbox and the committer (which owns the :class:`~hotline.LineState`, loaded
from the store when the line opens), the watchers, and at most one live *session*. The
network side hands it authenticated connections (:meth:`Line.accept`); the line decides which
one lives, and marks the peer down when it ends (a dialling line then calls again).

When two sessions authenticate at once (both sides dialled), both sides keep the one
initiated by the party with the smaller public key; a newer session from the same initiator
replaces the older one (that side redialled because it gave the old one up).

A line with several paths (``max_paths`` above 1, see :mod:`._paths`) keeps a session per
path instead: none replaces another, one is active for our messages, and the peer is down
only once every path is.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import trio

from .._config import Config, check_address
from .._errors import AuthenticationError, LineClosed, LocalProtocolError, StoreError
from .._keys import Identity, PublicKey, line_id
from ..protocol import (
    REPLACED,
    Connection,
    LineState,
    Liveness,
    PeerAuthenticated,
    Role,
    RoundTrip,
)
from ..store import Batch, Store
from ._committer import Committer, usable_or_cancelled
from ._deadlines import AckDeadlines
from ._events import LineEvent, PathState, PeerState, Stats, Watchers
from ._inbox import Inbox, Message
from ._listener import Listener
from ._network import (
    Address,
    Connector,
    address_text,
    as_connector,
    authenticate,
    dial,
    unwrap_single_exception,
)
from ._outbox import Outbox, Outgoing
from ._paths import Paths
from ._session import CLOSE_TIMEOUT, Session

__all__ = ["MAX_PATHS", "Line", "open_line"]

logger = logging.getLogger("hotline")

#: The most paths one line keeps (each costs a connection and its heartbeats).
MAX_PATHS = 8
#: Config is frozen, so lines without one of their own share this one: validating a new
#: Config is most of what building a Line costs, on every open_line.
_DEFAULT_CONFIG = Config()


class Line:
    """One end of a line to one peer. Open it with :func:`open_line`."""

    def __init__(
        self,
        identity: Identity,
        peer: PublicKey,
        store: Store,
        *,
        config: Config | None = None,
        auto_ack: bool = True,
        rng: random.Random | None = None,
        clock: Callable[[], int] = time.time_ns,
        max_paths: int = 1,
    ) -> None:
        if identity.public_key == peer:
            raise LocalProtocolError("a line needs two different keys")
        if not 1 <= max_paths <= MAX_PATHS:
            raise LocalProtocolError(f"max_paths is from 1 to {MAX_PATHS}, not {max_paths!r}")
        self.identity = identity
        self.peer = peer
        self.config = config or _DEFAULT_CONFIG
        self.auto_ack = auto_ack
        self.line_id = line_id(identity.public_key, peer)
        self.stats = Stats()
        # Made when a redial first needs it: seeding a Random reads 2.5 KB from the system's
        # entropy, a cost a line that never redials should not pay while it opens.
        self._rng = rng
        self._liveness = Liveness.CONNECTING
        self._active: Session | None = None
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._no_session = trio.Event()
        self._no_session.set()
        self.listen_addresses: list[Address] = []
        self._watchers = Watchers(lambda: self._closed)
        self._paths = (
            Paths(max_paths, self.config.heartbeat_interval, self._watchers.notify)
            if max_paths > 1 else None
        )
        # The wall clock, in nanoseconds since the epoch, for the timestamps we sign (trio's
        # clock is for deadlines only): passed in so that tests can fix it.
        self._committer = Committer(
            identity, self.line_id, store, clock=clock,
            committed=self._committed, stopped=self._committer_stopped,
        )
        self._outbox = Outbox(
            identity, self.line_id, self.config, self._committer, clock=clock,
            stats=self.stats, notify=self._watchers.notify, check_usable=self._check_usable,
        )
        self._inbox = Inbox(
            self.config, self._committer, auto_ack=auto_ack, stats=self.stats,
            check_usable=self._check_usable,
        )
        self._deadlines = AckDeadlines(
            acknowledged_upto=lambda: self._committer.state.peer_acknowledged,
            delivered_upto=lambda: self._committer.state.peer_delivered,
            notify=self._watchers.notify,
        )

    # --- opening and closing ----------------------------------------------------------

    async def _load(self) -> None:
        state = await self._committer.load(self.identity.public_key, self.peer)
        self._outbox.load(state)
        self._inbox.load()
        logger.debug(
            "line %s loaded: sent %d (peer holds %d), received %d (acknowledged %d)",
            self.line_id.hex()[:16], state.sent_seq, state.peer_delivered,
            state.received_seq, state.acknowledged_upto,
        )

    async def aclose(self) -> None:
        """Say goodbye to the peer, flush what is pending, and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            if self._committer.failure is None:
                await self._committer.flush()
            if self._paths is not None:
                for path in list(self._paths.paths):
                    if path.session is not None:
                        path.session.close("the line was closed")
            session = self._active
            if session is not None:
                session.close("the line was closed")
            await self._no_session.wait()
        self._wake_everyone()

    def _committer_stopped(self) -> None:
        if self._committer.failure is None:
            self._closed = True
        elif self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._wake_everyone()

    def _wake_everyone(self) -> None:
        self._outbox.wake_all()
        self._inbox.wake_all()
        self._committer.batch_done.set()
        self._watchers.wake_all()

    def _check_usable(self) -> None:
        failure = self._committer.failure
        if failure is not None:
            raise StoreError(f"the line's store failed: {failure}") from failure
        if self._closed:
            raise LineClosed("the line is closed")

    # --- public state ------------------------------------------------------------------

    @property
    def liveness(self) -> Liveness:
        """What this side believes about the peer: connecting, up, suspect or down."""
        return self._liveness

    @property
    def rtt(self) -> float | None:
        """The last measured round-trip time in seconds (None until a ping of the peer's
        echoes one of ours)."""
        return self._active.rtt if self._active is not None else None

    @property
    def smoothed_rtt(self) -> float | None:
        return self._active.smoothed_rtt if self._active is not None else None

    @property
    def paths(self) -> list[PathState]:
        """Each path of a line with several paths, as :class:`PathState` (empty for a line
        with one path)."""
        if self._paths is None:
            return []
        return [
            PathState(path.id, path.label, path.liveness,
                      path.session.rtt if path.session is not None else None,
                      path is self._paths.active)
            for path in self._paths.paths
        ]

    @property
    def outbox_size(self) -> int:
        """Our messages queued without a delivered receipt."""
        return self._outbox.size

    @property
    def state(self) -> LineState:
        """The line's resumable state (read it; do not change it).

        A new object each time the line moves (a commit, a receipt from the peer): one read
        earlier keeps its marks, while its ``pending`` may already have moved on."""
        return self._committer.state

    async def wait_liveness(self, state: Liveness) -> None:
        """Return once the peer's liveness is ``state``."""
        async for change in self.watch():
            if self._liveness is state:
                return
            del change

    def watch(self) -> AsyncIterator[LineEvent]:
        """Every change of liveness, every new receipt from the peer, every round trip,
        failed calls to the peer (:class:`~hotline.DialFailed`, rate-limited), and every
        acknowledgement deadline missed (:class:`~hotline.AckOverdue`).

        Events are queued per watcher (the oldest are dropped past 10,000), so a watcher
        that reads slowly still sees every transition in order.
        """
        return self._watchers.watch(lambda: PeerState(self._liveness, self.rtt))

    def _set_liveness(self, state: Liveness, reason: str = "") -> None:
        if state is self._liveness:
            return
        self._liveness = state
        logger.info("peer %s is %s%s", self.peer.fingerprint(), state.value,
                    f" ({reason})" if reason else "")
        self._watchers.notify(PeerState(state, self.rtt, reason))

    # --- the application's side: send, receive, flush ----------------------------------

    async def send(
        self, body: bytes, *, wait: bool = True, ack_within: float | None = None
    ) -> Outgoing:
        """Queue ``body`` durably and return once it is stored, with its sequence number.

        Waits while the outbox is full, or raises :class:`OutboxFull` if ``wait`` is false.
        Once this call has assigned the message its sequence number, the message belongs to
        the line: cancelling the call then does not unsend it (it is stored and delivered).
        One ``send()`` at a time waits for its own commit: a producer that sends one message
        after another uses :meth:`queue` instead, to share commits.

        With ``ack_within`` (here and in :meth:`queue` and :meth:`send_nowait`),
        :meth:`watch` reports :class:`~hotline.AckOverdue` if no acknowledged receipt covers
        the message that many seconds after this call (a local deadline, counted from the
        call; it is not sent and does not survive a restart).
        """
        since = _ack_deadline_start(ack_within)
        outgoing = await self._outbox.send(body, wait=wait)
        self._expect_ack(outgoing, ack_within, since)
        return outgoing

    def _expect_ack(self, outgoing: Outgoing, ack_within: float | None, since: float) -> None:
        if ack_within is not None:
            self._deadlines.add(outgoing.seq, ack_within, since=since)

    async def queue(self, body: bytes, *, ack_within: float | None = None) -> Outgoing:
        """Queue ``body`` as our next message and return as soon as it has its number,
        without waiting for it to be stored (:meth:`Outgoing.stored` waits for that).

        Waits only while the outbox is full, like trio's ``MemorySendChannel.send``: cancelled
        while it waits, nothing is queued; once it has returned (or been cancelled after the
        message took its number, which it then still returns), the message belongs to the
        line. Messages queued while a commit is in flight are stored together by the next one.
        """
        since = _ack_deadline_start(ack_within)
        outgoing = await self._outbox.queue(body)
        self._expect_ack(outgoing, ack_within, since)
        return outgoing

    def send_nowait(self, body: bytes, *, ack_within: float | None = None) -> Outgoing:
        """Queue ``body`` as :meth:`queue` does, or raise :class:`OutboxFull` at once if the
        outbox has no room."""
        since = _ack_deadline_start(ack_within)
        outgoing = self._outbox.send_nowait(body)
        self._expect_ack(outgoing, ack_within, since)
        return outgoing

    def _committed(self, batch: Batch) -> None:
        """Hand what the committer made durable to the live session and the inbox."""
        session = self._active
        if session is not None and session.live:
            session.transmit(batch, self._committer.state.acknowledged_receipt)
            if batch.sent:
                self._outbox.transmitted(batch.sent[-1].seq)
        if batch.received:
            self._inbox.stored()

    def __aiter__(self) -> Line:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except LineClosed:
            raise StopAsyncIteration from None

    async def receive(self) -> Message:
        """The next message from the peer, in order, each once (again only if unacknowledged
        when this node crashed). With ``auto_ack``, asking for the next message acknowledges
        the previous one.

        One task at a time: a second task calling while one waits gets
        :class:`trio.BusyResourceError` (which of them would get the next message is
        undefined, and with auto-ack each would acknowledge what the other has not seen).
        """
        return await self._inbox.receive()

    async def flush(self) -> None:
        """Return once every message queued and every acknowledgement made so far is stored."""
        await usable_or_cancelled(self._check_usable)
        await self._committer.flush()
        await usable_or_cancelled(self._check_usable)

    # --- sessions ----------------------------------------------------------------------

    async def accept(
        self, stream: trio.abc.Stream, conn: Connection, hello: PeerAuthenticated
    ) -> bool:
        """Run a connection authenticated to this line's peer as the live session, until it
        ends, if the line takes it; returns whether it did.

        The network side (dialler, listener, :meth:`run_stream`) calls this with the
        ``hello`` of ``conn``'s handshake. The line closes ``stream`` in every case.
        """
        if self._paths is not None:
            return await self._accept_path(self._paths, stream, conn)
        session = Session(
            stream, conn, config=self.config, inbox=self._inbox, outbox=self._outbox,
            notify=self._watchers.notify, set_liveness=self._set_liveness, stats=self.stats,
        )
        try:
            if self._closed:
                return False
            # Resent from the state below: everything queued so far must be in it.
            await self._committer.flush()
            if self._closed or self._committer.failure is not None or not self._admit(session):
                self.stats.rejected_connections += 1
                logger.info("session %d: another connection to %s is kept", session.id,
                            self.peer.fingerprint())
                return False
            state = self._committer.state
            try:
                session.start(state)
            except AuthenticationError as exc:
                logger.warning("session %d: refused: %s", session.id, exc.reason)
                return False
            old = self._active
            if old is not None:
                old.close(REPLACED)
            self._active = session
            self._no_session = trio.Event()
            self.stats.sessions += 1
            # The system's clock, not the line's ``clock``: that one gives the timestamps
            # this side signs, and reading it here would move them.
            self.stats.last_handshake_ns = time.time_ns()
            if self.stats.sessions > 1:
                self.stats.reconnects += 1
            self.stats.retransmitted += self._outbox.resending(state)
            self._committer.session_started(
                responder=not session.initiated_by_us, timestamp=conn.initiation_timestamp
            )
            logger.info(
                "session %d: up with %s as %s; resending %d",
                session.id, self.peer.fingerprint(), conn.role.value, len(state.pending),
            )
            self._set_liveness(Liveness.UP)
            await session.run()
            return True
        finally:
            await session.finish()
            self._session_ended(session)

    async def _accept_path(
        self, paths: Paths, stream: trio.abc.Stream, conn: Connection
    ) -> bool:
        """:meth:`accept` on a line with several paths: every connection is a path."""
        path = paths.new_path(_path_label(stream, conn))

        def liveness_changed(state: Liveness, reason: str) -> None:
            paths.liveness_changed(path, state, reason)
            self._paths_moved(reason)

        def notify(event: LineEvent) -> None:
            self._watchers.notify(event)
            if isinstance(event, RoundTrip) and paths.round_trip(event):
                self._paths_moved("a shorter round trip")

        session = Session(
            stream, conn, config=self.config, inbox=self._inbox, outbox=self._outbox,
            notify=notify, set_liveness=liveness_changed, stats=self.stats,
        )
        path.session = session
        started = False
        try:
            if self._closed:
                return False
            await self._committer.flush()
            if self._closed or self._committer.failure is not None:
                self.stats.rejected_connections += 1
                return False
            state = self._committer.state
            try:
                session.start(state, paths.group_for_new_path())
            except AuthenticationError as exc:
                logger.warning("session %d: refused: %s", session.id, exc.reason)
                return False
            started = True
            victim = paths.room_for()
            if victim is not None and victim.session is not None:
                victim.session.close(f"path {path.id} takes its place")
                paths.remove(victim, f"path {path.id} takes its place")
            if self._no_session.is_set():
                self._no_session = trio.Event()
            self.stats.sessions += 1
            # The system's clock, as accept() reads it (not the line's signing clock).
            self.stats.last_handshake_ns = time.time_ns()
            if self.stats.sessions > 1:
                self.stats.reconnects += 1
            self._committer.session_started(
                responder=not session.initiated_by_us, timestamp=conn.initiation_timestamp
            )
            logger.info("session %d: path %d (%s) up with %s as %s", session.id, path.id,
                        path.label, self.peer.fingerprint(), conn.role.value)
            paths.add(path)
            self._paths_moved(f"path {path.id} is up")
            await session.run()
            return True
        finally:
            await session.finish()
            if started:
                paths.remove(path, session.end_reason or "the connection ended")
                logger.info("session %d: path %d ended: %s", session.id, path.id,
                            session.end_reason or "the connection ended")
                self._paths_moved(f"path {path.id} is down")

    def _paths_moved(self, reason: str) -> None:
        """Follow the paths: the active session, the peer's liveness over all of them."""
        paths = self._paths
        assert paths is not None
        active = paths.active.session if paths.active is not None else None
        if active is not self._active:
            if active is not None:
                self.stats.retransmitted += self._outbox.resending(self._committer.state)
            if self._active is not None and active is not None:
                self.stats.path_switches += 1
            self._active = active
        if not paths.paths:
            self._active = None
            self._no_session.set()
        if self._closed:
            return
        self._set_liveness(paths.liveness(), reason)

    def _admit(self, session: Session) -> bool:
        """Decide whether ``session`` may replace the live one (the same rule on both sides)."""
        old = self._active
        if old is None or not old.peer_up:
            return True
        if session.initiated_by_us == old.initiated_by_us:
            return True  # Its initiator gave the old one up and dialled again.
        # Crossing dials: keep the one initiated by the smaller key.
        we_are_smaller = self.identity.public_key < self.peer
        return session.initiated_by_us == we_are_smaller

    def _session_ended(self, session: Session) -> None:
        if self._active is not session:
            return
        self._active = None
        self._no_session.set()
        reason = session.end_reason or "the connection ended"
        logger.info("session %d: ended: %s", session.id, reason)
        if self._closed:
            return
        if session.replaced_by_peer:
            # The peer moved to another connection (crossing dials): not down, switching.
            self._set_liveness(Liveness.CONNECTING, reason)
            if self._nursery is not None:
                self._nursery.start_soon(self._expect_session, reason)
        else:
            self._set_liveness(Liveness.DOWN, reason)

    async def _expect_session(self, reason: str) -> None:
        """After a switch, the peer's new connection must arrive within a handshake timeout."""
        await trio.sleep(self.config.handshake_timeout)
        if self._active is None and not self._closed:
            self._set_liveness(Liveness.DOWN, f"{reason}; no new connection followed")

    # --- where connections come from ---------------------------------------------------

    def _initiate(self) -> Connection:
        return Connection.initiate(
            self.identity, self.peer, now=trio.current_time(),
            timestamp=self._committer.next_initiation(), config=self.config,
        )

    async def run_stream(self, stream: trio.abc.Stream, *, initiator: bool) -> None:
        """Run the line over a stream the caller already has, until that connection ends.

        Raises :class:`AuthenticationError` or :class:`RemoteProtocolError` if the handshake
        fails, :class:`LineBroken` if it times out or the stream ends during it.
        """
        self._check_usable()
        if initiator:
            conn = self._initiate()
        else:
            conn = Connection.respond(
                self.identity, [self.peer], now=trio.current_time(), config=self.config
            )
        try:
            hello = await authenticate(stream, conn)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        await self.accept(stream, conn, hello)

    def _backoff(self, attempt: int) -> float:
        config = self.config
        delay = min(config.reconnect_max, config.reconnect_initial * 2.0 ** (attempt - 1))
        if self._rng is None:
            self._rng = random.Random()
        return delay * (1 - config.reconnect_jitter * self._rng.random())

    async def _dial(self, connect: Address | Connector) -> None:
        if self._paths is not None:
            # Each address is a path of its own: call again whenever this one's session
            # ends, whatever the other paths do.
            always = trio.Event()
            always.set()
            no_session = lambda: always  # noqa: E731
        else:
            no_session = lambda: self._no_session  # noqa: E731
        await dial(
            self, as_connector(connect), address_text(connect), initiate=self._initiate,
            no_session=no_session, backoff=self._backoff, report=self._watchers.notify,
        )

    async def _serve(
        self, listener: Listener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listener.add(self)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            listener.remove(self)


def _path_label(stream: trio.abc.Stream, conn: Connection) -> str:
    """Where a path goes, for watchers: the address at the other end of its socket."""
    dialled = conn.role is Role.INITIATOR
    if isinstance(stream, trio.SocketStream):
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:
            pass
        else:
            text = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
            return text if dialled else f"in:{text}"
    return "dialled" if dialled else "accepted"


def _ack_deadline_start(ack_within: float | None) -> float:
    """Check an ``ack_within`` argument; the instant its deadline counts from."""
    if ack_within is not None and not 0 <= ack_within < math.inf:
        raise LocalProtocolError("ack_within is a finite number of seconds, at least 0")
    return trio.current_time()


@asynccontextmanager
async def open_line(
    identity: Identity,
    peer: PublicKey,
    *,
    store: Store | str | os.PathLike[str],
    listen: Address | Sequence[Address] | None = None,
    connect: Address | Connector | Sequence[Address | Connector] | None = None,
    listener: Listener | None = None,
    config: Config | None = None,
    durability: str = "FULL",
    auto_ack: bool = True,
    rng: random.Random | None = None,
    clock: Callable[[], int] = time.time_ns,
    max_paths: int | None = None,
) -> AsyncIterator[Line]:
    """Open this node's end of the line to ``peer``.

    ``store`` is a :class:`~hotline.Store` or the path of a SQLite file (created if absent,
    with ``durability`` "FULL" or "NORMAL"). ``listen`` binds a TCP port for this line
    alone; ``listener`` shares one :func:`open_listener` port among several lines.
    ``connect`` is a ``(host, port)`` to dial, or an async callable returning any
    ``trio.abc.Stream`` (a Unix socket, a tunnel). Neither is needed if the caller runs
    streams itself with :meth:`Line.run_stream`. ``rng`` draws the reconnection jitter;
    ``clock`` gives the wall-clock timestamps this side signs, in nanoseconds since the Unix
    epoch.

    Several paths (docs/protocol.md, "Several paths"): ``connect`` may be a list of
    addresses or connectors and ``listen`` a list of addresses; each call is then a path of
    its own, one of them carries the messages, and the line survives the loss of any path
    while another is up. ``max_paths`` (1 to :data:`MAX_PATHS`) is how many paths the line
    keeps at once: by default 1 when it was given at most one address of each kind, else
    :data:`MAX_PATHS`. A side that listens on one port for a peer that dials several paths
    must set it above 1 (with 1, a new connection replaces the old one).
    """
    listens = [check_address(address, "listen", listening=True)
               for address in _addresses(listen)]
    connects = [connect_to if callable(connect_to)
                else check_address(connect_to, "connect", listening=False)
                for connect_to in _connectors(connect)]
    if max_paths is None:
        max_paths = MAX_PATHS if len(listens) > 1 or len(connects) > 1 else 1
    owned_store: Store | None = None
    if isinstance(store, str | os.PathLike):
        from ..store import SQLiteStore

        owned_store = store = SQLiteStore(store, synchronous=durability)
    try:
        with unwrap_single_exception():
            line = Line(identity, peer, store, config=config, auto_ack=auto_ack, rng=rng,
                        clock=clock, max_paths=max_paths)
            await line._load()
            async with trio.open_nursery() as nursery:
                line._nursery = nursery
                nursery.start_soon(line._committer.run)
                nursery.start_soon(line._deadlines.run)
                if listens:
                    # One listener for all the addresses: its rate limits and its pending
                    # table are the line's, however many ports it has.
                    own = Listener(identity, config=config)
                    for address in listens:
                        line.listen_addresses += await nursery.start(own.serve, *address)
                    own.addresses = list(line.listen_addresses)
                    await nursery.start(line._serve, own)
                if listener is not None:
                    await nursery.start(line._serve, listener)
                for connect_to in connects:
                    nursery.start_soon(line._dial, connect_to)
                try:
                    yield line
                finally:
                    await line.aclose()
                    nursery.cancel_scope.cancel()
            failure = line._committer.failure
            if failure is not None:
                raise StoreError(f"the line's store failed: {failure}") from failure
    finally:
        if owned_store is not None:
            owned_store.close()


def _addresses(listen: Address | Sequence[Address] | None) -> list[Address]:
    if listen is None:
        return []
    if len(listen) == 2 and isinstance(listen[0], str):
        return [listen]  # type: ignore[list-item]
    return list(listen)  # type: ignore[arg-type]


def _connectors(
    connect: Address | Connector | Sequence[Address | Connector] | None,
) -> list[Address | Connector]:
    if connect is None:
        return []
    if callable(connect):
        return [connect]
    if len(connect) == 2 and isinstance(connect[0], str):
        return [connect]  # type: ignore[list-item]
    return list(connect)  # type: ignore[arg-type]
