"""Connect + handshake to UP beside the Noise IK baseline: ``python -m bench.connect_path``.

A focused version of the full run's ``hotline.connect_ms`` and ``baseline.noise_connect_ms``:
a server (a listening line with a MemoryStore, and a ``noiseprotocol`` IK responder as
``bench/wire_peer.py`` runs it) and a client that alternates, connect by connect, a fresh
line (MemoryStore, ``open_line(connect=...)`` to liveness UP, as ``hotline_peer`` measures it)
and a Noise IK connect + handshake. Alternating one by one lets both see the same load, so
the ratio holds better than either figure on a busy machine.

``--processes 2`` (the default) puts the server in a child process, as the full run does;
``--processes 1`` runs both in this process, where the figure is the sum of both sides'
work. Prints the median and first quartile of each and their ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import trio

from hotline import Config, Identity, Liveness, MemoryStore, open_line

from ._wire import noise_initiate, noise_respond

A = Identity.from_seed(bytes.fromhex("a1" * 32))
B = Identity.from_seed(bytes.fromhex("b2" * 32))
#: As the full run: the listener's per-address handshake rate must not throttle repeats.
UNLIMITED = Config(handshake_rate=1e6, handshake_burst=1_000_000)


def _x25519_pair() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = X25519PrivateKey.generate()
    return (key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
            key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


async def serve(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Both servers; ``task_status`` gets (hotline port, Noise port, Noise public key hex)."""
    private, public = _x25519_pair()

    async def noise_handler(stream: trio.SocketStream) -> None:
        try:
            secured = await noise_respond(stream, private)
            while await secured.receive_some(65536):
                pass
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        noise_port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, noise_handler, listeners)
        async with open_line(B, A.public_key, store=MemoryStore(), listen=("127.0.0.1", 0),
                             config=UNLIMITED) as line:
            task_status.started((line.listen_addresses[0][1], noise_port, public.hex()))
            async for _ in line:
                pass


async def hotline_connect(port: int) -> float:
    t0 = time.perf_counter()
    async with open_line(A, B.public_key, store=MemoryStore(),
                         connect=("127.0.0.1", port)) as line:
        await line.wait_liveness(Liveness.UP)
        return time.perf_counter() - t0


async def noise_connect(port: int, public: bytes, private: bytes) -> float:
    t0 = time.perf_counter()
    stream = await noise_initiate(await trio.open_tcp_stream("127.0.0.1", port), private, public)
    elapsed = time.perf_counter() - t0
    await trio.aclose_forcefully(stream)
    return elapsed


async def measure(ports: tuple[int, int, str], n: int) -> tuple[list[float], list[float]]:
    hotline_port, noise_port, public = ports
    private, _ = _x25519_pair()
    ours: list[float] = []
    noise: list[float] = []
    for index in range(n + 3):  # The first three warm up and are not counted.
        elapsed = await hotline_connect(hotline_port)
        if index >= 3:
            ours.append(elapsed)
        await trio.sleep(0.003)
        elapsed = await noise_connect(noise_port, bytes.fromhex(public), private)
        if index >= 3:
            noise.append(elapsed)
        await trio.sleep(0.003)
    return ours, noise


async def main(args: argparse.Namespace) -> None:
    if args.role == "server":
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(serve)
            print(json.dumps(ports), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # Until the client is done.
            nursery.cancel_scope.cancel()
        return
    if args.processes == 1:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(serve)
            ours, noise = await measure(ports, args.n)
            nursery.cancel_scope.cancel()
    else:
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.connect_path", "--role", "server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert server.stdin is not None
        assert server.stdout is not None
        try:
            ours, noise = await measure(tuple(json.loads(server.stdout.readline())), args.n)
        finally:
            server.stdin.close()
            server.wait()
    ours_q, noise_q = statistics.quantiles(ours, n=4), statistics.quantiles(noise, n=4)
    print(f"{args.processes} process(es), n={len(ours)}: "
          f"hotline open_line to UP {ours_q[1] * 1e3:.3f} ms (p25 {ours_q[0] * 1e3:.3f}); "
          f"Noise IK {noise_q[1] * 1e3:.3f} ms (p25 {noise_q[0] * 1e3:.3f}); "
          f"ratio {ours_q[1] / noise_q[1]:.2f}x (p25 {ours_q[0] / noise_q[0]:.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, choices=(1, 2), default=2)
    parser.add_argument("-n", type=int, default=200, help="connects of each kind")
    parser.add_argument("--role", choices=("client", "server"), default="client",
                        help=argparse.SUPPRESS)
    trio.run(main, parser.parse_args())
