"""The announce interval the tracker gives each peer: from the task's state and the tracker's load.

Rules, and why:

- **A busy swarm announces often, an idle seed seldom.** A peer of a swarm that has a downloader, or an
  origin lease out, is told the busy interval (``--interval``): the download engine needs fresh hand-outs
  and leases, and a peer that died must leave the hand-outs soon. A seed of a task nobody downloads is
  told the idle interval: nothing it could say changes anything, and it costs the tracker the same as a
  downloader's announce. (A downloader also announces of its own accord when it has pieces to report or
  needs leases, whatever its interval: core.download.)
- **Load stretches every interval by one factor.** The tracker counts its live peers by the interval their
  state calls for (:class:`Demand`) and stretches them all by the smallest factor that keeps the announces
  those intervals imply under its target (``--announce-rate``), none past ``--max-interval``. The rate is
  the one the intervals handed out imply, not a rate measured afterwards: a peer comes back only an
  interval after it was told, so a measured rate trails every change by an interval and a controller
  driven by it overshoots. Announces the download engine sends of its own accord are not in it; the cap
  on announces in flight (tracker.admission) bounds those.
- **Jitter only shortens.** An interval is drawn from ``[x * (1 - jitter), x]``, so peers told at one
  moment do not come back at one moment, and none comes back later than the rule said: the stretch is
  chosen for the shortest draw, so the target holds for every draw.
- **A peer's TTL follows its interval.** A peer is forgotten after ``--peer-ttl`` scaled by its interval
  over the busy interval (never less than ``--peer-ttl``): a seed told to come back in 60 s is not
  expired at 15 s, and every peer has the same number of announces' grace (three with the defaults).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

JITTER = 0.1
"""Share of an interval that the draw may take off it."""
RESTRETCH_SECONDS = 1.0
"""The stretch is worked out again at most this often (:meth:`Demand.stretch`): a count of peers changes
by a few each second, and the stretch it implies hardly at all."""
_BISECTIONS = 48

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Pacing:
    """The operator's rule for announce intervals (tracker.config); all in seconds but ``target``."""

    busy: float = 5.0
    """A peer of a swarm with a downloader or an origin lease out; the shortest nominal interval."""
    idle: float = 60.0
    """A seed of a task nobody downloads."""
    longest: float = 300.0
    """No interval is stretched past this."""
    target: float = 0.0
    """Announces a second the intervals handed out may imply at most; 0: no stretching."""
    jitter: float = JITTER
    peer_ttl: float = 15.0
    """A peer told the busy interval is forgotten after this long unheard of; others in proportion."""

    def __post_init__(self) -> None:
        if not 0 < self.busy <= self.idle <= self.longest:
            raise ValueError(
                f"intervals must be positive, busy <= idle <= longest: {self.busy:g}, {self.idle:g}, {self.longest:g}"
            )
        if not self.target >= 0:
            raise ValueError(f"the announce rate target must be 0 (none) or positive, not {self.target!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be a share below 1, not {self.jitter!r}")
        if not self.peer_ttl > 0:
            raise ValueError(f"the peer TTL must be positive, not {self.peer_ttl!r}")

    def nominal(self, *, seed: bool, busy_swarm: bool) -> float:
        """The interval a peer's state calls for, before load stretches it."""
        return self.idle if seed and not busy_swarm else self.busy

    def interval(self, nominal: float, stretch: float, draw: float) -> float:
        """The interval to give: ``nominal`` stretched, bounded by ``longest``, shortened by the jitter of
        ``draw`` (uniform in [0, 1))."""
        return min(nominal * stretch, self.longest) * (1 - self.jitter * draw)

    def ttl(self, interval: float) -> float:
        """How long a peer told ``interval`` lives unheard of."""
        return self.peer_ttl * max(1.0, interval / self.busy)

    def offered(self, counts: Mapping[float, int], stretch: float) -> float:
        """Announces a second that peers of ``counts`` (nominal interval -> peers) imply at ``stretch``,
        each at the shortest interval its jitter may draw."""
        shortest = 1 - self.jitter
        return sum(n / (min(t * stretch, self.longest) * shortest) for t, n in counts.items() if n)

    def stretch(self, counts: Mapping[float, int]) -> float:
        """The smallest factor (at least 1) at which peers of ``counts`` offer at most ``target``; when
        even ``longest`` for all offers more, the factor that puts every one at ``longest``."""
        if not self.target or self.offered(counts, 1.0) <= self.target:
            return 1.0
        shortest = min((t for t, n in counts.items() if n), default=self.longest)
        low, high = 1.0, max(1.0, self.longest / shortest)
        if self.offered(counts, high) > self.target:
            return high
        for _ in range(_BISECTIONS):  # offered() falls as the stretch grows: halve the bracket
            middle = (low + high) / 2
            if self.offered(counts, middle) <= self.target:
                high = middle
            else:
                low = middle
        return high


@dataclass(slots=True)
class Demand(Generic[K]):
    """The tracker's live peers by the nominal interval their state called for at their last announce,
    and the stretch that keeps them under the target. A peer counts until its TTL passes unheard of, as in
    its swarm (core.swarm), or until it leaves."""

    pacing: Pacing
    counts: Counter[float] = field(default_factory=Counter)
    _peers: dict[K, tuple[float, float]] = field(default_factory=dict)  # key -> (nominal, due)
    _due: list[tuple[float, K]] = field(default_factory=list)  # (due, key): heap, one live entry per key
    _queued: dict[K, float] = field(default_factory=dict)  # key -> the due time of its live heap entry
    _stretch: float = 1.0
    _stretched_at: float | None = None

    def heard(self, key: K, nominal: float, due: float) -> None:
        """A peer announced: it counts at ``nominal`` until ``due``."""
        old = self._peers.get(key)
        if old is not None:
            self._uncount(old[0])
        self._peers[key] = (nominal, due)
        self.counts[nominal] += 1
        queued = self._queued.get(key)
        if queued is None or due < queued:
            self._queue(key, due)

    def left(self, key: K) -> None:
        old = self._peers.pop(key, None)
        if old is not None:
            self._uncount(old[0])

    def expire(self, now: float) -> int:
        """Stop counting the peers whose due time passed; returns how many."""
        gone = 0
        while self._due and self._due[0][0] <= now:
            due, key = heapq.heappop(self._due)
            if self._queued.get(key) != due:
                continue  # a later entry of this key was pushed with an earlier due time
            del self._queued[key]
            held = self._peers.get(key)
            if held is None:
                continue
            if held[1] <= now:
                del self._peers[key]
                self._uncount(held[0])
                gone += 1
            else:
                self._queue(key, held[1])  # heard of again since: one entry per key, moved on as it comes up
        return gone

    def _queue(self, key: K, due: float) -> None:
        self._queued[key] = due
        heapq.heappush(self._due, (due, key))

    def __len__(self) -> int:
        return len(self._peers)

    def stretch(self, now: float) -> float:
        """The stretch for announces decided at ``now`` (worked out afresh every RESTRETCH_SECONDS)."""
        if self._stretched_at is None or not 0 <= now - self._stretched_at < RESTRETCH_SECONDS:
            self.expire(now)
            self._stretch = self.pacing.stretch(self.counts)
            self._stretched_at = now
        return self._stretch

    def offered(self, now: float) -> float:
        """Announces a second the intervals given at :meth:`stretch` imply (at most the target, when it
        can be met)."""
        return self.pacing.offered(self.counts, self.stretch(now))

    def _uncount(self, nominal: float) -> None:
        left = self.counts[nominal] - 1
        if left:
            self.counts[nominal] = left
        else:
            del self.counts[nominal]
