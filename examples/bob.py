"""bob's end of the example line: listen, print each message, answer it, acknowledge it.

    python examples/bob.py              # run until Ctrl-C (or SIGTERM)
    python examples/bob.py --count 3    # exit after three messages
"""

from __future__ import annotations

import trio
from common import hang_up_on_signal, load_keys, parse_args, show_events, store_path

import hotline


async def main() -> None:
    args = parse_args(__doc__, count=True)
    me, alice = load_keys(args, "bob", "alice")
    # The store keeps the transcript and the sequence numbers: run bob again and the line
    # carries on where it stopped (anything unanswered is answered then).
    # auto_ack=False: alice's "acknowledged" receipt then means "bob's program handled it",
    # which we say with message.ack() below, not merely "bob asked for the next one".
    async with (
        hotline.open_line(me, alice, store=store_path(args, "bob"), listen=args.address,
                          auto_ack=False) as line,
        trio.open_nursery() as nursery,
    ):
        host, port = args.address
        print(f"bob: listening on {host}:{port} as {me.public_key.fingerprint()}", flush=True)
        nursery.start_soon(show_events, line, "bob")
        nursery.start_soon(hang_up_on_signal, nursery.cancel_scope, "bob")
        received = 0
        answer = None
        async for message in line:  # in order, each once, whoever dialled whom
            print(f"bob: <- #{message.seq} {message.body.decode()!r} "
                  f"(sent {message.sent_at:%H:%M:%S} UTC)", flush=True)
            # Answer first, acknowledge second: when alice holds the acknowledgement, the
            # answer is already on its way, so she can hang up then without missing it.
            answer = await line.send(f"copy #{message.seq}".encode())
            message.ack()
            received += 1
            if received == args.count:
                break
        if answer is not None:
            # Hang up once alice has read the last answer. Hanging up sooner would not lose
            # it (it is stored, and sent when she next calls) but she would wait for it.
            with trio.move_on_after(10):
                await answer.acknowledged()
        nursery.cancel_scope.cancel()
    print(f"bob: done after {received} message(s)", flush=True)


if __name__ == "__main__":
    trio.run(main)
