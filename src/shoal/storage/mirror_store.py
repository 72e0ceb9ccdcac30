"""The mirror manager's SQL store: its jobs (spec and lifecycle state) and its workers.

One store, three backends (SQLite, PostgreSQL, MySQL/MariaDB) through SQLAlchemy Core, in the tables
storage.schema declares; the same contract tests run against each. Every method is one transaction, so
a crash leaves a change whole or absent. The store keeps values and decides nothing: the lifecycle is
core.mirror_job's, the schedule core.mirror_plan's, and the manager (shoal.mirror.manager) applies them.
A job's spec is kept as the JSON the manager hands it (JobSpec.to_json) and read back as that JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update

from shoal.core.mirror_job import JobState, JobStatus
from shoal.storage.db import SqlStore
from shoal.storage.schema import mirror_jobs, mirror_workers


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as the manager stores it."""

    name: str
    spec: Mapping[str, Any]  # JobSpec.to_json()
    state: JobState
    worker: str | None = None  # the worker running it, or that ran it last
    run_id: str | None = None  # the current run's id; a worker's report must name it
    next_schedule: float | None = None
    size: int = 0  # bytes in the last published version
    size_text: str | None = None  # the size as size_pattern or set-size wrote it, shown as is in GET /jobs
    version: str | None = None  # the last published version's name
    updated: float = 0.0  # when this record last changed (not tunasync's last_update)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    name: str
    url: str  # where the worker's seeder serves the jobs' files ("" if it has none)
    concurrency: int
    registered: float
    last_seen: float


def _job_values(job: JobRecord) -> dict[str, Any]:
    s = job.state
    return {
        "spec": json.dumps(job.spec, sort_keys=True),
        "status": s.status.value,
        "last_update": s.last_update,
        "last_started": s.last_started,
        "last_ended": s.last_ended,
        "error_msg": s.error_msg,
        "attempts": s.attempts,
        "retry": s.retry,
        "worker": job.worker,
        "run_id": job.run_id,
        "next_schedule": job.next_schedule,
        "size": job.size,
        "size_text": job.size_text,
        "version": job.version,
        "updated": job.updated,
    }


def _job_from_row(row: Any) -> JobRecord:
    state = JobState(
        status=JobStatus(row.status),
        last_update=row.last_update,
        last_started=row.last_started,
        last_ended=row.last_ended,
        error_msg=row.error_msg,
        attempts=row.attempts,
        retry=bool(row.retry),
    )
    return JobRecord(
        name=row.name,
        spec=json.loads(row.spec),
        state=state,
        worker=row.worker,
        run_id=row.run_id,
        next_schedule=row.next_schedule,
        size=int(row.size),
        size_text=row.size_text,
        version=row.version,
        updated=row.updated,
    )


def _worker_from_row(row: Any) -> WorkerRecord:
    return WorkerRecord(row.name, row.url, row.concurrency, row.registered, row.last_seen)


class MirrorStore(SqlStore):
    # -- jobs ----------------------------------------------------------------------------------------

    async def jobs(self) -> list[JobRecord]:
        """Every job, by name."""
        async with self.connection() as conn:
            rows = (await conn.execute(select(mirror_jobs).order_by(mirror_jobs.c.name))).all()
        return [_job_from_row(r) for r in rows]

    async def job(self, name: str) -> JobRecord | None:
        async with self.connection() as conn:
            row = (await conn.execute(select(mirror_jobs).where(mirror_jobs.c.name == name))).first()
        return None if row is None else _job_from_row(row)

    async def put_jobs(self, jobs: Iterable[JobRecord]) -> None:
        """Insert or replace each job, all in one transaction."""
        async with self.connection(write=True) as conn:
            for job in jobs:
                values = _job_values(job)
                result = await conn.execute(update(mirror_jobs).where(mirror_jobs.c.name == job.name).values(values))
                if result.rowcount == 0:
                    await conn.execute(mirror_jobs.insert().values(name=job.name, **values))

    async def put_job(self, job: JobRecord) -> None:
        await self.put_jobs([job])

    async def delete_jobs(self, names: Iterable[str]) -> int:
        """Remove the named jobs; return how many there were."""
        wanted = sorted(set(names))
        if not wanted:
            return 0
        async with self.connection(write=True) as conn:
            result = await conn.execute(delete(mirror_jobs).where(mirror_jobs.c.name.in_(wanted)))
        return int(result.rowcount or 0)

    # -- workers -------------------------------------------------------------------------------------

    async def workers(self) -> list[WorkerRecord]:
        async with self.connection() as conn:
            rows = (await conn.execute(select(mirror_workers).order_by(mirror_workers.c.name))).all()
        return [_worker_from_row(r) for r in rows]

    async def worker(self, name: str) -> WorkerRecord | None:
        async with self.connection() as conn:
            row = (await conn.execute(select(mirror_workers).where(mirror_workers.c.name == name))).first()
        return None if row is None else _worker_from_row(row)

    async def put_worker(self, worker: WorkerRecord) -> None:
        values = {
            "url": worker.url,
            "concurrency": worker.concurrency,
            "registered": worker.registered,
            "last_seen": worker.last_seen,
        }
        async with self.connection(write=True) as conn:
            where = mirror_workers.c.name == worker.name
            result = await conn.execute(update(mirror_workers).where(where).values(values))
            if result.rowcount == 0:
                await conn.execute(mirror_workers.insert().values(name=worker.name, **values))

    async def touch_worker(self, name: str, now: float) -> bool:
        """Record that the worker was heard of at ``now``; False if there is no such worker."""
        async with self.connection(write=True) as conn:
            result = await conn.execute(
                update(mirror_workers).where(mirror_workers.c.name == name).values(last_seen=now)
            )
        return bool(result.rowcount)

    async def delete_worker(self, name: str) -> bool:
        async with self.connection(write=True) as conn:
            result = await conn.execute(delete(mirror_workers).where(mirror_workers.c.name == name))
        return bool(result.rowcount)
