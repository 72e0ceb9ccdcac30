"""A download's decisions (core.download.DownloadCore) with plain values: events and times in, actions out."""

from __future__ import annotations

import dataclasses
import random
import typing
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.bitfield import Bitfield
from shoal.core.download import (
    BUSY_BACKOFF_SECONDS,
    ENDGAME_PIECES,
    ENDGAME_REPORTS,
    HASH_REFRESH_GAP,
    LEASE_POLL_SECONDS,
    MAX_WATCHED_PEERS,
    DownloadCore,
)
from shoal.core.download_actions import (
    Action,
    Carry,
    FetchOrigin,
    FetchPeer,
    Follow,
    PlanLater,
    Release,
    ReportBeside,
    Unfollow,
    WakeAnnouncer,
    WakeHashes,
)
from shoal.core.download_values import Stats, Tuning
from shoal.core.errors import JoinAgain, NoSwarmCopy, OriginChanged, OriginError, TrackerUnavailable
from shoal.core.events import (
    Announced,
    Event,
    HashesArrived,
    OriginPiece,
    PeerGone,
    PeerHas,
    PeerPiece,
    RunEnded,
    TrackerDown,
)
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceResponse, ManifestMessage, PeerAddress, ScopeBytes
from shoal.core.scope_leases import AHEAD_SWARM, Labels
from shoal.peer.config import GetConfig

MANIFEST = Manifest.for_identity(OriginIdentity(1 << 20))  # 4 pieces of 256 KiB
PIECES = MANIFEST.piece_count
SIZE = MANIFEST.piece_length
NOW = 100.0
TUNING = GetConfig(dest=Path("x")).tuning()


def digest(index: int, version: str = "a") -> str:
    return f"{version}{index:x}".ljust(64, "0")


def core(manifest: Manifest = MANIFEST, *, tuning: Tuning = TUNING, direct: bool = False) -> DownloadCore:
    return DownloadCore(
        manifest, peer_id="me", generation=1, tuning=tuning, stats=Stats(), rng=random.Random(1), direct=direct
    )


def reply(*peer_ids: str, leases: tuple[int, ...] = (), generation: int = 1, **fields: object) -> AnnounceResponse:
    peers = tuple(PeerAddress(peer_id=p, host="127.0.0.1", port=9) for p in peer_ids)
    manifest = ManifestMessage.of(MANIFEST)
    return AnnounceResponse(generation=generation, manifest_message=manifest, peers=peers, leases=leases, **fields)  # type: ignore[arg-type]


def hand_out(c: DownloadCore, *peer_ids: str) -> list[Action]:
    return c.handle(Announced(reply(*peer_ids), {}, leases=False), NOW)


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions]


# -- peers ------------------------------------------------------------------------------------------------


def test_a_peer_handed_out_is_followed_once_and_never_ourselves() -> None:
    c = core()
    actions = hand_out(c, "p", "me", "p")
    assert actions[-1] == Follow("p", "http://127.0.0.1:9") and kinds(actions).count(Follow) == 1
    assert list(c.peers) == ["p"] and c.stats.peers == 1


def test_a_peer_that_went_before_its_corrupt_run_ended_stays_banned() -> None:
    c = core()
    hand_out(c, "bad")
    c.peers["bad"].requests = 1
    assert c.handle(PeerGone("bad"), NOW) == [Unfollow("bad")]  # its have stream ended first (it died)
    actions = c.handle(RunEnded("bad", (0,), corrupt=True), NOW)
    assert WakeAnnouncer(news=True) in actions and "bad" in c.bad_peers
    hand_out(c, "bad", "good")
    assert list(c.peers) == ["good"]
    assert c.ask(NOW).bad_peers == ("bad",)


def test_runs_of_a_peer_that_went_and_came_back_do_not_count_against_it() -> None:
    c = core()
    hand_out(c, "p")
    c.peers["p"].requests = 2
    c.handle(PeerGone("p"), NOW)
    hand_out(c, "p")  # handed out again while its two runs were still going
    c.peers["p"].requests = 1  # one run of its new state
    for _ in range(3):
        c.handle(RunEnded("p", ()), NOW)
    assert c.peers["p"].requests == 0


