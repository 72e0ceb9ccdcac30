"""The tracker's SQL store: loads a task snapshot for the core to decide on, applies the outcome.

One store, three backends (SQLite, PostgreSQL, MySQL/MariaDB) through SQLAlchemy Core; the same contract
tests run against each. Every outcome is applied in one transaction, so a crash leaves either the whole
announce or none of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.core.announce import AnnounceOutcome, PeerRecord, TaskRecord, TaskSnapshot
from shoal.core.bitfield import Bitfield
from shoal.core.handout import PeerView
from shoal.core.leases import Lease
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import HashesResponse
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


class TrackerStore(SqlStore):
    async def load(self, task_id: str, hash_pieces: Iterable[int]) -> TaskSnapshot:
        """The task, its peers and leases, and the stored hashes of ``hash_pieces``."""
        wanted = list(hash_pieces)
        async with self.connection() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
            if row is None:
                return TaskSnapshot(None, [], {}, {})
            task = _task_from_row(row)
            size = task.manifest.piece_count if task.manifest else 0
            peer_rows = (await conn.execute(select(peers).where(peers.c.task_id == task_id))).all()
            lease_rows = (await conn.execute(select(leases).where(leases.c.task_id == task_id))).all()
            known: dict[int, str] = {}
            if wanted:
                hash_rows = await conn.execute(
                    select(piece_hashes.c.piece, piece_hashes.c.hash).where(
                        and_(piece_hashes.c.task_id == task_id, piece_hashes.c.piece.in_(wanted))
                    )
                )
                known = {r.piece: r.hash for r in hash_rows}
        peer_records = []
        for r in peer_rows:
            have = (
                Bitfield(size, r.bitfield)
                if r.generation == task.generation and len(r.bitfield) == (size + 7) // 8
                else Bitfield(size)
            )
            view = PeerView(r.peer_id, r.host, r.port, r.site, r.rack, have, bool(r.bad))
            peer_records.append(PeerRecord(view, r.generation, r.last_seen))
        lease_map = {r.piece: Lease(r.piece, r.peer_id, r.expires) for r in lease_rows}
        return TaskSnapshot(task, peer_records, lease_map, known)

    async def apply(self, outcome: AnnounceOutcome, *, created: bool) -> None:
        task = outcome.task
        tid = task.task_id
        async with self.connection(write=True) as conn:
            if created:
                await conn.execute(tasks.insert().values(task_id=tid, created=time.time(), **_task_values(task)))
            else:
                await conn.execute(update(tasks).where(tasks.c.task_id == tid).values(**_task_values(task)))
            if outcome.new_generation:
                await conn.execute(delete(piece_hashes).where(piece_hashes.c.task_id == tid))
                await conn.execute(delete(leases).where(leases.c.task_id == tid))
                await conn.execute(update(peers).where(peers.c.task_id == tid).values(bitfield=b""))
            if outcome.remove_peer:
                await conn.execute(
                    delete(peers).where(and_(peers.c.task_id == tid, peers.c.peer_id == outcome.remove_peer))
                )
            if outcome.peer is not None:
                await self._upsert_peer(conn, tid, outcome.peer)
            if outcome.new_hashes:
                first_seq = task.hash_seq - len(outcome.new_hashes) + 1
                await conn.execute(
                    piece_hashes.insert(),
                    [
                        {"task_id": tid, "piece": piece, "hash": digest, "seq": first_seq + n}
                        for n, (piece, digest) in enumerate(sorted(outcome.new_hashes.items()))
                    ],
                )
            if outcome.mark_bad:
                await conn.execute(
                    update(peers)
                    .where(and_(peers.c.task_id == tid, peers.c.peer_id.in_(outcome.mark_bad)))
                    .values(bad=True)
                )
            touched = set(outcome.drop_leases) | {lease.piece for lease in outcome.put_leases}
            if touched:
                await conn.execute(
                    delete(leases).where(and_(leases.c.task_id == tid, leases.c.piece.in_(sorted(touched))))
                )
            if outcome.put_leases:
                await conn.execute(
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

    async def _upsert_peer(self, conn: AsyncConnection, task_id: str, record: PeerRecord) -> None:
        view = record.view
        values = {
            "host": view.host,
            "port": view.port,
            "site": view.site,
            "rack": view.rack,
            "bitfield": view.have.to_bytes(),
            "generation": record.generation,
            "last_seen": record.last_seen,
            "bad": view.bad,
        }
        where = and_(peers.c.task_id == task_id, peers.c.peer_id == view.peer_id)
        result = await conn.execute(update(peers).where(where).values(**values))
        if result.rowcount == 0:
            await conn.execute(peers.insert().values(task_id=task_id, peer_id=view.peer_id, **values))

    async def hashes_since(self, task_id: str, since: int) -> HashesResponse | None:
        async with self.connection() as conn:
            row = (
                await conn.execute(select(tasks.c.generation, tasks.c.hash_seq).where(tasks.c.task_id == task_id))
            ).first()
            if row is None:
                return None
            hash_rows = await conn.execute(
                select(piece_hashes.c.piece, piece_hashes.c.hash).where(
                    and_(piece_hashes.c.task_id == task_id, piece_hashes.c.seq > since)
                )
            )
            return HashesResponse(row.generation, row.hash_seq, {r.piece: r.hash for r in hash_rows})

    async def summary(self, task_id: str, now: float, peer_ttl: float) -> dict[str, Any] | None:
        snapshot = await self.load(task_id, ())
        task = snapshot.task
        if task is None:
            return None
        async with self.connection() as conn:
            hashed = (
                await conn.execute(
                    select(func.count()).select_from(piece_hashes).where(piece_hashes.c.task_id == task_id)
                )
            ).scalar_one()
        m = task.manifest
        return {
            "task_id": task.task_id,
            "url": task.url,
            "generation": task.generation,
            "length": m.length if m else None,
            "piece_length": m.piece_length if m else None,
            "pieces": m.piece_count if m else None,
            "etag": m.identity.etag if m else "",
            "last_modified": m.identity.last_modified if m else "",
            "range_ok": task.range_ok,
            "hashed_pieces": hashed,
            "leases": len([lease for lease in snapshot.leases.values() if lease.expires > now]),
            "peers": [
                {
                    "peer_id": p.view.peer_id,
                    "host": p.view.host,
                    "port": p.view.port,
                    "site": p.view.site,
                    "rack": p.view.rack,
                    "pieces": len(p.view.have),
                    "bad": p.view.bad,
                    "last_seen": p.last_seen,
                }
                for p in snapshot.peers
                if now - p.last_seen < peer_ttl
            ],
        }

    async def expire(self, now: float, peer_ttl: float) -> int:
        """Forget peers unheard of for ``peer_ttl`` and the leases they held; return how many peers."""
        cutoff = now - peer_ttl
        async with self.connection(write=True) as conn:
            await conn.execute(delete(leases).where(leases.c.expires < now))
            result = await conn.execute(delete(peers).where(peers.c.last_seen < cutoff))
            return int(result.rowcount or 0)
