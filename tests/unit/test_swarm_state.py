"""core.swarm: the aggregates kept announce by announce equal those of a swarm built afresh, and the
indexed hand-out equals the plain one (core.handout)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.announce import decide_announce
from shoal.core.announce_values import AnnounceOutcome, PeerRecord
from shoal.core.bitfield import Bitfield
from shoal.core.handout import WALK_BUDGET, HolderIndex, PeerView, hand_out, locality_tier
from shoal.core.leases import Lease
from shoal.core.swarm import RARE_POWER, Census, PieceCounts, RareHolders, Swarm
from shoal.core.task_snapshot import TaskSnapshot

from .factories import IDENTITY, NOW, PIECES, POLICY, TASK_ID, bits, peer, request, task, view


def rebuilt(swarm: Swarm) -> Swarm:
    return Swarm.of(
        swarm.peers.values(),
        swarm.leases,
        generation=swarm.generation,
        size=swarm.size,
        now=0.0,
        ttl=float("inf"),
        asker="",
    )


def holders_of(swarm: Swarm) -> list[tuple[object, ...]]:
    return [(h.position, h.peer_id, h.site, h.rack, h.view, h.mask) for h in swarm.index._all]


def assert_consistent(swarm: Swarm) -> None:
    again = rebuilt(swarm)
    assert swarm._counts.levels == again._counts.levels
    assert swarm.leased == again.leased and swarm.leases == again.leases
    assert holders_of(swarm) == holders_of(again) and swarm.accused_by == again.accused_by
    for holder in swarm.index._all:  # a walk reads each holder's view and pieces where it stands
        assert holder.view is swarm.peers[holder.peer_id].view
        assert holder.address is swarm.address(holder.view), "a hand-out names a holder by its current address"
        assert holder.mask == swarm.counted(swarm.peers[holder.peer_id])
    assert swarm.racks == again.racks  # the racks sharing the origin (core.scope_leases.origin_share)
    assert swarm.lease_scopes == again.lease_scopes  # the lease holders of each scope (core.leases)
    assert swarm.seeds == again.seeds  # the swarm's state for the announce interval (core.interval)
    assert swarm.rare is None, "a swarm of a few peers keeps no rare holders: its hand-outs walk it whole"
    assert set(swarm._addresses) == set(swarm.peers), "hand-outs' addresses are kept for live peers only"
    for record in swarm.peers.values():
        assert swarm.addresses([record.view]) == (swarm.address(record.view),)
    for peer_id in swarm.peers:
        assert swarm.own(peer_id) == again.own(peer_id)
        assert swarm.held_by_others(peer_id) == again.held_by_others(peer_id)
        others = [r for r in swarm.peers.values() if r.view.peer_id != peer_id]
        expected = 0
        for r in others:
            expected |= swarm.counted(r)
        assert swarm.held_by_others(peer_id) == expected


def test_a_census_counts_the_peers_and_seeds_of_the_swarms_attached_to_it() -> None:
    census = Census()
    first, second = Swarm(1, PIECES), Swarm(1, PIECES)
    first._set("s1", peer("s1", have=range(PIECES)))
    first.attach(census)  # what it holds already counts
    assert (census.peers, census.seeds) == (1, 1)
    second.attach(census)
    second._set("d1", peer("d1", have={0}))
    second._set("s2", peer("s2", have=range(PIECES)))
    assert (census.peers, census.seeds) == (3, 2)
    second.retain(2, PIECES, 0)  # a new generation: every bitfield emptied, no seed left
    assert (census.peers, census.seeds) == (3, 1)
    first.expire(NOW + 10 * POLICY.peer_ttl, POLICY.peer_ttl)
    assert (census.peers, census.seeds) == (2, 0)
    second.detach()
    second.detach()  # twice: taken out once
    assert (census.peers, census.seeds) == (0, 0)
    second._set("d2", peer("d2", generation=2))  # detached: no longer counted
    assert (census.peers, census.seeds) == (0, 0)


def assert_rare_holders_exact(rare: RareHolders, holdings: dict[str, int], counts: PieceCounts) -> None:
    """Every piece fewer than 2**power peers hold is kept, and every kept piece names exactly its holders."""
    assert not ~rare.kept & ~counts.at_least(rare.power) & counts.held()
    size = max((h.bit_length() for h in holdings.values()), default=0)
    for piece in range(size):
        if rare.kept >> piece & 1:
            exact = {p for p, have in holdings.items() if have >> piece & 1}
            assert rare._holders.get(piece, set()) == exact


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sets(st.integers(0, 11), max_size=12)), max_size=60))
def test_rare_holders_stay_exact_as_counts_cross_the_thresholds(steps: list[tuple[str, set[int]]]) -> None:
    # power 1: a piece is rare under 2 holders, given up at 4, taken back under 2 again; eight peers cross
    # those thresholds back and forth.
    counts, holdings = PieceCounts(), dict.fromkeys("abcdefgh", 0)
    rare = RareHolders(12, counts, holdings.items(), power=1)
    for peer_id, pieces in steps:
        was, now = holdings[peer_id], sum(1 << i for i in pieces)
        counts.remove(was & ~now)
        counts.add(now & ~was)
        rare.update(peer_id, was, now, counts, lambda: list(holdings.items()))
        holdings[peer_id] = now
        assert_rare_holders_exact(rare, holdings, counts)


@given(st.lists(st.tuples(st.booleans(), st.sets(st.integers(0, 40), max_size=8)), max_size=30))
def test_bit_sliced_counts_match_plain_counts(steps: list[tuple[bool, set[int]]]) -> None:
    counts, plain = PieceCounts(), [0] * 41
    for adding, pieces in steps:
        if not adding:
            pieces = {i for i in pieces if plain[i] > 0}
        mask = sum(1 << i for i in pieces)
        if adding:
            counts.add(mask)
        else:
            counts.remove(mask)
        for i in pieces:
            plain[i] += 1 if adding else -1
        assert counts.held() == sum(1 << i for i, c in enumerate(plain) if c > 0)
        assert counts.once() == sum(1 << i for i, c in enumerate(plain) if c == 1)


peer_ids = st.sampled_from([f"p{n}" for n in range(8)])
labels = st.sampled_from(["", "a", "b"])
pieces = st.sets(st.integers(0, PIECES - 1), max_size=PIECES)


@st.composite
def announces(draw: st.DrawFn) -> dict[str, object]:
    done = draw(st.sets(st.integers(0, PIECES - 1), max_size=2))
    return {
        "peer_id": draw(peer_ids),
        "bitfield": bits(draw(pieces)).encode(),
        "done": {i: f"{i:x}".ljust(64, "0") for i in done},
        "released": tuple(draw(st.sets(st.integers(0, PIECES + 2), max_size=2))),
        "fetching": tuple(draw(st.sets(st.integers(0, PIECES - 1), max_size=2))),
        "want_leases": draw(st.integers(0, 3)),
        "bad_peers": tuple(draw(st.sets(peer_ids, max_size=1))),
        "event": draw(st.sampled_from(["update", "update", "update", "stopped"])),
        "site": draw(labels),
        "rack": draw(labels),
        "host": draw(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"])),
        "port": draw(st.sampled_from([7000, 7001])),  # a peer restarted on another port: a new address
        "advance": draw(st.sampled_from([0.0, 1.0, 11.0])),
    }


@given(st.lists(announces(), max_size=25))
def test_a_swarm_kept_announce_by_announce_is_one_built_afresh(steps: list[dict[str, object]]) -> None:
    record = task()
    swarm = Swarm(record.generation, PIECES)
    census = Census()
    swarm.attach(census)
    now = NOW
    for step in steps:
        now += float(step.pop("advance"))  # type: ignore[arg-type]
        swarm.expire(now, POLICY.peer_ttl)
        assert (census.peers, census.seeds) == (len(swarm.peers), swarm.seeds)
        host = str(step.pop("host"))
        req = request(origin=IDENTITY, **step)
        snapshot = TaskSnapshot(record, swarm.peers.values(), swarm.leases, {}, (1 << PIECES) - 1, swarm=swarm)
        outcome = decide_announce(snapshot, req, task_id=TASK_ID, seen_host=host, now=now, policy=POLICY)
        # The same decision on plain values (the swarm built afresh by the decision itself).
        plain = TaskSnapshot(record, list(swarm.peers.values()), dict(swarm.leases), {}, (1 << PIECES) - 1)
        again = decide_announce(plain, req, task_id=TASK_ID, seen_host=host, now=now, policy=POLICY)
        assert outcome.response == again.response and outcome.put_leases == again.put_leases
        if outcome.response is not None and outcome.peer is not None and outcome.response.manifest_message:
            # The peers named through the index's holders are those the hand-out gives, named one by one.
            limit, asker = POLICY.max_peers, outcome.peer.view
            named = swarm.addresses(swarm.hand_out(asker, limit))
            assert swarm.hand_out_addresses(asker, limit) == named
        record = outcome.task
        swarm.apply(outcome)
        assert_consistent(swarm)
        assert (census.peers, census.seeds) == (len(swarm.peers), swarm.seeds)


def walked_lease_holders(swarm: Swarm, asker: PeerView, checks: int) -> int:
    """Swarm.lease_holders as a pass over every lease holder: the live peers other than the asker with the
    asker's labels and a lease on a piece not under check."""
    count = 0
    for peer_id in {lease.peer_id for lease in swarm.leases.values()} - {asker.peer_id}:
        record = swarm.peers.get(peer_id)
        own = sum(1 << lease.piece for lease in swarm.leases.values() if lease.peer_id == peer_id)
        if record is not None and own & ~checks:
            count += (record.view.site, record.view.rack) == (asker.site, asker.rack)
    return count


