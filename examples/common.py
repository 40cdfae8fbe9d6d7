"""What alice.py and bob.py share: their command line, their keys, and printing a line's events."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import trio

import hotline


def parse_args(doc: str | None, *, texts: bool = False, count: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:7400", metavar="HOST:PORT",
                        help="where bob listens and alice dials (default 127.0.0.1:7400)")
    parser.add_argument("--dir", type=Path, default=Path("hotline-example"),
                        help="folder of the keys (made on first run) and of the stores\n"
                        "(default ./hotline-example)")
    parser.add_argument("--key", type=Path, help="this node's private key (instead of --dir's)")
    parser.add_argument("--peer", type=Path, help="the peer's public key (instead of --dir's)")
    if texts:
        parser.add_argument("texts", nargs="*", metavar="TEXT",
                            help="messages to send (default: one per line of stdin)")
    if count:
        parser.add_argument("--count", type=int, default=0, metavar="N",
                            help="exit after N messages (default: run until Ctrl-C)")
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    args.address = (host, int(port))
    return args


def load_keys(
    args: argparse.Namespace, me: str, peer: str
) -> tuple[hotline.Identity, hotline.PublicKey]:
    """This node's identity and the peer's public key, made in ``DIR/keys`` on first use.

    For real, each side makes its key on its own machine and only the .pub files travel (check
    their fingerprints by phone); one shared folder keeps the example to two commands.
    """
    folder = args.dir / "keys"
    for name, given in ((me, args.key), (peer, args.peer)):
        if given is None and not (folder / name).exists():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            hotline.Identity.generate(comment=name).save(folder / name)
    identity = hotline.Identity.load(args.key or folder / me)
    return identity, hotline.PublicKey.load(args.peer or folder / f"{peer}.pub")


def store_path(args: argparse.Namespace, me: str) -> Path:
    """``DIR/<me>/hotline.db``: where ``hotline log DIR/<me>`` and ``hotline verify`` look."""
    folder: Path = args.dir / me
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder / "hotline.db"


async def show_events(line: hotline.Line, who: str) -> None:
    """Print the peer's comings and goings and every receipt it signs for our messages."""
    async for event in line.watch():
        if isinstance(event, hotline.PeerState) and event.state is not hotline.Liveness.CONNECTING:
            print(f"{who}: the peer is {event.state.value}", flush=True)
        elif isinstance(event, hotline.ReceiptReceived):
            # Receipts are cumulative: "delivered up to #3" covers #1 and #2 as well.
            receipt = event.receipt
            print(f"{who}: receipt: {receipt.kind.value} up to #{receipt.upto}", flush=True)


async def hang_up_on_signal(scope: trio.CancelScope, who: str) -> None:
    """Ctrl-C (or SIGTERM) cancels ``scope``, so that leaving open_line closes the line cleanly.

    A KeyboardInterrupt would do the same most of the time, but it can strike anywhere, even
    halfway through the library's bookkeeping; a signal received here is only a cancellation.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print(f"{who}: hanging up", flush=True)
            scope.cancel()
            return
