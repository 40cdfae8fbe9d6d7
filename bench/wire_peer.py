"""Baseline child: the same records over plain TCP, TLS 1.3 (mutual) and Noise IK.

``python -m bench.wire_peer server --certs DIR --noise-key HEX`` listens on three loopback
ports (reported as the event ``{"event": "ports", ...}``) and serves each connection: after
its handshake the client sends one header record ``{"op": ..., "n": ...}``, then

- ``throughput``: the client sends ``n`` records; the server reads them all and answers one
  ``done`` record, so the client's clock covers every record end to end;
- ``pingpong``: ``n`` times, the server echoes the record it reads;
- ``connect``: nothing more (the client measured its connect + handshake and closes).

``python -m bench.wire_peer client --certs DIR --noise-pub HEX --ports JSON`` runs those as
commands (``throughput``, ``pingpong``, ``connect``) and answers with timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import trio

from ._child import Commands, emit, run_child, serve
from ._wire import (
    RecordReader,
    client_tls_context,
    frame,
    noise_initiate,
    noise_respond,
    server_tls_context,
)

KINDS = ("tcp", "tls", "noise")


class Server(Commands):
    def __init__(self, args: argparse.Namespace) -> None:
        self.certs = json.loads(open(args.certs).read())  # noqa: SIM115
        self.tls = server_tls_context(self.certs)
        self.noise_key = bytes.fromhex(args.noise_key)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            ports = {}
            for kind in KINDS:
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                ports[kind] = listeners[0].socket.getsockname()[1]
                nursery.start_soon(trio.serve_listeners, self._handler(kind), listeners)
            emit(event="ports", ports=ports)
            await serve(self)
            nursery.cancel_scope.cancel()

    def _handler(self, kind: str) -> Any:
        async def handle(raw: trio.SocketStream) -> None:
            stream: trio.abc.Stream = raw
            try:
                if kind == "tls":
                    stream = trio.SSLStream(raw, self.tls, server_side=True)
                    await stream.do_handshake()
                elif kind == "noise":
                    stream = await noise_respond(raw, self.noise_key)
                reader = RecordReader(stream)
                header = json.loads(await reader.read())
                op, count = header["op"], header.get("n", 0)
                if op == "throughput":
                    read = reader.read
                    for _ in range(count):
                        await read()
                    await stream.send_all(frame(b"done"))
                elif op == "pingpong":
                    for _ in range(count):
                        await stream.send_all(frame(await reader.read()))
                while await stream.receive_some(65536):
                    pass
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            except Exception as exc:  # A handshake error: keep serving the others.
                print(f"wire server ({kind}): {exc!r}", file=sys.stderr)
            finally:
                await trio.aclose_forcefully(stream)

        return handle


class Client(Commands):
    def __init__(self, args: argparse.Namespace) -> None:
        self.certs = json.loads(open(args.certs).read())  # noqa: SIM115
        self.tls = client_tls_context(self.certs)
        self.ports = json.loads(args.ports)
        self.noise_pub = bytes.fromhex(args.noise_pub)
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        self.noise_key = X25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )

    async def connect(self, kind: str) -> tuple[trio.abc.Stream, float]:
        """A connected, authenticated stream and the seconds its connect + handshake took."""
        t0 = time.perf_counter()
        raw = await trio.open_tcp_stream("127.0.0.1", self.ports[kind])
        stream: trio.abc.Stream = raw
        if kind == "tls":
            stream = trio.SSLStream(raw, self.tls, server_hostname="localhost")
            await stream.do_handshake()
        elif kind == "noise":
            stream = await noise_initiate(raw, self.noise_key, self.noise_pub)
        return stream, time.perf_counter() - t0

    async def cmd_connect(self, kind: str, repeats: int) -> dict[str, Any]:
        samples = []
        cipher = None
        for index in range(repeats + 1):  # The first one warms up and is not counted.
            stream, elapsed = await self.connect(kind)
            if index:
                samples.append(elapsed)
            if isinstance(stream, trio.SSLStream):
                cipher = stream.cipher()
            await stream.send_all(frame(json.dumps({"op": "connect"}).encode()))
            await trio.aclose_forcefully(stream)
            await trio.sleep(0.005)
        return {"samples": samples, "cipher": cipher}

    async def cmd_throughput(self, kind: str, n: int, size: int, repeats: int) -> dict[str, Any]:
        record = frame(os.urandom(size))
        rates = []
        for _ in range(repeats):
            stream, _ = await self.connect(kind)
            reader = RecordReader(stream)
            await stream.send_all(frame(json.dumps({"op": "throughput", "n": n}).encode()))
            send_all = stream.send_all
            t0 = time.perf_counter()
            for _ in range(n):
                await send_all(record)
            if await reader.read() != b"done":
                raise RuntimeError("the server did not confirm")
            rates.append(n / (time.perf_counter() - t0))
            await trio.aclose_forcefully(stream)
        return {"rates": rates}

    async def cmd_pingpong(self, kind: str, n: int, size: int, repeats: int) -> dict[str, Any]:
        record = frame(os.urandom(size))
        samples = []
        warmup = 10
        for _ in range(repeats):
            stream, _ = await self.connect(kind)
            reader = RecordReader(stream)
            await stream.send_all(
                frame(json.dumps({"op": "pingpong", "n": n + warmup}).encode())
            )
            for index in range(n + warmup):
                t0 = time.perf_counter()
                await stream.send_all(record)
                await reader.read()
                if index >= warmup:
                    samples.append(time.perf_counter() - t0)
            await trio.aclose_forcefully(stream)
        return {"samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--certs", required=True, help="JSON file naming the PEM files")
    parser.add_argument("--noise-key", help="server: X25519 private key, hex")
    parser.add_argument("--noise-pub", help="client: the server's X25519 public key, hex")
    parser.add_argument("--ports", help="client: JSON {kind: port}")
    args = parser.parse_args()
    if args.role == "server":
        run_child(Server(args).run)
    else:
        run_child(serve, Client(args))


if __name__ == "__main__":
    main()
