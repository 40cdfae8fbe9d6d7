"""Scale child: many idle lines in one process.

``python -m bench.scale_peer`` speaks the protocol of :mod:`bench._child`. One process runs
``open_listen``: one identity, one shared listener (``open_listener``), and ``n`` lines to
``n`` peers. The other runs ``open_dial``: ``n`` identities, each with one line dialling that
listener, a window of them at a time. Both use MemoryStores and the heartbeat they are
given. ``idle`` then measures one window: this process's CPU time (user + system, every
thread) and its RSS, plus how many lines are not UP and how many sessions started during the
window (a session after the first means the line went down and came back).

``fd_limit`` raises the soft limit on open files to the hard one (the 10,000-line run
needs one descriptor per line end and more).

``open_plain_listen`` / ``open_plain_dial`` set up the same pattern without hotline, as the
floor of an idle line in trio: ``n`` plain TCP connections whose ends each write one
82-byte record (the size of a padded heartbeat frame) every interval, on a timer task with
a random phase, and read whatever arrives in a reader task. ``idle`` measures them the same
way.
"""

from __future__ import annotations

import gc
import hashlib
import random
import resource
import time
from typing import Any

import trio

from hotline import Config, Identity, Line, Liveness, MemoryStore, open_line, open_listener

from . import _memory
from ._child import Commands, run_child, serve

LISTENER_SEED = bytes([0x5A]) * 32
#: A heartbeat frame: 2-byte length, 64-byte padded plaintext, 16-byte tag.
PLAIN_RECORD = bytes(82)


def dialer_seed(index: int) -> bytes:
    return hashlib.sha256(b"hotline-bench-scale-%d" % index).digest()


