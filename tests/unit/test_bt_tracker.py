"""The BitTorrent tracker's core (core.bt_tracker): query parsing, swarms, replies, with explicit times."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import quote_from_bytes

import pytest
from fastbencode import bdecode
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.bt_tracker import (
    AnnounceReply,
    BtAnnounce,
    BtPolicy,
    HandedPeer,
    Swarms,
    SwarmStats,
    encode_failure,
    encode_scrape,
    normalize_address,
    parse_scrape,
)
from shoal.core.errors import ProtocolError

NOW = 10_000.0
POLICY = BtPolicy(
    interval=60,
    min_interval=15,
    peer_ttl=180.0,
    default_numwant=50,
    max_numwant=200,
    scrape_limit=1000,
    accept_ip=True,
)
HASH = bytes(range(20))
OTHER_HASH = b"\xff" * 20
LAN = "192.0.2.10"
TRACKER = "192.0.2.1"


def peer_id(n: int) -> bytes:
    return f"-SH0001-{n:012d}".encode()


def query(**fields: bytes | str | int) -> str:
    """A raw query string as a client sends it: every byte of binary values percent-encoded."""
    parts = []
    for name, value in fields.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{name}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts)


def request(n: int = 1, *, port: int | None = None, left: int = 100, **changes: object) -> BtAnnounce:
    base = BtAnnounce(info_hash=HASH, peer_id=peer_id(n), port=6881 + n if port is None else port, left=left)
    return replace(base, **changes)  # type: ignore[arg-type]


def announce(
    swarms: Swarms,
    req: BtAnnounce,
    *,
    source: str = LAN,
    tracker: str | None = TRACKER,
    now: float = NOW,
    seed: int = 0,
) -> AnnounceReply:
    return swarms.announce(req, source=source, tracker_address=tracker, now=now, rng=random.Random(seed))


def addresses(reply: AnnounceReply) -> set[tuple[str, int]]:
    return {(p.ip, p.port) for p in reply.peers}


def decode(body: bytes) -> Mapping[bytes, object]:
    decoded = bdecode(body)
    assert isinstance(decoded, dict)
    return decoded


# -- parsing -------------------------------------------------------------------------------------------


def test_announce_query_with_binary_ids_parses_every_field() -> None:
    # Bytes that a UTF-8 text decoding would mangle, and 0x2B ("+"), which must not become a space.
    info_hash = b"\xff\x00\x80+%&=?" + bytes(range(12))
    raw = query(
        info_hash=info_hash,
        peer_id=peer_id(7),
        port=51413,
        uploaded=5,
        downloaded=6,
        left=7,
        event="started",
        ip="::ffff:10.1.2.3",
        numwant=30,
        compact=0,
        no_peer_id=1,
        key="ab12cd34",
        supportcrypto=1,
    )
    assert BtAnnounce.from_query(raw) == BtAnnounce(
        info_hash=info_hash,
        peer_id=peer_id(7),
        port=51413,
        left=7,
        uploaded=5,
        downloaded=6,
        event="started",
        ip="10.1.2.3",
        numwant=30,
        compact=False,
        no_peer_id=True,
        key=b"ab12cd34",
    )


def test_announce_defaults_and_unescaped_characters() -> None:
    # libtorrent leaves unreserved characters unescaped; a literal "+" is a plus, not a space.
    raw = "info_hash=abcdefghij%2B%2b+-._~012&peer_id=-lt2010-abcdefghijkl&port=6881&left=0"
    parsed = BtAnnounce.from_query(raw)
    assert parsed.info_hash == b"abcdefghij+++-._~012"
    assert (parsed.event, parsed.numwant, parsed.compact, parsed.no_peer_id) == ("", None, True, False)
    assert (parsed.uploaded, parsed.downloaded, parsed.ip, parsed.key) == (0, 0, None, None)


GOOD = {"info_hash": HASH, "peer_id": peer_id(1), "port": 6881, "left": 0}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"info_hash": None}, "info_hash", "info_hash is missing"),
        ({"info_hash": HASH[:19]}, "info_hash", "info_hash must be 20 bytes, got 19"),
        ({"info_hash": HASH + b"x"}, "info_hash", "must be 20 bytes, got 21"),
        ({"peer_id": None}, "peer_id", "peer_id is missing"),
        ({"peer_id": b"short"}, "peer_id", "peer_id must be 20 bytes"),
        ({"port": None}, "port", "port is missing"),
        ({"port": 0}, "port", "port must be 1-65535"),
        ({"port": 65536}, "port", "port must be 1-65535"),
        ({"port": "http"}, "port", "port must be a non-negative integer"),
        ({"left": None}, "left", "left is missing"),
        ({"left": -1}, "left", "left must be a non-negative integer"),
        ({"left": "1e3"}, "left", "left must be a non-negative integer"),
        ({"left": " 1"}, "left", "left must be a non-negative integer"),
        ({"left": "\u0661"}, "left", "left must be a non-negative integer"),
        ({"left": 2**63}, "left", "left is too large"),
        ({"uploaded": "1" * 40}, "uploaded", "uploaded is too large"),
        ({"uploaded": "x"}, "uploaded", "uploaded must be a non-negative integer"),
        ({"downloaded": -5}, "downloaded", "downloaded must be"),
        ({"numwant": "lots"}, "numwant", "numwant must be a non-negative integer"),
        ({"event": "finished"}, "event", "event must be one of"),
        ({"ip": "tracker.example"}, "ip", "ip must be an IP address"),
        ({"ip": "0.0.0.0"}, "ip", "ip must be a unicast address"),
        ({"ip": "224.0.0.1"}, "ip", "ip must be a unicast address"),
        ({"compact": "yes"}, "compact", "compact must be 0 or 1"),
        ({"no_peer_id": 2}, "no_peer_id", "no_peer_id must be 0 or 1"),
        ({"key": "k" * 65}, "key", "key is longer than 64 bytes"),
    ],
)
def test_bad_announce_fields_are_protocol_errors_naming_the_field(
    changes: dict[str, object], field: str, message: str
) -> None:
    fields = {**GOOD, **changes}
    raw = query(**{k: v for k, v in fields.items() if v is not None})  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=message) as caught:
        BtAnnounce.from_query(raw)
    assert caught.value.field == field


def test_empty_and_paused_events_are_regular_announces() -> None:
    assert BtAnnounce.from_query(query(**GOOD, event="")).event == ""
    assert BtAnnounce.from_query(query(**GOOD, event="paused")).event == "paused"


def test_repeated_parameter_takes_the_first() -> None:
    raw = query(**GOOD) + "&port=7000"
    assert BtAnnounce.from_query(raw).port == 6881


def test_normalize_address() -> None:
    assert normalize_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_address("FD00::0001") == "fd00::1"
    with pytest.raises(ProtocolError, match="IP address"):
        normalize_address("")


def test_scrape_query_keeps_order_and_drops_repeats() -> None:
    raw = query(info_hash=HASH) + "&" + query(info_hash=OTHER_HASH) + "&" + query(info_hash=HASH)
    assert parse_scrape(raw) == (HASH, OTHER_HASH)
    assert parse_scrape("") == ()
    with pytest.raises(ProtocolError, match="20 bytes, got 19") as caught:
        parse_scrape(query(info_hash=HASH[:19]))
    assert caught.value.field == "info_hash"
    with pytest.raises(ProtocolError, match="at most 256"):
        parse_scrape("&".join(query(info_hash=HASH) for _ in range(257)))


@given(info_hash=st.binary(min_size=20, max_size=20), peer=st.binary(min_size=20, max_size=20), lazy=st.booleans())
def test_binary_ids_survive_any_percent_encoding(info_hash: bytes, peer: bytes, lazy: bool) -> None:
    # Clients escape every byte (aria2) or all but the unreserved characters (libtorrent).
    safe = "-._~" if lazy else ""
    raw = f"info_hash={quote_from_bytes(info_hash, safe=safe)}&peer_id={quote_from_bytes(peer, safe=safe)}"
    parsed = BtAnnounce.from_query(raw + "&port=1&left=0")
    assert (parsed.info_hash, parsed.peer_id) == (info_hash, peer)


# -- swarms: who is in, who is handed out --------------------------------------------------------------


def test_first_announce_joins_and_gets_no_peers() -> None:
    swarms = Swarms(POLICY)
    reply = announce(swarms, request(1, event="started"))
    assert (reply.complete, reply.incomplete, reply.peers) == (0, 1, ())
    assert len(swarms) == 1


def test_peers_on_one_host_with_different_ports_are_distinct() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, port=7001))
    reply = announce(swarms, request(2, port=7002))
    assert addresses(reply) == {(LAN, 7001)}
    assert reply.incomplete == 2
    assert addresses(announce(swarms, request(1, port=7001))) == {(LAN, 7002)}


def test_a_restarted_client_replaces_its_old_entry() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, port=7001))
    announce(swarms, request(9, port=7001))  # same address, new peer_id
    reply = announce(swarms, request(2, port=7002))
    assert [(p.peer_id, p.port) for p in reply.peers] == [(peer_id(9), 7001)]
    assert reply.incomplete == 2


def test_the_asker_is_left_out_by_address_and_by_peer_id() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, port=7001), source="192.0.2.20")
    announce(swarms, request(2, port=7002))
    # Peer 1 moved to another address: its stale entry carries its peer_id and is not handed back to it.
    reply = announce(swarms, request(1, port=7001))
    assert addresses(reply) == {(LAN, 7002)}


def test_stopped_removes_the_peer() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1))
    announce(swarms, request(2))
    stopped = announce(swarms, request(1, event="stopped"))
    assert (stopped.incomplete, stopped.peers) == (1, ())
    assert addresses(announce(swarms, request(3))) == {(LAN, 6883)}


def test_stopped_for_an_unknown_swarm_creates_nothing() -> None:
    swarms = Swarms(POLICY)
    reply = announce(swarms, request(1, event="stopped"))
    assert (reply.complete, reply.incomplete) == (0, 0)
    assert len(swarms) == 0


def test_completed_counts_once_per_peer() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, event="started"))
    announce(swarms, request(1, left=0, event="completed"))
    announce(swarms, request(1, left=0, event="completed"))  # a repeat from a known seed
    announce(swarms, request(2, left=0, event="completed"))  # a peer first heard completing counts
    assert swarms.scrape([HASH], NOW) == {HASH: SwarmStats(complete=2, incomplete=0, downloaded=2)}


def test_a_seed_gets_leechers_only() -> None:
    swarms = Swarms(POLICY)
    for n in range(1, 4):
        announce(swarms, request(n, left=0))
    for n in range(4, 6):
        announce(swarms, request(n, left=10))
    seed = announce(swarms, request(1, left=0))
    assert addresses(seed) == {(LAN, 6885), (LAN, 6886)}
    leecher = announce(swarms, request(4, left=10))
    assert len(leecher.peers) == 4
    assert (seed.complete, seed.incomplete) == (3, 2)


def test_numwant_default_clamp_and_zero() -> None:
    swarms = Swarms(replace(POLICY, default_numwant=3, max_numwant=5))
    for n in range(1, 11):
        announce(swarms, request(n))
    assert len(announce(swarms, request(1)).peers) == 3
    assert len(announce(swarms, request(1, numwant=100)).peers) == 5
    assert announce(swarms, request(1, numwant=0)).peers == ()


def test_selection_is_random_over_the_swarm() -> None:
    swarms = Swarms(POLICY)
    for n in range(1, 21):
        announce(swarms, request(n))
    seen = set()
    for seed in range(20):
        seen |= addresses(announce(swarms, request(1, numwant=3), seed=seed))
    assert len(seen) > 10


def test_expired_peers_are_skipped_then_dropped() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1), now=NOW)
    announce(swarms, request(2), now=NOW + 100)
    later = NOW + POLICY.peer_ttl
    reply = announce(swarms, request(3), now=later)
    assert addresses(reply) == {(LAN, 6883)}
    assert reply.incomplete == 2
    assert swarms.scrape([HASH], later) == {HASH: SwarmStats(0, 2, 0)}


def test_sweep_drops_expired_peers_and_empty_swarms() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1), now=NOW)
    announce(swarms, request(2, info_hash=OTHER_HASH), now=NOW + 100)
    assert swarms.sweep(NOW + POLICY.peer_ttl - 1) == 0
    assert swarms.sweep(NOW + POLICY.peer_ttl) == 1
    assert len(swarms) == 1
    assert swarms.scrape([], NOW + POLICY.peer_ttl) == {OTHER_HASH: SwarmStats(0, 1, 0)}


def test_ip_parameter_is_honoured_unless_the_policy_refuses_it() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, ip="198.51.100.7"))
    assert addresses(announce(swarms, request(2))) == {("198.51.100.7", 6882)}

    strict = Swarms(replace(POLICY, accept_ip=False))
    announce(strict, request(1, ip="198.51.100.7"))
    assert addresses(announce(strict, request(2))) == {(LAN, 6882)}


# -- the loopback rule ---------------------------------------------------------------------------------


def test_loopback_peer_is_reported_at_the_tracker_address_to_a_remote_asker() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, left=0), source="127.0.0.1")
    reply = announce(swarms, request(2), source=LAN, tracker=TRACKER)
    assert addresses(reply) == {(TRACKER, 6882)}
    assert bdecode(reply.encode())[b"peers"] == ipaddress.ip_address(TRACKER).packed + (6882).to_bytes(2, "big")


def test_loopback_peer_is_reported_as_is_to_a_local_asker() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, left=0), source="127.0.0.1")
    assert addresses(announce(swarms, request(2), source="127.0.0.1", tracker="127.0.0.1")) == {("127.0.0.1", 6882)}


def test_loopback_peer_is_left_out_without_a_reachable_tracker_address() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, left=0), source="::1")
    assert announce(swarms, request(2), source=LAN, tracker=None).peers == ()
    assert announce(swarms, request(2), source=LAN, tracker="127.0.0.1").peers == ()
    assert announce(swarms, request(2), source=LAN, tracker=TRACKER).complete == 1


def test_loopback_rule_never_hands_the_asker_itself() -> None:
    # One client announced over loopback and over the LAN address of the tracker's host, same port.
    swarms = Swarms(POLICY)
    announce(swarms, request(1, port=7000), source="127.0.0.1")
    reply = announce(swarms, request(1, port=7000), source=TRACKER, tracker=TRACKER)
    assert reply.peers == ()


def test_loopback_rule_never_hands_one_address_twice() -> None:
    # A client on the tracker's host reached it over 127.0.0.1, ::1 and the host's LAN address, one port.
    swarms = Swarms(POLICY)
    announce(swarms, request(1, port=7000), source="127.0.0.1")
    announce(swarms, request(1, port=7000), source="::1")
    assert addresses(announce(swarms, request(2), source=LAN, tracker=TRACKER)) == {(TRACKER, 7000)}
    announce(swarms, request(1, port=7000), source=TRACKER)
    assert addresses(announce(swarms, request(2), source=LAN, tracker=TRACKER)) == {(TRACKER, 7000)}


# -- replies -------------------------------------------------------------------------------------------


def test_interval_has_jitter_within_ten_percent() -> None:
    swarms = Swarms(replace(POLICY, interval=1000))
    intervals = {announce(swarms, request(1), seed=seed).interval for seed in range(50)}
    assert len(intervals) > 10
    assert all(900 <= i <= 1100 for i in intervals)
    short = Swarms(replace(POLICY, interval=10, min_interval=10))
    assert all(announce(short, request(1), seed=seed).interval >= 10 for seed in range(50))


def test_compact_reply_puts_ipv6_peers_in_peers6() -> None:
    reply = AnnounceReply(
        60,
        15,
        1,
        2,
        (
            HandedPeer(peer_id(1), "192.0.2.5", 6881, bytes([192, 0, 2, 5, 0x1A, 0xE1])),
            HandedPeer(peer_id(2), "fd00::5", 6882, ipaddress.ip_address("fd00::5").packed + b"\x1a\xe2"),
        ),
    )
    decoded = decode(reply.encode(compact=True))
    assert decoded == {
        b"interval": 60,
        b"min interval": 15,
        b"complete": 1,
        b"incomplete": 2,
        b"peers": bytes([192, 0, 2, 5, 0x1A, 0xE1]),
        b"peers6": ipaddress.ip_address("fd00::5").packed + b"\x1a\xe2",
    }
    assert b"peers6" not in decode(replace(reply, peers=reply.peers[:1]).encode())


def test_dict_reply_with_and_without_peer_ids() -> None:
    reply = AnnounceReply(60, 15, 0, 1, (HandedPeer(peer_id(1), "fd00::5", 6881, b""),))
    assert decode(reply.encode(compact=False))[b"peers"] == [{b"ip": b"fd00::5", b"port": 6881, b"peer id": peer_id(1)}]
    assert decode(reply.encode(compact=False, no_peer_id=True))[b"peers"] == [{b"ip": b"fd00::5", b"port": 6881}]


def test_failure_and_scrape_encodings() -> None:
    assert decode(encode_failure("port must be 1-65535")) == {b"failure reason": b"port must be 1-65535"}
    assert decode(encode_scrape({HASH: SwarmStats(1, 2, 3)})) == {
        b"files": {HASH: {b"complete": 1, b"incomplete": 2, b"downloaded": 3}}
    }
    assert decode(encode_scrape({})) == {b"files": {}}


# -- scrape --------------------------------------------------------------------------------------------


def test_scrape_named_swarms_and_unknown_ones() -> None:
    swarms = Swarms(POLICY)
    announce(swarms, request(1, left=0))
    announce(swarms, request(2, info_hash=OTHER_HASH))
    unknown = b"\x01" * 20
    assert swarms.scrape([OTHER_HASH, unknown, HASH], NOW) == {
        OTHER_HASH: SwarmStats(0, 1, 0),
        HASH: SwarmStats(1, 0, 0),
    }


def test_full_scrape_is_bounded_to_the_largest_swarms() -> None:
    swarms = Swarms(replace(POLICY, scrape_limit=2))
    for size, info_hash in enumerate((b"a" * 20, b"b" * 20, b"c" * 20), start=1):
        for n in range(size):
            announce(swarms, request(n, info_hash=info_hash))
    assert set(swarms.scrape([], NOW)) == {b"b" * 20, b"c" * 20}


# -- properties ----------------------------------------------------------------------------------------

ADDRESSES = ["127.0.0.1", "::1", "192.0.2.10", "192.0.2.11", TRACKER, "fd00::10"]


@st.composite
def swarm_histories(draw: st.DrawFn) -> tuple[list[tuple[BtAnnounce, str, float]], BtAnnounce, str, str | None]:
    announces = []
    for _ in range(draw(st.integers(0, 30))):
        req = BtAnnounce(
            info_hash=HASH,
            peer_id=peer_id(draw(st.integers(0, 8))),
            port=draw(st.integers(1, 4)),
            left=draw(st.sampled_from([0, 1])),
            event=draw(st.sampled_from(["", "started", "completed", "stopped"])),
        )
        announces.append((req, draw(st.sampled_from(ADDRESSES)), NOW - draw(st.floats(0, 2 * POLICY.peer_ttl))))
    announces.sort(key=lambda item: item[2])
    asker = BtAnnounce(
        info_hash=HASH,
        peer_id=peer_id(draw(st.integers(0, 8))),
        port=draw(st.integers(1, 4)),
        left=draw(st.sampled_from([0, 1])),
        numwant=draw(st.none() | st.integers(0, 300)),
    )
    tracker = draw(st.sampled_from([None, "127.0.0.1", TRACKER, "fd00::1"]))
    return announces, asker, draw(st.sampled_from(ADDRESSES)), tracker


@given(swarm_histories(), st.integers(0, 2**32))
def test_properties_of_a_reply(
    history: tuple[list[tuple[BtAnnounce, str, float]], BtAnnounce, str, str | None], seed: int
) -> None:
    announces, asker, source, tracker = history
    swarms = Swarms(replace(POLICY, default_numwant=3, max_numwant=5))
    for req, address, when in announces:
        announce(swarms, req, source=address, now=when)
    reply = announce(swarms, asker, source=source, tracker=tracker, seed=seed)

    # Never the asker itself, never twice the same address, never more than asked or allowed.
    assert (source, asker.port) not in addresses(reply)
    assert all(p.peer_id != asker.peer_id for p in reply.peers)
    assert len(addresses(reply)) == len(reply.peers)
    assert len(reply.peers) <= min(3 if asker.numwant is None else asker.numwant, 5)
    # Counts are of live peers, the asker included.
    after = swarms.scrape([HASH], NOW)[HASH]
    assert (reply.complete, reply.incomplete) == (after.complete, after.incomplete)
    # Loopback addresses only go to askers on the tracker's host.
    if not ipaddress.ip_address(source).is_loopback:
        assert not any(ipaddress.ip_address(p.ip).is_loopback for p in reply.peers)
    # Compact form: 6 bytes per IPv4 peer in peers, 18 per IPv6 peer in peers6 (BEP 23, BEP 7).
    decoded = decode(reply.encode(compact=True))
    v4 = sum(1 for p in reply.peers if ipaddress.ip_address(p.ip).version == 4)
    peers = decoded[b"peers"]
    assert isinstance(peers, bytes) and len(peers) == 6 * v4
    peers6 = decoded.get(b"peers6", b"")
    assert isinstance(peers6, bytes) and len(peers6) == 18 * (len(reply.peers) - v4)
    assert 54 <= reply.interval <= 66


@given(swarm_histories(), st.integers(0, 2**32))
def test_a_seed_is_never_handed_seeds(
    history: tuple[list[tuple[BtAnnounce, str, float]], BtAnnounce, str, str | None], seed: int
) -> None:
    announces, asker, _, _ = history
    swarms = Swarms(POLICY)
    # What is left to download at each address, by the last word of each (a plain model of the swarm).
    left: dict[tuple[str, int], int] = {}
    for req, address, when in announces:
        announce(swarms, req, source=address, now=when)
        if req.event == "stopped":
            left.pop((address, req.port), None)
        else:
            left[(address, req.port)] = req.left
    # Asked from the tracker's host, so addresses come back as stored (no loopback rewriting).
    reply = announce(swarms, replace(asker, left=0, numwant=200), source="127.0.0.1", tracker=None, seed=seed)
    assert all(left[address] > 0 for address in addresses(reply))
