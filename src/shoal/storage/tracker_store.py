"""The tracker's SQL store: loads a task snapshot for the core to decide on, applies the outcome.

One store, three backends (SQLite, PostgreSQL, MySQL/MariaDB) through SQLAlchemy Core; the same contract
tests run against each. Every outcome is applied in one transaction, so a crash leaves either the whole
announce or none of it.

One tracker process owns its database, so the store keeps a copy of each active task's rows
(:class:`TaskRows`): an announce reads its snapshot, and a hash look-up its hashes, from memory and pays
only for the writes. A change goes to the copy when it is staged (:meth:`TrackerStore.stage`) and to the
database behind it, in the order staged: one writer task commits everything staged meanwhile in one
transaction (group commit), and a caller learns its change is durable when its future resolves. So the
tracker decides a task's announces one at a time on the copy without holding the task's lock across a
round trip to the database: a commit takes far longer than a decision, longest on a busy host, and every
other announce of the task would queue behind it (benchmarks/tracker_announce.py measures announces a
second and the time to answer; figures in benchmarks/RESULTS.md).

A write that fails drops the copies of the tasks it and every write staged behind it changed (those were
decided on state that included it), and fails them all; an expiry sweep that leaves a task without peers
drops its copy too. A task not in memory is read from the database once no write is pending, which is what
a restarted tracker does.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, update

from shoal.core.announce import AnnounceOutcome, PeerRecord, TaskRecord, TaskSnapshot
from shoal.core.audit import Audit
from shoal.core.bitfield import Bitfield
from shoal.core.handout import PeerView
from shoal.core.leases import Lease
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import HashesResponse, PeerSummary, TaskSummary
from shoal.core.resume import resume
from shoal.storage.db import SqlStore
from shoal.storage.schema import leases, peers, piece_hashes, tasks


def _task_from_row(row: Any) -> TaskRecord:
    manifest = None
    if row.length is not None:
        manifest = Manifest(OriginIdentity(row.length, row.etag, row.last_modified), row.piece_length)
    return TaskRecord(
        task_id=row.task_id,
        url=row.url,
        generation=row.generation,
        manifest=manifest,
        range_ok=bool(row.range_ok),
        hash_seq=row.hash_seq,
    )


def _task_values(task: TaskRecord) -> dict[str, Any]:
    m = task.manifest
    return {
        "url": task.url,
        "generation": task.generation,
        "length": m.length if m else None,
        "piece_length": m.piece_length if m else None,
        "etag": m.identity.etag if m else "",
        "last_modified": m.identity.last_modified if m else "",
        "range_ok": task.range_ok,
        "hash_seq": task.hash_seq,
        "updated": time.time(),
    }


@dataclass(frozen=True, slots=True)
class PeerRow:
    """A peers row as stored (the bitfield raw, under the generation it was reported in)."""

    peer_id: str
    host: str
    port: int
    site: str
    rack: str
    bitfield: bytes
    generation: int
    last_seen: float
    bad: bool
    accusers: frozenset[str] = frozenset()
    """Kept in memory only: after a restart a peer is judged afresh (``bad`` is stored)."""
    reported: int = 0
    """Kept in memory only (core.announce.PeerRecord.reported)."""


@dataclass(slots=True)
class TaskRows:
    """One task's rows: what the database holds for it, read once and then kept up to date."""

    task: TaskRecord
    peers: dict[str, PeerRow] = field(default_factory=dict)
    leases: dict[int, Lease] = field(default_factory=dict)
    hashes: dict[int, tuple[str, int]] = field(default_factory=dict)
    """piece -> (hash, seq)"""
    hashed: int = 0
    """The keys of ``hashes`` as a bit mask."""
    rejected_reports: int = 0
    """Hash reports the tracker did not take since this copy was read (core.announce)."""
    refused_origins: int = 0
    """Claims that the origin's file changed which the origin did not bear out, since this copy was read."""
    audits: dict[int, Audit] = field(default_factory=dict)
    """Spot checks under way (core.audit). Kept in memory only, like the two below: a restarted tracker
    begins no check of the hashes it read back, and can revoke only what it saw reported since."""
    reporters: dict[int, str] = field(default_factory=dict)
    revoked: dict[int, int] = field(default_factory=dict)
    """piece -> the seq its hash was revoked at (until a new hash replaces it)."""

    def __post_init__(self) -> None:
        for piece in self.hashes:
            self.hashed |= 1 << piece

    def snapshot(self, hash_pieces: Iterable[int]) -> TaskSnapshot:
        task = self.task
        size = task.manifest.piece_count if task.manifest else 0
        records = []
        for r in self.peers.values():
            have = (
                Bitfield(size, r.bitfield)
                if r.generation == task.generation and len(r.bitfield) == (size + 7) // 8
                else Bitfield(size)
            )
            view = PeerView(r.peer_id, r.host, r.port, r.site, r.rack, have, r.bad, r.accusers)
            records.append(PeerRecord(view, r.generation, r.last_seen, r.reported))
        known = {i: self.hashes[i][0] for i in hash_pieces if i in self.hashes}
        return TaskSnapshot(task, records, dict(self.leases), known, self.hashed, self.audits, self.reporters)

    def hashes_since(self, since: int) -> HashesResponse:
        new = {piece: digest for piece, (digest, seq) in self.hashes.items() if seq > since}
        revoked = tuple(sorted(piece for piece, seq in self.revoked.items() if seq > since))
        return HashesResponse(self.task.generation, self.task.hash_seq, new, revoked)

    def apply(self, outcome: AnnounceOutcome) -> None:
        """The same changes :meth:`TrackerStore.apply` made to the database, in the same order."""
        self.task = outcome.task
        if outcome.new_generation:
            self.hashes.clear()
            self.hashed = 0
            self.audits.clear()
            self.reporters.clear()
            self.revoked.clear()
            self.leases.clear()
            self.peers = {k: replace(r, bitfield=b"") for k, r in self.peers.items()}
        if outcome.remove_peer:
            self.peers.pop(outcome.remove_peer, None)
        if outcome.peer is not None:
            self.peers[outcome.peer.view.peer_id] = _peer_row(outcome.peer)
        revoked_seq, first_seq = _seqs(outcome)
        for n, piece in enumerate(outcome.revoked):
            self.hashes.pop(piece, None)
            self.reporters.pop(piece, None)
            self.hashed &= ~(1 << piece)
            self.revoked[piece] = revoked_seq + n
        for n, (piece, digest) in enumerate(sorted(outcome.new_hashes.items())):
            self.hashes[piece] = (digest, first_seq + n)
            self.hashed |= 1 << piece
            self.revoked.pop(piece, None)
        self.reporters.update({piece: peer for piece, peer in outcome.reporters.items() if peer})
        for peer_id, have in outcome.unheld.items():
            if peer_id in self.peers:
                self.peers[peer_id] = replace(self.peers[peer_id], bitfield=have.to_bytes())
        for piece, audit in outcome.audits.items():
            if audit is None:
                self.audits.pop(piece, None)
            else:
                self.audits[piece] = audit
        self.rejected_reports += len(outcome.rejected)
        self.refused_origins += outcome.refused_origin
        for peer_id, accusers in outcome.accusations.items():
            if peer_id in self.peers:
                self.peers[peer_id] = replace(self.peers[peer_id], accusers=accusers)
        for peer_id in outcome.mark_bad:
            if peer_id in self.peers:
                self.peers[peer_id] = replace(self.peers[peer_id], bad=True)
        for piece in set(outcome.drop_leases) | {lease.piece for lease in outcome.put_leases}:
            self.leases.pop(piece, None)
        for lease in outcome.put_leases:
            self.leases[lease.piece] = lease

    def expire(self, now: float, cutoff: float) -> None:
        self.leases = {i: lease for i, lease in self.leases.items() if not lease.expires < now}
        self.peers = {k: r for k, r in self.peers.items() if not r.last_seen < cutoff}


