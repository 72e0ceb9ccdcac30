"""A clock that moves only when a test moves it.

Every part that reads the time takes a ``clock`` callable (``time.time`` by default); tests hand it a
:class:`FakeClock` and move it with :meth:`FakeClock.advance` (or by setting ``now``) instead of sleeping,
so expiry, retries and ages are tested the same on a quiet machine and on a busy one.
"""

from __future__ import annotations

START = 1_763_700_000.0
"""Where a fake clock starts unless told: a plausible Unix time (November 2025), so code that formats or
stores times sees an ordinary value."""


class FakeClock:
    """``clock()`` returns ``now``, which changes only when the test changes it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        """Move the clock ``seconds`` forward (never back: time that ran backwards would test another
        thing); return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self.now += seconds
        return self.now
