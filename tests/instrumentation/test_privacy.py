"""Keyed pseudonyms for user IDs and client address truncation (USAGELOG_USER_ID_HMAC_KEY,
USAGELOG_CLIENT_IP)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from usagelog.ingest.decode import decode_payload
from usagelog.instrumentation.builder import EventBuilder
from usagelog.instrumentation.config import load_settings
from usagelog.instrumentation.exchange import Exchange
from usagelog.instrumentation.identity import Identity
from usagelog.instrumentation.privacy import Pseudonymiser, client_address
from usagelog.instrumentation.userid import UserResolver


@pytest.mark.parametrize(
    ("address", "truncated"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.3", "10.1.2.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("2001:db8:abcd:ffff::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),  # IPv4-mapped: treated as IPv4
        ("fe80::1%eth0", "fe80::"),  # a zone index is dropped
        ("[2001:db8::1]", "2001:db8::"),
        ("not-an-address", ""),  # cannot be made coarser: dropped
        ("", ""),
    ],
)
def test_truncate_keeps_the_ipv4_slash_24_and_the_ipv6_slash_48(address: str, truncated: str) -> None:
    assert client_address(address, "truncate") == truncated
    assert client_address(address, "full") == address
    assert client_address(address, "none") == ""


def test_pseudonyms_are_keyed_stable_and_distinct() -> None:
    one, other_instance, other_key = Pseudonymiser("k1"), Pseudonymiser("k1"), Pseudonymiser("k2")
    assert (
        one("alice") == other_instance("alice") == hmac.new(b"k1", b"alice", hashlib.sha256).hexdigest()[:32]
    )
    assert one("alice") != one("bob")
    assert one("alice") != other_key("alice")
    assert one("") == ""  # anonymous stays anonymous


def _event(**settings: str) -> dict[str, object]:
    config = load_settings(user_id_from="header:X-User", **settings)
    identity = Identity({"service.name": "s", "service.instance.id": "i", "process.pid": 1})
    builder = EventBuilder(config, UserResolver(config.user_id_from), identity, "t")
    x = Exchange({}, 1)
    x.method, x.path, x.status_code, x.client_address = "GET", "/", 200, "192.0.2.55"
    x.user_headers = {"HTTP_X_USER": "alice"}
    [row] = decode_payload(builder.encode_batch([x])[0]).rows
    return row


def test_events_from_two_instances_with_one_key_carry_the_same_pseudonym() -> None:
    first, second = _event(user_id_hmac_key="shared"), _event(user_id_hmac_key="shared")
    assert first["user_id"] == second["user_id"] == Pseudonymiser("shared")("alice")
    assert _event()["user_id"] == "alice"


def test_client_ip_setting_reaches_the_event() -> None:
    assert _event()["client_address"] == "192.0.2.55"
    assert _event(client_ip="truncate")["client_address"] == "192.0.2.0"
    assert _event(client_ip="none")["client_address"] == ""
