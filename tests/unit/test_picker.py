"""Which pieces to fetch next, and as what runs (core.picker)."""

from __future__ import annotations

import random
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.bitfield import Bitfield
from shoal.core.picker import FetchLimits, FetchPlan, Holder, origin_run, peer_run, plan_fetches, run_pieces

SIZE = 40
index_sets = st.sets(st.integers(min_value=0, max_value=SIZE - 1))


def pick(needed: set[int], have: Bitfield, verifiable: set[int], max_pieces: int, rng: random.Random) -> list[int]:
    """peer_run on the masks the engine builds: needed & held by the peer & verifiable."""
    available = Bitfield.of(SIZE, needed).mask & have.mask & Bitfield.of(SIZE, verifiable).mask
    return peer_run(available, max_pieces, rng)


def test_peer_run_extends_while_everything_lines_up() -> None:
    have = Bitfield.of(SIZE, range(10, 20))
    run = pick({12, 13, 14, 15, 17}, have, set(range(SIZE)), 8, random.Random(0))
    assert run in ([12, 13, 14, 15], [13, 14, 15], [14, 15], [15], [17])


def test_peer_run_respects_the_maximum() -> None:
    have = Bitfield.full(SIZE)
    for seed in range(20):
        run = pick(set(range(SIZE)), have, set(range(SIZE)), 4, random.Random(seed))
        assert 1 <= len(run) <= 4


def test_peer_run_needs_a_known_hash() -> None:
    have = Bitfield.full(SIZE)
    assert pick({1, 2, 3}, have, {2}, 8, random.Random(0)) == [2]
    assert pick({1, 2, 3}, have, set(), 8, random.Random(0)) == []


def test_peer_run_empty_when_the_peer_has_nothing_we_need() -> None:
    assert pick({1, 2}, Bitfield.of(SIZE, [3, 4]), set(range(SIZE)), 8, random.Random(0)) == []


def test_peer_run_starts_are_spread() -> None:
    have = Bitfield.full(SIZE)
    starts = {pick(set(range(SIZE)), have, set(range(SIZE)), 1, random.Random(seed))[0] for seed in range(50)}
    assert len(starts) > 10


@given(index_sets, index_sets, index_sets, st.integers(min_value=1, max_value=10), st.integers())
def test_peer_run_properties(
    needed: set[int], peer_has: set[int], verifiable: set[int], max_pieces: int, seed: int
) -> None:
    run = pick(needed, Bitfield.of(SIZE, peer_has), verifiable, max_pieces, random.Random(seed))
    usable = needed & peer_has & verifiable
    assert bool(run) == bool(usable)
    assert set(run) <= usable
    assert len(run) <= max_pieces
    assert all(b == a + 1 for a, b in pairwise(run)), "one consecutive run"


def test_origin_run_takes_the_first_consecutive_stretch() -> None:
    assert origin_run([7, 3, 4, 5, 9], 10) == [3, 4, 5]
    assert origin_run([3, 4, 5, 6], 2) == [3, 4]
    assert origin_run([], 4) == []


@given(index_sets, st.integers(min_value=1, max_value=10))
def test_origin_run_properties(todo: set[int], max_pieces: int) -> None:
    run = origin_run(todo, max_pieces)
    if not todo:
        assert run == []
        return
    assert run[0] == min(todo)
    assert run == list(range(run[0], run[0] + len(run)))
    assert set(run) <= todo
    # It stops only at the limit or at a hole.
    assert len(run) == max_pieces or run[-1] + 1 not in todo


def test_run_pieces() -> None:
    assert run_pieces(1 << 20, 4 << 20) == 4
    assert run_pieces(1 << 20, (4 << 20) + 1) == 4
    assert run_pieces(16 << 20, 4 << 20) == 1


def test_lease_size_follows_the_origin_rate() -> None:
    from shoal.core.picker import MAX_LEASE_BYTES, lease_pieces

    piece = 512 * 1024
    assert lease_pieces(piece, 0.0, 2 << 20) == 4  # nothing measured yet: the minimum
    assert lease_pieces(piece, 3e6, 2 << 20) == 5  # a share of a slow link: about a second's worth
    assert lease_pieces(piece, 1e9, 2 << 20) == MAX_LEASE_BYTES // piece  # alone on a fast origin: capped


# -- what to start now (plan_fetches) ------------------------------------------------------------------

