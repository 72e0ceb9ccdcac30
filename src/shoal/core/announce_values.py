"""The values of the tracker's decision for one announce (core.announce): what it takes (the records of the
task and of its peers, which a core.task_snapshot.TaskSnapshot gathers with the task's live leases; the
operator's :class:`TrackerPolicy`; the load's :class:`Pace`) and what it gives (an :class:`AnnounceOutcome`:
the writes for the store, then the reply). Plain values, with no decision of their own: the store
(storage.tracker_store) loads the snapshot and applies the outcome, the swarm (core.swarm) keeps the peers'
records and takes the outcome's soft changes, and the decision lives in core.announce.

Rule: nothing here names the swarm, since the swarm imports these values; the snapshot, which carries the
task's swarm, lives above both in core.task_snapshot, so no import runs in a circle.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from shoal.core.audit import AUDIT_SHARE, Audit
from shoal.core.bitfield import Bitfield
from shoal.core.handout import PeerView
from shoal.core.interval import Pacing
from shoal.core.leases import Lease
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceResponse


@dataclass(frozen=True, slots=True)
class TaskRecord:
    task_id: str
    url: str
    generation: int
    manifest: Manifest | None
    range_ok: bool = True
    hash_seq: int = 0


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer of a task as stored: its view plus bookkeeping."""

    view: PeerView
    generation: int
    last_seen: float
    reported: int = 0
    """Bit mask of the pieces whose hash the tracker took from this peer's reports (kept in memory only)."""
    ttl: float = 0.0
    """Seconds this peer lives unheard of, from the interval it was told (core.interval); 0: the policy's."""

    def alive(self, now: float, ttl: float) -> bool:
        """Heard of within its TTL (``ttl`` for a record without one)."""
        return now - self.last_seen < (self.ttl or ttl)


@dataclass(frozen=True, slots=True)
class TrackerPolicy:
    interval: float
    """Seconds between the periodic announces of a peer of a busy swarm."""
    peer_ttl: float
    """A peer told ``interval`` and unheard of for this long is gone, and so are its leases; a peer told a
    longer interval lives longer in proportion (core.interval)."""
    max_peers: int
    """Most peers in one hand-out."""
    audit_key: bytes = b""
    """The key that picks the pieces spot-checked (core.audit); empty: none are."""
    audit_share: float = AUDIT_SHARE
    pacing: Pacing | None = None
    """The intervals' rule (core.interval); None: every peer is told ``interval``, without jitter."""

    @property
    def pace_rule(self) -> Pacing:
        if self.pacing is not None:
            return self.pacing
        return _fixed_pacing(self.interval, self.peer_ttl)


@functools.cache
def _fixed_pacing(interval: float, peer_ttl: float) -> Pacing:
    return Pacing(interval, interval, interval, jitter=0.0, peer_ttl=peer_ttl)


@dataclass(frozen=True, slots=True)
class Pace:
    """What the tracker's load says for one announce (core.interval.Demand): the stretch of every interval,
    and the draw (uniform in [0, 1)) of this announce's jitter, which also places the window of a bounded
    hand-out walk (core.swarm.Swarm.hand_out)."""

    stretch: float = 1.0
    draw: float = 0.0


@dataclass(slots=True)
class AnnounceOutcome:
    """Writes for the store, then the reply. Applied in one transaction, in this order."""

    task: TaskRecord
    new_generation: bool = False
    """Drop all hashes, leases and peers' bitfields of the task before the writes below."""
    peer: PeerRecord | None = None
    remove_peer: str | None = None
    new_hashes: dict[int, str] = field(default_factory=dict)
    drop_leases: list[int] = field(default_factory=list)
    put_leases: list[Lease] = field(default_factory=list)
    mark_bad: list[str] = field(default_factory=list)
    """Peers now kept from everyone (BAN_QUORUM reached)."""
    accusations: dict[str, frozenset[str]] = field(default_factory=dict)
    """Peers accused by this announce -> every host that has accused them so far."""
    rejected: list[int] = field(default_factory=list)
    """Hash reports not taken (see the module docstring)."""
    refused_origin: bool = False
    """The announce claimed the origin's file changed and the tracker's look at the origin did not agree."""
    reporters: dict[int, str] = field(default_factory=dict)
    """Who vouches for each of ``new_hashes`` ("": peers on two hosts, or the task's id)."""
    revoked: list[int] = field(default_factory=list)
    """Hashes dropped (a spot check caught their reporter), before ``new_hashes`` are written."""
    unheld: dict[str, Bitfield] = field(default_factory=dict)
    """Other peers' pieces after the revoked ones are taken out: a copy checked against a revoked hash is
    nobody's until its holder reports it again (the tracker otherwise keeps a live peer's pieces)."""
    audits: dict[int, Audit | None] = field(default_factory=dict)
    """Spot checks begun or advanced; None: closed."""
    leases_granted: int = 0
    """Origin leases granted afresh by this announce (of ``put_leases``, which also renews and gives back)."""
    nominal: float = 0.0
    """The interval the asker's state called for before load stretched it (core.interval.Demand counts it)."""
    response: AnnounceResponse | None = None
