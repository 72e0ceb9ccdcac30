"""The simulated tracker: the real core decisions on state kept in memory, as tracker/app.py keeps it.

Each announce runs :func:`shoal.core.announce.decide_announce` (origin leases, hash reports, the hand-out) on
the task's :class:`shoal.core.swarm.Swarm`, expired at the decision's time and updated with its outcome, as
storage/tracker_store.py keeps it; then :func:`shoal.core.scope_leases.decide_crossings` the way
``TrackerService._crossings`` drives it (the swarm's origin leases as the pieces arriving, in a swarm of at
most AHEAD_SWARM peers). The outcome is applied to the task record, the swarm, the hashes and the scope
lease table. No database: the simulator measures the decisions, not the store.

``decide_announce`` reads the swarm's aggregates (holder counts, lease masks, the racks of
``Swarm.racks`` that share the origin's stripes, the hand-out index), so it is exact at every size. The
scope leases are decided on the whole state for swarms of up to ``exact_limit`` peers, as the tracker does.
Past that, since ``decide_crossings`` costs time per peer of the task, it gets a bounded snapshot: the
holders of the asker's rack's and site's scope leases, and one aggregate per rack (its own too) carrying
the rack's labels and the union of its pieces, with only the asker's rack's and site's part of the lease
table (the rest is other scopes' business, and is left as it is). Those decisions read unions of pieces by
scope and the leases of the asker's scopes, so they come out as on the whole state.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import msgspec

from shoal.core.announce import decide_announce
from shoal.core.announce_values import Pace, TaskRecord, TrackerPolicy
from shoal.core.audit import Audit
from shoal.core.bitfield import Bitfield, iter_bits
from shoal.core.handout import PeerView
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.core.scope_leases import (
    AHEAD_SWARM,
    LeaseKey,
    Scope,
    ScopeLease,
    decide_crossings,
    rack_scope,
    site_scope,
)
from shoal.core.swarm import Swarm
from shoal.core.task_snapshot import TaskSnapshot


@dataclass(slots=True)
class TrackerStats:
    announces: int = 0
    hash_lookups: int = 0
    origin_leases: int = 0
    scope_leases: int = 0
    wall: float = 0.0
    """Seconds of the simulator's own time spent in the decisions."""
    snapshot_peers: int = 0
    """Peer views handed to decide_crossings, summed over announces."""


