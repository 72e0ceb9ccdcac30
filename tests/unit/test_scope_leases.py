"""Scope leases (core.scope_leases): each piece crosses each rack's and each site's boundary once."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.bitfield import Bitfield
from shoal.core.handout import PeerView
from shoal.core.leases import stripes
from shoal.core.scope_leases import (
    Crossings,
    LeaseKey,
    Scope,
    ScopeLease,
    allowed_mask,
    crossing,
    crossings_of,
    drop_dead,
    drop_delivered,
    grant_scope_leases,
    origin_share,
    rack_scope,
    renew,
    site_scope,
)

from .factories import view

SIZE = 16
NOW = 100.0
TTL = 30.0
STALE = 10.0
R1 = Scope("rack", "s1", "r1")
R2 = Scope("rack", "s1", "r2")
S1 = Scope("site", "s1")
ALL = (1 << SIZE) - 1


def node(peer_id: str, site: str = "s1", rack: str = "r1", have: Iterable[int] = (), bad: bool = False) -> PeerView:
    return view(peer_id, have=have, size=SIZE, site=site, rack=rack, bad=bad)


def _bits(mask: int) -> Bitfield:
    return Bitfield.from_mask(SIZE, mask)


def table(*leases: ScopeLease) -> dict[LeaseKey, ScopeLease]:
    return {lease.key: lease for lease in leases}


def lease(piece: int, scope: Scope, peer_id: str, granted: float = NOW, expires: float = NOW + TTL) -> ScopeLease:
    return ScopeLease(piece, scope, peer_id, granted, expires)


def grant(
    asker: PeerView,
    peers: list[PeerView],
    leases: Mapping[LeaseKey, ScopeLease] | None = None,
    want: int = 4,
    arriving: Mapping[int, str] | None = None,
) -> list[ScopeLease]:
    return grant_scope_leases(
        asker=asker,
        peers=peers,
        leases=leases or {},
        want=want,
        now=NOW,
        ttl=TTL,
        stale_after=STALE,
        arriving=arriving,
    )


def pieces(granted: list[ScopeLease], scope: Scope) -> list[int]:
    return [g.piece for g in granted if g.scope == scope]


# -- scopes and boundaries ---------------------------------------------------------------------------


def test_scopes_of_labelled_and_flat_peers() -> None:
    assert rack_scope(node("a")) == R1
    assert site_scope(node("a")) == S1
    assert rack_scope(node("a", site="")) == Scope("rack", "", "r1"), "a rack without a site: one implicit site"
    assert site_scope(node("a", site="")) is None
    assert rack_scope(node("a", rack="")) is None, "no rack label: flat"
    assert rack_scope(node("a", site="s2")) != R1, "a rack label means something only in its site"


def test_crossings_between_peers() -> None:
    me = node("me")
    assert crossing(me, node("x")) is None
    assert crossing(me, node("x", rack="r2")) == "rack"
    assert crossing(me, node("x", site="s2")) == "site"
    assert crossing(me, node("x", site="", rack="r1")) == "site", "an unlabelled site is not mine"
    assert crossing(me, node("x", rack="")) is None, "a flat holder: no boundary known"
    assert crossing(node("me", rack=""), node("x", site="s2")) is None, "a flat asker trades as before"
    assert crossing(node("me", site=""), node("x", site="s2", rack="r9")) == "rack", "no site of mine: racks only"


# -- allowed_mask ------------------------------------------------------------------------------------


def test_inside_the_rack_everything_the_holder_has() -> None:
    assert allowed_mask(node("me"), node("x"), 0b1111, Crossings()) == 0b1111


def test_across_racks_only_rack_leased_pieces() -> None:
    assert allowed_mask(node("me"), node("x", rack="r2"), 0b1111, Crossings(rack=0b0110)) == 0b0110


def test_across_sites_only_pieces_leased_at_both_boundaries() -> None:
    crossings = Crossings(rack=0b0111, site=0b1100)
    assert allowed_mask(node("me"), node("x", site="s2"), 0b1111, crossings) == 0b0100


def test_flat_peers_fetch_and_are_fetched_freely() -> None:
    assert allowed_mask(node("me", rack=""), node("x", site="s2"), 0b1111, Crossings()) == 0b1111
    assert allowed_mask(node("me"), node("x", site="", rack=""), 0b1111, Crossings()) == 0b1111


def test_crossings_of_a_peer() -> None:
    leases = [lease(1, R1, "me"), lease(3, R1, "me"), lease(3, S1, "me"), lease(2, R1, "other")]
    assert crossings_of(leases, "me") == Crossings(rack=0b1010, site=0b1000)
    assert crossings_of(leases, "nobody") == Crossings()


# -- grants ------------------------------------------------------------------------------------------


def test_a_piece_held_in_another_rack_of_the_site_is_rack_leased() -> None:
    me = node("me", have=[0])
    granted = grant(me, [me, node("x", rack="r2", have=[0, 1, 2])])
    assert granted == [lease(1, R1, "me"), lease(2, R1, "me")]


def test_pieces_in_the_site_come_before_pieces_only_in_other_sites() -> None:
    me = node("me")
    far = node("far", site="s2", have=[0, 1, 2, 3])
    near = node("near", rack="r2", have=[5, 6])
    granted = grant(me, [far, near], want=3)
    assert pieces(granted, R1) == [5, 6, 0]
    assert pieces(granted, S1) == [0], "the piece from another site takes the site lease too"


def test_lowest_pieces_first_so_leases_form_runs() -> None:
    holder = node("x", rack="r2", have=range(SIZE))
    first = grant(node("a"), [holder])
    second = grant(node("b"), [holder, node("a")], table(*first))
    assert (pieces(first, R1), pieces(second, R1)) == ([0, 1, 2, 3], [4, 5, 6, 7])


def test_pieces_in_reach_are_not_leased() -> None:
    me = node("me", have=[0])
    peers = [
        me,
        node("mate", have=[1]),
        node("flat", site="", rack="", have=[2]),
        node("x", rack="r2", have=[0, 1, 2, 3]),
    ]
    assert pieces(grant(me, peers), R1) == [3]


def test_a_piece_on_its_way_from_the_origin_into_another_rack_of_the_site_is_leased_ahead() -> None:
    me, mate = node("me"), node("mate")
    x, y = node("x", rack="r2", have=[0]), node("y", rack="r2")
    granted = grant(me, [me, mate, x, y], arriving={3: "y", 1: "x"}, want=4)
    # Held pieces first, then those on their way, lowest first.
    assert granted == [lease(0, R1, "me"), lease(1, R1, "me"), lease(3, R1, "me")]
    assert grant(me, [me, mate, x, y], arriving={3: "y"}, want=1) == [lease(0, R1, "me")]


def test_no_lease_ahead_for_a_piece_on_its_way_into_our_rack_another_site_or_to_a_flat_or_bad_peer() -> None:
    me, mate = node("me"), node("mate")
    far, flat, bad = node("far", site="s2", rack="r2"), node("flat", site="", rack=""), node("bad", rack="r2", bad=True)
    arriving = {0: "me", 1: "mate", 2: "far", 3: "flat", 4: "bad", 5: "gone"}
    assert grant(me, [me, mate, far, flat, bad], arriving=arriving, want=8) == []


def test_a_piece_on_its_way_is_not_leased_ahead_twice_in_a_rack() -> None:
    me, mate, x = node("me"), node("mate"), node("x", rack="r2")
    held = table(lease(2, R1, "mate"))
    assert grant(me, [me, mate, x], held, arriving={2: "x", 3: "x"}) == [lease(3, R1, "me")]


def test_pieces_only_in_other_sites_come_before_pieces_on_their_way() -> None:
    me, x = node("me"), node("x", rack="r2")
    far = node("far", site="s2", have=[6])
    granted = grant(me, [me, x, far], arriving={1: "x"}, want=1)
    assert granted == [lease(6, R1, "me"), lease(6, S1, "me")]


def test_pieces_held_by_nobody_are_origin_leases_not_scope_leases() -> None:
    assert grant(node("me"), [node("mate")]) == []


def test_nothing_wanted_nothing_granted() -> None:
    assert grant(node("me"), [node("x", rack="r2", have=[0])], want=0) == []


def test_a_flat_asker_gets_no_scope_lease() -> None:
    assert grant(node("me", site="", rack=""), [node("x", rack="r2", have=[0])]) == []


def test_bad_peers_pieces_do_not_count() -> None:
    me = node("me")
    peers = [node("liar", have=[0, 1], bad=True), node("x", rack="r2", have=[0, 1, 2])]
    assert pieces(grant(me, peers), R1) == [0, 1, 2], "a bad mate's pieces are not in reach"
    assert grant(me, [node("liar", rack="r2", have=[0], bad=True)]) == [], "nor are a bad holder's to lease"


def test_a_live_lease_of_a_rack_mate_blocks_the_piece() -> None:
    mate = node("mate")
    leases = table(lease(0, R1, "mate"))
    assert pieces(grant(node("me"), [mate, node("x", rack="r2", have=[0, 1])], leases), R1) == [1]


def test_a_lease_in_another_rack_does_not_block() -> None:
    other = node("other", rack="r3")
    leases = table(lease(0, Scope("rack", "s1", "r3"), "other"))
    assert pieces(grant(node("me"), [other, node("x", rack="r2", have=[0])], leases), R1) == [0]


def test_a_dead_or_lapsed_holders_lease_is_granted_again() -> None:
    holder = node("x", rack="r2", have=[0, 1])
    mate = node("mate")
    leases = table(lease(0, R1, "gone"), lease(1, R1, "mate", expires=NOW))
    assert pieces(grant(node("me"), [holder, mate], leases), R1) == [0, 1]


def test_a_stale_lease_is_taken_over_by_another_peer_of_the_rack() -> None:
    """A rack whose lease holder stalls does not wait for it forever."""
    holder = node("x", rack="r2", have=[0])
    old = lease(0, R1, "mate", granted=NOW - STALE)
    granted = grant(node("me"), [holder, node("mate")], table(old))
    assert granted == [lease(0, R1, "me")]


def test_a_fresh_lease_is_not_taken_over() -> None:
    young = lease(0, R1, "mate", granted=NOW - STALE + 1)
    assert grant(node("me"), [node("x", rack="r2", have=[0]), node("mate")], table(young)) == []


def test_a_stale_lease_is_never_granted_afresh_to_its_own_holder() -> None:
    me = node("me")
    old = lease(0, R1, "me", granted=NOW - 3 * STALE)
    assert grant(me, [node("x", rack="r2", have=[0, 1])], table(old)) == [lease(1, R1, "me")]


def test_a_rack_lease_holder_takes_back_its_pieces_stale_site_lease() -> None:
    """A peer holding a piece's rack lease whose site lease went stale and passed to a site-mate of another
    rack: once that one is stale too (its holder stalls but keeps announcing), the site lease comes back to
    the peer, alone (the rack lease it holds is not granted twice)."""
    far = node("far", site="s2", have=[0])
    mate = node("n", rack="r2")
    leases = table(lease(0, R1, "me", granted=NOW - 3 * STALE), lease(0, S1, "n", granted=NOW - STALE))
    assert grant(node("me"), [far, mate], leases) == [lease(0, S1, "me")]
    fresh = table(lease(0, R1, "me", granted=NOW - 3 * STALE), lease(0, S1, "n", granted=NOW - 1))
    assert grant(node("me"), [far, mate], fresh) == []


def test_one_fetch_per_site_from_another_site() -> None:
    """A piece held only in another site whose site lease a peer of another rack of my site holds: left for
    that rack, and fetched from it across racks once it is there."""
    far = node("far", site="s2", have=[0, 1])
    neighbour = node("n", rack="r2")
    leases = table(lease(0, Scope("rack", "s1", "r2"), "n"), lease(0, S1, "n"))
    granted = grant(node("me"), [far, neighbour], leases)
    assert (pieces(granted, R1), pieces(granted, S1)) == ([1], [1])


def test_a_stale_site_lease_is_taken_over_by_another_rack() -> None:
    far = node("far", site="s2", have=[0])
    neighbour = node("n", rack="r2")
    old = NOW - STALE
    leases = table(lease(0, Scope("rack", "s1", "r2"), "n", granted=old), lease(0, S1, "n", granted=old))
    granted = grant(node("me"), [far, neighbour], leases)
    assert granted == [lease(0, R1, "me"), lease(0, S1, "me")]


def test_without_a_site_label_every_other_rack_is_one_crossing() -> None:
    me = node("me", site="")
    granted = grant(me, [node("x", site="s2", rack="r5", have=[0])])
    assert granted == [lease(0, Scope("rack", "", "r1"), "me")]


# -- liveness of the table ---------------------------------------------------------------------------


def test_renew_moves_the_expiry_of_the_announcers_leases_only() -> None:
    mine, theirs = lease(0, R1, "me", granted=50.0, expires=60.0), lease(1, R1, "mate", expires=60.0)
    renewed = renew(table(mine, theirs), "me", NOW, TTL)
    assert renewed[mine.key] == lease(0, R1, "me", granted=50.0, expires=NOW + TTL), "granted is kept"
    assert renewed[theirs.key] == theirs


def test_drop_dead_drops_silent_and_lapsed_holders() -> None:
    kept, gone, lapsed = lease(0, R1, "me"), lease(1, R1, "gone"), lease(2, R1, "mate", expires=NOW)
    assert drop_dead(table(kept, gone, lapsed), live_ids=["me", "mate"], now=NOW) == table(kept)


def test_a_lease_is_done_once_a_peer_of_its_scope_holds_the_piece() -> None:
    rack_done = lease(0, R1, "me")
    site_done = lease(1, S1, "me")
    waiting = lease(2, R1, "me")
    other_rack = lease(3, R1, "me")
    peers = [node("mate", have=[0]), node("n", rack="", have=[1]), node("x", rack="r2", have=[2, 3])]
    left = drop_delivered(table(rack_done, site_done, waiting, other_rack), peers)
    assert left == table(waiting, other_rack), "a piece in another rack has not crossed into mine"


def test_a_bad_peers_copy_does_not_end_a_lease() -> None:
    pending = lease(0, R1, "me")
    assert drop_delivered(table(pending), [node("liar", have=[0], bad=True)]) == table(pending)


# -- properties --------------------------------------------------------------------------------------

LABELS = st.tuples(st.sampled_from(["", "s1", "s2"]), st.sampled_from(["", "r1", "r2"]))
MASKS = st.integers(min_value=0, max_value=ALL)
State = tuple[PeerView, list[PeerView], dict[LeaseKey, ScopeLease]]
"""An asker, the task's live peers (the asker first) and the tracker's table of scope leases."""


@st.composite
def tracker_states(draw: st.DrawFn) -> State:
    """An asker, the live peers and a table of leases (some of peers gone, lapsed or stale)."""
    labels = draw(st.lists(LABELS, min_size=1, max_size=8))
    peers = [
        PeerView(f"p{i}", "10.0.0.1", 7000, site, rack, _bits(draw(MASKS)), bad=draw(st.booleans()) and i > 0)
        for i, (site, rack) in enumerate(labels)
    ]
    holders = [p.peer_id for p in peers] + ["gone"]
    scopes = [s for p in peers for s in (rack_scope(p), site_scope(p)) if s is not None]
    leases: dict[LeaseKey, ScopeLease] = {}
    if scopes:
        entries = st.tuples(
            st.sampled_from(scopes),
            st.integers(0, SIZE - 1),
            st.sampled_from(holders),
            st.floats(NOW - 2 * STALE, NOW),
            st.floats(NOW - 1, NOW + TTL),
        )
        for scope, piece, holder, granted, expires in draw(st.lists(entries, max_size=2 * SIZE)):
            leases[(scope, piece)] = ScopeLease(piece, scope, holder, granted, expires)
    return peers[0], peers, leases


def assert_replaces_only_spent(
    granted: list[ScopeLease], leases: Mapping[LeaseKey, ScopeLease], live: set[str], now: float, stale_after: float
) -> None:
    """Granted leases are one a key, and take the place only of leases that are gone (holder dead, lapsed) or
    stale and another peer's: a piece is never leased to two peers of one scope at once."""
    assert len({g.key for g in granted}) == len(granted)
    for g in granted:
        before = leases.get(g.key)
        in_force = before is not None and before.peer_id in live and before.expires > now
        assert before is None or (before.peer_id != g.peer_id and (not in_force or before.stale(now, stale_after))), (
            f"{g} replaces a lease still in force: {before}"
        )


