"""Pools, their members and push jobs in the tracker's SQL store (tables of schema v3).

The store only loads and saves: which member gets an assignment and what becomes of a job is
shoal.core.pool's decision, which the tracker applies here, one transaction per change.

Every write of a pool's rows but its creation and a running member's progress carries the pool's epoch
(tracker.pools has the rule, "A pool's writes carry its epoch"): :meth:`PoolStore.take_over` bumps it, and a
write transaction (:meth:`PoolStore.writes`, a batch of one change's writes) first locks the pool's row and
reads its epoch, and is left out whole (PoolMoved) when the epoch is not the one the writer carries
(core.ownership.EpochFence).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.core.errors import PoolExists
from shoal.core.ids import task_id_for_url
from shoal.core.ownership import CREATED_EPOCH
from shoal.core.pool import (
    Assignment,
    Decision,
    Member,
    MemberStatus,
    PushJob,
    PushStatus,
)
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.storage import pool_writes
from shoal.storage.pool_writes import PoolWrites, report_values
from shoal.storage.schema import pool_assignments, pool_jobs, pool_members, pools, tasks
from shoal.storage.tracker_store import TrackerStore


@dataclass(frozen=True, slots=True)
class PoolRow:
    name: str
    token_hash: str | None
    """The SHA-256 of the pool's token; None for a pool from before owners (schema v9), which has none."""
    created: float
    private: bool = False
    allow: tuple[str, ...] = ()
    """The push allow-list (core.push_policy); empty: none."""


def _pool(row: Any) -> PoolRow:
    allow = tuple(json.loads(row.allow)) if row.allow else ()
    return PoolRow(row.name, row.token_hash, row.created, bool(row.private), allow)


@dataclass(frozen=True, slots=True)
class JobRow:
    job: PushJob
    pool: str
    request: PushRequest
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class PoolState:
    """What core.pool.decide needs about one job: the pool's members and the job's assignments."""

    members: list[Member]
    assignments: dict[str, Assignment]
    length: int | None


@dataclass(frozen=True, slots=True)
class PoolFigures:
    """One pool's counts (``shoal pool ls``); every pool's added up are :class:`PoolCounts`' (metrics)."""

    members_live: int = 0
    """Members heard from within the member TTL."""
    jobs: Mapping[str, int] = field(default_factory=dict)
    """Push jobs by status (core.pool.PushStatus's values), however old."""

    @property
    def jobs_running(self) -> int:
        return self.jobs.get(PushStatus.RUNNING.value, 0)


@dataclass(frozen=True, slots=True)
class PoolCounts:
    """Every pool's figures together (the tracker's /metrics): :class:`PoolFigures` added up, and the
    members' states in running jobs."""

    jobs: dict[str, int]
    """Push jobs by status (core.pool.PushStatus's values), however old."""
    assignments: dict[str, int]
    """The assignments of running jobs by status (core.pool.MemberStatus's values): the members' states."""
    members: int
    """Members heard from within the member TTL."""


async def _figures(conn: AsyncConnection, live_since: float) -> dict[str, PoolFigures]:
    """:meth:`PoolStore.live_counts` on an open connection: two grouped reads, members and jobs."""
    live = (
        select(pool_members.c.pool, func.count())
        .where(pool_members.c.last_seen > live_since)
        .group_by(pool_members.c.pool)
    )
    by_status = select(pool_jobs.c.pool, pool_jobs.c.status, func.count()).group_by(
        pool_jobs.c.pool, pool_jobs.c.status
    )
    members = {pool: int(n) for pool, n in await conn.execute(live)}
    jobs: dict[str, dict[str, int]] = {}
    for pool, status, n in await conn.execute(by_status):
        jobs.setdefault(pool, {})[status] = int(n)
    return {pool: PoolFigures(members.get(pool, 0), jobs.get(pool, {})) for pool in members.keys() | jobs.keys()}


def _job(row: Any) -> JobRow:
    return JobRow(
        PushJob(row.job_id, row.url, row.replicas, PushStatus(row.status), row.error),
        row.pool,
        PushRequest(row.url, row.dest, row.replicas, row.digest),
        row.created,
        row.updated,
    )


