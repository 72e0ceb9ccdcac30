"""Peer hand-out (core.handout): useful peers, nearest first, bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.handout import PeerView, hand_out, locality_tier

from .factories import PIECES, view

ASKER = view("me", have=[0], site="s1", rack="r1")


def ids(peers: list[PeerView]) -> list[str]:
    return [p.peer_id for p in peers]


def test_same_rack_then_site_then_elsewhere() -> None:
    peers = [
        view("far", have=[1], site="s2", rack="r1"),
        view("site", have=[1], site="s1", rack="r2"),
        view("rack", have=[1], site="s1", rack="r1"),
        view("nolabel", have=[1]),
    ]
    assert ids(hand_out(ASKER, peers, 10))[:2] == ["rack", "site"]
    assert set(ids(hand_out(ASKER, peers, 10))[2:]) == {"far", "nolabel"}


def test_locality_tiers() -> None:
    assert locality_tier(ASKER, view("x", site="s1", rack="r1")) == 0
    assert locality_tier(ASKER, view("x", site="s1", rack="r9")) == 1
    assert locality_tier(ASKER, view("x", site="s9", rack="r1")) == 2, "a rack label is only meaningful in its site"
    unlabelled = view("me")
    assert locality_tier(unlabelled, view("x")) == 2, "empty labels never match"
    assert locality_tier(view("me", site="s1"), view("x", site="s1")) == 1
    # Racks without a site label: racks of one implicit site, as the scope leases draw them.
    assert locality_tier(view("me", rack="r1"), view("x", rack="r1")) == 0
    assert locality_tier(view("me", rack="r1"), view("x", rack="r2")) == 2
    assert locality_tier(view("me", rack="r1"), view("x", site="s1", rack="r1")) == 2


def test_never_the_asker_never_bad_only_useful() -> None:
    peers = [
        view("me", have=[1, 2]),
        view("bad", have=[1, 2], bad=True),
        view("same", have=[0]),
        view("empty"),
        view("useful", have=[0, 5]),
    ]
    assert ids(hand_out(ASKER, peers, 10)) == ["useful"]


def test_bounded() -> None:
    peers = [view(f"p{n}", have=[1]) for n in range(20)]
    assert len(hand_out(ASKER, peers, 8)) == 8
    assert hand_out(ASKER, peers, 0) == []


def test_order_is_stable_per_asker_and_spreads_across_askers() -> None:
    peers = [view(f"p{n}", have=[1]) for n in range(10)]
    assert ids(hand_out(ASKER, peers, 3)) == ids(hand_out(ASKER, list(reversed(peers)), 3))
    firsts = {hand_out(view(f"asker{n}"), peers, 1)[0].peer_id for n in range(20)}
    assert len(firsts) > 3, "askers should not all be sent to the same holder"


labels = st.sampled_from(["", "a", "b"])


@st.composite
def swarms(draw: st.DrawFn) -> tuple[PeerView, list[PeerView]]:
    pieces = st.sets(st.integers(min_value=0, max_value=PIECES - 1), max_size=6)
    asker = view("asker", have=draw(pieces), site=draw(labels), rack=draw(labels))
    others = [
        view(f"p{n}", have=draw(pieces), site=draw(labels), rack=draw(labels), bad=draw(st.booleans()))
        for n in range(draw(st.integers(min_value=0, max_value=12)))
    ]
    return asker, [*others, asker]


@given(swarms(), st.integers(min_value=0, max_value=15))
def test_hand_out_properties(swarm: tuple[PeerView, list[PeerView]], limit: int) -> None:
    asker, peers = swarm
    handed = hand_out(asker, peers, limit)
    eligible = [p for p in peers if p is not asker and not p.bad and set(p.have) - set(asker.have)]
    assert len(handed) == min(limit, len(eligible))
    assert all(p in eligible for p in handed)
    tiers = [locality_tier(asker, p) for p in handed]
    assert tiers == sorted(tiers)
    # Bounding drops the farthest peers first.
    if handed:
        assert all(locality_tier(asker, p) >= tiers[-1] for p in eligible if p not in handed)