ARRIVING = st.dictionaries(st.integers(0, SIZE - 1), st.sampled_from([f"p{i}" for i in range(8)] + ["gone"]))
"""Origin leases, piece -> holder (some of them peers that are gone)."""


@settings(max_examples=300, deadline=None)
@given(tracker_states(), st.integers(0, SIZE), ARRIVING)
def test_property_never_two_live_leases_of_one_scope_and_piece(
    state: State, want: int, arriving: dict[int, str]
) -> None:
    asker, peers, leases = state
    granted = grant(asker, peers, leases, want=want, arriving=arriving)
    assert sum(g.scope.kind == "rack" for g in granted) <= want
    assert_replaces_only_spent(granted, leases, {p.peer_id for p in peers}, NOW, STALE)


@settings(deadline=None)
@given(tracker_states(), st.integers(1, SIZE), ARRIVING)
def test_property_no_grant_for_a_piece_in_reach(state: State, want: int, arriving: dict[int, str]) -> None:
    asker, peers, leases = state
    granted = grant(asker, peers, leases, want=want, arriving=arriving)
    by_id = {p.peer_id: p for p in peers}
    for g in granted:
        sources = [p for p in peers if not p.bad and p.peer_id != asker.peer_id and g.piece in p.have]
        assert g.piece not in asker.have
        assert all(crossing(asker, p) is not None for p in sources), f"piece {g.piece} is held in reach"
        if not sources:
            # Nobody holds it: only a piece on its way from the origin into another rack of our site.
            fetcher = by_id.get(arriving.get(g.piece, ""))
            assert fetcher is not None and not fetcher.bad, "a piece nobody holds or fetches is an origin lease"
            assert crossing(asker, fetcher) == "rack" and g.scope.kind == "rack"
        if g.scope.kind == "site":
            assert sources and all(crossing(asker, p) == "site" for p in sources), "only pieces held outside the site"


