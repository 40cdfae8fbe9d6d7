"""A line peer in a child process, for tests/test_line_processes.py.

Run as ``python line_peer.py --store DIR --me SEED --peer SEED (--listen | --connect HOST:PORT)
[--send N [--resume]] [--interval SECONDS] [--pace SECONDS]``. It opens this node's end of a
line with a SQLite store in DIR and reports on stdout, one JSON object per line, flushed:

- ``{"listening": [host, port]}`` once it listens (``--listen`` binds 127.0.0.1, port 0);
- ``{"opened": {"sent_seq": ..., "received_seq": ..., "acknowledged_upto": ...}}``;
- ``{"queued": seq}`` after each message is stored (its ``send()`` returned: it is durable);
- ``{"delivered": seq}`` once the peer's receipt covers everything it was asked to send;
- ``{"received": seq, "body": "..."}`` for each message from the peer, printed *before* it
  is acknowledged (so a message is printed at least once, and again only if it was not);
- ``{"liveness": "up" | "suspect" | "down" | "connecting"}`` on every change.

``--send N`` sends the bodies ``m1`` .. ``mN`` (message ``k`` has sequence number ``k``);
with ``--resume`` it first reads ``line.state.sent_seq`` from the store and sends only the
rest, so a run killed half-way can be restarted with the same arguments. Identities come
from 32-byte hex seeds. The process ends when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from hotline import Config, Identity, open_line


def emit(**record: object) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main(args: argparse.Namespace) -> None:
    me = Identity.from_seed(bytes.fromhex(args.me))
    peer = Identity.from_seed(bytes.fromhex(args.peer)).public_key
    config = Config(
        heartbeat_interval=args.interval, reconnect_initial=0.05, reconnect_max=0.5,
    )
    async with (
        open_line(
            me, peer, store=f"{args.store}/line.db", config=config,
            listen=("127.0.0.1", 0) if args.listen else None,
            connect=address(args.connect) if args.connect else None,
        ) as line,
        trio.open_nursery() as nursery,
    ):
        if args.listen:
            emit(listening=list(line.listen_addresses[0]))
        state = line.state
        emit(opened={
            "sent_seq": state.sent_seq,
            "received_seq": state.received_seq,
            "acknowledged_upto": state.acknowledged_upto,
        })

        async def watch() -> None:
            async for event in line.watch():
                liveness = getattr(event, "state", None)
                if liveness is not None:
                    emit(liveness=liveness.value)

        async def receive() -> None:
            async for message in line:
                emit(received=message.seq, body=message.body.decode())
                message.ack()
                if args.pace:
                    await trio.sleep(args.pace)  # A slow application.

        async def send() -> None:
            first = state.sent_seq + 1 if args.resume else 1
            if first != state.sent_seq + 1:
                raise SystemExit(f"the store already holds {state.sent_seq} sent messages")
            out = None
            for seq in range(first, args.send + 1):
                out = await line.send(f"m{seq}".encode())
                assert out.seq == seq, (out.seq, seq)
                emit(queued=seq)
            if out is not None:
                await out.delivered()
            emit(delivered=args.send)

        async def until_stdin_closes() -> None:
            stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
            while await stdin.receive_some():
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        nursery.start_soon(receive)
        if args.send:
            nursery.start_soon(send)
        nursery.start_soon(until_stdin_closes)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--me", required=True)
    parser.add_argument("--peer", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", action="store_true")
    where.add_argument("--connect")
    parser.add_argument("--send", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds per message read")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse(sys.argv[1:]))
