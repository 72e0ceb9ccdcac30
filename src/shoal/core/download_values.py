"""The values a download exchanges with whoever runs it (core.download): the settings its decisions read
(Tuning, which peer.config.GetConfig fills) and the counters it keeps for the progress displays, the
daemon's status and a pool member's reports (Stats). Plain values, with no decision of their own: the
engine (peer.engine) sets a Stats up for each attempt, the core counts into it, the displays read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core.messages import ScopeBytes


@dataclass(slots=True)
class Stats:
    """Counters the progress displays read; only the core writes them during an attempt."""

    total: int = 0
    done: int = 0
    from_origin: int = 0
    from_peers: int = 0
    from_rack: int = 0
    """Of ``from_peers``: from peers of our rack."""
    from_racks: int = 0
    """Of ``from_peers``: from other racks of our site (core.scope_leases.crossing)."""
    from_sites: int = 0
    """Of ``from_peers``: from other sites. The rest of it came from peers where no boundary is known."""
    peers: int = 0
    piece_length: int = 0
    """The manifest's, once known (0 before): every piece but the last is this long."""

    @property
    def pieces(self) -> int:
        """Pieces in the file (0 while the manifest is unknown)."""
        return -(-self.total // self.piece_length) if self.piece_length else 0

    @property
    def pieces_done(self) -> int:
        """Pieces verified: ``done`` is whole pieces, and only the last may be short, so they round up."""
        return -(-self.done // self.piece_length) if self.piece_length else 0

    def by_scope(self) -> ScopeBytes:
        unlabelled = self.from_peers - self.from_rack - self.from_racks - self.from_sites
        return ScopeBytes(self.from_origin, self.from_rack, self.from_racks, self.from_sites, unlabelled)


@dataclass(frozen=True, slots=True)
class Tuning:
    """The settings the decisions read (peer.config.GetConfig documents each, and holds the defaults)."""

    run_bytes: int
    lease_bytes: int
    direct_streams: int
    peer_requests: int
    per_peer_requests: int
    lone_peer_requests: int
    origin_retries: int
    tracker_patience: float
    origin: bool = True
    """False: peers only (``--no-origin``): no origin leases asked, and a download the swarm cannot go on
    with for ``tracker_patience`` seconds ends (NoSwarmCopy)."""
