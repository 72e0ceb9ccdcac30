"""The node cache's eviction plan: which entries to remove so that a new file fits. Pure: values in, a plan out.

Rules (the watermarks of Dragonfly's and Kraken's disk GC):

* ``used`` counts every byte the cache holds or has promised: cached files and the space reserved by
  downloads in progress. The cache never lets ``used`` exceed ``capacity``.
* A file larger than the capacity never fits; nothing is evicted for it.
* While ``used + incoming`` stays at or under the high watermark, nothing is evicted.
* Past it, entries are evicted least recently used first until ``used + incoming`` is at or under the low
  watermark, so a busy cache does not evict on every insert. Pinned entries and entries in use (being
  verified or placed at a destination) are never evicted. Pieces being sent to peers do not hold an
  entry: an evicted file's requests end in a 404 and the peer goes elsewhere.
* When the evictable entries cannot bring usage down to the low watermark, only as many are evicted as
  the new file needs to fit within the capacity; when even all of them are not enough, the plan fails
  and nothing is evicted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shoal.core.errors import CacheFull
from shoal.core.units import format_bytes

DEFAULT_CAPACITY = 20 << 30
"""The capacity of a cache given none that has none stored yet (the daemon's, ``shoal cache``'s and the
Python API's alike); ``shoal daemon --help`` shows it."""
HIGH_WATERMARK = 0.95
LOW_WATERMARK = 0.85


@dataclass(frozen=True, slots=True)
class Entry:
    """What the plan needs to know of one cached file."""

    digest: str
    size: int
    last_access: float
    pinned: bool = False
    in_use: bool = False

    @property
    def evictable(self) -> bool:
        return not self.pinned and not self.in_use


@dataclass(frozen=True, slots=True)
class Watermarks:
    high: float = HIGH_WATERMARK
    """Fraction of the capacity past which an insert evicts."""
    low: float = LOW_WATERMARK
    """Fraction of the capacity an insert that evicts brings usage down to."""

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high <= 1:
            raise ValueError(f"watermarks must satisfy 0 < low <= high <= 1, not low={self.low} high={self.high}")


def plan_eviction(
    entries: Iterable[Entry],
    *,
    used: int,
    incoming: int,
    capacity: int,
    watermarks: Watermarks = Watermarks(),
) -> tuple[str, ...]:
    """The digests to evict, least recently used first, so that ``incoming`` more bytes fit.

    Raises CacheFull, having planned nothing, when they cannot fit."""
    if incoming > capacity:
        raise CacheFull(
            f"{format_bytes(incoming)} is larger than the cache's capacity of {format_bytes(capacity)}",
            size=incoming,
            capacity=capacity,
        )
    if used + incoming <= capacity * watermarks.high:
        return ()
    candidates = sorted((e for e in entries if e.evictable), key=lambda e: (e.last_access, e.digest))
    low_target = capacity * watermarks.low
    plan: list[str] = []
    freed = 0
    # How much must go for the file to fit at all, and how much to reach the low watermark.
    need = used + incoming - capacity
    want = used + incoming - low_target
    for entry in candidates:
        if freed >= want:
            break
        plan.append(entry.digest)
        freed += entry.size
    if freed >= want:
        return tuple(plan)
    if sum(e.size for e in candidates) < need:
        held = used - sum(e.size for e in candidates)
        raise CacheFull(
            f"no room for {format_bytes(incoming)}: {format_bytes(held)} of the "
            f"{format_bytes(capacity)} capacity is pinned, in use or being downloaded",
            size=incoming,
            capacity=capacity,
        )
    # The low watermark is out of reach: evict only what the file needs.
    plan, freed = [], 0
    for entry in candidates:
        if freed >= need:
            break
        plan.append(entry.digest)
        freed += entry.size
    return tuple(plan)
