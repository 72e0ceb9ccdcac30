"""One retry policy for every loop that waits for a service to come back: capped exponential backoff with
jitter.

When a tracker or a mirror manager restarts, every client of a fleet sees it fail at the same moment.
Retries after fixed or purely doubling delays then come back in lockstep, all at once, again and again.
Each delay here is drawn between half and all of its capped exponential step ("equal jitter"): the
clients spread over half the step, and none retries sooner than half of it, so a loop still cannot spin.

A service that is up but sheds load says when to come back (503 with ``Retry-After``): that is not a
failure, and its wait is the server's figure with jitter (:func:`busy_delay`), not a step of the backoff.
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


BUSY_WAIT_MIN = 0.5
"""Seconds: the shortest wait after a busy reply, whatever it says (a ``Retry-After: 0`` must not make a
fleet ask again in a loop)."""
BUSY_WAIT_MAX = 30.0
"""Seconds: the longest wait after a busy reply, whatever it says, so a misconfigured proxy's hour-long
``Retry-After`` cannot park a download."""
BUSY_JITTER = 0.25
"""A busy wait is drawn from ``Retry-After`` to that plus this share: clients shed together spread out
instead of coming back in the same second."""


def busy_delay(retry_after: float, rng: random.Random) -> float:
    """Seconds to wait after a busy reply (503 with ``Retry-After``): at least what the server asked, plus
    jitter, within BUSY_WAIT_MIN..BUSY_WAIT_MAX. The server's figure is a floor: it chose it from its load."""
    wait = min(max(retry_after, BUSY_WAIT_MIN), BUSY_WAIT_MAX)
    return min(wait * (1 + rng.random() * BUSY_JITTER), BUSY_WAIT_MAX)
