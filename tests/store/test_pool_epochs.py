"""Two trackers' pool services on one database, one of them deciding a pool it lost: the pool's ownership
epoch fences its writes (tracker.pools, "A pool's writes carry its epoch"). A take-over by the new owner
bumps the epoch; a batch decided before it is left out whole (PoolMoved), the stale tracker lets go of the
pool, and the new owner's writes land. Run on every backend that two trackers can share, but the last two
tests, which hold wherever a tracker handles a pool it does not own."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from shoal.core.errors import PoolMoved
from shoal.core.pool import MEMBER_SECRET_HEX, MemberStatus, PushStatus, member_id_for
from shoal.core.pool_api import MEMBER_SECRET
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.storage.pool_store import PoolStore
from shoal.storage.pool_writes import PoolWrites
from shoal.storage.schema import pools as pools_table
from shoal.storage.tracker_store import TrackerStore
from shoal.testing.clock import FakeClock
from shoal.testing.http import serving
from shoal.testing.poll import wait_until_async
from shoal.tracker import pool_routes
from shoal.tracker.pools import Pools, pool_key

from .driver import T0

POOL = "farm"
TTL = 30.0
URL = "http://origin.example/images/disk.img"


class HeldWrites(PoolStore):
    """A pool store whose write batches wait until the test lets them run: a batch decided before the pool
    moved, committing after its new owner took it over."""

    def __init__(self, store: TrackerStore) -> None:
        super().__init__(store)
        self.go = asyncio.Event()
        self.go.set()
        self.waiting = 0

    @asynccontextmanager
    async def writes(self, pool: str, epoch: int | None) -> AsyncIterator[PoolWrites]:
        self.waiting += 1
        try:
            await self.go.wait()
        finally:
            self.waiting -= 1
        async with super().writes(pool, epoch) as writes:
            yield writes


def shared_only(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("one process's database: no other tracker takes its pools over")


def beat(name: str, free: int = 1 << 40) -> Heartbeat:
    return Heartbeat(name=name, url=f"http://{name}.example:7000/", site="fra", rack="r1", free=free)


async def join(pools: Pools, member: str, free: int = 1 << 40) -> None:
    await pools.heartbeat(POOL, member, beat(member, free), version=None, wait=0)


async def epoch(store: TrackerStore) -> int:
    async with store.connection() as conn:
        return int((await conn.execute(select(pools_table.c.epoch).where(pools_table.c.name == POOL))).scalar_one())


async def assignments(pools: Pools, job_id: str) -> dict[str, MemberStatus]:
    job = await pools.job(POOL, job_id)
    return {a.member_id: a.status for a in (await pools.store.state(POOL, job)).assignments.values()}


@asynccontextmanager
async def two_trackers(db_url: str) -> AsyncIterator[tuple[Pools, HeldWrites, Pools, FakeClock]]:
    """The late tracker's pool service (its batches held at the test's word), the owner's, and their clock."""
    clock = FakeClock(T0)
    async with TrackerStore(db_url) as late_store, TrackerStore(db_url) as owner_store:
        late = Pools(late_store, clock, member_ttl=TTL)
        held = HeldWrites(late_store)
        late.store = held
        owner = Pools(owner_store, clock, member_ttl=TTL)
        await late.create(POOL, private=False)
        yield late, held, owner, clock


async def test_a_decision_made_before_a_take_over_is_left_out_and_the_owners_land(db_url: str) -> None:
    """The late tracker's sweep gives the job's one missing copy to a member, the new owner gives it to
    another: were both to land, two members would fetch the copy that one should."""
    shared_only(db_url)
    async with two_trackers(db_url) as (late, held, owner, clock):
        await join(late, "m1", free=20)
        await join(late, "m2", free=10)
        assert await epoch(late.store.store) == 1, "the late tracker took the pool over"
        job_id = await late.push(POOL, PushRequest(url=URL, replicas=1))
        assert await assignments(late, job_id) == {"m1": MemberStatus.ASSIGNED}, "the most room"
        clock.advance(TTL / 2)
        await join(late, "m2", free=10)
        clock.advance(TTL / 2 + 1)  # m1 fell silent; m2 did not
        held.go.clear()
        sweep = asyncio.ensure_future(late.sweep())
        await wait_until_async(lambda: held.waiting == 1, "the late tracker's decision held")
        # Meanwhile the pool moves: its new owner takes it over and decides with a member of its own.
        await join(owner, "m3", free=30)
        assert await epoch(owner.store.store) == 2
        assert await assignments(owner, job_id) == {"m1": MemberStatus.LEFT, "m3": MemberStatus.ASSIGNED}
        held.go.set()
        await sweep  # left out (PoolMoved), and let go of: the sweep goes on with the other pools
        assert await assignments(owner, job_id) == {"m1": MemberStatus.LEFT, "m3": MemberStatus.ASSIGNED}
        assert late.held() == [], "the late tracker let go of the pool"
        # The owner's writes go on landing.
        report = MemberReport(MemberStatus.RUNNING, done=1, total=10, rate=1.0)
        assert await owner.report(POOL, job_id, "m3", report) is MemberStatus.RUNNING
        assert await assignments(owner, job_id) == {"m1": MemberStatus.LEFT, "m3": MemberStatus.RUNNING}
        assert owner.held() == [pool_key(POOL)]


