"""MemoryStore latency beside Reticulum's proof, alternated: ``python -m bench.latency_pair``.

A focused version of the full run's ``hotline.latency_memory_ms`` and ``baseline.rns_proof_ms``.
The full run measures them minutes apart, and on a shared machine the time one process takes
to wake another moves by several times within minutes (an 80-byte ping-pong between two
processes has been seen at 13 us and at 1 ms in the same minute), so the ratio of two figures
taken apart is mostly the machine. Here the two alternate in rounds of ``-n`` sends each:
hotline (two processes, MemoryStores, 1 KiB bodies, ``send()`` to the delivered receipt, as
``bench/hotline_peer.py`` measures it) and Reticulum (``bench/rns_peer.py``: a Link to a
``PROVE_ALL`` destination, one 1 KiB packet at a time, send to its proof). Prints each
round's medians and ratio, and the median of the ratios. Needs ``rns`` (the ``bench`` extra).

``--store full`` measures hotline with SQLite ``FULL`` stores instead and leaves Reticulum
out (the target compares the ``MemoryStore`` figure): run alternately against another
checkout of the code, it compares two versions' ``FULL`` latency on the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import trio

from ._proc import Proc
from .runner import A_SEED, B_SEED, BODY, _free_port


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hotline-latency-") as tmp_name:
        tmp = Path(tmp_name)
        async with trio.open_nursery() as nursery:
            a = await Proc.start(nursery, "A", "bench.hotline_peer", [], tmp)
            b = await Proc.start(nursery, "B", "bench.hotline_peer", [], tmp)
            server = client = None
            if args.store == "memory":
                server = await Proc.start(nursery, "rns-server", "bench.rns_peer", ["server"],
                                          tmp)
                client = await Proc.start(nursery, "rns-client", "bench.rns_peer", ["client"],
                                          tmp)
            try:
                opened = await b.request("open", name="l", me=B_SEED, peer=A_SEED,
                                         store=args.store, path=str(tmp / "b.db"), listen=True)
                await a.request("open", name="l", me=A_SEED, peer=B_SEED, store=args.store,
                                path=str(tmp / "a.db"), connect=opened["listen"])
                await a.request("wait_up", name="l", timeout=60)
                size = BODY
                if client is not None and server is not None:
                    port = _free_port()
                    started = await server.request(
                        "start", config_dir=str(tmp / "rns-server"), port=port, timeout=120)
                    link = await client.request(
                        "start", config_dir=str(tmp / "rns-client"), port=port,
                        destination=started["destination"], public_key=started["public_key"],
                        timeout=120)
                    size = min(BODY, link["mdu"])
                figures = []  # Our median per round, or its ratio to Reticulum's.
                for index in range(args.rounds):
                    ours = await a.request("latency", name="l", n=args.n, size=size,
                                           timeout=600)
                    ours_ms = statistics.median(ours["samples"]) * 1e3
                    said = f"round {index + 1}: hotline {args.store} {ours_ms:.3f} ms"
                    if client is None:
                        figures.append(ours_ms)
                    else:
                        theirs = await client.request("latency", n=args.n, size=size,
                                                      timeout=600)
                        theirs_ms = statistics.median(theirs["samples"]) * 1e3
                        figures.append(ours_ms / theirs_ms)
                        said += (f", Reticulum proof {theirs_ms:.3f} ms (lost "
                                 f"{theirs['lost']}), ratio {figures[-1]:.2f}")
                    print(said, flush=True)
                what = "median" if client is None else "median ratio"
                target = " ms" if client is None else " (target <= 1)"
                print(f"{size}-byte bodies, {args.rounds} rounds of {args.n}: {what} "
                      f"{statistics.median(figures):.3f}{target}")
            finally:
                for proc in (client, server, a, b):
                    if proc is not None:
                        await proc.aclose(timeout=10)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("-n", type=int, default=300, help="sends of each kind per round")
    parser.add_argument("--store", choices=("memory", "full"), default="memory",
                        help="hotline's stores (full: SQLite FULL, and no Reticulum)")
    trio.run(main, parser.parse_args())
