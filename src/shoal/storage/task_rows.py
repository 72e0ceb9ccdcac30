"""One task of the tracker's store in memory: its durable facts as the database holds them, and its soft state.

A :class:`TaskRows` is the copy an announce is decided on (core.announce reads it through
:meth:`TaskRows.snapshot`) and the copy the decision's outcome changes at once (:meth:`TaskRows.apply`);
storage.tracker_store keeps one per active task, reads it from SQL and writes what it changed of the durable
facts. The rules: the hash sequence never goes back (peers were told the numbers given out), and a refresh
after a failed write takes the durable facts from the database (and the epoch of that read) and keeps the
soft state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from shoal.core.announce_values import AnnounceOutcome, TaskRecord
from shoal.core.audit import Audit
from shoal.core.messages import HashesResponse
from shoal.core.swarm import Swarm
from shoal.core.task_snapshot import TaskSnapshot


def size_of(task: TaskRecord) -> int:
    """The task's piece count, 0 while its manifest is unknown."""
    return task.manifest.piece_count if task.manifest else 0


def seqs(outcome: AnnounceOutcome) -> tuple[int, int]:
    """The first seq of the outcome's revocations, and of its new hashes, which follow them."""
    first = outcome.task.hash_seq - len(outcome.revoked) - len(outcome.new_hashes) + 1
    return first, first + len(outcome.revoked)


@dataclass(slots=True)
class TaskRows:
    """One task in memory: its durable facts as the database holds them (read once, then kept up to date),
    and its soft state."""

    task: TaskRecord
    hashes: dict[int, tuple[str, int]] = field(default_factory=dict)
    """piece -> (hash, seq)"""
    reporters: dict[int, str] = field(default_factory=dict)
    """piece -> the lease holder whose report the tracker took (core.task_snapshot.TaskSnapshot.reporters)."""
    swarm: Swarm = field(init=False)
    hashed: int = 0
    """The keys of ``hashes`` as a bit mask."""
    rejected_reports: int = 0
    """Hash reports the tracker did not take since this copy was read (core.announce)."""
    refused_origins: int = 0
    """Claims that the origin's file changed which the origin did not bear out, since this copy was read."""
    audits: dict[int, Audit] = field(default_factory=dict)
    """Spot checks under way (core.audit). Kept in memory only: a restarted tracker begins no check of the
    hashes it read back."""
    revoked: dict[int, int] = field(default_factory=dict)
    """piece -> the seq its hash was revoked at (until a new hash replaces it). Memory only."""
    from_database: bool = False
    """Read from the database (not created by this process): its peers may predate this process."""
    stale: bool = False
    """A write of this task failed: its durable facts are read again before the next decision on it."""
    touched: float = 0.0
    """The task's ``updated`` in the database as this copy knows it: when it was last written, or last
    recorded as having peers (:meth:`TrackerStore.touch`)."""
    epoch: int | None = None
    """The task's ownership epoch as this copy took the task over (or created it), which its writes carry
    (core.ownership); None: read without taking the task over, so no write of it lands."""

    def __post_init__(self) -> None:
        self.swarm = Swarm(self.task.generation, size_of(self.task))
        for piece in self.hashes:
            self.hashed |= 1 << piece

    def snapshot(self, hash_pieces: Iterable[int], *, grace: bool = False) -> TaskSnapshot:
        """What the decision reads: the swarm itself, no copy of it."""
        known = {i: self.hashes[i][0] for i in hash_pieces if i in self.hashes}
        swarm = self.swarm
        return TaskSnapshot(
            self.task,
            swarm.peers.values(),
            swarm.leases,
            known,
            self.hashed,
            self.audits,
            self.reporters,
            swarm=swarm,
            grace=grace,
        )

    def hashes_since(self, since: int) -> HashesResponse:
        new = {piece: digest for piece, (digest, seq) in self.hashes.items() if seq > since}
        revoked = tuple(sorted(piece for piece, seq in self.revoked.items() if seq > since))
        return HashesResponse(self.task.generation, self.task.hash_seq, new, revoked)

    def apply(self, outcome: AnnounceOutcome) -> None:
        """The outcome's changes: the durable ones as :meth:`TrackerStore.stage` writes them, and the soft."""
        self.task = outcome.task
        if outcome.new_generation:
            self.hashes.clear()
            self.hashed = 0
            self.audits.clear()
            self.reporters.clear()
            self.revoked.clear()
        revoked_seq, first_seq = seqs(outcome)
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
        for piece, audit in outcome.audits.items():
            if audit is None:
                self.audits.pop(piece, None)
            else:
                self.audits[piece] = audit
        self.rejected_reports += len(outcome.rejected)
        self.refused_origins += outcome.refused_origin
        self.swarm.apply(outcome)

    def refresh(self, stored: TaskRows) -> None:
        """Take the durable facts the database holds (after a failed write), keeping the soft state. The hash
        sequence never goes back: peers were told the numbers this copy had given out, and a number given
        again to another hash would hide that hash from them."""
        told = self.task.hash_seq
        self.task = replace(stored.task, hash_seq=max(stored.task.hash_seq, told))
        self.epoch = stored.epoch
        self.hashes, self.reporters, self.hashed = stored.hashes, stored.reporters, stored.hashed
        self.audits = {piece: audit for piece, audit in self.audits.items() if piece in self.hashes}
        self.swarm.retain(self.task.generation, size_of(self.task), self.hashed)
        self.stale = False