def test_peers_followed_are_capped_and_a_useless_one_makes_room() -> None:
    c = core()
    hand_out(c, *(f"p{i}" for i in range(MAX_WATCHED_PEERS + 10)))
    assert len(c.peers) == MAX_WATCHED_PEERS  # each holds a connection: the rest wait for room
    # p0 turns out to hold nothing we lack (we hold piece 0, it holds only that); the others hold piece 1.
    c.book.learn_hashes({0: digest(0)})
    c.handle(PeerPiece("p1", 0, digest(0), SIZE), NOW)
    c.handle(PeerHas("p0", Bitfield.of(PIECES, [0])), NOW)
    for i in range(1, MAX_WATCHED_PEERS):
        c.handle(PeerHas(f"p{i}", Bitfield.of(PIECES, [1])), NOW)
    c.peers["p1"].requests = 1
    actions = hand_out(c, "new1", "new2")
    assert Unfollow("p0") in actions and "new1" in c.peers  # the useless one made room
    assert "new2" not in c.peers  # no other peer is useless
    # p0 handed out again before its stopped stream has ended: not followed until that stream's PeerGone,
    # which then removes nothing else.
    c.handle(PeerGone("p2"), NOW)  # room, from a peer that really went
    hand_out(c, "p0")
    assert "p0" not in c.peers
    assert c.handle(PeerGone("p0"), NOW) == []
    hand_out(c, "p0")
    assert "p0" in c.peers
    c.handle(PeerGone("p3"), NOW)
    assert "p0" in c.peers and "p3" not in c.peers


def test_a_busy_peer_is_left_alone_for_the_back_off() -> None:
    c = core()
    hand_out(c, "p")
    c.book.learn_hashes({i: digest(i) for i in range(PIECES)})
    c.handle(PeerHas("p", Bitfield.of(PIECES, range(PIECES))), NOW)
    first = [a for a in c.plan(NOW) if isinstance(a, FetchPeer)]
    assert first and all(a.peer_id == "p" for a in first)
    for action in first:
        assert c.handle(RunEnded("p", tuple(action.run), busy=True), NOW) == [PlanLater(BUSY_BACKOFF_SECONDS)]
    assert not [a for a in c.plan(NOW + BUSY_BACKOFF_SECONDS / 2) if isinstance(a, FetchPeer)]
    assert [a for a in c.plan(NOW + BUSY_BACKOFF_SECONDS) if isinstance(a, FetchPeer)]


def test_a_failed_peer_run_forgets_the_peer_and_gives_its_pieces_back() -> None:
    c = core()
    hand_out(c, "p")
    c.book.learn_hashes({i: digest(i) for i in range(PIECES)})
    c.handle(PeerHas("p", Bitfield.of(PIECES, range(PIECES))), NOW)
    (fetch, *_) = [a for a in c.plan(NOW) if isinstance(a, FetchPeer)]
    assert all(c.book.inflight.mask >> i & 1 for i in fetch.run)
    actions = c.handle(RunEnded("p", tuple(fetch.run), error=OriginError("reset")), NOW)
    assert Unfollow("p") in actions and "p" not in c.peers
    assert not any(c.book.inflight.mask >> i & 1 for i in fetch.run)


# -- pieces and hashes ------------------------------------------------------------------------------------


def test_a_piece_on_disk_that_the_tracker_hashes_otherwise_is_fetched_again() -> None:
    c = core()
    c.book.learn_hashes({0: digest(0)})
    (carry,) = [a for a in c.handle(PeerPiece("p", 0, digest(0), SIZE), NOW) if isinstance(a, Carry)]
    assert carry.changes.serve == [0] and c.stats.done == SIZE and c.stats.from_peers == SIZE
    actions = c.handle(HashesArrived(1, 1, {0: digest(0, "b")}), NOW)
    (carry,) = [a for a in actions if isinstance(a, Carry)]
    assert [index for index, _ in carry.changes.dropped] == [0]
    assert 0 not in c.book.written and c.stats.done == 0 and c.book.needed() & 1


