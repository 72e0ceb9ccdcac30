"""Scope leases: which peer of a rack fetches a piece across the rack's uplink, and which peer of a site
fetches it across the site's link, decided by the tracker.

Origin leases (:mod:`shoal.core.leases`) make each piece leave the origin about once. Scope leases do the
same at the fleet's other boundaries, which are what operators pay for and what saturates first: a rack is
the peers with one (site, rack) label pair, behind one uplink; a site is the peers with one site label,
behind one WAN link. A piece should cross each boundary once and then spread inside.

Rules:

* Only a peer with a rack label takes part. A peer without one is flat: it trades with everyone as before
  scopes existed, and so does any peer with it, since where a flat peer sits is unknown and no boundary can
  be drawn. A rack label without a site label is a rack of one implicit site: racks, but no site boundary.
* A piece that no peer of the asker's rack holds, that no flat peer holds, and that a peer of another rack
  holds, is leased to one peer of the rack at a time (a rack lease). Only that peer fetches it across the
  rack's uplink; the others take it from inside the rack once it is there (:func:`allowed_mask`).
* A piece held only outside the asker's site is leased with its site lease too, so one peer of the site
  fetches it across sites. When another peer of the site holds that site lease, the piece is left for that
  peer's rack, and crosses into this rack from there, inside the site.
* A piece nobody holds yet, on its way from the origin to a peer of another rack of the asker's site (that
  peer holds its origin lease), is leased to the asker too, ahead of its arrival: the asker fetches it
  the moment its holder offers it, without waiting for a lease poll after that. This is what keeps a rack
  busy at the end of a download, when the last pieces leave the origin into other racks. Pieces on their
  way into another site are left to the poll (they need that site's copy first), and so are all of them
  in a swarm larger than :data:`AHEAD_SWARM`.
* Pieces held inside the asker's site come first (the cheaper crossing), then those held only in other
  sites, and those on their way into the site's other racks last (they cannot be fetched yet); within
  each, the lowest pieces first, so the leases form runs of consecutive pieces and one request fetches a
  run. Spreading racks over different
  holders is the hand-out's work (core.handout).
* Pieces nobody holds are origin leases first, shared out among the racks (:func:`origin_share`,
  core.leases) so that each rack fetches its share from the origin and sends out no more than the others;
  a scope lease on one only follows its origin lease, as above.
* Bad peers' pieces do not count as held, as for origin leases.

Liveness comes first, since a rack waits for its lease holder:

* A lease lives while its holder announces: each announce renews it (:func:`renew`), and a holder that
  falls silent or is no longer live loses it (:func:`drop_dead`).
* A lease whose piece has not reached its scope ``stale_after`` seconds after it was granted is stale: its
  holder keeps it, but the next other peer of the scope that asks takes it over. A rack whose lease holder
  stalls (or whose holder's source does) does not wait for it forever, and a rack of one peer keeps its
  only fetcher. A stale lease is never granted afresh to its own holder, which would hide the stall.
* A lease is done once a peer of its scope holds the piece (:func:`drop_delivered`).

The tracker's table of scope leases maps ``(scope, piece)`` to the lease, so a piece has at most one lease
in a scope; the functions take a table and return a new one, or the leases to add to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Literal, Protocol

from shoal.core.bitfield import iter_bits
from shoal.core.handout import PeerView
from shoal.core.leases import stripes

ScopeKind = Literal["rack", "site"]

AHEAD_SWARM = 64
"""Pieces on their way are leased ahead only in a task of at most this many live peers. A downloader follows
that many peers at once (core.download.MAX_WATCHED_PEERS), so in a larger swarm the asker may not follow the
peer a piece arrives at, and its lease would keep its rack from the piece until it went stale."""


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """A rack (its site and rack labels; the site may be "", one implicit site) or a site (rack "")."""

    kind: ScopeKind
    site: str
    rack: str = ""


class Labelled(Protocol):
    """A peer's locality labels, as PeerView (the tracker) and PeerAddress (a downloader) carry them."""

    @property
    def site(self) -> str: ...

    @property
    def rack(self) -> str: ...


def rack_scope(peer: Labelled) -> Scope | None:
    """The peer's rack, or None for a peer without a rack label (flat)."""
    return Scope("rack", peer.site, peer.rack) if peer.rack else None


def site_scope(peer: Labelled) -> Scope | None:
    """The peer's site, or None for a peer without a site label."""
    return Scope("site", peer.site) if peer.site else None


def crossing(asker: Labelled, holder: Labelled) -> ScopeKind | None:
    """The outermost boundary a transfer from ``holder`` to ``asker`` crosses, as the asker's scopes draw
    it: None inside the asker's rack or when either peer is flat, "rack" into another rack of the asker's
    site (or any other rack when the asker has no site label), "site" from outside the asker's site."""
    mine, theirs = rack_scope(asker), rack_scope(holder)
    if mine is None or theirs is None or mine == theirs:
        return None
    return "rack" if not asker.site or asker.site == holder.site else "site"


