"""alice's end of the example line: dial bob, send messages, wait for receipts and answers.

    python examples/alice.py "Radio check." "How do you read?"
    printf 'one\\ntwo\\n' | python examples/alice.py
"""

from __future__ import annotations

import sys

import trio
from common import hang_up_on_signal, load_keys, parse_args, show_events, store_path

import hotline


async def main() -> None:
    args = parse_args(__doc__, texts=True)
    texts = args.texts or [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    me, bob = load_keys(args, "alice", "bob")
    # connect= makes the line dial, and redial with backoff whenever the connection drops:
    # alice may start before bob, and her messages wait in the store until he answers.
    async with (
        hotline.open_line(me, bob, store=store_path(args, "alice"), connect=args.address,
                          auto_ack=False) as line,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(show_events, line, "alice")
        # Ctrl-C while bob is away: whatever is queued stays in the store for the next run.
        nursery.start_soon(hang_up_on_signal, nursery.cancel_scope, "alice")
        sent = []
        for text in texts:
            # send() returns once the message is signed and stored: from here on it survives
            # a crash of either side and is delivered exactly once, in order.
            outgoing = await line.send(text.encode())
            print(f"alice: -> #{outgoing.seq} {text!r} queued", flush=True)
            sent.append(outgoing)
        answers = 0
        while answers < len(sent):  # bob answers every message
            answer = await line.receive()
            print(f"alice: <- #{answer.seq} {answer.body.decode()!r}", flush=True)
            answer.ack()
            answers += 1
        if sent:
            # One receipt covers every message up to its number, so the last one is enough.
            receipt = await sent[-1].acknowledged()
            print(f"alice: bob acknowledged everything up to #{receipt.upto}", flush=True)
        nursery.cancel_scope.cancel()
    # Leaving open_line flushed our acknowledgements and said goodbye to bob.
    print("alice: done", flush=True)


if __name__ == "__main__":
    trio.run(main)
