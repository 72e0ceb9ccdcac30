"""Which tasks a tracker gives away to level the load of a cluster (core.balance)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.balance import MAX_PLACEMENTS, Balancing, moves, settled, unused
from shoal.core.ownership import HEARTBEAT

EVEN = Balancing(floor=1.0)


def test_a_member_near_the_mean_keeps_its_tasks() -> None:
    loads = {"a": 105.0, "b": 95.0}
    assert moves("a", loads, {"t1": 5.0, "t2": 100.0}, EVEN) == []


def test_a_member_below_the_floor_keeps_its_tasks_however_uneven() -> None:
    loads = {"a": 40.0, "b": 0.0}
    assert moves("a", loads, {"t1": 10.0, "t2": 30.0}) == [], "20/s over the mean is under the default floor"
    assert moves("a", loads, {"t1": 10.0, "t2": 30.0}, EVEN) == [("t1", "b")]


def test_the_busiest_tasks_that_fit_go_first_and_one_busier_than_the_budget_stays() -> None:
    # One swarm busier than half the load and smaller tasks, all on a: the swarm stays (moving it would only
    # make b the busy one), the others move, busiest first.
    rates = {"swarm": 600.0, **{f"small{i:02}": 10.0 for i in range(40)}, "mid": 150.0, "tiny": 1.0}
    placed = moves("a", {"a": sum(rates.values()), "b": 0.0}, rates, Balancing(max_moves=100))
    assert placed == [("mid", "b"), *((f"small{i:02}", "b") for i in range(40)), ("tiny", "b")]


def test_the_target_is_the_least_loaded_member() -> None:
    loads = {"a": 300.0, "b": 100.0, "c": 20.0}
    placed = moves("a", loads, {f"t{i}": 10.0 for i in range(30)}, EVEN)
    assert {target for _, target in placed} == {"c"}
    assert sum(10.0 for _ in placed) == 140.0 - 20.0, "up to the target's room under the mean"


def test_members_over_the_mean_share_the_targets_room() -> None:
    loads = {"a": 300.0, "b": 300.0, "c": 0.0}
    placed = moves("a", loads, {f"t{i}": 10.0 for i in range(30)}, EVEN)
    assert len(placed) == 10, "half of c's 200/s room: b gives the other half in its own round"


def test_a_round_moves_at_most_max_moves_and_ties_go_by_key() -> None:
    rates = {f"t{i:02}": 1.0 for i in range(50)}
    placed = moves("a", {"a": 50.0, "b": 0.0}, rates, Balancing(floor=1.0, max_moves=3))
    assert placed == [("t00", "b"), ("t01", "b"), ("t02", "b")]


def test_a_member_that_does_not_give_keeps_everything() -> None:
    assert moves("a", {"a": 500.0, "b": 0.0}, {"t": 1.0}, Balancing(gives=False)) == []


def test_nothing_is_placed_while_the_database_holds_the_most_placements() -> None:
    assert moves("a", {"a": 500.0, "b": 0.0}, {"t": 1.0}, EVEN, placements=MAX_PLACEMENTS) == []
    assert moves("a", {"a": 500.0, "b": 0.0}, {"t": 1.0}, EVEN, placements=MAX_PLACEMENTS - 1) == [("t", "b")]


def test_alone_or_idle_tasks_nothing_moves() -> None:
    assert moves("a", {"a": 500.0}, {"t": 1.0}, EVEN) == []
    assert moves("a", {"a": 500.0, "b": 0.0}, {"t": 0.0}, EVEN) == [], "a task with no requests levels nothing"


loads_strategy = st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 5000), min_size=2)
rates_strategy = st.lists(st.floats(0.1, 500), max_size=80)


@given(loads_strategy, rates_strategy)
def test_a_round_never_overshoots(loads: dict[str, float], rates: list[float]) -> None:
    """The giver ends at least at the mean and the target at most at it, so no task comes back at once."""
    me = max(loads, key=lambda m: (loads[m], m))
    tasks = {f"t{i}": rate for i, rate in enumerate(rates)}
    loads[me] = max(loads[me], sum(rates))  # the tasks are part of the giver's load
    placed = moves(me, loads, tasks, Balancing(floor=1.0, max_moves=1000))
    mean = sum(loads.values()) / len(loads)
    moved = sum(tasks[key] for key, _ in placed)
    if placed:
        target = placed[0][1]
        assert {t for _, t in placed} == {target} and target != me
        assert loads[me] - moved >= mean - 1e-6
        assert loads[target] + moved <= mean + 1e-6
        assert len({key for key, _ in placed}) == len(placed)


def test_loads_show_a_move_two_rounds_and_a_heartbeat_after_its_new_owner_decides() -> None:
    assert settled(100.0, Balancing(round=20.0)) == 100.0 + 40.0 + HEARTBEAT


def test_a_placed_task_is_unused_only_after_a_whole_peer_ttl_without_soft_state() -> None:
    began, ttl = 1000.0, 900.0
    assert not unused(began, -float("inf"), began + ttl - 1, ttl), "its peers may still come back from the move"
    assert unused(began, -float("inf"), began + ttl, ttl), "nobody announced it since the move"
    assert not unused(began, began + 500, began + ttl + 1, ttl), "held 500 s in: counted from then"
    assert unused(began, began + 500, began + 500 + ttl, ttl)


@given(st.floats(0, 1000), st.floats(1, 1000), st.floats(0, 1), st.floats(0, 3000))
def test_a_peer_that_comes_back_within_its_ttl_keeps_the_placement(
    announced: float, ttl: float, share: float, later: float
) -> None:
    """A peer announced the task at the old owner at ``announced``, before the move at ``began``; it comes
    back (to the new owner) within its TTL. Up to then the placement is never unused, whenever looked at."""
    began = announced + share * ttl  # the move came while the peer was still live
    back = announced + ttl * share + (1 - share) * ttl * 0.999  # before the peer's TTL ran out
    now = began + later
    if now < back:
        assert not unused(began, -float("inf"), now, ttl)
    else:
        assert not unused(began, back, min(now, back + ttl * 0.999), ttl)
