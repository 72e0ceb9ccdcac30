"""The node cache as a Python API (cloud-manager's model): ``shoal.Cache``.

::

    cache = shoal.Cache("/var/cache/shoal/index.sqlite", "/var/cache/shoal", "20G")
    digest = cache.put("model.bin")                    # or cache.upload(...), cloud-manager's name
    cache.warm_up("https://origin/release.tar")        # through the swarm, with tracker=...
    path = cache.download(digest)                      # the verified cached file
    cache.close()

The cache opens on first use and ``close()`` closes it (again and again, harmlessly); a closed cache opens
again on its next use, so an object may live as long as the process, as cloud-manager's do. ``with`` closes
it at the end of the block. One object may be used from several threads, as the store it wraps.

It works on the same store as ``shoal daemon`` and ``shoal cache`` (several processes may open one cache).
Fetching (``warm_up``, ``download`` of an id not on disk) runs the swarm download in this process; it
does not seed afterwards: that is the daemon's job.

In a fleet with credentials it takes ``shoal daemon``'s (``fleet_token_file``, default
``$SHOAL_FLEET_TOKEN_FILE``; ``ca``, ``tls_cert``, ``tls_key``, ``tls_client_ca``), read by the same loader
(shoal.http.credentials.load) at each fetch, so a rolled token file is taken at the next one: its requests
to the tracker carry the fleet's credential, it asks peers with the tickets the tracker gives it, and its
piece server (it serves what it holds while it fetches) asks every peer for its ticket.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import aiohttp

from shoal.core.errors import UsageError
from shoal.core.ids import PeerIdentity
from shoal.core.units import parse_size
from shoal.daemon.config import DaemonConfig
from shoal.daemon.fetcher import Fetch, Fetcher
from shoal.http.credentials import Credentials, load
from shoal.peer.server import PieceServer, ServerConfig
from shoal.storage import cache_sync
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_reconcile import reconcile
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
        fleet_token_file: str | os.PathLike[str] | None = None,
        ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_client_ca: str | os.PathLike[str] | None = None,
    ) -> None:
        """``fleet_token_file`` and the TLS files are ``shoal daemon``'s options of the same names (the
        module's docstring); none: a trusted LAN."""
        if isinstance(capacity, str):
            capacity = parse_size(capacity)
        self._store = CacheStore(Path(index_path), Path(storage_dir), capacity)
        self.tracker = tracker if tracker is not None else os.environ.get("SHOAL_TRACKER") or None
        self._fleet = (fleet_token_file, ca, tls_cert, tls_key, tls_client_ca)
        self._open = False
        self._lock = threading.Lock()

    def __enter__(self) -> Cache:
        self._opened()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _opened(self) -> CacheStore:
        """The store, opened (and reconciled with its files) if it is not open yet."""
        with self._lock:
            if not self._open:
                self._store.__enter__()
                try:
                    reconcile(self._store)
                except BaseException:
                    self._store.__exit__()
                    raise
                self._open = True
        return self._store

    def close(self) -> None:
        """Close the index; the next use opens it again. Closing a closed cache does nothing."""
        with self._lock:
            if self._open:
                self._store.__exit__()
                self._open = False

    def put(self, path: str | os.PathLike[str], *, pin: bool = False) -> str:
        """Copy a file into the cache; its id."""
        return self._opened().put(Path(path), pin=pin).digest

    upload = put
    """cloud-manager's name for :meth:`put`."""

    def warm_up(self, id_or_url: str) -> str:
        """Make sure a URL's file or an id is cached (fetching it through the swarm if not); its id."""
        self._opened()
        return asyncio.run(self._warm(id_or_url)).digest

    def download(self, ident: str) -> Path:
        """The path of the cached, verified file for an id, fetching it first if it is not on disk."""
        digest = self.warm_up(ident)
        with self._opened().using(digest) as (_, path):
            return path

    def exists(self, ident: str) -> bool:
        """True when the cache knows the id: on disk, known from an import (a cloud-manager dump's files by
        their ``sha256:`` id) or from before an eviction."""
        store = self._opened()
        return store.lookup(ident) is not None or store.known_only(ident) is not None

    def on_cache(self, ident: str) -> bool:
        """True when the id's file is on this node's disk."""
        entry = self._opened().lookup(ident)
        return entry is not None and entry.cached

    def usage_ratio(self) -> float:
        return self._opened().usage().ratio

    def used_space(self) -> int:
        """Bytes of the cached files (not counting space promised to downloads in progress)."""
        return self._opened().usage().used

    def capacity(self) -> int:
        """The cache's capacity in bytes."""
        return self._opened().capacity

    def info(self, ident: str) -> CacheEntry:
        return self._opened().info(ident)

    def data_dump(self, limit: int | None = None) -> str | None:
        """The cache's entries as the JSON text of ``shoal cache export`` (oldest first), for another node's
        :meth:`data_load`. ``limit``: at most this many bytes, with as many whole files as fit (as
        cloud-manager's ``data_dump(data_limit)``); None when there is no file to dump (or none fits)."""
        store = self._opened()
        doc = cache_sync.export(store, node=store.index.get_meta("node") or "")
        files: list[Any] = doc["files"]  # type: ignore[assignment]
        if not files:
            return None
        if limit is None:
            return json.dumps(doc, separators=(",", ":"))
        size = len(json.dumps({**doc, "files": []}, separators=(",", ":")).encode())
        kept = 0
        for f in files:
            size += len(json.dumps(f, separators=(",", ":")).encode()) + (1 if kept else 0)
            if size > limit:
                break
            kept += 1
        return json.dumps({**doc, "files": files[:kept]}, separators=(",", ":")) if kept else None

    def data_load(self, doc: str | bytes | dict[str, Any] | list[Any]) -> int:
        """Record what another node holds: Shoal's export (:meth:`data_dump`, ``shoal cache export``) or
        cloud-manager's dump, as JSON text or as JSON reads it. All or nothing (a UsageError names the bad
        entry); the number of new entries."""
        if isinstance(doc, str | bytes):
            try:
                doc = json.loads(doc)
            except ValueError as exc:
                raise UsageError(f"cannot import: not JSON ({exc}); nothing was imported") from None
        return cache_sync.import_document(self._opened(), doc)[1]

    def credentials(self) -> Credentials:
        """The fleet's credentials from this cache's options, read now (a UsageError names a file that
        cannot be used)."""
        token_file, ca, cert, key, client_ca = (None if v is None else os.fspath(v) for v in self._fleet)
        return load(token_file, ca=ca, cert=cert, key=key, client_ca=client_ca)

    async def _warm(self, target: str) -> CacheEntry:
        store = self._opened()
        credentials = self.credentials()
        config = DaemonConfig(
            cache_dir=store.storage, capacity=store.capacity, tracker=self.tracker, credentials=credentials
        )
        server = PieceServer(ServerConfig(fleet_key=credentials.key, tls=credentials.server_ssl))
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
