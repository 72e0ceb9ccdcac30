"""Rate arithmetic: a token bucket that takes ``now`` and answers how long to wait.

Transfers reserve their bytes before they move (a whole piece for a sendfile upload, a chunk for a
download). The bucket may go into debt by one reservation, so a single piece larger than the burst still
proceeds, and the average rate over any window longer than a few pieces stays at ``rate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float
    """Bytes per second that may pass on average."""
    burst: float
    """Bytes that may pass at once after an idle period."""
    tokens: float = field(default=0.0)
    stamp: float | None = field(default=None)

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes`` and return the seconds the caller must wait before sending them."""
        if self.stamp is None:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= nbytes
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def refund(self, nbytes: int) -> None:
        """Give back a reservation that will not be used (the caller was turned away instead of waiting)."""
        self.tokens = min(self.burst, self.tokens + nbytes)
