"""Two trackers on one database, the writes of one decided before its task moved to the other: the task's
ownership epoch fences them (core.ownership, "Durable writes carry the task's epoch"). A take-over by the
new owner bumps the epoch; a write of a copy read before is left out (TaskMoved), the rest of its batch
commits, the stale copy leaves memory, and the owner's writes land. Run on every backend that two trackers
can share, but the last test, which holds wherever a tracker reads a task it does not own."""

from __future__ import annotations

import pytest

from shoal.core.errors import TaskCreatedElsewhere, TaskMoved
from shoal.storage.tracker_store import TrackerStore
from shoal.testing.poll import wait_until_async

from .driver import CHANGED, IDENTITY, T0, TASK_ID, announce, decide, digest, join, request
from .test_tracker_store import HeldWriter, join_task, stage, stage_task

OTHER = "d" * 40


def shared_only(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("one process's database: no other tracker takes its tasks over")


async def test_a_write_decided_before_a_take_over_is_left_out_and_the_owners_land(db_url: str) -> None:
    shared_only(db_url)
    async with HeldWriter(db_url) as late, TrackerStore(db_url) as owner:
        lost: list[str] = []
        late.lost = lost.extend
        late.go.set()
        await join(late, "p1", T0, want_leases=4)
        await join_task(late, OTHER, "q1", T0, want_leases=4)
        late.go.clear()
        # Hash reports decided while the late tracker owned both tasks, their batch held on its way.
        _, reported = await stage(late, request("p1", done={0: digest(0)}), T0 + 1)
        other_url = f"http://origin.example/{OTHER}"
        _, beside = await stage_task(late, OTHER, request("q1", url=other_url, done={0: digest(0)}), T0 + 1)
        await wait_until_async(lambda: late.waiting == 1, "the late tracker's batch held")
        # Meanwhile the task moves: its new owner reads it (a take-over) and leases its pieces afresh.
        joined = await join(owner, "p2", T0 + 2, want_leases=4)
        assert joined.response is not None and joined.response.leases == (0, 1, 2, 3)
        late.go.set()
        with pytest.raises(TaskMoved) as caught:
            await reported
        assert caught.value.task_id == TASK_ID and not isinstance(caught.value, TaskCreatedElsewhere)
        await beside  # the rest of the batch committed
        assert lost == [TASK_ID], "the service hears of the lost task"
        assert late.held() == [OTHER], "the stale copy, soft state and all, left memory"
        # The owner's own report of the piece lands.
        await announce(owner, request("p2", done={0: digest(0, "b")}), T0 + 3)
    async with TrackerStore(db_url) as again:
        stored = await again.read_rows(TASK_ID)
        assert stored is not None and stored.hashes_since(0).hashes == {0: digest(0, "b")}
        assert stored.reporters == {0: "p2"}
        other = await again.read_rows(OTHER)
        assert other is not None and other.hashes_since(0).hashes == {0: digest(0)}


async def test_a_new_generation_decided_before_a_take_over_is_left_out(db_url: str) -> None:
    """A write that does more than rewrite the task's row and add hashes (here a new generation, which drops
    the hashes) is fenced as well, in a batch whose other task's report lands: the owner's generation and
    hash stay whole."""
    shared_only(db_url)
    async with HeldWriter(db_url) as late, TrackerStore(db_url) as owner:
        late.go.set()
        await join(late, "p1", T0, want_leases=4)
        await join_task(late, OTHER, "q1", T0, want_leases=4)
        late.go.clear()
        outcome, changed = await stage(late, request("p1", origin=CHANGED), T0 + 1)
        assert outcome.new_generation
        other_url = f"http://origin.example/{OTHER}"
        _, beside = await stage_task(late, OTHER, request("q1", url=other_url, done={0: digest(0)}), T0 + 1)
        await wait_until_async(lambda: late.waiting == 1, "the late tracker's batch held")
        await join(owner, "p2", T0 + 2, want_leases=4)
        await announce(owner, request("p2", done={0: digest(0, "b")}), T0 + 3)
        late.go.set()
        with pytest.raises(TaskMoved):
            await changed
        await beside
        assert late.held() == [OTHER]
    async with TrackerStore(db_url) as again:
        stored = await again.read_rows(TASK_ID)
        assert stored is not None and stored.task.generation == 1 and stored.task.manifest is not None
        assert stored.task.manifest.length == IDENTITY.length
        assert stored.hashes_since(0).hashes == {0: digest(0, "b")}
        other = await again.read_rows(OTHER)
        assert other is not None and other.hashes_since(0).hashes == {0: digest(0)}


async def test_a_task_that_moves_back_fences_out_the_tracker_it_left(db_url: str) -> None:
    shared_only(db_url)
    async with TrackerStore(db_url) as first, HeldWriter(db_url) as second:
        await join(first, "p1", T0, want_leases=4)
        first.forget([TASK_ID])  # the task moves to the second tracker, then back
        second.go.set()
        await join(second, "p2", T0 + 1, want_leases=4)
        second.go.clear()
        _, late = await stage(second, request("p2", done={0: digest(0, "b")}), T0 + 2)
        await wait_until_async(lambda: second.waiting == 1, "the second tracker's batch held")
        await join(first, "p1", T0 + 3, want_leases=4)  # the first takes the task over again
        second.go.set()
        with pytest.raises(TaskMoved):
            await late
        await announce(first, request("p1", done={0: digest(0)}), T0 + 4)
        stored = await first.read_rows(TASK_ID)
        assert stored is not None and stored.hashes_since(0).hashes == {0: digest(0)}


async def test_writes_of_a_copy_whose_creation_found_the_task_created_are_left_out(db_url: str) -> None:
    """Writes decided on the copy a late creation made, staged behind the creation's batch: the owner's row
    has the epoch a creation gives, as the late copy had, and only the failed creation tells them apart."""
    shared_only(db_url)
    async with HeldWriter(db_url) as late, TrackerStore(db_url) as owner:
        outcome, created = await decide(late, request("p1", generation=0, event="started"), T0)
        assert created
        creation = late.stage(outcome, created=True)
        await wait_until_async(lambda: late.waiting == 1, "the late creation's batch held")
        outcome, created = await decide(late, request("p1", event="started", origin=IDENTITY), T0)
        assert not created and outcome.task.manifest is not None
        behind = late.stage(outcome, created=False)
        # The owner creates the task meanwhile; it knows no manifest yet.
        await announce(owner, request("p2", generation=0, event="started"), T0 + 1)
        late.go.set()
        with pytest.raises(TaskCreatedElsewhere):
            await creation
        with pytest.raises(TaskMoved):
            await behind
        stored = await owner.read_rows(TASK_ID)
        assert stored is not None and stored.task.manifest is None, "the late copy's manifest stayed out"


async def test_a_tracker_reading_a_task_it_does_not_own_takes_nothing_over(db_url: str) -> None:
    """A request that waited across a move reads the task without bumping its epoch, keeps no copy and
    writes nothing of its decision: the owner's writes land as before."""
    async with TrackerStore(db_url) as owner, TrackerStore(db_url) as other:
        await join(owner, "p1", T0, want_leases=4)
        epoch = owner._rows[TASK_ID].epoch
        other.owns = lambda task_id: False
        outcome, created = await decide(other, request("p2", event="started", origin=CHANGED), T0 + 1)
        assert not created and outcome.new_generation, "decided on what it read"
        assert other.held() == []
        with pytest.raises(TaskMoved):
            await other.stage(outcome, created=False)
        stored = await other.read_rows(TASK_ID)
        assert stored is not None and stored.epoch == epoch and stored.task.generation == 1
        await announce(owner, request("p1", done={0: digest(0)}), T0 + 2)
        stored = await owner.read_rows(TASK_ID)
        assert stored is not None and stored.hashes_since(0).hashes == {0: digest(0)}
