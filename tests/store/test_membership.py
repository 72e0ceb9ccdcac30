"""The member row's renewals (tracker.membership), one heartbeat at a time on a fake clock, against the SQL
backends trackers share: what each beat publishes to the tracker's loop, and the watchdog."""

from __future__ import annotations

import math
from dataclasses import replace

from shoal.core.ownership import FENCE_MARGIN, HEARTBEAT, JOIN_DELAY, LOOP_PATIENCE, TTL, TrackerMember
from shoal.storage.cluster_store import ClusterStore
from shoal.testing.clock import FakeClock
from shoal.tracker.membership import Renewals

T0 = 1_700_000_000.5


async def test_each_beat_renews_the_row_and_publishes_one_reading(stores) -> None:
    rows, _ = stores
    clock = FakeClock(T0)
    renewals = Renewals("", "a", "http://a", clock)
    await renewals.beat(rows)  # fenced at first: registers
    first = renewals.reading
    assert (first.renewed, first.incarnation, first.forget_at) == (T0, 1, 0)
    assert first.counts_from == T0, "alone on the database: it counts at once"
    assert first.deciding(T0)
    for _ in range(3):
        clock.advance(HEARTBEAT)
        renewals.tick()
        await renewals.beat(rows)
    reading = renewals.reading
    assert reading.renewed == T0 + 3 * HEARTBEAT and reading.incarnation == 1
    assert [(m.tracker_id, m.expires) for m in reading.members] == [("a", T0 + 3 * HEARTBEAT + TTL)]
    assert renewals.rejoins == 1  # the first registration, from a fenced reading, counts as one


async def test_a_wedged_loop_stops_the_renewals_and_a_running_one_brings_a_new_row(stores) -> None:
    rows, other = stores
    clock = FakeClock(T0)
    await other.register("b", "http://b", T0)  # another member lives on meanwhile
    renewals = Renewals("", "a", "http://a", clock)
    await renewals.beat(rows)
    joined = renewals.reading
    assert joined.counts_from >= T0 + JOIN_DELAY, "not alone: it decides JOIN_DELAY after its registration"
    assert not joined.deciding(T0), "counted live by the others, it does not decide yet"
    renewed = replace(joined, renewed=joined.counts_from - HEARTBEAT)  # as its renewals would keep it
    assert renewed.deciding(joined.counts_from) and not renewed.deciding(joined.counts_from + TTL - FENCE_MARGIN)
    # The loop's last tick is LOOP_PATIENCE old: the beat renews nothing.
    clock.advance(LOOP_PATIENCE)
    await other.renew("b", clock())
    await renewals.beat(rows)
    assert renewals.reading is joined
    (row,) = [m for m in await other.renew("b", clock()) if m.tracker_id == "a"]
    assert row.expires == T0 + TTL, "the row was not renewed: it lapses, and b takes a's tasks over"
    # The loop runs again: past its fence, the member registers again, and must forget what it held.
    renewals.tick()
    await renewals.beat(rows)
    again = renewals.reading
    assert (again.renewed, again.incarnation, again.forget_at) == (clock(), 2, 2)
    assert again.counts_from >= clock() + JOIN_DELAY
    assert renewals.rejoins == 2


async def test_a_renewal_that_ends_after_the_fence_joins_again(stores) -> None:
    rows, _ = stores
    clock = FakeClock(T0)
    renewals = Renewals("", "a", "http://a", clock)
    await renewals.beat(rows)

    class SlowRows(ClusterStore):
        async def renew(self, tracker_id: str, now: float, load: float = 0.0) -> list[TrackerMember] | None:
            members = await super().renew(tracker_id, now, load)
            clock.advance(TTL - FENCE_MARGIN)  # the round trips outlast the fence
            return members

    clock.advance(HEARTBEAT)
    renewals.tick()
    await renewals.beat(SlowRows(rows.store))
    reading = renewals.reading
    assert reading.incarnation == 2 and reading.renewed == clock(), "registered again, not extended"
    assert reading.forget_at == 0, "alone: nobody can have decided its tasks, so it keeps them"


async def test_stopping_fences_first(stores) -> None:
    rows, _ = stores
    renewals = Renewals("", "a", "http://a", FakeClock(T0))
    await renewals.beat(rows)
    await renewals.stop()  # never started a thread: only the fence
    assert renewals.reading.renewed == -math.inf