@settings(deadline=None)
@given(LABELS, LABELS, MASKS, MASKS, MASKS, tracker_states())
def test_property_flat_peers_trade_as_before(
    mine: tuple[str, str],
    theirs: tuple[str, str],
    have: int,
    rack: int,
    site: int,
    state: State,
) -> None:
    flat, holder = node("me", site=mine[0], rack=""), node("x", site=theirs[0], rack=theirs[1])
    assert allowed_mask(flat, holder, have, Crossings(rack, site)) == have
    assert allowed_mask(holder, flat, have, Crossings(rack, site)) == have
    asker, peers, leases = state
    assert grant(flat, [asker, *peers], leases, want=SIZE) == []


# -- a simulated swarm -------------------------------------------------------------------------------


STALE_ROUNDS = 4.0


@dataclass
class SimPeer:
    view: PeerView
    stalled: bool
    """Never completes a fetch across a boundary (a stalled link or source), but keeps announcing."""
    dies_at: int | None


@st.composite
def swarms(draw: st.DrawFn) -> tuple[list[SimPeer], int]:
    """Peers with random labels and pieces, some stalled or dying, and a seed that holds every piece."""
    count = draw(st.integers(1, 9))
    sim = []
    for i in range(count):
        site, rack = draw(LABELS)
        have = _bits(draw(MASKS) if i else ALL)
        sim.append(
            SimPeer(
                PeerView(f"p{i}", "10.0.0.1", 7000, site, rack, have),
                stalled=i > 0 and draw(st.booleans()),
                dies_at=draw(st.none() | st.integers(0, 30)) if i else None,
            )
        )
    return sim, draw(st.integers(0, 2**32))


