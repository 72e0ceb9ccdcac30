"""The tracker's service: announces decided on the store's copies in memory (core.announce), their durable
writes staged (storage.tracker_store), and the soft state around them (peer limits, pacing, scope leases,
aliases, byte tallies), with the background rounds that expire peers and retire idle tasks. tracker.app
serves it over HTTP.

Announces of one task are serialised by a per-task lock, so two peers asking at once never receive the
same origin lease. A task's peers and leases live in this process's memory (storage.tracker_store,
core.swarm): a restarted tracker knows no peers until they announce again. Several trackers may share a
PostgreSQL or MySQL database: each task is decided by one of them at a time (tracker.cluster,
core.ownership), and the service re-checks that it still decides a task as it decides an announce.

Each reply's ``interval`` is core.interval's: from the task's state and the load the intervals handed out
imply (``TrackerService.demand``); a peer's TTL follows it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgspec

from shoal.core.announce import claims_change, decide_announce
from shoal.core.announce_counts import AnnounceCounts
from shoal.core.announce_values import AnnounceOutcome, Pace, TrackerPolicy
from shoal.core.bitfield import iter_bits
from shoal.core.content_alias import ContentAliases
from shoal.core.deafness import Deafness
from shoal.core.errors import AnnounceRefused, TaskMoved
from shoal.core.ids import is_content_task
from shoal.core.interval import Demand, Pacing
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import (
    AnnounceRequest,
    AnnounceResponse,
)
from shoal.core.peer_limits import PeerLimits, PeerRefusal
from shoal.core.scope_leases import AHEAD_SWARM, Crossings, LeaseKey, ScopeLease, decide_crossings, rack_scope
from shoal.core.scope_tally import ScopeTally
from shoal.core.task_snapshot import TaskSnapshot
from shoal.core.tickets import ticket_expiry
from shoal.storage.tracker_store import TrackerStore
from shoal.tracker import bt, pools
from shoal.tracker.cluster import RETRY_AFTER, Cluster
from shoal.tracker.collector import SurvivorFreezer
from shoal.tracker.config import TrackerConfig
from shoal.tracker.origin_check import OriginCheck

log = logging.getLogger("shoal.tracker")
TALLY_TTLS = 10
"""A peer's last byte totals are kept this many peer TTLs after it was last heard of (core.scope_tally)."""
TAKEOVER_RETRIES = 4
"""After tasks move between trackers, grace lasts at least this many of the peers' retries (tracker.cluster)."""
RETIREMENT_BATCH = 500
"""Idle tasks removed per transaction: each batch's locks are held while it is removed."""
MOVING = PeerRefusal(503, int(RETRY_AFTER), "the task's tracker is changing; announce again")
"""The answer to an announce of a task that moved between trackers while it was decided (tracker.cluster)."""
GRACE_INTERVALS = 2
"""For this many busy announce intervals after it starts, or after tasks moved between the trackers sharing
its database (at most one peer TTL), the tracker grants no origin lease afresh on a task it read from the
database (core.announce, ``TaskSnapshot.grace``). A peer fetching from the origin is a downloader, told the
busy interval, and announces sooner still when it has pieces to report or needs leases (peer.announcer), so
within one interval every such peer has announced and named the pieces it is fetching (``fetching``), which
it gets back; the second interval covers an announce slowed by a busy host. Until then a piece that looks
free may be on its way from the origin to a peer not heard of yet, and leasing it would fetch it twice. An
idle seed, told the idle interval (core.interval), may come back after the grace: waiting for it would stall
every download of a known task after a restart for that long.

The intervals are of heard time (core.deafness): a spell in which the tracker shed announces or stalled
does not count, since the peers that would have named their fetches then were told to come back later
(Retry-After), and a grace spent shedding them would end before they are heard. It ends a peer TTL after
it began all the same: by then every lease granted before it began (by the previous owner, or by this
process before a restart) has lapsed by the plain TTL unless its holder was heard since, so an overloaded
tracker stops granting no leases at all after that long."""


