"""The tracker's pools as a service: the pool store, core.pool's decisions and the members' long-polls.
Its JSON API under /v1/pools, with who may call what, is tracker.pool_routes.

Rules:

- One pool's changes are serialised by a per-pool lock: load, decide (core.pool), apply. Every change to
  what members must do (a push, a new assignment, a cancel, the pool removed) bumps the pool's version and
  wakes the members long-polling it, so a push reaches every member at once and they start together,
  which is what splits the origin work between them. Reports that give nobody new work (progress, done,
  a job complete) wake nobody: n members finishing at once would cost n * n heartbeats under the lock.
- A progress report of a running assignment changes no status, so it is one conditional update outside
  the lock (``PoolStore.progress``); only a report that changes a status is decided under it. Every
  member reports twice a second, so under the lock the progress reports would hold it much of the time,
  and a member's done report would queue behind them (benchmarks/pool_lab.py; figures in
  benchmarks/RESULTS.md).
- A sweep every ``SWEEP_SECONDS`` decides every open job again, so members that fell silent are marked
  left and lost replicas are repaired even when nobody else speaks.
- With several trackers on one database, a pool is decided by one of them, as a task is (core.ownership):
  the others forward its routes there (``pool_key``), so its lock and its long-polls are in one process,
  and only that tracker's sweep decides its jobs. A tracker that loses a pool wakes the long-polls it
  holds: each member asks again, through a tracker that forwards it to the new owner.
- **A pool's writes carry its epoch.** The owner decides on rows it read and writes later: between the two a
  pool can move (a tracker joins or dies), and its new owner reads the rows and decides too, each write
  beside the other's. Left alone, a write the old owner decided before the move and committed after the new
  owner's read would land: (1) an assignment (``decide``'s ``assign``): for a job of ``replicas`` both pick a
  member for one missing copy, so two fetch a copy that one should (origin or peer bytes, cache room), and a
  member both assign has its row deleted and inserted again, its part started over, a done copy counted
  again as on its way; (2) a job's status, written whatever it was: a stale ``Finished`` or ``JobFailed``
  ends a job the new owner reopened, so its members' heartbeats list it no more, and one over a cancel
  brings the cancelled job back as complete, which the sweep decides again (a job of ``replicas``, its
  copies cancelled, is reopened with new assignments); (3) a
  member's report, whose status is advanced from the one read: a stale ``running`` overwrites the ``done``
  the new owner took, and the job waits for a copy that is there; (4) a ``left`` mark
  over an assignment the member runs at the new owner (healed by its next report); (5) a stale heartbeat
  over the member's ``leave``: a member gone counts live for a TTL and is given work it never does; (6) a
  cancel decided on a job status the new owner has since ended. So each pool's row has an ownership epoch,
  as a task's has: the owner takes the pool over (``PoolStore.take_over``) under the pool's lock before it
  reads the pool to decide, bumping the epoch, and keeps the epoch it bumped to; every write of the pool's
  rows made under the lock (heartbeat, leave, push, report, cancel, the decisions, the pool's removal) is a
  batch that lands only while the database still holds that epoch (storage.pool_writes, with
  core.ownership.EpochFence: the batch locks the pool's row and reads its epoch first). A batch that finds
  another epoch is left out whole: the tracker lets go of the pool (its long-polls wake, its next change
  takes it over again) and the request is answered 503 with Retry-After (PoolMoved). Each batch is one
  change: a push's job goes with its first decision, a report with the decision it brings, so a 503 never
  leaves half a change (a job without its assignments, which a retried push would double). Each decision
  reads the rows afresh after the take-over, so it sees every write of the old owner that landed.
- Only the owner takes a pool over: a tracker that handles a pool it does not own (a request that waited on
  the lock across a move) bumps nothing, and its writes are left out (epoch None), so it never fences the
  real owner out. On a SQLite file, one tracker's, nothing is bumped and every write lands.
- Two writes carry no epoch. A pool's creation is an insert, which the name's uniqueness checks. A progress
  report of a running assignment (``PoolStore.progress``) is decided on the rows as the update finds them,
  not on a copy, and sets figures only: never a status, and ``decide`` reads no figures, so a stale one
  shows a member's older figures until its next report, half a second later. Fencing it would cost a
  statement on the pool's most frequent write.
- A job's URL as readers see it (``job_status``: the API, ``shoal pool status``, the dashboard) has a
  seeder's passkey (``/files/PASSKEY/REL``, what a mirror worker pushes) taken out: whoever may read a pool
  is not always one of its members, and the passkey opens the fleet's files. The members' work items (their
  heartbeat's reply) carry the whole URL, which they fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from shoal.core.errors import NotFound, PoolMoved, ProtocolError
from shoal.core.pool import (
    Assignment,
    Cancel,
    Decision,
    JobFailed,
    MemberStatus,
    PushEvent,
    PushJob,
    PushStatus,
    advance,
    advance_job,
    check_job_id,
    check_pool_name,
    decide,
    hash_token,
    new_job_id,
    new_token,
    replica_count,
)
from shoal.core.pool_messages import (
    AssignmentView,
    Heartbeat,
    HeartbeatReply,
    JobView,
    MemberReport,
    PushRequest,
    Replicas,
    WorkItem,
)
from shoal.core.push_policy import refused
from shoal.core.redact import redact_passkey
from shoal.http.resolve import resolve
from shoal.storage.db import uncancelled
from shoal.storage.pool_store import JobRow, PoolRow, PoolState, PoolStore
from shoal.storage.pool_writes import PoolWrites
from shoal.storage.tracker_store import TrackerStore

log = logging.getLogger("shoal.tracker.pools")

SWEEP_SECONDS = 2.0
POOL_KEY = "pool/"
"""What a pool's key, by which the trackers sharing a database partition the pools, begins with: no task id
or info-hash (hex) does."""
MAX_WAIT = 30.0
"""Longest long-poll a member may ask for; the tracker also keeps it under a third of the member TTL, so
a member waiting on a heartbeat is never taken for gone."""


def pool_key(name: str) -> str:
    """The key by which the trackers sharing a database find the pool's owner (tracker.cluster)."""
    return POOL_KEY + name


