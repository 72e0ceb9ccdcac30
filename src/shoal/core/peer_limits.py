"""Limits on the peers a tracker takes in: a cap on each task's swarm, and a rate of new peers per source
address. Pure: the swarm's size, the source and ``now`` in, a refusal (or None) out.

Why: a peer id costs nothing to make up, and every peer a swarm holds costs memory, and time in the
decisions that look at the swarm. Without limits one host could fill a task with fake peers (crowding out
the hand-outs and slowing every announce of the task) or spread them over thousands of tasks.

Rules:

- Only a peer the task's swarm does not hold yet is limited ("new"); a peer already in it is never
  refused, so honest peers keep working whatever newcomers do. A ``stopped`` announce is never refused.
- ``max_peers_per_task``: a task whose swarm holds that many live peers takes no new one. The refusal is a
  503 with ``Retry-After`` (the tracker is up; peers leave, and the newcomer is taken then): peers treat it
  as a busy tracker (core.tracker_replies) and wait, never going around the swarm to the origin.
- ``new_peers_per_minute``: each source address (an IPv6 one by its /64, which a single host is usually
  given whole) has a token bucket of that many tokens, refilled at that rate; a new peer takes one. Past
  it, a 429 with ``Retry-After``: when the bucket has a token again. A host that starts many downloads at
  once has the whole bucket as its burst.
- The buckets are bounded state too: a bucket that has refilled is the same as none, so :meth:`sweep`
  drops those, and only sources that took a new peer within the last minute are kept.
- 0 turns a limit off.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from shoal.core.rate import TokenBucket


@dataclass(frozen=True, slots=True)
class PeerRefusal:
    """An announce the limits refuse: the HTTP status, the seconds to wait (``Retry-After``) and why."""

    status: int
    retry_after: int
    message: str


def source_key(host: str) -> str:
    """The bucket a source address counts in: an IPv4 address itself, an IPv6 address its /64 (an
    IPv4-mapped one as IPv4), anything else (a name) as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class PeerLimits:
    """The tracker's limits and the per-source buckets they keep."""

    def __init__(self, *, max_peers_per_task: int, new_peers_per_minute: int, interval: float) -> None:
        self.max_peers_per_task = max_peers_per_task
        self.new_peers_per_minute = new_peers_per_minute
        self.interval = interval
        """The announce interval: a full swarm's newcomer is told to come back after one."""
        self._buckets: dict[str, TokenBucket] = {}
        self.refused_full = 0
        """New peers refused because their task was full, since the start."""
        self.refused_rate = 0
        """New peers refused because their source took too many, since the start."""

    def admit(self, *, swarm_size: int, source: str, now: float) -> PeerRefusal | None:
        """Whether a new peer (one the task's swarm does not hold) from ``source`` may join a swarm of
        ``swarm_size`` live peers at ``now``: None when it may (a token is taken), else the refusal."""
        cap = self.max_peers_per_task
        if cap and swarm_size >= cap:
            self.refused_full += 1
            return PeerRefusal(
                503,
                max(1, math.ceil(self.interval)),
                f"the task has {swarm_size} peers, the most this tracker takes in one task "
                "(--max-peers-per-task); try again later",
            )
        rate = self.new_peers_per_minute
        if not rate:
            return None
        key = source_key(source)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate / 60.0, float(rate))
        wait = bucket.reserve(1, now)
        if wait <= 0:
            return None
        bucket.refund(1)  # turned away: the refusal takes no token
        self.refused_rate += 1
        return PeerRefusal(
            429,
            max(1, math.ceil(wait)),
            f"too many new peers from {key}: at most {rate} a minute (--max-new-peers-per-source)",
        )

    def sweep(self, now: float) -> None:
        """Drop the buckets that have refilled by ``now`` (each is as good as a new one)."""
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.stamp is None or bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.burst
        ]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        """The buckets kept."""
        return len(self._buckets)
