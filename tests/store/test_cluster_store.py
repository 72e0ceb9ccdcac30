"""Member rows of trackers sharing a database (storage.cluster_store), against every SQL backend."""

from __future__ import annotations

import asyncio

from shoal.core.ownership import JOIN_DELAY, TTL, Placement
from shoal.storage.cluster_store import FORGET_AFTER

T0 = 1_700_000_000.5


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
    await a.place(first)
    await a.place(first)  # written again after a failure that may have committed: one row
    assert await b.placements() == {"task1": first}
    again = Placement("task1", "a", T0 + 20, previous="b")
    await b.place(again)
    await b.place(Placement("task2", "a", T0 + 20, None))
    found = await a.placements()
    assert found["task1"] == again and set(found) == {"task1", "task2"}


async def test_a_renewal_deletes_a_placement_once_its_member_has_no_row_and_its_start_is_long_past(stores) -> None:
    a, b = stores
    await a.register("a", "http://a", T0)
    await b.register("b", "http://b", T0)
    await a.place(Placement("on-b", "b", T0 + 1, None))
    await a.place(Placement("on-a", "a", T0 + 1, None))
    await b.leave("b")
    await a.renew("a", T0 + 1 + JOIN_DELAY - 1)
    assert set(await a.placements()) == {"on-a", "on-b"}, "kept: its active_from is recent"
    await a.renew("a", T0 + 1 + JOIN_DELAY + 1)
    assert set(await a.placements()) == {"on-a"}
