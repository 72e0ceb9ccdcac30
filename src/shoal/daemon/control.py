"""The daemon's control API, on a Unix socket only this user can reach (mode 0600, and the peer's
credentials checked with SO_PEERCRED on every request).

    POST /v1/get           {"url", "dest_dir", "name", "headers"?, "digest"?,   place a file, fetching it if needed
                            "ignore_qp"?, "no_origin"?}
    POST /v1/warm          {"target": URL | ID}                                 fetch into the cache, place nothing
    GET  /v1/status                                                             usage, downloads, seeded tasks, pools
    POST /v1/pools         {"name", "token"?}                                   join a pool until the daemon stops
    DELETE /v1/pools/NAME                                                       leave it until the daemon stops
    GET  /v1/openapi.json                                                       this API's OpenAPI document

Each body and reply is a struct of shoal.daemon.messages, and ``ROUTES`` names them; the OpenAPI document
is generated from those, so it describes exactly what the handlers accept.

``get`` and ``warm`` answer with newline-delimited JSON: ``{"progress": {...}}`` lines every 0.2 s while
the swarm works, then one ``{"result": {...}}`` or ``{"error": {"message", "kind", "exit_code"}}``. Other
errors are one JSON object ``{"error": "..."}`` with a 4xx status (400 a malformed request, 403 another
user).

The destination is given as the directory the user named and a file name: a name with a slash, ``.``
or ``..``, or a directory that is not an existing absolute directory, is refused, so a request can never
place a file outside the directory the user gave.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from shoal import __version__
from shoal.core.download_values import Stats
from shoal.core.errors import NotInCache, ShoalError, TrackerUnavailable, UsageError
from shoal.daemon.config import PoolSpec
from shoal.daemon.fetcher import Fetch, Fetcher, FetchOptions
from shoal.daemon.messages import (
    DaemonStatus,
    EntryView,
    FetchFailure,
    FetchProgress,
    GetLine,
    GetRequest,
    JoinPool,
    Placed,
    PoolMembership,
    Warmed,
    WarmLine,
    WarmRequest,
)
from shoal.daemon.pools import Memberships
from shoal.http import openapi
from shoal.http.json_api import json_error, json_errors, read_struct, struct_response
from shoal.http.openapi import Route
from shoal.peer.request import parse_headers
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_store import CacheStore

log = logging.getLogger("shoal.daemon.control")

PROGRESS_SECONDS = 0.2
NDJSON = "application/x-ndjson"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Follow = Callable[[Stats], Awaitable[None]]
_encode = msgspec.json.Encoder().encode


def peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


@web.middleware
async def same_user_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Defence in depth behind the socket's 0600 mode: only this user (or root) may ask."""
    uid = peer_uid(request)
    if uid is None or uid not in (0, os.geteuid()):
        return json_error(403, "only the daemon's user may use its control socket")
    try:
        return await handler(request)
    except UsageError as exc:
        return json_error(400, str(exc))
    # A malformed body (a ProtocolError naming the field) and anything unexpected: the shared json_errors
    # middleware outside this one.


def destination(body: GetRequest) -> Path:
    """The file a request may write: ``name`` inside ``dest_dir``, and nowhere else."""
    dest_dir, name = body.dest_dir, body.name
    if not os.path.isabs(dest_dir) or os.path.normpath(dest_dir) != dest_dir.rstrip("/") or "\0" in dest_dir:
        raise UsageError(f"dest_dir must be an absolute, normalised path, not {dest_dir!r}")
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UsageError(f"refusing to write {name!r}: it is not a plain file name inside {dest_dir}")
    directory = Path(dest_dir)
    if not directory.is_dir():
        raise UsageError(f"destination directory {dest_dir} does not exist")
    target = directory / name
    if target.is_dir():
        raise UsageError(f"{target} is a directory")
    return target


def _progress(stats: Stats) -> FetchProgress:
    return FetchProgress(stats.total, stats.done, stats.from_origin, stats.from_peers, stats.peers)