def test_hashes_of_another_generation_end_the_attempt() -> None:
    with pytest.raises(JoinAgain):
        core().handle(HashesArrived(2, 1, {0: digest(0)}), NOW)


def test_a_reply_of_another_generation_or_a_restart_ends_the_attempt() -> None:
    with pytest.raises(JoinAgain):
        core().handle(Announced(reply(generation=2), {}), NOW)
    with pytest.raises(JoinAgain):
        core().handle(Announced(reply(restart=True), {}), NOW)


# -- the origin and leases --------------------------------------------------------------------------------


def test_leased_pieces_go_to_the_origin_in_one_run_and_leases_are_asked_for_when_none_is_left() -> None:
    c = core()
    assert c.plan(NOW) == [WakeAnnouncer()]  # nothing leased: ask
    ask = c.ask(NOW)
    assert ask.want_leases > 0 and ask.done == {}
    c.answered()
    c.handle(Announced(reply(leases=(0, 1)), {}), NOW)
    c.settled(ask)
    actions = c.plan(NOW)
    assert actions[0] == FetchOrigin([0, 1]) and c.origin_busy == 1
    assert c.book.fetching == {0, 1} and c.ask(NOW, beside=True).fetching == (0, 1)


def test_an_origin_piece_is_reported_once_and_offered_when_the_tracker_takes_it() -> None:
    c = core()
    c.handle(Announced(reply(leases=(0,)), {}), NOW)
    c.plan(NOW)
    actions = c.handle(OriginPiece(0, digest(0), SIZE), NOW)
    assert WakeAnnouncer(news=True) in actions and c.stats.from_origin == SIZE
    ask = c.ask(NOW)
    assert ask.done == {0: digest(0)}
    assert c.ask(NOW, beside=True).done == {}  # the announce in flight reports it already
    actions = c.handle(Announced(reply(), ask.done), NOW)
    (carry,) = [a for a in actions if isinstance(a, Carry)]
    assert carry.changes.serve_at_once == [0] and not c.book.unreported


def test_an_origin_piece_refused_then_leased_to_us_again_is_reported_again() -> None:
    """Our lease lapsed while we fetched the piece (the tracker counted us gone while it stalled, or it
    restarted), so it did not take our hash. Leased to us again, the piece is on our disk: we report it again
    at once, instead of the tracker waiting for our report and us waiting for its hash, for ever."""
    c = core()
    c.handle(Announced(reply(leases=(0, 1)), {}), NOW)
    c.plan(NOW)
    c.handle(OriginPiece(0, digest(0), SIZE), NOW)
    ask = c.ask(NOW)
    assert ask.done == {0: digest(0)}
    c.handle(Announced(reply(rejected=(0,)), ask.done), NOW)
    c.settled(ask)
    assert 0 in c.book.withheld and c.ask(NOW).done == {}  # refused: kept back, not reported again unasked
    actions = c.handle(Announced(reply(leases=(0,)), {}), NOW)
    assert WakeAnnouncer(news=True) in actions
    again = c.ask(NOW)
    assert again.done == {0: digest(0)} and not any(isinstance(a, FetchOrigin) for a in c.plan(NOW))
    actions = c.handle(Announced(reply(), again.done), NOW)
    (carry,) = [a for a in actions if isinstance(a, Carry)]
    assert carry.changes.serve_at_once == [0] and 0 not in c.book.withheld and c.book.hashes[0] == digest(0)


def test_a_failed_origin_run_gives_its_leases_back_after_a_growing_pause_then_gives_up() -> None:
    c = core(tuning=replace(TUNING, origin_retries=3))
    failure = OriginError("503")
    for attempt in (1, 2):
        c.handle(Announced(reply(leases=(0, 1)), {}), NOW)
        (fetch,) = [a for a in c.plan(NOW) if isinstance(a, FetchOrigin)]
        actions = c.handle(RunEnded("origin", tuple(fetch.run), error=failure), NOW)
        assert Release((0, 1), 0.2 * attempt) in actions and not c.book.leases
    c.handle(Announced(reply(leases=(0, 1)), {}), NOW)
    c.plan(NOW)
    with pytest.raises(OriginError):
        c.handle(RunEnded("origin", (0, 1), error=failure), NOW)