lease_peers = st.sampled_from(["p0", "p1", "p2", "p3"])


@st.composite
def lease_changes(draw: st.DrawFn) -> tuple[str, str, int, str, str]:
    """(what, peer, piece, site, rack): a peer announces (with these labels) or stops, a lease is put, dropped
    or given back, time passes (peers and leases lapse), or a new generation drops every lease."""
    what = draw(st.sampled_from(["announce", "announce", "stop", "put", "put", "put", "drop", "give", "wait", "new"]))
    return what, draw(lease_peers), draw(st.integers(0, 7)), draw(labels), draw(labels)


@given(st.lists(lease_changes(), max_size=40), st.lists(st.sets(st.integers(0, 7), max_size=3), max_size=2))
def test_lease_holders_counted_by_scope_are_those_a_walk_finds(
    changes: list[tuple[str, str, int, str, str]], under_check: list[set[int]]
) -> None:
    """The count of each scope's lease holders, kept as leases, peers and labels change, gives what a pass
    over the holders gives, for every asker (each peer and one outside the swarm, under any labels: its
    record's or new ones) and pieces under check."""
    swarm = Swarm(1, PIECES)
    now = NOW
    askers = [view(p, site=site, rack=rack) for p in ["p0", "p1", "p2", "p3", "new"] for site in "ab" for rack in "ab"]
    askers += [view(p, site=site) for p in ["p0", "new"] for site in ["", "a"]]
    checks = [0, *(sum(1 << i for i in pieces) for pieces in under_check)]
    for what, peer_id, piece, site, rack in changes:
        record = task(generation=swarm.generation)
        if what == "announce":
            swarm.apply(AnnounceOutcome(task=record, peer=peer(peer_id, site=site, rack=rack, last_seen=now)))
        elif what == "stop":
            swarm.apply(AnnounceOutcome(task=record, remove_peer=peer_id))
        elif what == "put":  # a lease may come before its holder's record (Swarm.of: the asker's leases)
            swarm.apply(AnnounceOutcome(task=record, put_leases=[Lease(piece, peer_id, now + 20.0)]))
        elif what == "drop":
            swarm.apply(AnnounceOutcome(task=record, drop_leases=[piece]))
        elif what == "give":
            swarm.give_back(Lease(piece, peer_id, now + 20.0))
        elif what == "wait":
            now += 15.0
            swarm.expire(now, POLICY.peer_ttl)
        else:
            swarm.retain(swarm.generation + 1, PIECES, 0)
        assert all(swarm.lease_scopes.values()), "a scope without holders is no key"
        for asker in askers:
            for mask in checks:
                assert swarm.lease_holders(asker, mask) == walked_lease_holders(swarm, asker, mask)


