"""Origin leases (core.leases): each free piece goes to one peer at a time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import pairwise

from hypothesis import example, given
from hypothesis import strategies as st

from shoal.core.bitfield import Bitfield, iter_bits
from shoal.core.leases import FLAT_LEASE_HOLDERS, RACK_LEASE_HOLDERS, STRIPE, Lease, grant_free, grant_leases, stripes

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
    range_ok: bool = True,
    size: int = SIZE,
) -> list[int]:
    return grant_leases(
        held=Bitfield.of(size, held),
        leased=leased or {},
        asker=asker,
        asker_have=Bitfield.of(size, have),
        want=want,
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
    assert grant(held=[3], want=10) == [0, 1, 2]


def test_each_run_starts_at_the_lowest_free_piece() -> None:
    """Peers that start together take the first runs in turn: the swarm fills the file front to back."""
    first = grant("a", want=4)
    second = grant("b", leased=lease_map("a", first), want=4)
    third = grant("a", leased=lease_map("a", first) | lease_map("b", second), want=4)
    assert (first, second, third) == ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11])


def test_a_hole_before_the_frontier_is_leased_first() -> None:
    # Pieces 2..3 were leased to a peer that fell silent (its leases are gone): they come before 12..
    held = [0, 1, *range(4, 12)]
    assert grant(held=held, want=4) == [2, 3]


def test_the_askers_own_pieces_are_skipped() -> None:
    assert grant(have=[0, 1], leased=lease_map("b", [2]), want=3) == [3, 4, 5]


def test_everything_held_or_leased_grants_nothing() -> None:
    assert grant(held=range(16), leased=lease_map("b", range(16, SIZE))) == []


def test_peers_asking_in_turn_get_disjoint_pieces() -> None:
    leased: dict[int, Lease] = {}
    for n in range(12):
        asker = f"p{n}"
        granted = grant(asker, leased=leased, want=3)
        free = sorted(set(range(SIZE)) - set(leased))
        assert len(granted) == min(3, len(free))
        assert granted[:1] == free[:1]
        assert not set(granted) & set(leased)
        leased |= lease_map(asker, granted)
    # 32 pieces in runs of 3: ten full runs, then the last two pieces; the twelfth asker finds none.
    assert len({lease.peer_id for lease in leased.values()}) == 11 and len(leased) == SIZE


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
    """A sequence of (peer, action, amount) steps by up to five peers."""
    peer = st.sampled_from(["p0", "p1", "p2", "p3", "p4"])
    action = st.sampled_from(["ask", "ask", "ask", "finish", "expire"])
    step = st.tuples(peer, action, st.integers(min_value=0, max_value=12))
    return draw(st.lists(step, min_size=1, max_size=60))


@given(asks(), st.booleans())
def test_no_piece_is_ever_leased_twice(steps: list[tuple[str, str, int]], range_ok: bool) -> None:
    """Peers ask, finish pieces and fall silent in any order; no live lease ever overlaps another."""
    held = Bitfield(SIZE)
    have = {p: Bitfield(SIZE) for p in ("p0", "p1", "p2", "p3", "p4")}
    leased: dict[int, Lease] = {}
    for peer, action, amount in steps:
        mine = sorted(i for i, lease in leased.items() if lease.peer_id == peer)
        if action == "finish":
            for index in mine[:amount]:
                del leased[index]
                have[peer].add(index)
                held.add(index)
        elif action == "expire":
            for index in mine:
                del leased[index]
        else:
            granted = grant_leases(
                held=held,
                leased=leased,
                asker=peer,
                asker_have=have[peer],
                want=amount,
                range_ok=range_ok,
            )
            assert len(set(granted)) == len(granted)
            assert not set(granted) & set(leased), "a piece leased to two peers"
            assert not any(i in held for i in granted), "a held piece leased"
            if range_ok:
                assert len(granted) <= amount
                assert all(b == a + 1 for a, b in pairwise(granted)), "one consecutive run"
                free = [i for i in range(SIZE) if i not in leased and i not in held and i not in have[peer]]
                assert granted[:1] == free[:1] if amount else not granted, "not the lowest free piece"
            leased |= lease_map(peer, granted)


def _ask_and_finish(steps: list[tuple[int, str]], *, size: int, racks: int) -> None:
    """Numbered peers ask for origin leases and finish in the order of ``steps``, peer n in rack n % ``racks``
    (0: no rack labels). Never more peers of one scope than its cap (RACK_LEASE_HOLDERS a rack,
    FLAT_LEASE_HOLDERS without labels) hold leases at once, and while fewer do, an asker of the scope gets a
    free piece when there is one."""
    cap = RACK_LEASE_HOLDERS if racks else FLAT_LEASE_HOLDERS

    def scope(number: int) -> int:
        return number % racks if racks else 0

    taken = 0  # every piece granted so far: leased now, or fetched by a peer that has finished
    leased: dict[int, int] = {}  # piece -> the number of the peer holding its lease
    for number, action in steps:
        if action == "finish":
            leased = {index: holder for index, holder in leased.items() if holder != number}
            continue
        mates = {holder for holder in leased.values() if holder != number and scope(holder) == scope(number)}
        granted = grant_free(
            size=size,
            taken=taken,
            others_lease=bool(leased),
            want=2,
            range_ok=True,
            rack_holders=len(mates) if racks else 0,
            flat_holders=0 if racks else len(mates),
        )
        if len(mates) >= cap:
            assert granted == []
        elif taken.bit_count() < size:
            assert granted, "an asker below the cap got nothing while pieces were free"
        for index in granted:
            leased[index] = number
            taken |= 1 << index
        holders = Counter(scope(holder) for holder in set(leased.values()))
        assert max(holders.values(), default=0) <= cap


@given(
    st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["ask", "ask", "ask", "finish"])), min_size=12, max_size=120)
)
@example([(number % 8, "ask") for number in range(70)])  # the whole file taken while eight peers hold leases
def test_at_most_rack_lease_holders_per_rack_and_an_asker_below_it_gets_a_free_piece(
    steps: list[tuple[int, str]],
) -> None:
    """Twelve peers in two racks: the rack's cap (_ask_and_finish)."""
    _ask_and_finish(steps, size=128, racks=2)


