"""Peer hand-out: which peers the tracker tells an asker about.

Only peers that hold something the asker lacks are worth a connection. Among those, the same rack comes
first, then the same site, then the rest (Kraken and Dragonfly schedule the same way: LAN first). Within a
tier the order is a stable shuffle keyed by the asker, so different askers spread over different holders
instead of all hammering the first one. The list is bounded.

The shuffle is a rotation: every peer has a fixed position on a ring of 2**64 (a hash of its id), and an
asker takes a tier's peers in ring order from its own position. Each asker starts elsewhere on the ring, so
the askers spread over the holders, and a tracker can keep a swarm's holders sorted by position
(:class:`HolderIndex`) and walk from the asker's position until it has enough useful peers, instead of
ordering every peer of a swarm of thousands on every announce. :func:`hand_out` (any sequence of peers)
and :meth:`HolderIndex.hand_out` give the same list while no group is larger than WALK_BUDGET.

Past that the walk is bounded: near the end of a download most holders of a swarm of thousands hold nothing
the asker lacks, and a walk until ``limit`` useful peers turn up would pass most of the swarm on every
announce. A walk looks at WALK_BUDGET peers of each tier from a point drawn anew each announce, and the
swarm adds the holders of the rare pieces the asker lacks (core.swarm.RareHolders), which such a walk would
most likely miss.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from shoal.core.bitfield import Bitfield
from shoal.core.messages import PeerAddress

_RING = 1 << 64
WALK_BUDGET = 256
"""Most peers of one tier's group an indexed hand-out looks at: it bounds an announce's work in a swarm of
thousands, where near the end most holders have nothing the asker lacks."""


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


def _tier(site: str, rack: str, other_site: str, other_rack: str) -> int:
    if rack and rack == other_rack and site == other_site:
        return 0
    return 1 if site and site == other_site else 2


def locality_tier(asker: PeerView, other: PeerView) -> int:
    """0: same rack (the same rack label in the same site, or both without a site label: a rack of one
    implicit site, as core.scope_leases draws it), 1: same site, 2: elsewhere. An empty rack or site label
    never matches."""
    return _tier(asker.site, asker.rack, other.site, other.rack)


def ring_position(peer_id: str) -> int:
    """A peer's fixed place on the hand-out ring."""
    return int.from_bytes(hashlib.blake2b(peer_id.encode(), digest_size=8).digest(), "big")


def hand_out(asker: PeerView, peers: Sequence[PeerView], limit: int) -> list[PeerView]:
    """Peers (never the asker, never bad ones) holding pieces the asker lacks, nearest first."""
    lacking = ~asker.have.mask  # one big-int AND a peer, not a Python loop over its pieces
    useful = [p for p in peers if p.peer_id != asker.peer_id and not p.bad and p.have.mask & lacking]
    start = ring_position(asker.peer_id)
    useful.sort(key=lambda p: (locality_tier(asker, p), (ring_position(p.peer_id) - start) % _RING, p.peer_id))
    return useful[:limit]


class IndexedHolder:
    """A holder's place in the index: its ring position, labels and current view, what a hand-out names it by
    (its address), and the pieces it counts as holding for others (its owner's say:
    core.swarm.Swarm.counted), one object shared by its groups, so a walk reads the view, the address and the
    pieces where it stands instead of looking the peer up."""

    __slots__ = ("address", "mask", "peer_id", "position", "prefix", "rack", "site", "view")

    def __init__(self, view: PeerView, mask: int, address: PeerAddress) -> None:
        self.position = ring_position(view.peer_id)
        self.peer_id = view.peer_id
        self.site = view.site
        self.rack = view.rack
        self.hold(view, mask, address)

    def hold(self, view: PeerView, mask: int, address: PeerAddress) -> None:
        self.view = view
        self.address = address
        self.mask = mask
        self.prefix = (mask ^ (mask + 1)).bit_length() - 1
        """The holder holds every piece below this one: a seed, or a downloader of a swarm that fills its
        file front to back (core.leases), holds what an asker lacks when the asker's first missing piece is
        below it, which a walk then tells without reading the holder's whole bit mask."""


def _order(holder: IndexedHolder) -> tuple[int, str]:
    return holder.position, holder.peer_id


