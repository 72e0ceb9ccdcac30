"""The PoolStore contract, run against every SQL backend (see conftest.db_url).

Times are realistic epoch seconds with a fractional part, so a backend that stores them with too little
precision shows up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from shoal.core.announce import decide_announce
from shoal.core.errors import Conflict, PoolExists, PoolMoved, StoreError
from shoal.core.ids import task_id_for_url
from shoal.core.ownership import CREATED_EPOCH
from shoal.core.pool import (
    Assignment,
    Decision,
    JobFailed,
    Member,
    MemberStatus,
    PushJob,
    PushStatus,
    advance_job,
    decide,
    hash_token,
)
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.storage.pool_store import JobRow, PoolRow, PoolStore
from shoal.storage.schema import pool_assignments, pool_jobs, pool_members, pools
from shoal.storage.tracker_store import TrackerStore

from .driver import IDENTITY, POLICY, T0, request

ASSIGNED, RUNNING, DONE, FAILED, EVICTED, CANCELLED, LEFT = (
    MemberStatus.ASSIGNED,
    MemberStatus.RUNNING,
    MemberStatus.DONE,
    MemberStatus.FAILED,
    MemberStatus.EVICTED,
    MemberStatus.CANCELLED,
    MemberStatus.LEFT,
)
URL = "http://origin.example/images/disk.img"
OTHER_URL = "http://origin.example/images/other.img"
JOB = "0123456789abcdef"
JOB2 = "fedcba9876543210"
DIGEST = "sha256:" + "ab" * 32
TTL = 30.0
EPOCH = CREATED_EPOCH
"""The epoch of the writes below: a pool's as its creation leaves it (no tracker took it over)."""


@pytest.fixture
async def tracker(db_url: str) -> AsyncIterator[TrackerStore]:
    async with TrackerStore(db_url) as opened:
        yield opened


@pytest.fixture
def store(tracker: TrackerStore) -> PoolStore:
    return PoolStore(tracker)


def beat(name: str = "node", **fields: Any) -> Heartbeat:
    values: dict[str, Any] = {"url": f"http://{name}.example:7000/", "site": "fra", "rack": "r1", "free": 1 << 40}
    values.update(fields)
    return Heartbeat(name=name, **values)


async def pool_with(store: PoolStore, name: str = "farm", *members: str, now: float = T0) -> None:
    """A public pool ``name`` whose ``members`` have just heartbeated."""
    await store.create(name, None, now)
    for member_id in members:
        await store.heartbeat(name, member_id, beat(member_id), now, epoch=EPOCH)


async def job_in(store: PoolStore, pool: str = "farm", job_id: str = JOB, now: float = T0, **request: Any) -> JobRow:
    await store.add_job(pool, job_id, PushRequest(**{"url": URL, **request}), now, epoch=EPOCH)
    row = await store.job(pool, job_id)
    assert row is not None
    return row


async def assign(store: PoolStore, job: JobRow, *member_ids: str, now: float = T0) -> None:
    await store.apply(job.pool, job.job, Decision(assign=member_ids), job.job.status, job.job.error, now, epoch=EPOCH)


async def set_status(
    store: PoolStore, job_id: str, member_id: str, status: MemberStatus, now: float = T0, **counters: Any
) -> None:
    await store.report("farm", job_id, member_id, status, MemberReport(status, **counters), now, epoch=EPOCH)


async def statuses(store: PoolStore, job: JobRow, pool: str = "farm") -> dict[str, MemberStatus]:
    state = await store.state(pool, job)
    return {mid: a.status for mid, a in state.assignments.items()}


async def rows(tracker: TrackerStore, table: Any, pool: str | None = None) -> int:
    """How many rows ``table`` holds; only ``pool``'s when given (the pools table names it in ``name``)."""
    query = select(func.count()).select_from(table)
    if pool is not None:
        query = query.where(table.c.pool == pool) if "pool" in table.c else query.where(table.c.name == pool)
    async with tracker.connection() as conn:
        return int((await conn.execute(query)).scalar_one())