async def test_a_report_decided_before_a_take_over_does_not_undo_the_owners_cancel(db_url: str) -> None:
    """A member's last report reached the late tracker, which decides the job complete; the new owner takes a
    cancel meanwhile. Were the late batch to land, the cancelled job would come back complete."""
    shared_only(db_url)
    async with two_trackers(db_url) as (late, held, owner, _):
        await join(late, "m1")
        job_id = await late.push(POOL, PushRequest(url=URL))
        running = MemberReport(MemberStatus.RUNNING, done=1, total=10, rate=1.0)
        assert await late.report(POOL, job_id, "m1", running) is MemberStatus.RUNNING
        held.go.clear()
        done = MemberReport(MemberStatus.DONE, done=10, total=10)
        report = asyncio.ensure_future(late.report(POOL, job_id, "m1", done))
        await wait_until_async(lambda: held.waiting == 1, "the late tracker's report held")
        await owner.cancel(POOL, job_id)
        held.go.set()
        with contextlib.suppress(PoolMoved):
            await report
        job = await owner.job(POOL, job_id)
        assert job.job.status is PushStatus.CANCELLED
        assert await assignments(owner, job_id) == {"m1": MemberStatus.CANCELLED}
        assert report.exception() is not None, "the late report was answered as if it had landed"
        assert isinstance(report.exception(), PoolMoved)
        assert late.held() == []


async def test_a_push_left_out_leaves_no_job_behind(db_url: str) -> None:
    """A push's job and its first decision are one batch: a push answered 503 wrote no job, so the client's
    retry does not make a second."""
    shared_only(db_url)
    async with two_trackers(db_url) as (late, held, owner, _):
        await join(late, "m1")
        held.go.clear()
        push = asyncio.ensure_future(late.push(POOL, PushRequest(url=URL)))
        await wait_until_async(lambda: held.waiting == 1, "the late tracker's push held")
        await join(owner, "m2")
        held.go.set()
        with pytest.raises(PoolMoved):
            await push
        assert await owner.store.jobs(POOL) == []
        assert late.held() == []


async def test_a_tracker_handling_a_pool_it_does_not_own_bumps_nothing_and_writes_nothing(db_url: str) -> None:
    """A request that waited across a move: the tracker that no longer owns the pool takes nothing over, its
    heartbeat is left out, and the owner's epoch and writes stand."""
    async with TrackerStore(db_url) as owner_store, TrackerStore(db_url) as other_store:
        owner = Pools(owner_store, FakeClock(T0), member_ttl=TTL)
        await owner.create(POOL, private=False)
        await join(owner, "m1")
        before = await epoch(owner_store)
        other = Pools(other_store, FakeClock(T0), member_ttl=TTL)
        other.owns = lambda name: False
        with pytest.raises(PoolMoved):
            await join(other, "m2")
        assert await epoch(owner_store) == before
        assert [m["member_id"] for m in await owner.store.members(POOL)] == ["m1"]
        assert other.held() == []
        await join(owner, "m2")
        assert [m["member_id"] for m in await owner.store.members(POOL)] == ["m1", "m2"]


async def test_a_change_left_out_is_answered_503_with_retry_after(db_url: str) -> None:
    """At the edge: the pool's routes answer a change left out (PoolMoved) 503 with Retry-After, and nothing
    of it was written; reading the pool needs no epoch."""
    async with TrackerStore(db_url) as owner_store, TrackerStore(db_url) as other_store:
        owner = Pools(owner_store, FakeClock(T0), member_ttl=TTL)
        await owner.create(POOL, private=False)
        other = Pools(other_store, FakeClock(T0), member_ttl=TTL)
        other.owns = lambda name: False
        app = web.Application()
        pool_routes.add_routes(app, other)
        secret = secrets.token_hex(MEMBER_SECRET_HEX // 2)
        member = member_id_for(secret)
        body = {"name": "n1", "url": "http://127.0.0.1:7000/", "site": "", "rack": "", "free": 1 << 40}
        async with serving(app) as url, aiohttp.ClientSession() as session:
            async with session.post(
                f"{url}/v1/pools/{POOL}/members/{member}", json=body, headers={MEMBER_SECRET: secret}
            ) as reply:
                assert reply.status == 503, await reply.text()
                assert reply.headers["Retry-After"] == "1"
                assert "taken over" in (await reply.json())["error"]
            async with session.get(f"{url}/v1/pools/{POOL}") as reply:
                assert reply.status == 200
                assert (await reply.json())["members"] == []
