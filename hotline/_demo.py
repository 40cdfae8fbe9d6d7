"""``hotline demo``: two nodes, alice and bob, in one process over real loopback TCP.

Every line the demo prints comes from an event of a real line: a message queued (stored),
received, receipted; a liveness change; a measured round trip. Alice reaches bob through a
relay in this process (:class:`hotline.testing.FaultProxy`), so that the demo can hold and
then cut the link while messages are in flight, exactly as a network would. It ends as a
dispute would: alice exports the evidence of her first message and it is checked offline
with the two public keys alone.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import trio

from ._config import Config
from ._evidence import check_evidence, export_evidence
from ._keys import Identity
from ._verify import verify_store
from .driver import Line, PeerState, open_line
from .protocol import Liveness, ReceiptReceived, RoundTrip
from .store import SQLiteStore
from .testing import FaultProxy

__all__ = ["run_demo"]


class _Show:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.start = time.monotonic()

    def header(self, text: str) -> None:
        if self.as_json:
            print(json.dumps({"event": "step", "title": text}), flush=True)
        else:
            print(f"\n── {text}", flush=True)

    def say(self, who: str, text: str, **fields: Any) -> None:
        elapsed = time.monotonic() - self.start
        if self.as_json:
            print(json.dumps({"t": round(elapsed, 4), "node": who, **fields}), flush=True)
        else:
            print(f"  {elapsed:7.3f}s  {who:<6} {text}", flush=True)


async def _watch(
    line: Line, who: str, show: _Show, rtts: list[float], live_rtt: dict[str, bool]
) -> None:
    async for event in line.watch():
        if isinstance(event, PeerState) and event.state is not Liveness.CONNECTING:
            rtt = "" if line.rtt is None else f" (rtt {line.rtt * 1000:.2f} ms)"
            reason = f": {event.reason}" if event.reason and event.state is not Liveness.UP else ""
            show.say(who, f"peer is {event.state.value}{rtt}{reason}",
                     event="peer", state=event.state.value)
        elif isinstance(event, ReceiptReceived):
            receipt = event.receipt
            mark = "✓ " if receipt.kind.value == "delivered" else "✓✓"
            show.say(who, f"{mark} {receipt.kind.value} up to #{receipt.upto} "
                     f"(signed by the peer)", event=receipt.kind.value, upto=receipt.upto)
        elif isinstance(event, RoundTrip):
            rtts.append(event.rtt)
            if live_rtt["on"]:
                show.say(who, f"heartbeat round trip {event.rtt * 1000:.3f} ms (smoothed "
                         f"{event.smoothed_rtt * 1000:.3f} ms)", event="rtt",
                         rtt_ms=round(event.rtt * 1000, 3))


async def _listen_to(line: Line, who: str, show: _Show, inbox: list[str]) -> None:
    async for message in line:
        text = message.body.decode()
        inbox.append(text)
        show.say(who, f"<- #{message.seq} \"{text}\"", event="message", seq=message.seq,
                 body=text)


async def _demo(show: _Show, workdir: Path) -> bool:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    config = Config(heartbeat_interval=0.5, reconnect_initial=0.1, reconnect_max=0.5)
    stores = {name: SQLiteStore(workdir / f"{name}.db") for name in ("alice", "bob")}
    rtts: list[float] = []
    live_rtt = {"on": False}
    inbox: dict[str, list[str]] = {"alice": [], "bob": []}
    show.header("two nodes with fresh keys: each holds only the other's public key")
    for name, key in (("alice", alice.public_key), ("bob", bob.public_key)):
        show.say(name, key.fingerprint(), event="key", fingerprint=key.fingerprint())
    async with (
        open_line(bob, alice.public_key, store=stores["bob"], listen=("127.0.0.1", 0),
                  config=config) as bob_line,
        trio.open_nursery() as nursery,
    ):
        relay = FaultProxy("127.0.0.1", bob_line.listen_addresses[0][1])
        await nursery.start(relay.serve)
        show.say("bob", f"listens on 127.0.0.1:{relay.target[1]}; alice dials through a "
                 f"relay on 127.0.0.1:{relay.port}", event="listen")
        nursery.start_soon(_watch, bob_line, "bob", show, [], {"on": False})
        nursery.start_soon(_listen_to, bob_line, "bob", show, inbox["bob"])
        async with open_line(alice, bob.public_key, store=stores["alice"],
                             connect=("127.0.0.1", relay.port), config=config) as alice_line:
            nursery.start_soon(_watch, alice_line, "alice", show, rtts, live_rtt)
            nursery.start_soon(_listen_to, alice_line, "alice", show, inbox["alice"])

            show.header("1. a test call, answered")
            call = await alice_line.send(b"Radio check. How do you read?")
            show.say("alice", f"-> #{call.seq} queued and stored", event="queued", seq=call.seq)
            await call.acknowledged()
            reply = await bob_line.send(b"Loud and clear.")
            show.say("bob", f"-> #{reply.seq} queued and stored", event="queued", seq=reply.seq)
            await reply.acknowledged()

            show.header("2. notifications both ways, with delivered and acknowledged receipts")
            last = None
            for text in ("Convoy moving north on route 7 at 14:00.",
                         "Air activity over grid 42 until 15:30.",
                         "Ferry crossing closed for maintenance."):
                last = await alice_line.send(text.encode())
                show.say("alice", f"-> #{last.seq} queued and stored", event="queued",
                         seq=last.seq)
            reply = await bob_line.send(b"Copied all three. Our patrol stays south of grid 40.")
            show.say("bob", f"-> #{reply.seq} queued and stored", event="queued", seq=reply.seq)
            assert last is not None
            await last.acknowledged()
            await reply.acknowledged()

            show.header("3. heartbeats: every 0.5 s each side measures the round trip")
            live_rtt["on"] = True
            await trio.sleep(1.6)
            live_rtt["on"] = False

            show.header("4. the link is cut while messages are in flight")
            relay.hold()
            sent = []
            for number in range(1, 5):
                sent.append(await alice_line.send(f"Position report {number}.".encode()))
                show.say("alice", f"-> #{sent[-1].seq} queued and stored (link silently "
                         "dropping)", event="queued", seq=sent[-1].seq)
            await trio.sleep(0.05)
            cut = relay.cut()
            relay.release()
            show.say("relay", f"cut {cut} connection(s): {len(sent)} messages were in flight",
                     event="cut")
            await sent[-1].delivered()
            await sent[-1].acknowledged()
            await trio.sleep(0.05)  # Let the watchers print the last receipts first.

            show.header("summary")
            stats_a, stats_b = alice_line.stats, bob_line.stats
            smoothed = alice_line.smoothed_rtt
        nursery.cancel_scope.cancel()
    for name in ("alice", "bob"):
        report = verify_store(stores[name])
        show.say(name, f"transcript verified: {report.messages_out} sent, "
                 f"{report.messages_in} received, {report.receipts_out + report.receipts_in} "
                 "signed receipts; every signature and both chains check", event="verified",
                 messages_out=report.messages_out, messages_in=report.messages_in,
                 receipts=report.receipts_out + report.receipts_in)
    _evidence(show, stores["alice"], alice, bob)
    for store in stores.values():
        store.close()
    show.say("alice", f"sent {stats_a.sent}, received {stats_a.received}, retransmitted "
             f"{stats_a.retransmitted} after {stats_a.reconnects} reconnect(s)", event="stats",
             sent=stats_a.sent, received=stats_a.received,
             retransmitted=stats_a.retransmitted, reconnects=stats_a.reconnects)
    show.say("bob", f"sent {stats_b.sent}, received {stats_b.received}", event="stats",
             sent=stats_b.sent, received=stats_b.received)
    if smoothed is not None and rtts:
        show.say("alice", f"round trip: smoothed {smoothed * 1000:.3f} ms over {len(rtts)} "
                 "heartbeats", event="rtt_summary", smoothed_rtt_ms=round(smoothed * 1000, 3),
                 samples=len(rtts))
    lost = [t for t in (f"Position report {n}." for n in range(1, 5)) if t not in inbox["bob"]]
    duplicated = len(inbox["bob"]) - len(set(inbox["bob"]))
    show.say("bob", f"nothing lost ({len(lost)} missing), nothing duplicated "
             f"({duplicated} repeats)", event="check", lost=len(lost), duplicated=duplicated)
    return not lost and not duplicated


def _evidence(show: _Show, store: SQLiteStore, alice: Identity, bob: Identity) -> None:
    """Alice proves to a third party that bob held and acknowledged her first message."""
    document = export_evidence(store, 1)
    report = check_evidence(document, [alice.public_key, bob.public_key], ack_within=60)
    [message] = report.messages
    # The demo waited for both receipts of message 1, so the evidence holds both.
    held = ((message.delivered_at or message.sent_at) - message.sent_at) / 1e6
    acked = ((message.acknowledged_at or message.sent_at) - message.sent_at) / 1e6
    show.say("alice", f"evidence for #1: {len(document)} bytes of JSON, checked with the two "
             f"public keys alone: held {held:.1f} ms and acknowledged {acked:.1f} ms after "
             "sending (each by its signer's clock), within a 60 s deadline: "
             f"{'met' if message.deadline_met else 'not shown'}", event="evidence",
             bytes=len(document), held_ms=round(held, 3), acknowledged_ms=round(acked, 3),
             deadline_met=message.deadline_met)


async def _interruptible_demo(show: _Show, workdir: Path) -> bool | None:
    """The demo, or None if SIGINT or SIGTERM stopped it.

    A signal cancels the demo, so its lines close the way trio closes anything, instead of
    a KeyboardInterrupt raised wherever the signal lands: in a line's own task it broke the
    line under the demo (whose next call then failed with LineClosed, status 1), and an
    ``open_line`` interrupted while entering was finalized only after the run had exited
    ("Exception ignored ... RunFinishedError" on the way out).
    """
    with trio.CancelScope() as scope:
        token = trio.lowlevel.current_trio_token()

        def stop(signum: int, frame: FrameType | None) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)

        signals = (signal.SIGINT, signal.SIGTERM)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = [signal.signal(signum, stop) for signum in signals] if main_thread else []
        try:
            return await _demo(show, workdir)
        finally:
            for signum, handler in zip(signals, previous, strict=False):
                signal.signal(signum, handler)
    return None


def run_demo(*, as_json: bool = False) -> int:
    show = _Show(as_json)
    if not as_json:
        print("hotline demo: alice and bob talk over real TCP on this machine "
              "(loopback), with fresh keys and temporary stores.")
    with tempfile.TemporaryDirectory(prefix="hotline-demo-") as workdir:
        ok = trio.run(_interruptible_demo, show, Path(workdir))
    if ok is None:
        raise KeyboardInterrupt  # The command line's way to say "interrupted" (status 4).
    if not as_json:
        print("\nDone." if ok else "\nFAILED: see above.", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