async def seed_task(tracker: TrackerStore, url: str, now: float) -> None:
    """Make the tracker know ``url``'s length, the way a first peer's join does: two announces."""
    task_id = task_id_for_url(url)
    for req in (
        request("peer-1", url=url, generation=0, event="started"),
        request("peer-1", url=url, event="started", origin=IDENTITY),
    ):
        snapshot = await tracker.load(task_id, req.done)
        outcome = decide_announce(snapshot, req, task_id=task_id, seen_host="192.0.2.1", now=now, policy=POLICY)
        await tracker.apply(outcome, created=snapshot.task is None)


# -- pools ---------------------------------------------------------------------------------------------


async def test_a_pool_reads_back_as_created(store: PoolStore) -> None:
    token_hash = hash_token("secret")
    await store.create("legacy", None, T0)
    await store.create("public", hash_token("owner"), T0, allow=("http://10.0.0.1/pub/", "10.1.0.0/16"))
    await store.create("private", token_hash, T0 + 0.5, private=True)
    legacy, public, private = await store.get("legacy"), await store.get("public"), await store.get("private")
    assert legacy == PoolRow("legacy", None, T0)
    assert public == PoolRow("public", hash_token("owner"), T0, False, ("http://10.0.0.1/pub/", "10.1.0.0/16"))
    assert private == PoolRow("private", token_hash, T0 + 0.5, True)
    assert not public.private and private.private
    assert await store.get("missing") is None


async def test_creating_a_pool_twice_is_refused_and_changes_nothing(store: PoolStore) -> None:
    await store.create("farm", hash_token("first"), T0, private=True)
    with pytest.raises(PoolExists) as info:
        await store.create("farm", hash_token("second"), T0 + 10)
    # The name is taken, the database is fine: a conflict the client caused, not a storage failure (503).
    assert isinstance(info.value, Conflict) and not isinstance(info.value, StoreError)
    assert info.value.http_status == 409
    assert "farm" in str(info.value)
    assert await store.get("farm") == PoolRow("farm", hash_token("first"), T0, True)


# -- members -------------------------------------------------------------------------------------------


async def test_a_first_heartbeat_adds_the_member(store: PoolStore) -> None:
    await store.create("farm", None, T0)
    await store.heartbeat("farm", "m1", beat("node-1", site="ams", rack="r7", free=123), T0, epoch=EPOCH)
    assert await store.members("farm") == [
        {
            "pool": "farm",
            "member_id": "m1",
            "name": "node-1",
            "url": "http://node-1.example:7000/",
            "site": "ams",
            "rack": "r7",
            "free": 123,
            "joined": T0,
            "last_seen": T0,
        }
    ]


async def test_a_later_heartbeat_updates_the_member_and_keeps_when_it_joined(store: PoolStore) -> None:
    await store.create("farm", None, T0)
    await store.heartbeat("farm", "m1", beat("node-1", free=100), T0, epoch=EPOCH)
    await store.heartbeat("farm", "m1", beat("renamed", site="ams", rack="r9", free=2**40 + 7), T0 + 12.25, epoch=EPOCH)
    [row] = await store.members("farm")
    assert row["joined"] == T0
    assert row["last_seen"] == T0 + 12.25
    assert (row["name"], row["site"], row["rack"], row["free"]) == ("renamed", "ams", "r9", 2**40 + 7)


async def test_an_identical_heartbeat_is_harmless(store: PoolStore) -> None:
    # Same values at the same time: an UPDATE that changes nothing must still count as found (MySQL
    # reports changed rows unless told otherwise), or the upsert inserts a duplicate.
    await store.create("farm", None, T0)
    await store.heartbeat("farm", "m1", beat("node-1"), T0, epoch=EPOCH)
    await store.heartbeat("farm", "m1", beat("node-1"), T0, epoch=EPOCH)
    assert [m["member_id"] for m in await store.members("farm")] == ["m1"]


