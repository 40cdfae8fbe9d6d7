"""What one durable commit costs the latency path: ``python -m bench.commit_cost``.

Measures, in this process, the parts that docs/performance.md adds up for the latency of
``send()`` to its delivered receipt: a trio thread hop (``trio.to_thread.run_sync`` of a
function that does nothing, which is how a line runs its store's commits), and
``SQLiteStore.commit`` of a batch of one signed 1 KiB message, with ``synchronous=FULL``
and ``NORMAL``. Prints the median and the 10th and 90th percentiles of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from hotline import Identity, SQLiteStore, line_id
from hotline.store import Batch

BODY = bytes(1024)


def _percentiles(samples: list[float]) -> str:
    deciles = statistics.quantiles(samples, n=10)
    return (f"median {statistics.median(samples) * 1e3:.3f} ms "
            f"(p10 {deciles[0] * 1e3:.3f}, p90 {deciles[-1] * 1e3:.3f}; n={len(samples)})")


async def _thread_hops(n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await trio.to_thread.run_sync(lambda: None)
        samples.append(time.perf_counter() - t0)
    return samples


def _commits(folder: Path, synchronous: str, n: int) -> list[float]:
    me, peer = Identity.from_seed(b"c" * 32), Identity.from_seed(b"d" * 32)
    lid = line_id(me.public_key, peer.public_key)
    with SQLiteStore(folder / f"{synchronous}.db", synchronous=synchronous) as store:
        state = store.load(me.public_key, peer.public_key)
        samples = []
        for _ in range(n):
            message = state.next_message(me, lid, BODY, time.time_ns())
            t0 = time.perf_counter()
            store.commit(Batch(sent=[message]))
            samples.append(time.perf_counter() - t0)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.commit_cost", description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="samples of each (default 500)")
    parser.add_argument("--tmpdir", help="where the stores live (the disk to measure)")
    args = parser.parse_args()
    print("trio thread hop:           ", _percentiles(trio.run(_thread_hops, args.n)))
    with tempfile.TemporaryDirectory(prefix="hotline-commit-", dir=args.tmpdir) as tmp:
        for synchronous in ("FULL", "NORMAL"):
            samples = _commits(Path(tmp), synchronous, args.n)
            print(f"SQLiteStore.commit, {synchronous:6}:", _percentiles(samples))


if __name__ == "__main__":
    main()
