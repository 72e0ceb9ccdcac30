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
  claim on a piece someone else holds or has leased is refused; the claimant's bytes are then a copy.
* Peers get runs of consecutive pieces so one HTTP Range request fetches a run, and each run starts at
  the lowest free piece: peers that start together take the file's first runs in turn, and the swarm
  fills the file front to back. The complete prefix of a peer that started with them then grows with its
  download, so the whole-file hashes it needs (the daemon's content id, ``--digest``) are computed as
  the prefix grows rather than once the last piece is in (see :mod:`shoal.peer.prefix_hash`); a file
  filled in eight places at once would leave all of that hashing to the end.
* An origin that ignores Range requests makes splitting impossible: one peer leases every free piece and
  fetches the whole file; the others wait for its pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shoal.core.bitfield import Bitfield, iter_bits


@dataclass(frozen=True, slots=True)
class Lease:
    piece: int
    peer_id: str
    expires: float


def grant_free(*, size: int, taken: int, others_lease: bool, want: int, range_ok: bool) -> list[int]:
    """Choose up to ``want`` of the pieces of ``size`` that ``taken`` (a bit mask: held by someone, the
    asker's, or leased) leaves free. ``others_lease``: a peer other than the asker holds a live lease. Bit
    masks: a test of each piece in each bitfield costs time per piece on every announce, the tracker's
    busiest path (benchmarks/tracker_announce.py; figures in benchmarks/RESULTS.md)."""
    if want <= 0:
        return []
    free = ~taken & ((1 << size) - 1)
    if not range_ok:
        return [] if others_lease else list(iter_bits(free))
    if not free:
        return []
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
) -> list[int]:
    """Choose up to ``want`` pieces to lease to ``asker``. ``leased`` holds only live leases."""
    return grant_free(
        size=held.size,
        taken=held.mask | asker_have.mask | sum(1 << piece for piece in leased),
        others_lease=any(lease.peer_id != asker for lease in leased.values()),
        want=want,
        range_ok=range_ok,
    )


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
