"""Which pieces a downloader fetches next, and from where.

Runs of consecutive pieces go in one HTTP Range request, so a fast LAN link is not spent on per-request
overhead. From a peer, a run starts at a random needed piece the peer holds (random rather than first, so
downloaders do not all queue on the same pieces of the same holder) and extends while the peer holds the
next piece and we need it. From the origin, a run is the next consecutive stretch of our leases.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field


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


def wants_leases(needed: int, leases: Iterable[int]) -> bool:
    """Pieces are missing (``needed``, a bit mask) and none of our ``leases`` is left to start: time to ask
    the tracker for more."""
    return bool(needed) and not any(needed >> i & 1 for i in leases)


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """How much a download asks of its sources at once (the GetConfig fields of the same names)."""

    run_bytes: int
    """A peer run is at most this many bytes; an origin run at most twice as many."""
    origin_streams: int
    """Origin runs at once: 1 in a swarm (leases come a run at a time), more when fetching straight."""
    peer_requests: int
    """Peer runs at once, over all peers."""
    per_peer_requests: int
    """Peer runs at once from one peer, when there are several to ask."""
    lone_peer_requests: int
    """The same, when one peer is all there is."""


@dataclass(frozen=True, slots=True)
class Holder:
    """A peer the download may ask now (not banned, not backing off, its pieces known), in the order the
    tracker handed it out (nearest first)."""

    peer_id: str
    have: int
    """Bit mask of the pieces it holds."""
    requests: int
    """Its runs of ours under way."""


@dataclass(slots=True)
class FetchPlan:
    origin: list[list[int]] = field(default_factory=list)
    """Runs to ask the origin for, one request each."""
    peers: list[tuple[str, list[int]]] = field(default_factory=list)
    """(peer id, run) to ask peers for, one request each."""
    want_hashes: bool = False
    """A peer holds pieces we need whose hash we do not know yet: look them up."""
    want_leases: bool = False
    """Pieces are missing and none of our leases is left to start: ask the tracker for more."""


def plan_fetches(
    *,
    piece_length: int,
    needed: int,
    leases: Collection[int],
    hashed: int,
    origin_busy: int,
    range_ok: bool,
    holders: Iterable[Holder],
    peer_runs: int,
    limits: FetchLimits,
    rng: random.Random,
    direct: bool = False,
) -> FetchPlan:
    """What to start now: ``needed`` is the bit mask of the pieces neither on disk nor being fetched,
    ``leases`` the pieces the tracker leased us (every piece when direct), ``hashed`` the mask of the
    pieces whose hash we know, ``origin_busy`` our origin runs under way and ``peer_runs`` our peer runs
    under way (from any peer). No piece goes in two runs; a peer is asked only for pieces it holds and we
    can verify."""
    plan = FetchPlan()
    if not needed:
        return plan
    leased = leases
    origin_max = run_pieces(piece_length, limits.run_bytes * 2)
    for _ in range(max(0, limits.origin_streams - origin_busy)):
        todo = [i for i in leased if needed >> i & 1]
        # An origin that ignores Range sends the whole file whatever we ask: every leased piece in one pass.
        run = origin_run(todo, origin_max) if range_ok else sorted(todo)
        if not run:
            break
        plan.origin.append(run)
        for index in run:
            needed &= ~(1 << index)
    holders = list(holders)
    active = peer_runs
    peer_max = run_pieces(piece_length, limits.run_bytes)
    per_peer = limits.per_peer_requests if len(holders) > 1 else limits.lone_peer_requests
    for holder in holders:
        if active >= limits.peer_requests or not needed:
            break
        requests = holder.requests
        while requests < per_peer and active < limits.peer_requests:
            run = peer_run(needed & holder.have & hashed, peer_max, rng)
            if not run:
                if needed & holder.have & ~hashed:
                    plan.want_hashes = True
                break
            plan.peers.append((holder.peer_id, run))
            for index in run:
                needed &= ~(1 << index)
            requests += 1
            active += 1
    plan.want_leases = not direct and wants_leases(needed, leased)
    return plan