@dataclass(slots=True)
class SimTracker:
    task_id: str
    policy: TrackerPolicy
    crossing_patience: float
    exact_limit: int = 256
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    """The draws the tracker makes per announce (core.announce_values.Pace: the hand-out's window), seeded."""
    task: TaskRecord | None = None
    swarm: Swarm | None = None
    hashes: dict[int, str] = field(default_factory=dict)
    hashed: int = 0
    audits: dict[int, Audit] = field(default_factory=dict)
    reporters: dict[int, str] = field(default_factory=dict)
    scope_table: dict[LeaseKey, ScopeLease] = field(default_factory=dict)
    by_scope: dict[Scope, dict[LeaseKey, ScopeLease]] = field(default_factory=dict)
    """The same table split by scope, as bounded decisions keep it (each reads only its asker's scopes)."""
    rack_union: dict[tuple[str, str], int] = field(default_factory=dict)
    """(site, rack) -> the union of its peers' pieces (what its aggregate peer holds)."""
    stats: TrackerStats = field(default_factory=TrackerStats)
    _aggregates: dict[tuple[str, str], tuple[int, PeerView]] = field(default_factory=dict)

    # -- announces ------------------------------------------------------------------------------------

    def announce(self, request: AnnounceRequest, now: float) -> AnnounceResponse:
        started = time.perf_counter()
        swarm = self.swarm
        if swarm is not None:
            swarm.expire(now, self.policy.peer_ttl)
        snapshot = TaskSnapshot(
            task=self.task,
            peers=swarm.peers.values() if swarm is not None else (),
            leases=swarm.leases if swarm is not None else {},
            known_hashes={i: self.hashes[i] for i in request.done if i in self.hashes},
            hashed=self.hashed,
            audits=self.audits,
            reporters=self.reporters,
            swarm=swarm,
        )
        outcome = decide_announce(
            snapshot,
            request,
            task_id=self.task_id,
            seen_host=request.host,
            now=now,
            policy=self.policy,
            pace=Pace(draw=self.rng.random()),
        )
        task = self.task = outcome.task
        if swarm is None:
            swarm = self.swarm = Swarm(task.generation, task.manifest.piece_count if task.manifest else 0)
        leases = swarm.leases
        self.stats.origin_leases += sum(
            1
            for lease in outcome.put_leases
            if (held := leases.get(lease.piece)) is None or held.peer_id != lease.peer_id
        )
        for index, digest in outcome.new_hashes.items():
            self.hashes[index] = digest
            self.hashed |= 1 << index
        self.reporters.update(outcome.reporters)
        for index, audit in outcome.audits.items():
            if audit is None:
                self.audits.pop(index, None)
            else:
                self.audits[index] = audit
        swarm.apply(outcome)
        if outcome.peer is not None:
            view = outcome.peer.view
            key = (view.site, view.rack)
            self.rack_union[key] = self.rack_union.get(key, 0) | view.have.mask
        response = outcome.response
        assert response is not None
        view = outcome.peer.view if outcome.peer is not None else None
        if view is not None and not response.restart and task.manifest is not None:
            rack, site = self._crossings(view, request.want_crossings, now, len(swarm.peers) <= self.exact_limit)
            response = msgspec.structs.replace(response, rack_leases=rack, site_leases=site)
        self.stats.announces += 1
        self.stats.wall += time.perf_counter() - started
        return response

    def hash_lookup(self) -> tuple[int, int]:
        """What GET /hashes answers: (hash_seq, mask of the pieces whose hash the tracker holds)."""
        self.stats.hash_lookups += 1
        return (self.task.hash_seq if self.task else 0), self.hashed

    # -- scope leases ---------------------------------------------------------------------------------

    def _crossings(self, view: PeerView, want: int, now: float, exact: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The asker's scope leases after this announce, as TrackerService._crossings decides them."""
        if not (self.scope_table or self.by_scope) and rack_scope(view) is None:
            return (), ()
        ttl = self.policy.peer_ttl
        assert self.task is not None and self.swarm is not None
        generation = self.task.generation
        if exact:
            live = [
                r.view
                for r in self.swarm.peers.values()
                if r.view.peer_id != view.peer_id and r.generation == generation and r.last_seen > now - ttl
            ]
            self.stats.snapshot_peers += len(live) + 1
            ahead = want and len(live) < AHEAD_SWARM
            arriving = {piece: lease.peer_id for piece, lease in self.swarm.leases.items()} if ahead else None
            table, crossings = decide_crossings(
                self.scope_table, asker=view, peers=[*live, view], want=want, now=now, ttl=ttl,
                stale_after=self.crossing_patience, arriving=arriving,
            )  # fmt: skip
            self.scope_table = table
        else:
            scopes = [scope for scope in (rack_scope(view), site_scope(view)) if scope is not None]
            part = {key: lease for scope in scopes for key, lease in self.by_scope.get(scope, {}).items()}
            peers = self._scope_peers(view, part)
            self.stats.snapshot_peers += len(peers)
            before = len(part)
            # Past exact_limit the swarm is larger than AHEAD_SWARM: no piece is leased ahead.
            table, crossings = decide_crossings(
                part, asker=view, peers=peers, want=want, now=now, ttl=ttl, stale_after=self.crossing_patience
            )
            for scope in scopes:
                self.by_scope[scope] = {key: lease for key, lease in table.items() if key[0] == scope}
            self.stats.scope_leases += max(0, len(table) - before)
        return tuple(iter_bits(crossings.rack)), tuple(iter_bits(crossings.site))

    def _scope_peers(self, view: PeerView, part: dict[LeaseKey, ScopeLease]) -> list[PeerView]:
        """The asker, the holders of its scopes' leases, and one aggregate per rack (its own included)."""
        assert self.swarm is not None
        records = self.swarm.peers
        size = view.have.size
        peers, named = [], {view.peer_id}
        for lease in part.values():
            if lease.peer_id not in named and lease.peer_id in records:
                peers.append(records[lease.peer_id].view)
                named.add(lease.peer_id)
        for (site, rack), mask in self.rack_union.items():
            held, aggregate = self._aggregates.get((site, rack), (-1, view))
            if held != mask:
                have = Bitfield.from_mask(size, mask & ((1 << size) - 1))
                # No real peer id starts with "~" (core.messages.PEER_ID forbids it).
                aggregate = PeerView(f"~{site}/{rack}", "aggregate", 1, site, rack, have)
                self._aggregates[(site, rack)] = (mask, aggregate)
            peers.append(aggregate)
        peers.append(view)
        return peers
