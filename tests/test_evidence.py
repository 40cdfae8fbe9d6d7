"""Evidence for disputes: export from a real store, check with the two keys, refuse any edit.

The stores are real: two lines talk over loopback TCP with SQLite stores and fixed clocks
(each side's signed timestamps advance by exactly one second per reading), so the times the
checker reports are known to the nanosecond. Alice sends three notices, bob holds and
acknowledges them; bob sends one reply, alice acknowledges it; then bob goes away and alice
sends a fourth notice that no receipt ever covers.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from hotline import (
    Config,
    EvidenceError,
    Identity,
    LocalProtocolError,
    SQLiteStore,
    TranscriptError,
    check_evidence,
    export_evidence,
    open_line,
)
from hotline.cli._run import STORE_NAME

ALICE_EPOCH = 1_800_000_000_000_000_000
BOB_EPOCH = 1_800_000_000_500_000_000
SECOND = 1_000_000_000


def _clock(start: int) -> Callable[[], int]:
    ticks = itertools.count()
    return lambda: start + next(ticks) * SECOND


@dataclass(frozen=True)
class World:
    alice: Identity
    bob: Identity
    folder: Path

    def store(self, who: str) -> Path:
        return self.folder / who / STORE_NAME

    def open(self, who: str) -> SQLiteStore:
        return SQLiteStore.open_existing(self.store(who))


async def _talk(world: World) -> None:
    config = Config(reconnect_initial=0.05, reconnect_max=0.2)
    alice, bob = world.alice, world.bob
    with trio.fail_after(30):
        async with open_line(alice, bob.public_key, store=world.store("alice"),
                             listen=("127.0.0.1", 0), config=config, auto_ack=False,
                             clock=_clock(ALICE_EPOCH)) as line_a:
            port = line_a.listen_addresses[0][1]
            async with open_line(bob, alice.public_key, store=world.store("bob"),
                                 connect=("127.0.0.1", port), config=config, auto_ack=False,
                                 clock=_clock(BOB_EPOCH)) as line_b:
                first = await line_a.send(b"notice one")
                message = await line_b.receive()
                await first.delivered()
                message.ack()
                await first.acknowledged()
                await line_a.send(b"notice two")
                third = await line_a.send(b"notice three")
                await line_b.receive()
                message = await line_b.receive()
                await third.delivered()
                message.ack()
                await third.acknowledged()
                reply = await line_b.send(b"copied")
                message = await line_a.receive()
                await reply.delivered()
                message.ack()
                await reply.acknowledged()
            await line_a.send(b"notice four, never received")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("evidence")
    made = World(Identity.generate("alice"), Identity.generate("bob"), folder)
    for who in ("alice", "bob"):
        (folder / who).mkdir()
    trio.run(_talk, made)
    return made


def _export(world: World, who: str, first: int, last: int | None = None,
            *, received: bool = False) -> bytes:
    store = world.open(who)
    try:
        return export_evidence(store, first, last, received=received)
    finally:
        store.close()


def _keys(world: World) -> list:  # type: ignore[type-arg]
    return [world.alice.public_key, world.bob.public_key]


# --- valid evidence, both directions ----------------------------------------------------


def test_a_sent_message_checks_with_the_two_keys_in_either_order(world: World) -> None:
    document = _export(world, "alice", 1)
    for keys in (_keys(world), _keys(world)[::-1]):
        report = check_evidence(document, keys)
        assert report.sender == world.alice.public_key
        assert report.receiver == world.bob.public_key
        [message] = report.messages
        assert (message.seq, message.body, message.sent_at) == (1, b"notice one", ALICE_EPOCH)
        assert report.delivered is not None
        assert report.acknowledged is not None
        assert (report.delivered.upto, report.acknowledged.upto) == (1, 1)
        # Bob's clock: its first reading dated its call (the handshake), the next two the
        # delivered and the acknowledged receipt.
        assert message.delivered_at == BOB_EPOCH + SECOND
        assert message.acknowledged_at == BOB_EPOCH + 2 * SECOND


def test_the_same_message_exported_by_its_receiver_is_the_same_evidence(world: World) -> None:
    assert _export(world, "bob", 1, received=True) == _export(world, "alice", 1)


def test_a_received_message_checks_valid(world: World) -> None:
    document = _export(world, "alice", 1, received=True)
    report = check_evidence(document, _keys(world))
    assert report.sender == world.bob.public_key
    assert [m.body for m in report.messages] == [b"copied"]
    assert report.acknowledged is not None
    assert report.acknowledged.upto == 1


def test_a_range_carries_the_chain_to_the_receipts(world: World) -> None:
    document = _export(world, "alice", 2, 3)
    report = check_evidence(document, _keys(world))
    assert [m.seq for m in report.messages] == [2, 3]
    parsed = json.loads(document)
    assert len(parsed["messages"]) == 2
    assert parsed["after"] == []
    # Message 2 alone: bob's first receipts past it cover up to 3, so 3 comes along in after.
    single = json.loads(_export(world, "alice", 2))
    assert len(single["messages"]) == 1
    assert len(single["after"]) == 1


def test_a_message_without_receipts_says_so(world: World) -> None:
    document = _export(world, "alice", 4)
    report = check_evidence(document, _keys(world))
    assert report.delivered is None
    assert report.acknowledged is None
    assert report.messages[0].delivered_at is None
    assert any("missing receipt proves nothing" in limit for limit in report.limits)


# --- the wrong keys, for evidence of each direction ----------------------------------

BOTH_WAYS = pytest.mark.parametrize("received", [False, True], ids=["sent", "received"])


@BOTH_WAYS
def test_a_third_key_is_refused(world: World, received: bool) -> None:
    document = _export(world, "alice", 1, received=received)
    stranger = Identity.generate().public_key
    for keys in ([world.alice.public_key, stranger], [stranger, world.bob.public_key]):
        with pytest.raises(EvidenceError, match="not one of the trusted keys"):
            check_evidence(document, keys)


@BOTH_WAYS
def test_one_key_is_not_enough(world: World, received: bool) -> None:
    document = _export(world, "alice", 1, received=received)
    with pytest.raises(LocalProtocolError, match="two different trusted keys"):
        check_evidence(document, [world.alice.public_key])
    with pytest.raises(LocalProtocolError, match="two different trusted keys"):
        check_evidence(document, [world.alice.public_key, world.alice.public_key])


@BOTH_WAYS
def test_swapped_sender_and_receiver_are_refused(world: World, received: bool) -> None:
    parsed = json.loads(_export(world, "alice", 1, received=received))
    parsed["sender"], parsed["receiver"] = parsed["receiver"], parsed["sender"]
    swapped = (json.dumps(parsed, indent=1, sort_keys=True) + "\n").encode()
    with pytest.raises(EvidenceError, match="not a message envelope of the sender"):
        check_evidence(swapped, _keys(world))


# --- every byte matters ---------------------------------------------------------------


def test_every_single_byte_change_is_refused(world: World) -> None:
    """At every position of the document: each of the 8 one-bit flips, every hex digit and
    every character of JSON's structure. Those are the changes that can keep the document
    well formed and so reach the checks past the parser. (All 255 values at every position
    of the worked example of docs/evidence.md, 439,620 documents, were refused too; that run
    costs half a minute of CPU, too much for every test run.)"""
    document = _export(world, "alice", 1)
    keys = _keys(world)
    check_evidence(document, keys)
    structure = set(b'0123456789abcdef"{}[],: \n')
    accepted = []
    for position in range(len(document)):
        values = {document[position] ^ (1 << bit) for bit in range(8)} | structure
        for value in sorted(values):
            if value == document[position]:
                continue
            changed = document[:position] + bytes([value]) + document[position + 1 :]
            try:
                check_evidence(changed, keys)
            except EvidenceError:
                continue
            accepted.append((position, value))
    assert accepted == []


def test_duplicate_and_unknown_fields_are_refused(world: World) -> None:
    document = _export(world, "alice", 1)
    duplicated = document.replace(b'"format": ', b'"format": "x",\n "format": ', 1)
    with pytest.raises(EvidenceError, match="appears twice"):
        check_evidence(duplicated, _keys(world))
    parsed = json.loads(document)
    parsed["note"] = "trust me"
    extra = (json.dumps(parsed, indent=1, sort_keys=True) + "\n").encode()
    with pytest.raises(EvidenceError, match="unknown fields"):
        check_evidence(extra, _keys(world))


def test_a_receipt_moved_to_another_message_is_refused(world: World) -> None:
    # Bob's receipts for message 1 put on the evidence for message 2.
    for_one = json.loads(_export(world, "alice", 1))
    for_two = json.loads(_export(world, "alice", 2))
    for_two["receipts"] = for_one["receipts"]
    forged = (json.dumps(for_two, indent=1, sort_keys=True) + "\n").encode()
    with pytest.raises(EvidenceError, match="covers up to message 1, not message 2"):
        check_evidence(forged, _keys(world))


def test_a_chain_longer_than_needed_is_refused(world: World) -> None:
    # Evidence for message 3 with message 4 tacked on: nothing needs it.
    for_three = json.loads(_export(world, "alice", 3))
    for_three["after"] = json.loads(_export(world, "alice", 4))["messages"]
    padded = (json.dumps(for_three, indent=1, sort_keys=True) + "\n").encode()
    with pytest.raises(EvidenceError, match="nothing needs more than message 3"):
        check_evidence(padded, _keys(world))


# --- deadlines, judged against the signed clocks ---------------------------------------


def test_a_deadline_is_met_or_missed_by_the_signed_clocks(world: World) -> None:
    document = _export(world, "alice", 1)
    # Sent at ALICE_EPOCH, acknowledged at BOB_EPOCH + 2 s: 2.5 s later.
    assert check_evidence(document, _keys(world), ack_within=2.5).messages[0].deadline_met
    assert check_evidence(document, _keys(world), ack_within=2.49).messages[0].deadline_met \
        is False
    assert check_evidence(document, _keys(world)).messages[0].deadline_met is None
    unreceipted = _export(world, "alice", 4)
    assert check_evidence(unreceipted, _keys(world), ack_within=60).messages[0].deadline_met \
        is None


# --- what is not exported ----------------------------------------------------------------


def test_no_evidence_from_a_store_verify_rejects(world: World, tmp_path: Path) -> None:
    broken = tmp_path / STORE_NAME
    shutil.copy(world.store("alice"), broken)
    with sqlite3.connect(broken) as db:
        # One byte of the first recorded signature, as a disk error would change it.
        (ord_, signature) = db.execute(
            "SELECT ord, signature FROM transcript ORDER BY ord LIMIT 1").fetchone()
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        db.execute("UPDATE transcript SET signature = ? WHERE ord = ?", (flipped, ord_))
    store = SQLiteStore.open_existing(broken)
    try:
        with pytest.raises(TranscriptError, match="signature does not verify"):
            export_evidence(store, 1)
    finally:
        store.close()


def test_a_message_that_was_never_sent_has_no_evidence(world: World) -> None:
    with pytest.raises(LocalProtocolError, match="never sent here"):
        _export(world, "alice", 5)
    with pytest.raises(LocalProtocolError, match="never received here"):
        _export(world, "alice", 2, received=True)


# --- acknowledgement deadlines on a live line (virtual time) ---------------------------


async def test_overdue_is_reported_once_at_the_deadline_and_not_after_an_ack(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Over in-memory streams under the autojump clock, so the instants are exact: message 1
    is acknowledged in time, message 2 is held but never acknowledged, message 3 has no
    deadline."""
    from hotline import AckOverdue, MemoryStore
    from hotline.driver import Line

    a, b = Identity.from_seed(bytes([0xA1]) * 32), Identity.from_seed(bytes([0xB2]) * 32)
    seen: list[tuple[float, AckOverdue]] = []

    async def watch(line: Line) -> None:
        async for event in line.watch():
            if isinstance(event, AckOverdue):
                seen.append((trio.current_time(), event))  # noqa: PERF401 (each as it happens)

    async with trio.open_nursery() as nursery:
        async with open_line(a, b.public_key, store=MemoryStore()) as line_a, \
                open_line(b, a.public_key, store=MemoryStore(), auto_ack=False) as line_b:
            end_a, end_b = trio.testing.memory_stream_pair()
            nursery.start_soon(functools.partial(line_a.run_stream, end_a, initiator=True))
            nursery.start_soon(functools.partial(line_b.run_stream, end_b, initiator=False))
            nursery.start_soon(watch, line_a)
            await trio.sleep(1)
            start = trio.current_time()
            first = await line_a.send(b"one", ack_within=5)
            (await line_b.receive()).ack()
            await first.acknowledged()
            await trio.sleep_until(start + 10)
            assert seen == []
            second_sent = trio.current_time()
            second = await line_a.send(b"two", ack_within=3)
            await line_b.receive()  # Held, never acknowledged.
            await second.delivered()
            await line_a.send(b"three")
            await trio.sleep_until(second_sent + 100)
        nursery.cancel_scope.cancel()
    assert [event for _, event in seen] == [AckOverdue(seq=2, ack_within=3, delivered=True)]
    assert seen[0][0] == second_sent + 3