async def test_members_are_per_pool_and_in_joining_order(store: PoolStore) -> None:
    await store.create("farm", None, T0)
    await store.create("lab", None, T0)
    await store.heartbeat("farm", "late", beat("late"), T0 + 2, epoch=EPOCH)
    await store.heartbeat("farm", "early", beat("early"), T0 + 1, epoch=EPOCH)
    await store.heartbeat("lab", "early", beat("lab-early", free=5), T0 + 3, epoch=EPOCH)
    await store.heartbeat("farm", "late", beat("late"), T0 + 4, epoch=EPOCH)  # a later beat does not move it
    assert [m["member_id"] for m in await store.members("farm")] == ["early", "late"]
    [lab] = await store.members("lab")
    assert (lab["name"], lab["free"], lab["joined"]) == ("lab-early", 5, T0 + 3)
    assert await store.members("nobody") == []


async def test_leaving_makes_the_member_silent_and_keeps_its_row(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2")
    await store.create("lab", None, T0)
    await store.heartbeat("lab", "m1", beat("m1"), T0, epoch=EPOCH)
    await store.leave("farm", "m1", epoch=EPOCH)
    members = {m["member_id"]: m for m in await store.members("farm")}
    assert members["m1"]["last_seen"] == 0.0
    assert members["m1"]["joined"] == T0
    assert members["m2"]["last_seen"] == T0
    assert [m["last_seen"] for m in await store.members("lab")] == [T0]  # the same id elsewhere stays
    job = await job_in(store)
    state = await store.state("farm", job)
    live = {m.member_id for m in state.members if m.live(T0 + 1, TTL)}
    assert live == {"m2"}
    await store.leave("farm", "stranger", epoch=EPOCH)  # a member that never joined: nothing to do


# -- jobs ----------------------------------------------------------------------------------------------


async def test_a_job_reads_back_as_added(store: PoolStore) -> None:
    await pool_with(store)
    request = PushRequest(URL, "/srv/images/disk.img", 3, DIGEST)
    await store.add_job("farm", JOB, request, T0, epoch=EPOCH)
    assert await store.job("farm", JOB) == JobRow(PushJob(JOB, URL, 3, PushStatus.RUNNING, ""), "farm", request, T0, T0)
    await store.add_job("farm", JOB2, PushRequest(OTHER_URL), T0 + 1, epoch=EPOCH)
    assert await store.job("farm", JOB2) == JobRow(
        PushJob(JOB2, OTHER_URL, None), "farm", PushRequest(OTHER_URL), T0 + 1, T0 + 1
    )


async def test_a_job_is_found_only_in_its_pool(store: PoolStore) -> None:
    await pool_with(store, "farm")
    await pool_with(store, "lab")
    await job_in(store, "farm")
    assert await store.job("lab", JOB) is None
    assert await store.job("farm", JOB2) is None
    assert await store.jobs("lab") == []


async def test_jobs_come_in_creation_order_and_open_only_leaves_out_ended_ones(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1")
    ids = [f"{n:016x}" for n in range(4)]
    for n, job_id in reversed(list(enumerate(ids))):
        await job_in(store, job_id=job_id, now=T0 + n)
    assert [j.job.job_id for j in await store.jobs("farm")] == ids
    rows_ = {j.job.job_id: j for j in await store.jobs("farm")}
    complete, failed, cancelled = rows_[ids[1]], rows_[ids[2]], rows_[ids[3]]
    await store.apply(complete.pool, complete.job, Decision(), PushStatus.COMPLETE, "", T0 + 10, epoch=EPOCH)
    await store.apply(
        failed.pool,
        failed.job,
        Decision(event=JobFailed("HTTP 404")),
        PushStatus.FAILED,
        "HTTP 404",
        T0 + 10,
        epoch=EPOCH,
    )
    await store.cancel(cancelled.pool, cancelled.job.job_id, T0 + 10, epoch=EPOCH)
    assert [j.job.job_id for j in await store.jobs("farm", open_only=True)] == ids[:2]
    assert [j.job.status for j in await store.jobs("farm")] == [
        PushStatus.RUNNING,
        PushStatus.COMPLETE,
        PushStatus.FAILED,
        PushStatus.CANCELLED,
    ]


# -- state ---------------------------------------------------------------------------------------------


async def test_state_holds_the_members_the_assignments_and_no_length_yet(store: PoolStore) -> None:
    await store.create("farm", None, T0)
    await store.heartbeat("farm", "m1", beat("m1", site="fra", rack="r1", free=10), T0, epoch=EPOCH)
    await store.heartbeat("farm", "m2", beat("m2", site="ams", rack="r2", free=20), T0 + 1.5, epoch=EPOCH)
    job = await job_in(store)
    await assign(store, job, "m1", "m2")
    await set_status(store, JOB, "m2", FAILED, error="HTTP 404")
    state = await store.state("farm", job)
    assert sorted(state.members, key=lambda m: m.member_id) == [
        Member("m1", T0, "fra", "r1", 10),
        Member("m2", T0 + 1.5, "ams", "r2", 20),
    ]
    assert state.assignments == {
        "m1": Assignment("m1", ASSIGNED, ""),
        "m2": Assignment("m2", FAILED, "HTTP 404"),
    }
    assert state.length is None


async def test_state_has_the_length_once_the_tracker_knows_the_url(store: PoolStore, tracker: TrackerStore) -> None:
    await pool_with(store, "farm", "m1")
    job = await job_in(store)
    other = await job_in(store, job_id=JOB2, url=OTHER_URL)
    await seed_task(tracker, URL, T0)
    assert (await store.state("farm", job)).length == IDENTITY.length
    assert (await store.state("farm", other)).length is None


async def test_state_only_holds_the_jobs_own_assignments_and_the_pools_members(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2")
    await pool_with(store, "lab", "x1")
    job = await job_in(store)
    other = await job_in(store, job_id=JOB2)
    lab_job = await job_in(store, "lab", job_id="1111111111111111")
    await assign(store, job, "m1")
    await assign(store, other, "m2")
    await assign(store, lab_job, "x1")
    state = await store.state("farm", job)
    assert {m.member_id for m in state.members} == {"m1", "m2"}
    assert set(state.assignments) == {"m1"}


# -- apply ---------------------------------------------------------------------------------------------


async def test_apply_inserts_assigned_rows(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2")
    job = await job_in(store)
    await assign(store, job, "m1", "m2", now=T0 + 3.25)
    assert await statuses(store, job) == {"m1": ASSIGNED, "m2": ASSIGNED}
    for row in await store.assignments(JOB):
        assert (row["done"], row["total"], row["rate"], row["from_origin"], row["from_peers"]) == (0, 0, 0.0, 0, 0)
        assert (row["error"], row["assigned"], row["updated"]) == ("", T0 + 3.25, T0 + 3.25)
    assert await store.job("farm", JOB) == job  # no change of status: the job's row is untouched


async def test_apply_replaces_the_row_of_a_member_assigned_again(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2")
    job = await job_in(store)
    await assign(store, job, "m1", "m2")
    await set_status(store, JOB, "m1", DONE, done=100, total=100, from_origin=100)
    await set_status(store, JOB, "m1", EVICTED, done=100, total=100, error="gone")
    await assign(store, job, "m1", now=T0 + 60)
    rows_ = {r["member_id"]: r for r in await store.assignments(JOB)}
    assert len(rows_) == 2
    again = rows_["m1"]
    assert (again["status"], again["done"], again["total"], again["from_origin"]) == ("assigned", 0, 0, 0)
    assert (again["error"], again["assigned"], again["updated"]) == ("", T0 + 60, T0 + 60)
    assert (rows_["m2"]["status"], rows_["m2"]["assigned"]) == ("assigned", T0)


async def test_apply_marks_left_members(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2", "m3")
    job = await job_in(store)
    other = await job_in(store, job_id=JOB2)
    await assign(store, job, "m1", "m2", "m3")
    await assign(store, other, "m1")
    await set_status(store, JOB, "m1", RUNNING, done=10, total=100, rate=5.0)
    await set_status(store, JOB, "m2", DONE, done=100, total=100)
    await store.apply(job.pool, job.job, Decision(left=("m1", "m2")), PushStatus.RUNNING, "", T0 + 40, epoch=EPOCH)
    rows_ = {r["member_id"]: r for r in await store.assignments(JOB)}
    assert (rows_["m1"]["status"], rows_["m1"]["rate"], rows_["m1"]["updated"]) == ("left", 0.0, T0 + 40)
    assert rows_["m1"]["done"] == 10  # progress so far is kept for the status
    assert (rows_["m2"]["status"], rows_["m3"]["status"]) == ("left", "assigned")
    assert await statuses(store, other) == {"m1": ASSIGNED}  # the same member in another job is untouched


async def test_apply_saves_the_jobs_status_and_error(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1")
    job = await job_in(store)
    await store.apply(
        job.pool, job.job, Decision(event=JobFailed("HTTP 404")), PushStatus.FAILED, "HTTP 404", T0 + 9, epoch=EPOCH
    )
    failed = await store.job("farm", JOB)
    assert failed is not None
    assert (failed.job.status, failed.job.error, failed.created, failed.updated) == (
        PushStatus.FAILED,
        "HTTP 404",
        T0,
        T0 + 9,
    )


async def test_apply_leaves_the_jobs_row_alone_when_its_status_stays(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2")
    job = await job_in(store)
    await assign(store, job, "m1", now=T0 + 5)
    await store.apply(job.pool, job.job, Decision(left=("m1",)), job.job.status, job.job.error, T0 + 6, epoch=EPOCH)
    assert await store.job("farm", JOB) == job


async def test_apply_in_one_go(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2", "m3")
    job = await job_in(store, replicas=1)
    await assign(store, job, "m1", "m2")
    await set_status(store, JOB, "m1", DONE)
    await store.apply(job.pool, job.job, Decision(), PushStatus.COMPLETE, "", T0 + 1, epoch=EPOCH)
    decision = Decision(assign=("m3",), left=("m1",))
    await store.apply(
        "farm", PushJob(JOB, URL, 1, PushStatus.COMPLETE), decision, PushStatus.RUNNING, "", T0 + 2, epoch=EPOCH
    )
    assert await statuses(store, job) == {"m1": LEFT, "m2": ASSIGNED, "m3": ASSIGNED}
    reopened = await store.job("farm", JOB)
    assert reopened is not None and (reopened.job.status, reopened.updated) == (PushStatus.RUNNING, T0 + 2)


async def test_decide_and_apply_as_the_tracker_does(store: PoolStore) -> None:
    """Load, decide, apply, load again: the stored state is what decide saw plus what it decided, so a
    second decision has nothing left to do."""
    await store.create("farm", None, T0)
    for n, site in enumerate(["fra", "fra", "ams", "ams"]):
        await store.heartbeat("farm", f"m{n}", beat(f"m{n}", site=site, free=1000 - n), T0, epoch=EPOCH)
    job = await job_in(store, replicas=2)
    now = T0 + 1
    for _ in range(2):
        state = await store.state("farm", job)
        decision = decide(job.job, state.members, state.assignments, now=now, ttl=TTL, length=state.length)
        status = advance_job(job.job.status, decision.event) if decision.event else job.job.status
        await store.apply(job.pool, job.job, decision, status, job.job.error, now, epoch=EPOCH)
        refreshed = await store.job("farm", JOB)
        assert refreshed is not None
        job = refreshed
    assert await statuses(store, job) == {"m0": ASSIGNED, "m2": ASSIGNED}  # one per site, the most room
    state = await store.state("farm", job)
    assert decide(job.job, state.members, state.assignments, now=now, ttl=TTL) == Decision()


# -- cancel and report ---------------------------------------------------------------------------------


async def test_cancel_stops_running_and_assigned_members_and_keeps_the_rest(store: PoolStore) -> None:
    members = ["assigned", "running", "done", "failed", "evicted", "left"]
    await pool_with(store, "farm", *members)
    job = await job_in(store)
    other = await job_in(store, job_id=JOB2)
    await assign(store, job, *members)
    await assign(store, other, "running")
    await set_status(store, JOB, "running", RUNNING, done=5, total=10, rate=2.5)
    await set_status(store, JOB2, "running", RUNNING, done=5, total=10, rate=2.5)
    await set_status(store, JOB, "done", DONE, done=10, total=10)
    await set_status(store, JOB, "failed", FAILED, error="HTTP 500")
    await set_status(store, JOB, "evicted", EVICTED)
    await store.apply(job.pool, job.job, Decision(left=("left",)), PushStatus.RUNNING, "", T0, epoch=EPOCH)
    await store.cancel("farm", JOB, T0 + 30, epoch=EPOCH)
    rows_ = {r["member_id"]: r for r in await store.assignments(JOB)}
    assert {mid: r["status"] for mid, r in rows_.items()} == {
        "assigned": "cancelled",
        "running": "cancelled",
        "done": "done",
        "failed": "failed",
        "evicted": "evicted",
        "left": "left",
    }
    assert (rows_["running"]["rate"], rows_["running"]["done"], rows_["running"]["updated"]) == (0.0, 5, T0 + 30)
    assert rows_["done"]["updated"] == T0
    cancelled = await store.job("farm", JOB)
    assert cancelled is not None and (cancelled.job.status, cancelled.updated) == (PushStatus.CANCELLED, T0 + 30)
    assert await statuses(store, other) == {"running": RUNNING}
    untouched = await store.job("farm", JOB2)
    assert untouched is not None and untouched.job.status is PushStatus.RUNNING


async def test_a_report_saves_status_and_counters(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2")
    job = await job_in(store)
    await assign(store, job, "m1", "m2")
    report = MemberReport(RUNNING, done=2**33, total=2**34, rate=1.5e9, from_origin=2**32, from_peers=2**32)
    await store.report("farm", JOB, "m1", RUNNING, report, T0 + 4.5, epoch=EPOCH)
    rows_ = {r["member_id"]: r for r in await store.assignments(JOB)}
    m1 = rows_["m1"]
    assert (m1["status"], m1["done"], m1["total"], m1["rate"]) == ("running", 2**33, 2**34, 1.5e9)
    assert (m1["from_origin"], m1["from_peers"], m1["error"]) == (2**32, 2**32, "")
    assert (m1["assigned"], m1["updated"]) == (T0, T0 + 4.5)
    assert (rows_["m2"]["status"], rows_["m2"]["updated"]) == ("assigned", T0)


async def test_a_report_keeps_a_rate_only_while_running(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1")
    job = await job_in(store)
    await assign(store, job, "m1")
    await store.report("farm", JOB, "m1", DONE, MemberReport(DONE, done=9, total=9, rate=7.0), T0 + 1, epoch=EPOCH)
    [row] = await store.assignments(JOB)
    assert (row["status"], row["rate"]) == ("done", 0.0)
    # The stored status is the one the caller computed (core.pool.advance), not the report's own.
    await store.report(
        "farm", JOB, "m1", FAILED, MemberReport(FAILED, error="disk full", rate=3.0), T0 + 2, epoch=EPOCH
    )
    [row] = await store.assignments(JOB)
    assert (row["status"], row["rate"], row["error"], row["done"]) == ("failed", 0.0, "disk full", 0)
    assert (await store.state("farm", job)).assignments["m1"] == Assignment("m1", FAILED, "disk full")


async def test_progress_saves_the_counters_of_a_running_assignment_only(store: PoolStore) -> None:
    await pool_with(store, "farm", "m1", "m2", "m3")
    job = await job_in(store)
    await assign(store, job, "m1", "m2", "m3")
    await set_status(store, JOB, "m1", RUNNING, T0 + 1)
    await set_status(store, JOB, "m3", RUNNING, T0 + 1)
    await store.cancel(
        "farm", JOB, T0 + 2, epoch=EPOCH
    )  # m1 and m3 cancelled: their next progress must not revive them
    job2 = await job_in(store, job_id=JOB2)
    await assign(store, job2, "m1", "m2")
    await set_status(store, JOB2, "m1", RUNNING, T0 + 3)
    report = MemberReport(RUNNING, done=2**33, total=2**34, rate=1.5e9, from_origin=2**32, from_peers=2**32)

    assert await store.progress("farm", JOB2, "m1", report, T0 + 4.5) is True
    [m1] = [r for r in await store.assignments(JOB2) if r["member_id"] == "m1"]
    assert (m1["status"], m1["done"], m1["total"], m1["rate"]) == ("running", 2**33, 2**34, 1.5e9)
    assert (m1["from_origin"], m1["from_peers"], m1["updated"]) == (2**32, 2**32, T0 + 4.5)

    # Not running (assigned, cancelled), no such member, or the job of another pool: nothing is written,
    # and the caller decides the report under the pool's lock.
    before = await store.assignments(JOB), await store.assignments(JOB2)
    assert await store.progress("farm", JOB2, "m2", report, T0 + 5) is False
    assert await store.progress("farm", JOB, "m3", report, T0 + 5) is False
    assert await store.progress("farm", JOB2, "m9", report, T0 + 5) is False
    await store.create("lab", None, T0)
    assert await store.progress("lab", JOB2, "m1", report, T0 + 5) is False
    assert (await store.assignments(JOB), await store.assignments(JOB2)) == before


# -- remove --------------------------------------------------------------------------------------------


async def test_remove_deletes_everything_of_the_pool_and_nothing_else(store: PoolStore, tracker: TrackerStore) -> None:
    for name, prefix in (("farm", "a"), ("lab", "b")):
        await pool_with(store, name, "m1", "m2")
        for n in range(2):
            job = await job_in(store, name, job_id=f"{prefix * 15}{n}")
            await assign(store, job, "m1", "m2")
    farm_jobs = [j.job.job_id for j in await store.jobs("farm")]
    lab_jobs = [j.job.job_id for j in await store.jobs("lab")]
    assert len(farm_jobs) == len(lab_jobs) == 2 and not set(farm_jobs) & set(lab_jobs)
    lab_before = [await store.assignments(job_id) for job_id in lab_jobs]

    await store.remove("farm", epoch=EPOCH)

    assert await store.get("farm") is None
    assert await store.members("farm") == []
    assert await store.jobs("farm") == []
    for job_id in farm_jobs:
        assert await store.assignments(job_id) == []
    assert await store.member_work("farm", "m1") == []
    assert await rows(tracker, pools) == 1
    assert await rows(tracker, pool_members) == 2
    assert await rows(tracker, pool_jobs) == 2
    assert await rows(tracker, pool_assignments) == 4

    assert await store.get("lab") == PoolRow("lab", None, T0)
    assert [m["member_id"] for m in await store.members("lab")] == ["m1", "m2"]
    assert [j.job.job_id for j in await store.jobs("lab")] == lab_jobs
    assert [await store.assignments(job_id) for job_id in lab_jobs] == lab_before
    await store.create("farm", None, T0 + 100)  # the name is free again
    assert await store.jobs("farm") == []


async def test_removing_a_missing_pool_is_harmless(store: PoolStore, tracker: TrackerStore) -> None:
    """On a database trackers share, a pool without a row has no epoch: its removal is left out, as any write
    of it is (core.ownership.EpochFence). Either way, nothing else is touched."""
    await pool_with(store, "farm", "m1")
    if tracker.shared:
        with pytest.raises(PoolMoved):
            await store.remove("nothing", epoch=EPOCH)
    else:
        await store.remove("nothing", epoch=EPOCH)
    assert await rows(tracker, pools) == 1 and await rows(tracker, pool_members, "farm") == 1
