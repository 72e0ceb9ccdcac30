"""A member's move of a task whose row changed since the member read it (tracker.cluster, core.ownership
"Placements"): the compare-and-set writes nothing, the move is dropped, and the member goes on as its rows
say. The member's renewals are driven one beat at a time on a fake clock, against the SQL backends trackers
share."""

from __future__ import annotations

import logging

from shoal.core.balance import Balancing
from shoal.core.ownership import JOIN_DELAY, Placement, TrackerMember, owner
from shoal.storage.cluster_store import ClusterStore
from shoal.testing.clock import FakeClock
from shoal.tracker.cluster import Cluster
from shoal.tracker.membership import Renewals

T0 = 1_700_000_000.5
X_ROW = T0 - 50
"""When x, a member dead before g and b start, registered: its row expires at T0 - 44 and is deleted by the
first renewal after T0 + 16 (FORGET_AFTER)."""


BALANCING = Balancing(floor=1.0, round=1e6)
"""Places when the test asks (``_place``), never by a round of its own."""


class Driven:
    """A member g whose renewals a test drives (Renewals.beat, no thread), beside a member b whose row the
    test renews; g's loop callbacks recorded."""

    def __init__(self, rows: ClusterStore, other: ClusterStore, clock: FakeClock) -> None:
        self.clock = clock
        self.rows, self.other = rows, other
        self.g = Cluster(rows.store, advertise="http://127.0.0.1:9", host="127.0.0.1", clock=clock, balancing=BALANCING)
        self.renewals = Renewals("", self.g.tracker_id, self.g.url, clock)
        self.g._renewals = self.renewals
        self.dropped: list[str] = []
        self.moved: list[float] = []
        self.held: list[str] = []
        self.g._drop, self.g._held, self.g._moved = self.drop, lambda: list(self.held), self.moved.append

    def drop(self, keys: list[str]) -> None:
        """As the tracker's service does: what g lets go of is no longer held."""
        self.dropped += keys
        self.held = [k for k in self.held if k not in keys]

    async def start(self) -> None:
        await self.other.register("x", "http://x", X_ROW)
        await self.renewals.beat(self.rows)  # registers, alone (x is dead): counts at once
        await self.other.register("b", "http://b", self.clock())

    def hashed_to_g(self) -> str:
        """A task the hash gives g (rather than b): g decides it once both count."""
        g = self.g
        members = [TrackerMember(g.tracker_id, g.url, 0, 1e12), TrackerMember("b", "http://b", 0, 1e12)]
        return next(k for k in (f"{i:040x}" for i in range(100)) if owner(k, members, T0).tracker_id == g.tracker_id)  # type: ignore[union-attr]

    async def step(self, seconds: float) -> None:
        """Time passes a heartbeat at a time: both rows renewed, g's reading published (not yet adopted)."""
        end = self.clock() + seconds
        while self.clock() < end:
            self.clock.advance(min(1.0, end - self.clock()))
            self.renewals.tick()
            await self.renewals.beat(self.rows)
            await self.other.renew("b", self.clock())


async def _placed_over_a_dead_members_row(run: Driven, place_at: float) -> tuple[str, Placement]:
    """g decides a task by the hash, its placement naming x, dead (its row kept until FORGET_AFTER past its
    expiry, T0 + 16); at ``place_at`` g places the task on b over that row. Returns the task and the move."""
    g, key = run.g, run.hashed_to_g()
    run.held.append(key)
    assert await run.other.place(Placement(key, "x", X_ROW + 10, None), None)
    await run.step(place_at - run.clock())
    reading = g._reading()
    assert g.mine(key) and reading.placements[key].tracker_id == "x"
    g._place(reading, run.clock(), 100.0, {key: 40.0})
    move = g._pending[key]
    assert (move.tracker_id, move.previous) == ("b", "x")
    return key, move


async def test_a_move_over_a_row_deleted_since_it_was_read_is_dropped_and_its_member_goes_on_deciding(
    stores, caplog
) -> None:
    """A renewal deletes the dead member's placement before g writes its move over it: the write finds no row
    where g read one and writes nothing. g keeps to its record of the move until a reading taken after the
    refusal; from that one the rows make g the owner, before and after the move's active_from, its soft state
    kept."""
    caplog.set_level(logging.INFO, logger="shoal.tracker.cluster")
    rows, other = stores
    run = Driven(rows, other, FakeClock(T0))
    await run.start()
    g = run.g
    key, move = await _placed_over_a_dead_members_row(run, T0 + 12)
    await run.step(5.0)  # a renewal at T0 + 17 deletes x's row and its placement
    assert await rows.placements() == {}
    await g._balance()
    assert "was not written" in caplog.text
    assert await rows.placements() == {}, "nothing written over the absence g did not read"
    assert g.mine(key), "before the move's active_from, by g's record"
    assert key in g._pending, "kept until a reading taken after the refusal"
    await run.step(1.0)
    assert g.mine(key)  # adopts the reading taken after the refusal
    assert key not in g._pending, "the move is dropped once a reading shows the rows as they were"
    await run.step(move.active_from - run.clock() + 1)
    assert g.mine(key), "past the dropped move's active_from: the rows make g the owner"
    assert run.dropped == [] and run.moved == [], "its soft state kept, nothing taken over"


async def test_a_move_refused_after_its_active_from_gives_its_member_the_task_back_with_grace(stores) -> None:
    """The refusal comes after the move's active_from, when g had stopped by its record and let the task's
    soft state go: from the reading after the refusal g decides the task again, read with grace (moved)."""
    rows, other = stores
    run = Driven(rows, other, FakeClock(T0))
    await run.start()
    g = run.g
    key, _ = await _placed_over_a_dead_members_row(run, T0 + 10)
    await run.step(7.0)  # past the move's active_from (T0 + 16); x's placement deleted at T0 + 17
    await g._balance()
    assert not g.mine(key), "past active_from by its record: the task is b's"
    assert key in run.dropped and key not in run.held
    await run.step(1.0)
    assert g.mine(key) and key not in g._pending
    assert run.moved == [run.clock()], "the task regained is read with grace"


async def test_a_move_over_the_row_as_read_is_written(stores) -> None:
    rows, other = stores
    run = Driven(rows, other, FakeClock(T0))
    await run.start()
    g, key = run.g, run.hashed_to_g()
    run.held.append(key)
    await run.step(JOIN_DELAY + 1)
    reading = g._reading()
    assert g.mine(key)
    g._place(reading, run.clock(), 100.0, {key: 40.0})
    await g._balance()
    move = g._pending[key]
    assert await rows.placements() == {key: move}
    await run.step(1.0)
    assert g.mine(key) and key not in g._pending, "shown by the next reading; g's until its active_from"
    await run.step(move.active_from - run.clock())
    assert not g.mine(key), "b's from then"
    assert key in run.dropped and key not in run.held, "g let the task's soft state go at the move's active_from"
