"""An in-memory model of the tracker store, to drive decide_announce through long sequences.

It applies an AnnounceOutcome the way storage.tracker_store does (the store's contract tests check the
SQL side), so property tests can simulate many peers without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shoal.core.announce_values import AnnounceOutcome, PeerRecord, TaskRecord, TrackerPolicy
from shoal.core.audit import Audit
from shoal.core.bitfield import Bitfield
from shoal.core.leases import Lease
from shoal.core.messages import AnnounceRequest
from shoal.core.task_snapshot import TaskSnapshot

from .factories import POLICY, TASK_ID, announce


@dataclass
class MemoryTracker:
    task: TaskRecord | None = None
    peers: dict[str, PeerRecord] = field(default_factory=dict)
    leases: dict[int, Lease] = field(default_factory=dict)
    hashes: dict[int, str] = field(default_factory=dict)
    audits: dict[int, Audit] = field(default_factory=dict)
    reporters: dict[int, str] = field(default_factory=dict)
    policy: TrackerPolicy = POLICY

    def snapshot(self) -> TaskSnapshot:
        size = self.task.manifest.piece_count if self.task and self.task.manifest else 0
        peers = [
            p
            if p.generation == (self.task.generation if self.task else 0) and p.view.have.size == size
            else replace(p, view=replace(p.view, have=Bitfield(size)))
            for p in self.peers.values()
        ]
        hashed = sum(1 << i for i in self.hashes)
        return TaskSnapshot(
            self.task, peers, dict(self.leases), dict(self.hashes), hashed, dict(self.audits), dict(self.reporters)
        )

    def apply(self, outcome: AnnounceOutcome) -> None:
        self.task = outcome.task
        if outcome.new_generation:
            self.hashes.clear()
            self.leases.clear()
            self.peers = {k: replace(p, view=replace(p.view, have=Bitfield(0))) for k, p in self.peers.items()}
        if outcome.remove_peer:
            self.peers.pop(outcome.remove_peer, None)
        if outcome.peer is not None:
            self.peers[outcome.peer.view.peer_id] = outcome.peer
        for piece in outcome.revoked:
            self.hashes.pop(piece, None)
            self.reporters.pop(piece, None)
        self.hashes.update(outcome.new_hashes)
        self.reporters.update({piece: peer for piece, peer in outcome.reporters.items() if peer})
        for peer_id, have in outcome.unheld.items():
            if peer_id in self.peers:
                p = self.peers[peer_id]
                self.peers[peer_id] = replace(p, view=replace(p.view, have=have))
        for piece, audit in outcome.audits.items():
            if audit is None:
                self.audits.pop(piece, None)
            else:
                self.audits[piece] = audit
        for peer_id, accusers in outcome.accusations.items():
            if peer_id in self.peers:
                p = self.peers[peer_id]
                self.peers[peer_id] = replace(p, view=replace(p.view, accusers=accusers))
        for peer_id in outcome.mark_bad:
            if peer_id in self.peers:
                p = self.peers[peer_id]
                self.peers[peer_id] = replace(p, view=replace(p.view, bad=True))
        for index in outcome.drop_leases:
            self.leases.pop(index, None)
        for lease in outcome.put_leases:
            self.leases[lease.piece] = lease

    def announce(self, request: AnnounceRequest, now: float, seen_host: str = "192.0.2.9") -> AnnounceOutcome:
        outcome = announce(self.snapshot(), request, now=now, seen_host=seen_host, policy=self.policy)
        assert outcome.task.task_id == TASK_ID
        self.apply(outcome)
        return outcome
