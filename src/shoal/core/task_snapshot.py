"""What the tracker loads before deciding an announce (core.announce): the task, its live peers and leases,
the durable facts the decision reads, and the task's swarm itself when the tracker keeps one.

Rule: this is the one value of the decision that carries the swarm (core.swarm), so it lives above the swarm,
with the plain values of core.announce_values below both: the swarm keeps and takes those values, and no
import runs in a circle.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from shoal.core.announce_values import PeerRecord, TaskRecord
from shoal.core.audit import Audit
from shoal.core.leases import Lease
from shoal.core.manifest import OriginIdentity
from shoal.core.swarm import Swarm


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """What the tracker loads before deciding: the task and its live peers and leases.

    The tracker hands its task's :class:`~shoal.core.swarm.Swarm` itself (``swarm``; ``peers`` and
    ``leases`` are then its own, not copies), expired at the ``now`` of the decision. Without one (tests
    build snapshots of plain values) the decision builds one of the live ones of ``peers`` and ``leases``."""

    task: TaskRecord | None
    peers: Collection[PeerRecord]
    leases: Mapping[int, Lease]
    known_hashes: Mapping[int, str]
    """Stored hashes of the pieces the request reports as done (only those are needed)."""
    hashed: int = 0
    """Bit mask of the pieces whose hash the tracker holds."""
    audits: Mapping[int, Audit] = field(default_factory=dict)
    """Spot checks under way (core.audit)."""
    reporters: Mapping[int, str] = field(default_factory=dict)
    """piece -> the lease holder whose report the tracker took (none for hashes nobody alone vouches for)."""
    origin_seen: OriginIdentity | None = None
    """What the origin describes now, as the tracker confirmed it for an announce that claims the file
    changed (core.announce.claims_change); None: not confirmed. Only a claim it bears out starts a generation."""
    swarm: Swarm | None = field(default=None, compare=False)
    grace: bool = False
    """The tracker started moments ago and this task's peers from before may not have announced yet: no
    origin lease is granted afresh, since the piece may be on its way to one of them (its next announce's
    ``fetching`` gets that lease back). Pieces an announce claims are reclaimed as ever, and so are the
    pieces it reports done that nobody holds a lease on (fetched while the tracker was down)."""
