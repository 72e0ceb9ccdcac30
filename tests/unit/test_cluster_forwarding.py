"""The pure parts of forwarding between trackers (tracker.cluster, tracker.bt): which address a member names
for the client it forwards, and which swarm a BitTorrent request is about."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

from fastbencode import bdecode, bencode

from shoal.core.bt_tracker import SwarmStats
from shoal.tracker.bt import _scrape_counts, announce_key
from shoal.tracker.cluster import reachable_address


def test_a_client_elsewhere_is_named_as_it_connected() -> None:
    assert reachable_address("10.1.2.3", "http://10.0.0.5:6969") == "10.1.2.3"
    assert reachable_address("fd00::7", "http://[fd00::1]:6969") == "fd00::7"


def test_a_client_on_the_members_own_host_is_named_by_its_advertised_address() -> None:
    assert reachable_address("127.0.0.1", "http://10.0.0.5:6969") == "10.0.0.5"
    assert reachable_address("::1", "http://[fd00::1]:6969") == "fd00::1"


def test_loopback_stays_loopback_when_the_members_share_one_host_or_advertise_a_name() -> None:
    assert reachable_address("127.0.0.1", "http://127.0.0.1:6969") == "127.0.0.1"
    assert reachable_address("127.0.0.1", "http://tracker-a.example:6969") == "127.0.0.1"
    assert reachable_address("not an address", "http://10.0.0.5:6969") == "not an address"


def test_an_announce_is_keyed_by_its_info_hash() -> None:
    info_hash = bytes(range(20))
    query = f"info_hash={quote_from_bytes(info_hash, safe='')}&port=1&left=0"
    assert announce_key(query) == info_hash.hex()
    assert announce_key("port=1&left=0") is None  # refused by the handler, wherever it lands
    assert announce_key("info_hash=short") is None
    twice = f"info_hash={quote_from_bytes(info_hash, safe='')}&info_hash={quote_from_bytes(info_hash, safe='')}"
    assert announce_key(twice) is None


def test_a_members_scrape_reply_gives_only_the_asked_well_formed_counts() -> None:
    a, b, c = b"a" * 20, b"b" * 20, b"c" * 20
    counts = {b"complete": 2, b"incomplete": 1, b"downloaded": 5}
    reply = {b"files": {a: counts, b: {b"complete": -1, b"incomplete": 0, b"downloaded": 0}, c: counts}}
    assert _scrape_counts(bdecode(bencode(reply)), {a, b}) == {a: SwarmStats(2, 1, 5)}
    assert _scrape_counts({b"failure reason": b"no"}, {a}) == {}
    assert _scrape_counts(b"junk", {a}) == {}