def origin_share(asker: Labelled, racks: Iterable[tuple[str, str]], size: int) -> int | None:
    """Bit mask of the pieces of a file of ``size`` pieces that the asker's rack fetches from the origin first
    (core.leases.stripes), among ``racks``, the (site, rack) labels of the task's live peers that are not
    banned (core.swarm.Swarm.racks); None for a flat asker or a task of one rack, where the origin's pieces
    go to whoever asks."""
    if not asker.rack:
        return None
    mine = (asker.site, asker.rack)
    ordered = sorted({mine, *racks})
    if len(ordered) < 2:
        return None
    return stripes(size, ordered.index(mine), len(ordered))


LeaseKey = tuple[Scope, int]


@dataclass(frozen=True, slots=True)
class ScopeLease:
    piece: int
    scope: Scope
    peer_id: str
    granted: float
    """When the lease was granted to this peer; renewals keep it (stale leases are judged from it)."""
    expires: float

    @property
    def key(self) -> LeaseKey:
        return (self.scope, self.piece)

    def stale(self, now: float, stale_after: float) -> bool:
        return now - self.granted >= stale_after


@dataclass(frozen=True, slots=True)
class Crossings:
    """Bit masks of the pieces a peer holds scope leases on: its rack leases and its site leases."""

    rack: int = 0
    site: int = 0


def crossings_of(leases: Iterable[ScopeLease], peer_id: str) -> Crossings:
    """The pieces ``peer_id`` holds scope leases on."""
    rack = site = 0
    for lease in leases:
        if lease.peer_id == peer_id:
            if lease.scope.kind == "rack":
                rack |= 1 << lease.piece
            else:
                site |= 1 << lease.piece
    return Crossings(rack, site)


def allowed_mask(asker: Labelled, holder: Labelled, have: int, crossings: Crossings) -> int:
    """The pieces of ``have`` (the holder's, as a bit mask) that the asker may fetch from the holder: all of
    them inside its rack or with a flat peer, else only those it holds the leases of every boundary on."""
    boundary = crossing(asker, holder)
    if boundary is None:
        return have
    if boundary == "rack":
        return have & crossings.rack
    return have & crossings.rack & crossings.site


def grant_scope_leases(
    *,
    asker: PeerView,
    peers: Sequence[PeerView],
    leases: Mapping[LeaseKey, ScopeLease],
    want: int,
    now: float,
    ttl: float,
    stale_after: float,
    arriving: Mapping[int, str] | None = None,
) -> list[ScopeLease]:
    """Up to ``want`` pieces for ``asker`` to fetch across its rack's boundary: their rack leases, and the
    site leases of those held only outside its site. ``peers`` are the task's live peers (the asker among
    them or not); a lease whose holder is not among them, or past its expiry, no longer counts. The leases
    returned replace the table's entries of the same key (a stale lease taken over). ``arriving``: the
    task's origin leases, piece -> holder (pieces on their way from the origin)."""
    rack = rack_scope(asker)
    if rack is None or want <= 0:
        return []
    reach = asker.have.mask  # pieces the asker has, or may take without crossing a boundary
    in_site = outside = 0
    live = {asker.peer_id}
    # crossing(asker, peer) spelled out on the labels: this pass runs over every live peer, and builds no
    # Scope per peer.
    site_label, rack_label = asker.site, asker.rack
    for peer in peers:
        if peer.peer_id == asker.peer_id:
            continue
        live.add(peer.peer_id)
        if peer.bad:
            continue
        if not peer.rack or (peer.rack == rack_label and peer.site == site_label):
            reach |= peer.have.mask
        elif not site_label or peer.site == site_label:
            in_site |= peer.have.mask
        else:
            outside |= peer.have.mask
    taken = _taken(leases, rack, asker.peer_id, live, now, stale_after)
    near = in_site & ~reach & ~taken
    coming = 0
    if arriving:
        others = {
            p.peer_id
            for p in peers
            if not p.bad
            and p.rack
            and not (p.rack == rack_label and p.site == site_label)
            and (not site_label or p.site == site_label)
        }
        for piece, holder in arriving.items():
            if holder in others:
                coming |= 1 << piece
        coming &= ~(reach | in_site | outside | taken)
    site = site_scope(asker)
    far = own_rack = 0
    if site is not None:
        # A piece held only outside the site needs both leases. The asker may hold the rack lease already while
        # its site lease went stale and passed to another peer of the site: it may take that one back once it
        # is stale in turn, or a rack whose only other site-mate stalls (and keeps announcing) would wait
        # forever for the piece.
        own_rack = _own(leases, rack, asker.peer_id)
        site_taken = _taken(leases, site, asker.peer_id, live, now, stale_after)
        far = outside & ~in_site & ~reach & ~(taken & ~own_rack) & ~site_taken
    chosen_near = list(islice(iter_bits(near), want))
    chosen_far = list(islice(iter_bits(far), want - len(chosen_near)))
    chosen_near += islice(iter_bits(coming), want - len(chosen_near) - len(chosen_far))
    expires = now + ttl
    granted = [ScopeLease(i, rack, asker.peer_id, now, expires) for i in chosen_near]
    granted += [ScopeLease(i, rack, asker.peer_id, now, expires) for i in chosen_far if not own_rack >> i & 1]
    if site is not None:
        granted += [ScopeLease(i, site, asker.peer_id, now, expires) for i in chosen_far]
    return granted