class Control:
    """The control API's handlers over the daemon's store and fetcher."""

    def __init__(
        self,
        store: CacheStore,
        fetcher: Fetcher,
        status: Callable[[], DaemonStatus],
        pools: Memberships | None = None,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.status = status
        self.pools = pools
        """None: the daemon has no tracker, so no pools."""

    def app(self) -> web.Application:
        middlewares = [json_errors(log), same_user_only]
        app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
        handlers: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/get"): self._get,
            ("POST", "/v1/warm"): self._warm,
            ("GET", "/v1/status"): self._status,
            ("POST", "/v1/pools"): self._join,
            ("DELETE", "/v1/pools/{pool}"): self._leave,
        }
        for route in ROUTES:
            app.router.add_route(route.method, route.path, handlers[route.method, route.path])
        openapi.serve(app, openapi_document())
        return app

    async def _status(self, request: web.Request) -> web.Response:
        return struct_response(self.status())

    async def _get(self, request: web.Request) -> web.StreamResponse:
        body = await read_struct(request, GetRequest)
        url, digest = body.url, body.digest
        dest = destination(body)
        headers = parse_headers(body.headers or {})
        options = FetchOptions(tuple(body.ignore_qp), body.no_origin)
        started = time.monotonic()

        async def run(progress: Follow) -> Placed:
            def follow(fetch: Fetch) -> Awaitable[CacheEntry]:
                return self._follow(fetch, progress)

            entry, fetch = await self.fetcher.obtain(
                url, headers=headers, expected=digest, follow=follow, share=body.share, options=options
            )
            try:
                entry, linked = await asyncio.to_thread(self.store.place, entry.digest, dest)
            except NotInCache:
                if fetch is not None:
                    raise
                # A hit damaged on disk was removed by place's check: fetch it again.
                entry, fetch = await self.fetcher.obtain(
                    url, headers=headers, expected=digest, follow=follow, share=body.share, options=options
                )
                entry, linked = await asyncio.to_thread(self.store.place, entry.digest, dest)
            return Placed(
                path=str(dest),
                size=entry.size,
                digest=entry.digest,
                sha256=entry.sha256 or None,  # None: still pending (see fetcher)
                hit=fetch is None,
                linked=linked,
                bytes_from_origin=fetch.stats.from_origin if fetch else 0,
                bytes_from_peers=fetch.stats.from_peers if fetch else 0,
                seconds=time.monotonic() - started,
            )

        return await self._stream(request, run, GetLine)

    async def _warm(self, request: web.Request) -> web.StreamResponse:
        target = (await read_struct(request, WarmRequest)).target

        async def run(progress: Follow) -> Warmed:
            entry = await self.fetcher.warm(target, lambda fetch: self._follow(fetch, progress))
            return Warmed(msgspec.convert(entry.to_json(), EntryView))

        return await self._stream(request, run, WarmLine)

    def _memberships(self) -> Memberships:
        if self.pools is None:
            raise UsageError("this daemon has no tracker, and pools live on one: start it with --tracker")
        return self.pools

    async def _join(self, request: web.Request) -> web.Response:
        body = await read_struct(request, JoinPool)
        pools = self._memberships()
        try:
            changed = await pools.join(PoolSpec(body.name, body.token))
        except TrackerUnavailable as exc:
            return json_error(503, f"cannot join pool {body.name}: {exc}")
        log.info("pool %s: %s at runtime", body.name, "joined" if changed else "already a member")
        return struct_response(PoolMembership(body.name, changed, pools.names))

    async def _leave(self, request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        pools = self._memberships()
        await pools.leave(name)
        log.info("pool %s: left at runtime", name)
        return struct_response(PoolMembership(name, True, pools.names))

    async def _follow(self, fetch: Fetch, progress: Follow) -> CacheEntry:
        return await fetch.follow(progress, PROGRESS_SECONDS)

    async def _stream(
        self, request: web.Request, run: Callable[[Follow], Awaitable[Any]], line: Callable[..., msgspec.Struct]
    ) -> web.StreamResponse:
        """Answer ``run``'s progress and then its result or error, each a ``line`` (GetLine or WarmLine)."""
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)

        async def progress(stats: Stats) -> None:
            await response.write(_encode(line(progress=_progress(stats))) + b"\n")

        try:
            last = line(result=await run(progress))
        except ShoalError as exc:
            last = line(error=FetchFailure(str(exc), exc.exit_code, type(exc).__name__))
        await response.write(_encode(last) + b"\n")
        await response.write_eof()
        return response


ROUTES = (
    Route(
        "POST",
        "/v1/get",
        "place a file, fetching it into the cache if needed; each line of the reply is one GetLine",
        request=GetRequest,
        response=GetLine,
        media=NDJSON,
    ),
    Route(
        "POST",
        "/v1/warm",
        "fetch into the cache (and seed), placing nothing; each line of the reply is one WarmLine",
        request=WarmRequest,
        response=WarmLine,
        media=NDJSON,
    ),
    Route("GET", "/v1/status", "what the daemon serves and holds", response=DaemonStatus),
    Route(
        "POST",
        "/v1/pools",
        "join a pool of the daemon's tracker until the daemon stops (the tracker must take the member)",
        request=JoinPool,
        response=PoolMembership,
    ),
    Route("DELETE", "/v1/pools/{pool}", "leave a pool until the daemon stops", response=PoolMembership),
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of the control API, from the structs its handlers read and write."""
    return openapi.document("Shoal daemon control API", __version__, ROUTES, description=__doc__ or "")
