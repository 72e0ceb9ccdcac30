"""A download's I/O tasks: fetch a run of pieces from the origin or from a peer, follow a peer's have stream.

Each runs as its own task and reads none of the download's state: it is given what it needs as values (the
manifest, the part file, the run, the hashes to verify against) and reports what happened through ``post``
as the events of :mod:`shoal.core.events`, ending every run with one ``RunEnded``. The owner loop
(:class:`shoal.peer.engine.Download`) is the only code that changes state in response.

Rules: a piece from the origin is hashed and written (its hash goes to the tracker before any peer may take
it); a piece from a peer is written only when it matches the hash it was fetched against, and a mismatch
ends the run as ``corrupt``. Hashing and writing run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from shoal.core.bitfield import Bitfield
from shoal.core.errors import OriginError, ShoalError
from shoal.core.events import Event, NoRange, OriginPiece, PeerGone, PeerHas, PeerPiece, RunEnded
from shoal.core.manifest import Manifest
from shoal.core.ranges import range_header
from shoal.peer.body import Buffers, PieceReader
from shoal.peer.origin import Origin
from shoal.storage.partfile import PartFile, piece_hash

log = logging.getLogger("shoal.peer")
PEER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=15)

READ_SIZE = 1 << 20
"""Bytes asked of each recv() on a piece transfer's connection; asyncio's default is 256 KiB. A lone
``shoal get`` from one peer on a fast link spends its event loop on the reads, so fewer, larger reads finish
it sooner and with less CPU; larger than 1 MiB gained nothing and held more memory
(benchmarks/single_peer.py; figures in benchmarks/RESULTS.md)."""


@dataclass(frozen=True, slots=True)
class PeerAccess:
    """What a request to another peer carries: its ticket for the task (``X-Shoal-Ticket``), and the
    ``ssl=`` of the fleet's TLS (peer.server; shoal.http.credentials)."""

    headers: Mapping[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | bool = True


NO_ACCESS = PeerAccess()

Post = Callable[[Event], None]
Throttle = Callable[[int], Awaitable[None]]
"""Awaited with a piece's size before it is read: the download rate limit."""


def _read_widely(resp: aiohttp.ClientResponse) -> None:
    """Let the body's connection read READ_SIZE bytes a call (``max_size`` of asyncio's selector transport,
    read by each of its reads; a transport without it is left alone)."""
    transport = resp.connection.transport if resp.connection is not None else None
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = READ_SIZE


async def fetch_origin(
    origin: Origin, manifest: Manifest, part: PartFile, run: list[int], post: Post, throttle: Throttle
) -> None:
    """Fetch a run of leased pieces (ascending) with one Range request; an origin that ignores Range is
    read whole.

    The run need not be contiguous: without Range support the engine asks for every piece it lacks, around
    the ones it holds. The request then spans from the run's first piece to its last, and the pieces between
    that are not in the run are read past, not kept."""
    first, last = run[0], run[-1]
    start, end = manifest.span(first, last - first + 1)
    pending = list(run)
    began = time.monotonic()
    try:
        async with origin.request(manifest, start, end) as resp:
            _read_widely(resp)
            if not origin.check(resp, manifest, start, end):
                post(NoRange())
                await _read_pieces(PieceReader(resp.content), manifest, part, 0, pending, post, throttle)
                post(RunEnded("origin", ()))
            else:
                await _read_pieces(PieceReader(resp.content), manifest, part, first, pending, post, throttle)
                rate = (end - start) / max(time.monotonic() - began, 1e-3)
                post(RunEnded("origin", (), rate=rate))
    except ShoalError as exc:
        post(RunEnded("origin", tuple(pending), exc))
    except (aiohttp.ClientError, asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
        error = OriginError(f"origin transfer failed: {exc or type(exc).__name__}", url=origin.url)
        post(RunEnded("origin", tuple(pending), error))


async def _read_pieces(
    reader: PieceReader,
    manifest: Manifest,
    part: PartFile,
    first: int,
    pending: list[int],
    post: Post,
    throttle: Throttle,
) -> None:
    """Read the body's pieces from ``first`` (the piece its first byte belongs to) up to the last pending
    one; hash and write those in ``pending``, taking each out of it as it is written."""
    wanted = set(pending)
    for index in range(first, max(wanted) + 1):
        size = manifest.piece_size(index)
        await throttle(size)
        data = await reader.read(size)
        if index in wanted:
            digest = await asyncio.to_thread(_hash_and_write, part, index, data)
            pending.remove(index)
            post(OriginPiece(index, digest, size))


async def fetch_peer(
    session: aiohttp.ClientSession,
    url: str,
    peer_id: str,
    manifest: Manifest,
    part: PartFile,
    run: list[int],
    hashes: Mapping[int, str],
    post: Post,
    throttle: Throttle,
    *,
    access: PeerAccess = NO_ACCESS,
) -> None:
    """Fetch a run from a peer's ``data`` URL, each piece verified against ``hashes`` before it is written."""
    start, end = manifest.span(run[0], len(run))
    pending = list(run)
    headers = {"Range": range_header(start, end), **access.headers}
    try:
        async with session.get(url, headers=headers, timeout=PEER_TIMEOUT, ssl=access.ssl) as resp:
            if resp.status == 503:
                post(RunEnded(peer_id, tuple(pending), busy=True))
                return
            if resp.status in (404, 409, 416):
                post(RunEnded(peer_id, tuple(pending), stale=True))
                return
            if resp.status == 403:
                # Our ticket was refused: not yet admitted, or it ran out. Like a busy peer, asked again later.
                log.info("peer %s refused our ticket: %s", peer_id, resp.reason)
                post(RunEnded(peer_id, tuple(pending), busy=True))
                return
            if resp.status != 206:
                raise OriginError(f"peer answered HTTP {resp.status}")
            _read_widely(resp)
            reader = PieceReader(resp.content)
            for index in run:
                size = manifest.piece_size(index)
                await throttle(size)
                data = await reader.read(size)
                expected = hashes.get(index)
                if expected is None:
                    # The tracker revoked the piece's hash meanwhile (core.audit): nothing to check it against.
                    post(RunEnded(peer_id, tuple(pending)))
                    return
                if not await asyncio.to_thread(_verify_and_write, part, index, data, expected):
                    post(RunEnded(peer_id, tuple(pending), corrupt=True))
                    return
                pending.remove(index)
                post(PeerPiece(peer_id, index, expected, size))
        post(RunEnded(peer_id, ()))
    except ShoalError as exc:
        post(RunEnded(peer_id, tuple(pending), exc))
    except (aiohttp.ClientError, asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
        error = ShoalError(f"peer transfer failed: {exc or type(exc).__name__}")
        post(RunEnded(peer_id, tuple(pending), error))


async def watch_haves(
    session: aiohttp.ClientSession,
    url: str,
    peer_id: str,
    manifest: Manifest,
    post: Post,
    *,
    access: PeerAccess = NO_ACCESS,
) -> None:
    """Follow a peer's have stream (its bitfield, then each piece it verifies) until it ends: then PeerGone."""
    try:
        async with session.get(url, headers=access.headers, timeout=PEER_TIMEOUT, ssl=access.ssl) as resp:
            if resp.status != 200:
                return
            async for line in resp.content:
                message = json.loads(line)
                if "bitfield" in message:
                    post(PeerHas(peer_id, Bitfield.decode(manifest.piece_count, message["bitfield"])))
                elif "have" in message:
                    post(PeerHas(peer_id, None, tuple(i for i in message["have"] if isinstance(i, int))))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError, ShoalError) as exc:
        log.debug("have stream of %s ended: %s", peer_id, exc)
    finally:
        post(PeerGone(peer_id))


def _hash_and_write(part: PartFile, index: int, data: Buffers) -> str:
    """Hash a piece fetched from the origin (its hash is not known yet) and write it."""
    digest = piece_hash(data)
    part.write(index, data)
    return digest


def _verify_and_write(part: PartFile, index: int, data: Buffers, expected: str) -> bool:
    """Write a piece from a peer only when it matches the tracker's hash."""
    if piece_hash(data) != expected:
        return False
    part.write(index, data)
    return True
