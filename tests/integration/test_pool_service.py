"""The tracker's pool service (tracker.pools.Pools) in process, over a real SQLite store, with a fake clock:
which changes wake the members long-polling a pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shoal.core.errors import IllegalTransition
from shoal.core.ownership import CREATED_EPOCH
from shoal.core.pool import MemberStatus
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.storage.tracker_store import TrackerStore
from shoal.testing.clock import FakeClock
from shoal.testing.poll import DEADLINE, wait_until_async
from shoal.testing.watched import WatchedEvent, WatchedLock
from shoal.tracker.pools import Pools, pool_key

POOL = "lab"
# A long-poll waits at most TTL / 3: far longer than any wait of these tests, so a poll that returns was woken.
TTL = 3600.0
URL = "http://origin.example/disk.img"


@pytest.fixture
async def pools(tmp_path: Path) -> AsyncIterator[Pools]:
    async with TrackerStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
        service = Pools(store, FakeClock(), member_ttl=TTL)
        await service.create(POOL, private=False)
        yield service


def beat(name: str) -> Heartbeat:
    return Heartbeat(name=name, url=f"http://{name}.example:7000/", site="", rack="", free=1 << 40)


async def join(pools: Pools, *names: str) -> int:
    """Heartbeat each member once (no wait); the pool's version afterwards."""
    reply: dict[str, object] = {}
    for name in names:
        reply = await pools.heartbeat(POOL, name, beat(name), version=None, wait=0)
    version = reply.version
    assert isinstance(version, int)
    return version


async def parked_poll(pools: Pools, member: str, version: int) -> asyncio.Future[dict[str, object]]:
    """``member``'s long-poll at ``version``, once it waits on the pool's change (not merely started)."""
    changed = pools._pool(POOL).changed = WatchedEvent()  # bump() replaces it with a plain one
    poll = asyncio.ensure_future(pools.heartbeat(POOL, member, beat(member), version=version, wait=TTL / 3))
    await wait_until_async(lambda: changed.waiting == 1 or poll.done(), f"{member}'s long-poll to wait")
    assert not poll.done(), poll.result()  # nothing has changed yet: the poll waits
    return poll


async def woken(pools: Pools, member: str, version: int, change: Callable[[], Awaitable[object]]) -> bool:
    """Whether ``member``'s long-poll at ``version`` is woken by ``change()``.

    A change wakes the long-polls exactly when it moves the pool's version, which a heartbeat that does not
    wait reads back at once; a woken poll then returns well before its wait (``TTL / 3``) is out."""
    poll = await parked_poll(pools, member, version)
    try:
        await change()
        if (await pools.heartbeat(POOL, member, beat(member), version=None, wait=0)).version == version:
            return False
        reply = await asyncio.wait_for(poll, DEADLINE)
        return bool(reply.version != version)
    finally:
        poll.cancel()


async def test_a_push_wakes_every_long_poll_with_its_work(pools: Pools) -> None:
    version = await join(pools, "m1", "m2")
    poll = await parked_poll(pools, "m1", version)
    job_id = await pools.push(POOL, PushRequest(url=URL))
    reply = await asyncio.wait_for(poll, DEADLINE)  # woken: its wait is far longer
    assert reply.version != version
    assert [(w.job, w.status.value) for w in reply.work] == [(job_id, "assigned")]


async def test_reports_that_give_nobody_work_wake_nobody(pools: Pools) -> None:
    await join(pools, "m1", "m2")
    job_id = await pools.push(POOL, PushRequest(url=URL))
    version = await join(pools, "m1", "m2")
    running = MemberReport(MemberStatus.RUNNING, done=1, total=2)
    assert not await woken(pools, "m2", version, lambda: pools.report(POOL, job_id, "m1", running))
    done = MemberReport(MemberStatus.DONE, done=2, total=2)
    assert not await woken(pools, "m2", version, lambda: pools.report(POOL, job_id, "m1", done))
    assert await pools.report(POOL, job_id, "m2", done) is MemberStatus.DONE
    job = await pools.job(POOL, job_id)
    assert job.job.status.value == "complete"  # the job completed, and still nobody was woken for it


