"""Which pieces to fetch next, and as what runs (core.picker)."""

from __future__ import annotations

import random
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.bitfield import Bitfield
from shoal.core.picker import origin_run, peer_run, run_pieces

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
