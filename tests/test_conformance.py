"""The conformance suite against hotline itself, and against hotline with one check disabled.

The implementation under test is the real ``hotline run`` in a child process, on real TCP
(its behaviour on the wire is the whole point); the suite runs in this process. A broken
variant is the same command started through a small wrapper (``BROKEN``) that rewrites one
condition in the source of one function before the command line runs: the check it disables
is named exactly, so the test fails if the code it patches moves.

For each variant the test asserts that the suite reports FAIL for the case that checks it,
and PASS for the cases that ran before it (the suite's honest peer still works). After it,
the variant may fail more: one that accepted an acknowledgement beyond its delivered mark,
for instance, stops with an inconsistent line state. A check
behind which another check also catches the bad input (a receipt beyond what was sent is
also one whose head was never sent) is not listed: the implementation stays conformant
without it, and no suite can tell.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from hotline import Identity, PublicKey
from hotline.conformance import CASES, CaseResult, cases_for, run_suite

#: Runs ``hotline`` after rewriting one function; the patch comes in $HOTLINE_BROKEN as JSON
#: ``[module, qualified name, old text, new text]``.
BROKEN = """
import importlib, inspect, json, os, sys, textwrap
module_name, qualname, old, new = json.loads(os.environ["HOTLINE_BROKEN"])
module = importlib.import_module(module_name)
owner, _, name = qualname.rpartition(".")
holder = module
for part in filter(None, owner.split(".")):
    holder = getattr(holder, part)
source = textwrap.dedent(inspect.getsource(getattr(holder, name)))
if source.count(old) != 1:
    sys.exit(f"the check to disable is not in {qualname} exactly once: {old!r}")
