"""The renewals of this tracker's member row, on a thread of their own (core.ownership has the rules).

Why a thread: a renewal on the tracker's event loop waits behind the work it fences, for a connection of
the pool its announces share and, between its round trips, for the loop to come round; a tracker at its
CPU quota that sheds most of what it is sent renewed past its fence that way, joined again, and its tasks
moved back and forth (benchmarks/RESULTS.md, issue 27). Here the renewals run on a thread with its own
event loop and its own database connection (an engine with a pool of one), so neither the loop's backlog
nor the pool's queue delays them.

The rules between the thread and the tracker's loop:

* **The thread owns the member row**: it registers the row, renews it every HEARTBEAT (start to start),
  registers again when a renewal came too late (core.ownership.must_rejoin), and deletes the row when it
  stops. Nothing on the loop touches the row.
* **What the thread learns it publishes as one immutable** :class:`Reading`, by assigning one attribute
  (``Renewals.reading``); the loop reads that reference once for each decision, so it never sees half of a
  renewal, and never writes it. A reading carries the instant its renewal began (``renewed``: the fence runs
  from it, and the rows were read after it), the rows and the placements (read after the rows), when this
  member may decide (``counts_from``), and the incarnation of the row (bumped at each registration).
* **The loop hands the thread its load** (core.balance) by assigning one float (``Renewals.load``); each
  renewal writes the latest.
* **Before it registers again the thread publishes a fenced reading** (``renewed`` -inf: the loop decides
  nothing), and the new row's reading only once the registration has committed. That reading's
  ``forget_at`` names the latest incarnation before which another member may have decided this member's
  tasks (core.ownership.others_took_over); it never goes back, so a loop that missed an incarnation still
  forgets. The loop, before it decides anything with a reading of a new incarnation, drops the soft state
  of every task it holds when ``forget_at`` is past what it adopted (tracker.cluster: synchronous, with no
  await between the drop and the decision).
* **Decisions are made only while the row is in force**: the loop checks core.ownership.in_force with its
  clock at the moment it decides, against the reading it reads then (not when the request arrived: a request
  waits on the loop).
* **Watchdog.** The loop stamps ``loop_seen`` every HEARTBEAT (``tick``); the thread renews only while
  that stamp is younger than LOOP_PATIENCE (core.ownership.keeps_renewing). A wedged loop thus lets the
  row lapse: the tracker fences itself, and the others take its tasks over. When the loop runs again, the
  next renewal comes after the fence and the member joins again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from shoal.core.errors import StoreError
from shoal.core.ownership import (
    HEARTBEAT,
    TTL,
    Placement,
    TrackerMember,
    counts_from,
    in_force,
    keeps_renewing,
    must_rejoin,
    others_took_over,
)
from shoal.storage.cluster_store import ClusterStore
from shoal.storage.db import SqlStore

log = logging.getLogger("shoal.tracker.cluster")


@dataclass(frozen=True, slots=True)
class Reading:
    """The member rows as one renewal (or registration) of ours read them."""

    renewed: float
    """When that renewal began (our clock): the row is in force until TTL - FENCE_MARGIN later, and the
    rows were read after it. -inf: fenced (not joined yet, joining again, or stopped)."""
    members: tuple[TrackerMember, ...]
    counts_from: float
    """When this member may decide, after its latest registration (core.ownership.counts_from)."""
    incarnation: int
    """Bumped at each registration of our row."""
    forget_at: int
    """The latest incarnation before which another member may have decided our tasks: the soft state
    held from before it must go."""
    placements: Mapping[str, Placement] = field(default_factory=dict)
    """Every task placed by load (core.ownership, "Placements"), read after the rows."""

    def deciding(self, now: float) -> bool:
        """Whether this member decides the tasks it owns at ``now``: its row is in force and it has waited
        out its join."""
        return in_force(self.renewed, now) and now >= self.counts_from


FENCED = Reading(-math.inf, (), math.inf, 0, 0)


class Renewals:
    """This member's row, kept by a thread of its own. ``start`` registers it (the first reading); the
    loop calls ``tick`` every HEARTBEAT and reads ``reading``; ``stop`` deletes the row."""

    def __init__(self, db: str, tracker_id: str, url: str, clock: Callable[[], float]) -> None:
        self._db = db
        self.tracker_id = tracker_id
        self.url = url
        self.clock = clock
        self.reading = FENCED
        """The latest reading: written by the thread only, as one reference."""
        self.loop_seen = clock()
        """When the tracker's loop last made progress (``tick``): read by the thread's watchdog."""
        self.rejoins = 0
        """Registrations after the first (the row lapsed, or a renewal came after the fence)."""
        self.last_renewal = 0.0
        """Seconds the latest renewal took, its round trips on the thread's own connection."""
        self.load = 0.0
        """This member's load, written by the loop (core.balance): each renewal writes the latest."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._halted = threading.Event()  # set by stop(): the thread publishes no reading after it
        self._wedged = False

    def tick(self) -> None:
        """The loop made progress (called on the loop)."""
        self.loop_seen = self.clock()

    async def start(self) -> None:
        """Start the thread and return once the row is registered (StoreError if that failed)."""
        self.tick()
        registered: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run(registered)), name=f"member-{self.tracker_id}", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(registered)

    async def stop(self) -> None:
        """Stop renewing and delete the row: decide nothing more, first."""
        self._halted.set()
        self.reading = replace(self.reading, renewed=-math.inf)
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stopping.set)
        await asyncio.to_thread(thread.join)
        self._thread = None

    async def _run(self, registered: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            async with SqlStore(self._db, pool_size=1, migrate=False) as store:
                rows = ClusterStore(store)
                try:
                    await self._register(rows)
                except BaseException as exc:
                    registered.set_exception(exc)
                    return
                registered.set_result(None)
                try:
                    await self._renew_forever(rows)
                finally:
                    self.reading = replace(self.reading, renewed=-math.inf)
                    with contextlib.suppress(StoreError):
                        await rows.leave(self.tracker_id)
        except BaseException as exc:  # the engine could not open (the database unreachable at the start)
            if not registered.done():
                registered.set_exception(exc if isinstance(exc, Exception) else StoreError(str(exc)))
            else:
                log.exception("tracker %s: the member row's thread failed", self.tracker_id)

    async def _renew_forever(self, rows: ClusterStore) -> None:
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + HEARTBEAT, loop.time())  # start to start: a slow renewal does not push the next
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), due - loop.time())
            if self._stopping.is_set():
                return
            try:
                await self.beat(rows)
            except StoreError as exc:
                log.warning("tracker %s: renewing the member row failed: %s", self.tracker_id, exc)

    async def beat(self, rows: ClusterStore) -> None:
        """One heartbeat: renew the row (or register it again), unless the loop is wedged."""
        now = self.clock()
        if not keeps_renewing(self.loop_seen, now):
            if not self._wedged:
                self._wedged = True
                log.warning(
                    "tracker %s: the event loop has made no progress for %.1f s: no more renewals, so the "
                    "other trackers take this one's tasks over",
                    self.tracker_id,
                    now - self.loop_seen,
                )
            return
        if self._wedged:
            self._wedged = False
            log.warning("tracker %s: the event loop runs again", self.tracker_id)
        reading = self.reading
        if not must_rejoin(reading.renewed, now):
            members = await rows.renew(self.tracker_id, now, self.load)
            placed = await rows.placements() if members is not None else {}
            self.last_renewal = self.clock() - now
            if members is not None and not must_rejoin(reading.renewed, self.clock()):
                if not self._halted.is_set():
                    self.reading = replace(reading, renewed=now, members=tuple(members), placements=placed)
                return
            why = "our member row was gone"
            if members is not None:
                why = f"a renewal ended {self.clock() - reading.renewed:.1f} s after the last: we had stopped deciding"
        else:
            why = f"no renewal for {now - reading.renewed:.1f} s: we had stopped deciding"
        log.warning("tracker %s: %s; joining again", self.tracker_id, why)
        self.rejoins += 1
        await self._register(rows)

    async def _register(self, rows: ClusterStore) -> None:
        """Register the row (again): fenced until the registration has committed."""
        before = self.reading
        self.reading = replace(before, renewed=-math.inf)
        now = self.clock()
        members = await rows.register(self.tracker_id, self.url, now)
        committed = self.clock()
        placed = await rows.placements()
        me = next(m for m in members if m.tracker_id == self.tracker_id)
        incarnation = before.incarnation + 1
        others = [m for m in (*before.members, *members) if m.tracker_id != self.tracker_id]
        # Our old row expired TTL after the last renewal the database took (-inf: none since we started).
        took_over = before.incarnation > 0 and others_took_over(others, before.renewed + TTL)
        forget_at = incarnation if took_over else before.forget_at
        begins = counts_from(now, me.active_from, committed)
        if not self._halted.is_set():
            self.reading = Reading(now, tuple(members), begins, incarnation, forget_at, placed)
