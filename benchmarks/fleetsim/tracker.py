"""The simulated tracker: the real core decisions on state kept in memory, as tracker/app.py keeps it.

Each announce runs :func:`shoal.core.announce.decide_announce` (origin leases, hash reports, the hand-out)
and then :func:`shoal.core.scope_leases.decide_crossings` the way ``TrackerService._crossings`` drives it,
and applies the outcome to the task record, the peer records, the origin leases, the hashes and the scope
lease table. No database: the simulator measures the decisions, not the store.

A swarm of up to ``exact_limit`` peers is decided on the whole state, exactly as the tracker decides it.
Past that, each decision gets a bounded snapshot, since the real decisions cost time per peer of the task
and 20,000 peers polling every half second would take hours to simulate:

- to ``decide_announce``: the first ``max_peers + 1`` peers of the asker's rack that hold something it lacks,
  in the hand-out's own order for this asker (so the hand-out's same-rack picks are the real ones; only with
  a site label, without which the hand-out puts no peer nearer than any other), every
  holder of an origin lease (so no live lease looks free), a random sample of other peers holding pieces
  (further hand-out candidates, half from the asker's site) when the rack has too few, and one *aggregate*
  peer holding the union of every peer's pieces (so ``held`` is exact and no piece anybody holds is leased
  from the origin). The aggregate is taken out of the hand-out, which is cut back to ``max_peers``;
- to ``decide_crossings``: the holders of the asker's rack's and site's scope leases, and one aggregate per
  rack (its own too) carrying the rack's labels and the union of its pieces, with only the asker's rack's
  and site's part of the lease table (the rest is other scopes' business, and is left as it is).

The origin and scope lease decisions are exact under this reduction (they read unions of pieces by scope and
the leases of the asker's scopes); the hand-out is exact within the rack and picks among a sample beyond.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from shoal.core.announce import PeerRecord, TaskRecord, TaskSnapshot, TrackerPolicy, decide_announce
from shoal.core.audit import Audit
from shoal.core.bitfield import Bitfield, iter_bits
from shoal.core.handout import PeerView, hand_out
from shoal.core.leases import Lease
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.core.scope_leases import LeaseKey, Scope, ScopeLease, decide_crossings, rack_scope, site_scope

AGGREGATE = "~all"
"""Peer id of the aggregate peer (no real peer id starts with "~": core.messages.PEER_ID forbids it)."""


@dataclass(slots=True)
class TrackerStats:
    announces: int = 0
    hash_lookups: int = 0
    origin_leases: int = 0
    scope_leases: int = 0
    wall: float = 0.0
    """Seconds of the simulator's own time spent in the decisions."""
    snapshot_peers: int = 0
    """Peer records handed to decide_announce, summed over announces."""


