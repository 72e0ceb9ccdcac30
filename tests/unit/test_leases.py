"""Origin leases (core.leases): each free piece goes to one peer at a time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.bitfield import Bitfield
from shoal.core.leases import Lease, grant_leases

SIZE = 32


def lease_map(owner: str, pieces: Iterable[int], expires: float = 100.0) -> dict[int, Lease]:
    return {i: Lease(i, owner, expires) for i in pieces}


def grant(
    asker: str = "a",
    *,
    held: Iterable[int] = (),
    leased: Mapping[int, Lease] | None = None,
    have: Iterable[int] = (),
    want: int = 4,
    after: int | None = None,
    range_ok: bool = True,
    size: int = SIZE,
) -> list[int]:
    return grant_leases(
        held=Bitfield.of(size, held),
        leased=leased or {},
        asker=asker,
        asker_have=Bitfield.of(size, have),
        want=want,
        after=after,
        range_ok=range_ok,
    )


def test_first_asker_starts_at_the_beginning() -> None:
    assert grant(want=4) == [0, 1, 2, 3]


def test_nothing_wanted_nothing_granted() -> None:
    assert grant(want=0) == []


def test_held_leased_and_own_pieces_are_never_granted() -> None:
    granted = grant(held=[0, 1], leased=lease_map("b", [2, 3]), have=[4], want=SIZE)
    assert granted and not set(granted) & {0, 1, 2, 3, 4}


def test_run_stops_at_the_first_piece_that_is_not_free() -> None:
    assert grant(held=[3], after=0, want=10) == [0, 1, 2]


def test_second_asker_starts_mid_gap_behind_the_first() -> None:
    first = grant("a", want=4)
    second = grant("b", leased=lease_map("a", first), want=4)
    # The free gap is 4..31 and someone streams towards it from piece 3: start in its middle.
    assert second == [18, 19, 20, 21]


def test_untouched_gap_is_started_at_its_beginning() -> None:
    # Largest gap 10..31 follows a held piece, not a leased one: nobody streams towards it.
    assert grant(held=[9], leased=lease_map("b", [0]), want=2) == [10, 11]


def test_largest_gap_wins_and_ties_go_to_the_earlier_gap() -> None:
    assert grant(held=range(4, 10), want=1, size=16) == [10]
    assert grant(held=range(4, 8), want=1, size=12) == [0]


def test_continuation_after_the_previous_run() -> None:
    leased = lease_map("b", [0, 1, 2, 3]) | lease_map("a", [18, 19])
    assert grant("a", leased=leased, after=20, want=3) == [20, 21, 22]


def test_continuation_falls_back_when_the_next_piece_is_taken() -> None:
    leased = lease_map("b", [0, 1, 2, 3, 20])
    assert grant("a", leased=leased, after=20, want=2) == [12, 13]


def test_out_of_range_after_is_ignored() -> None:
    assert grant(after=SIZE, want=2) == [0, 1]
    assert grant(after=-1, want=2) == [0, 1]


def test_everything_held_or_leased_grants_nothing() -> None:
    assert grant(held=range(16), leased=lease_map("b", range(16, SIZE))) == []


def test_peers_asking_in_turn_get_disjoint_pieces() -> None:
    leased: dict[int, Lease] = {}
    for n in range(12):
        asker = f"p{n}"
        granted = grant(asker, leased=leased, want=3)
        # Splitting a gap mid-way may leave a shorter run, never an empty one while pieces are free.
        assert 1 <= len(granted) <= 3
        assert not set(granted) & set(leased)
        leased |= lease_map(asker, granted)
    assert len({lease.peer_id for lease in leased.values()}) == 12


def test_without_range_support_one_peer_leases_everything() -> None:
    granted = grant("a", held=[5], have=[6], want=2, range_ok=False)
    assert granted == [i for i in range(SIZE) if i not in (5, 6)]
    leased = lease_map("a", granted)
    assert grant("b", leased=leased, want=4, range_ok=False) == []
    # Once a's lease has lapsed (the caller passes only live leases), another peer takes over.
    assert grant("b", want=4, range_ok=False) == list(range(SIZE))


def test_without_range_support_the_holder_may_ask_again() -> None:
    leased = lease_map("a", range(10))
    assert grant("a", leased=leased, want=1, range_ok=False) == list(range(10, SIZE))


@st.composite
def asks(draw: st.DrawFn) -> list[tuple[str, str, int, bool]]:
    """A sequence of (peer, action, amount, continue) steps by up to five peers."""
    peer = st.sampled_from(["p0", "p1", "p2", "p3", "p4"])
    action = st.sampled_from(["ask", "ask", "ask", "finish", "expire"])
    step = st.tuples(peer, action, st.integers(min_value=0, max_value=12), st.booleans())
    return draw(st.lists(step, min_size=1, max_size=60))


@given(asks(), st.booleans())
def test_no_piece_is_ever_leased_twice(steps: list[tuple[str, str, int, bool]], range_ok: bool) -> None:
    """Peers ask, finish pieces and fall silent in any order; no live lease ever overlaps another."""
    held = Bitfield(SIZE)
    have = {p: Bitfield(SIZE) for p in ("p0", "p1", "p2", "p3", "p4")}
    leased: dict[int, Lease] = {}
    last_end: dict[str, int] = {}
    for peer, action, amount, keep_going in steps:
        mine = sorted(i for i, lease in leased.items() if lease.peer_id == peer)
        if action == "finish":
            for index in mine[:amount]:
                del leased[index]
                have[peer].add(index)
                held.add(index)
        elif action == "expire":
            for index in mine:
                del leased[index]
            last_end.pop(peer, None)
        else:
            after = last_end.get(peer) if keep_going else None
            granted = grant_leases(
                held=held,
                leased=leased,
                asker=peer,
                asker_have=have[peer],
                want=amount,
                after=after,
                range_ok=range_ok,
            )
            assert len(set(granted)) == len(granted)
            assert not set(granted) & set(leased), "a piece leased to two peers"
            assert not any(i in held for i in granted), "a held piece leased"
            if range_ok:
                assert len(granted) <= amount
                assert all(b == a + 1 for a, b in pairwise(granted)), "one consecutive run"
            leased |= lease_map(peer, granted)
            if granted:
                last_end[peer] = granted[-1] + 1
