"""The daemon's whole-file route (daemon.content_http) on a real server over a real cache store: the store's
errors become statuses at this edge, and only here."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
from aiohttp import web

from shoal.daemon.content_http import content_route
from shoal.storage.cache_store import CacheStore
from shoal.testing.http import serving


async def test_the_route_serves_a_cached_file_and_answers_for_ids_it_cannot(tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    data = os.urandom(3000)
    source.write_bytes(data)
    with CacheStore(tmp_path / "index.db", tmp_path / "cache", 1 << 20) as store:
        kept = store.put(source)
        app = web.Application()
        app.router.add_routes([content_route(store)])
        async with serving(app) as url, aiohttp.ClientSession() as session:
            async with session.get(f"{url}/v1/content/{kept.digest}") as response:
                assert response.status == 200
                assert await response.read() == data
            async with session.get(f"{url}/v1/content/{kept.digest[:16]}", headers={"Range": "bytes=10-19"}) as r:
                assert r.status == 206
                assert await r.read() == data[10:20]
            async with session.get(f"{url}/v1/content/not-an-id") as response:
                assert response.status == 400
                assert "not a cache id" in (response.reason or "")
            async with session.get(f"{url}/v1/content/{'0' * 64}") as response:
                assert response.status == 404
            store.evict(kept.digest)  # still known to the index, no longer on this node's disk
            async with session.get(f"{url}/v1/content/{kept.digest}") as response:
                assert response.status == 404
                assert response.reason == "not cached here"
