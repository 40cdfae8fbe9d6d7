"""One end of a line from an asyncio application (trio runs as a guest of its loop).

    python examples/asyncio_peer.py --key me --peer node.pub --connect 127.0.0.1:7400 \\
        --store me.db --expect 2 "Radio check." "How do you read?"

It dials a node (for example ``hotline run --listen 127.0.0.1:7400`` with the keys the other
way round), sends each TEXT and waits for the node's signed receipt, then prints the node's
messages until it has EXPECT of them, and exits. Meanwhile an ordinary asyncio task ticks,
to show that the loop stays free while the line runs in it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import hotline


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", required=True, help="this program's private key file")
    parser.add_argument("--peer", required=True, help="the node's public key file")
    parser.add_argument("--connect", required=True, metavar="HOST:PORT", help="where it listens")
    parser.add_argument("--store", required=True, help="this end's store (a SQLite file)")
    parser.add_argument("--expect", type=int, default=0, metavar="N",
                        help="messages to read from the node before exiting (default 0)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up waiting for a receipt or a message after this long")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="messages to send")
    return parser.parse_args()


async def tick(ticks: list[int]) -> None:
    """Other asyncio work, running beside the line on the same loop."""
    while True:
        await asyncio.sleep(0.05)
        ticks.append(1)


async def main() -> int:
    args = parse_args()
    host, _, port = args.connect.rpartition(":")
    me = hotline.Identity.load(args.key)
    node = hotline.PublicKey.load(args.peer)
    ticks: list[int] = []
    ticker = asyncio.create_task(tick(ticks))
    try:
        async with hotline.open_asyncio_line(me, node, store=args.store,
                                             connect=(host, int(port))) as line:
            for text in args.texts:
                outgoing = await line.send(text.encode())  # signed and stored
                receipt = await asyncio.wait_for(outgoing.delivered(), args.timeout)
                print(f"asyncio: #{outgoing.seq} delivered (the node holds up to "
                      f"#{receipt.upto})", flush=True)
            for _ in range(args.expect):
                try:
                    message = await asyncio.wait_for(line.receive(), args.timeout)
                except TimeoutError:
                    print("asyncio: no message from the node in time", file=sys.stderr)
                    return 1
                print(f"asyncio: <- #{message.seq} {message.body.decode(errors='replace')}",
                      flush=True)
                await line.ack(message)
            await line.flush()
    finally:
        ticker.cancel()
    print(f"asyncio: done; the loop ticked {len(ticks)} times meanwhile", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