async def test_ack_within_must_be_a_finite_number_of_seconds() -> None:
    from hotline import MemoryStore

    a, b = Identity.generate(), Identity.generate()
    async with open_line(a, b.public_key, store=MemoryStore()) as line:
        for bad in (-1.0, math.inf, math.nan):
            with pytest.raises(LocalProtocolError, match="ack_within"):
                await line.send(b"x", ack_within=bad)
        assert line.state.sent_seq == 0


# --- the command line, as real processes ----------------------------------------------


def _hotline(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotline", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture(scope="module")
def pubs(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    keys = {"alice": world.alice.public_key, "bob": world.bob.public_key,
            "stranger": Identity.generate().public_key}
    paths = {}
    for name, key in keys.items():
        paths[name] = folder / f"{name}.pub"
        key.save(paths[name])
    return paths


def test_cli_exports_and_checks_in_both_directions(
    world: World, pubs: dict[str, Path], tmp_path: Path
) -> None:
    for args, body in ((("1",), "notice one"), (("1", "--received"), "copied")):
        exported = _hotline("evidence", world.folder / "alice", *args)
        assert exported.returncode == 0, exported.stderr
        evidence = tmp_path / "evidence.json"
        evidence.write_text(exported.stdout)
        checked = _hotline("check-evidence", evidence, "--key", pubs["bob"],
                           "--key", pubs["alice"], "--ack-within", "60")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("VALID")
        assert f'"{body}"' in checked.stdout
        assert "deadline of 60 s to acknowledge: met" in checked.stdout
        assert "what this evidence cannot prove" in checked.stdout
        as_json = _hotline("check-evidence", evidence, "--key", pubs["alice"],
                           "--key", pubs["bob"], "--json")
        report = json.loads(as_json.stdout)
        assert as_json.returncode == 0
        assert report["valid"] is True
        assert report["messages"][0]["body"] == body


def test_cli_refuses_wrong_or_missing_keys(
    world: World, pubs: dict[str, Path], tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence.json"
    evidence.write_bytes(_export(world, "alice", 1))
    stranger = _hotline("check-evidence", evidence, "--key", pubs["alice"],
                        "--key", pubs["stranger"])
    assert stranger.returncode == 1
    assert "INVALID" in stranger.stdout
    assert "not one of the trusted keys" in stranger.stdout
    as_json = _hotline("check-evidence", evidence, "--key", pubs["alice"],
                       "--key", pubs["stranger"], "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["valid"] is False
    missing = _hotline("check-evidence", evidence, "--key", pubs["alice"])
    assert missing.returncode == 1
    assert "give the two keys you trust" in missing.stderr


def test_cli_says_plainly_that_no_receipt_covers_it(
    world: World, pubs: dict[str, Path], tmp_path: Path
) -> None:
    exported = _hotline("evidence", world.folder / "alice", "4")
    assert exported.returncode == 0, exported.stderr
    evidence = tmp_path / "evidence.json"
    evidence.write_text(exported.stdout)
    checked = _hotline("check-evidence", evidence, "--key", pubs["alice"],
                       "--key", pubs["bob"])
    assert checked.returncode == 0
    assert "no receipt covers it" in checked.stdout


def test_cli_exports_nothing_from_a_store_verify_rejects(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(world.store("alice"), folder / STORE_NAME)
    with sqlite3.connect(folder / STORE_NAME) as db:
        db.execute("UPDATE state SET sent_seq = sent_seq + 1")
    assert _hotline("verify", folder).returncode == 1
    exported = _hotline("evidence", folder, "1")
    assert exported.returncode == 1
    assert exported.stdout == ""
    assert "inconsistent store" in exported.stderr


def test_cli_run_reports_overdue_as_json(tmp_path: Path) -> None:
    """``run --ack-within``: a message to a peer that never answers is overdue once."""
    from test_cli import Node, free_port

    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    alice.save(tmp_path / "alice")
    bob.public_key.save(tmp_path / "bob.pub")
    node = Node("alice", ["run", "--key", tmp_path / "alice", "--peer", tmp_path / "bob.pub",
                          "--data", tmp_path / "data", "--connect", f"127.0.0.1:{free_port()}",
                          "--json", "--ack-within", "0.5"], tmp_path)
    try:
        node.send("are you there?")
        event = node.wait_event(event="overdue")
        assert event.pop("time")
        assert event == {"event": "overdue", "seq": 1, "ack_within": 0.5, "delivered": False}
        node.proc.send_signal(signal.SIGTERM)
        assert node.wait_exit() == 0, node.describe()
        assert len(node.of("overdue")) == 1
    finally:
        node.kill()


# --- the worked example of docs/evidence.md ---------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "evidence.md"


def _worked_example() -> tuple[bytes, Identity, Identity]:
    """The example of docs/evidence.md: protocol.md's check values, in a MemoryStore."""
    from hotline import GENESIS_HEAD, MemoryStore, ReceiptKind, line_id, sign_message, sign_receipt
    from hotline.store import Batch

    a1 = Identity.from_seed(bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    a2 = Identity.from_seed(bytes.fromhex(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"))
    lid = line_id(a1.public_key, a2.public_key)
    store = MemoryStore()
    store.load(a1.public_key, a2.public_key)
    message = sign_message(a1, lid, 1, 1_700_000_000_000_000_000, GENESIS_HEAD, b"hello")
    store.commit(Batch(sent=[message]))
    store.commit(Batch(peer_receipts=[
        sign_receipt(a2, lid, ReceiptKind.DELIVERED, 1, message.hash, 1_700_000_000_500_000_000),
        sign_receipt(a2, lid, ReceiptKind.ACKNOWLEDGED, 1, message.hash,
                     1_700_000_002_000_000_000),
    ]))
    return export_evidence(store, 1), a1, a2


def _fenced(text: str, opening: str) -> str:
    start = text.index(opening) + len(opening)
    return text[start : text.index("```", start)]


def test_the_worked_example_is_what_export_writes_and_check_prints(tmp_path: Path) -> None:
    document, a1, a2 = _worked_example()
    text = DOCS.read_text()
    assert _fenced(text, "```json\n") == document.decode()
    evidence, pub1, pub2 = tmp_path / "notice-1.json", tmp_path / "a1.pub", tmp_path / "a2.pub"
    evidence.write_bytes(document)
    a1.public_key.save(pub1)
    a2.public_key.save(pub2)
    checked = _hotline("check-evidence", evidence, "--key", pub1, "--key", pub2,
                       "--ack-within", "60")
    assert checked.returncode == 0, checked.stderr
    assert _fenced(text, "exits with status 0:\n\n```\n") == checked.stdout


# --- one signature per burst: a message signed for by a later one -----------------------


def _canonical(document: dict) -> bytes:  # type: ignore[type-arg]
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def test_an_unsigned_message_is_covered_by_a_later_signed_one(world: World) -> None:
    """The format of one signature per burst: message 2 without its own signature is
    covered by message 3's, which chains back to it."""
    parsed = json.loads(_export(world, "alice", 2))
    parsed["messages"][0]["signature"] = ""
    report = check_evidence(_canonical(parsed), _keys(world))
    assert [m.body for m in report.messages] == [b"notice two"]
    # Without a signed envelope after it, nothing covers it.
    alone = json.loads(_export(world, "alice", 4))
    alone["messages"][0]["signature"] = ""
    with pytest.raises(EvidenceError, match="no signature covers the messages"):
        check_evidence(_canonical(alone), _keys(world))


def test_an_unsigned_message_must_chain_to_the_signature(world: World) -> None:
    # Message 2 unsigned, then message 4 where message 3 belongs: the chain breaks.
    parsed = json.loads(_export(world, "alice", 2))
    parsed["messages"][0]["signature"] = ""
    parsed["after"] = json.loads(_export(world, "alice", 4))["messages"]
    with pytest.raises(EvidenceError, match="message 4 where 3 belongs"):
        check_evidence(_canonical(parsed), _keys(world))
    # A body changed in the unsigned message breaks the link to the signed one.
    changed = json.loads(_export(world, "alice", 2))
    envelope = changed["messages"][0]["envelope"]
    changed["messages"][0] = {"signature": "",
                              "envelope": envelope[:-2] + f"{int(envelope[-2:], 16) ^ 1:02x}"}
    with pytest.raises(EvidenceError, match="prev is not the hash of message 2"):
        check_evidence(_canonical(changed), _keys(world))


def test_a_deadline_must_be_a_finite_number_of_seconds(world: World) -> None:
    document = _export(world, "alice", 1)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(LocalProtocolError, match="ack_within"):
            check_evidence(document, _keys(world), ack_within=bad)


def test_cli_range_and_standard_input(world: World, pubs: dict[str, Path]) -> None:
    exported = _hotline("evidence", world.folder / "alice", "2..3")
    assert exported.returncode == 0, exported.stderr
    checked = subprocess.run(
        [sys.executable, "-m", "hotline", "check-evidence", "-", "--key", str(pubs["alice"]),
         "--key", str(pubs["bob"]), "--json"],
        input=exported.stdout, capture_output=True, text=True, timeout=60, check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [m["body"] for m in json.loads(checked.stdout)["messages"]] == [
        "notice two", "notice three"]
    for bad in ("3..2", "0", "two", "2..", "9"):
        refused = _hotline("evidence", world.folder / "alice", bad)
        assert refused.returncode == 1, (bad, refused.stderr)
        assert refused.stdout == ""
        assert refused.stderr.startswith("hotline: error: "), refused.stderr


async def test_queue_and_send_nowait_take_a_deadline_too(autojump_clock: trio.abc.Clock) -> None:
    """No peer at all: each message is overdue exactly its own deadline after the call."""
    from hotline import AckOverdue, MemoryStore

    a, b = Identity.generate(), Identity.generate()
    seen: list[tuple[float, int, bool]] = []
    async with open_line(a, b.public_key, store=MemoryStore()) as line, \
            trio.open_nursery() as nursery:

        async def watch() -> None:
            async for event in line.watch():
                if isinstance(event, AckOverdue):
                    seen.append((trio.current_time(), event.seq, event.delivered))  # noqa: PERF401

        nursery.start_soon(watch)
        start = trio.current_time()
        await line.queue(b"queued", ack_within=2)
        line.send_nowait(b"sent at once", ack_within=1)
        await line.queue(b"no deadline")
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert seen == [(start + 1, 2, False), (start + 2, 1, False)]
