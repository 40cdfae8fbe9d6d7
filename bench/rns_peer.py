"""Reticulum baseline child: one RNS instance holding one end of a Link, driven by commands.

``python -m bench.rns_peer`` speaks the protocol of :mod:`bench._child`. It is optional: the
bench runs it only when ``rns`` is installed.

Two processes, two Reticulum instances, each with its own configuration directory (made by the
parent, per run) holding one TCP interface on loopback and nothing else: no shared instance, no
AutoInterface, no transport. The *server* owns an IN destination whose proof strategy is
PROVE_ALL, so every packet that arrives over a Link is answered with a proof signed by the
Link (Ed25519 over the packet's hash): Reticulum's delivery receipt, the counterpart of
hotline's signed receipt. The *client* opens a Link to it and measures

- ``throughput``: ``n`` packets of ``size`` bytes with at most ``window`` of them unproven
  (as hotline's peer keeps its outbox busy with concurrent senders); packets proven per
  second, the clock running from the first send to the last proof (``PacketReceipt``
  delivered); a packet without a proof after 5 s is counted in ``lost``;
- ``latency``: one packet at a time, send to its proof.

Lost proofs: Reticulum (1.5.7) registers a packet's receipt only after its interface has
written the packet (``Transport._outbound``'s ``packet_sent``), and drops a proof that matches
no registered receipt. On an idle loopback Link the peer's proof can come back first: that
packet then never counts as proven. It happens most to one-at-a-time sends (``latency``
loses several percent; such a packet is skipped after 1 s and counted in ``lost``, so the
median is of the packets Reticulum itself could prove) and rarely under a full window.

Reticulum is threaded: its interfaces and callbacks run in threads of their own, so each
blocking step here runs in a worker thread and every wait has a timeout. A child never hangs
the bench: when its standard input closes it tears the instance down and leaves with
``os._exit`` (Reticulum's threads would otherwise keep the interpreter alive).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import trio

from ._child import Commands, run_child, serve

APP = "hotlinebench"
ASPECT = "link"


def write_config(config_dir: Path, port: int, *, listen: bool) -> None:
    """One loopback TCP interface, no shared instance: the instance talks to its peer only."""
    if listen:
        interface = ("    type = TCPServerInterface\n    listen_ip = 127.0.0.1\n"
                     f"    listen_port = {port}\n")
    else:
        interface = ("    type = TCPClientInterface\n    target_host = 127.0.0.1\n"
                     f"    target_port = {port}\n")
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config").write_text(
        "[reticulum]\n  enable_transport = No\n  share_instance = No\n"
        "  panic_on_interface_error = No\n\n[logging]\n  loglevel = 2\n\n"
        "[interfaces]\n  [[Loopback TCP]]\n    enabled = yes\n" + interface
    )


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Peer(Commands):
    def __init__(self, role: str) -> None:
        self.role = role
        self.link: Any = None
        self.destination: Any = None  # The server's, kept alive with its callbacks.
        self.established = threading.Event()

    async def cmd_start(self, config_dir: str, port: int, destination: str = "",
                        public_key: str = "", timeout: float = 30.0) -> dict[str, Any]:
        import RNS

        write_config(Path(config_dir), port, listen=self.role == "server")
        # In the main thread (it installs signal handlers), blocking trio for a moment: this
        # child does nothing else meanwhile. Logs go to standard error: standard output
        # carries the command protocol.
        RNS.Reticulum(configdir=config_dir, loglevel=RNS.LOG_WARNING, logdest=_log)
        return await trio.to_thread.run_sync(
            self._start, config_dir, port, destination, public_key, timeout,
            abandon_on_cancel=True)

    def _start(self, config_dir: str, port: int, destination: str, public_key: str,
               timeout: float) -> dict[str, Any]:
        import RNS

        if self.role == "server":
            identity = RNS.Identity()
            inbound = RNS.Destination(identity, RNS.Destination.IN, RNS.Destination.SINGLE,
                                      APP, ASPECT)
            inbound.set_proof_strategy(RNS.Destination.PROVE_ALL)
            inbound.set_link_established_callback(self._on_link)
            # Answers the client's path request (an announce sent now would reach nobody).
            inbound.announce()
            self.destination = inbound
            return {"destination": inbound.hash.hex(),
                    "public_key": identity.get_public_key().hex()}

        identity = RNS.Identity(create_keys=False)
        identity.load_public_key(bytes.fromhex(public_key))
        outbound = RNS.Destination(identity, RNS.Destination.OUT, RNS.Destination.SINGLE,
                                   APP, ASPECT)
        if outbound.hash.hex() != destination:
            raise RuntimeError("the server's key does not give its destination hash")
        deadline = time.monotonic() + timeout
        while not RNS.Transport.has_path(outbound.hash):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no path to the server within {timeout} s")
            RNS.Transport.request_path(outbound.hash)
            time.sleep(0.2)
        t0 = time.perf_counter()
        link = RNS.Link(outbound, established_callback=lambda _link: self.established.set())
        if not self.established.wait(max(1.0, deadline - time.monotonic())):
            raise TimeoutError(f"the Link was not established within {timeout} s")
        self.link = link
        return {"link_s": time.perf_counter() - t0, "mdu": link.get_mdu(),
                "mtu": link.get_mtu()}

    def _on_link(self, link: Any) -> None:
        self.link = link
        self.established.set()

    async def cmd_throughput(self, n: int, size: int, window: int, repeats: int,
                             proof_timeout: float = 5.0, deadline: float = 110.0
                             ) -> dict[str, Any]:
        """``deadline``: seconds a repeat may take before it fails (the parent's own
        timeout on the command is the other guard)."""
        results = [await trio.to_thread.run_sync(
            self._throughput, n, size, window, proof_timeout, deadline, abandon_on_cancel=True)
            for _ in range(repeats)]
        return {"rates": [r["rate"] for r in results], "lost": sum(r["lost"] for r in results)}

    def _throughput(self, n: int, size: int, window: int, proof_timeout: float,
                    timeout: float) -> dict[str, Any]:
        import RNS

        body = os.urandom(size)
        free = threading.Semaphore(window)
        lock = threading.Lock()
        concluded: set[int] = set()
        counts = {"proven": 0, "lost": 0}
        last_proof = [0.0]
        all_done = threading.Event()

        def conclude(receipt: Any, proven: bool) -> None:
            # A proof can come before the callback is set: the sender checks too, once.
            with lock:
                if id(receipt) in concluded:
                    return
                concluded.add(id(receipt))
                counts["proven" if proven else "lost"] += 1
                if proven:
                    last_proof[0] = time.perf_counter()
                if counts["proven"] + counts["lost"] == n:
                    all_done.set()
            free.release()

        receipts = []  # Kept alive until the run ends: ids must stay unique.
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter()
        for _ in range(n):
            if not free.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"throughput: no proof for {timeout} s")
            receipt = RNS.Packet(self.link, body).send()
            if not receipt:
                raise RuntimeError("Reticulum refused to send a packet on the Link")
            # A packet or its proof is sometimes lost (Reticulum packets are not resent):
            # Reticulum's timeout concludes it, so it counts as lost, not as a hang.
            receipt.set_timeout(proof_timeout)
            receipt.set_delivery_callback(lambda r: conclude(r, True))
            receipt.set_timeout_callback(lambda r: conclude(r, False))
            receipts.append(receipt)
            if receipt.status == RNS.PacketReceipt.DELIVERED:
                conclude(receipt, True)
        if not all_done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"throughput: {n - counts['proven']} packets unproven "
                               f"after {timeout} s")
        # Up to the last proof: a lost packet's wait for its timeout is not Reticulum's pace.
        elapsed = last_proof[0] - t0
        return {"rate": counts["proven"] / elapsed, "lost": counts["lost"]}

    async def cmd_latency(self, n: int, size: int, warmup: int = 5,
                          proof_timeout: float = 1.0) -> dict[str, Any]:
        return await trio.to_thread.run_sync(self._latency, n, size, warmup, proof_timeout,
                                             abandon_on_cancel=True)

    def _latency(self, n: int, size: int, warmup: int, proof_timeout: float
                 ) -> dict[str, Any]:
        import RNS

        body = os.urandom(size)
        samples = []
        lost = 0
        for index in range(n + warmup):
            proven = threading.Event()
            t0 = time.perf_counter()
            receipt = RNS.Packet(self.link, body).send()
            if not receipt:
                raise RuntimeError("Reticulum refused to send a packet on the Link")
            receipt.set_timeout(proof_timeout)
            receipt.set_delivery_callback(lambda _r, proven=proven: proven.set())
            if receipt.status != RNS.PacketReceipt.DELIVERED and not proven.wait(proof_timeout):
                # Lost: a sample that would only measure the timeout. On an idle Link this
                # is mostly Reticulum's own race (see the module's header), so it is
                # counted and reported; only a Link that proves nothing fails the command.
                lost += 1
                if lost > max(10, 2 * n):
                    raise TimeoutError(f"latency: {lost} packets without a proof")
                continue
            elapsed = time.perf_counter() - t0
            if index >= warmup:
                samples.append(elapsed)
        return {"samples": samples, "lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("server", "client"))
    args = parser.parse_args()
    try:
        run_child(serve, Peer(args.role))
    finally:
        if "RNS" in sys.modules:
            import RNS

            if RNS.Reticulum.get_instance() is not None:
                RNS.Reticulum.exit_handler()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
