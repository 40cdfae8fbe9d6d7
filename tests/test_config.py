"""Every setting is checked when it is made: a bad value is one named error, never a crash later.

A `Config` field out of range, of the wrong type, infinite or NaN raises `LocalProtocolError`
whose one-line message names the field; so does an address whose port TCP cannot carry.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import trio

from hotline import (
    GENESIS_HEAD,
    Config,
    Identity,
    LocalProtocolError,
    MemoryStore,
    RemoteProtocolError,
    line_id,
    open_line,
    open_listener,
    open_message,
    sign_message,
)
from hotline._config import _RANGES, MIN_BODY_SIZE, MIN_HEARTBEAT_INTERVAL
from hotline.protocol import MAX_STR_LEN, MIN_REQUESTED_INTERVAL

NOT_FINITE = [math.inf, -math.inf, math.nan]

INVALID: list[tuple[str, Any]] = [
    *[("heartbeat_interval", value) for value in [*NOT_FINITE, 0, -1.0, 1e-9, 0.009, 86_401]],
    *[("heartbeat_multiplier", value) for value in [*NOT_FINITE, 0.5, 256]],
    *[("suspect_after", value) for value in [*NOT_FINITE, 0, -1, 3.5]],
    *[("handshake_timeout", value) for value in [*NOT_FINITE, 0, -5]],
    *[("rekey_after_messages", value) for value in [0, -1, 2**63, 1.5, math.inf]],
    *[("rekey_after_seconds", value) for value in [*NOT_FINITE, 0]],
    *[("max_body_size", value) for value in [-1, 0, MIN_BODY_SIZE - 1, (1 << 30) + 1, 1e6]],
    *[("padding", value) for value in [-1, 4097, 64.0]],
    *[("reconnect_initial", value) for value in [*NOT_FINITE, 0, 6.0]],
    *[("reconnect_max", value) for value in [*NOT_FINITE, 0, 0.05]],
    *[("reconnect_jitter", value) for value in [*NOT_FINITE, -0.1, 1, 1.5]],
    *[("connect_timeout", value) for value in [*NOT_FINITE, 0]],
    *[("outbox_limit", value) for value in [0, -1, 1 << 31, 10.0]],
    *[("outbox_limit_bytes", value) for value in [0, 1000, 1 << 41]],
    *[("inbox_window", value) for value in [0, 2.0]],
    *[("max_pending_handshakes", value) for value in [0, -3]],
    *[("handshake_rate", value) for value in [*NOT_FINITE, 0, -1]],
    *[("handshake_burst", value) for value in [0, 1.0]],
    *[("signature_batch", value) for value in [-1, 1, 257]],
    *[(name, value) for name in ("heartbeat_interval", "max_body_size") for value in
      [True, "1", None]],
]


@pytest.mark.parametrize(("field", "value"), INVALID, ids=[f"{f}={v!r}" for f, v in INVALID])
def test_a_bad_setting_is_one_line_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Config(**{field: value})
    message = str(info.value)
    # A value out of its own range names its field first; one that contradicts another
    # field (reconnect_max below reconnect_initial) names both.
    assert f"{field} must " in message or (" must " in message and field in message), message
    assert "\n" not in message


def test_every_field_has_a_range() -> None:
    # A field added without a range would go unchecked.
    assert set(_RANGES) == {field.name for field in dataclasses.fields(Config)}


@pytest.mark.parametrize(
    "settings",
    [
        {"heartbeat_interval": MIN_HEARTBEAT_INTERVAL},
        {"heartbeat_interval": 2},
        {"max_body_size": MIN_BODY_SIZE},
        {"max_body_size": 1 << 30, "outbox_limit_bytes": 1 << 30},
        {"reconnect_jitter": 0},
        {"padding": 0, "signature_batch": 256},
        {"suspect_after": 3.0, "heartbeat_multiplier": 3},
        {"handshake_rate": 1e6, "handshake_burst": 1_000_000},
    ],
)
def test_values_at_the_edges_of_their_ranges_are_accepted(settings: dict[str, Any]) -> None:
    config = Config(**settings)
    for name, value in settings.items():
        assert getattr(config, name) == value


def test_the_heartbeat_floor_is_the_protocols_ping_floor() -> None:
    # Below it the peer still pings only every 10 ms: our silence thresholds would expire
    # between two of its pings.
    assert MIN_HEARTBEAT_INTERVAL == MIN_REQUESTED_INTERVAL


def test_the_smallest_body_limit_still_decodes_an_envelope() -> None:
    me, peer = Identity.generate(), Identity.generate()
    lid = line_id(me.public_key, peer.public_key)
    message = sign_message(me, lid, 1, 0, GENESIS_HEAD, b"")
    opened = open_message(message.envelope, message.signature, sender=me.public_key,
                          line_id=lid, max_body_size=MIN_BODY_SIZE)
    assert opened.body == b""
    with pytest.raises(RemoteProtocolError):
        open_message(message.envelope, message.signature, sender=me.public_key,
                     line_id=lid, max_body_size=MIN_BODY_SIZE - 1)


ADDRESSES: list[tuple[str, Any, str]] = [
    ("listen", ("127.0.0.1", 99999), "99999"),
    ("listen", ("127.0.0.1", 65536), "65536"),
    ("listen", ("127.0.0.1", -1), "-1"),
    ("listen", ("127.0.0.1", "7400"), "'7400'"),
    ("listen", ("127.0.0.1",), "pair"),
    ("connect", ("127.0.0.1", 99999), "99999"),
    ("connect", ("127.0.0.1", 0), "0"),
    ("connect", ("127.0.0.1", True), "True"),
    ("connect", "127.0.0.1:7400", "pair"),
]


@pytest.mark.parametrize(("where", "address", "shown"), ADDRESSES)
async def test_open_line_refuses_an_address_tcp_cannot_carry(
    where: str, address: Any, shown: str
) -> None:
    me, peer = Identity.generate(), Identity.generate()
    with trio.fail_after(5), pytest.raises(LocalProtocolError) as info:
        async with open_line(me, peer.public_key, store=MemoryStore(), **{where: address}):
            pytest.fail("the line opened")
    message = str(info.value)
    assert message.startswith(f"{where}"), message
    assert shown in message, message


@pytest.mark.parametrize("port", [99999, 65536, -1])
async def test_open_listener_refuses_a_port_tcp_cannot_carry(port: int) -> None:
    with trio.fail_after(5), pytest.raises(LocalProtocolError, match=str(port)):
        async with open_listener(Identity.generate(), "127.0.0.1", port):
            pytest.fail("the listener opened")


def test_the_record_limit_holds_the_longest_goodbye_whatever_the_body_limit() -> None:
    # A goodbye is [5, reason]: fixarray, type, a str16 header and the longest str decoded.
    longest_goodbye = 1 + 1 + 3 + MAX_STR_LEN
    assert Config(max_body_size=MIN_BODY_SIZE).max_record_size >= longest_goodbye
    assert Config().max_record_size == Config().max_body_size + 512
