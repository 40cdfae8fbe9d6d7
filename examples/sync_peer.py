"""One end of a line from plain synchronous code: no async, no event loop of your own.

    python examples/sync_peer.py --key me --peer node.pub --connect 127.0.0.1:7400 \\
        --store me.db --expect 2 "Radio check." "How do you read?"

It dials a node (for example ``hotline run --listen 127.0.0.1:7400`` with the keys the other
way round), sends each TEXT and waits for the node's signed receipt, then prints the node's
messages until it has EXPECT of them, and exits. open_blocking_line runs the line's trio loop
in a thread of its own; every call below blocks until that thread answers.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    args = parse_args()
    host, _, port = args.connect.rpartition(":")
    me = hotline.Identity.load(args.key)
    node = hotline.PublicKey.load(args.peer)
    with hotline.open_blocking_line(me, node, store=args.store,
                                    connect=(host, int(port))) as line:
        for text in args.texts:
            outgoing = line.send(text.encode())  # signed and stored: it has its number
            receipt = outgoing.delivered(timeout=args.timeout)
            print(f"sync: #{outgoing.seq} delivered (the node holds up to #{receipt.upto})",
                  flush=True)
        for _ in range(args.expect):
            try:
                message = line.receive(timeout=args.timeout)
            except TimeoutError:
                print("sync: no message from the node in time", file=sys.stderr)
                return 1
            print(f"sync: <- #{message.seq} {message.body.decode(errors='replace')}", flush=True)
            line.ack(message)  # line.ack, not message.ack(): the message belongs to the line
        line.flush()  # the last acknowledgement is stored before the goodbye
    return 0


if __name__ == "__main__":
    sys.exit(main())