def test_an_origin_that_changed_ends_the_attempt() -> None:
    c = core()
    c.handle(Announced(reply(leases=(0,)), {}), NOW)
    c.plan(NOW)
    with pytest.raises(JoinAgain):
        c.handle(RunEnded("origin", (0,), error=OriginChanged("etag changed", url="u")), NOW)


def test_straight_from_the_origin_every_piece_is_leased_and_runs_go_in_parallel() -> None:
    c = core(Manifest.for_identity(OriginIdentity(64 << 20)), direct=True)
    fetches = [a for a in c.plan(NOW) if isinstance(a, FetchOrigin)]
    assert len(fetches) == TUNING.direct_streams
    runs = [set(f.run) for f in fetches]
    assert sum(len(r) for r in runs) == len(set().union(*runs))  # no piece in two runs


# -- the tracker ------------------------------------------------------------------------------------------


def test_a_tracker_down_ends_the_download_only_when_stuck_past_its_patience() -> None:
    c = core()
    down = TrackerDown(TrackerUnavailable("down", tracker="t"))
    c.handle(Announced(reply(leases=(0,)), {}), NOW)
    c.plan(NOW)  # an origin run is under way
    c.handle(down, NOW)
    c.handle(down, NOW + TUNING.tracker_patience + 1)  # not stuck: the run goes on
    c.handle(RunEnded("origin", (0,)), NOW + TUNING.tracker_patience + 1)
    with pytest.raises(TrackerUnavailable):
        c.handle(down, NOW + TUNING.tracker_patience + 2)
    c.handle(Announced(reply(), {}), NOW)
    assert c.tracker_down_since is None  # an answer resets the patience


def test_lease_polls_are_paced_but_reports_go_at_once() -> None:
    c = core()
    c.ask(NOW)
    assert c.lease_poll_wait(NOW) == LEASE_POLL_SECONDS
    assert c.lease_poll_wait(NOW + LEASE_POLL_SECONDS) == 0
    c.handle(Announced(reply(leases=(0,)), {}), NOW)
    c.plan(NOW)
    c.handle(OriginPiece(0, digest(0), SIZE), NOW)
    assert c.lease_poll_wait(NOW) == 0  # something to report


def test_hash_lookups_keep_their_gap_except_a_budget_in_the_endgame() -> None:
    big = core(Manifest.for_identity(OriginIdentity(64 << 20)))  # 256 pieces: far from the endgame
    big.hashes_asked(NOW)
    assert big.hash_lookup_wait(NOW) == pytest.approx(HASH_REFRESH_GAP)
    assert big.hash_lookup_wait(NOW + HASH_REFRESH_GAP) == 0
    small = core()  # 4 pieces: in the endgame from the start
    assert PIECES <= ENDGAME_PIECES
    small.hashes_asked(NOW)
    waits = [small.hash_lookup_wait(NOW) for _ in range(40)]
    assert waits.count(0.0) == 32 and waits[-1] == pytest.approx(HASH_REFRESH_GAP)


def test_in_the_endgame_a_new_origin_piece_is_reported_beside_the_announce_in_flight() -> None:
    c = core()
    c.handle(Announced(reply(leases=tuple(range(PIECES))), {}), NOW)
    c.plan(NOW)
    assert ReportBeside not in kinds(c.handle(OriginPiece(0, digest(0), SIZE), NOW))  # no announce in flight
    c.ask(NOW)  # one in flight now
    assert ReportBeside in kinds(c.handle(OriginPiece(1, digest(1), SIZE), NOW))
    assert ENDGAME_REPORTS > 1


def test_the_last_report_refuses_to_place_a_file_mixing_two_versions() -> None:
    c = core()
    c.book.resumed.add(2)
    with pytest.raises(JoinAgain):
        c.last_report(reply(rejected=(2,)), {})
    assert kinds(core().last_report(reply(), {})) == [Carry]


