"""``GET /v1/content/{id}``: a whole cached file by id, served by the daemon beside its piece routes.

Nodes syncing from this one's export fetch objects here and verify each one's digest. The cache store
decides (shoal.storage.cache_store: ``cached`` raises UsageError for an id that is not one, NotInCache for
an entry not on this node's disk); this module turns its errors into statuses, 400 and 404, in the plain
text replies of the piece routes beside it (shoal.peer.piece_http). Ranges and If-Range come from
FileResponse; its ETag (mtime and size) is stable, since a cached object never changes.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from shoal.core.errors import NotInCache, UsageError
from shoal.storage.cache_store import CacheStore


def content_route(store: CacheStore) -> web.RouteDef:
    async def content(request: web.Request) -> web.StreamResponse:
        try:
            entry = await asyncio.to_thread(store.cached, request.match_info["digest"])
        except UsageError as exc:
            raise web.HTTPBadRequest(reason=str(exc)) from None
        except NotInCache:
            raise web.HTTPNotFound(reason="not cached here") from None
        if await asyncio.to_thread(store.private, entry.digest):
            # Fetched with origin credentials: served to nobody (README, "Content behind credentials").
            raise web.HTTPNotFound(reason="not cached here")
        return web.FileResponse(store.object_path(entry.digest), chunk_size=1 << 20)

    return web.get("/v1/content/{digest}", content)