def _own(leases: Mapping[LeaseKey, ScopeLease], scope: Scope, asker: str) -> int:
    """Bit mask of the pieces ``scope`` has a lease on that ``asker`` holds."""
    mask = 0
    for (lease_scope, piece), lease in leases.items():
        if lease_scope == scope and lease.peer_id == asker:
            mask |= 1 << piece
    return mask


def _taken(
    leases: Mapping[LeaseKey, ScopeLease], scope: Scope, asker: str, live: set[str], now: float, stale_after: float
) -> int:
    """Bit mask of the pieces ``scope`` has a lease on that the asker may not get: its own (never granted
    again, stale or not), and other live peers' leases in force that are not stale."""
    mask = 0
    for (lease_scope, piece), lease in leases.items():
        if lease_scope != scope:
            continue
        if lease.peer_id == asker or (
            lease.peer_id in live and lease.expires > now and not lease.stale(now, stale_after)
        ):
            mask |= 1 << piece
    return mask


def renew(leases: Mapping[LeaseKey, ScopeLease], peer_id: str, now: float, ttl: float) -> dict[LeaseKey, ScopeLease]:
    """The table after an announce of ``peer_id``: its leases expire ``ttl`` from now (granted is kept)."""
    expires = now + ttl
    return {
        key: replace(lease, expires=expires) if lease.peer_id == peer_id else lease for key, lease in leases.items()
    }


def drop_dead(
    leases: Mapping[LeaseKey, ScopeLease], *, live_ids: Iterable[str], now: float
) -> dict[LeaseKey, ScopeLease]:
    """The table without the leases of peers that are not live, and those past their expiry."""
    live = set(live_ids)
    return {key: lease for key, lease in leases.items() if lease.peer_id in live and lease.expires > now}


def drop_delivered(leases: Mapping[LeaseKey, ScopeLease], peers: Iterable[PeerView]) -> dict[LeaseKey, ScopeLease]:
    """The table without the leases whose piece a peer of their scope holds: that piece has crossed.
    ``peers``: the task's live peers; bad peers' pieces do not count."""
    if not leases:
        return {}
    # Only the scopes the table names are looked up, by their labels: this runs on every announce of a
    # labelled swarm, over every live peer, and a swarm flooded with peers of other scopes must not make
    # each pass build a Scope per peer.
    racks: dict[tuple[str, str], int] = {}
    sites: dict[str, int] = {}
    for lease in leases.values():
        if lease.scope.kind == "rack":
            racks[lease.scope.site, lease.scope.rack] = 0
        else:
            sites[lease.scope.site] = 0
    for peer in peers:
        if peer.bad:
            continue
        if peer.rack and (rack := (peer.site, peer.rack)) in racks:
            racks[rack] |= peer.have.mask
        if peer.site in sites and peer.site:
            sites[peer.site] |= peer.have.mask

    def held(scope: Scope) -> int:
        return racks[scope.site, scope.rack] if scope.kind == "rack" else sites[scope.site]

    return {key: lease for key, lease in leases.items() if not held(lease.scope) >> lease.piece & 1}


@dataclass(frozen=True, slots=True)
class Labels:
    """A peer's own locality labels (it knows them from its configuration)."""

    site: str = ""
    rack: str = ""


FLAT = Labels()
"""No labels: one flat scope, as a fleet on one switch."""


def decide_crossings(
    leases: Mapping[LeaseKey, ScopeLease],
    *,
    asker: PeerView,
    peers: Sequence[PeerView],
    want: int,
    now: float,
    ttl: float,
    stale_after: float,
    arriving: Mapping[int, str] | None = None,
) -> tuple[dict[LeaseKey, ScopeLease], Crossings]:
    """One announce's scope leases, in the tracker's order: the dead and the delivered ones go, the asker's
    are renewed, up to ``want`` new ones are granted; the table after it, and the asker's crossings.
    ``peers``: the task's live peers, the asker among them; ``arriving``: the origin leases, piece -> holder
    (see :func:`grant_scope_leases`)."""
    table = drop_delivered(drop_dead(leases, live_ids=(p.peer_id for p in peers), now=now), peers)
    table = renew(table, asker.peer_id, now, ttl)
    if want:
        granted = grant_scope_leases(
            asker=asker,
            peers=peers,
            leases=table,
            want=want,
            now=now,
            ttl=ttl,
            stale_after=stale_after,
            arriving=arriving,
        )
        table.update((lease.key, lease) for lease in granted)
    return table, crossings_of(table.values(), asker.peer_id)