class TrackerService:
    """The tracker's state owner: the store, the policy and the per-task locks, and the BitTorrent swarms."""

    def __init__(self, config: TrackerConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        # A new spot-check key each start: which pieces are checked is never predictable from outside.
        pacing = Pacing(
            busy=config.interval,
            idle=config.idle_interval,
            longest=config.max_interval,
            target=config.announce_rate,
            peer_ttl=config.peer_ttl,
        )
        self.policy = TrackerPolicy(
            config.interval, config.peer_ttl, config.max_peers, secrets.token_bytes(16), config.audit_share, pacing
        )
        self.deafness = Deafness(span=pacing.ttl(pacing.longest))
        """When this process could not hear its peers (it stalled, or shed announces): their silence then is
        not held against them (core.deafness), nor does it count toward a grace (GRACE_INTERVALS)."""
        self._grace = (-math.inf, 0.0)
        """The last grace begun (a start, tasks moved): when, and the heard seconds it lasts."""
        self._tick_due: float | None = None
        """When the expiry loop's sleep ends, on the event loop's clock (None while the loop works)."""
        self.demand: Demand[tuple[str, str]] = Demand(pacing)
        """This process's live peers by the interval their state calls for: the stretch load puts on them."""
        self.rng = random.Random()
        self.store = TrackerStore(config.db, clock=clock)
        self.limits = PeerLimits(
            max_peers_per_task=config.max_peers_per_task,
            new_peers_per_minute=config.max_new_peers_per_source,
            interval=config.interval,
        )
        self._next_retirement = math.inf
        """When the next pass over idle tasks runs (set as the service starts: RETIREMENT_DELAY)."""
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.bt = bt.BtTracker(config, clock)
        self.pools = pools.Pools(self.store, clock, member_ttl=config.peer_ttl, operator_hash=config.admin_token_hash)
        self._scope_leases: dict[str, tuple[int, dict[LeaseKey, ScopeLease]]] = {}
        self.aliases = ContentAliases()  # soft state, like the peers: learned again from the next finisher
        self.scope_bytes = ScopeTally()
        self.counts = AnnounceCounts() if config.metrics else None
        """What the announces decided, for /metrics (None: metrics off)."""
        self.origin_check = OriginCheck(enabled=config.origin_checks, claim_ttl=config.peer_ttl * 4)
        self.collector = SurvivorFreezer()
        """The garbage collector's rules under the soft state (tracker.collector), while the service runs."""
        self.cluster: Cluster | None = None
        if not self.store.url.startswith("sqlite"):
            self.cluster = Cluster(
                self.store,
                advertise=config.advertise,
                host=config.host,
                clock=clock,
                scheme="https" if config.serves_tls else "http",
                tls=config.forward_tls,
                fleet_key=config.fleet_key,
                balancing=config.balancing,
                # A placed task is unused once every peer it had could have been forgotten (core.balance.unused).
                unused_after=max(pacing.ttl(pacing.longest), config.bt_peer_ttl),
                # Every request it may send at once has a connection, so none of them queues for one.
                connections=config.max_inflight + config.max_relayed_polls + config.max_relayed_scrapes,
            )
            cluster = self.cluster
            self.pools.owns = lambda name: cluster.mine(pools.pool_key(name))
            self.store.owns = cluster.mine  # only the owner takes a task over (core.ownership)
        self.store.lost = self.tasks_lost

    def _lock(self, task_id: str) -> asyncio.Lock:
        lock = self._locks.get(task_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[task_id] = lock
        return lock

    async def announce(self, task_id: str, request: AnnounceRequest, seen_host: str) -> AnnounceResponse:
        # A task's announces are decided one at a time on its state in memory; the lock is not held while a
        # write reaches the database. An announce that changed a durable fact (a new task, a hash, a
        # generation) is answered once its write has committed (group commit: writes staged meanwhile share
        # one transaction), so what a peer is told of them is durable; any other touches no database.
        # Nothing awaits between the decision and the staging of its write: an announce cancelled because its
        # client left (tracker.admission) changed nothing, or has staged its write, which the store commits
        # all the same.
        seen = await self._check_claim(task_id, request, seen_host) if request.origin is not None else None
        async with self._lock(task_id):
            now = self.clock()
            if self.cluster is not None:
                self.tasks_moved(self.cluster.last_move(now))  # a task gained since is read with grace
            self._hold_grace(now)
            drops = self.cluster.drops if self.cluster is not None else 0
            snapshot = await self.store.load(
                task_id, request.done, now=now, peer_ttl=self.policy.peer_ttl, judged=self.judged(now)
            )
            if self.cluster is not None and (not self.cluster.mine(task_id) or self.cluster.drops != drops):
                # A decision is made only while our member row is in force (core.ownership), checked as it
                # is made (the request may have waited on the loop since the middleware found us its owner),
                # and never on a copy read before the cluster made us drop soft state.
                raise _refused(MOVING)
            swarm = snapshot.swarm
            if request.event != "stopped" and (swarm is None or request.peer_id not in swarm.peers):
                size = 0 if swarm is None else len(swarm.peers)
                refusal = self.limits.admit(swarm_size=size, source=seen_host, now=now)
                if refusal is not None:
                    raise _refused(refusal)
            outcome = decide_announce(
                snapshot if seen is None else replace(snapshot, origin_seen=seen),
                request,
                task_id=task_id,
                seen_host=seen_host,
                now=now,
                policy=self.policy,
                pace=Pace(self.demand.stretch(now), self.rng.random()),
            )
            if outcome.peer is not None:
                self.demand.heard((task_id, request.peer_id), outcome.nominal, now + outcome.peer.ttl)
            elif outcome.remove_peer is not None:
                self.demand.left((task_id, outcome.remove_peer))
            crossings = self._crossings(task_id, snapshot, outcome, request.want_crossings, now)
            committed = self.store.stage(outcome, created=snapshot.task is None)
            if self.counts is not None:
                self.counts.add(outcome)
            if request.received is not None:
                leaving = request.event == "stopped"
                self.scope_bytes.record(task_id, request.peer_id, request.received, now, leaving=leaving)
        if outcome.refused_origin:
            log.warning(
                "task %s: peer %s (%s) claimed the origin's file changed; the origin did not bear it out",
                task_id[:16],
                request.peer_id,
                seen_host,
            )
        if outcome.rejected:
            log.warning(
                "task %s: peer %s (%s) reported %d piece hashes the tracker did not take (pieces %s)",
                task_id[:16],
                request.peer_id,
                seen_host,
                len(outcome.rejected),
                outcome.rejected[:8],
            )
        try:
            await committed
        except TaskMoved as exc:
            # Decided before the task moved here from another tracker, or from here to it: announce again.
            log.info("%s; its announce is answered 503", exc)
            raise _refused(MOVING) from exc
        assert outcome.response is not None
        response = outcome.response
        extra: dict[str, Any] = {}
        if crossings is not None:
            extra.update(rack_leases=tuple(iter_bits(crossings.rack)), site_leases=tuple(iter_bits(crossings.site)))
        key = self.config.fleet_key
        if key is not None and request.event != "stopped" and not response.restart:
            # Admitted to the task: the ticket other peers' piece servers ask for (core.tickets).
            expires = ticket_expiry(now, self.policy.interval, self.policy.peer_ttl)
            extra["ticket"] = key.ticket(task_id, request.peer_id, expires)
        if extra:
            response = msgspec.structs.replace(response, **extra)
        return self._alias(task_id, request, response)

    def _crossings(
        self, task_id: str, snapshot: TaskSnapshot, outcome: AnnounceOutcome, want: int, now: float
    ) -> Crossings | None:
        """The asker's scope leases after this announce (core.scope_leases), None for a flat swarm. They are
        the process's soft state, like the hand-outs' view of the peers: a restarted tracker grants anew."""
        view = outcome.peer.view if outcome.peer is not None else None
        generation = outcome.task.generation
        held, table = self._scope_leases.get(task_id, (generation, {}))
        if held != generation:
            table = {}
        if view is None or outcome.response is None or outcome.response.restart or outcome.task.manifest is None:
            return None
        if not table and rack_scope(view) is None:
            return None  # a flat swarm, or a peer without labels in one: nothing to decide
        ttl = self.policy.peer_ttl
        live = [
            p.view
            for p in snapshot.peers
            if p.view.peer_id != view.peer_id and p.generation == generation and p.alive(now, ttl)
        ]
        table, crossings = decide_crossings(
            table,
            asker=view,
            peers=[*live, view],
            want=want,
            now=now,
            ttl=ttl,
            stale_after=self.config.crossing_patience,
            # The pieces on their way from the origin: leased ahead to the racks that will want them next.
            arriving=(
                {piece: lease.peer_id for piece, lease in snapshot.leases.items()}
                if want and len(live) < AHEAD_SWARM
                else None
            ),
        )
        if table:
            self._scope_leases[task_id] = (generation, table)
        else:
            self._scope_leases.pop(task_id, None)
        return crossings

    def _alias(self, task_id: str, request: AnnounceRequest, response: AnnounceResponse) -> AnnounceResponse:
        """Take a peer's vouch for its URL task's content task; name the best-vouched one to a peer joining."""
        if is_content_task(task_id):
            return response
        if request.content_task and request.event != "stopped":
            self.aliases.vouch(task_id, request.content_task, request.peer_id)
        if request.event == "started" and (named := self.aliases.best(task_id)):
            return msgspec.structs.replace(response, content_task=named)
        return response

    async def _check_claim(self, task_id: str, request: AnnounceRequest, seen_host: str) -> OriginIdentity | None:
        """What the origin describes now, when the announce claims the task's file changed (core.announce:
        only a claim the origin bears out starts a generation). Looked at outside the task's lock: a look
        takes a round trip to the origin, and the task's other announces go on meanwhile."""
        async with self._lock(task_id):
            task = (await self.store.load(task_id, ())).task
        if request.origin is None or not claims_change(task, request):
            return None
        assert task is not None
        return await self.origin_check.confirm(task.url, request.origin, seen_host)

    def longest_retry(self) -> int:
        """Whole seconds a shed announce may be told to wait at most (tracker.admission): the busy interval as
        load stretches it now, so a peer shed in an overload comes back no sooner than its interval would
        have brought it, and the shed announces do not come back faster than the ones taken."""
        return max(1, math.ceil(self.config.interval * self.demand.stretch(self.clock())))

    def held_keys(self) -> list[str]:
        """The ownership keys (core.ownership) of everything this tracker decides: its tasks, its BitTorrent
        swarms (tracker.bt) and its pools (tracker.pools)."""
        return [*self.store.held(), *self.bt.held(), *self.pools.held()]

    def drop_keys(self, lost: list[str]) -> None:
        """Let go of what another tracker owns now, of ``lost`` (keys from :meth:`held_keys`)."""
        self.pools.drop(lost)
        self.bt.drop(lost)
        held = set(self.store.held())
        if tasks := [key for key in lost if key in held]:
            self.drop_tasks(tasks)

    def drop_tasks(self, task_ids: list[str]) -> None:
        """Forget the soft state of tasks another tracker owns now (core.ownership): should they come back,
        they start clean rather than from leases the other tracker has since replaced."""
        for task_id in task_ids:
            self._scope_leases.pop(task_id, None)
        # The new owner counts their peers' bytes from here on; this tracker's counters keep what it counted.
        self.scope_bytes.forget(task_ids)
        # Their peers still count in ``demand`` until their TTLs pass: a stretch a little long for a while,
        # rather than an index of the demand by task.
        self.store.forget(task_ids)
        log.info("%d tasks moved to another tracker", len(task_ids))

    def tasks_lost(self, task_ids: list[str]) -> None:
        """Tasks whose writes found them taken over by another tracker (storage.tracker_store dropped its
        copies): their soft state here goes, as a lost task's, and should one come back it is read with grace
        like a task that moved, since its peers' fetches in flight are known only to the other tracker."""
        self.drop_tasks(task_ids)
        self.tasks_moved(self.clock())

    def tasks_moved(self, at: float) -> None:
        """Tasks moved between the trackers sharing the database at ``at``: one this tracker gained is read
        from the database, and is decided with grace as at a start (GRACE_INTERVALS)."""
        # The peers of a task whose tracker died were told to come back after RETRY_AFTER while it moved:
        # the window holds a few of those retries, however short the interval.
        grace = max(GRACE_INTERVALS * self.config.interval, TAKEOVER_RETRIES * float(RETRY_AFTER))
        if at > self._grace[0]:
            self._grace = (at, grace)
        self._hold_grace(self.clock())

    async def resume(self) -> None:
        """Begin serving: the tasks in the database are known, their peers are not until they announce, and
        for GRACE_INTERVALS no origin lease is granted afresh on those tasks. Idle tasks are first removed
        a retirement period after the start, once the live tasks' peers have announced them into memory."""
        now = self.clock()
        self._grace = (now, min(GRACE_INTERVALS * self.config.interval, self.config.peer_ttl))
        self._hold_grace(now)
        self._next_retirement = now + max(retirement_period(self.config), self.config.peer_ttl)

    def _hold_grace(self, now: float) -> None:
        """Extend the grace that began last (``_grace``: when, and its heard seconds) by the time the tracker
        could not hear its peers since (GRACE_INTERVALS), up to a peer TTL after it began."""
        began, heard = self._grace
        last = began + max(heard, self.config.peer_ttl)
        if now < last:
            end = min(began + heard + self.deafness.deaf_since(began, now), last)
            self.store.grace_until = max(self.store.grace_until, end)

    def judged(self, now: float) -> float:
        """The instant peers' silence is judged at (core.deafness), counting the expiry loop's overdue sleep."""
        overdue = 0.0 if self._tick_due is None else asyncio.get_running_loop().time() - self._tick_due
        return self.deafness.expiry_clock(now, overdue=overdue)

    async def expire_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Ticks on both sides of the sleep: a sleep that overran is a stall; the round's own work is not.
            self.deafness.tick(self.clock())
            self._tick_due = loop.time() + self.config.interval
            await asyncio.sleep(self.config.interval)
            late, self._tick_due = loop.time() - self._tick_due, None
            self.deafness.tick(self.clock(), late=late)
            self.collector.tick()
            self.bt.sweep()
            self.limits.sweep(self.clock())
            # A peer silent this long and back is counted afresh; until then its last totals are kept.
            self.scope_bytes.forget_before(self.clock() - self.config.peer_ttl * TALLY_TTLS)
            self.demand.expire(self.clock())
            try:
                await self.store.expire(self.judged(self.clock()), self.config.peer_ttl)
            except Exception:  # a fault of one round must not end the loop
                log.exception("expiring peers failed")
            now = self.clock()
            if now >= self._next_retirement:
                self._next_retirement = now + retirement_period(self.config)
                try:
                    await self.retire_tasks(now)
                except Exception:
                    log.exception("removing idle tasks failed")

    async def retire_tasks(self, now: float) -> int:
        """Record that the tasks in memory with peers are alive (at most every retirement_period), then remove
        from the database, in batches, the tasks no peer has announced for ``task_retention`` seconds; return
        how many. A task in memory, or whose announce is being decided (its lock is held), is kept; another
        tracker's task is left to it. The locks of a batch are held while it is removed, so an announce of
        one waits and then finds no task: it makes the task afresh."""
        retention = self.config.task_retention
        if not retention:
            return 0
        await self.store.touch(now, every=retirement_period(self.config))
        before = now - retention
        removed, after = 0, ""
        while True:
            idle = await self.store.idle_tasks(before, after=after, limit=RETIREMENT_BATCH)
            if not idle:
                return removed
            after = idle[-1]
            mine = [t for t in idle if self.cluster is None or self.cluster.mine(t)]
            locks = {t: self._lock(t) for t in mine}
            free = [t for t, lock in locks.items() if not lock.locked()]
            for task_id in free:
                await locks[task_id].acquire()  # free and unawaited: taken at once
            try:
                gone = await self.store.remove_tasks(free, before)
            finally:
                for task_id in free:
                    locks[task_id].release()
            for task_id in gone:
                self._scope_leases.pop(task_id, None)
            self.scope_bytes.forget(gone)
            removed += len(gone)
            if gone:
                log.info("removed %d tasks no peer announced for %gs", len(gone), retention)
            if len(idle) < RETIREMENT_BATCH:
                return removed


def retirement_period(config: TrackerConfig) -> float:
    """Seconds between passes over idle tasks, and the most a live task's last activity in the database may
    lag: an eighth of the retention (so a task is kept at least seven eighths of it after its last peer),
    at most an hour, at least an interval."""
    return max(config.interval, min(config.task_retention / 8, 3600.0))


def _refused(refusal: PeerRefusal) -> AnnounceRefused:
    return AnnounceRefused(refusal.message, status=refusal.status, retry_after=refusal.retry_after)