async def test_a_lost_replica_wakes_the_member_given_the_new_copy(pools: Pools) -> None:
    await join(pools, "m1", "m2")
    job_id = await pools.push(POOL, PushRequest(url=URL, replicas=1))
    status = await pools.job_status(POOL, await pools.job(POOL, job_id))
    (holder,) = [m.member for m in status.members]
    other = "m2" if holder == "m1" else "m1"
    await pools.report(POOL, job_id, holder, MemberReport(MemberStatus.DONE, done=2, total=2))
    version = await join(pools, other)
    evicted = MemberReport(MemberStatus.EVICTED, done=0, total=2)
    assert await woken(pools, other, version, lambda: pools.report(POOL, job_id, holder, evicted))
    reply = await pools.heartbeat(POOL, other, beat(other), version=None, wait=0)
    assert [(w.job, w.status.value) for w in reply.work] == [(job_id, "assigned")]


async def test_progress_of_a_running_member_does_not_wait_for_the_pools_lock(pools: Pools) -> None:
    await join(pools, "m1", "m2")
    job_id = await pools.push(POOL, PushRequest(url=URL))
    running = MemberReport(MemberStatus.RUNNING, done=1, total=4)
    assert await pools.report(POOL, job_id, "m1", running) is MemberStatus.RUNNING  # assigned -> running, locked
    lock = pools._pool(POOL).lock = WatchedLock()
    async with lock:  # a long decision of another member's report, say
        later = MemberReport(MemberStatus.RUNNING, done=3, total=4)
        # Held for good meanwhile: a report that waited for the lock would time out here.
        assert await asyncio.wait_for(pools.report(POOL, job_id, "m1", later), DEADLINE) is MemberStatus.RUNNING
        assert lock.waiting == 0
        # m2's first report changes its status: that one is decided under the lock, so it waits.
        first = asyncio.ensure_future(pools.report(POOL, job_id, "m2", running))
        await wait_until_async(lambda: lock.waiting == 1 or first.done(), "m2's report to reach the lock")
        assert not first.done()
    assert await asyncio.wait_for(first, DEADLINE) is MemberStatus.RUNNING
    job = await pools.job(POOL, job_id)
    m1 = next(m for m in (await pools.job_status(POOL, job)).members if m.member == "m1")
    assert m1.done == 3


async def test_progress_of_a_cancelled_member_is_refused_as_before(pools: Pools) -> None:
    await join(pools, "m1")
    job_id = await pools.push(POOL, PushRequest(url=URL))
    running = MemberReport(MemberStatus.RUNNING, done=1, total=4)
    await pools.report(POOL, job_id, "m1", running)
    await pools.cancel(POOL, job_id)
    with pytest.raises(IllegalTransition):
        await pools.report(POOL, job_id, "m1", running)


async def test_a_pool_another_tracker_took_wakes_its_long_polls(pools: Pools) -> None:
    version = await join(pools, "m1")
    assert pools.held() == [pool_key(POOL)]
    poll = await parked_poll(pools, "m1", version)
    pools.drop(["0123" * 10, pool_key(POOL)])  # a task's id and the pool's: the pool goes, its poll ends
    reply = await asyncio.wait_for(poll, DEADLINE)
    assert reply.version != version and pools.held() == []


async def test_only_the_pools_owner_sweeps_it(pools: Pools) -> None:
    await join(pools, "m1", "m2")
    job_id = await pools.push(POOL, PushRequest(url=URL, replicas=1))
    (holder,) = [m.member for m in (await pools.job_status(POOL, await pools.job(POOL, job_id))).members]
    other = "m2" if holder == "m1" else "m1"
    clock = pools.clock
    assert isinstance(clock, FakeClock)
    clock.advance(TTL + 1)  # the holder fell silent; the other member did not
    await pools.store.heartbeat(POOL, other, beat(other), clock(), epoch=CREATED_EPOCH)  # a SQLite file's: lands

    def states() -> dict[str, str]:
        return {m.member: m.status.value for m in status.members}

    pools.owns = lambda name: name != POOL  # another tracker sharing the database owns the pool
    await pools.sweep()
    status = await pools.job_status(POOL, await pools.job(POOL, job_id))
    assert states() == {holder: "assigned"}, "decided by a tracker that does not own the pool"
    pools.owns = lambda name: True
    await pools.sweep()
    status = await pools.job_status(POOL, await pools.job(POOL, job_id))
    assert states() == {holder: "left", other: "assigned"}