@st.composite
def holdings(draw: st.DrawFn, *, scattered: int) -> set[int]:
    """Pieces a peer holds: a run from the first piece (a swarm fills its file front to back) and a few more."""
    return set(range(draw(st.integers(0, PIECES)))) | draw(st.sets(st.integers(0, PIECES - 1), max_size=scattered))


@st.composite
def holders(draw: st.DrawFn) -> list:  # type: ignore[type-arg]
    return [
        view(f"h{n}", have=draw(holdings(scattered=4)), site=draw(labels), rack=draw(labels))
        for n in range(draw(st.integers(0, 14)))
    ]


@given(holders(), holdings(scattered=6), labels, labels, st.integers(0, 10), st.sampled_from(["asker", "h0", "h1"]))
def test_the_indexed_hand_out_is_the_plain_one(  # type: ignore[type-arg]
    peers: list, have: set[int], site: str, rack: str, limit: int, asker_id: str
) -> None:
    """Whatever the pieces (each holder's run from the first piece, the asker's first missing piece) and
    whether the asker is itself indexed (one of the holders, as in its swarm) or not."""
    asker = view(asker_id, have=have, site=site, rack=rack)
    index = HolderIndex()
    for p in peers:
        if p.have.mask:
            index.put(p, p.have.mask)
    assert index.hand_out(asker, limit) == hand_out(asker, peers, limit)
    for p in peers[::2]:
        index.discard(p.peer_id)
    rest = [p for p in peers[1::2]]
    assert index.hand_out(asker, limit) == hand_out(asker, rest, limit)
    # A holder's next view (its next announce: other pieces, other labels) replaces the one it was indexed by.
    moved = [replace(p, have=Bitfield.of(PIECES, [0]), rack=p.rack + "x") for p in rest[::2]]
    for p in moved:
        index.put(p, p.have.mask)
    now_held = [*moved, *rest[1::2]]
    assert index.hand_out(asker, limit) == hand_out(asker, now_held, limit)