def _always(name: str) -> bool:
    return True


class _Pool:
    """In-memory companions of a pool's rows: the lock, the version that long-polls wait on, and the epoch
    its writes carry."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        # A random start, so a member's version from before a tracker restart never matches.
        self.version = secrets.randbelow(1 << 30)
        self.changed = asyncio.Event()
        self.taken = False
        """Whether this tracker took the pool over (or let go of it since: then ``epoch`` is None)."""
        self.epoch: int | None = None
        """The epoch the take-over bumped the pool to, which its writes carry; None: nothing of this tracker's
        lands (it did not take the pool over, or let go of it)."""

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


class Pools:
    """The pools' service: authorisation, decisions and long-polls over the pool store."""

    def __init__(
        self,
        store: TrackerStore,
        clock: Callable[[], float] = time.time,
        *,
        member_ttl: float,
        operator_hash: str | None = None,
    ) -> None:
        self.store = PoolStore(store)
        self.clock = clock
        self.member_ttl = member_ttl
        self.operator_hash = operator_hash
        """The SHA-256 of the operator's token; None: anyone may create a pool (a trusted LAN)."""
        self._pools: dict[str, _Pool] = {}
        self.waiting = 0
        """Members' heartbeats waiting here for their pool to change (long-polls)."""
        self.owns: Callable[[str], bool] = _always
        """Whether this tracker decides the pool of that name now (every pool, alone on its database)."""

    def held(self) -> list[str]:
        """The keys (``pool_key``) of the pools whose locks and long-polls this tracker holds."""
        return [pool_key(name) for name in self._pools]

    def drop(self, keys: list[str]) -> None:
        """Let go of the pools among ``keys`` (another tracker owns them now): their long-polls end at once,
        and each member asks again, to be forwarded to the new owner."""
        for key in keys:
            if key.startswith(POOL_KEY) and (pool := self._pools.get(key[len(POOL_KEY) :])) is not None:
                self._let_go(key[len(POOL_KEY) :], pool)

    def _let_go(self, name: str, pool: _Pool) -> None:
        """Forget ``pool`` (the companion of ``name``, or one already replaced): a change that waited on its
        lock writes nothing, its long-polls end, and the next change takes the pool over again."""
        if self._pools.get(name) is pool:
            del self._pools[name]
        pool.taken, pool.epoch = True, None
        pool.bump()

    @contextlib.asynccontextmanager
    async def _changing(self, name: str) -> AsyncIterator[tuple[_Pool, int | None]]:
        """Hold the pool's lock for a change, the pool taken over first when this tracker owns it and has not
        (the module's rule, "A pool's writes carry its epoch"): the pool's companion, and the epoch the
        change's writes carry. A write left out (PoolMoved) lets go of the pool on its way out."""
        pool = self._pool(name)
        async with pool.lock:
            if not pool.taken and self.owns(name):
                epoch = await uncancelled(self.store.take_over(name))
                if epoch is None:
                    raise NotFound(f"no pool {name!r}")
                pool.taken, pool.epoch = True, epoch
            try:
                yield pool, pool.epoch
            except PoolMoved:
                log.info("pool %s was taken over by another tracker meanwhile: a change was left out", name)
                self._let_go(name, pool)
                raise

    def _pool(self, name: str) -> _Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = _Pool()
        return pool

    async def pool(self, name: str) -> PoolRow:
        row = await self.store.get(check_pool_name(name))
        if row is None:
            raise NotFound(f"no pool {name!r}")
        return row

    async def create(self, name: str, private: bool, allow: tuple[str, ...] = ()) -> str:
        """Create the pool; its token, which only the caller ever sees."""
        check_pool_name(name)
        token = new_token()
        await self.store.create(name, hash_token(token), self.clock(), private=private, allow=allow)
        return token

    async def check_url(self, row: PoolRow, url: str) -> None:
        """A ProtocolError when ``url`` may not be pushed to the pool (core.push_policy)."""
        reason = refused(url, row.allow, await resolve(url))
        if reason is not None:
            raise ProtocolError(reason, field="url")

    async def remove(self, name: str) -> None:
        async with self._changing(name) as (pool, epoch):
            await self.store.remove(name, epoch=epoch)
            pool.bump()
        if self._pools.get(name) is pool:
            del self._pools[name]

    async def push(self, name: str, request: PushRequest) -> str:
        job_id = new_job_id()
        async with self._changing(name) as (pool, epoch):
            now = self.clock()
            job = JobRow(PushJob(job_id, request.url, request.replicas), name, request, now, now)
            # The job and its first decision are one batch: a push answered 503 left no job behind.
            decided = self._decide(job, await self.store.state(name, job))
            async with self.store.writes(name, epoch) as writes:
                await writes.add_job(job_id, request, now)
                if decided is not None:
                    await decided.write(writes)
            if decided is not None:
                decided.committed(name)
            pool.bump()
        return job_id

    async def cancel(self, name: str, job_id: str) -> None:
        async with self._changing(name) as (pool, epoch):
            job = await self.job(name, job_id)
            advance_job(job.job.status, Cancel())  # IllegalTransition (409) once it ended
            await self.store.cancel(name, job_id, self.clock(), epoch=epoch)
            pool.bump()

    async def report(self, name: str, job_id: str, member_id: str, report: MemberReport) -> MemberStatus:
        if report.status is MemberStatus.RUNNING and await self.store.progress(
            name, check_job_id(job_id), member_id, report, self.clock()
        ):
            return MemberStatus.RUNNING
        async with self._changing(name) as (pool, epoch):
            job = await self.job(name, job_id)
            state = await self.store.state(name, job)
            current = state.assignments.get(member_id)
            if current is None:
                raise NotFound(f"member {member_id!r} has no part in job {job_id}")
            status = advance(current.status, report.event())
            decided = None
            if status is not current.status:
                # The state just read, with this report's outcome, is what the store holds once the report is
                # written: decide on it rather than read it all again, and write both in one batch.
                state.assignments[member_id] = Assignment(member_id, status, report.error)
                decided = self._decide(job, state)
            async with self.store.writes(name, epoch) as writes:
                await writes.report(job_id, member_id, status, report, self.clock())
                if decided is not None:
                    await decided.write(writes)
            if decided is not None and decided.committed(name):
                pool.bump()
            return status

    async def heartbeat(
        self,
        name: str,
        member_id: str,
        beat: Heartbeat,
        *,
        version: int | None,
        wait: float,
        allow: tuple[str, ...] = (),
    ) -> HeartbeatReply:
        """``allow``: the pool's allow-list, which each work item carries for the member to check."""
        async with self._changing(name) as (pool, epoch):
            await self.store.heartbeat(name, member_id, beat, self.clock(), epoch=epoch)
            if await self._decide_open(name, epoch):
                pool.bump()
        wait = min(wait, self.member_ttl / 3)
        if version == pool.version and wait > 0:
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pool.changed.wait(), wait)
            finally:
                self.waiting -= 1
        # A cancel is listed for a few heartbeats' worth of time: long enough for the member to hear of it.
        work = await self.store.member_work(name, member_id, cancelled_since=self.clock() - 3 * self.member_ttl)
        return HeartbeatReply(
            pool.version,
            [
                WorkItem(
                    job.request.url,
                    job.request.dest,
                    job.request.replicas,
                    job.request.digest,
                    job.job.job_id,
                    status,
                    list(allow),
                )
                for job, status in work
            ],
        )

    async def leave(self, name: str, member_id: str) -> None:
        async with self._changing(name) as (pool, epoch):
            await self.store.leave(name, member_id, epoch=epoch)
            if await self._decide_open(name, epoch):
                pool.bump()

    async def sweep(self) -> None:
        """Decide every open job again: members that fell silent leave, lost replicas are repaired."""
        for name in await self.store.open_pools():
            if not self.owns(name):
                continue  # another tracker sharing the database decides it
            with contextlib.suppress(PoolMoved):  # let go of (logged): its new owner's sweep decides it
                async with self._changing(name) as (pool, epoch):
                    if await self._decide_open(name, epoch):
                        pool.bump()

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception:  # pragma: no cover - logged, tried again next round
                log.exception("pool sweep failed")

    async def job(self, name: str, job_id: str) -> JobRow:
        job = await self.store.job(name, check_job_id(job_id))
        if job is None:
            raise NotFound(f"no job {job_id} in pool {name!r}")
        return job

    async def _decide_open(self, name: str, epoch: int | None) -> bool:
        """Decide every open job of the pool, a batch each, carrying ``epoch``; True when a member was given
        new work. The caller holds the lock."""
        assigned = False
        for job in await self.store.jobs(name, open_only=True):
            decided = self._decide(job, await self.store.state(name, job))
            if decided is not None:
                async with self.store.writes(name, epoch) as writes:
                    await decided.write(writes)
                assigned = decided.committed(name) or assigned
        return assigned

    def _decide(self, job: JobRow, state: PoolState) -> _Decided | None:
        """What core.pool.decide decides for ``job`` on ``state`` now, None when nothing changes."""
        now = self.clock()
        decision = decide(job.job, state.members, state.assignments, now=now, ttl=self.member_ttl, length=state.length)
        if not decision.changes:
            return None
        status, error = job.job.status, job.job.error
        if decision.event is not None:
            status = advance_job(status, decision.event)
            error = _error_of(decision.event, error)
        return _Decided(job.job, decision, status, error, now)

    async def job_status(self, name: str, job: JobRow) -> JobView:
        now = self.clock()
        members = []
        live: set[str] = set()
        assignments = []
        for row in await self.store.assignments(job.job.job_id):
            is_live = row["last_seen"] is not None and now - row["last_seen"] < self.member_ttl
            if is_live:
                live.add(row["member_id"])
            assignments.append(Assignment(row["member_id"], MemberStatus(row["status"])))
            remaining = max(row["total"] - row["done"], 0)
            running = row["status"] == "running" and row["rate"] > 0
            members.append(
                AssignmentView(
                    member=row["member_id"],
                    name=row["name"],
                    url=row["url"],
                    site=row["site"],
                    rack=row["rack"],
                    live=is_live,
                    status=MemberStatus(row["status"]),
                    done=row["done"],
                    total=row["total"],
                    rate=row["rate"],
                    from_origin=row["from_origin"],
                    from_peers=row["from_peers"],
                    from_rack=row["from_rack"],
                    from_racks=row["from_racks"],
                    from_sites=row["from_sites"],
                    eta=remaining / row["rate"] if running else None,
                    error=row["error"],
                    updated=row["updated"],
                )
            )
        request = job.request
        return JobView(
            job=job.job.job_id,
            pool=name,
            # Readers of the pool are not all its members: a seeder's passkey in the URL would open the
            # fleet's files to them. Members fetch with the whole URL, which their heartbeat's work carries.
            url=redact_passkey(request.url),
            dest=request.dest,
            digest=request.digest,
            status=job.job.status,
            error=job.job.error,
            replicas=Replicas(target=job.job.replicas, current=replica_count(assignments, live)),
            created=job.created,
            updated=job.updated,
            members=members,
        )


@dataclass(frozen=True, slots=True)
class _Decided:
    """A job's decision (core.pool.decide) at ``now``, and the job's status and error after it."""

    job: PushJob
    decision: Decision
    status: PushStatus
    error: str
    now: float

    async def write(self, writes: PoolWrites) -> None:
        await writes.apply(self.job, self.decision, self.status, self.error, self.now)

    def committed(self, pool: str) -> bool:
        """Log what became of the job, once the write committed; whether a member was given new work (the
        caller then wakes the pool's long-polls)."""
        if self.decision.event is not None:
            log.info("pool %s job %s: %s", pool, self.job.job_id, self.status.value)
        return bool(self.decision.assign)


def _error_of(event: PushEvent, error: str) -> str:
    return event.error if isinstance(event, JobFailed) else error
