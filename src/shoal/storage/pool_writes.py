"""The SQL of a pool's writes, fenced by the pool's ownership epoch (tracker.pools has the rule, "A pool's
writes carry its epoch"; storage.pool_store opens them).

A batch is one transaction holding the writes of one change of one pool (a heartbeat, a push and its first
decision, a report and the decision it brings). On a database trackers share it first locks the pool's row
and reads its epoch (:func:`fence`), so no take-over by another tracker comes between that check and the
writes behind it; a batch whose epoch is not the pool's is left out whole (PoolMoved). On a SQLite file,
which one tracker owns, nobody else takes a pool over and nothing is read (core.ownership.EpochFence).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.core.errors import PoolMoved
from shoal.core.ownership import EpochFence
from shoal.core.pool import Decision, MemberStatus, PushJob, PushStatus
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.storage.schema import pool_assignments, pool_jobs, pool_members, pools


async def take_over(conn: AsyncConnection, name: str, *, shared: bool) -> int | None:
    """Take the pool over, in the caller's transaction: on a database trackers share, bump its epoch (the bump
    waits for a batch of another tracker's that holds the row, and every read after it sees what that batch
    wrote). The epoch this tracker's writes of the pool carry from now on; None when there is no such pool."""
    if shared:
        bump = update(pools).where(pools.c.name == name).values(epoch=pools.c.epoch + 1)
        if (await conn.execute(bump)).rowcount == 0:
            return None
    epoch: int | None = (await conn.execute(select(pools.c.epoch).where(pools.c.name == name))).scalar()
    return epoch


async def fence(conn: AsyncConnection, name: str, epoch: int | None, *, shared: bool) -> None:
    """PoolMoved unless writes of the pool ``name`` decided by a tracker whose take-over gave it ``epoch``
    (None: it did not take the pool over) land, in the caller's transaction: on a database trackers share,
    the pool's row is locked until the transaction ends (a pool whose row is gone has no epoch)."""
    stored = None
    if shared:
        found = await conn.execute(select(pools.c.name, pools.c.epoch).where(pools.c.name == name).with_for_update())
        stored = {row.name: row.epoch for row in found}
    if not EpochFence(stored).lands(name, epoch):
        raise PoolMoved(name)


def report_values(report: MemberReport, status: MemberStatus, now: float) -> dict[str, Any]:
    """The assignment columns a member's report sets; a rate is kept only while running."""
    return {
        "done": report.done,
        "total": report.total,
        "rate": report.rate if status is MemberStatus.RUNNING else 0.0,
        "from_origin": report.from_origin,
        "from_peers": report.from_peers,
        "from_rack": report.from_rack,
        "from_racks": report.from_racks,
        "from_sites": report.from_sites,
        "error": report.error,
        "updated": now,
    }


class PoolWrites:
    """The writes of one batch of the pool ``pool``, on the batch's connection, its fence passed."""

    def __init__(self, conn: AsyncConnection, pool: str) -> None:
        self.conn = conn
        self.pool = pool

    async def remove(self) -> None:
        """The pool, its members, jobs and assignments."""
        conn, name = self.conn, self.pool
        job_ids = select(pool_jobs.c.job_id).where(pool_jobs.c.pool == name)
        await conn.execute(delete(pool_assignments).where(pool_assignments.c.job_id.in_(job_ids)))
        await conn.execute(delete(pool_jobs).where(pool_jobs.c.pool == name))
        await conn.execute(delete(pool_members).where(pool_members.c.pool == name))
        await conn.execute(delete(pools).where(pools.c.name == name))

    async def heartbeat(self, member_id: str, beat: Heartbeat, now: float) -> None:
        values = {
            "name": beat.name,
            "url": beat.url,
            "site": beat.site,
            "rack": beat.rack,
            "free": beat.free,
            "last_seen": now,
        }
        where = and_(pool_members.c.pool == self.pool, pool_members.c.member_id == member_id)
        result = await self.conn.execute(update(pool_members).where(where).values(**values))
        if result.rowcount == 0:
            await self.conn.execute(
                pool_members.insert().values(pool=self.pool, member_id=member_id, joined=now, **values)
            )

    async def leave(self, member_id: str) -> None:
        """The member said it is leaving: it is no longer live (its row stays for the status)."""
        await self.conn.execute(
            update(pool_members)
            .where(and_(pool_members.c.pool == self.pool, pool_members.c.member_id == member_id))
            .values(last_seen=0.0)
        )

    async def add_job(self, job_id: str, request: PushRequest, now: float) -> None:
        await self.conn.execute(
            pool_jobs.insert().values(
                job_id=job_id,
                pool=self.pool,
                url=request.url,
                dest=request.dest,
                replicas=request.replicas,
                digest=request.digest,
                status=PushStatus.RUNNING.value,
                error="",
                created=now,
                updated=now,
            )
        )

    async def apply(self, job: PushJob, decision: Decision, status: PushStatus, error: str, now: float) -> None:
        """Save what core.pool.decide decided for ``job``: new assignments, left members, the job's status."""
        conn = self.conn
        if decision.left:
            await conn.execute(
                update(pool_assignments)
                .where(
                    and_(
                        pool_assignments.c.job_id == job.job_id,
                        pool_assignments.c.member_id.in_(decision.left),
                    )
                )
                .values(status=MemberStatus.LEFT.value, rate=0.0, updated=now)
            )
        if decision.assign:
            # A member assigned again (it had left, or its copy was evicted) starts over.
            await conn.execute(
                delete(pool_assignments).where(
                    and_(
                        pool_assignments.c.job_id == job.job_id,
                        pool_assignments.c.member_id.in_(decision.assign),
                    )
                )
            )
            await conn.execute(
                pool_assignments.insert(),
                [
                    {
                        "job_id": job.job_id,
                        "member_id": member_id,
                        "status": MemberStatus.ASSIGNED.value,
                        "done": 0,
                        "total": 0,
                        "rate": 0.0,
                        "from_origin": 0,
                        "from_peers": 0,
                        "from_rack": 0,
                        "from_racks": 0,
                        "from_sites": 0,
                        "error": "",
                        "assigned": now,
                        "updated": now,
                    }
                    for member_id in decision.assign
                ],
            )
        if status is not job.status or error != job.error:
            await conn.execute(
                update(pool_jobs)
                .where(pool_jobs.c.job_id == job.job_id)
                .values(status=status.value, error=error, updated=now)
            )

    async def cancel(self, job_id: str, now: float) -> None:
        await self.conn.execute(
            update(pool_jobs)
            .where(and_(pool_jobs.c.pool == self.pool, pool_jobs.c.job_id == job_id))
            .values(status=PushStatus.CANCELLED.value, updated=now)
        )
        await self.conn.execute(
            update(pool_assignments)
            .where(
                and_(
                    pool_assignments.c.job_id == job_id,
                    pool_assignments.c.status.in_([s.value for s in (MemberStatus.ASSIGNED, MemberStatus.RUNNING)]),
                )
            )
            .values(status=MemberStatus.CANCELLED.value, rate=0.0, updated=now)
        )

    async def report(self, job_id: str, member_id: str, status: MemberStatus, report: MemberReport, now: float) -> None:
        """Save a member's report; ``status`` is the assignment's new status (core.pool.advance's)."""
        await self.conn.execute(
            update(pool_assignments)
            .where(and_(pool_assignments.c.job_id == job_id, pool_assignments.c.member_id == member_id))
            .values(status=status.value, **report_values(report, status, now))
        )
