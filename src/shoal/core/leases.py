"""Origin leases: which peer may fetch which piece from the origin, decided by the tracker.

Rules:

* A piece that no live, trusted peer holds may be leased to exactly one peer at a time. While that lease
  is live no other peer is told to fetch the piece from the origin, so each byte leaves the origin about
  once.
* A lease lives as long as its peer keeps announcing; the tracker renews it on each announce. A peer that
  falls silent loses its leases when it expires, and the pieces become leasable again.
* A peer names the pieces it is fetching from the origin on every announce (``fetching``). A tracker that
  has lost such a lease (restarted, or it lapsed while the peer could not reach the tracker) grants it back
  to that peer when no live, trusted peer holds the piece and no other peer holds a live lease on it: the
  bytes are on their way, and leasing the piece to someone else would fetch it from the origin twice. A
  claim on a piece someone else holds or has leased is refused; the claimant's bytes are then a copy. A
  piece under spot check (core.audit) is the exception: others hold it by definition, and the claim of a
  host that may check it is the check's fetch, whose lease it gets back (core.announce).
* Peers get runs of consecutive pieces so one HTTP Range request fetches a run, and each run starts at
  the lowest free piece: peers that start together take the file's first runs in turn, and the swarm
  fills the file front to back. The complete prefix of a peer that started with them then grows with its
  download, so the whole-file hashes it needs (the daemon's content id, ``--digest``) are computed as
  the prefix grows rather than once the last piece is in (see :mod:`shoal.peer.prefix_hash`); a file
  filled in eight places at once would leave all of that hashing to the end.
* In a fleet of racks the origin's pieces are shared out among the racks (``share``): the file is cut
  into stripes of STRIPE pieces dealt to the racks in turn, and a peer is leased the free pieces of its
  rack's stripes first, lowest first. A piece fetched from the origin enters its rack over the rack's uplink
  and leaves it once for every other rack, so a rack that fetched more than its share from the origin
  would send more out than the others and finish last (core.scope_leases). A rack whose stripes are all
  taken helps the others from the back of the file, the highest free stripe first, where the rack that
  owns it will come last: a slow or stalled rack does not hold the file back.
* In a fleet of racks at most RACK_LEASE_HOLDERS peers of a rack hold origin leases at once; an asker past
  them gets none and takes the pieces from inside its rack. The origin's link is shared by its transfers,
  each at its share of the rate, and peers that start together start their leased runs together: with
  every peer of a large fleet a holder, each transfer is so slow that a whole batch of pieces is still on
  its way when the first lands, and the holders' pieces land at the same moments. The racks then wait
  with nothing to trade, and at the end a large part of the file arrives at once and has yet to cross
  into every rack. A few holders a rack keep the rack's share of its downlink, which its origin transfers
  share flow for flow with the pieces coming from other racks (as TCP shares a link).
* Peers without a rack label (one flat switch, as far as the tracker knows; per site when they name one)
  are one scope of their own: at most FLAT_LEASE_HOLDERS of them hold origin leases at once, for the same
  reason: a flat swarm of hundreds would lease the whole file in its first moments too. The cap is larger
  than a rack's and bites only in a swarm of more than FLAT_LEASE_HOLDERS peers, because smaller caps made
  small flat swarms slower (benchmarks/RESULTS.md, "origin lease holders in a flat swarm").
* A peer whose only leases are spot checks' (core.audit) does not count toward either cap: a check's lease
  stays until its holder reports, and a checker that got the piece from a peer meanwhile never fetches it,
  so counted, such leases could fill a cap for as long as their holders announce.
* An origin that ignores Range requests makes splitting impossible: one peer leases every free piece and
  fetches the whole file; the others wait for its pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice

from shoal.core.bitfield import Bitfield, iter_bits

STRIPE = 4
"""Pieces in a stripe of a rack's share of the origin's pieces: small, so racks get shares of the file that
differ by at most one stripe, and large enough that a stripe is fetched with one request."""


RACK_LEASE_HOLDERS = 4
"""Peers of one rack holding origin leases at once, at most (the module's rules)."""
FLAT_LEASE_HOLDERS = 32
"""Peers without a rack label (of one site, or of none) holding origin leases at once, at most (the module's
rules)."""


@dataclass(frozen=True, slots=True)
class Lease:
    piece: int
    peer_id: str
    expires: float


def grant_free(
    *,
    size: int,
    taken: int,
    others_lease: bool,
    want: int,
    range_ok: bool,
    share: int | None = None,
    rack_holders: int = 0,
    flat_holders: int = 0,
) -> list[int]:
    """Choose up to ``want`` of the pieces of ``size`` that ``taken`` (a bit mask: held by someone, the
    asker's, or leased) leaves free. ``others_lease``: a peer other than the asker holds a live lease. Bit
    masks: a test of each piece in each bitfield costs time per piece on every announce, the tracker's
    busiest path (benchmarks/tracker_announce.py; figures in benchmarks/RESULTS.md). ``share``: the bit mask
    of the asker's rack's stripes (:func:`stripes`), None outside a fleet of racks. ``rack_holders``: the
    other peers of the asker's rack holding live leases (0 outside a fleet of racks); at RACK_LEASE_HOLDERS
    the asker gets none. ``flat_holders``: the same for an asker without a rack label, counting the other
    holders without one; at FLAT_LEASE_HOLDERS the asker gets none."""
    if want <= 0 or rack_holders >= RACK_LEASE_HOLDERS or flat_holders >= FLAT_LEASE_HOLDERS:
        return []
    free = ~taken & ((1 << size) - 1)
    if not range_ok:
        return [] if others_lease else list(iter_bits(free))
    if not free:
        return []
    if share is not None:
        mine = free & share
        if mine:
            return list(islice(iter_bits(mine), want))
        return _from_the_back(free, want)
    start = (free & -free).bit_length() - 1  # the lowest free piece
    end = Bitfield.from_mask(size, free).run_end(start)
    return list(range(start, min(end, start + want)))


def grant_leases(
    *,
    held: Bitfield,
    leased: Mapping[int, Lease],
    asker: str,
    asker_have: Bitfield,
    want: int,
    range_ok: bool,
    share: int | None = None,
) -> list[int]:
    """Choose up to ``want`` pieces to lease to ``asker``. ``leased`` holds only live leases; ``share`` as for
    :func:`grant_free`."""
    return grant_free(
        size=held.size,
        taken=held.mask | asker_have.mask | sum(1 << piece for piece in leased),
        others_lease=any(lease.peer_id != asker for lease in leased.values()),
        want=want,
        range_ok=range_ok,
        share=share,
    )


def stripes(size: int, index: int, count: int) -> int:
    """Bit mask of the pieces of the ``index``-th of ``count`` racks' shares: stripes ``index``,
    ``index + count``, ... of STRIPE pieces each, of a file of ``size`` pieces."""
    if not 0 <= index < count:
        raise ValueError(f"rack {index} of {count}")
    period = count * STRIPE
    mask = ((1 << STRIPE) - 1) << index * STRIPE
    while period < size:  # doubling the pattern: a few big-int shifts, not one per stripe
        mask |= mask << period
        period *= 2
    return mask & ((1 << size) - 1)


def _from_the_back(free: int, want: int) -> list[int]:
    """Up to ``want`` free pieces, stripe by stripe from the highest stripe with a free piece down, each
    stripe's pieces in order."""
    chosen: list[int] = []
    while free and len(chosen) < want:
        top = free.bit_length() - 1
        start = top - top % STRIPE
        run = free >> start << start
        chosen += islice(iter_bits(run), want - len(chosen))
        free &= ~run
    return chosen


def reclaimable(*, claimed: int, held: int, others_leased: int) -> int:
    """The pieces of ``claimed`` (bit masks throughout) whose lease is the asker's after this announce: those
    no live, trusted peer holds and no other peer holds a live lease on."""
    return claimed & ~held & ~others_leased


def reclaim_leases(*, claimed: Iterable[int], held: Bitfield, leased: Mapping[int, Lease], asker: str) -> list[int]:
    """The pieces of ``claimed`` (the asker's origin fetches in flight) whose lease is the asker's after this
    announce: those no live, trusted peer holds (``held``) and no other peer holds a live lease on
    (``leased`` holds only live leases). Indices must be within ``held``'s size."""
    others = sum(1 << piece for piece, lease in leased.items() if lease.peer_id != asker)
    mask = reclaimable(claimed=sum(1 << i for i in set(claimed)), held=held.mask, others_leased=others)
    return list(iter_bits(mask))
