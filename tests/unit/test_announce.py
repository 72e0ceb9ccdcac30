"""The tracker's decision for one announce (core.announce), with plain values and explicit times."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.announce import PeerRecord, claims_change
from shoal.core.audit import Audit, Vote
from shoal.core.errors import ProtocolError
from shoal.core.ids import content_task_id
from shoal.core.leases import FLAT_LEASE_HOLDERS, RACK_LEASE_HOLDERS, Lease
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceRequest, piece_hash_bytes
from shoal.core.structs import decode
from shoal.testing.hostile import identity

from .factories import (
    IDENTITY,
    MANIFEST,
    NOW,
    PIECES,
    POLICY,
    announce,
    bits,
    digest,
    peer,
    request,
    snapshot,
    task,
    view,
)
from .swarm import MemoryTracker

CHANGED = OriginIdentity(IDENTITY.length, etag='"v2"', last_modified=IDENTITY.last_modified)
DEAD = NOW - POLICY.peer_ttl - 1


def held_by(peer_id: str, pieces: range | list[int], expires: float = NOW + 10) -> list[Lease]:
    return [Lease(i, peer_id, expires) for i in pieces]


# -- creating a task and learning the manifest ---------------------------------------------------------


def test_first_announce_creates_the_task_and_its_manifest() -> None:
    out = announce(snapshot(None), request(generation=0, event="started", origin=IDENTITY, want_leases=4))
    assert out.task.generation == 1 and out.task.manifest == MANIFEST and out.task.range_ok
    assert not out.new_generation
    assert out.response is not None
    assert (out.response.generation, out.response.manifest, out.response.restart) == (1, MANIFEST, False)
    # A generation-0 peer only learns the generation; it gets no work until it names it.
    assert out.response.leases == () and out.put_leases == []
    assert out.peer is not None and out.peer.generation == 1 and out.peer.last_seen == NOW


def test_first_announce_without_origin_creates_a_task_without_manifest() -> None:
    out = announce(snapshot(None), request(generation=0))
    assert out.task.manifest is None and out.task.generation == 1
    assert out.response is not None and out.response.manifest is None


def test_manifest_is_set_by_the_first_current_origin_report() -> None:
    out = announce(snapshot(task(manifest=None)), request(origin=IDENTITY, want_leases=2))
    assert out.task.manifest == MANIFEST and not out.new_generation
    assert out.response is not None and out.response.leases == (0, 1)


def test_the_seen_address_stands_in_for_a_missing_host() -> None:
    out = announce(snapshot(task()), request(host=""))
    assert out.peer is not None and out.peer.view.host == "192.0.2.9"
    out = announce(snapshot(task()), request(host="10.1.1.1"))
    assert out.peer is not None and out.peer.view.host == "10.1.1.1"


# -- generations ---------------------------------------------------------------------------------------


def test_origin_change_the_tracker_confirmed_starts_a_new_one() -> None:
    snap = snapshot(task(range_ok=False, hash_seq=7), peers=[peer("p2", have=[0, 1])], leases=held_by("p2", [2]))
    req = request(origin=CHANGED, want_leases=4, done={3: digest(3)})
    assert claims_change(snap.task, req)
    out = announce(replace(snap, origin_seen=CHANGED), req)
    assert out.new_generation and not out.refused_origin
    assert out.task.generation == 2
    assert out.task.manifest == Manifest.for_identity(CHANGED)
    assert out.task.range_ok, "a new file may well answer Range requests"
    assert out.new_hashes == {} and out.put_leases == []
    assert out.response is not None
    assert out.response.restart and out.response.generation == 2 and out.response.hash_seq == 0
    assert out.response.leases == () and out.response.peers == ()


@pytest.mark.parametrize("seen", [None, IDENTITY, replace(CHANGED, etag='"v3"')], ids=["unconfirmed", "same", "other"])
def test_a_claimed_change_the_origin_does_not_bear_out_is_refused(seen: OriginIdentity | None) -> None:
    """None: the tracker could not tell; IDENTITY: the origin still describes the current file; another
    identity: the origin changed, but not into what the peer claims."""
    snap = replace(snapshot(task(hash_seq=3), leases=held_by("p1", [2])), origin_seen=seen)
    out = announce(snap, request(origin=CHANGED, want_leases=1, done={2: digest(2)}))
    assert out.refused_origin and not out.new_generation
    assert out.task.generation == 1 and out.task.manifest == MANIFEST
    assert out.new_hashes == {2: digest(2)}, "the rest of the announce counts as usual"
    assert out.response is not None and not out.response.restart and out.response.manifest == MANIFEST


def test_only_a_current_url_task_peer_claims_a_change() -> None:
    assert not claims_change(None, request(origin=CHANGED))
    assert not claims_change(task(manifest=None), request(origin=CHANGED))
    assert not claims_change(task(), request(origin=IDENTITY))
    assert not claims_change(task(), request(origin=None))
    assert not claims_change(task(), request(generation=0, origin=CHANGED))
    assert not claims_change(task(generation=2), request(generation=1, origin=CHANGED))
    assert claims_change(task(), request(origin=CHANGED))


def test_same_origin_report_changes_nothing() -> None:
    out = announce(snapshot(task()), request(origin=IDENTITY))
    assert not out.new_generation and out.task == task()


def test_stale_generation_origin_report_is_ignored() -> None:
    current = task(generation=2, manifest=Manifest.for_identity(CHANGED))
    out = announce(
        snapshot(current),
        request(generation=1, origin=IDENTITY, done={0: digest(0)}, bitfield=bits([1]).encode()),
    )
    assert out.task == current and not out.new_generation
    assert out.new_hashes == {}
    assert out.response is not None and out.response.restart and out.response.generation == 2
    assert out.peer is not None and len(out.peer.view.have) == 0


def test_generation_zero_report_cannot_replace_a_known_manifest() -> None:
    out = announce(snapshot(task()), request(generation=0, origin=CHANGED))
    assert out.task == task() and not out.new_generation
    assert out.response is not None and not out.response.restart and out.response.manifest == MANIFEST


def test_a_report_that_conflicts_with_a_trusted_hash_is_rejected_not_a_new_generation() -> None:
    snap = snapshot(task(hash_seq=1), known_hashes={5: digest(5)}, leases=held_by("p1", [5]))
    out = announce(snap, request(done={5: digest(5, "b")}))
    assert not out.new_generation and out.task.generation == 1 and out.task.hash_seq == 1
    assert out.new_hashes == {} and out.rejected == [5]
    assert out.response is not None and not out.response.restart and out.response.rejected == (5,)
    assert out.peer is not None and 5 not in out.peer.view.have


def test_only_the_live_lease_holder_reports_a_piece_hash() -> None:
    snap = snapshot(task(), leases=[*held_by("p2", [4]), *held_by("p1", [6], expires=NOW - 1)])
    out = announce(snap, request("p1", done={3: digest(3), 4: digest(4), 6: digest(6)}))
    # 3: nobody's lease; 4: p2's lease; 6: p1's lease has lapsed.
    assert out.new_hashes == {} and sorted(out.rejected) == [3, 4, 6]
    assert out.peer is not None and len(out.peer.view.have) == 0


def test_in_the_grace_after_a_restart_a_report_claims_an_unleased_piece_and_no_lease_is_granted() -> None:
    """The restarted tracker lost every lease: a piece fetched during the outage is reported done without
    one, and is taken from its reporter; a piece another peer has leased again is not; nothing is leased
    afresh, while claims of fetches in flight are leased back."""
    snap = replace(snapshot(task(), peers=[peer("p2")], leases=held_by("p2", [4]), hashed=[]), grace=True)
    out = announce(snap, request("p1", done={3: digest(3), 4: digest(4)}, fetching=(5,), want_leases=4))
    assert out.new_hashes == {3: digest(3)} and out.reporters == {3: "p1"} and out.rejected == [4]
    assert out.response is not None and out.response.leases == (5,)
    after = announce(replace(snap, grace=False), request("p1", done={3: digest(3)}))
    assert after.rejected == [3], "once the grace is over, a report needs its lease again"


def test_a_report_matching_the_trusted_hash_needs_no_lease() -> None:
    # A rerun reports the pieces an earlier run verified: the tracker confirms the ones it knows.
    out = announce(snapshot(task(), known_hashes={2: digest(2)}), request(done={2: digest(2)}))
    assert out.rejected == [] and out.new_hashes == {}
    assert out.peer is not None and list(out.peer.view.have) == [2]


def test_a_bitfield_claims_only_pieces_whose_hash_the_tracker_holds() -> None:
    snap = snapshot(task(), hashed=[0, 1])
    out = announce(snap, request("p1", bitfield=bits(range(PIECES)).encode()))
    assert out.peer is not None and sorted(out.peer.view.have) == [0, 1]
    # So the pieces it claims without hashes stay free for origin leases.
    out = announce(snapshot(task(), peers=[out.peer], hashed=[0, 1]), request("p2", want_leases=4))
    assert out.response is not None and out.response.leases == (2, 3, 4, 5)


unleased = st.dictionaries(st.integers(0, PIECES - 1), st.sampled_from("abc"), max_size=PIECES)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["x1", "x2", "x3"]), unleased, st.lists(st.integers(0, PIECES - 1)), st.booleans()),
        max_size=12,
    )
)
def test_no_announce_from_peers_without_the_lease_changes_a_trusted_hash(script) -> None:
    """Hostile peers (never a lease holder) report hashes, claim bitfields, claim the origin changed (a
    claim the tracker's look at the origin does not bear out), accuse and stop in any order: no hash the
    tracker trusts changes, no new one appears, and the generation stays."""
    tracker = MemoryTracker()
    tracker.announce(request("honest", generation=0, origin=IDENTITY), NOW)
    tracker.announce(request("honest", want_leases=4), NOW)
    tracker.announce(request("honest", done={i: digest(i) for i in range(4)}), NOW)
    trusted = dict(tracker.hashes)
    assert trusted == {i: digest(i) for i in range(4)}
    for peer_id, reports, claims, stop in script:
        tracker.announce(
            request(
                peer_id,
                origin=CHANGED if len(claims) % 2 else None,
                done={i: digest(i, v) for i, v in reports.items()},
                bitfield=bits(claims).encode(),
                bad_peers=("honest",),
                event="stopped" if stop else "update",
                want_leases=0,
            ),
            NOW,
        )
        assert tracker.hashes == trusted
        assert tracker.task is not None and tracker.task.generation == 1
    assert not tracker.peers["honest"].view.bad, "peers on one host cannot ban a peer for everyone"


# -- content tasks -------------------------------------------------------------------------------------


def _content(pieces: int = PIECES) -> tuple[str, tuple[str, ...]]:
    hashes = tuple(digest(i, "c") for i in range(pieces))
    return content_task_id(IDENTITY.length, MANIFEST.piece_length, hashes), hashes


def test_a_content_task_takes_a_piece_list_that_hashes_to_its_id() -> None:
    task_id, hashes = _content()
    listed = piece_hash_bytes(hashes)
    out = announce(snapshot(None), request(generation=0, origin=IDENTITY, piece_hash_bytes=listed), task_id=task_id)
    assert out.task.manifest == MANIFEST and out.new_hashes == dict(enumerate(hashes))
    assert out.task.hash_seq == PIECES
    # Registered again (a second seeder of the same bytes): nothing new.
    again = snapshot(out.task, known_hashes=out.new_hashes)
    out = announce(again, request(origin=IDENTITY, piece_hash_bytes=listed), task_id=task_id)
    assert out.new_hashes == {}


@pytest.mark.parametrize("tamper", ["a piece", "the length", "the count"])
def test_a_content_task_refuses_a_piece_list_that_does_not_hash_to_its_id(tamper: str) -> None:
    task_id, hashes = _content()
    origin = IDENTITY
    if tamper == "a piece":
        hashes = (digest(0, "d"), *hashes[1:])
    elif tamper == "the length":
        origin = OriginIdentity(IDENTITY.length - 1, IDENTITY.etag)
    else:
        hashes = hashes[:-1]
    with pytest.raises(ProtocolError) as info:
        announce(
            snapshot(None),
            request(generation=0, origin=origin, piece_hash_bytes=piece_hash_bytes(hashes)),
            task_id=task_id,
        )
    assert info.value.field == "piece_hashes"


def test_a_piece_list_registers_only_a_content_task() -> None:
    with pytest.raises(ProtocolError):
        announce(
            snapshot(None), request(generation=0, origin=IDENTITY, piece_hash_bytes=piece_hash_bytes(_content()[1]))
        )


def test_a_content_task_takes_no_single_report_and_never_changes_its_manifest() -> None:
    task_id, hashes = _content()
    registered = task(manifest=MANIFEST)
    snap = snapshot(registered, known_hashes=dict(enumerate(hashes)), leases=held_by("p1", [0, 1]))
    out = announce(snap, request(done={0: digest(0, "d"), 1: hashes[1]}, origin=CHANGED), task_id=task_id)
    assert not out.new_generation and out.task.manifest == MANIFEST
    assert out.new_hashes == {} and out.rejected == [0]
    # Before its registration no report or origin claim gives it a manifest or a hash either.
    out = announce(snapshot(task(manifest=None)), request(origin=IDENTITY, want_leases=2), task_id=task_id)
    assert out.task.manifest is None


def test_new_done_hashes_are_recorded_and_counted() -> None:
    snap = snapshot(task(hash_seq=3), known_hashes={1: digest(1)}, leases=held_by("p1", [1, 2, 3]))
    out = announce(snap, request(done={1: digest(1), 2: digest(2), 3: digest(3)}))
    assert not out.new_generation
    assert out.new_hashes == {2: digest(2), 3: digest(3)}
    assert out.task.hash_seq == 5
    assert sorted(out.drop_leases) == [1, 2, 3]
    assert out.peer is not None and list(out.peer.view.have) == [1, 2, 3]
    assert out.response is not None and out.response.hash_seq == 5 and out.response.leases == ()


def test_done_beyond_the_last_piece_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        announce(snapshot(task()), request(done={PIECES: digest(0)}))
    assert info.value.field == "done"


def test_done_before_any_manifest_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        announce(snapshot(task(manifest=None)), request(done={0: digest(0)}))
    assert info.value.field == "done"


def test_malformed_bitfield_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        announce(snapshot(task()), request(bitfield=bits([0], size=PIECES + 8).encode()))
    assert info.value.field == "bitfield"


# -- leaving, dying, leases ----------------------------------------------------------------------------


def test_stopped_removes_the_peer_and_its_leases() -> None:
    snap = snapshot(task(), peers=[peer("p1"), peer("p2")], leases=[*held_by("p1", [0, 1]), *held_by("p2", [2])])
    out = announce(snap, request("p1", event="stopped", want_leases=4))
    assert out.remove_peer == "p1" and out.peer is None
    assert sorted(out.drop_leases) == [0, 1]
    assert out.put_leases == []


def test_own_leases_are_renewed_and_returned() -> None:
    snap = snapshot(task(), peers=[peer("p1", last_seen=NOW - 5)], leases=held_by("p1", [4, 5, 6], expires=NOW + 1))
    out = announce(snap, request("p1", released=[6]))
    assert out.drop_leases == [6]
    assert sorted(out.put_leases, key=lambda lease: lease.piece) == held_by("p1", [4, 5], NOW + POLICY.peer_ttl)
    assert out.response is not None and out.response.leases == (4, 5)


def test_dead_peers_leases_are_granted_again() -> None:
    snap = snapshot(task(), peers=[peer("p2", last_seen=DEAD)], leases=held_by("p2", range(PIECES), NOW + 100))
    out = announce(snap, request("p1", want_leases=4))
    assert out.response is not None and out.response.leases == (0, 1, 2, 3)
    assert out.put_leases == held_by("p1", [0, 1, 2, 3], NOW + POLICY.peer_ttl)


def test_live_peers_leases_are_respected_until_they_expire() -> None:
    live = snapshot(task(), peers=[peer("p2")], leases=held_by("p2", range(PIECES), NOW + 1))
    out = announce(live, request("p1", want_leases=4))
    assert out.response is not None and out.response.leases == ()
    lapsed = snapshot(task(), peers=[peer("p2")], leases=held_by("p2", range(PIECES), NOW))
    out = announce(lapsed, request("p1", want_leases=4))
    assert out.response is not None and out.response.leases == (0, 1, 2, 3)


def test_pieces_held_by_live_peers_are_not_leased() -> None:
    snap = snapshot(task(), peers=[peer("p2", have=range(0, 10)), peer("p3", have=range(10, 14), last_seen=DEAD)])
    out = announce(snap, request("p1", want_leases=16, bitfield=bits([14]).encode()))
    assert out.response is not None
    # p3 is gone, so its pieces count as nobody's; p1's own piece 14 is not leased to it.
    assert out.response.leases == (10, 11, 12, 13)


def test_an_older_announce_arriving_late_keeps_the_pieces_a_newer_one_reported() -> None:
    # p1 reported pieces 4 and 5 (their leases went); then its announce sent before that arrives, with a
    # bitfield that lacks them. They stay p1's: another peer is not leased them.
    snap = snapshot(task(), peers=[peer("p1", have=[0, 1, 4, 5], reported=[4, 5])], leases=held_by("p1", [6, 7]))
    out = announce(snap, request("p1", bitfield=bits([0, 1]).encode()))
    assert out.peer is not None and sorted(out.peer.view.have) == [0, 1, 4, 5]
    out = announce(snapshot(task(), peers=[out.peer], leases=held_by("p1", [6, 7])), request("p2", want_leases=16))
    assert out.response is not None and not {0, 1, 4, 5, 6, 7} & set(out.response.leases)


def test_a_piece_taken_from_peers_and_left_out_of_the_bitfield_is_no_longer_the_peers() -> None:
    # p1 took pieces 2 and 3 from peers, then dropped 3 (its hash changed, core.audit): its bitfield says so.
    snap = snapshot(task(), peers=[peer("p1", have=[2, 3, 4], reported=[4])])
    out = announce(snap, request("p1", bitfield=bits([2]).encode()))
    assert out.peer is not None and sorted(out.peer.view.have) == [2, 4]


@pytest.mark.parametrize(
    ("earlier", "fields"),
    [
        (peer("p1", have=[0, 1, 4, 5], generation=1), {"generation": 2}),  # an older generation's pieces
        (peer("p1", have=[0, 1, 4, 5]), {"event": "started"}),  # a download started again
        (peer("p1", have=[0, 1, 4, 5], last_seen=DEAD), {}),  # a peer that had fallen silent
    ],
)
def test_a_new_start_counts_only_the_pieces_it_announces(earlier, fields) -> None:
    snap = snapshot(task(generation=fields.get("generation", 1)), peers=[earlier])
    out = announce(snap, request("p1", bitfield=bits([0]).encode(), **fields))
    assert out.peer is not None and sorted(out.peer.view.have) == [0]


def test_without_range_support_one_peer_fetches_everything() -> None:
    out = announce(snapshot(task(), peers=[peer("p2")]), request("p1", no_range=True, want_leases=2))
    assert not out.task.range_ok
    assert out.response is not None and not out.response.range_ok
    assert out.response.leases == tuple(range(PIECES))
    again = snapshot(out.task, peers=[peer("p1")], leases=out.put_leases)
    out = announce(again, request("p2", want_leases=4))
    assert out.response is not None and out.response.leases == ()


def test_no_range_from_a_stale_generation_is_ignored() -> None:
    out = announce(snapshot(task(generation=2)), request(generation=1, no_range=True))
    assert out.task.range_ok


def test_racks_are_leased_the_origins_pieces_of_their_own_stripes() -> None:
    """Two racks: each is leased its own share of the origin's pieces (core.leases.stripes), lowest first,
    however the asks interleave; a flat peer beside them takes the lowest free pieces, as without racks."""
    tracker = MemoryTracker()
    tracker.announce(request("a1", generation=0, origin=IDENTITY, site="s", rack="r1"), NOW)
    for name, rack in (("a1", "r1"), ("b1", "r2"), ("a2", "r1"), ("b2", "r2")):
        tracker.announce(request(name, site="s", rack=rack), NOW)
    got = {
        name: tracker.announce(request(name, site="s", rack=rack, want_leases=3), NOW).response.leases
        for name, rack in (("b1", "r2"), ("a1", "r1"), ("a2", "r1"), ("b2", "r2"))
    }
    assert got == {"a1": (0, 1, 2), "a2": (3, 8, 9), "b1": (4, 5, 6), "b2": (7, 12, 13)}
    flat = tracker.announce(request("f", want_leases=2), NOW).response
    assert flat is not None and flat.leases == (10, 11)


# -- claims: origin fetches in flight, after a restart that lost their leases ---------------------------


def test_a_claim_on_a_free_piece_is_leased_back_to_its_fetcher() -> None:
    # The restarted tracker has no lease on 4 or 5 (lost, or lapsed while p1 could not reach it).
    snap = snapshot(task(), peers=[peer("p2", have=[0, 1])])
    out = announce(snap, request("p1", fetching=(5, 4)))
    assert out.response is not None and out.response.leases == (4, 5)
    assert out.put_leases == held_by("p1", [4, 5], NOW + POLICY.peer_ttl)


def test_a_claim_on_a_piece_someone_else_holds_or_leases_is_refused() -> None:
    snap = snapshot(
        task(),
        peers=[peer("p2", have=[4]), peer("p3"), peer("p4", last_seen=DEAD)],
        leases=[*held_by("p3", [5]), *held_by("p3", [6], expires=NOW), *held_by("p4", [7])],
    )
    out = announce(snap, request("p1", fetching=(4, 5, 6, 7)))
    # 4: p2 holds it; 5: p3's live lease. 6: p3's lease has lapsed; 7: p4 is gone. Those two are p1's.
    assert out.response is not None and out.response.leases == (6, 7)
    assert sorted(lease.piece for lease in out.put_leases) == [6, 7]


def test_a_claimed_piece_is_not_leased_afresh_to_the_claimant_or_another_peer() -> None:
    tracker = MemoryTracker()
    tracker.announce(request("p1", generation=0, origin=IDENTITY), NOW)
    claimed = tracker.announce(request("p1", fetching=(0, 1, 2), want_leases=2), NOW)
    # The claims come before fresh grants: p1 gets 0-2 back and, asking for more, the next run (3, 4).
    assert claimed.response is not None and claimed.response.leases == (0, 1, 2, 3, 4)
    other = tracker.announce(request("p2", want_leases=4), NOW)
    assert other.response is not None and other.response.leases == (5, 6, 7, 8)


def test_a_claim_on_a_piece_reported_done_or_released_in_the_same_announce_is_no_lease() -> None:
    out = announce(snapshot(task()), request("p1", fetching=(3, 4, 5), done={3: digest(3)}, released=(4,)))
    assert out.response is not None and out.response.leases == (5,)


def test_a_claim_beyond_the_last_piece_or_malformed_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        announce(snapshot(task()), request("p1", fetching=(PIECES,)))
    assert caught.value.field == "fetching"
    me = identity("p1")
    body = {**msgspec.to_builtins(request(me.peer_id, secret=me.secret)), "fetching": [-1]}
    with pytest.raises(ProtocolError) as caught:
        decode(msgspec.json.encode(body), AnnounceRequest)
    assert caught.value.field == "fetching"
    assert decode(msgspec.json.encode({**body, "fetching": [2, 3]}), AnnounceRequest).fetching == (2, 3)


# -- bad peers and hand-outs ---------------------------------------------------------------------------


def test_an_accusation_keeps_the_peer_from_the_accusers_host_at_once() -> None:
    snap = snapshot(task(), peers=[peer("p2", have=range(PIECES)), peer("p3", have=[0])])
    out = announce(snap, request("p1", bad_peers=("p2", "p1"), want_leases=4))
    assert out.accusations == {"p2": frozenset({"192.0.2.9"})}, "a peer cannot accuse itself"
    assert out.mark_bad == [], "one host's word bans no one for everyone"
    assert out.response is not None and [p.peer_id for p in out.response.peers] == ["p3"]
    # For the accuser p2's pieces no longer count as held: it may lease one only p2 holds.
    assert out.response.leases == (1, 2, 3, 4)
    # Another peer on another host is still handed p2.
    snap = snapshot(
        task(),
        peers=[
            out.peer,
            replace(
                peer("p2", have=range(PIECES)),
                view=replace(view("p2", have=range(PIECES)), accusers=frozenset({"192.0.2.9"})),
            ),
        ],
    )
    out = announce(snap, request("p4", want_leases=4), seen_host="192.0.2.50")
    assert out.response is not None and "p2" in [p.peer_id for p in out.response.peers]
    # Elsewhere they do: nobody else fetches them from the origin again on one host's word.
    assert out.response.leases == ()


def test_accusers_on_two_hosts_ban_a_peer_for_everyone() -> None:
    accused = peer("p2", have=range(PIECES))
    first = announce(snapshot(task(), peers=[accused]), request("p1", bad_peers=("p2",)), seen_host="10.9.0.1")
    again = announce(snapshot(task(), peers=[accused]), request("p5", bad_peers=("p2",)), seen_host="10.9.0.1")
    assert first.mark_bad == [] and again.mark_bad == []
    accused = replace(accused, view=replace(accused.view, accusers=first.accusations["p2"]))
    out = announce(
        snapshot(task(), peers=[accused]), request("p3", bad_peers=("p2",), want_leases=2), seen_host="10.9.0.2"
    )
    assert out.mark_bad == ["p2"]
    # Its pieces no longer count as held, so they can be fetched from the origin again.
    assert out.response is not None and out.response.peers == () and out.response.leases == (0, 1)


def test_a_stored_bad_mark_keeps_excluding_the_peer() -> None:
    snap = snapshot(task(), peers=[peer("p2", have=range(PIECES), bad=True)])
    out = announce(snap, request("p1", want_leases=2))
    assert out.response is not None
    assert out.response.peers == () and out.response.leases == (0, 1)


def test_a_bad_peer_announcing_stays_bad() -> None:
    out = announce(snapshot(task(), peers=[peer("p1", bad=True)]), request("p1"))
    assert out.peer is not None and out.peer.view.bad


def test_hand_out_has_only_live_peers_of_this_generation_nearest_first() -> None:
    snap = snapshot(
        task(generation=3),
        peers=[
            peer("far", have=[0], generation=3),
            peer("rack", have=[0], generation=3, site="s", rack="r"),
            peer("old", have=[0], generation=2, site="s", rack="r"),
            peer("dead", have=[0], generation=3, last_seen=DEAD, site="s", rack="r"),
            peer("nothing-new", generation=3, site="s", rack="r"),
        ],
    )
    out = announce(snap, request("p1", generation=3, site="s", rack="r"))
    assert out.response is not None
    assert [p.peer_id for p in out.response.peers] == ["rack", "far"]
    assert out.response.peers[0].site == "s" and out.response.peers[0].rack == "r"


def test_hand_out_is_bounded() -> None:
    snap = snapshot(task(), peers=[peer(f"p{n}", have=[0]) for n in range(2, 30)])
    out = announce(snap, request("p1"))
    assert out.response is not None and len(out.response.peers) == POLICY.max_peers


# -- whole sequences -----------------------------------------------------------------------------------

PEERS = ["p0", "p1", "p2", "p3"]
steps = st.lists(
    st.tuples(
        st.sampled_from(PEERS),
        st.sampled_from(["update", "update", "update", "finish", "release", "stopped", "accuse", "claim"]),
        st.integers(min_value=0, max_value=6),
        st.floats(min_value=0.0, max_value=POLICY.peer_ttl * 0.7),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps, st.booleans())
def test_no_piece_is_leased_twice_across_a_swarm(script: list[tuple[str, str, int, float]], range_ok: bool) -> None:
    """Peers join, fetch, release, accuse, claim pieces as in flight, fall silent and leave; a live lease is
    never handed twice."""
    tracker = MemoryTracker()
    now = NOW
    have: dict[str, set[int]] = {p: set() for p in PEERS}
    leases: dict[str, list[int]] = {p: [] for p in PEERS}
    for peer_id in PEERS:
        tracker.announce(request(peer_id, generation=0, origin=IDENTITY, no_range=not range_ok), now)
    for peer_id, action, amount, pause in script:
        now += pause
        mine = leases[peer_id]
        done = {i: digest(i) for i in mine[:amount]} if action == "finish" else {}
        released = tuple(mine[:amount]) if action == "release" else ()
        accused = ("p0",) if action == "accuse" and peer_id != "p0" else ()
        req = request(
            peer_id,
            event="stopped" if action == "stopped" else "update",
            want_leases=amount,
            done=done,
            released=released,
            fetching=tuple(range(amount)) if action == "claim" else (),
            bad_peers=accused,
            bitfield=bits(have[peer_id]).encode(),
            no_range=not range_ok,
        )
        snap = tracker.snapshot()
        assert snap.task is not None
        before = {i for i, lease in snap.leases.items() if lease.peer_id == peer_id}
        taken = {
            i
            for i, lease in snap.leases.items()
            if lease.peer_id != peer_id
            and lease.expires > now
            and any(p.view.peer_id == lease.peer_id and now - p.last_seen < POLICY.peer_ttl for p in snap.peers)
        }
        held = {
            i
            for p in snap.peers
            if p.view.peer_id != peer_id
            and not p.view.bad
            and not (set(accused) & {p.view.peer_id})
            # An accused peer's pieces do not count as held for the accusers' host (all of the script's peers
            # share one: the factory's seen address).
            and "192.0.2.9" not in p.view.accusers
            and now - p.last_seen < POLICY.peer_ttl
            for i in p.view.have
        }
        out = tracker.announce(req, now)
        assert out.response is not None and not out.new_generation
        assert out.task.range_ok == range_ok
        granted = set(out.response.leases) - before
        assert not granted & taken, "a piece leased to two live peers"
        assert not granted & held, "a piece leased although a live peer holds it"
        assert not granted & have[peer_id]
        # A report the tracker did not take (the lease had lapsed to another peer) claims nothing.
        have[peer_id] |= set(done) - set(out.response.rejected)
        leases[peer_id] = [] if action == "stopped" else list(out.response.leases)
        if action == "stopped":
            have[peer_id] = set()


def test_a_lease_on_a_piece_another_peer_delivered_is_dropped_not_renewed() -> None:
    snap = snapshot(task(), peers=[peer("p1"), peer("p2", have=[3])], leases=held_by("p1", [3, 4]))
    out = announce(snap, request("p1"))
    assert 3 in out.drop_leases
    assert [lease.piece for lease in out.put_leases] == [4]
    assert out.response is not None and out.response.leases == (4,)


def test_peers_stored_before_the_manifest_count_as_holding_nothing() -> None:
    # The task exists without a manifest (its first peer has not probed the origin yet), so the stored
    # bitfields are empty; the announce that sets the manifest must not trip over their size.
    waiting = peer("p2", size=0)
    out = announce(snapshot(task(manifest=None), peers=[waiting]), request(origin=IDENTITY, want_leases=2))
    assert out.response is not None and out.response.leases == (0, 1)


def _asking_past(manifest: Manifest, leases: list[Lease]) -> Callable[..., tuple[int, ...]]:
    """The origin leases peer p1 (with the labels given) is granted when ``peers`` hold ``leases``, one each."""

    def asking(peers: list[PeerRecord], **labels: str) -> tuple[int, ...]:
        snap = snapshot(task(manifest=manifest), peers=peers, leases=leases[: len(peers)])
        out = announce(snap, request("p1", want_leases=4, **labels))
        assert out.response is not None
        return out.response.leases

    return asking


def test_past_rack_lease_holders_a_peer_of_that_rack_gets_no_origin_lease() -> None:
    # core.leases: a few peers of a rack split its origin transfers; the next asker of that rack takes the
    # pieces from them, while a peer of another rack, or without labels, is leased as before.
    manifest = Manifest.for_identity(OriginIdentity(64 * 1024 * 1024, etag='"big"'))
    size = manifest.piece_count
    holders = [peer(f"h{i}", size=size, site="s", rack="r1") for i in range(RACK_LEASE_HOLDERS)]
    asking = _asking_past(manifest, [Lease(i, f"h{i}", NOW + 10) for i in range(RACK_LEASE_HOLDERS)])

    assert asking(holders, site="s", rack="r1") == ()
    assert len(asking(holders[:-1], site="s", rack="r1")) == 4
    assert len(asking(holders, site="s", rack="r2")) == 4
    assert len(asking(holders)) == 4


def test_past_flat_lease_holders_a_peer_without_a_rack_label_gets_no_origin_lease() -> None:
    # core.leases: in a flat swarm a few peers split the origin's transfers; the next asker without a rack
    # label takes the pieces from them. Holders with rack labels are not of its scope, nor is it of theirs.
    manifest = Manifest.for_identity(OriginIdentity(64 * 1024 * 1024, etag='"big"'))
    size = manifest.piece_count
    flat = [peer(f"h{i}", size=size) for i in range(FLAT_LEASE_HOLDERS)]
    racked = [peer(f"h{i}", size=size, site="s", rack="r1") for i in range(FLAT_LEASE_HOLDERS)]
    asking = _asking_past(manifest, [Lease(i, f"h{i}", NOW + 10) for i in range(FLAT_LEASE_HOLDERS)])

    assert asking(flat) == ()
    free = tuple(range(FLAT_LEASE_HOLDERS, FLAT_LEASE_HOLDERS + 4))
    assert asking(flat[:-1]) == tuple(range(FLAT_LEASE_HOLDERS - 1, FLAT_LEASE_HOLDERS + 3))
    assert asking(flat, site="s", rack="r2") == free
    assert asking(racked) == free


def test_a_holder_of_a_spot_check_lease_only_does_not_count_toward_the_cap() -> None:
    # core.leases: a check's lease stays until its holder reports, also when the holder got the piece from a
    # peer and never fetches it; counted, it would keep a holder's place for as long as its peer announces.
    manifest = Manifest.for_identity(OriginIdentity(64 * 1024 * 1024, etag='"big"'))
    size = manifest.piece_count
    flat = [peer(f"h{i}", size=size) for i in range(FLAT_LEASE_HOLDERS)]
    leases = [Lease(i, f"h{i}", NOW + 10) for i in range(FLAT_LEASE_HOLDERS)]
    snap = snapshot(task(manifest=manifest), peers=flat, leases=leases)
    checked = replace(snap, audits={0: Audit(0, (Vote("r", "203.0.113.1", digest(0)),))})
    for state, expected in ((snap, ()), (checked, tuple(range(FLAT_LEASE_HOLDERS, FLAT_LEASE_HOLDERS + 4)))):
        out = announce(state, request("p1", want_leases=4))
        assert out.response is not None and out.response.leases == expected
