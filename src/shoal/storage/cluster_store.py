"""The member rows of tracker processes sharing one database (core.ownership has the rules)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, update

from shoal.core.ownership import JOIN_DELAY, TTL, Placement, TrackerMember
from shoal.storage.db import SqlStore
from shoal.storage.schema import placements, tracker_cluster, trackers

FORGET_AFTER = 60.0
"""Rows of members dead this long are deleted by whichever tracker renews next."""


UNPLACE_BATCH = 500
"""Placements one statement deletes at most (:meth:`ClusterStore.unplace`)."""


def _member(row: object) -> TrackerMember:
    return TrackerMember(row.tracker_id, row.url, row.active_from, row.expires, row.load_rate)  # type: ignore[attr-defined]


def _placement(row: object) -> Placement:
    return Placement(row.task_key, row.tracker_id, row.active_from, row.previous)  # type: ignore[attr-defined]


class ClusterStore:
    """Registration and renewal of this process's member row, over a store's database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    async def register(self, tracker_id: str, url: str, now: float) -> list[TrackerMember]:
        """Add this tracker's row and return every member's. The cluster row is locked meanwhile, so two
        trackers registering at once see each other: the second waits for the first to commit. A tracker
        that finds no other live member counts at once; otherwise after JOIN_DELAY. A row of its own from
        before (it joins again: core.ownership.must_rejoin) is replaced."""
        async with self.store.connection(write=True) as conn:
            await conn.execute(select(tracker_cluster.c.id).where(tracker_cluster.c.id == 1).with_for_update())
            rows = [_member(r) for r in await conn.execute(select(trackers)) if r.tracker_id != tracker_id]
            alone = not any(m.expires > now for m in rows)
            active_from = now if alone else now + JOIN_DELAY
            await conn.execute(delete(trackers).where(trackers.c.tracker_id == tracker_id))
            await conn.execute(
                trackers.insert().values(tracker_id=tracker_id, url=url, active_from=active_from, expires=now + TTL)
            )
        return [*rows, TrackerMember(tracker_id, url, active_from, now + TTL)]

    async def renew(self, tracker_id: str, now: float, load: float = 0.0) -> list[TrackerMember] | None:
        """Extend this tracker's row (with its ``load``, core.balance) and return every member's; None when
        the row is gone (deleted as dead: the tracker must register again). Rows dead for FORGET_AFTER are
        deleted, and so are the placements (core.ownership, "Placements") whose member has no row left and
        whose ``active_from`` is JOIN_DELAY past: the hash owns their tasks already."""
        async with self.store.connection(write=True) as conn:
            renewed = await conn.execute(
                update(trackers).where(trackers.c.tracker_id == tracker_id).values(expires=now + TTL, load_rate=load)
            )
            if renewed.rowcount == 0:
                return None
            await conn.execute(delete(trackers).where(trackers.c.expires < now - FORGET_AFTER))
            await conn.execute(
                delete(placements).where(
                    placements.c.tracker_id.not_in(select(trackers.c.tracker_id)),
                    placements.c.active_from < now - JOIN_DELAY,
                )
            )
            return [_member(r) for r in await conn.execute(select(trackers))]

    async def placements(self) -> dict[str, Placement]:
        """Every placement (core.ownership, "Placements")."""
        async with self.store.connection() as conn:
            return {r.task_key: _placement(r) for r in await conn.execute(select(placements))}

    async def place(self, placement: Placement, before: Placement | None) -> bool:
        """Write ``placement`` over ``before``, the task's placement as the placing member read it (None: no
        row), and return True; write nothing and return False when the task's row is no longer ``before``
        (core.ownership, "Placements": a compare-and-set). A move written again after a failure that may have
        committed finds itself, and counts as written. The row is compared as read (locked), as in
        :meth:`unplace`."""
        async with self.store.connection(write=True) as conn:
            found = (
                await conn.execute(select(placements).where(placements.c.task_key == placement.key).with_for_update())
            ).one_or_none()
            current = None if found is None else _placement(found)
            if current == placement:
                return True
            if current != before:
                return False
            row = {
                "tracker_id": placement.tracker_id,
                "active_from": placement.active_from,
                "previous": placement.previous,
            }
            if found is None:
                await conn.execute(placements.insert().values(task_key=placement.key, **row))
            else:
                await conn.execute(update(placements).where(placements.c.task_key == placement.key).values(**row))
            return True

    async def unplace(self, withdrawn: Iterable[Placement]) -> list[str]:
        """Delete these placements, each only while the task's row is still that very placement (one replaced
        since stays: core.ownership, "Placements"); return the keys of those deleted. The rows are compared
        as read (locked), not in the statement's condition, so a time read back through the driver compares
        equal to itself on every backend."""
        wanted = {p.key: p for p in withdrawn}
        keys = sorted(wanted)
        gone: list[str] = []
        async with self.store.connection(write=True) as conn:
            for start in range(0, len(keys), UNPLACE_BATCH):
                batch = keys[start : start + UNPLACE_BATCH]
                found = await conn.execute(select(placements).where(placements.c.task_key.in_(batch)).with_for_update())
                same = sorted(r.task_key for r in found if _placement(r) == wanted[r.task_key])
                if same:
                    await conn.execute(delete(placements).where(placements.c.task_key.in_(same)))
                gone += same
        return gone

    async def leave(self, tracker_id: str) -> None:
        """Delete this tracker's row: its tasks move to the others at their next heartbeat."""
        async with self.store.connection(write=True) as conn:
            await conn.execute(delete(trackers).where(trackers.c.tracker_id == tracker_id))
