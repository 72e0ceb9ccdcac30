"""One retry policy for every loop that waits for a service to come back: capped exponential backoff with
jitter.

When a tracker or a mirror manager restarts, every client of a fleet sees it fail at the same moment.
Retries after fixed or purely doubling delays then come back in lockstep, all at once, again and again.
Each delay here is drawn between half and all of its capped exponential step ("equal jitter"): the
clients spread over half the step, and none retries sooner than half of it, so a loop still cannot spin.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float
    """The step of the first retry, in seconds."""
    cap: float
    """No step is longer."""
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.factor < 1:
            raise ValueError(f"a backoff needs 0 < first <= cap and factor >= 1, not {self}")

    def step(self, attempt: int, cap: float | None = None) -> float:
        """The longest delay before retry number ``attempt`` (0: the first), at most ``cap`` if given."""
        limit = self.cap if cap is None else min(self.cap, cap)
        return min(limit, self.first * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random, cap: float | None = None) -> float:
        step = self.step(attempt, cap)
        return step / 2 + rng.random() * step / 2


class Retries:
    """One loop's retries: :meth:`next_delay` after each failure, :meth:`reset` after a success."""

    def __init__(self, policy: Backoff, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self, cap: float | None = None) -> float:
        """Seconds to wait before the next try; ``cap`` bounds this one (a server's interval, say)."""
        delay = self.policy.delay(self.attempt, self.rng, cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