@dataclass(slots=True)
class SimTracker:
    task_id: str
    policy: TrackerPolicy
    crossing_patience: float
    exact_limit: int = 256
    sample: int = 64
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    task: TaskRecord | None = None
    records: dict[str, PeerRecord] = field(default_factory=dict)
    leases: dict[int, Lease] = field(default_factory=dict)
    hashes: dict[int, str] = field(default_factory=dict)
    hashed: int = 0
    audits: dict[int, Audit] = field(default_factory=dict)
    reporters: dict[int, str] = field(default_factory=dict)
    scope_table: dict[LeaseKey, ScopeLease] = field(default_factory=dict)
    by_scope: dict[Scope, dict[LeaseKey, ScopeLease]] = field(default_factory=dict)
    """The same table split by scope, as bounded decisions keep it (each reads only its asker's scopes)."""
    racks: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(site, rack) -> its peers' ids, in the order they joined."""
    rack_union: dict[tuple[str, str], int] = field(default_factory=dict)
    holders: list[str] = field(default_factory=list)
    """Peers holding at least one piece, in the order they got their first (hand-out sampling)."""
    stats: TrackerStats = field(default_factory=TrackerStats)
    _orders: dict[str, list[str]] = field(default_factory=dict)
    site_holders: dict[str, list[str]] = field(default_factory=dict)
    union: int = 0
    """Every peer's pieces together (what the aggregate peer holds)."""
    _aggregates: dict[tuple[str, str], tuple[int, PeerView]] = field(default_factory=dict)

    # -- announces ------------------------------------------------------------------------------------

    def announce(self, request: AnnounceRequest, now: float) -> AnnounceResponse:
        started = time.perf_counter()
        exact = len(self.records) <= self.exact_limit
        peers = list(self.records.values()) if exact else self._bounded_peers(request, now)
        self.stats.snapshot_peers += len(peers)
        snapshot = TaskSnapshot(
            task=self.task,
            peers=peers,
            leases=self.leases,
            known_hashes={i: self.hashes[i] for i in request.done if i in self.hashes},
            hashed=self.hashed,
            audits=self.audits,
            reporters=self.reporters,
        )
        policy = self.policy if exact else with_aggregate_room(self.policy)
        outcome = decide_announce(
            snapshot, request, task_id=self.task_id, seen_host=request.host, now=now, policy=policy
        )
        self.task = outcome.task
        self.stats.origin_leases += sum(
            1
            for lease in outcome.put_leases
            if (held := self.leases.get(lease.piece)) is None or held.peer_id != lease.peer_id
        )
        for index in outcome.drop_leases:
            self.leases.pop(index, None)
        for lease in outcome.put_leases:
            self.leases[lease.piece] = lease
        for index, digest in outcome.new_hashes.items():
            self.hashes[index] = digest
            self.hashed |= 1 << index
        self.reporters.update(outcome.reporters)
        for index, audit in outcome.audits.items():
            if audit is None:
                self.audits.pop(index, None)
            else:
                self.audits[index] = audit
        if outcome.remove_peer:
            self.records.pop(outcome.remove_peer, None)
        if outcome.peer is not None:
            self._keep(outcome.peer)
        response = outcome.response
        assert response is not None
        if not exact:
            handed = tuple(p for p in response.peers if p.peer_id != AGGREGATE)[: self.policy.max_peers]
            response = msgspec.structs.replace(response, peers=handed)
        view = outcome.peer.view if outcome.peer is not None else None
        if view is not None and not response.restart and self.task is not None and self.task.manifest is not None:
            rack, site = self._crossings(view, request.want_crossings, now, exact)
            response = msgspec.structs.replace(response, rack_leases=rack, site_leases=site)
        self.stats.announces += 1
        self.stats.wall += time.perf_counter() - started
        return response

    def hash_lookup(self) -> tuple[int, int]:
        """What GET /hashes answers: (hash_seq, mask of the pieces whose hash the tracker holds)."""
        self.stats.hash_lookups += 1
        return (self.task.hash_seq if self.task else 0), self.hashed

    def _keep(self, record: PeerRecord) -> None:
        view = record.view
        key = (view.site, view.rack)
        if view.peer_id not in self.records:
            self.racks.setdefault(key, []).append(view.peer_id)
        previous = self.records.get(view.peer_id)
        if view.have.mask and (previous is None or not previous.view.have.mask):
            self.holders.append(view.peer_id)
            self.site_holders.setdefault(view.site, []).append(view.peer_id)
        self.records[view.peer_id] = record
        self.rack_union[key] = self.rack_union.get(key, 0) | view.have.mask
        self.union |= view.have.mask

    # -- bounded snapshots ----------------------------------------------------------------------------

    def _bounded_peers(self, request: AnnounceRequest, now: float) -> list[PeerRecord]:
        size = self.task.manifest.piece_count if self.task and self.task.manifest else 0
        lacking = ~Bitfield.decode(size, request.bitfield).mask if request.bitfield else -1
        chosen: dict[str, PeerRecord] = {}
        previous = self.records.get(request.peer_id)
        if previous is not None:
            chosen[request.peer_id] = previous
        # The rack's useful peers in the hand-out's own order for this asker: the first max_peers of them
        # are what hand_out would pick from the whole rack. Without a site label nobody is "same rack" to
        # the hand-out (core.handout.locality_tier), and the rack is no nearer than the sample.
        useful = 0
        for peer_id in self._rack_order(request) if request.site else ():
            record = self.records[peer_id]
            if record.view.have.mask & lacking:
                chosen[peer_id] = record
                useful += 1
                if useful > self.policy.max_peers:
                    break
        for lease in self.leases.values():
            if lease.peer_id in self.records:
                chosen.setdefault(lease.peer_id, self.records[lease.peer_id])
        if useful <= self.policy.max_peers:
            for peer_id in self._sample(request.site):
                chosen.setdefault(peer_id, self.records[peer_id])
        generation = self.task.generation if self.task else 0
        view = PeerView(AGGREGATE, "aggregate", 1, "", "", Bitfield.from_mask(size, self.union & ((1 << size) - 1)))
        chosen[AGGREGATE] = PeerRecord(view, generation, now)
        return list(chosen.values())

    def _rack_order(self, request: AnnounceRequest) -> list[str]:
        """The asker's rack in hand_out's order for it (nearest, then its stable shuffle), kept per asker
        and brought up to date when the rack grows."""
        mates = self.racks.get((request.site, request.rack), [])
        order = self._orders.get(request.peer_id)
        if order is None or len(order) != len(mates) - (request.peer_id in mates):
            full = Bitfield.full(1)
            asker = PeerView(request.peer_id, "", 1, request.site, request.rack, Bitfield(1))
            views = [PeerView(p, "", 1, request.site, request.rack, full) for p in mates if p != request.peer_id]
            order = [v.peer_id for v in hand_out(asker, views, len(views))]
            self._orders[request.peer_id] = order
        return order

    def _sample(self, site: str) -> Iterable[str]:
        """Hand-out candidates beyond the rack: peers holding pieces, half of them from the asker's site."""
        holders = self.holders
        if len(holders) <= self.sample:
            return holders
        if not site:
            return self.rng.sample(holders, self.sample)
        same = self.site_holders.get(site, [])
        half = self.sample // 2
        return self.rng.sample(holders, half) + self.rng.sample(same, min(half, len(same)))

    def _crossings(self, view: PeerView, want: int, now: float, exact: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The asker's scope leases after this announce, as TrackerService._crossings decides them."""
        if not (self.scope_table or self.by_scope) and rack_scope(view) is None:
            return (), ()
        ttl = self.policy.peer_ttl
        generation = self.task.generation if self.task else 0
        if exact:
            live = [
                r.view
                for r in self.records.values()
                if r.view.peer_id != view.peer_id and r.generation == generation and r.last_seen > now - ttl
            ]
            table, crossings = decide_crossings(
                self.scope_table, asker=view, peers=[*live, view], want=want, now=now, ttl=ttl,
                stale_after=self.crossing_patience,
            )  # fmt: skip
            self.scope_table = table
        else:
            scopes = [scope for scope in (rack_scope(view), site_scope(view)) if scope is not None]
            part = {key: lease for scope in scopes for key, lease in self.by_scope.get(scope, {}).items()}
            peers = self._scope_peers(view, part)
            before = len(part)
            table, crossings = decide_crossings(
                part, asker=view, peers=peers, want=want, now=now, ttl=ttl, stale_after=self.crossing_patience
            )
            for scope in scopes:
                self.by_scope[scope] = {key: lease for key, lease in table.items() if key[0] == scope}
            self.stats.scope_leases += max(0, len(table) - before)
        return tuple(iter_bits(crossings.rack)), tuple(iter_bits(crossings.site))

    def _scope_peers(self, view: PeerView, part: dict[LeaseKey, ScopeLease]) -> list[PeerView]:
        """The asker, the holders of its scopes' leases, and one aggregate per rack (its own included)."""
        size = view.have.size
        peers, named = [], {view.peer_id}
        for lease in part.values():
            if lease.peer_id not in named and lease.peer_id in self.records:
                peers.append(self.records[lease.peer_id].view)
                named.add(lease.peer_id)
        for (site, rack), mask in self.rack_union.items():
            held, aggregate = self._aggregates.get((site, rack), (-1, view))
            if held != mask:
                have = Bitfield.from_mask(size, mask & ((1 << size) - 1))
                aggregate = PeerView(f"~{site}/{rack}", "aggregate", 1, site, rack, have)
                self._aggregates[(site, rack)] = (mask, aggregate)
            peers.append(aggregate)
        peers.append(view)
        return peers


def with_aggregate_room(policy: TrackerPolicy) -> TrackerPolicy:
    """The policy with room for the aggregate in the hand-out (it is taken out again afterwards)."""
    return TrackerPolicy(policy.interval, policy.peer_ttl, policy.max_peers + 1, policy.audit_key, policy.audit_share)