# -- a property: a download always finishes, and never fetches a piece twice at once ---------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), peers=st.integers(0, 5), fail_rate=st.floats(0, 0.5))
def test_every_piece_arrives_once_whatever_the_sources_do(seed: int, peers: int, fail_rate: float) -> None:
    rng = random.Random(seed)
    manifest = Manifest.for_identity(OriginIdentity(24 << 18))  # 24 pieces
    c = core(manifest)
    count = manifest.piece_count
    hashes = {i: digest(i) for i in range(count)}
    c.book.learn_hashes(hashes)
    hand_out(c, *(f"p{i}" for i in range(peers)))
    for i in range(peers):
        c.handle(PeerHas(f"p{i}", Bitfield.of(count, rng.sample(range(count), rng.randint(0, count)))), NOW)
    running: list[tuple[str, list[int]]] = []
    granted: set[int] = set()
    for step in range(2_000):
        if c.book.complete:
            break
        now = NOW + step
        for action in c.plan(now):
            if isinstance(action, FetchOrigin | FetchPeer):
                source = "origin" if isinstance(action, FetchOrigin) else action.peer_id
                busy = {i for _, run in running for i in run}
                assert not busy & set(action.run), "a piece in two runs at once"
                running.append((source, action.run))
            elif isinstance(action, WakeAnnouncer | WakeHashes):
                # The tracker leases what no run has and nobody else holds, a few at a time.
                free = [i for i in range(count) if i not in c.book.written and i not in granted]
                lease = tuple(free[:3])
                granted.update(lease)
                c.handle(Announced(reply(leases=lease), {}), now)
        if not running:
            granted.clear()
            continue
        source, run = running.pop(rng.randrange(len(running)))
        delivered = run if rng.random() >= fail_rate else run[: rng.randrange(len(run) + 1)]
        for index in delivered:
            event = OriginPiece(index, hashes[index], manifest.piece_size(index))
            if source != "origin":
                event = PeerPiece(source, index, hashes[index], manifest.piece_size(index))  # type: ignore[assignment]
            c.handle(event, now)
        unfetched = tuple(i for i in run if i not in delivered)
        error = OriginError("cut") if unfetched and source == "origin" else None
        c.origin_failures = 0  # the property is about pieces, not about giving up
        c.handle(RunEnded(source, unfetched, error=error), now)
        granted.difference_update(unfetched)
    assert c.book.complete
    assert c.stats.done == manifest.length == c.stats.from_origin + c.stats.from_peers


# -- locality: fetches across a rack's boundary only under a scope lease ----------------------------------


def labelled_core(rack: str) -> DownloadCore:
    c = DownloadCore(
        MANIFEST,
        peer_id="me",
        generation=1,
        tuning=TUNING,
        stats=Stats(),
        rng=random.Random(1),
        labels=Labels("s", rack),
    )
    c.book.learn_hashes({i: digest(i) for i in range(PIECES)})
    return c


def hand_out_labelled(c: DownloadCore, peers: dict[str, str]) -> None:
    addresses = tuple(PeerAddress(peer_id=p, host="127.0.0.1", port=9, site="s", rack=r) for p, r in peers.items())
    c.handle(Announced(msgspec.structs.replace(reply(), peers=addresses), {}), NOW)


def peer_fetches(actions: list[Action]) -> dict[str, set[int]]:
    fetched: dict[str, set[int]] = {}
    for action in actions:
        if isinstance(action, FetchPeer):
            fetched.setdefault(action.peer_id, set()).update(action.run)
    return fetched


