"""The cyclic garbage collector under a tracker's soft state.

A busy tracker holds a record of every live peer of every task it owns (its view, bitfield and leases, made
anew at each of its announces) and the hashes of every piece. Each lives a few announce intervals, long
enough to reach the collector's oldest generation, and every full collection walks all of it again: at a
fleet's announce rates that was a pause of hundreds of milliseconds every few seconds, which every announce
arriving meanwhile waited out (benchmarks/tracker_load.py; figures in benchmarks/RESULTS.md).

Rules:

- After each full collection, what survived it is frozen (``gc.freeze``): later collections leave it out.
  Freezing changes nothing for reference counting, so a record the soft state lets go of is freed at once,
  frozen or not.
- What a freeze keeps for ever is cyclic garbage formed among frozen objects (few: the soft state holds no
  cycles). Every ``thaw_every`` seconds the frozen objects go back to the oldest generation
  (``gc.unfreeze``), so the next full collection looks at everything once and frees any such cycle.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

OLDEST = 2
"""The collector's oldest generation: a collection of it is a full one."""
THAW_EVERY = 600.0
"""Seconds between two full collections that look at every object (see the module's rules)."""


class SurvivorFreezer:
    """The rules above for as long as it is entered (one per process: the collector is the process's)."""

    def __init__(self, thaw_every: float = THAW_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.thaw_every = thaw_every
        self.clock = clock
        self._thawed = 0.0

    def __enter__(self) -> SurvivorFreezer:
        self._thawed = self.clock()
        gc.callbacks.append(self._collected)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        gc.callbacks.remove(self._collected)

    def tick(self) -> None:
        """Thaw the frozen objects when ``thaw_every`` has passed since the last thaw (called now and then)."""
        now = self.clock()
        if now - self._thawed >= self.thaw_every:
            self._thawed = now
            gc.unfreeze()

    @staticmethod
    def _collected(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == OLDEST:
            gc.freeze()
