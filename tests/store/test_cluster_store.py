"""Member rows of trackers sharing a database (storage.cluster_store), against every SQL backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shoal.core.ownership import JOIN_DELAY, TTL, Placement
from shoal.storage.cluster_store import FORGET_AFTER, UNPLACE_BATCH, ClusterStore
from shoal.storage.tracker_store import TrackerStore

T0 = 1_700_000_000.5
ODD = 1_700_000_006.123456789
"""A time whose double has more digits than a short decimal rendering keeps: compared after a round trip."""


@pytest.fixture
async def rows(db_url: str) -> AsyncIterator[ClusterStore]:
    """The placements of one database on every backend, SQLite included: what a placement's writes compare is
    the database's own, whoever reads it."""
    async with TrackerStore(db_url) as store:
        yield ClusterStore(store)


async def test_the_first_member_counts_at_once_and_a_later_one_after_the_join_delay(stores) -> None:
    a, b = stores
    (alone,) = await a.register("a", "http://10.0.0.1:6969", T0)
    assert (alone.active_from, alone.expires) == (T0, T0 + TTL)
    members = {m.tracker_id: m for m in await b.register("b", "http://10.0.0.2:6969", T0 + 1)}
    assert members["a"] == alone
    assert members["b"].active_from == T0 + 1 + JOIN_DELAY and members["b"].url == "http://10.0.0.2:6969"


async def test_two_registering_at_once_see_each_other(stores) -> None:
    a, b = stores
    seen_a, seen_b = await asyncio.gather(a.register("a", "http://a", T0), b.register("b", "http://b", T0))
    later = max((seen_a, seen_b), key=len)
    assert {m.tracker_id for m in later} == {"a", "b"}, "the second to register did not see the first"
    assert sorted(m.active_from for m in later) == [T0, T0 + JOIN_DELAY]


async def test_renewal_extends_the_row_and_reads_the_others(stores) -> None:
    a, b = stores
    await a.register("a", "http://a", T0)
    await b.register("b", "http://b", T0)
    members = {m.tracker_id: m for m in await a.renew("a", T0 + 2) or []}
    assert members["a"].expires == T0 + 2 + TTL and members["b"].expires == T0 + TTL


async def test_a_member_that_left_is_gone_and_long_dead_rows_are_deleted(stores) -> None:
    a, b = stores
    await a.register("a", "http://a", T0)
    await b.register("b", "http://b", T0)
    await b.leave("b")
    assert await b.renew("b", T0 + 1) is None  # its row is gone: it must register again
    assert [m.tracker_id for m in await a.renew("a", T0 + 1) or []] == ["a"]
    await b.register("b", "http://b", T0 + 1)
    # a stays silent after its renewal at T0 + 1; b renews long after a's row expired
    members = await b.renew("b", T0 + 1 + TTL + FORGET_AFTER + 1) or []
    assert [m.tracker_id for m in members] == ["b"]


async def test_a_member_joining_again_replaces_its_row_and_counts_after_the_join_delay(stores) -> None:
    """A member that stalled past its fence registers again (core.ownership.must_rejoin): one row of its own,
    counting JOIN_DELAY later while another member lives, at once when it is alone."""
    a, b = stores
    await a.register("a", "http://a", T0)
    await b.register("b", "http://b", T0)
    members = await a.register("a", "http://a", T0 + 5)
    assert sorted(m.tracker_id for m in members) == ["a", "b"], "its old row replaced, not listed twice"
    assert next(m for m in members if m.tracker_id == "a").active_from == T0 + 5 + JOIN_DELAY
    await b.leave("b")
    (alone,) = await a.register("a", "http://a", T0 + 6)
    assert alone.active_from == T0 + 6, "alone (its own row from before does not count): at once"


async def test_a_renewal_writes_the_members_load(stores) -> None:
    a, b = stores
    await a.register("a", "http://a", T0)
    await b.register("b", "http://b", T0)
    await a.renew("a", T0 + 1, 812.5)
    members = {m.tracker_id: m for m in await b.renew("b", T0 + 1) or []}
    assert (members["a"].load, members["b"].load) == (812.5, 0.0)