def _member(row: Any) -> Member:
    return Member(row.member_id, row.last_seen, row.site, row.rack, row.free)


class PoolStore:
    """Pool persistence over an open TrackerStore's engine."""

    def __init__(self, store: TrackerStore) -> None:
        self.store = store

    async def create(
        self, name: str, token_hash: str | None, now: float, *, private: bool = False, allow: tuple[str, ...] = ()
    ) -> None:
        values = {
            "name": name,
            "token_hash": token_hash,
            "created": now,
            "private": private,
            "allow": json.dumps(list(allow)) if allow else None,
            "epoch": CREATED_EPOCH,
        }
        async with self.store.connection(write=True) as conn:
            if (await conn.execute(select(pools.c.name).where(pools.c.name == name))).first() is not None:
                raise PoolExists(f"pool {name!r} exists already")
            try:
                await conn.execute(pools.insert().values(**values))
            except IntegrityError:  # pragma: no cover - a concurrent create of the same name
                raise PoolExists(f"pool {name!r} exists already") from None

    async def get(self, name: str) -> PoolRow | None:
        async with self.store.connection() as conn:
            row = (await conn.execute(select(pools).where(pools.c.name == name))).first()
        return None if row is None else _pool(row)

    async def every(self) -> list[PoolRow]:
        """Every pool, by name."""
        async with self.store.connection() as conn:
            return [_pool(row) for row in await conn.execute(select(pools).order_by(pools.c.name))]

    async def live_counts(self, *, live_since: float) -> dict[str, PoolFigures]:
        """Per pool with a live member or a job: its members heard from after ``live_since`` (live as
        core.pool counts them: ``now - last_seen < ttl``) and its jobs by status."""
        async with self.store.connection() as conn:
            return await _figures(conn, live_since)

    async def take_over(self, name: str) -> int | None:
        """Take the pool over as its owner (tracker.pools, "A pool's writes carry its epoch"): the epoch this
        tracker's writes of it carry from now on; None when there is no such pool. Bumped on a database
        trackers share, in a transaction of its own; read on a SQLite file."""
        shared = self.store.shared
        async with self.store.connection(write=shared) as conn:
            return await pool_writes.take_over(conn, name, shared=shared)

    @asynccontextmanager
    async def writes(self, pool: str, epoch: int | None) -> AsyncIterator[PoolWrites]:
        """One transaction of writes of ``pool`` (a batch) by a tracker whose take-over gave it ``epoch``: the
        fence passed (storage.pool_writes), or PoolMoved and nothing written. Commits when the block ends."""
        async with self.store.connection(write=True) as conn:
            await pool_writes.fence(conn, pool, epoch, shared=self.store.shared)
            yield PoolWrites(conn, pool)

    async def remove(self, name: str, *, epoch: int | None) -> None:
        async with self.writes(name, epoch) as writes:
            await writes.remove()

    async def every_pool(self) -> list[PoolRow]:
        """Every pool, by name (the operator's dashboard)."""
        async with self.store.connection() as conn:
            return [_pool(row) for row in await conn.execute(select(pools).order_by(pools.c.name))]

    # -- members ---------------------------------------------------------------------------------------

    async def heartbeat(self, pool: str, member_id: str, beat: Heartbeat, now: float, *, epoch: int | None) -> None:
        async with self.writes(pool, epoch) as writes:
            await writes.heartbeat(member_id, beat, now)

    async def leave(self, pool: str, member_id: str, *, epoch: int | None) -> None:
        """The member said it is leaving: it is no longer live (its row stays for the status)."""
        async with self.writes(pool, epoch) as writes:
            await writes.leave(member_id)

    async def members(self, pool: str) -> list[dict[str, Any]]:
        async with self.store.connection() as conn:
            rows = await conn.execute(
                select(pool_members).where(pool_members.c.pool == pool).order_by(pool_members.c.joined)
            )
            return [dict(row._mapping) for row in rows]

    # -- jobs ------------------------------------------------------------------------------------------

    async def add_job(self, pool: str, job_id: str, request: PushRequest, now: float, *, epoch: int | None) -> None:
        async with self.writes(pool, epoch) as writes:
            await writes.add_job(job_id, request, now)

    async def job(self, pool: str, job_id: str) -> JobRow | None:
        async with self.store.connection() as conn:
            row = (
                await conn.execute(
                    select(pool_jobs).where(and_(pool_jobs.c.pool == pool, pool_jobs.c.job_id == job_id))
                )
            ).first()
        return None if row is None else _job(row)

    async def jobs(self, pool: str, *, open_only: bool = False) -> list[JobRow]:
        query = select(pool_jobs).where(pool_jobs.c.pool == pool)
        if open_only:
            query = query.where(pool_jobs.c.status.in_([PushStatus.RUNNING.value, PushStatus.COMPLETE.value]))
        async with self.store.connection() as conn:
            rows = await conn.execute(query.order_by(pool_jobs.c.created))
            return [_job(row) for row in rows]

    async def latest_jobs(self, pool: str, limit: int) -> tuple[list[JobRow], int]:
        """The pool's ``limit`` newest jobs, newest first, and how many jobs it has in all."""
        async with self.store.connection() as conn:
            count = (await conn.execute(select(func.count()).where(pool_jobs.c.pool == pool))).scalar() or 0
            rows = await conn.execute(
                select(pool_jobs)
                .where(pool_jobs.c.pool == pool)
                .order_by(pool_jobs.c.created.desc(), pool_jobs.c.job_id)
                .limit(limit)
            )
            return [_job(row) for row in rows], count

    async def member_counts(self, pool: str, live_since: float) -> tuple[int, int]:
        """How many members the pool has, and how many were heard from since ``live_since``."""
        live = func.sum(case((pool_members.c.last_seen > live_since, 1), else_=0))
        async with self.store.connection() as conn:
            row = (await conn.execute(select(func.count(), live).where(pool_members.c.pool == pool))).one()
        return int(row[0] or 0), int(row[1] or 0)

    async def open_pools(self) -> list[str]:
        """Pools with a running or complete job: the ones the sweep decides again."""
        open_statuses = [PushStatus.RUNNING.value, PushStatus.COMPLETE.value]
        async with self.store.connection() as conn:
            rows = await conn.execute(select(pool_jobs.c.pool).where(pool_jobs.c.status.in_(open_statuses)).distinct())
            return [row.pool for row in rows]

    async def counts(self, live_since: float) -> PoolCounts:
        """Every pool's :meth:`live_counts` added up, and the running jobs' assignments by status: one
        read of the same figures the pool list shows, so the two never disagree."""
        running = select(pool_jobs.c.job_id).where(pool_jobs.c.status == PushStatus.RUNNING.value)
        assigned = (
            select(pool_assignments.c.status, func.count())
            .where(pool_assignments.c.job_id.in_(running))
            .group_by(pool_assignments.c.status)
        )
        async with self.store.connection() as conn:
            figures = await _figures(conn, live_since)
            states = {status: count for status, count in await conn.execute(assigned)}
        jobs: Counter[str] = Counter()
        for pool in figures.values():
            jobs.update(pool.jobs)
        return PoolCounts(dict(jobs), states, sum(pool.members_live for pool in figures.values()))

    async def state(self, pool: str, job: JobRow) -> PoolState:
        async with self.store.connection() as conn:
            members = [_member(r) for r in await conn.execute(select(pool_members).where(pool_members.c.pool == pool))]
            rows = await conn.execute(select(pool_assignments).where(pool_assignments.c.job_id == job.job.job_id))
            assignments = {r.member_id: Assignment(r.member_id, MemberStatus(r.status), r.error) for r in rows}
            length = (
                await conn.execute(select(tasks.c.length).where(tasks.c.task_id == task_id_for_url(job.job.url)))
            ).scalar()
        return PoolState(members, assignments, length)

    async def apply(
        self,
        pool: str,
        job: PushJob,
        decision: Decision,
        status: PushStatus,
        error: str,
        now: float,
        *,
        epoch: int | None,
    ) -> None:
        """Save what core.pool.decide decided for ``job``: new assignments, left members, the job's status."""
        async with self.writes(pool, epoch) as writes:
            await writes.apply(job, decision, status, error, now)

    async def cancel(self, pool: str, job_id: str, now: float, *, epoch: int | None) -> None:
        async with self.writes(pool, epoch) as writes:
            await writes.cancel(job_id, now)

    async def report(
        self,
        pool: str,
        job_id: str,
        member_id: str,
        status: MemberStatus,
        report: MemberReport,
        now: float,
        *,
        epoch: int | None,
    ) -> None:
        """Save a member's report; ``status`` is the assignment's new status (core.pool.advance's)."""
        async with self.writes(pool, epoch) as writes:
            await writes.report(job_id, member_id, status, report, now)

    async def progress(self, pool: str, job_id: str, member_id: str, report: MemberReport, now: float) -> bool:
        """Save a progress report of a running assignment in one conditional update, without loading the
        pool: True when it was saved; False when the job is not the pool's or the assignment is not running
        (it is new, or it has been cancelled or marked left meanwhile), which the caller then decides.

        It runs as one write transaction (``SqlStore.write_transaction``: on SQLite one thread hop, where an
        async connection makes several per statement, each waiting for the event loop): every member of a
        running push reports twice a second, and on SQLite each holds the process's one writer meanwhile,
        which the announces reporting origin pieces' hashes wait for before they are answered (their pieces
        are offered to the swarm only then)."""
        a = pool_assignments
        in_pool = select(pool_jobs.c.job_id).where(and_(pool_jobs.c.pool == pool, pool_jobs.c.job_id == job_id))
        statement = (
            update(a)
            .where(
                and_(
                    a.c.job_id.in_(in_pool),
                    a.c.member_id == member_id,
                    a.c.status == MemberStatus.RUNNING.value,
                )
            )
            .values(**report_values(report, MemberStatus.RUNNING, now))
        )

        def run(conn: Connection) -> bool:
            return bool(conn.execute(statement).rowcount)

        return await self.store.write_transaction(run)

    async def assignments(self, job_id: str) -> list[dict[str, Any]]:
        """A job's assignments with their members' names and places, for the status."""
        m, a = pool_members, pool_assignments
        async with self.store.connection() as conn:
            job_pool = select(pool_jobs.c.pool).where(pool_jobs.c.job_id == job_id).scalar_subquery()
            rows = await conn.execute(
                select(a, m.c.name, m.c.url, m.c.site, m.c.rack, m.c.last_seen)
                .select_from(a)
                .join(m, and_(m.c.member_id == a.c.member_id, m.c.pool == job_pool), isouter=True)
                .where(a.c.job_id == job_id)
                .order_by(a.c.assigned, a.c.member_id)
            )
            return [dict(row._mapping) for row in rows]

    async def member_work(
        self, pool: str, member_id: str, *, cancelled_since: float = 0.0
    ) -> list[tuple[JobRow, MemberStatus]]:
        """What a member's heartbeat reply lists: its assignments still to do (or to resume after coming
        back); those cancelled since ``cancelled_since``, so it stops them; and its done ones in open jobs
        with a replica count, so it can say when it no longer holds one. The reply stays as small as the
        work in hand, however long the pool's history."""
        a, j = pool_assignments, pool_jobs
        open_statuses = [PushStatus.RUNNING.value, PushStatus.COMPLETE.value]
        active = [s.value for s in (MemberStatus.ASSIGNED, MemberStatus.RUNNING, MemberStatus.LEFT)]
        async with self.store.connection() as conn:
            rows = await conn.execute(
                select(j, a.c.status.label("assignment"))
                .join(a, a.c.job_id == j.c.job_id)
                .where(
                    and_(j.c.pool == pool, a.c.member_id == member_id),
                    or_(
                        and_(a.c.status.in_(active), j.c.status.in_(open_statuses)),
                        and_(a.c.status == MemberStatus.CANCELLED.value, a.c.updated >= cancelled_since),
                        and_(
                            a.c.status == MemberStatus.DONE.value,
                            j.c.replicas.is_not(None),
                            j.c.status.in_(open_statuses),
                        ),
                    ),
                )
            )
            return [(_job(row), MemberStatus(row.assignment)) for row in rows]