def big_swarm(holders: int, *, rare_holders: int, size: int = 64) -> Swarm:
    """``holders`` peers that hold every piece but the last, and ``rare_holders`` more that hold only the last."""
    records = [PeerRecord(view(f"h{n}", have=range(size - 1), size=size), 1, NOW) for n in range(holders)]
    records += [PeerRecord(view(f"r{n}", have=[size - 1], size=size), 1, NOW) for n in range(rare_holders)]
    return Swarm.of(records, {}, generation=1, size=size, now=NOW, ttl=30.0, asker="")


def test_a_swarm_keeps_rare_holders_only_while_larger_than_a_walk() -> None:
    swarm = big_swarm(WALK_BUDGET, rare_holders=5)
    assert swarm.rare is not None
    assert_rare_holders_exact(swarm.rare, {p: swarm.counted(r) for p, r in swarm.peers.items()}, swarm._counts)
    for n in range(WALK_BUDGET // 2):
        swarm._set(f"h{n}", None)
    assert swarm.rare is not None, "kept until the swarm is down to half a walk"
    for n in range(WALK_BUDGET // 2, WALK_BUDGET):
        swarm._set(f"h{n}", None)
    assert swarm.rare is None


@given(st.integers(1, 2**RARE_POWER - 1), st.floats(0.0, 1.0, exclude_max=True))
def test_a_large_swarm_hands_out_the_few_holders_of_what_the_asker_lacks(rare_holders: int, draw: float) -> None:
    swarm = big_swarm(4 * WALK_BUDGET, rare_holders=rare_holders)
    asker = view("asker", have=range(63), size=64)
    handed = swarm.hand_out(asker, 8, draw)
    assert len(handed) == min(rare_holders, 8)
    assert all(p.peer_id.startswith("r") for p in handed)


def test_a_large_swarm_hand_out_looks_at_a_bounded_number_of_peers() -> None:
    swarm = big_swarm(8 * WALK_BUDGET, rare_holders=3)
    looked: list[str] = []
    view_of = swarm.view_of

    def counting(peer_id: str):  # type: ignore[no-untyped-def]
        looked.append(peer_id)
        return view_of(peer_id)

    swarm.view_of = counting  # type: ignore[method-assign]
    asker = view("asker", have=range(63), size=64)
    handed = swarm.hand_out(asker, 8, 0.5)
    assert sorted(p.peer_id for p in handed) == ["r0", "r1", "r2"]
    # One tier (no labels): one walk of WALK_BUDGET peers, then the three holders of the rare piece.
    assert swarm.index.looked == WALK_BUDGET
    assert len(looked) <= 3


def test_a_large_swarm_hands_out_nearest_first_and_only_useful_peers() -> None:
    records = [
        PeerRecord(view(f"p{n}", have=[n % 64], size=64, site="s", rack=f"r{n % 4}"), 1, NOW)
        for n in range(4 * WALK_BUDGET)
    ]
    swarm = Swarm.of(records, {}, generation=1, size=64, now=NOW, ttl=30.0, asker="")
    asker = view("asker", have=range(1, 64), size=64, site="s", rack="r0")
    handed = swarm.hand_out(asker, 16, 0.25)
    # Piece 0 is held by p0, p64, p128...: all in rack r0, the asker's.
    assert len(handed) == 16
    assert all(p.have.mask & 1 and locality_tier(asker, p) == 0 for p in handed)
