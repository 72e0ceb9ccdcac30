"""The node cache as a Python API (cloud-manager's model): ``shoal.Cache``.

::

    with shoal.Cache("/var/cache/shoal/index.sqlite", "/var/cache/shoal", "20G") as cache:
        digest = cache.put("model.bin")
        cache.warm_up("https://origin/release.tar")       # through the swarm, with tracker=...
        path = cache.download(digest)                      # the verified cached file

It works on the same store as ``shoal daemon`` and ``shoal cache`` (several processes may open one cache).
Fetching (``warm_up``, ``download`` of an id not on disk) runs the swarm download in this process; it
does not seed afterwards: that is the daemon's job.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import aiohttp

from shoal.core.errors import UsageError
from shoal.core.ids import PeerIdentity
from shoal.core.units import parse_size
from shoal.daemon.config import DaemonConfig
from shoal.daemon.fetcher import Fetch, Fetcher
from shoal.peer.server import PieceServer
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_store import CacheStore


class Cache:
    """A bounded, content-addressed local cache. Ids are BLAKE3 digests (bare or ``blake3:HEX``) or
    ``sha256:HEX``, or a unique prefix of either of at least 8 hex digits."""

    def __init__(
        self,
        index_path: str | os.PathLike[str],
        storage_dir: str | os.PathLike[str],
        capacity: int | str | None = None,
        *,
        tracker: str | None = None,
    ) -> None:
        if isinstance(capacity, str):
            capacity = parse_size(capacity)
        self._store = CacheStore(Path(index_path), Path(storage_dir), capacity)
        self.tracker = tracker if tracker is not None else os.environ.get("SHOAL_TRACKER") or None
        self._open = False

    def __enter__(self) -> Cache:
        self._store.__enter__()
        self._store.reconcile()
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._store.__exit__()
            self._open = False

    def put(self, path: str | os.PathLike[str], *, pin: bool = False) -> str:
        """Copy a file into the cache; its id."""
        return self._store.put(Path(path), pin=pin).digest

    def warm_up(self, id_or_url: str) -> str:
        """Make sure a URL's file or an id is cached (fetching it through the swarm if not); its id."""
        return asyncio.run(self._warm(id_or_url)).digest

    def download(self, ident: str) -> Path:
        """The path of the cached, verified file for an id, fetching it first if it is not on disk."""
        digest = self.warm_up(ident)
        with self._store.using(digest) as (_, path):
            return path

    def exists(self, ident: str) -> bool:
        """True when the cache knows the id: on disk, or known from an import or before an eviction."""
        return self._store.lookup(ident) is not None

    def on_cache(self, ident: str) -> bool:
        """True when the id's file is on this node's disk."""
        entry = self._store.lookup(ident)
        return entry is not None and entry.cached

    def usage_ratio(self) -> float:
        return self._store.usage().ratio

    def info(self, ident: str) -> CacheEntry:
        return self._store.info(ident)

    async def _warm(self, target: str) -> CacheEntry:
        if not self._open:
            raise UsageError("the cache is closed")
        store = self._store
        config = DaemonConfig(cache_dir=store.storage, capacity=store.capacity, tracker=self.tracker)
        server = PieceServer()
        if self.tracker:
            await server.start(config.listen_host, config.listen_port)
        try:
            async with aiohttp.ClientSession(auto_decompress=False, read_bufsize=1 << 20) as session:
                fetcher = Fetcher(
                    config,
                    store,
                    session,
                    server,
                    None,
                    identity=PeerIdentity.from_secret(secrets.token_hex(16), "cache"),
                )
                try:
                    return await fetcher.warm(target, _result)
                finally:
                    await fetcher.stop()
        finally:
            await server.stop()


async def _result(fetch: Fetch) -> CacheEntry:
    return await fetch.result
