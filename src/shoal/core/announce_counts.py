"""What the tracker's announces decided, counted since the process started: the counters of its /metrics.

The tracker's other figures (live peers and tasks, bytes by scope) are read from its state at scrape time;
these are events that leave no state behind (a lease granted and since delivered, a report refused), so
each announce's outcome adds to them once. Soft state, like the swarms: a restarted tracker counts from
zero, which Prometheus' ``rate()`` takes as a counter reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core.announce_values import AnnounceOutcome


@dataclass(slots=True)
class AnnounceCounts:
    leases_granted: int = 0
    """Origin leases granted afresh (renewals and leases given back after a restart are not counted)."""
    hashes_taken: int = 0
    """Piece hashes the tracker took from reports (and from spot checks that settled a piece)."""
    hashes_rejected: int = 0
    """Piece hash reports the tracker did not take (core.announce)."""
    hashes_revoked: int = 0
    """Hashes dropped because a spot check caught their reporter (core.audit)."""
    generations: int = 0
    """New generations started: the origin's file changed."""
    claims_refused: int = 0
    """Claims that the origin's file changed which the origin did not bear out."""
    peers_banned: int = 0
    """Peers kept from everyone once enough hosts accused them."""

    def add(self, outcome: AnnounceOutcome) -> None:
        self.leases_granted += outcome.leases_granted
        self.hashes_taken += len(outcome.new_hashes)
        self.hashes_rejected += len(outcome.rejected)
        self.hashes_revoked += len(outcome.revoked)
        self.generations += outcome.new_generation
        self.claims_refused += outcome.refused_origin
        self.peers_banned += len(outcome.mark_bad)
