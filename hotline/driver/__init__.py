"""The trio driver: lines over the sans-io core (:mod:`hotline.protocol`) and a store.

The path of one message
-----------------------
Each object owns one hop and the counters of that hop; each file is ordered along the path.
One message from ``send()`` to the peer's ``receive()``, and its receipt back:

1. ``_line.py``: :meth:`Line.send` hands the body to the outbox.
2. ``_outbox.py``: :meth:`Outbox.send` signs it with our next sequence number and chain head
   (the outbox owns both), checks the outbox limits, queues it with the committer, and waits
   until its batch is durable.
3. ``_committer.py``: the committer takes the open batch (everything that arrived while the
   last commit was in flight), checks it on a copy of the line state's marks through
   ``LineState``'s rule-checked methods, stores it in one transaction, applies it to a
   successor of the line state (the only writer: it swaps the copy in, never changes the
   state in place), and hands it to the live session. A message on the wire is always one
   on disk.
4. ``_session.py``: :meth:`Session.transmit` gives the message to the
   :class:`~hotline.Connection`, which moves its own marks (it read the line state once, at
   ``start()``), frames and encrypts it, and writes it: over a socket, with one
   non-blocking write from the committer's task while the session's writer is idle;
   otherwise (and whatever the socket did not take) by kicking the writer.

   On the peer's side, its session's reader feeds the bytes to its connection, which
   decrypts, verifies and orders them, and hands each event to the handler of its type.
5. ``_inbox.py``: :meth:`Inbox.queue` drops a message already queued from an earlier
   connection, puts it in its committer's batch, and keeps its body for the application.
   That committer stores it together with the delivered receipt it signs for it, then hands
   the batch to the session (which sends the receipt) and tells the inbox, whose
   ``receive()`` now returns the message; ``ack()`` signs the acknowledged receipt into the
   next batch the same way (with ``auto_ack``, the acknowledgement made by asking for the
   next message waits up to 25 ms for the next batch).
6. Back in our ``_session.py``, the reader hands the receipt to
   :meth:`Outbox.on_peer_receipt`, the outbox's last section: it wakes
   :meth:`Outgoing.delivered`, frees room in the outbox, and queues the receipt for the
   committer, which swaps in a state with the receipt applied and keeps the receipt to
   store (it waits up to 50 ms to ride along with a commit that stores something else).

A line with several paths keeps a session per path (``_paths.py``): the committer hands
what it stores to the active one, and every path's reader feeds the same inbox and outbox.

Before all this, ``_network.py`` (the handshake over a stream, and the dialler) and
``_listener.py`` (one port for many lines) produce authenticated connections and hand them to
:meth:`Line.accept`, which decides which one becomes the session. Neither imports the line:
they see it as a :class:`~hotline.driver._network.LineEnd`. ``_events.py`` holds what the
driver reports (:class:`PeerState`, :class:`PathState`, :class:`DialFailed`, :class:`AckOverdue`,
:class:`Stats`); ``_deadlines.py`` the acknowledgement deadlines of ``send(ack_within=)``.

The hard part: group commit and cancellation
--------------------------------------------
``send()`` assigns the sequence number before the commit, so that concurrent senders get
consecutive numbers and one commit carries a whole burst. From then on the message is part of
the chain: the next message's signature covers its hash, so it must be stored even if the
caller is cancelled. The wait for the commit is therefore uncancellable
(:class:`~hotline.driver._committer.Commit`), and a caller cancelled meanwhile still gets
its :class:`Outgoing`. For that wait to end, every way the committer can stop (the line
closing, its scope cancelled, the store failing) releases every waiter in a ``finally``, and
they see :class:`~hotline.LineClosed` or :class:`~hotline.StoreError`. A new session waits
for the commit in flight before it starts, because it resends from the stored state.
"""

import logging

from ._events import AckOverdue, DialFailed, LineEvent, PathState, PeerState, Stats
from ._inbox import Message
from ._line import Line, open_line
from ._listener import PENDING_PER_SOURCE, Listener, open_listener
from ._network import DIAL_REPORT_INTERVAL, Address, Connector, authenticate
from ._outbox import Outgoing

# A library's logger gets a NullHandler so that an application that configures no logging
# sees nothing: without one, warnings (a stranger's refused handshake) would reach stderr
# through logging.lastResort. Here and not in hotline/__init__.py, which must import nothing
# (the command line handles its signals before logging loads); every module of hotline that
# logs is in this package, or in the command line, which configures logging itself.
logging.getLogger("hotline").addHandler(logging.NullHandler())

__all__ = [
    "DIAL_REPORT_INTERVAL",
    "AckOverdue",
    "PENDING_PER_SOURCE",
    "Address",
    "Connector",
    "DialFailed",
    "Line",
    "LineEvent",
    "Listener",
    "Message",
    "Outgoing",
    "PathState",
    "PeerState",
    "Stats",
    "authenticate",
    "open_line",
    "open_listener",
]
