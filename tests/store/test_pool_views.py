"""The PoolStore's views, run against every SQL backend (see conftest.db_url): a job's assignments with their
members, a member's work (its heartbeat reply), open pools, and the counts of the pool list and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shoal.core.pool import Decision, MemberStatus, PushStatus
from shoal.storage.pool_store import JobRow, PoolCounts, PoolFigures, PoolStore
from shoal.storage.tracker_store import TrackerStore

from .driver import T0
from .test_pool_store import (
    ASSIGNED,
    CANCELLED,
    DIGEST,
    DONE,
    EPOCH,
    EVICTED,
    FAILED,
    JOB,
    JOB2,
    LEFT,
    OTHER_URL,
    RUNNING,
    assign,
    beat,
    job_in,
    pool_with,
    set_status,
)


@pytest.fixture
async def tracker(db_url: str) -> AsyncIterator[TrackerStore]:
    async with TrackerStore(db_url) as opened:
        yield opened


@pytest.fixture
def store(tracker: TrackerStore) -> PoolStore:
    return PoolStore(tracker)


# -- the status view and a member's work ---------------------------------------------------------------


async def test_assignments_carry_their_members_names_and_places(store: PoolStore) -> None:
    await store.create("farm", None, T0)
    await store.create("lab", None, T0)
    await store.heartbeat("farm", "m1", beat("node-1", site="fra", rack="r1"), T0 + 1, epoch=EPOCH)
    await store.heartbeat("farm", "m2", beat("node-2", site="ams", rack="r2"), T0 + 2, epoch=EPOCH)
    # The same id in another pool.
    await store.heartbeat("lab", "m1", beat("lab-node", site="lab", rack="lab"), T0 + 3, epoch=EPOCH)
    job = await job_in(store)
    await assign(store, job, "m2", now=T0 + 5)
    await assign(store, job, "m1", "ghost", now=T0 + 5)  # ghost: a member with no row
    await assign(store, job, "m0", now=T0 + 4)
    got = await store.assignments(JOB)
    assert [r["member_id"] for r in got] == ["m0", "ghost", "m1", "m2"]  # by assigned, then member id
    by_id = {r["member_id"]: r for r in got}
    assert (by_id["m1"]["name"], by_id["m1"]["url"], by_id["m1"]["site"], by_id["m1"]["rack"]) == (
        "node-1",
        "http://node-1.example:7000/",
        "fra",
        "r1",
    )
    assert by_id["m1"]["last_seen"] == T0 + 1
    assert (by_id["m2"]["name"], by_id["m2"]["last_seen"]) == ("node-2", T0 + 2)
    assert (by_id["ghost"]["name"], by_id["ghost"]["last_seen"]) == (None, None)
    assert by_id["m1"]["job_id"] == JOB and by_id["m1"]["status"] == "assigned"
    assert await store.assignments(JOB2) == []


WORK_CASES = [
    # (the assignment's status, the job's status, replicas, listed)
    (ASSIGNED, PushStatus.RUNNING, None, True),
    (RUNNING, PushStatus.RUNNING, None, True),
    (LEFT, PushStatus.RUNNING, None, True),  # to resume when it comes back
    (RUNNING, PushStatus.COMPLETE, None, True),
    (LEFT, PushStatus.COMPLETE, 2, True),
    (ASSIGNED, PushStatus.FAILED, None, False),
    (LEFT, PushStatus.FAILED, 2, False),
    (LEFT, PushStatus.CANCELLED, None, False),
    (DONE, PushStatus.RUNNING, 2, True),  # so it can say when it no longer holds its copy
    (DONE, PushStatus.COMPLETE, 2, True),
    (DONE, PushStatus.COMPLETE, None, False),  # nobody repairs a push to every member
    (DONE, PushStatus.FAILED, 2, False),
    (DONE, PushStatus.CANCELLED, 2, False),
    (FAILED, PushStatus.RUNNING, None, False),
    (FAILED, PushStatus.RUNNING, 2, False),
    (EVICTED, PushStatus.COMPLETE, 2, False),
    (CANCELLED, PushStatus.CANCELLED, None, True),  # recent: see the cancelled_since tests
]


@pytest.mark.parametrize(
    ("assignment", "job_status", "replicas", "listed"),
    WORK_CASES,
    ids=[f"{a.value}-in-{j.value}-{r or 'all'}" for a, j, r, _ in WORK_CASES],
)
async def test_member_work_lists_what_the_member_should_do_stop_or_check(
    store: PoolStore, assignment: MemberStatus, job_status: PushStatus, replicas: int | None, listed: bool
) -> None:
    await pool_with(store, "farm", "m1")
    job = await job_in(store, replicas=replicas, dest="/srv/disk.img", digest=DIGEST)
    await assign(store, job, "m1")
    if assignment is LEFT:
        await store.apply(job.pool, job.job, Decision(left=("m1",)), job.job.status, "", T0 + 10, epoch=EPOCH)
    elif assignment is not ASSIGNED:
        await set_status(store, JOB, "m1", assignment, now=T0 + 10)
    if job_status is not job.job.status:
        await store.apply(job.pool, job.job, Decision(), job_status, "", T0 + 10, epoch=EPOCH)
    work = await store.member_work("farm", "m1", cancelled_since=T0 + 10)
    expected_job = await store.job("farm", JOB)
    assert work == ([(expected_job, assignment)] if listed else [])


async def test_member_work_lists_a_cancel_only_since_the_given_time(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1")
    await job_in(store)
    old = await job_in(store, job_id=JOB2)
    await assign(store, await job_in(store, job_id="1111111111111111"), "m1", now=T0)
    await assign(store, old, "m1", now=T0)
    await store.cancel("farm", JOB2, T0 + 10, epoch=EPOCH)
    await store.cancel("farm", "1111111111111111", T0 + 20, epoch=EPOCH)

    def cancelled(work: list[tuple[JobRow, MemberStatus]]) -> list[str]:
        return sorted(row.job.job_id for row, status in work if status is CANCELLED)

    assert cancelled(await store.member_work("farm", "m1")) == ["1111111111111111", JOB2]
    assert cancelled(await store.member_work("farm", "m1", cancelled_since=T0 + 10)) == ["1111111111111111", JOB2]
    assert cancelled(await store.member_work("farm", "m1", cancelled_since=T0 + 10.5)) == ["1111111111111111"]
    assert cancelled(await store.member_work("farm", "m1", cancelled_since=T0 + 21)) == []


async def test_member_work_is_the_members_own_in_its_pool(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2")
    await pool_with(store, "lab", "m1")
    first = await job_in(store, job_id="0000000000000001", now=T0, dest="/srv/1.img")
    second = await job_in(store, job_id="0000000000000002", now=T0 + 1, url=OTHER_URL, replicas=2)
    lab = await job_in(store, "lab", job_id="00000000000000ff")
    await assign(store, first, "m1", "m2")
    await assign(store, second, "m2")
    await assign(store, lab, "m1")
    await set_status(store, "0000000000000001", "m2", RUNNING)
    assert await store.member_work("farm", "m1") == [(first, ASSIGNED)]
    work = sorted(await store.member_work("farm", "m2"), key=lambda w: w[0].job.job_id)
    assert work == [(first, RUNNING), (second, ASSIGNED)]
    assert await store.member_work("lab", "m1") == [(lab, ASSIGNED)]
    assert await store.member_work("farm", "stranger") == []
    assert await store.member_work("nowhere", "m1") == []


async def test_open_pools_are_those_with_a_running_or_complete_job(store: PoolStore) -> None:
    for name in ("idle", "running", "complete", "failed", "cancelled", "two"):
        await pool_with(store, name)
    await job_in(store, "running", job_id="0000000000000001")
    complete = await job_in(store, "complete", job_id="0000000000000002")
    await store.apply(complete.pool, complete.job, Decision(), PushStatus.COMPLETE, "", T0, epoch=EPOCH)
    failed = await job_in(store, "failed", job_id="0000000000000003")
    await store.apply(failed.pool, failed.job, Decision(), PushStatus.FAILED, "HTTP 404", T0, epoch=EPOCH)
    await job_in(store, "cancelled", job_id="0000000000000004")
    await store.cancel("cancelled", "0000000000000004", T0, epoch=EPOCH)
    await job_in(store, "two", job_id="0000000000000005")
    await job_in(store, "two", job_id="0000000000000006")
    assert sorted(await store.open_pools()) == ["complete", "running", "two"]


# -- counts --------------------------------------------------------------------------------------------


async def counted_pools(store: PoolStore) -> None:
    """farm: two members heard from at T0, one at T0 - 1 (the boundary: silent), one running job with four
    assignments and one complete job; lab: one member, a failed and a cancelled job; idle: nothing."""
    await pool_with(store, "farm", "m1", "m2")
    await store.heartbeat("farm", "old", beat("old"), T0 - 1, epoch=EPOCH)
    running = await job_in(store, "farm", job_id="a" * 16)
    await assign(store, running, "m1", "m2", "old")
    await set_status(store, running.job.job_id, "m1", RUNNING)
    await set_status(store, running.job.job_id, "m2", DONE)
    complete = await job_in(store, "farm", job_id="b" * 16)
    await assign(store, complete, "m1")
    await set_status(store, complete.job.job_id, "m1", DONE)
    await store.apply(complete.pool, complete.job, Decision(), PushStatus.COMPLETE, "", T0, epoch=EPOCH)
    await pool_with(store, "lab", "m3")
    failed = await job_in(store, "lab", job_id="c" * 16)
    await store.apply(failed.pool, failed.job, Decision(), PushStatus.FAILED, "HTTP 404", T0, epoch=EPOCH)
    await job_in(store, "lab", job_id="d" * 16)
    await store.cancel("lab", "d" * 16, T0, epoch=EPOCH)
    await pool_with(store, "idle")


async def test_live_counts_are_each_pools_live_members_and_jobs_by_status(store: PoolStore) -> None:
    await counted_pools(store)
    counts = await store.live_counts(live_since=T0 - 1)  # heard from after it: at T0, not at T0 - 1
    assert set(counts) == {"farm", "lab"}, "a pool with neither a live member nor a job is not listed"
    assert counts["farm"] == PoolFigures(2, {"running": 1, "complete": 1})
    assert counts["lab"] == PoolFigures(1, {"failed": 1, "cancelled": 1})
    assert (counts["farm"].jobs_running, counts["lab"].jobs_running) == (1, 0)
    later = await store.live_counts(live_since=T0)  # nobody heard from since: the jobs stay
    assert later["farm"] == PoolFigures(0, {"running": 1, "complete": 1})


async def test_counts_add_up_every_pools_live_counts_and_the_running_jobs_assignments(store: PoolStore) -> None:
    await counted_pools(store)
    counts = await store.counts(T0 - 1)
    assert counts.jobs == {"running": 1, "complete": 1, "failed": 1, "cancelled": 1}
    assert counts.members == 3
    # Only the running job's parts: the complete job's done member is not among them.
    assert counts.assignments == {"running": 1, "done": 1, "assigned": 1}
    per_pool = (await store.live_counts(live_since=T0 - 1)).values()
    assert counts.members == sum(p.members_live for p in per_pool)
    assert sum(counts.jobs.values()) == sum(sum(p.jobs.values()) for p in per_pool)
    assert await store.counts(T0) == PoolCounts(counts.jobs, counts.assignments, 0)


async def test_counts_of_no_pools_are_empty(store: PoolStore) -> None:
    assert await store.live_counts(live_since=T0) == {}
    assert await store.counts(T0) == PoolCounts({}, {}, 0)
