"""Both ends of a line in one process, over real TCP on 127.0.0.1: the example in one command.

    python examples/both.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from common import show_events

import hotline

TEXTS = ["Radio check. How do you read?", "Convoy moving north at 14:00.", "Over and out."]


async def bob_answers(line: hotline.Line) -> None:
    async for message in line:
        print(f"bob:   <- #{message.seq} {message.body.decode()!r}", flush=True)
        # Answer, then acknowledge (see bob.py for why in this order).
        await line.send(f"copy #{message.seq}".encode())
        message.ack()


async def main(folder: Path) -> None:
    # Fresh keys: each end needs its own private key and only the other's public key.
    alice, bob = hotline.Identity.generate("alice"), hotline.Identity.generate("bob")
    async with hotline.open_line(bob, alice.public_key, store=folder / "bob.db",
                                 listen=("127.0.0.1", 0), auto_ack=False) as bob_line:
        address = bob_line.listen_addresses[0]  # port 0: the system chose a free port
        print(f"bob:   listening on {address[0]}:{address[1]}", flush=True)
        async with (
            hotline.open_line(alice, bob.public_key, store=folder / "alice.db",
                              connect=address, auto_ack=False) as alice_line,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(bob_answers, bob_line)
            nursery.start_soon(show_events, alice_line, "alice")
            sent = []
            for text in TEXTS:
                sent.append(await alice_line.send(text.encode()))
                print(f"alice: -> #{sent[-1].seq} {text!r} queued", flush=True)
            for _ in TEXTS:
                answer = await alice_line.receive()
                print(f"alice: <- #{answer.seq} {answer.body.decode()!r}", flush=True)
                answer.ack()
            await sent[-1].acknowledged()  # cumulative: covers every message before it
            nursery.cancel_scope.cancel()
    # Each store holds a signed transcript that anyone with the two public keys can check.
    for name in ("alice", "bob"):
        with hotline.SQLiteStore(folder / f"{name}.db") as store:
            report = hotline.verify_store(store)
        print(f"{name}: transcript verified: {report.messages_out} sent, "
              f"{report.messages_in} received", flush=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        trio.run(main, Path(folder))