async def test_placements_are_written_replaced_and_read_by_every_member(stores) -> None:
    a, b = stores
    await a.register("a", "http://a", T0)
    await b.register("b", "http://b", T0)
    first = Placement("task1", "b", T0 + JOIN_DELAY, None)
    assert await a.place(first, None)
    assert await a.place(first, None), "written again after a failure that may have committed: one row"
    assert await b.placements() == {"task1": first}
    again = Placement("task1", "a", T0 + 20, previous="b")
    assert await b.place(again, first)
    assert await b.place(Placement("task2", "a", T0 + 20, None), None)
    found = await a.placements()
    assert found["task1"] == again and set(found) == {"task1", "task2"}


async def test_a_placement_is_written_only_over_the_row_its_member_read(rows) -> None:
    read = Placement("t", "x", ODD, None)
    assert await rows.place(read, None), "no row, as read: written"
    rows_read = await rows.placements()
    moved = Placement("t", "b", ODD + 6, previous="x")
    assert await rows.place(moved, rows_read["t"]), "the row as read: replaced"
    assert await rows.placements() == {"t": moved}
    # A member whose reading is older (the row it read was replaced since) writes nothing.
    assert not await rows.place(Placement("t", "c", ODD + 7, previous="x"), read)
    assert not await rows.place(Placement("t", "c", ODD + 7, None), None), "a row exists: not its absence"
    assert await rows.placements() == {"t": moved}


async def test_a_placement_over_a_row_deleted_since_it_was_read_is_not_written(rows) -> None:
    """A dead member's placement, read and then deleted by a renewal: a move over it is dropped, not made
    over the absence its member did not read."""
    dead = Placement("t", "x", ODD, None)
    assert await rows.place(dead, None)
    assert await rows.unplace([dead]) == ["t"]
    assert not await rows.place(Placement("t", "b", ODD + 6, previous="x"), dead)
    assert await rows.placements() == {}


async def test_a_move_written_again_after_the_row_moved_on_is_dropped(rows) -> None:
    """The first write of g's move committed though g saw a failure; the member named decided the task and
    placed it on: g's write again finds neither its own row nor the one it replaced."""
    mine = Placement("t", "b", ODD, None)
    assert await rows.place(mine, None)
    later = Placement("t", "c", ODD + 30, previous="b")
    assert await rows.place(later, mine)
    assert not await rows.place(mine, None)
    assert await rows.placements() == {"t": later}


async def test_a_renewal_deletes_a_placement_once_its_member_has_no_row_and_its_start_is_long_past(stores) -> None:
    a, b = stores
    await a.register("a", "http://a", T0)
    await b.register("b", "http://b", T0)
    await a.place(Placement("on-b", "b", T0 + 1, None), None)
    await a.place(Placement("on-a", "a", T0 + 1, None), None)
    await b.leave("b")
    await a.renew("a", T0 + 1 + JOIN_DELAY - 1)
    assert set(await a.placements()) == {"on-a", "on-b"}, "kept: its active_from is recent"
    await a.renew("a", T0 + 1 + JOIN_DELAY + 1)
    assert set(await a.placements()) == {"on-a"}


async def test_unplace_deletes_only_the_placements_still_as_their_member_read_them(rows) -> None:
    for key in ("unused", "replaced", "kept"):
        assert await rows.place(Placement(key, "a", ODD, None), None)
    read = await rows.placements()
    assert await rows.place(Placement("replaced", "b", ODD + 20, previous="a"), read["replaced"])  # placed on since
    gone = await rows.unplace([read["unused"], read["replaced"], Placement("never", "a", ODD, None)])
    assert gone == ["unused"]
    left = await rows.placements()
    assert set(left) == {"replaced", "kept"} and left["replaced"].tracker_id == "b"
    assert await rows.unplace([read["unused"]]) == [], "deleted already: a delete sent again finds nothing"
    assert await rows.unplace([]) == []


async def test_unplace_compares_a_placement_made_here_with_its_row(rows) -> None:
    """The member's copy of a row is the one it read; one built from the same values compares equal too."""
    placed = Placement("t", "a", ODD, "b")
    assert await rows.place(placed, None)
    assert await rows.unplace([placed]) == ["t"]
    assert await rows.placements() == {}


async def test_unplace_deletes_more_than_one_statements_batch(rows) -> None:
    many = [Placement(f"k{i:05}", "a", ODD + i, None) for i in range(UNPLACE_BATCH + 3)]
    for placed in many:
        assert await rows.place(placed, None)
    assert await rows.unplace(many) == sorted(p.key for p in many)
    assert await rows.placements() == {}
