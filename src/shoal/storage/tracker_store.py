"""The tracker's store: each active task's state in memory, and its durable facts in SQL.

One store, three backends (SQLite, PostgreSQL, MySQL/MariaDB) through SQLAlchemy Core; the same contract
tests run against each.

What goes where:

- **Durable** (SQL, and a copy in memory): the task (URL, generation, manifest, whether the origin takes
  Range requests, hash sequence) and its piece hashes with the peer each was taken from. A restarted
  tracker reads them back.
- **Soft** (memory only, :class:`shoal.core.swarm.Swarm`): peers, their bitfields and liveness, origin
  leases, accusations and bans, spot checks under way. Peers announce every interval, so a restarted
  tracker knows a task's swarm again within an interval, and the origin fetches in flight come back
  through the announces' ``fetching`` (the tracker grants no lease afresh meanwhile: core.announce,
  ``TaskSnapshot.grace``).

One tracker process owns its database. An announce is decided on the task's copy in memory and changes it
at once (:meth:`TrackerStore.stage`). Only an outcome that changes a durable fact (a new task, a hash, a
generation, the manifest) is written: one writer task commits everything staged meanwhile in one
transaction (group commit: it waits COMMIT_WINDOW before it takes a batch), in the order staged, and the
caller learns its change is durable when its future resolves. Every other announce touches no database and
waits for nothing.

A write that fails fails every write staged behind it (they were decided on state that included it) and
marks those tasks' copies stale: their durable facts are read again before the next decision on them, their
soft state stays. A task whose swarm is left without peers leaves memory at the next expiry sweep, and is
read again when someone announces it.

On a database several trackers share, a write of a decision made before its task moved can come to commit
after the new owner read the database; the writes are fenced by the task's ownership epoch (core.ownership
has the rule). Reading a task into memory as its owner (:meth:`TrackerStore.owns`) takes it over: one
transaction bumps the task's epoch and reads its facts, and the copy keeps that epoch; one take-over of a
task at a time in this process, or the second would fence out the first one's copy. Each write of a batch
is checked against its task's epoch under the row's lock (storage.task_sql: run_batch, run_rows_batch); a
write whose copy's epoch is no longer the task's is left out, the rest of the batch commits, the copy is
dropped (:attr:`TrackerStore.lost` hears of it) and the caller gets TaskMoved. A task's creation that finds the task
created by another tracker is left out with the writes of the task behind it in its batch
(TaskCreatedElsewhere), and the copy is read again.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, and_, delete, select, update

from shoal.core.announce_values import AnnounceOutcome
from shoal.core.errors import TaskCreatedElsewhere, TaskMoved
from shoal.core.leases import Lease
from shoal.core.messages import HashesResponse, PeerSummary, TaskSummary
from shoal.core.ownership import CREATED_EPOCH
from shoal.core.swarm import Census
from shoal.core.task_snapshot import TaskSnapshot
from shoal.storage.db import SqlStore, uncancelled
from shoal.storage.schema import piece_hashes, tasks
from shoal.storage.task_rows import TaskRows
from shoal.storage.task_sql import (
    ELSEWHERE,
    MOVED,
    BatchRows,
    Staged,
    copy_of,
    hash_rows,
    hashes_of,
    rows_only,
    run_batch,
    run_rows_batch,
    task_values,
    write_outcome,
)

COMMIT_WINDOW = 0.005
"""Seconds the writer waits before it takes what is staged (group commit): the writes staged meanwhile share
one transaction. Under a steady load, writes arrive one at a time, and a writer that took each at once would
pay a transaction's fixed cost for every one (on SQLite a thread hop, BEGIN, each statement, COMMIT; on a
server a round trip each), on the tracker's own CPU. An announce that changed a durable fact is answered
this much later; every other announce waits for nothing."""

_BATCH = 500
"""Task ids per statement of the retention's writes."""


