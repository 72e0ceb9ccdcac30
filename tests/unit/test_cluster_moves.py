"""When tasks last moved, as the tracker's cluster answers it on every announce (tracker.cluster.last_move):
worked out once for each reading and each change of the placements naming this member, and the same as the
definition at every instant in between."""

from __future__ import annotations

from types import SimpleNamespace

from shoal.core.ownership import JOIN_DELAY, Placement, TrackerMember, placed_from
from shoal.tracker.cluster import Cluster
from shoal.tracker.membership import Reading

NOW = 1000.0
TASK = "ab" * 20


def _cluster(clock: list[float]) -> tuple[Cluster, SimpleNamespace]:
    cluster = Cluster(
        SimpleNamespace(url="postgresql://nowhere/db"),  # type: ignore[arg-type]
        advertise="http://127.0.0.1:9",
        host="127.0.0.1",
        clock=lambda: clock[0],
    )
    renewals = SimpleNamespace(reading=None)
    cluster._renewals = renewals  # type: ignore[assignment]  # the thread's readings, handed in by the test
    cluster._drop = lambda keys: None
    return cluster, renewals


def _reading(*members: TrackerMember, placements: dict[str, Placement] | None = None) -> Reading:
    return Reading(NOW, tuple(members), NOW - 100, 1, 0, placements or {})


def test_last_move_follows_the_clock_between_readings_and_each_new_reading() -> None:
    clock = [NOW]
    cluster, renewals = _cluster(clock)
    me = TrackerMember(cluster.tracker_id, cluster.url, NOW - 10, NOW + 5)
    renewals.reading = _reading(me)
    assert cluster.last_move(NOW) == NOW - 10
    assert cluster.last_move(NOW + 6) == NOW + 5  # the same reading: its row expired meanwhile
    joining = TrackerMember("b", "http://b", NOW + 2, NOW + 8)
    renewals.reading = _reading(TrackerMember(cluster.tracker_id, cluster.url, NOW - 10, NOW + 6), joining)
    assert cluster.last_move(NOW + 1) == NOW - 10
    assert cluster.last_move(NOW + 3) == NOW + 2  # a new reading's member counts from its active_from
    assert cluster.last_move(NOW + 7) == NOW + 6


def test_last_move_counts_a_placement_on_us_from_when_we_decide_it_and_forgets_it_with_its_row() -> None:
    clock = [NOW]
    cluster, renewals = _cluster(clock)
    me = TrackerMember(cluster.tracker_id, cluster.url, NOW - 10, NOW + 100)
    renewals.reading = _reading(me)
    assert cluster.last_move(NOW + 50) == NOW - 10
    placed = Placement(TASK, cluster.tracker_id, NOW + 1, None)
    renewals.reading = _reading(me, placements={TASK: placed})
    start = placed_from(placed, NOW)
    assert start == NOW + JOIN_DELAY
    # Published by the thread, not acted on yet by the loop: its members are the latest, the placement not.
    assert cluster.last_move(start) == NOW - 10
    cluster._reading()  # the loop acts on the reading (at a heartbeat, or the next request's owner check)
    assert cluster.last_move(start - 0.5) == NOW - 10
    assert cluster.last_move(start) == start
    renewals.reading = _reading(me)  # the row is gone (replaced, or its task went back to the hash)
    cluster._reading()
    assert cluster.last_move(start + 1) == NOW - 10