namespace = {}
exec(compile(source.replace(old, new), module.__file__, "exec"), module.__dict__, namespace)
setattr(holder, name, namespace[name])
from hotline.cli import main
sys.exit(main(sys.argv[1:]))
"""

IMPLEMENTATION_SENDS = b"one\ntwo\nthree\n"


@dataclass
class Keys:
    suite: Identity
    suite_file: Path
    implementation: PublicKey
    implementation_file: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    for name in ("impl", "suite"):
        subprocess.run([sys.executable, "-m", "hotline", "keygen", str(tmp_path / name)],
                       check=True, capture_output=True, timeout=30)
    from hotline._keys import load_identity_file

    return Keys(load_identity_file(tmp_path / "suite", None), tmp_path / "suite",
                PublicKey.load(tmp_path / "impl.pub"), tmp_path / "impl")


@asynccontextmanager
async def implementation(tmp_path: Path, keys: Keys, *, role: str,
                         broken: list[str] | None = None, port: int = 0
                         ) -> AsyncIterator[tuple[str, int] | None]:
    """``hotline run`` listening (yields its address) or calling ``port`` (yields None)."""
    command = [sys.executable]
    env = dict(os.environ)
    if broken is not None:
        command += ["-c", BROKEN]
        env["HOTLINE_BROKEN"] = json.dumps(broken)
    else:
        command += ["-m", "hotline"]
    where = ["--listen", "127.0.0.1:0"] if role == "listen" else ["--connect", f"127.0.0.1:{port}"]
    command += ["run", "--key", str(keys.implementation_file), "--peer",
                str(tmp_path / "suite.pub"), "--data", str(tmp_path / "impl-data"), "--json",
                *where]
    # Files, not pipes: a refused connection is logged, and a full pipe would stall the node.
    stderr_path = tmp_path / "impl.err"
    with open(stderr_path, "wb") as stderr, open(tmp_path / "impl.out", "wb") as stdout:
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env)
    try:
        assert process.stdin is not None
        await process.stdin.send_all(IMPLEMENTATION_SENDS)
        # Stored before the suite connects, so that its first connection carries them.
        with trio.fail_after(30):
            while (tmp_path / "impl.out").read_text().count('"event": "queued"') < 3:
                if process.poll() is not None:
                    raise AssertionError(stderr_path.read_text(errors="replace"))
                await trio.sleep(0.05)
        address = None
        if role == "listen":
            with trio.fail_after(30):
                while address is None:
                    found = re.search(r"listening on 127\.0\.0\.1:(\d+)",
                                      stderr_path.read_text(errors="replace"))
                    if found:
                        address = ("127.0.0.1", int(found.group(1)))
                    elif process.poll() is not None:
                        raise AssertionError(stderr_path.read_text(errors="replace"))
                    else:
                        await trio.sleep(0.05)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def statuses(results: list[CaseResult]) -> dict[str, str]:
    return {r.case.name: f"{r.status} {r.detail}".strip() for r in results}


async def test_every_case_passes_against_hotline_listening(tmp_path: Path, keys: Keys) -> None:
    async with implementation(tmp_path, keys, role="listen") as address:
        results = await run_suite(keys.suite, keys.implementation, connect=address)
    assert [r.case.name for r in results] == [c.name for c in cases_for("connect")]
    assert {n: s for n, s in statuses(results).items() if s != "PASS"} == {}


async def test_every_case_passes_against_hotline_calling(tmp_path: Path, keys: Keys) -> None:
    async with trio.open_nursery() as nursery:
        # The suite listens first on a port of its own choosing; the node then calls it.
        bound: list[tuple[str, int]] = []
        ready = trio.Event()
        results: list[CaseResult] = []

        def listening(address: tuple[str, int]) -> None:
            bound.append(address)
            ready.set()

        async def suite() -> None:
            results.extend(await run_suite(keys.suite, keys.implementation,
                                           listen=("127.0.0.1", 0), on_listening=listening))

        nursery.start_soon(suite)
        await ready.wait()
        async with implementation(tmp_path, keys, role="connect", port=bound[0][1]):
            with trio.fail_after(300):
                while len(results) < len(cases_for("listen")):
                    await trio.sleep(0.1)
    assert {n: s for n, s in statuses(results).items() if s != "PASS"} == {}


def test_case_names_are_unique_and_cite_a_section() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"\d+(\.\d+)?", c.section) for c in CASES)


TRANSPORT = "hotline.protocol._transport"
RECORDS = "hotline.protocol._records"
LIVENESS = "hotline.protocol._liveness"
CODEC = "hotline.protocol._codec"

#: (variant, the check disabled as [module, function, old, new], the case that must fail)
VARIANTS = [
    ("no gap check", [TRANSPORT, "Transport._receive_message",
                      "if seq > received + len(unsigned) + 1:", "if False:"], "gap"),
    ("no prev check", [TRANSPORT, "Transport._receive_message",
                       "if message.prev != head:", "if False:"], "wrong-prev"),
    ("no fork check", [TRANSPORT, "Transport._receive_message",
                       "if seq == received and message.hash != marks.received_head:",
                       "if False:"], "fork"),
    ("no message signature check", [RECORDS, "_signature_ok",
                                    "return signer.verify(",
                                    "return domain == DOMAIN_MESSAGE or signer.verify("],
     "bad-signature"),
    ("no receipt signature check", [RECORDS, "_signature_ok",
                                    "return signer.verify(",
                                    "return domain == DOMAIN_RECEIPT or signer.verify("],
     "receipt-bad-signature"),
    ("no receipt head check", [TRANSPORT, "Transport._receive_receipt",
                               "if known is None or known != receipt.head:", "if False:"],
     "receipt-wrong-head"),
    ("receipts may go back", [TRANSPORT, "Transport._receive_receipt",
                              "if upto < mark:", "if False:"], "receipt-back"),
    ("acknowledged before delivered", [TRANSPORT, "Transport._receive_receipt",
                                       "if upto > line.peer_delivered:", "if False:"],
     "acknowledged-first"),
    ("no unsigned run bound", [TRANSPORT, "Transport._receive_message",
                               "if (len(unsigned) >= self.config.max_unsigned_run",
                               "if (False"], "burst-over-bound"),
    ("non-zero padding accepted", [CODEC, "TransportCodec.open_plaintext",
                                   "if plaintext.count(0, end) != len(plaintext) - end:",
                                   "if False:"], "bad-padding"),
    ("reserved flags accepted", [CODEC, "TransportCodec.open_plaintext",
                                 "if flags & ~_KNOWN_FLAGS:", "if False:"], "reserved-flag"),
    ("no record size limit", [CODEC, "TransportCodec.open_plaintext",
                              "if len(self._partial) + length > max_record_size:", "if False:"],
     "oversize-record"),
    ("unknown record types ignored", [TRANSPORT, "Transport._handle_record",
                                      'raise RemoteProtocolError(f"unknown record type {kind}")',
                                      "return None"], "unknown-type"),
    ("non-canonical envelopes accepted", [RECORDS, "_decode_envelope",
                                          "if not canonical:", "if False:"],
     "non-canonical"),
    ("the interval asked is ignored", [LIVENESS, "PeerLiveness.ping_received",
                                       "max(interval_us / 1_000_000, MIN_REQUESTED_INTERVAL),",
                                       "self._config.heartbeat_interval,"], "ping-pacing"),
    ("never declared down", [LIVENESS, "PeerLiveness._down_at",
                             "return self._last_heard + self._config.down_after",
                             'return float("inf")'], "silence-down"),
    ("ping ids may repeat", [LIVENESS, "PeerLiveness.ping_received",
                             "if ping_id <= self._peer_ping_id:", "if False:"],
     "ping-id-repeat"),
    ("interval 0 accepted", [LIVENESS, "PeerLiveness.ping_received",
                             "if interval_us == 0:", "if False:"], "ping-interval-zero"),
]


@pytest.mark.parametrize(("check", "failing"), [(v[1], v[2]) for v in VARIANTS],
                         ids=[v[0] for v in VARIANTS])
async def test_a_broken_variant_fails_its_case(tmp_path: Path, keys: Keys, check: list[str],
                                               failing: str) -> None:
    only = ["resend-unreceipted", "honest-exchange", failing]
    async with implementation(tmp_path, keys, role="listen", broken=check) as address:
        results = await run_suite(keys.suite, keys.implementation, connect=address, only=only,
                                  case_timeout=30)
    got = statuses(results)
    assert got[failing].startswith("FAIL"), got
    # What follows a failure may fail too: a node that took a bad input is broken for good.
    before = [r.case.name for r in results][: [r.case.name for r in results].index(failing)]
    assert {name: got[name] for name in before} == dict.fromkeys(before, "PASS")


def conformance_command(keys: Keys, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotline", "conformance", "--key", str(keys.suite_file),
         "--peer", str(tmp_path / "impl.pub"), *args],
        capture_output=True, text=True, timeout=120, check=False)


async def test_the_command_prints_a_line_per_case_and_exits_by_the_result(
        tmp_path: Path, keys: Keys) -> None:
    chosen = ["--case", "resend-unreceipted", "--case", "honest-exchange", "--case", "gap"]
    async with implementation(tmp_path, keys, role="listen") as address:
        assert address is not None
        where = f"{address[0]}:{address[1]}"
        human = await trio.to_thread.run_sync(
            lambda: conformance_command(keys, tmp_path, "--connect", where, *chosen))
        as_json = await trio.to_thread.run_sync(
            lambda: conformance_command(keys, tmp_path, "--connect", where, "--json", *chosen))
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines() == [
        "PASS  10    resume: messages not receipted are sent again on the next connection",
        "PASS  10    resume: an honest connection exchanges a message and its delivered receipt",
        "PASS  8     message: a gap in seq is refused",
        "3 passed, 0 failed, 0 skipped of 3 cases",
    ]
    # The second run continues the line of the first from the delivered receipt it is sent;
    # the node's messages were receipted by the first, so nothing is left to resend.
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.returncode == 0, as_json.stderr
    assert [(o["case"], o["section"], o["status"]) for o in lines[:-1]] == [
        ("resend-unreceipted", "10", "SKIP"), ("honest-exchange", "10", "PASS"),
        ("gap", "8", "PASS")]
    assert lines[-1] == {"summary": {"passed": 2, "failed": 0, "skipped": 1, "cases": 3}}


async def test_the_command_exits_1_when_a_case_fails(tmp_path: Path, keys: Keys) -> None:
    broken = [TRANSPORT, "Transport._receive_message", "if message.prev != head:", "if False:"]
    async with implementation(tmp_path, keys, role="listen", broken=broken) as address:
        assert address is not None
        done = await trio.to_thread.run_sync(lambda: conformance_command(
            keys, tmp_path, "--connect", f"{address[0]}:{address[1]}",
            "--case", "honest-exchange", "--case", "wrong-prev"))
    assert done.returncode == 1
    assert done.stdout.splitlines()[1] == "FAIL  8     message: a wrong prev is refused"
    assert done.stdout.splitlines()[-1] == "1 passed, 1 failed, 0 skipped of 2 cases"


def test_the_command_refuses_bad_usage(tmp_path: Path, keys: Keys) -> None:
    neither = conformance_command(keys, tmp_path)
    assert neither.returncode == 2
    assert "one of the arguments --connect --listen is required" in neither.stderr
    both = conformance_command(keys, tmp_path, "--connect", "127.0.0.1:1", "--listen",
                               "127.0.0.1:0")
    assert both.returncode == 2
    unknown = conformance_command(keys, tmp_path, "--connect", "127.0.0.1:1", "--case", "nope")
    assert (unknown.returncode, unknown.stderr) == (1, "hotline: error: no such case: nope\n")
