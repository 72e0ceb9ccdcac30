"""The cyclic garbage collector under a tracker's soft state.

A busy tracker holds a record of every live peer of every task it owns (its view, bitfield and leases, made
anew at each of its announces) and the hashes of every piece. Each lives a few announce intervals, long
enough to leave the collector's young generations, and every collection of an older generation walks it
again: at a fleet's announce rates that was a pause of 40-90 ms every few seconds (and 5-10 ms ones many
times a second), which every announce arriving meanwhile waited out (benchmarks/tracker_load.py; figures in
benchmarks/RESULTS.md).

Rules:

- What survives a collection of generation ``freeze_from`` or older is frozen (``gc.freeze``, which moves
  the lists whole and costs the same whatever their length): later collections leave it out, so the
  collector only ever walks what was made since its last collections, and no collection walks the soft
  state. Freezing changes nothing for reference counting, so a record the soft state lets go of is freed
  at once, frozen or not.
- What a freeze keeps is cyclic garbage formed among frozen objects (few: the soft state holds no cycles;
  some of a connection's or a request's objects do). So the frozen objects are looked at again (``gc.unfreeze``
  and one full collection, in :meth:`SurvivorFreezer.tick`) every ``thaw_every`` seconds, and sooner when
  there are ``growth`` times as many of them as the last look left: such garbage is freed within that time,
  and it can never hold more than about ``growth`` times what is alive. That full collection is the one
  pause left, once per ``thaw_every`` in a steady state.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger("shoal.tracker")

OLDEST = 2
"""The collector's oldest generation: a collection of it is a full one."""
FREEZE_FROM = 1
"""Survivors of a collection of this generation or an older one are frozen. Not generation 0: an object that
survives one young collection is often a request in flight, whose cycles die with it moments later."""
THAW_EVERY = 600.0
"""Seconds between two full collections that look at every object (see the module's rules)."""
GROWTH = 2.0
"""A look at every object is due early once this many times as many objects are frozen as the last look left."""
FLOOR = 200_000
"""No look is due early while fewer than this many objects are frozen: a tracker starting up, whose state
doubles again and again, pays no pause for it."""


def thaw_due(*, frozen: int, after_last: int, since_last: float, every: float, growth: float, floor: int) -> bool:
    """Whether the frozen objects are due a look (see the module's rules): ``frozen`` objects are frozen now,
    the last look left ``after_last`` frozen and was ``since_last`` seconds ago."""
    return since_last >= every or frozen >= max(floor, growth * after_last)


class SurvivorFreezer:
    """The rules above for as long as it is entered (one per process: the collector is the process's)."""

    def __init__(
        self,
        thaw_every: float = THAW_EVERY,
        clock: Callable[[], float] = time.monotonic,
        *,
        freeze_from: int = FREEZE_FROM,
        growth: float = GROWTH,
        floor: int = FLOOR,
    ) -> None:
        self.thaw_every = thaw_every
        self.clock = clock
        self.freeze_from = freeze_from
        self.growth = growth
        self.floor = floor
        self._thawed = 0.0
        self._left = 0
        """Objects frozen after the last look at every object."""

    def __enter__(self) -> SurvivorFreezer:
        self._thawed = self.clock()
        self._left = gc.get_freeze_count()
        gc.callbacks.append(self._collected)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        gc.callbacks.remove(self._collected)

    def tick(self) -> bool:
        """Look at every object once (thaw, one full collection, freeze again) when it is due; return whether
        it was. Called now and then from the service's loop."""
        now = self.clock()
        frozen = gc.get_freeze_count()
        if not thaw_due(
            frozen=frozen,
            after_last=self._left,
            since_last=now - self._thawed,
            every=self.thaw_every,
            growth=self.growth,
            floor=self.floor,
        ):
            return False
        self._thawed = now
        gc.unfreeze()
        started = time.perf_counter()
        freed = gc.collect()  # its survivors are frozen again by _collected
        self._left = gc.get_freeze_count()
        took = 1000 * (time.perf_counter() - started)
        log.debug("full collection of %d frozen objects: %d freed, %.0f ms", frozen, freed, took)
        return True

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] >= self.freeze_from:
            gc.freeze()
