"""The fuzz targets without atheris: every corpus file, then seeded random inputs.

Each target in ``fuzz/`` exposes ``test_one_input(data)``, which raises (an AssertionError or
an undocumented exception) when the invariant stated in the target's header breaks. Here
every file of every target's corpus (the seeds from real transcripts, and the inputs that
once crashed a target) is replayed through every target, so CI guards against regressions
where atheris is not installed; then a few thousand inputs per target from a seeded
``random.Random``, mostly mutations of the seeds, as a smoke test.
"""

from __future__ import annotations

import importlib
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hotline import Connection, LineState, RemoteProtocolError

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import _harness as h  # noqa: E402

TARGETS = ("frames", "records", "handshake", "connection")
RUNNERS: dict[str, Callable[[bytes], None]] = {
    name: importlib.import_module(f"fuzz_{name}").test_one_input for name in TARGETS
}
CORPUS = sorted(path for name in TARGETS for path in (FUZZ / "corpus" / name).iterdir())


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_corpus_is_small_and_present() -> None:
    for name in TARGETS:
        assert any((FUZZ / "corpus" / name).glob("seed-*")), name
    assert len(CORPUS) < 200
    assert sum(path.stat().st_size for path in CORPUS) < 1 << 20


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_corpus_file(target: str, path: Path) -> None:
    RUNNERS[target](path.read_bytes())


def _mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 5)):
        choice = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 8))
        elif choice == 2:
            del data[pos : pos + rng.randrange(1, 64)]
        elif choice == 3:
            data[pos:] = b""
        elif choice == 4 and data:
            data[min(pos, len(data) - 1)] = rng.choice([0, 1, 2, 3, 0x7F, 0x80, 0xFF])
        else:
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            data[pos:pos] = other[start : start + rng.randrange(1, 300)]
    return bytes(data)


@pytest.mark.parametrize("target", TARGETS)
def test_random_inputs(target: str) -> None:
    """2,000 inputs: a quarter random bytes, the rest mutated seeds of the target."""
    rng = random.Random(f"hotline fuzz smoke {target}")
    seeds = [p.read_bytes() for p in sorted((FUZZ / "corpus" / target).glob("seed-*"))]
    run = RUNNERS[target]
    for i in range(2000):
        data = rng.randbytes(rng.randrange(300)) if i % 4 == 0 else _mutate(rng, seeds)
        try:
            run(data)
        except BaseException as exc:
            exc.add_note(f"input #{i}: {data.hex()}")
            raise


@pytest.mark.parametrize("path", sorted((FUZZ / "corpus" / "frames").iterdir()), ids=_id)
def test_clone_matches_fresh_handshake(path: Path) -> None:
    """The cached-and-cloned victim behaves exactly like one built by a real handshake."""

    def fresh() -> tuple[Connection, LineState]:
        session = h.build_session()
        return session.bob, session.bob_line

    data = path.read_bytes()
    assert h.exercise(fresh, data) == h.exercise(h.open_victim, data)


def test_cloned_handshake_states_match_fresh_ones() -> None:
    for stream in (h.MESSAGE1, h.MESSAGE1 + b"\x00\x10" + bytes(16), b"\x00\x05abcde"):
        fresh = h.exercise(lambda: (h.build_responder(), h.BOB_LINE.copy()),
                           stream)
        assert fresh == h.exercise(h.new_responder, stream)
    fresh = h.exercise(lambda: (h.build_initiator(), h.ALICE_LINE.copy()),
                       h.BOB_FLIGHT, h.ALICE)
    assert fresh == h.exercise(h.new_initiator, h.BOB_FLIGHT, h.ALICE)
    assert fresh.state.value == "broken"  # Bob's whole first flight was accepted


def test_seeds_are_reproducible() -> None:
    """``fuzz/make_corpus.py`` writes exactly the committed seeds (nothing is stale)."""
    import make_corpus

    for target, files in make_corpus.seeds().items():
        directory = FUZZ / "corpus" / target
        committed = {p.name: p.read_bytes() for p in directory.glob("seed-*")}
        assert committed == {f"seed-{name}": data for name, data in files.items()}, target


# --- bugs the fuzzers found (see fuzz/README.md) ---------------------------------------------


def test_bug_event_after_error() -> None:
    """Found by fuzz_connection; fixed in b610802 (it was an xfail test until then)."""
    # What the fuzzer's reproducer (test_corpus_file replays it) does, spelled out: Bob's
    # peer is SUSPECT after 1.5 s of silence; then a frame that decrypts (proof of life)
    # carries a malformed record (0xc1 is never valid msgpack).
    conn, line = h.open_victim()
    conn.advance(1.5)
    events: list[object] = []
    h.drain(conn, line, h.BOB, events)
    assert [type(e).__name__ for e in events] == ["LivenessChanged"]
    peer = h.Peer()
    peer.plaintext(b"\x01\x00\x01\xc1")
    conn.receive_data(bytes(peer.segments[-1][2]), 1.5)
    with pytest.raises(RemoteProtocolError) as first:
        conn.next_event()
    with pytest.raises(RemoteProtocolError) as again:  # documented: the same error again
        conn.next_event()  # the bug: it returned the queued LivenessChanged(UP)
    assert again.value is first.value