@given(
    st.lists(
        st.tuples(st.integers(0, FLAT_LEASE_HOLDERS + 7), st.sampled_from(["ask", "ask", "ask", "finish"])),
        min_size=FLAT_LEASE_HOLDERS,
        max_size=160,
    )
)
def test_at_most_flat_lease_holders_without_rack_labels_and_an_asker_below_it_gets_a_free_piece(
    steps: list[tuple[int, str]],
) -> None:
    """FLAT_LEASE_HOLDERS + 8 peers without rack labels: the flat cap (_ask_and_finish)."""
    _ask_and_finish(steps, size=256, racks=0)


# A fleet of racks: the origin's pieces shared out in stripes (core.leases.stripes).


def test_stripes_deal_runs_of_stripe_pieces_to_the_racks_in_turn() -> None:
    assert STRIPE == 4
    assert list(iter_bits(stripes(20, 0, 2))) == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]
    assert list(iter_bits(stripes(20, 1, 2))) == [4, 5, 6, 7, 12, 13, 14, 15]
    assert list(iter_bits(stripes(10, 2, 3))) == [8, 9]
    assert stripes(3, 1, 2) == 0  # a file shorter than one stripe is the first rack's


@given(st.integers(min_value=0, max_value=600), st.integers(min_value=1, max_value=9))
def test_the_racks_shares_cover_the_file_once(size: int, count: int) -> None:
    shares = [stripes(size, i, count) for i in range(count)]
    assert sum(shares) == (1 << size) - 1, "a piece in no share, or in two"
    assert all(not a & b for i, a in enumerate(shares) for b in shares[i + 1 :])
    counts = [m.bit_count() for m in shares]
    assert max(counts) - min(counts) <= STRIPE


def test_a_rack_is_leased_its_own_stripes_lowest_first() -> None:
    share = stripes(SIZE, 1, 2)
    held = Bitfield.of(SIZE, [4])
    assert grant_leases(
        held=held, leased={}, asker="a", asker_have=Bitfield(SIZE), want=6, range_ok=True, share=share
    ) == [5, 6, 7, 12, 13, 14]


def test_a_rack_whose_stripes_are_taken_helps_from_the_back_of_the_file() -> None:
    share = stripes(SIZE, 0, 2)  # pieces 0-3, 8-11, 16-19, 24-27
    leased = lease_map("b", [i for i in range(SIZE) if share >> i & 1])
    leased |= lease_map("c", [29])
    got = grant_leases(
        held=Bitfield(SIZE), leased=leased, asker="a", asker_have=Bitfield(SIZE), want=5, range_ok=True, share=share
    )
    assert got == [28, 30, 31, 20, 21]  # the highest stripe's free pieces, then the next one down


def test_a_share_does_not_change_the_lease_of_an_origin_without_range() -> None:
    got = grant_leases(
        held=Bitfield(8), leased={}, asker="a", asker_have=Bitfield(8), want=2, range_ok=False, share=stripes(8, 1, 2)
    )
    assert got == list(range(8))
