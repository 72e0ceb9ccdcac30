"""The daemon's /metrics, served by its piece server (shoal.http.metrics): its cache, and its side of the swarm.

All read at scrape time: the cache's usage from its index (a query, run in a thread before the scrape), its
evictions from the store, hits and misses and the bytes by source from the fetcher, bytes served from the
piece server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.registry import Collector

from shoal.http.metrics import Metrics, by_source, counter, counter_by, gauge
from shoal.storage.cache_store import CacheStore, Usage

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from shoal.daemon.fetcher import Fetcher
    from shoal.daemon.seeding import Seeding
    from shoal.peer.server import PieceServer


class CacheCollector(Collector):
    """The node cache: its usage (read by :meth:`refresh`), evictions, hits and misses."""

    def __init__(self, store: CacheStore, fetcher: Fetcher) -> None:
        self.store = store
        self.fetcher = fetcher
        self.usage = Usage(0, 0, 0, 0)

    async def refresh(self) -> None:
        self.usage = await asyncio.to_thread(self.store.usage)

    def collect(self) -> Iterator[Metric]:
        usage, fetcher = self.usage, self.fetcher
        yield gauge("shoal_cache_used_bytes", "Bytes of the files in the cache.", usage.used)
        yield gauge("shoal_cache_reserved_bytes", "Bytes promised to downloads in progress.", usage.reserved)
        yield gauge("shoal_cache_capacity_bytes", "The cache's capacity (--capacity).", usage.capacity)
        yield gauge("shoal_cache_files", "Files in the cache.", usage.files)
        yield counter(
            "shoal_cache_evictions", "Files evicted (least recently used first) to make room.", self.store.evictions
        )
        yield counter("shoal_cache_hits", "Requests for a file answered from the cache.", fetcher.hits)
        yield counter("shoal_cache_misses", "Requests for a file the cache did not hold, so fetched.", fetcher.misses)


class PeerCollector(Collector):
    """The daemon's side of the swarm: what it took in by source, what it served, what it seeds."""

    def __init__(self, fetcher: Fetcher, server: PieceServer, seeding: Seeding | None) -> None:
        self.fetcher = fetcher
        self.server = server
        self.seeding = seeding

    def collect(self) -> Iterator[Metric]:
        yield counter_by(
            "shoal_peer_received_bytes",
            "Bytes downloads took in, by source: the origin, a peer in this host's rack, in another rack of its "
            "site, in another site, or unlabelled (no rack label on either side).",
            "source",
            by_source(self.fetcher.received()),
        )
        yield counter(
            "shoal_peer_served_bytes", "Bytes of verified pieces sent to other peers.", self.server.served_bytes
        )
        yield gauge("shoal_peer_uploads", "Piece responses being sent now.", self.server.uploads)
        yield gauge("shoal_peer_downloads", "Downloads into the cache running now.", self.fetcher.downloading())
        yield gauge("shoal_peer_tasks_served", "Tasks whose pieces the piece server serves.", len(self.server.tasks))
        seeding = len(self.seeding.task_ids) if self.seeding is not None else 0
        yield gauge("shoal_peer_tasks_seeded", "Cached tasks kept announced to the tracker.", seeding)


def install(
    metrics: Metrics, store: CacheStore, fetcher: Fetcher, server: PieceServer, seeding: Seeding | None
) -> None:
    """Report the daemon's figures through ``metrics`` (served by its piece server's ``GET /metrics``)."""
    cache = CacheCollector(store, fetcher)
    metrics.add(cache, refresh=cache.refresh)
    metrics.add(PeerCollector(fetcher, server, seeding))