PIECE = 256 << 10
LIMITS = FetchLimits(run_bytes=4 * PIECE, origin_streams=1, peer_requests=8, per_peer_requests=2, lone_peer_requests=4)
ALL = (1 << SIZE) - 1


def mask(pieces: range | set[int] | list[int]) -> int:
    return Bitfield.of(SIZE, pieces).mask


def plan(**values: object) -> FetchPlan:
    args: dict[str, object] = {
        "piece_length": PIECE,
        "needed": ALL,
        "leases": (),
        "hashed": ALL,
        "origin_busy": 0,
        "range_ok": True,
        "holders": (),
        "peer_runs": 0,
        "limits": LIMITS,
        "rng": random.Random(0),
    }
    args.update(values)
    return plan_fetches(**args)  # type: ignore[arg-type]


def test_leased_pieces_go_to_the_origin_one_run_at_a_time_in_a_swarm() -> None:
    p = plan(leases={3, 4, 5, 9, 10})
    assert p.origin == [[3, 4, 5]] and p.peers == [] and not p.want_leases
    assert plan(leases={3, 4}, origin_busy=1).origin == [], "one origin run under way is the limit"


def test_straight_from_the_origin_several_runs_go_at_once() -> None:
    limits = FetchLimits(4 * PIECE, 4, 8, 2, 4)
    p = plan(leases=range(SIZE), limits=limits, direct=True)
    assert p.origin == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24)), list(range(24, 32))]
    assert not p.want_leases, "a download without a tracker asks for no leases"


def test_an_origin_that_ignores_range_gets_one_pass_over_every_leased_piece() -> None:
    assert plan(leases={1, 7, 30}, range_ok=False).origin == [[1, 7, 30]]


def test_peers_are_asked_in_the_trackers_order_within_their_limits() -> None:
    near, far = Holder("near", ALL, 0), Holder("far", ALL, 0)
    p = plan(holders=[near, far])
    assert [peer for peer, _ in p.peers] == ["near", "near", "far", "far"]
    assert all(len(run) <= 4 for _, run in p.peers)
    assert [peer for peer, _ in plan(holders=[near]).peers] == ["near"] * 4, "a lone peer is asked more"
    busy = plan(holders=[Holder("near", ALL, 1), far], peer_runs=7)
    assert [peer for peer, _ in busy.peers] == ["near"], "8 runs at once over all peers"


def test_a_peer_is_asked_only_for_pieces_we_can_verify_else_hashes_are_looked_up() -> None:
    p = plan(holders=[Holder("a", mask(range(8)), 0)], hashed=mask({2}))
    assert p.peers == [("a", [2])] and p.want_hashes
    assert not plan(holders=[Holder("a", mask(range(8)), 0)], needed=mask({2})).want_hashes


def test_leases_are_wanted_when_none_is_left_to_start() -> None:
    assert plan(leases=set(), needed=mask({5})).want_leases
    assert not plan(leases={5}, needed=mask({5})).want_leases
    assert not plan(needed=0).want_leases, "nothing missing"
    assert not plan(leases=set(), needed=mask({5}), holders=[Holder("a", ALL, 0)]).want_leases, "a peer has it"


@given(
    st.integers(0, ALL),
    index_sets,
    st.integers(0, ALL),
    st.lists(st.tuples(st.integers(0, ALL), st.integers(0, 3)), max_size=6),
    st.integers(0, 2**32),
)
def test_no_piece_is_planned_twice_or_from_a_source_that_cannot_give_it(
    needed: int, leases: set[int], hashed: int, peers: list[tuple[int, int]], seed: int
) -> None:
    holders = [Holder(f"p{n}", have, requests) for n, (have, requests) in enumerate(peers)]
    p = plan(
        needed=needed,
        leases=leases,
        hashed=hashed,
        holders=holders,
        peer_runs=sum(h.requests for h in holders),
        rng=random.Random(seed),
    )
    planned = [i for run in p.origin for i in run] + [i for _, run in p.peers for i in run]
    assert len(planned) == len(set(planned))
    assert all(needed >> i & 1 for i in planned)
    assert all(i in leases for run in p.origin for i in run)
    have = {h.peer_id: h.have for h in holders}
    assert all(have[peer] >> i & 1 and hashed >> i & 1 for peer, run in p.peers for i in run)
    assert len(p.peers) + sum(h.requests for h in holders) <= max(
        LIMITS.peer_requests, sum(h.requests for h in holders)
    )