def _seqs(outcome: AnnounceOutcome) -> tuple[int, int]:
    """The first seq of the outcome's revocations, and of its new hashes, which follow them."""
    first = outcome.task.hash_seq - len(outcome.revoked) - len(outcome.new_hashes) + 1
    return first, first + len(outcome.revoked)


def _peer_row(record: PeerRecord) -> PeerRow:
    view = record.view
    return PeerRow(
        view.peer_id,
        view.host,
        view.port,
        view.site,
        view.rack,
        view.have.to_bytes(),
        record.generation,
        record.last_seen,
        view.bad,
        view.accusers,
        record.reported,
    )


def _run_batch(batch: list[_Staged], conn: Connection) -> list[Any]:
    return [staged.run(conn) for staged in batch]


@dataclass(slots=True)
class _Staged:
    """A write staged for the database: what it runs in the batch's transaction, whose copies it changed
    (None: every task's), and the future its caller awaits."""

    run: Callable[[Connection], Any]
    tasks: Collection[str] | None
    done: asyncio.Future[Any]


class TrackerStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._rows: dict[str, TaskRows] = {}
        self._writes = 0  # bumped as every batch starts and ends: a read that overlapped one is not kept
        self._staged: list[_Staged] = []  # not yet begun, in the order staged
        self._writer: asyncio.Task[None] | None = None

    async def __aexit__(self, *exc: Any) -> None:
        await self.flush()
        await super().__aexit__(*exc)

    async def flush(self) -> None:
        """Return once every write staged so far has committed or failed."""
        while self._writer is not None:
            await asyncio.wait([self._writer])

    def _stage(self, run: Callable[[Connection], Any], tasks: Collection[str] | None) -> asyncio.Future[Any]:
        done = asyncio.get_running_loop().create_future()
        self._staged.append(_Staged(run, tasks, done))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_staged())
        return done

    async def _write_staged(self) -> None:
        """The one writer: commit what is staged, a batch per transaction, until nothing is left."""
        try:
            while self._staged:
                batch, self._staged = self._staged, []
                self._writes += 1
                try:
                    results = await self.write_transaction(functools.partial(_run_batch, batch))
                except BaseException as exc:
                    failed, self._staged = batch + self._staged, []
                    for staged in failed:
                        if staged.tasks is None:
                            self._rows.clear()
                        for task_id in staged.tasks or ():
                            self._rows.pop(task_id, None)
                        if staged.done.done():  # its caller was cancelled while it waited
                            continue
                        if isinstance(exc, asyncio.CancelledError):
                            staged.done.cancel()
                        else:
                            staged.done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for staged, result in zip(batch, results, strict=True):
                        if not staged.done.done():
                            staged.done.set_result(result)
                finally:
                    self._writes += 1
        finally:
            self._writer = None

    async def _task_rows(self, task_id: str) -> TaskRows | None:
        rows = self._rows.get(task_id)
        if rows is not None:
            return rows
        await self.flush()  # the database must hold every change staged so far
        rows = self._rows.get(task_id)
        if rows is not None:
            return rows
        writes = self._writes
        rows = await self.read_rows(task_id)
        if rows is not None and self._writes == writes:
            # Another reader may have put the task's copy in place while this one read, and an announce may
            # already have changed that copy: keep it, never replace it with what was read.
            rows = self._rows.setdefault(task_id, rows)
        return rows

    async def read_rows(self, task_id: str) -> TaskRows | None:
        """The task's rows as the database holds them (not the copy in memory)."""
        async with self.connection() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
            if row is None:
                return None
            peer_rows = (await conn.execute(select(peers).where(peers.c.task_id == task_id))).all()
            lease_rows = (await conn.execute(select(leases).where(leases.c.task_id == task_id))).all()
            hash_rows = (
                await conn.execute(
                    select(piece_hashes.c.piece, piece_hashes.c.hash, piece_hashes.c.seq).where(
                        piece_hashes.c.task_id == task_id
                    )
                )
            ).all()
        return TaskRows(
            _task_from_row(row),
            {
                r.peer_id: PeerRow(
                    r.peer_id, r.host, r.port, r.site, r.rack, r.bitfield, r.generation, r.last_seen, bool(r.bad)
                )
                for r in peer_rows
            },
            {r.piece: Lease(r.piece, r.peer_id, r.expires) for r in lease_rows},
            {r.piece: (r.hash, r.seq) for r in hash_rows},
        )

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop the copies of these tasks: the next announce of one reads it from the database again."""
        for task_id in task_ids:
            self._rows.pop(task_id, None)

    async def load(self, task_id: str, hash_pieces: Iterable[int]) -> TaskSnapshot:
        """The task, its peers and leases, and the stored hashes of ``hash_pieces``."""
        rows = await self._task_rows(task_id)
        if rows is None:
            return TaskSnapshot(None, [], {}, {})
        return rows.snapshot(hash_pieces)

    async def apply(self, outcome: AnnounceOutcome, *, created: bool) -> None:
        """Stage an outcome and wait until it has committed."""
        await self.stage(outcome, created=created)

    def stage(self, outcome: AnnounceOutcome, *, created: bool) -> asyncio.Future[None]:
        """Apply an outcome to the task's copy now and stage its write; the future resolves once the write
        has committed (StoreError if it failed). ``created``: the outcome creates the task."""
        task_id = outcome.task.task_id
        rows = self._rows.get(task_id)
        # Most announces change only their peer's row and leases: the task's row is written when it changed
        # (a hash, a generation, the manifest), or when there is no copy to tell.
        task_changed = rows is None or rows.task != outcome.task
        if rows is not None:
            rows.apply(outcome)
        elif created:
            self._rows[task_id] = fresh = TaskRows(outcome.task)
            fresh.apply(outcome)

        def write(conn: Connection) -> None:
            self._write(conn, outcome, created=created, task_changed=task_changed)

        return self._stage(write, (task_id,))

    def _write(self, conn: Connection, outcome: AnnounceOutcome, *, created: bool, task_changed: bool) -> None:
        task = outcome.task
        tid = task.task_id
        if created:
            conn.execute(tasks.insert().values(task_id=tid, created=time.time(), **_task_values(task)))
        elif task_changed:
            conn.execute(update(tasks).where(tasks.c.task_id == tid).values(**_task_values(task)))
        if outcome.new_generation:
            conn.execute(delete(piece_hashes).where(piece_hashes.c.task_id == tid))
            conn.execute(delete(leases).where(leases.c.task_id == tid))
            conn.execute(update(peers).where(peers.c.task_id == tid).values(bitfield=b""))
        if outcome.remove_peer:
            conn.execute(delete(peers).where(and_(peers.c.task_id == tid, peers.c.peer_id == outcome.remove_peer)))
        if outcome.peer is not None:
            self._upsert_peer(conn, tid, outcome.peer)
        if outcome.revoked:
            conn.execute(
                delete(piece_hashes).where(
                    and_(piece_hashes.c.task_id == tid, piece_hashes.c.piece.in_(sorted(outcome.revoked)))
                )
            )
        if outcome.new_hashes:
            _, first_seq = _seqs(outcome)
            conn.execute(
                piece_hashes.insert(),
                [
                    {"task_id": tid, "piece": piece, "hash": digest, "seq": first_seq + n}
                    for n, (piece, digest) in enumerate(sorted(outcome.new_hashes.items()))
                ],
            )
        for peer_id, have in outcome.unheld.items():
            conn.execute(
                update(peers)
                .where(and_(peers.c.task_id == tid, peers.c.peer_id == peer_id))
                .values(bitfield=have.to_bytes())
            )
        if outcome.mark_bad:
            conn.execute(
                update(peers)
                .where(and_(peers.c.task_id == tid, peers.c.peer_id.in_(outcome.mark_bad)))
                .values(bad=True)
            )
        touched = set(outcome.drop_leases) | {lease.piece for lease in outcome.put_leases}
        if touched:
            conn.execute(delete(leases).where(and_(leases.c.task_id == tid, leases.c.piece.in_(sorted(touched)))))
        if outcome.put_leases:
            conn.execute(
                leases.insert(),
                [
                    {
                        "task_id": tid,
                        "piece": lease.piece,
                        "peer_id": lease.peer_id,
                        "expires": lease.expires,
                    }
                    for lease in outcome.put_leases
                ],
            )

    def _upsert_peer(self, conn: Connection, task_id: str, record: PeerRecord) -> None:
        values = asdict(_peer_row(record))  # the row the copy in memory gets too
        del values["accusers"], values["reported"]
        peer_id = values.pop("peer_id")
        where = and_(peers.c.task_id == task_id, peers.c.peer_id == peer_id)
        result = conn.execute(update(peers).where(where).values(**values))
        if result.rowcount == 0:
            conn.execute(peers.insert().values(task_id=task_id, peer_id=peer_id, **values))

    async def hashes_since(self, task_id: str, since: int) -> HashesResponse | None:
        rows = await self._task_rows(task_id)
        return None if rows is None else rows.hashes_since(since)

    async def summary(self, task_id: str, now: float, peer_ttl: float) -> TaskSummary | None:
        rows = await self._task_rows(task_id)
        if rows is None:
            return None
        snapshot = rows.snapshot(())
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
            leases=len([lease for lease in snapshot.leases.values() if lease.expires > now]),
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
                for p in snapshot.peers
                if now - p.last_seen < peer_ttl
            ),
        )

    async def resume(self, now: float, peer_ttl: float) -> tuple[int, int]:
        """Carry over the peers and leases a previous tracker left live (:mod:`shoal.core.resume`); return
        how many of each. Called once at start-up, before any announce is served."""
        async with self.connection() as conn:
            last_heard = (await conn.execute(select(func.max(peers.c.last_seen)))).scalar()
        plan = resume(None if last_heard is None else float(last_heard), now, peer_ttl)
        if plan is None:
            return 0, 0

        def write(conn: Connection) -> tuple[int, int]:
            resumed_peers = conn.execute(
                update(peers).where(peers.c.last_seen >= plan.live_since).values(last_seen=plan.last_seen)
            )
            resumed_leases = conn.execute(
                update(leases).where(leases.c.expires >= plan.leases_from).values(expires=plan.expires)
            )
            return int(resumed_peers.rowcount or 0), int(resumed_leases.rowcount or 0)

        self._rows.clear()  # none are read before start-up ends; none may outlive the rows they copy
        counts: tuple[int, int] = await self._stage(write, None)
        return counts

    async def expire(self, now: float, peer_ttl: float) -> int:
        """Forget peers unheard of for ``peer_ttl`` and the leases they held; return how many peers."""
        cutoff = now - peer_ttl
        for task_id, rows in list(self._rows.items()):
            rows.expire(now, cutoff)
            if not rows.peers:
                del self._rows[task_id]  # nobody announces it: read it again if someone comes back

        def write(conn: Connection) -> int:
            conn.execute(delete(leases).where(leases.c.expires < now))
            result = conn.execute(delete(peers).where(peers.c.last_seen < cutoff))
            return int(result.rowcount or 0)

        return int(await self._stage(write, None))
