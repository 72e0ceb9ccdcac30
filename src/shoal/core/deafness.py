"""The spells in which the tracker could not hear its peers, so that their silence then is not held against them.

A peer is forgotten when the tracker has not heard from it for its TTL. Two things can make a live peer
silent that are the tracker's doing, not the peer's:

- the tracker stalled: the process was stopped, starved of CPU or its event loop held, so nothing was
  read; its periodic tick comes late by that long;
- the tracker shed announces (tracker.admission's 503): the peer spoke and was told to come back.

Counting either against the peers would expire a live swarm at once when the tracker resumes, dropping
every lease and every holder it knows, and the peers would fetch again what they had (issue 27: "a peer is
not expired because the tracker was slow to answer it"). So expiry runs on *heard time*: the clock with
the deaf spells taken out. :meth:`Deafness.expiry_clock` turns ``now`` into the instant an expiry should be
judged at: ``now`` less the deaf time since the tracker began its last ``span`` seconds of hearing. With
``span`` at least the longest peer TTL, a peer last heard at ``L`` is never judged silent for longer than the
tracker listened since ``L``; it may be forgotten later than that by at most the deaf time of the stretch,
which errs on the side of keeping a live peer.

Rules:

- A tick later than it was due by more than ``slack``, on the event loop's clock, makes the lateness deaf.
- A tick period in which any announce was shed is deaf as a whole: who was shed is not known (a shed
  announce is never read, which is what keeps shedding cheap), so nobody is blamed for it.
- The result never goes backwards: a spell learned after the fact (a period found to hold a shed at its
  tick) holds it where it was rather than moving expiry back.
- While the tracker sheds without end no peer expires; memory stays bounded by the limits on peers.

Pure: values in, values out; the service ticks it from its expiry loop and reports sheds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Deafness:
    """Deaf spells of one tracker process, as (start, end) pairs in its clock, oldest first, merged."""

    span: float
    """Seconds of heard time an expiry looks back over: at least the longest peer TTL."""
    slack: float = 1.0
    """Seconds a tick may come late without counting as a stall (a busy event loop's ordinary delay)."""
    spells: list[tuple[float, float]] = field(default_factory=list)
    _last_tick: float | None = field(default=None, init=False, repr=False)
    _shed_since_tick: bool = field(default=False, init=False, repr=False)
    _floor: float = field(default=float("-inf"), init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.span > 0 or self.slack < 0:
            raise ValueError(f"span must be positive and slack not negative: {self!r}")

    def shed(self) -> None:
        """An announce was answered 503 unread since the last tick."""
        self._shed_since_tick = True

    def tick(self, now: float, *, late: float = 0.0) -> None:
        """The service's periodic tick, at ``now``, ``late`` seconds after it was due. The caller measures
        ``late`` on the event loop's own clock: a stall is a fact of the process, not of the clock ``now``
        is read from (which tests may move by hand)."""
        last, self._last_tick = self._last_tick, now
        if last is not None and now > last:
            if self._shed_since_tick:
                self._add(last, now)
            elif late > self.slack:
                self._add(max(last, now - late), now)
        self._shed_since_tick = False
        start = self._window_start(now, self.spells)
        while self.spells and self.spells[0][1] <= start:
            self.spells.pop(0)

    def _add(self, start: float, end: float) -> None:
        if self.spells and start <= self.spells[-1][1]:
            self.spells[-1] = (self.spells[-1][0], max(end, self.spells[-1][1]))
        else:
            self.spells.append((start, end))

    def _window_start(self, now: float, spells: list[tuple[float, float]]) -> float:
        """The instant from which the tracker heard for ``span`` seconds until ``now``."""
        needed, t = self.span, now
        for a, b in reversed(spells):
            heard = t - min(b, t)
            if heard >= needed:
                break
            needed -= heard
            t = min(a, t)
        return t - needed

    def deaf(self, start: float, end: float) -> float:
        """Seconds of deaf spells within [start, end]."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.spells)

    def deaf_since(self, start: float, now: float) -> float:
        """Seconds of [start, now] in which the tracker could not hear its peers: its deaf spells, and the time
        since the last tick when an announce was shed since (the next tick counts that period deaf)."""
        deaf = self.deaf(start, now)
        if self._shed_since_tick and self._last_tick is not None:
            deaf += max(0.0, now - max(self._last_tick, start))  # every spell ends at a tick: no overlap
        return deaf

    def expiry_clock(self, now: float, *, overdue: float = 0.0) -> float:
        """The instant to judge peers' and leases' silence at: ``now`` less the deaf time since the tracker
        began its last ``span`` seconds of hearing. ``overdue``: how long past its time the next tick is, on
        the event loop's clock; the time since the last tick counts as that tick will count it (announces
        decided before a late tick, or between sheds, must not expire peers the tick is about to excuse)."""
        spells = self.spells
        if self._last_tick is not None and now > self._last_tick:
            if self._shed_since_tick:
                spells = [*spells, (self._last_tick, now)]
            elif overdue > self.slack:
                spells = [*spells, (max(self._last_tick, now - overdue), now)]
        judged = min(now, self._window_start(now, spells) + self.span)
        self._floor = max(self._floor, judged)  # a spell added after the fact must not move expiry back
        return self._floor
