"""Two trackers on one database, one of them late: its write creating a task commits after the task's new
owner created it (a decision made before the task moved; core.ownership). That write, and the late
tracker's writes of the task behind it, are left out; the rest of the batch commits; the owner's facts
stand, and the late copy is read again (storage.tracker_store). Run on every backend that two trackers
can share."""

from __future__ import annotations

import asyncio

import pytest

from shoal.core.errors import TaskCreatedElsewhere
from shoal.storage.tracker_store import TrackerStore
from shoal.testing.poll import wait_until_async

from .driver import IDENTITY, T0, TASK_ID, decide, join, request
from .test_tracker_store import HeldWriter, stage_task


async def test_a_task_created_by_another_tracker_meanwhile_leaves_out_only_its_own_writes(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("one process's database: no other tracker creates its tasks")
    other, third = "d" * 40, "e" * 40
    async with HeldWriter(db_url) as late, TrackerStore(db_url) as owner:
        # A batch of the late tracker's is held; the writes staged meanwhile go in the next one together.
        _, held = await stage_task(late, third, request("r1", url=f"http://origin.example/{third}", generation=0), T0)
        await wait_until_async(lambda: late.waiting == 1, "the late tracker's writer holding a batch")
        outcome, created = await decide(late, request("p1", generation=0, event="started"), T0)
        assert created
        creation = late.stage(outcome, created=True)
        outcome, created = await decide(late, request("p1", event="started", origin=IDENTITY), T0)
        behind = late.stage(outcome, created=created)
        _, beside = await stage_task(late, other, request("q1", url=f"http://origin.example/{other}", generation=0), T0)
        # Meanwhile the task's new owner creates it, with a peer of its own, and commits.
        await join(owner, "p2", T0 + 1)
        late.go.set()
        await asyncio.gather(held, beside)
        for future in (creation, behind):
            with pytest.raises(TaskCreatedElsewhere) as caught:
                await future
            assert caught.value.task_id == TASK_ID
        assert late._rows[TASK_ID].stale, "the late copy takes the database's facts before its next decision"
        owned = owner._rows[TASK_ID].task
    async with TrackerStore(db_url) as again:
        stored = await again.read_rows(TASK_ID)
        assert stored is not None and stored.task == owned, "the owner's facts stand"
        for made in (other, third):
            assert await again.read_rows(made) is not None, "the batch's other writes committed"