class Scale(Commands):
    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.plain_ends = 0
        self.base: dict[str, int] = {}

    def _raise_fd_limit(self, needed: int) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            new = hard if hard == resource.RLIM_INFINITY else min(hard, needed)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))

    async def cmd_fd_limit(self) -> dict[str, int]:
        """Raise the soft limit on open files to the hard one; return both (-1: unlimited)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        unlimited = resource.RLIM_INFINITY
        return {"soft": -1 if soft == unlimited else soft,
                "hard": -1 if hard == unlimited else hard}

    async def cmd_base(self) -> dict[str, int]:
        gc.collect()
        self.base = _memory.now()
        return self.base

    async def _hold_line(self, line_args: dict[str, Any], *,
                         task_status: trio.TaskStatus[Line]) -> None:
        async with open_line(**line_args) as line:
            task_status.started(line)
            await trio.sleep_forever()

    async def cmd_open_listen(self, n: int, config: dict[str, Any]) -> dict[str, Any]:
        self._raise_fd_limit(n + 256)
        me = Identity.from_seed(LISTENER_SEED)
        line_config = Config(**config)
        # A benchmark dials n lines from one address: lift the per-address handshake rate.
        listener_config = Config(**config, handshake_rate=1e6, handshake_burst=1_000_000,
                                 max_pending_handshakes=max(32, n))
        result: dict[str, Any] = {}

        async def hold_listener(*, task_status: trio.TaskStatus[None]) -> None:
            async with open_listener(me, "127.0.0.1", 0, config=listener_config) as listener:
                result["address"] = list(listener.addresses[0])
                for index in range(n):
                    peer = Identity.from_seed(dialer_seed(index)).public_key
                    line = await self.nursery.start(self._hold_line, {
                        "identity": me, "peer": peer, "store": MemoryStore(),
                        "listener": listener, "config": line_config,
                    })
                    self.lines.append(line)
                task_status.started()
                await trio.sleep_forever()

        await self.nursery.start(hold_listener)
        return result

    async def cmd_freeze(self) -> dict[str, int]:
        """Collect, then move every object the cyclic GC tracks out of its sight.

        Thousands of lines are millions of long-lived objects, and each full pass of the
        collector walks them all: with the collector off, 2,500 lines in one process came up
        in 5.3 s instead of 20.6 s. An application that holds that many lines would freeze
        them the same way; what they hold in memory does not change.
        """
        gc.collect()
        gc.freeze()
        return {"frozen": gc.get_freeze_count()}

    async def cmd_open_dial(self, n: int, address: list[Any], config: dict[str, Any],
                            window: int = 100, budget: float | None = None,
                            freeze_every: int = 0) -> dict[str, Any]:
        """Dial ``n`` lines, at most ``window`` of them not yet UP at a time.

        A window rather than batches that each wait for their slowest line: a handshake
        that times out on a busy machine backs off for seconds, and a batch would wait for
        it while the rest of the window keeps dialling. With ``budget`` (seconds), dialling
        stops when it runs out: the lines opened so far stay open (still dialling if not
        UP) and the answer says how many there are.

        With ``freeze_every``, each time that many more lines are opened, what this process
        holds is frozen out of the cyclic GC's sight (see :meth:`cmd_freeze`).
        """
        self._raise_fd_limit(n + 256)
        line_config = Config(**config)
        me_peer = Identity.from_seed(LISTENER_SEED).public_key
        dialling = trio.Semaphore(window)

        async def until_up(line: Line) -> None:
            await line.wait_liveness(Liveness.UP)
            dialling.release()

        t0 = time.perf_counter()
        with trio.move_on_after(float("inf") if budget is None else budget) as scope:
            for index in range(n):
                await dialling.acquire()
                line = await self.nursery.start(self._hold_line, {
                    "identity": Identity.from_seed(dialer_seed(index)), "peer": me_peer,
                    "store": MemoryStore(), "connect": tuple(address),
                    "config": line_config,
                })
                self.lines.append(line)
                self.nursery.start_soon(until_up, line)
                if freeze_every and (index + 1) % freeze_every == 0:
                    await self.cmd_freeze()
            for line in self.lines:
                await line.wait_liveness(Liveness.UP)
        return {"opened_in": time.perf_counter() - t0, "opened": len(self.lines),
                "up": sum(line.liveness is Liveness.UP for line in self.lines),
                "out_of_budget": scope.cancelled_caught}

    async def _plain_end(self, stream: trio.SocketStream, interval: float) -> None:
        async def reader() -> None:
            while await stream.receive_some(65536):
                pass

        async def timer() -> None:
            deadline = trio.current_time() + random.random() * interval
            while True:
                await trio.sleep_until(deadline)
                deadline += interval
                await stream.send_all(PLAIN_RECORD)

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(timer)

    async def cmd_open_plain_listen(self, n: int, interval: float) -> dict[str, Any]:
        self._raise_fd_limit(n + 256)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

        async def accept_all() -> None:
            async with listeners[0]:
                while self.plain_ends < n:
                    stream = await listeners[0].accept()
                    self.plain_ends += 1
                    self.nursery.start_soon(self._plain_end, stream, interval)

        self.nursery.start_soon(accept_all)
        return {"address": ["127.0.0.1", listeners[0].socket.getsockname()[1]]}

    async def cmd_open_plain_dial(self, n: int, address: list[Any],
                                  interval: float) -> dict[str, Any]:
        self._raise_fd_limit(n + 256)
        for _ in range(n):
            stream = await trio.open_tcp_stream(address[0], address[1])
            self.plain_ends += 1
            self.nursery.start_soon(self._plain_end, stream, interval)
        return {"ends": self.plain_ends}

    async def cmd_wait_all_up(self) -> int:
        for line in self.lines:
            await line.wait_liveness(Liveness.UP)
        return len(self.lines)

    async def cmd_idle(self, window: float) -> dict[str, Any]:
        sessions0 = sum(line.stats.sessions for line in self.lines)
        cpu0, wall0 = _memory.cpu_seconds(), time.perf_counter()
        await trio.sleep(window)
        cpu1, wall1 = _memory.cpu_seconds(), time.perf_counter()
        sessions1 = sum(line.stats.sessions for line in self.lines)
        gc.collect()
        return {
            "lines": len(self.lines) or self.plain_ends, "cpu": cpu1 - cpu0, "wall": wall1 - wall0,
            **_memory.now(), "base": self.base,
            "not_up": sum(line.liveness is not Liveness.UP for line in self.lines),
            "new_sessions": sessions1 - sessions0,
        }


def main() -> None:
    run_child(serve, Scale())


if __name__ == "__main__":
    main()
