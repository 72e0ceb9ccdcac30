"""Unchoke slots: which of a BitTorrent seeder's interested peers may download now.

BEP 3 leaves choking to each client; this is the seeder's policy, across all its connections:

- At most ``limit`` peers are unchoked at once; a seeder's upload divided among fewer peers finishes
  each of them sooner, and they trade the pieces among themselves.
- An interested peer gets a free slot at once, or waits in the order it asked.
- A peer keeps its slot until it loses interest or leaves; the longest-waiting peer then gets it.
- While peers wait, a peer unchoked for ``rotate_after`` seconds gives its slot up and waits again
  (``rotate``), so every peer gets pieces to trade: a round-robin seed choker, like libtorrent's default
  (``seed_choking_algorithm`` round_robin).

Keys are whatever identifies a connection to the caller; the answers say whom to unchoke or choke, and
the caller sends those messages.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class UnchokeSlots(Generic[K]):
    limit: int
    """Peers unchoked at once."""
    rotate_after: float = 30.0
    """Seconds an unchoked peer keeps its slot while others wait."""
    unchoked: dict[K, float] = field(default_factory=dict)
    """Unchoked peers and when each was unchoked, oldest first."""
    waiting: dict[K, None] = field(default_factory=dict)
    """Interested peers without a slot, in the order they asked."""

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("at least one unchoke slot")

    def want(self, key: K, now: float) -> bool:
        """``key`` is interested: True if it gets a slot now (unchoke it), False if it waits."""
        if key in self.unchoked:
            return False
        if len(self.unchoked) < self.limit:
            self.unchoked[key] = now
            return True
        self.waiting[key] = None
        return False

    def leave(self, key: K, now: float) -> list[K]:
        """``key`` lost interest or disconnected: the peers to unchoke in its place."""
        self.waiting.pop(key, None)
        if self.unchoked.pop(key, None) is None:
            return []
        return self._fill(now)

    def rotate(self, now: float) -> tuple[list[K], list[K]]:
        """Peers to choke (their turn is over) and peers to unchoke, when others are waiting."""
        choked: list[K] = []
        for key, since in list(self.unchoked.items()):
            if len(choked) >= len(self.waiting) or now - since < self.rotate_after:
                break
            del self.unchoked[key]
            choked.append(key)
        unchoked = self._fill(now)
        for key in choked:
            self.waiting[key] = None
        return choked, unchoked

    def _fill(self, now: float) -> list[K]:
        granted: list[K] = []
        while self.waiting and len(self.unchoked) < self.limit:
            key = next(iter(self.waiting))
            del self.waiting[key]
            self.unchoked[key] = now
            granted.append(key)
        return granted