def _members(peers: list[PeerView], scope: Scope) -> list[PeerView]:
    return [p for p in peers if scope in (rack_scope(p), site_scope(p))]


def _fetch(peer: SimPeer, others: list[PeerView], leases: Iterable[ScopeLease], rng: random.Random) -> None:
    """Fetch what the peer may from every holder, nearest first (the hand-out's order), and check that a
    piece crosses into a scope only when no peer of that scope holds it."""
    me = peer.view
    crossings = crossings_of(leases, me.peer_id)
    slow = peer.stalled or rng.random() < 0.3  # across boundaries: stalled for good, or slow this round
    order = {None: 0, "rack": 1, "site": 2}
    for holder in sorted(others, key=lambda h: order[crossing(me, h)]):
        boundary = crossing(me, holder)
        if boundary is not None and slow:
            continue
        for piece in list(holder.have):
            if piece in me.have or not allowed_mask(me, holder, 1 << piece, crossings):
                continue
            entered = [] if boundary is None else [rack_scope(me)] + ([site_scope(me)] if boundary == "site" else [])
            for scope in entered:
                assert scope is not None
                assert not any(piece in p.have for p in _members(others, scope)), f"{piece} entered {scope} twice"
            me.have.add(piece)


@settings(max_examples=60, deadline=None)
@given(swarms())
def test_property_every_rack_gets_every_piece_each_crossing_once(swarm: tuple[list[SimPeer], int]) -> None:
    """Rounds of announces and fetches, with stalled and dying peers: each piece crosses into a scope only
    while no peer of it holds the piece, and every rack with a live peer that is not stalled ends with
    every piece (so does every flat peer)."""
    sim, seed = swarm
    rng = random.Random(seed)
    leases: dict[LeaseKey, ScopeLease] = {}
    for rnd in range(400):
        now = float(rnd)
        alive = [p for p in sim if p.dies_at is None or p.dies_at > rnd]
        views = [p.view for p in alive]
        if rnd >= 4 * STALE_ROUNDS and all(p.view.have.complete for p in _served(alive)):
            break  # after a few rounds, so that stalled peers' leases go stale and are taken over
        for peer in rng.sample(alive, len(alive)):
            leases = drop_delivered(drop_dead(leases, live_ids=[v.peer_id for v in views], now=now), views)
            leases = renew(leases, peer.view.peer_id, now, 3.0)
            granted = grant_scope_leases(
                asker=peer.view,
                peers=views,
                leases=leases,
                want=rng.randint(1, 4),
                now=now,
                ttl=3.0,
                stale_after=STALE_ROUNDS,
            )
            assert_replaces_only_spent(granted, leases, {v.peer_id for v in views}, now, STALE_ROUNDS)
            leases.update((g.key, g) for g in granted)
            _fetch(peer, [v for v in views if v is not peer.view], leases.values(), rng)
    for peer in _served(alive):
        assert peer.view.have.complete, f"{peer.view.peer_id} in {rack_scope(peer.view)} lacks pieces"


