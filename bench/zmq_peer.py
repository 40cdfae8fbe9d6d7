"""ZeroMQ CURVE baseline child: a ROUTER (server) or a DEALER (client), driven by commands.

``python -m bench.zmq_peer`` speaks the protocol of :mod:`bench._child`. It is optional: the
bench runs it only when ``pyzmq`` is installed.

The server binds a ROUTER on loopback as a CURVE server (its key pair made at start) and
answers every message with an acknowledgement carrying the message's 8-byte number. The
client's DEALER connects as a CURVE client with a key pair of its own (the server accepts any
client key: no ZAP handler, which would only add to the handshake) and measures

- ``throughput``: ``n`` messages of ``size`` bytes with at most ``window`` unacknowledged
  (the application-level window a user adds to know what arrived, as hotline's receipts
  tell); the clock runs from the first send to the last acknowledgement;
- ``latency``: one message at a time, send to its acknowledgement.

The acknowledgements are not signed: this is the cost of CURVE's encryption and ZeroMQ's
framing with a receipt that proves nothing to a third party. Blocking socket work runs in a
worker thread (one socket, one thread at a time, as ZeroMQ requires).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

import trio
import zmq

from ._child import Commands, emit, run_child, serve

SEQ = 8


class Server(Commands):
    def __init__(self) -> None:
        self.context = zmq.Context()
        self.public, secret = zmq.curve_keypair()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.curve_server = True
        self.router.curve_secretkey = secret
        self.router.curve_publickey = self.public
        self.router.linger = 0
        self.router.bind("tcp://127.0.0.1:*")
        self.stopping = threading.Event()

    def _echo(self) -> None:
        router = self.router
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        while not self.stopping.is_set():
            if not poller.poll(100):  # Wakes to see whether the child is stopping.
                continue
            while True:
                try:
                    peer, message = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                router.send_multipart((peer, message[:SEQ]))

    async def run(self) -> None:
        endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        thread = threading.Thread(target=self._echo, name="zmq-router", daemon=True)
        thread.start()
        emit(event="server", endpoint=endpoint, public_key=self.public.decode())
        try:
            await serve(self)
        finally:
            self.stopping.set()
            await trio.to_thread.run_sync(thread.join, 5.0)
            self.router.close(linger=0)
            self.context.term()


class Client(Commands):
    def __init__(self, endpoint: str, server_key: str) -> None:
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        public, secret = zmq.curve_keypair()
        self.dealer.curve_serverkey = server_key.encode()
        self.dealer.curve_publickey = public
        self.dealer.curve_secretkey = secret
        self.dealer.linger = 0
        self.dealer.connect(endpoint)

    async def cmd_throughput(self, n: int, size: int, window: int, repeats: int,
                             timeout: float = 120.0) -> dict[str, Any]:
        rates = [await trio.to_thread.run_sync(
            self._throughput, n, size, window, timeout, abandon_on_cancel=True)
            for _ in range(repeats)]
        return {"rates": rates}

    def _receive_ack(self, poller: zmq.Poller, deadline: float) -> int:
        if not poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            raise TimeoutError("no acknowledgement before the deadline")
        return int.from_bytes(self.dealer.recv(), "big")

    def _throughput(self, n: int, size: int, window: int, timeout: float) -> float:
        dealer = self.dealer
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        body = os.urandom(size - SEQ) if size > SEQ else b""
        deadline = time.monotonic() + timeout
        acked = 0
        t0 = time.perf_counter()
        for seq in range(1, n + 1):
            while seq - acked > window:
                acked = max(acked, self._receive_ack(poller, deadline))
            dealer.send(seq.to_bytes(SEQ, "big") + body)
        while acked < n:
            acked = max(acked, self._receive_ack(poller, deadline))
        return n / (time.perf_counter() - t0)

    async def cmd_latency(self, n: int, size: int, warmup: int = 10,
                          timeout: float = 30.0) -> dict[str, Any]:
        return await trio.to_thread.run_sync(self._latency, n, size, warmup, timeout,
                                             abandon_on_cancel=True)

    def _latency(self, n: int, size: int, warmup: int, timeout: float) -> dict[str, Any]:
        dealer = self.dealer
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        body = os.urandom(size - SEQ) if size > SEQ else b""
        samples = []
        for index in range(n + warmup):
            deadline = time.monotonic() + timeout
            t0 = time.perf_counter()
            dealer.send((1 << 62 | index).to_bytes(SEQ, "big") + body)
            self._receive_ack(poller, deadline)
            if index >= warmup:
                samples.append(time.perf_counter() - t0)
        return {"samples": samples}

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--endpoint", help="client: the server's endpoint")
    parser.add_argument("--server-key", help="client: the server's CURVE public key (Z85)")
    args = parser.parse_args()
    if args.role == "server":
        run_child(Server().run)
    else:
        client = Client(args.endpoint, args.server_key)
        try:
            run_child(serve, client)
        finally:
            client.close()


if __name__ == "__main__":
    main()
