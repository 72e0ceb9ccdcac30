"""Origin leases: which peer may fetch which piece from the origin, decided by the tracker.

Rules:

* A piece that no live, trusted peer holds may be leased to exactly one peer at a time. While that lease
  is live no other peer is told to fetch the piece from the origin, so each byte leaves the origin about
  once.
* A lease lives as long as its peer keeps announcing; the tracker renews it on each announce. A peer that
  falls silent loses its leases when it expires, and the pieces become leasable again.
* Peers get runs of consecutive pieces so one HTTP Range request fetches a run. A peer that asks again
  continues where its last run ended (``after``) when those pieces are still free; otherwise it starts in
  the middle of the largest free gap that someone is already streaming towards, or at the start of a gap
  that nobody is, so peers that start together spread over the file instead of racing on the same
  pieces.
* An origin that ignores Range requests makes splitting impossible: one peer leases every free piece and
  fetches the whole file; the others wait for its pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoal.core.bitfield import Bitfield


@dataclass(frozen=True, slots=True)
class Lease:
    piece: int
    peer_id: str
    expires: float


def _free_pieces(held: Bitfield, leased: Mapping[int, Lease], asker_have: Bitfield) -> list[bool]:
    """For each piece: held by nobody, leased to nobody, and not the asker's. Built from bit masks: a test of
    each piece in each bitfield cost the tracker about 1 ms per announce for 512 pieces."""
    taken = held.mask | asker_have.mask
    for piece in leased:
        taken |= 1 << piece
    free = ~taken & ((1 << held.size) - 1)
    return [bit == "1" for bit in reversed(format(free, f"0{held.size}b"))] if held.size else []


def _gaps(free: list[bool]) -> list[tuple[int, int]]:
    gaps, start = [], None
    for i, is_free in enumerate(free):
        if is_free and start is None:
            start = i
        elif not is_free and start is not None:
            gaps.append((start, i))
            start = None
    if start is not None:
        gaps.append((start, len(free)))
    return gaps


def grant_leases(
    *,
    held: Bitfield,
    leased: Mapping[int, Lease],
    asker: str,
    asker_have: Bitfield,
    want: int,
    after: int | None,
    range_ok: bool,
) -> list[int]:
    """Choose up to ``want`` pieces to lease to ``asker``. ``leased`` holds only live leases."""
    if want <= 0:
        return []
    free = _free_pieces(held, leased, asker_have)
    if not range_ok:
        if any(lease.peer_id != asker for lease in leased.values()):
            return []
        return [i for i, is_free in enumerate(free) if is_free]
    if after is not None and 0 <= after < len(free) and free[after]:
        start = after
    else:
        gaps = _gaps(free)
        if not gaps:
            return []
        gap_start, gap_end = max(gaps, key=lambda g: (g[1] - g[0], -g[0]))
        streamed_towards = gap_start > 0 and (gap_start - 1) in leased
        start = gap_start + (gap_end - gap_start) // 2 if streamed_towards else gap_start
    pieces: list[int] = []
    i = start
    while i < len(free) and free[i] and len(pieces) < want:
        pieces.append(i)
        i += 1
    return pieces