class TrackerStore(SqlStore):
    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(url)
        self.clock = clock
        """The time a write records as the task's ``updated`` (the tracker's clock)."""
        self._rows: dict[str, TaskRows] = {}
        self.census = Census()
        """The live peers and seeds of every task in memory, kept as their swarms change (core.swarm)."""
        self._pending: dict[str, int] = {}  # task -> its writes staged and not yet committed or failed
        self._drops = 0  # bumped as a task's copy leaves memory: a read that overlapped one is read again
        self._staged: list[Staged] = []  # not yet begun, in the order staged
        self._writer: asyncio.Task[None] | None = None
        self.peer_ttl = 0.0
        """The TTL the latest load or expiry sweep went by (for a lease given back after a failed write)."""
        self.grace_until = 0.0
        """Until this time, a task read from the database is decided with ``TaskSnapshot.grace``: the
        tracker service sets it as it starts."""
        self.owns: Callable[[str], bool] = lambda task_id: True
        """Whether this tracker owns a task now (tracker.cluster): a task is taken over only by its owner.
        Every task, on a database of one tracker."""
        self.lost: Callable[[list[str]], None] = lambda task_ids: None
        """Told the tasks whose copies were dropped because another tracker took them over (after the store
        dropped them), so that the service forgets its own soft state of them."""
        self._taking: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        """One read of a task into memory at a time (a take-over bumps the epoch: see the module docstring)."""

    @property
    def shared(self) -> bool:
        """Whether trackers may share this database (PostgreSQL, MySQL/MariaDB; not a SQLite file)."""
        return self.engine.dialect.name != "sqlite"

    async def __aexit__(self, *exc: Any) -> None:
        await self.flush()
        await super().__aexit__(*exc)

    async def flush(self) -> None:
        """Return once every write staged so far has committed or failed."""
        while self._writer is not None:
            await asyncio.wait([self._writer])

    def _stage(
        self,
        run: Callable[[Connection], Any],
        outcome: AnnounceOutcome,
        rows: BatchRows | None,
        *,
        copy: TaskRows | None,
        creates: bool,
    ) -> asyncio.Future[Any]:
        done = asyncio.get_running_loop().create_future()
        task_id = outcome.task.task_id
        self._staged.append(Staged(run, task_id, done, outcome, rows, copy, creates))
        self._pending[task_id] = self._pending.get(task_id, 0) + 1
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_staged())
        return done

    def _settle(self, batch: list[Staged]) -> None:
        for staged in batch:
            left = self._pending[staged.task_id] - 1
            if left:
                self._pending[staged.task_id] = left
            else:
                del self._pending[staged.task_id]

    async def _write_staged(self) -> None:
        """The one writer: commit what is staged, a batch per transaction, until nothing is left."""
        try:
            while self._staged:
                batch: list[Staged] = []
                try:
                    await asyncio.sleep(COMMIT_WINDOW)
                    batch, self._staged = self._staged, []
                    for staged in batch:
                        staged.epoch = None if staged.copy is None else staged.copy.epoch
                    results = await self.write_batch(batch)
                except BaseException as exc:
                    failed, self._staged = batch + self._staged, []
                    self._settle(failed)
                    for staged in failed:
                        rows = self._rows.get(staged.task_id)
                        if rows is not None:
                            rows.stale = True
                            self._give_back(rows, staged.outcome)
                        if staged.done.done():  # its caller was cancelled while it waited
                            continue
                        if isinstance(exc, asyncio.CancelledError):
                            staged.done.cancel()
                        else:
                            staged.done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    self._settle(batch)
                    lost: list[str] = []
                    for staged, result in zip(batch, results, strict=True):
                        rows = self._rows.get(staged.task_id)
                        if result is ELSEWHERE and staged.copy is not None:
                            # The other tracker's facts are read before deciding on it, and the writes
                            # staged meanwhile on the copy that created it are left out (no epoch).
                            staged.copy.stale = True
                            staged.copy.epoch = None
                        elif result is MOVED and rows is not None and rows is staged.copy:
                            # The copy it was decided on (not one taken over again since): a lost task's.
                            self._drop(staged.task_id)
                            lost.append(staged.task_id)
                        if staged.done.done():
                            continue
                        if result is ELSEWHERE:
                            staged.done.set_exception(TaskCreatedElsewhere(staged.task_id))
                        elif result is MOVED:
                            staged.done.set_exception(TaskMoved(staged.task_id))
                        else:
                            staged.done.set_result(result)
                    if lost:
                        self.lost(lost)
        finally:
            self._writer = None

    async def write_batch(self, batch: list[Staged]) -> list[Any]:
        """Commit ``batch`` in one transaction; each write's result (task_sql.run_batch). On PostgreSQL a batch
        of hash reports alone, as a busy tracker's batches mostly are, is one statement sent by the driver
        (task_sql.ROWS_BATCH)."""
        if self.driver_calls and rows_only(batch):
            return await self.driver_call(functools.partial(run_rows_batch, batch=batch))
        return await self.write_transaction(functools.partial(run_batch, batch, shared=self.shared))

    def _give_back(self, rows: TaskRows, outcome: AnnounceOutcome) -> None:
        """A report whose write failed gave up its lease as it was decided: the lease goes back to the
        reporter, which reports the piece again (the tracker takes a hash only from the lease holder)."""
        swarm = rows.swarm
        for piece, reporter in outcome.reporters.items():
            holder = swarm.peers.get(reporter)
            if piece in outcome.new_hashes and holder is not None and piece not in swarm.leases:
                swarm.give_back(Lease(piece, reporter, holder.last_seen + (holder.ttl or self.peer_ttl)))

    async def _task_rows(self, task_id: str) -> TaskRows | None:
        """The task's copy in memory, read (and taken over, by its owner) when there is none or it is stale.
        A task this tracker does not own is read without taking it over, and its copy is not kept."""
        rows = self._rows.get(task_id)
        if rows is not None and not rows.stale:
            return rows
        lock = self._taking.get(task_id)
        if lock is None:
            lock = self._taking[task_id] = asyncio.Lock()
        async with lock:
            return await self._read_into_memory(task_id)

    async def _read_into_memory(self, task_id: str) -> TaskRows | None:
        rows = self._rows.get(task_id)
        if rows is not None and not rows.stale:
            return rows  # read by the take-over this one waited for
        while True:
            owned = self.owns(task_id)  # it may drop copies (tracker.cluster): before ``drops`` is taken
            drops = self._drops
            stored = await uncancelled(self._take_over(task_id)) if owned else await self.read_rows(task_id)
            if stored is not None and not owned:
                stored.epoch = None  # not taken over: nothing decided on it may be written
            rows = self._rows.get(task_id)
            if rows is not None:
                # Another reader put the task's copy in place meanwhile, and an announce may already have
                # changed it: keep it, never replace it with what was read. A stale copy takes what was
                # read unless a write of it was staged since (decided on a copy refreshed meanwhile).
                if rows.stale and not self._pending.get(task_id):
                    if stored is None:
                        self._drop(task_id)  # its creation failed
                        return None
                    rows.refresh(stored)
                return rows
            if stored is None:
                return None
            if self._drops == drops:
                stored.from_database = True
                return self._keep(task_id, stored) if owned else stored

    async def read_rows(self, task_id: str) -> TaskRows | None:
        """The task's durable facts as the database holds them (not the copy in memory), without peers. The
        read runs to its end if the caller is cancelled (storage.db.uncancelled)."""
        return await uncancelled(self._read_rows(task_id))

    async def _read_rows(self, task_id: str) -> TaskRows | None:
        async with self.connection() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
            if row is None:
                return None
            found = (await conn.execute(hashes_of(task_id))).all()
        return copy_of(row, found)

    async def _take_over(self, task_id: str) -> TaskRows | None:
        """Read the task as its owner: on a shared database, bump its epoch in the transaction that reads its
        facts (core.ownership). The bump comes first: it waits for a batch of another tracker's that holds the
        row, and the reads behind it see what that batch wrote (a read in PostgreSQL's READ COMMITTED takes
        its snapshot as it starts; in MySQL's REPEATABLE READ at the first plain read, after the bump). Its
        own transaction, not the writer's: a task's first read waits for no batch of other tasks."""
        if not self.shared:
            return await self._read_rows(task_id)
        async with self.connection(write=True) as conn:
            bump = update(tasks).where(tasks.c.task_id == task_id).values(epoch=tasks.c.epoch + 1)
            if (await conn.execute(bump)).rowcount == 0:
                return None
            row = (await conn.execute(select(tasks).where(tasks.c.task_id == task_id))).one()
            found = (await conn.execute(hashes_of(task_id))).all()
        return copy_of(row, found)

    def _keep(self, task_id: str, rows: TaskRows) -> TaskRows:
        """Put a task's copy in memory, its swarm counted in the census."""
        self._rows[task_id] = rows
        rows.swarm.attach(self.census)
        return rows

    def _drop(self, task_id: str) -> None:
        """Take a task's copy out of memory, and its swarm out of the census."""
        self._rows.pop(task_id).swarm.detach()
        self._drops += 1

    def tasks_in_memory(self) -> int:
        """How many tasks have their copy in memory."""
        return len(self._rows)

    def held(self) -> list[str]:
        """The tasks whose copy is in memory (their soft state is this tracker's)."""
        return list(self._rows)

    def in_memory(self) -> list[TaskRows]:
        """The copies in memory, to read (the operator's dashboard): never to change outside a decision."""
        return list(self._rows.values())

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop the copies of these tasks, soft state and all: the next announce of one reads it from the
        database again. A task with a write pending keeps its copy until the write ends."""
        for task_id in task_ids:
            if task_id in self._rows and not self._pending.get(task_id):
                self._drop(task_id)

    async def load(
        self,
        task_id: str,
        hash_pieces: Iterable[int],
        *,
        now: float | None = None,
        peer_ttl: float | None = None,
        judged: float | None = None,
    ) -> TaskSnapshot:
        """The task, its live peers and leases, and the stored hashes of ``hash_pieces``. With ``now`` and
        ``peer_ttl`` the task's swarm is expired first, as a decision at ``now`` needs it: at ``judged`` when
        given (the tracker's clock less the time it could not hear its peers: core.deafness), else at ``now``."""
        rows = await self._task_rows(task_id)
        if rows is None:
            return TaskSnapshot(None, [], {}, {})
        grace = False
        if now is not None:
            if peer_ttl is not None:
                rows.swarm.expire(now if judged is None else judged, peer_ttl)
                self.peer_ttl = peer_ttl
            grace = rows.from_database and now < self.grace_until
        return rows.snapshot(hash_pieces, grace=grace)

    async def apply(self, outcome: AnnounceOutcome, *, created: bool) -> None:
        """Stage an outcome and wait until it has committed."""
        await self.stage(outcome, created=created)

    def stage(self, outcome: AnnounceOutcome, *, created: bool) -> asyncio.Future[None]:
        """Apply an outcome to the task in memory now, and stage the write of what it changed of the durable
        facts; the future resolves once that has committed (StoreError if it failed), at once when the
        outcome changed nothing durable. ``created``: the outcome creates the task."""
        task_id = outcome.task.task_id
        rows = self._rows.get(task_id)
        task_changed = rows is None or rows.task != outcome.task
        if rows is not None:
            rows.apply(outcome)
        elif created:
            rows = self._keep(task_id, TaskRows(outcome.task, epoch=CREATED_EPOCH))
            rows.apply(outcome)
        if not (created or task_changed or outcome.new_generation or outcome.revoked or outcome.new_hashes):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        now = self.clock()
        if rows is not None and (created or task_changed):
            rows.touched = now

        def write(conn: Connection) -> object:
            return write_outcome(conn, outcome, created=created, task_changed=task_changed, now=now)

        rows_only = not (created or outcome.new_generation or outcome.revoked)
        task_row = {"the_task_id": outcome.task.task_id, **task_values(outcome.task, now)} if task_changed else None
        return self._stage(
            write,
            outcome,
            BatchRows(task_row, hash_rows(outcome)) if rows_only else None,
            # No copy: it was read without taking the task over (tracker.cluster owns it elsewhere).
            copy=rows,
            creates=created,
        )

    async def hashes_since(self, task_id: str, since: int) -> HashesResponse | None:
        rows = await self._task_rows(task_id)
        return None if rows is None else rows.hashes_since(since)

    async def summary(self, task_id: str, now: float, peer_ttl: float) -> TaskSummary | None:
        rows = await self._task_rows(task_id)
        if rows is None:
            return None
        rows.swarm.expire(now, peer_ttl)
        task = rows.task
        m = task.manifest
        return TaskSummary(
            task_id=task.task_id,
            url=task.url,
            generation=task.generation,
            length=m.length if m else None,
            piece_length=m.piece_length if m else None,
            pieces=m.piece_count if m else None,
            etag=m.identity.etag if m else "",
            last_modified=m.identity.last_modified if m else "",
            range_ok=task.range_ok,
            hashed_pieces=len(rows.hashes),
            rejected_reports=rows.rejected_reports,
            refused_origins=rows.refused_origins,
            leases=len(rows.swarm.leases),
            peers=tuple(
                PeerSummary(
                    peer_id=p.view.peer_id,
                    host=p.view.host,
                    port=p.view.port,
                    site=p.view.site,
                    rack=p.view.rack,
                    pieces=len(p.view.have),
                    bad=p.view.bad,
                    accusers=len(p.view.accusers),
                    last_seen=p.last_seen,
                )
                for p in rows.swarm.peers.values()
            ),
        )

    async def expire(self, now: float, peer_ttl: float) -> int:
        """Forget peers unheard of for ``peer_ttl`` and the leases they held; return how many peers. A task
        left without peers leaves memory (nobody announces it: it is read again if someone comes back)."""
        gone = 0
        self.peer_ttl = peer_ttl
        for task_id, rows in list(self._rows.items()):
            gone += rows.swarm.expire(now, peer_ttl)
            if not rows.swarm.peers and not self._pending.get(task_id):
                self._drop(task_id)
        return gone

    # -- retention: tasks no peer announces leave the database ------------------------------------------

    async def touch(self, now: float, *, every: float) -> int:
        """Record ``now`` as the ``updated`` of the tasks in memory that have peers, where it is older than
        ``every``: a task's ``updated`` then lags its last peer by at most ``every`` (plus a sweep), however
        long it lives without a durable change. Returns how many were recorded."""
        due = [
            task_id
            for task_id, rows in self._rows.items()
            if rows.swarm.peers and rows.touched < now - every and not rows.stale
        ]
        for start in range(0, len(due), _BATCH):
            batch = due[start : start + _BATCH]

            def run(conn: Connection, batch: list[str] = batch) -> None:
                conn.execute(update(tasks).where(tasks.c.task_id.in_(batch)).values(updated=now))

            await self.write_transaction(run)
            for task_id in batch:
                if (rows := self._rows.get(task_id)) is not None:
                    rows.touched = max(rows.touched, now)
        return len(due)

    async def idle_tasks(self, before: float, *, after: str = "", limit: int = _BATCH) -> list[str]:
        """Up to ``limit`` ids, in order and greater than ``after``, of the tasks whose ``updated`` is before
        ``before`` (the database's view: a task in memory may have peers all the same)."""
        async with self.connection() as conn:
            found = await conn.execute(
                select(tasks.c.task_id)
                .where(and_(tasks.c.updated < before, tasks.c.task_id > after))
                .order_by(tasks.c.task_id)
                .limit(limit)
            )
            return list(found.scalars())

    async def remove_tasks(self, task_ids: Iterable[str], before: float) -> list[str]:
        """Remove these tasks (and their piece hashes) from the database, those of them that are not in
        memory, have no write pending and are still idle since ``before``; return those removed. The caller
        keeps announces of them from being decided meanwhile (the tracker holds their locks); a read of one
        that overlapped the removal is not kept."""
        candidates = sorted(t for t in task_ids if t not in self._rows and not self._pending.get(t))
        if not candidates:
            return []

        def run(conn: Connection) -> list[str]:
            idle = list(
                conn.execute(
                    select(tasks.c.task_id).where(and_(tasks.c.task_id.in_(candidates), tasks.c.updated < before))
                ).scalars()
            )
            if idle:
                conn.execute(delete(piece_hashes).where(piece_hashes.c.task_id.in_(idle)))
                conn.execute(delete(tasks).where(tasks.c.task_id.in_(idle)))
            return idle

        self._drops += 1  # a read under way now may read what is about to go: it reads again
        removed = await self.write_transaction(run)
        self.forget(removed)  # a copy a read put in memory meanwhile
        self._drops += 1
        return removed