class HolderIndex:
    """A swarm's holders (peers that may be handed out: see core.swarm) by rack, by site and all together,
    each group sorted by ring position, each holder with its view. Adding or removing a peer costs a binary
    search and a list move; a holder's new view (its announce) costs a dict look-up."""

    __slots__ = ("_all", "_racks", "_sites", "_where", "looked")

    def __init__(self) -> None:
        self._all: list[IndexedHolder] = []
        self._sites: dict[str, list[IndexedHolder]] = {}
        self._racks: dict[tuple[str, str], list[IndexedHolder]] = {}
        self._where: dict[str, IndexedHolder] = {}
        self.looked = 0
        """How many holders the last :meth:`hand_out` looked at (the bound its walks keep)."""

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._where

    def _groups(self, site: str, rack: str) -> Iterator[list[IndexedHolder]]:
        yield self._all
        if site:
            yield self._sites.setdefault(site, [])
        if rack:
            yield self._racks.setdefault((site, rack), [])

    def put(self, view: PeerView, mask: int, address: PeerAddress | None = None) -> None:
        """Index ``view``'s peer as holding ``mask`` (not 0: a peer holding nothing is :meth:`discard`-ed), or
        take its new view and pieces; a peer whose labels changed moves to its new groups. ``address``: what
        a hand-out names it by (the owner's copy, shared; default: one made of ``view``)."""
        if address is None:
            address = PeerAddress(view.peer_id, view.host, view.port, view.site, view.rack)
        holder = self._where.get(view.peer_id)
        if holder is not None and holder.site == view.site and holder.rack == view.rack:
            holder.hold(view, mask, address)
            return
        self.discard(view.peer_id)
        holder = self._where[view.peer_id] = IndexedHolder(view, mask, address)
        for group in self._groups(holder.site, holder.rack):
            bisect.insort(group, holder, key=_order)

    def discard(self, peer_id: str) -> None:
        holder = self._where.pop(peer_id, None)
        if holder is None:
            return
        site, rack = holder.site, holder.rack
        for group in self._groups(site, rack):
            del group[bisect.bisect_left(group, _order(holder), key=_order)]
        if site and not self._sites[site]:
            del self._sites[site]
        if rack and not self._racks[(site, rack)]:
            del self._racks[(site, rack)]

    def hand_out(self, asker: PeerView, limit: int, *, draw: float = 0.0) -> list[PeerView]:
        """What :func:`hand_out` gives for the indexed peers' views (a holder whose pieces are 0 is left out):
        the views of :meth:`walk`'s holders."""
        return [holder.view for holder in self.walk(asker, limit, draw=draw)]

    def walk(self, asker: PeerView, limit: int, *, draw: float = 0.0) -> list[IndexedHolder]:
        """The holders of :meth:`hand_out`'s peers, in its order, found by walking each tier's group from the
        asker's ring position until ``limit`` useful peers are found.

        The work is bounded: each tier's walk looks at most WALK_BUDGET peers. A group no larger than that is
        walked whole, so the list is :func:`hand_out`'s; a larger one is walked from a point ``draw`` (uniform
        in [0, 1)) of the ring further on, so successive announces look at different parts of it. When few
        peers of a large swarm hold what the asker lacks, the walk may miss them: Swarm.hand_out adds the
        holders of its rare pieces."""
        self.looked = 0
        # Positive: an AND with a negative integer (``~have`` alone) costs CPython a two's complement of each
        # operand, on every holder walked.
        lacking = ~asker.have.mask & ((1 << asker.have.size) - 1)
        if limit <= 0 or not lacking:
            return []
        site, rack = asker.site, asker.rack
        tiers: list[tuple[int, list[IndexedHolder]]] = []
        if rack and (site, rack) in self._racks:
            tiers.append((0, self._racks[(site, rack)]))
        if site and site in self._sites:
            tiers.append((1, self._sites[site]))
        tiers.append((2, self._all))
        handed: list[IndexedHolder] = []
        asker_id = asker.peer_id
        indexed = self._where.get(asker_id)  # the asker's own holder, if any: no other holder is the asker
        own = indexed.position if indexed is not None else ring_position(asker_id)
        first = (lacking & -lacking).bit_length() - 1  # the asker's first missing piece
        nearer = 0
        for tier, group in tiers:
            if len(group) == nearer:
                continue  # each group holds the nearer tier's: one no larger holds nobody of its own tier
            nearer = len(group)
            start = own if len(group) <= WALK_BUDGET else (own + int(draw * _RING)) % _RING
            # The rack's group holds the rack alone; the site's may hold the asker's rack too, and the whole
            # swarm's every nearer peer: those were looked at in their own tier. Nobody is nearer than the
            # site tier to an asker without a rack label, or than the last tier to one without any label.
            mixed = bool(rack) if tier == 1 else tier == 2 and bool(site or rack)
            window = _window(group, bisect.bisect_left(group, (start, ""), key=_order))
            self.looked += len(window)
            for holder in window:
                # Each holder walked is a few objects far apart in memory: a useful one is told by its prefix
                # where it can be, and the asker by identity, before its pieces or its id are read.
                if (holder.prefix <= first and not holder.mask & lacking) or holder is indexed:
                    continue
                if mixed and _tier(site, rack, holder.site, holder.rack) != tier:
                    continue
                handed.append(holder)
                if len(handed) == limit:
                    return handed
        return handed


def _window(group: list[IndexedHolder], at: int) -> list[IndexedHolder]:
    """At most WALK_BUDGET of the group's entries, in ring order from index ``at``."""
    window = group[at : at + WALK_BUDGET]
    if len(window) < WALK_BUDGET and at:
        window += group[: min(at, WALK_BUDGET - len(window))]
    return window
