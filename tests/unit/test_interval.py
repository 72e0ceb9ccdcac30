"""The announce interval's rule (core.interval), with values: by the task's state, stretched by load."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.interval import RESTRETCH_SECONDS, Demand, Pacing

PACING = Pacing(busy=5.0, idle=60.0, longest=300.0, target=100.0, jitter=0.1, peer_ttl=15.0)


def test_a_seed_of_an_idle_task_comes_back_seldom_and_any_peer_of_a_busy_swarm_soon() -> None:
    assert PACING.nominal(seed=True, busy_swarm=False) == 60.0
    assert PACING.nominal(seed=True, busy_swarm=True) == 5.0
    assert PACING.nominal(seed=False, busy_swarm=True) == 5.0


def test_jitter_only_shortens_and_nothing_passes_the_longest() -> None:
    assert PACING.interval(60.0, 1.0, 0.0) == 60.0
    assert PACING.interval(60.0, 1.0, 0.999) == pytest.approx(60.0 * (1 - 0.1 * 0.999))
    assert PACING.interval(60.0, 10.0, 0.0) == 300.0
    draws = [PACING.interval(5.0, 2.0, random.Random(n).random()) for n in range(200)]
    assert all(9.0 <= d <= 10.0 for d in draws) and len(set(draws)) > 100  # spread: peers do not synchronise


def test_a_peers_ttl_follows_its_interval_never_below_the_peer_ttl() -> None:
    assert PACING.ttl(5.0) == 15.0
    assert PACING.ttl(4.6) == 15.0  # a busy interval shortened by jitter
    assert PACING.ttl(60.0) == 180.0  # a seed told 60 s is not expired at 15 s


def test_no_stretch_under_the_target_or_without_one() -> None:
    assert PACING.stretch({5.0: 100, 60.0: 1000}) == 1.0  # about 41 announces a second
    assert Pacing(target=0.0).stretch({5.0: 1_000_000}) == 1.0


def test_the_stretch_is_the_smallest_that_meets_the_target() -> None:
    counts = {5.0: 1000, 60.0: 5000}  # at stretch 1: 200 + 83 a second, over the jitter's worst case
    stretch = PACING.stretch(counts)
    assert stretch > 1.0
    assert PACING.offered(counts, stretch) <= PACING.target
    assert PACING.offered(counts, stretch * 0.999) > PACING.target


def test_a_target_no_interval_can_meet_puts_everyone_at_the_longest() -> None:
    counts = {5.0: 100_000}
    stretch = PACING.stretch(counts)
    assert PACING.interval(5.0, stretch, 0.0) == PACING.longest


@pytest.mark.parametrize(
    "fields",
    [
        {"busy": 0.0},
        {"busy": 10.0, "idle": 5.0},
        {"idle": 600.0, "longest": 300.0},
        {"target": -1.0},
        {"jitter": 1.0},
        {"peer_ttl": 0.0},
    ],
)
def test_a_rule_that_cannot_hold_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Pacing(**fields)


@settings(max_examples=200, deadline=None)
@given(
    busy=st.floats(0.5, 30.0),
    idle_factor=st.floats(1.0, 20.0),
    longest_factor=st.floats(1.0, 20.0),
    target=st.floats(1.0, 5000.0),
    downloaders=st.integers(0, 20_000),
    seeds=st.integers(0, 50_000),
    seed=st.integers(0, 2**32),
)
def test_the_rate_the_intervals_handed_out_imply_stays_under_the_target(
    busy: float,
    idle_factor: float,
    longest_factor: float,
    target: float,
    downloaders: int,
    seeds: int,
    seed: int,
) -> None:
    idle = busy * idle_factor
    pacing = Pacing(busy=busy, idle=idle, longest=idle * longest_factor, target=target, peer_ttl=busy * 3)
    counts = Counter({busy: downloaders})
    counts[idle] += seeds  # the same key when idle == busy
    stretch = pacing.stretch(counts)
    rng = random.Random(seed)
    # Every peer is told an interval with a draw of its own; in the steady state each comes back once per
    # interval, so the tracker is offered the sum of their inverses.
    offered = downloaders * _mean_rate(pacing, busy, stretch, rng) + seeds * _mean_rate(pacing, idle, stretch, rng)
    everyone_at_longest = (downloaders + seeds) / (pacing.longest * (1 - pacing.jitter))
    if everyone_at_longest <= target:
        assert offered <= target * (1 + 1e-9)
    else:  # the target cannot be met: nobody is told to come back later than the longest interval
        for nominal, peers in counts.items():
            assert not peers or pacing.interval(nominal, stretch, 0.0) == pytest.approx(pacing.longest)


def _mean_rate(pacing: Pacing, nominal: float, stretch: float, rng: random.Random, draws: int = 64) -> float:
    """The worst of a few draws' rates: each peer draws its own, so none may exceed the bound."""
    return max(1 / pacing.interval(nominal, stretch, rng.random()) for _ in range(draws))


def test_demand_counts_live_peers_by_their_nominal_interval() -> None:
    demand: Demand[str] = Demand(PACING)
    demand.heard("a", 5.0, due=100.0)
    demand.heard("b", 5.0, due=100.0)
    demand.heard("c", 60.0, due=1000.0)
    assert demand.counts == {5.0: 2, 60.0: 1} and len(demand) == 3
    demand.heard("a", 60.0, due=1000.0)  # a finished: a seed now
    assert demand.counts == {5.0: 1, 60.0: 2}
    demand.left("b")
    assert demand.counts == {60.0: 2}
    demand.left("b")  # twice: nothing more
    assert demand.counts == {60.0: 2}


def test_demand_forgets_a_peer_once_its_ttl_passes_unheard_of() -> None:
    demand: Demand[str] = Demand(PACING)
    demand.heard("a", 5.0, due=15.0)
    demand.heard("b", 60.0, due=180.0)
    demand.heard("a", 5.0, due=30.0)  # announced again: due later
    assert demand.expire(20.0) == 0 and len(demand) == 2
    assert demand.expire(30.0) == 1 and demand.counts == {60.0: 1}
    assert demand.expire(179.0) == 0
    assert demand.expire(180.0) == 1 and len(demand) == 0


def test_demand_keeps_one_heap_entry_per_peer_however_often_it_announces() -> None:
    demand: Demand[str] = Demand(PACING)
    for n in range(1000):
        demand.heard("a", 5.0, due=15.0 + n)
    assert len(demand._due) == 1
    assert demand.expire(500.0) == 0 and len(demand._due) == 1
    assert demand.expire(1014.0) == 1


def test_demand_stretches_as_peers_come_and_is_worked_out_again_each_second() -> None:
    demand: Demand[int] = Demand(PACING)
    assert demand.stretch(0.0) == 1.0
    for key in range(2000):  # 400 a second at the busy interval: four times the target and more
        demand.heard(key, 5.0, due=15.0)
    assert demand.stretch(0.5) == 1.0  # not yet worked out again
    stretch = demand.stretch(RESTRETCH_SECONDS)
    assert stretch > 4.0
    assert demand.offered(RESTRETCH_SECONDS) <= PACING.target
    assert demand.stretch(15.0) == 1.0  # every one expired
