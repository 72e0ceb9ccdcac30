"""What a restarted tracker keeps of the soft state (peers, origin leases) its predecessor left in SQL.

Rule: every peer and every lease that was live when the tracker stopped is given one peer TTL from the
restart to be heard of again. The outage is not the peers' silence: they kept working (fetching their
leased pieces from the origin, trading the pieces whose hashes they knew) and could not reach the tracker.
Judged by the time they were last heard of, they would all be dead the moment a tracker came back after
more than a TTL, and the first peer to announce would be leased the pieces the others hold or are fetching
(each such piece then leaves the origin twice). A peer that is really gone is forgotten one TTL after the
restart, and its leases with it, like any peer that falls silent.

The database records no stop time, so the stop is taken to be the last announce the old tracker recorded
(the latest ``last_seen``): its expiry sweep had removed every peer silent for longer than a TTL before it.
The trade-off is NFS's grace period: after a long outage, pieces only dead peers held or leased wait one
TTL before they are leased again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resumption:
    """The rows a restarted tracker carries over, and their new times."""

    live_since: float
    """A peer with ``last_seen`` at or after this was live when the tracker stopped..."""
    last_seen: float
    """...and is now taken as last heard of at this time."""
    leases_from: float
    """A lease with ``expires`` at or after this was live when the tracker stopped..."""
    expires: float
    """...and now expires at this time (renewed by its peer's next announce, as ever)."""


def resume(last_heard: float | None, now: float, peer_ttl: float) -> Resumption | None:
    """How to carry over the rows of a tracker whose last recorded announce was at ``last_heard`` (None: it
    recorded no peer, so there is nothing to carry over)."""
    if last_heard is None:
        return None
    stopped = min(last_heard, now)  # a clock stepped back since must not make rows live for longer
    return Resumption(live_since=stopped - peer_ttl, last_seen=now, leases_from=stopped, expires=now + peer_ttl)