def test_across_a_rack_only_the_pieces_leased_to_us_are_fetched_and_leases_are_asked_for() -> None:
    c = labelled_core("r1")
    hand_out_labelled(c, {"near": "r1", "far": "r2"})
    c.handle(PeerHas("near", Bitfield.of(PIECES, [0])), NOW)
    c.handle(PeerHas("far", Bitfield.of(PIECES, range(PIECES))), NOW)
    actions = c.plan(NOW)
    assert peer_fetches(actions) == {"near": {0}}  # the other rack's pieces wait for a lease
    assert WakeAnnouncer() in actions
    ask = c.ask(NOW)
    assert ask.want_crossings > 0
    c.answered()
    c.settled(ask)
    c.handle(Announced(reply(rack_leases=(1, 2)), {}), NOW)
    runs = [a for a in c.plan(NOW) if isinstance(a, FetchPeer)]
    assert {a.peer_id for a in runs} == {"far"} and {i for a in runs for i in a.run} == {1, 2}
    assert c.ask(NOW).want_crossings > 0  # piece 3 too: none of our leases is left to start
    for run in runs:
        for index in run.run:
            c.handle(PeerPiece("far", index, digest(index), SIZE), NOW)
        c.handle(RunEnded("far", ()), NOW)
    c.handle(Announced(reply(rack_leases=(3,)), {}), NOW)
    assert peer_fetches(c.plan(NOW)) == {"far": {3}}
    assert c.ask(NOW).want_crossings == 0  # every piece we lack is on its way


def test_a_lease_on_a_piece_still_on_its_way_does_not_hold_back_asks_for_the_pieces_that_are_there() -> None:
    """The tracker leases ahead a piece another rack is fetching from the origin (core.scope_leases): until its
    holder offers it, it is no lease to start, and the pieces other racks hold are still asked for."""
    c = labelled_core("r1")
    hand_out_labelled(c, {"far": "r2"})
    c.handle(PeerHas("far", Bitfield.of(PIECES, [0, 1])), NOW)
    c.handle(Announced(reply(rack_leases=(3,)), {}), NOW)  # 3: on its way from the origin into rack r2
    assert peer_fetches(c.plan(NOW)) == {}
    assert c.ask(NOW).want_crossings == 2  # 0 and 1
    c.answered()
    c.handle(Announced(reply(rack_leases=(0, 1, 3)), {}), NOW)
    assert peer_fetches(c.plan(NOW)) == {"far": {0, 1}}
    c.handle(PeerHas("far", Bitfield.of(PIECES, [0, 1, 3])), NOW)
    assert peer_fetches(c.plan(NOW)) == {"far": {3}}  # the moment it is offered, without another ask


def test_pieces_are_leased_ahead_only_in_swarms_whose_peers_a_downloader_follows_all() -> None:
    assert AHEAD_SWARM == MAX_WATCHED_PEERS


def test_without_labels_every_peer_is_fetched_from_as_on_one_switch() -> None:
    c = core()
    c.book.learn_hashes({i: digest(i) for i in range(PIECES)})
    hand_out(c, "far")
    c.peers["far"].address = PeerAddress(peer_id="far", host="127.0.0.1", port=9, site="s", rack="r2")
    c.handle(PeerHas("far", Bitfield.of(PIECES, range(PIECES))), NOW)
    assert set().union(*peer_fetches(c.plan(NOW)).values()) == set(range(PIECES))
    assert c.ask(NOW).want_crossings == 0


def test_bytes_taken_in_are_counted_by_scope_and_announced() -> None:
    c = labelled_core("r1")
    addresses = [
        PeerAddress(peer_id="mate", host="127.0.0.1", port=9, site="s", rack="r1"),
        PeerAddress(peer_id="next", host="127.0.0.1", port=9, site="s", rack="r2"),
        PeerAddress(peer_id="away", host="127.0.0.1", port=9, site="t", rack="r1"),  # rack r1 of another site
    ]
    c.handle(Announced(msgspec.structs.replace(reply(leases=(3,)), peers=tuple(addresses)), {}), NOW)
    for index, source in enumerate(("mate", "next", "away")):
        c.handle(PeerPiece(source, index, digest(index), SIZE), NOW)
    c.handle(OriginPiece(3, digest(3), SIZE), NOW)
    assert c.ask(NOW).received == ScopeBytes(origin=SIZE, rack=SIZE, racks=SIZE, sites=SIZE)
    assert c.stats.from_peers == 3 * SIZE and c.stats.from_origin == SIZE


def test_without_labels_every_peer_byte_is_unlabelled() -> None:
    c = core()
    c.book.learn_hashes({i: digest(i) for i in range(PIECES)})
    hand_out(c, "p")
    c.peers["p"].address = PeerAddress(peer_id="p", host="127.0.0.1", port=9, site="s", rack="r2")
    c.handle(PeerPiece("p", 0, digest(0), SIZE), NOW)
    assert c.ask(NOW).received == ScopeBytes(unlabelled=SIZE)


