"""Which pieces a downloader fetches next, and from where.

Runs of consecutive pieces go in one HTTP Range request, so a fast LAN link is not spent on per-request
overhead. From a peer, a run starts at a random needed piece the peer holds (random rather than first, so
downloaders do not all queue on the same pieces of the same holder) and extends while the peer holds the
next piece and we need it. From the origin, a run is the next consecutive stretch of our leases.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def peer_run(available: int, max_pieces: int, rng: random.Random) -> list[int]:
    """A run of pieces to ask one peer for, from ``available``: the bit mask of pieces we need, the peer
    holds, and whose hash we know (bit i is piece i). Starts at the first available piece at or after a
    random position, and extends while the next piece is available too."""
    if not available:
        return []
    start = rng.randrange(available.bit_length())
    above = available >> start  # never 0: start is at or below the highest set bit
    index = start + (above & -above).bit_length() - 1
    run = [index]
    while len(run) < max_pieces and available >> (index + 1) & 1:
        index += 1
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