def _served(alive: list[SimPeer]) -> list[SimPeer]:
    """The peers that must end with every piece: flat ones, and those of a rack with a live peer that is
    not stalled (a rack of stalled peers only never fetches across its boundary)."""
    working = {rack_scope(p.view) for p in alive if not p.stalled}
    return [p for p in alive if rack_scope(p.view) is None or rack_scope(p.view) in working]


# The origin's pieces shared out among racks (origin_share, core.leases.stripes).


def racks_of(peers: list[PeerView]) -> list[tuple[str, str]]:
    """What core.swarm.Swarm.racks keeps for these peers: the labels of the labelled ones not banned."""
    return [(p.site, p.rack) for p in peers if p.rack and not p.bad]


def test_racks_share_the_origin_in_stripes_in_the_order_of_their_labels() -> None:
    peers = [node("a", rack="r2"), node("b", rack="r1"), node("c", site="s0", rack="r9")]
    # Racks in (site, rack) order: s0/r9, s1/r1, s1/r2.
    assert origin_share(peers[0], racks_of(peers), SIZE) == stripes(SIZE, 2, 3)
    assert origin_share(peers[1], racks_of(peers), SIZE) == stripes(SIZE, 1, 3)
    assert origin_share(peers[2], racks_of(peers), SIZE) == stripes(SIZE, 0, 3)


def test_no_share_for_a_flat_asker_or_a_task_of_one_rack() -> None:
    rack_mates = [node("a"), node("b")]
    assert origin_share(rack_mates[0], racks_of(rack_mates), SIZE) is None
    flat = node("f", site="", rack="")
    assert origin_share(flat, racks_of([flat, node("x", rack="r2")]), SIZE) is None
    # A flat peer is no rack: one labelled rack beside it is still a task of one rack.
    assert origin_share(rack_mates[0], racks_of([*rack_mates, flat]), SIZE) is None


def test_a_bad_peers_rack_gets_no_share() -> None:
    asker = node("a", rack="r1")
    assert origin_share(asker, racks_of([asker, node("b", rack="r2", bad=True)]), SIZE) is None
