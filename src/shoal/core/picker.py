"""Which pieces a downloader fetches next, and from where.

Runs of consecutive pieces go in one HTTP Range request, so a fast LAN link is not spent on per-request
overhead. From a peer, a run starts at a random needed piece the peer holds (random rather than first, so
downloaders do not all queue on the same pieces of the same holder) and extends while the peer holds the
next piece and we need it. From the origin, a run is the next consecutive stretch of our leases.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from shoal.core.bitfield import Bitfield


def peer_run(
    needed: Collection[int],
    peer_have: Bitfield,
    verifiable: Collection[int],
    max_pieces: int,
    rng: random.Random,
) -> list[int]:
    """A run of pieces to ask one peer for: needed, held by the peer, and with a known hash."""
    candidates = [i for i in needed if i in peer_have and i in verifiable]
    if not candidates:
        return []
    index = rng.choice(candidates)
    run = [index]
    while len(run) < max_pieces:
        index += 1
        if index not in peer_have or index not in needed or index not in verifiable:
            break
        run.append(index)
    return run


def origin_run(todo: Iterable[int], max_pieces: int) -> list[int]:
    """The first stretch of consecutive pieces in ``todo`` (our leases not yet fetched)."""
    run: list[int] = []
    for index in sorted(todo):
        if run and (index != run[-1] + 1 or len(run) >= max_pieces):
            break
        run.append(index)
    return run


def run_pieces(piece_length: int, max_bytes: int) -> int:
    """How many pieces make a run of at most ``max_bytes`` (at least one)."""
    return max(1, max_bytes // piece_length)


LEASE_SECONDS = 1.0
MAX_LEASE_BYTES = 64 << 20


def lease_pieces(piece_length: int, origin_rate: float, min_bytes: int) -> int:
    """How many pieces to ask the tracker to lease at once: about a second of our origin throughput.

    A peer sharing a slow origin link with many others asks for little (a few pieces), so the file stays
    spread over all of them; a peer alone on a fast origin asks for up to 64 MiB, so it is not held back by a
    tracker round trip every few milliseconds.
    """
    wanted = min(max(origin_rate * LEASE_SECONDS, min_bytes), MAX_LEASE_BYTES)
    return run_pieces(piece_length, int(wanted))
