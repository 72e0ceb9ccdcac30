"""Peer hand-out: which peers the tracker tells an asker about.

Only peers that hold something the asker lacks are worth a connection. Among those, the same rack comes
first, then the same site, then the rest (Kraken and Dragonfly schedule the same way: LAN first). Within a
tier the order is a stable shuffle keyed by the asker, so different askers spread over different holders
instead of all hammering the first one. The list is bounded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.core.bitfield import Bitfield


@dataclass(frozen=True, slots=True)
class PeerView:
    """What the tracker knows of a peer in a task."""

    peer_id: str
    host: str
    port: int
    site: str
    rack: str
    have: Bitfield
    bad: bool = False
    """Kept from every hand-out: reporters on enough hosts accused it (core.announce.BAN_QUORUM)."""
    accusers: frozenset[str] = frozenset()
    """The hosts whose peers reported it for serving bytes that failed verification."""


def locality_tier(asker: PeerView, other: PeerView) -> int:
    """0: same rack and site, 1: same site, 2: elsewhere. Empty labels never match."""
    same_site = bool(asker.site) and asker.site == other.site
    if same_site and bool(asker.rack) and asker.rack == other.rack:
        return 0
    return 1 if same_site else 2


def _spread_key(asker: str, other: str) -> bytes:
    return hashlib.blake2b(f"{asker}/{other}".encode(), digest_size=8).digest()


def hand_out(asker: PeerView, peers: Sequence[PeerView], limit: int) -> list[PeerView]:
    """Peers (never the asker, never bad ones) holding pieces the asker lacks, nearest first."""
    lacking = ~asker.have.mask  # one big-int AND a peer, not a Python loop over its pieces
    useful = [p for p in peers if p.peer_id != asker.peer_id and not p.bad and p.have.mask & lacking]
    useful.sort(key=lambda p: (locality_tier(asker, p), _spread_key(asker.peer_id, p.peer_id)))
    return useful[:limit]