def test_peers_across_a_boundary_we_may_take_nothing_from_make_room_for_rack_mates() -> None:
    """Every slot followed by peers of another rack holding every piece, none of which our scope leases let
    us take: a rack-mate handed out gets a slot (one of them is dropped), so the rack is not shut out of
    itself. One holding a piece we hold the lease of stays."""
    c = labelled_core("r1")
    hand_out_labelled(c, {f"far{i}": "r2" for i in range(MAX_WATCHED_PEERS)})
    for i in range(MAX_WATCHED_PEERS):
        c.handle(PeerHas(f"far{i}", Bitfield.of(PIECES, range(PIECES))), NOW)
    mate = (PeerAddress(peer_id="mate", host="127.0.0.1", port=9, site="s", rack="r1"),)
    # Piece 2 may cross (a rack lease of ours), and every far peer holds it: each is of use, none goes.
    c.handle(Announced(msgspec.structs.replace(reply(rack_leases=(2,)), peers=mate), {}), NOW)
    assert "mate" not in c.peers
    # The lease is gone (another peer of r1 took it over): the far peers offer nothing we may take.
    c.handle(Announced(msgspec.structs.replace(reply(rack_leases=()), peers=mate), {}), NOW)
    assert "mate" in c.peers and len(c.peers) == MAX_WATCHED_PEERS


# -- peers only (--no-origin) -----------------------------------------------------------------------------

PEERS_ONLY = replace(TUNING, origin=False)


def test_peers_only_asks_the_tracker_for_no_origin_leases() -> None:
    assert core(tuning=PEERS_ONLY).ask(NOW).want_leases == 0
    assert core().ask(NOW).want_leases > 0


def test_peers_only_ends_once_the_swarm_gave_nothing_for_the_patience() -> None:
    c = core(tuning=PEERS_ONLY)
    patience = PEERS_ONLY.tracker_patience
    c.handle(Announced(reply(), {}), NOW)  # nobody holds anything we need
    c.handle(Announced(reply(), {}), NOW + patience)  # waited the patience, not past it
    with pytest.raises(NoSwarmCopy, match="--no-origin forbids the origin"):
        c.handle(Announced(reply(), {}), NOW + patience + 1)


def test_peers_only_waits_for_as_long_as_a_peer_holds_what_it_needs() -> None:
    c = core(tuning=PEERS_ONLY)
    hand_out(c, "p")
    c.handle(PeerHas("p", Bitfield.of(PIECES, [0])), NOW)
    for later in (NOW, NOW + 10 * PEERS_ONLY.tracker_patience):
        c.handle(Announced(reply("p"), {}), later)
    assert c.starved_since is None


def test_peers_only_never_fetches_again_from_the_origin() -> None:
    with pytest.raises(NoSwarmCopy):
        core(tuning=PEERS_ONLY).refetch_from_origin([0])


def test_events_and_actions_are_immutable_values_built_without_dataclasses() -> None:
    """core.events' rule: every event and action is a frozen msgspec Struct (no dataclass methods compiled at
    import by every get), and still a value: equal and hashed by its fields, immutable, matched by position."""
    for kind in (*typing.get_args(Event), *typing.get_args(Action)):
        assert issubclass(kind, msgspec.Struct) and kind.__struct_config__.frozen, kind
        assert not dataclasses.is_dataclass(kind), kind
    run = FetchPeer("p", "http://p:1", [3, 4])
    assert run == FetchPeer("p", "http://p:1", [3, 4]) != FetchPeer("q", "http://p:1", [3, 4])
    assert hash(WakeAnnouncer(news=True)) == hash(WakeAnnouncer(True)) and WakeAnnouncer() != WakeHashes()
    with pytest.raises(AttributeError):
        run.peer_id = "q"  # type: ignore[misc]
    match OriginPiece(2, "d", 5):
        case OriginPiece(index, digest, size):
            assert (index, digest, size) == (2, "d", 5)
