"""``GET /v1/content/{id}``: a whole cached file by id, served by the daemon beside its piece routes.

Nodes syncing from this one's export fetch objects here and verify each one's digest. The cache store
decides (shoal.storage.cache_store: ``cached`` raises UsageError for an id that is not one, NotInCache for
an entry not on this node's disk); this module turns its errors into statuses, 400 and 404, in the plain
text replies of the piece routes beside it (shoal.peer.piece_http). Ranges and If-Range come from
FileResponse; its ETag (mtime and size) is stable, since a cached object never changes.

With a fleet token, a request must carry the fleet's request credential (``X-Shoal-Fleet``, core.tickets),
the one every request to the tracker carries: a file is not a task here (an export names it by its
BLAKE3, not by a task a ticket could admit to), and whoever holds the token may join any task anyway, so
proving to hold the token is what being one of the fleet means. Without it, a 403 before the id is looked
at: a stranger learns nothing, not even whether the file is cached here. Under mutual TLS the handshake
has already checked the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from shoal.core.errors import CredentialRefused, NotInCache, UsageError
from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.storage.cache_store import CacheStore


def content_route(
    store: CacheStore, fleet_key: FleetKey | None = None, *, clock: Callable[[], float] = time.time
) -> web.RouteDef:
    """The route serving ``store``'s cached files; with ``fleet_key``, to holders of the fleet's token only."""

    async def content(request: web.Request) -> web.StreamResponse:
        if fleet_key is not None:
            try:
                fleet_key.check_credential(request.headers.get(FLEET_HEADER), clock())
            except CredentialRefused as exc:
                raise web.HTTPForbidden(reason=str(exc)) from None
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
