"""The tracker's JSON API values (core.messages): everything that comes in is validated."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import ProtocolError
from shoal.core.ids import PeerIdentity
from shoal.core.manifest import MAX_LENGTH, Manifest, OriginIdentity
from shoal.core.messages import (
    MAX_LEASES_PER_ANNOUNCE,
    AnnounceRequest,
    AnnounceResponse,
    HashesResponse,
    ManifestMessage,
    PeerAddress,
    piece_hash_bytes,
)
from shoal.core.structs import decode

from .factories import digest

HASH = digest(0)
PEER = PeerIdentity.from_secret("ab" * 16, "peer")
OTHER = PeerIdentity.from_secret("6" * 32, "peer")
T = TypeVar("T")


def parse(data: Any, kind: type[T] = AnnounceRequest) -> T:  # type: ignore[assignment]
    """``data`` sent as JSON and decoded as the tracker decodes a body."""
    return decode(msgspec.json.encode(data), kind)


def body(**changes: Any) -> dict[str, Any]:
    """A valid announce body with ``changes`` applied; a value of ``...`` removes the field."""
    data: dict[str, Any] = {
        "peer_id": PEER.peer_id,
        "secret": PEER.secret,
        "url": "http://origin.example/f.iso",
        "port": 7000,
        "event": "started",
        "host": "10.0.0.5",
        "site": "dc1",
        "rack": "r12",
        "generation": 2,
        "origin": {"length": 1000, "etag": '"x"', "last_modified": "Mon"},
        "bitfield": "gA==",
        "done": {"3": HASH},
        "released": [4, 5],
        "bad_peers": ["peer-9"],
        "want_leases": 8,
        "no_range": False,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def test_a_full_body_parses() -> None:
    r = parse(body())
    assert r.peer_id == PEER.peer_id and r.secret == PEER.secret and r.port == 7000 and r.event == "started"
    assert r.origin == OriginIdentity(1000, '"x"', "Mon")
    assert r.done == {3: HASH}
    assert r.released == (4, 5) and r.bad_peers == ("peer-9",)
    assert (r.want_leases, r.no_range, r.generation) == (8, False, 2)


def test_minimal_body_gets_defaults() -> None:
    r = parse({"peer_id": PEER.peer_id, "secret": PEER.secret, "url": "https://o/x", "port": 1})
    assert r == AnnounceRequest(peer_id=PEER.peer_id, secret=PEER.secret, url="https://o/x", port=1)


MALFORMED: list[tuple[str, Any, str]] = [
    ("peer_id", ..., "peer_id"),
    ("peer_id", "", "peer_id"),
    ("peer_id", "has space", "peer_id"),
    ("peer_id", "x" * 65, "peer_id"),
    ("peer_id", "abc\n", "peer_id"),
    ("peer_id", 7, "peer_id"),
    # An id that is well-formed but not the one the secret names: someone else's.
    ("peer_id", OTHER.peer_id, "secret"),
    ("peer_id", "peer-1", "secret"),
    ("secret", ..., "secret"),
    ("secret", "", "secret"),
    ("secret", OTHER.secret, "secret"),
    ("secret", PEER.secret.upper(), "secret"),
    ("secret", 5, "secret"),
    ("piece_hashes", "not base64!", "piece_hashes"),
    ("piece_hashes", "AAAA", "piece_hashes"),
    ("piece_hashes", ["AAAA"], "piece_hashes"),
    ("url", ..., "url"),
    ("url", "ftp://o/x", "url"),
    ("url", "http://o/" + "x" * 8192, "url"),
    ("url", ["http://o/x"], "url"),
    ("port", ..., "port"),
    ("port", 0, "port"),
    ("port", 65536, "port"),
    ("port", "7000", "port"),
    ("port", True, "port"),
    ("port", 7000.0, "port"),
    ("event", "paused", "event"),
    ("event", 1, "event"),
    ("host", "a b", "host"),
    ("host", "h" * 256, "host"),
    ("site", "d c", "site"),
    ("site", "s" * 65, "site"),
    ("site", "dc1\n", "site"),
    ("rack", "r/1", "rack"),
    ("rack", 3, "rack"),
    ("generation", -1, "generation"),
    ("generation", "2", "generation"),
    ("origin", "1000", "origin"),
    ("origin", {}, "origin"),
    ("origin", {"length": -1}, "origin"),
    ("origin", {"length": 1 << 51}, "origin"),
    ("origin", {"length": "1000"}, "origin"),
    ("origin", {"length": 10, "etag": 5}, "origin"),
    ("origin", {"length": 10, "etag": "e" * 513}, "origin"),
    ("origin", {"length": 10, "last_modified": "m" * 129}, "origin"),
    ("bitfield", 5, "bitfield"),
    ("done", [HASH], "done"),
    ("done", {"x": HASH}, "done"),
    ("done", {"-1": HASH}, "done"),
    ("done", {"\u00b2": HASH}, "done"),
    ("done", {"1": HASH.upper()}, "done"),
    ("done", {"1": HASH[:-2]}, "done"),
    ("done", {"1": HASH + "\n"}, "done"),
    ("done", {"1": 5}, "done"),
    ("released", 4, "released"),
    ("released", [-1], "released"),
    ("released", [True], "released"),
    ("released", ["4"], "released"),
    ("bad_peers", "peer-9", "bad_peers"),
    ("bad_peers", ["bad peer"], "bad_peers"),
    ("bad_peers", [9], "bad_peers"),
    ("want_leases", -1, "want_leases"),
    ("want_leases", MAX_LEASES_PER_ANNOUNCE + 1, "want_leases"),
    ("no_range", "yes", "no_range"),
]


@pytest.mark.parametrize(("name", "value", "field"), MALFORMED, ids=[f"{n}={v!r}"[:40] for n, v, _ in MALFORMED])
def test_each_malformed_field_is_named(name: str, value: Any, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(body(**{name: value}))
    assert info.value.field == field


@pytest.mark.parametrize("data", [None, [], "peer", 5])
def test_body_must_be_an_object(data: Any) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


def test_null_means_absent_where_a_client_sends_it() -> None:
    r = parse(body(origin=None, bitfield=None))
    assert (r.origin, r.bitfield) == (None, None)
    assert parse(body(event=..., done=...)).event == "update"


def test_a_nul_is_refused_naming_its_field() -> None:
    """No database stores a NUL: the field holding one is named, wherever it sits."""
    with pytest.raises(ProtocolError) as info:
        parse(body(origin={"length": 10, "etag": "a\x00"}))
    assert info.value.field == "origin"


def test_a_lone_surrogate_is_refused() -> None:
    raw = msgspec.json.encode(body()).replace(b'"dc1"', b'"\\ud800"')
    with pytest.raises(ProtocolError, match="surrogate"):
        decode(raw, AnnounceRequest)


def test_defaults_are_left_out_of_an_announce() -> None:
    request = AnnounceRequest(peer_id=PEER.peer_id, secret=PEER.secret, url="http://o/x", port=1)
    assert msgspec.json.decode(msgspec.json.encode(request)) == {
        "peer_id": PEER.peer_id,
        "url": "http://o/x",
        "port": 1,
        "secret": PEER.secret,
    }


def test_piece_hashes_travel_as_base64_of_their_bytes() -> None:
    hashes = (HASH, digest(1))
    request = AnnounceRequest(
        peer_id=PEER.peer_id, secret=PEER.secret, url="http://o/x", port=1, piece_hash_bytes=piece_hash_bytes(hashes)
    )
    sent = msgspec.json.decode(msgspec.json.encode(request))
    assert sent["piece_hashes"] == base64.b64encode(bytes.fromhex(HASH + digest(1))).decode()
    assert parse(sent).piece_hashes == hashes


peer_ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")
labels = st.from_regex(r"\A[A-Za-z0-9_.:-]{0,64}\Z")
hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
# Validators are printable text (letters, digits, punctuation, symbols, spaces): no control characters.
validators = st.text(st.characters(categories=["L", "N", "P", "S"]) | st.just(" "), max_size=20)
identities = st.builds(OriginIdentity, st.integers(0, MAX_LENGTH), validators, validators)
secrets = st.binary(min_size=16, max_size=16).map(bytes.hex)
peer_identities = st.builds(PeerIdentity.from_secret, secrets, st.sampled_from(["", "daemon", "seeder"]))
requests = st.builds(
    lambda identity, **fields: AnnounceRequest(peer_id=identity.peer_id, secret=identity.secret, **fields),
    peer_identities,
    url=st.sampled_from(["http://o/x", "https://mirror.example/a?b=c"]),
    port=st.integers(1, 65535),
    event=st.sampled_from(["started", "update", "completed", "stopped"]),
    host=st.sampled_from(["", "10.0.0.1", "host.example", "::1"]),
    site=labels,
    rack=labels,
    generation=st.integers(0, 1000),
    origin=st.none() | identities,
    bitfield=st.none() | st.sampled_from(["", "gA==", "////"]),
    done=st.dictionaries(st.integers(0, 10_000), hashes, max_size=5),
    released=st.lists(st.integers(0, 10_000), max_size=5).map(tuple),
    bad_peers=st.lists(peer_ids, max_size=3).map(tuple),
    want_leases=st.integers(0, MAX_LEASES_PER_ANNOUNCE),
    no_range=st.booleans(),
    piece_hash_bytes=st.lists(hashes, max_size=5).map(lambda h: piece_hash_bytes(tuple(h))),
)


@given(requests)
def test_request_roundtrip_through_json_text(request: AnnounceRequest) -> None:
    assert parse(request) == request


manifests = st.builds(Manifest, identities, st.sampled_from([1 << k for k in range(18, 25)]))
responses = st.builds(
    AnnounceResponse,
    generation=st.integers(0, 1000),
    manifest_message=st.none() | manifests.map(ManifestMessage.of),
    restart=st.booleans(),
    range_ok=st.booleans(),
    peers=st.lists(
        st.builds(PeerAddress, peer_ids, st.sampled_from(["10.0.0.1", "h"]), st.integers(1, 65535), labels, labels),
        max_size=4,
    ).map(tuple),
    leases=st.lists(st.integers(0, 10_000), max_size=8).map(tuple),
    hash_seq=st.integers(0, 1 << 40),
    interval=st.floats(0.1, 3600.0),
)


@given(responses)
def test_response_roundtrip(response: AnnounceResponse) -> None:
    assert parse(response, AnnounceResponse) == response


@given(st.integers(0, 100), st.integers(0, 1 << 40), st.dictionaries(st.integers(0, 10_000), hashes, max_size=8))
def test_hashes_roundtrip(generation: int, seq: int, hashes_: dict[int, str]) -> None:
    reply = HashesResponse(generation, seq, hashes_)
    assert parse(reply, HashesResponse) == reply


@pytest.mark.parametrize("raw", [{"x": HASH}, {"1": "zz"}, {"\u00b2": HASH}, {"1": HASH + "\n"}, {"1": None}])
def test_hashes_reply_rejects_malformed_entries(raw: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse({"generation": 1, "seq": 1, "hashes": raw}, HashesResponse)
    assert info.value.field == "hashes"


@pytest.mark.parametrize(
    "raw",
    [
        {"length": 10},
        {"length": 10, "piece_length": 0},
        {"length": 10, "piece_length": 3 << 18},
        {"length": 10, "piece_length": "262144"},
        {"length": -1, "piece_length": 1 << 18},
        {"length": 10, "piece_length": 1 << 18, "etag": "a\nb"},
    ],
)
def test_a_malformed_manifest_is_refused(raw: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        parse({"generation": 1, "manifest": raw}, AnnounceResponse)
    assert info.value.field == "manifest"


def test_a_manifest_travels_flat() -> None:
    manifest = Manifest(OriginIdentity(10, '"e"', "Mon"), 1 << 18)
    reply = AnnounceResponse(1, ManifestMessage.of(manifest))
    sent = msgspec.json.decode(msgspec.json.encode(reply))
    assert sent["manifest"] == {"length": 10, "piece_length": 1 << 18, "etag": '"e"', "last_modified": "Mon"}
    assert parse(sent, AnnounceResponse).manifest == manifest


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"peers": [5]},
        {"peers": "x"},
        {"leases": [-1]},
        {"generation": "1"},
        {"restart": 1},
        {"interval": "5"},
        {"manifest": {"length": 1}},
    ],
)
def test_response_from_json_rejects(data: Any) -> None:
    with pytest.raises(ProtocolError):
        parse(data, AnnounceResponse)
