"""The daemon's control API, on a Unix socket only this user can reach (mode 0600, and the peer's
credentials checked with SO_PEERCRED on every request).

    POST /v1/get      {"url", "dest_dir", "name", "headers"?, "digest"?}   place a file, fetching it if needed
    POST /v1/warm     {"target": URL | ID}                                 fetch into the cache, place nothing
    GET  /v1/status                                                        usage, downloads, seeded tasks

``get`` and ``warm`` answer with newline-delimited JSON: ``{"progress": {...}}`` lines every 0.2 s while
the swarm works, then one ``{"result": {...}}`` or ``{"error": {"message", "exit_code"}}``. Other errors
are one JSON object with a 4xx status.

The destination is given as the directory the user named and a file name: a name with a slash, ``.``
or ``..``, or a directory that is not an existing absolute directory, is refused, so a request can never
place a file outside the directory the user gave.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.core.download import Stats
from shoal.core.errors import NotInCache, ShoalError, UsageError
from shoal.daemon.fetcher import Fetch, Fetcher
from shoal.http.json_api import json_error
from shoal.peer.request import parse_headers
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_store import CacheStore

PROGRESS_SECONDS = 0.2
# Whole digests only: the digest is what the placed file must match, not a cache id to look up, so a
# prefix (which cache ids accept) would weaken the check.
_DIGEST = re.compile(r"^(sha256|blake3):[0-9a-f]{64}\Z", re.IGNORECASE)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def destination(body: dict[str, Any]) -> Path:
    """The file a request may write: ``name`` inside ``dest_dir``, and nowhere else."""
    dest_dir, name = body.get("dest_dir"), body.get("name")
    if not isinstance(dest_dir, str) or not isinstance(name, str):
        raise UsageError("dest_dir and name are required strings")
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


def _stats(stats: Stats) -> dict[str, int]:
    return {
        "total": stats.total,
        "done": stats.done,
        "from_origin": stats.from_origin,
        "from_peers": stats.from_peers,
        "peers": stats.peers,
    }


class Control:
    """The control API's handlers over the daemon's store and fetcher."""

    def __init__(self, store: CacheStore, fetcher: Fetcher, status: Callable[[], dict[str, Any]]) -> None:
        self.store = store
        self.fetcher = fetcher
        self.status = status

    def app(self) -> web.Application:
        app = web.Application(middlewares=[same_user_only], client_max_size=1 << 20)
        app.router.add_post("/v1/get", self._get)
        app.router.add_post("/v1/warm", self._warm)
        app.router.add_get("/v1/status", self._status)
        return app

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise UsageError("the body must be JSON") from None
        if not isinstance(body, dict):
            raise UsageError("the body must be a JSON object")
        return body

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _get(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        url = body.get("url")
        if not isinstance(url, str):
            raise UsageError("url is required")
        dest = destination(body)
        headers = parse_headers(body.get("headers") or {})
        digest = body.get("digest")
        if digest is not None and (not isinstance(digest, str) or not _DIGEST.match(digest)):
            raise UsageError("digest must be sha256:HEX or blake3:HEX (64 hex digits)")
        started = time.monotonic()

        async def run(progress: Callable[[Stats], Awaitable[None]]) -> dict[str, Any]:
            def follow(fetch: Fetch) -> Awaitable[CacheEntry]:
                return self._follow(fetch, progress)

            entry, fetch = await self.fetcher.obtain(url, headers=headers, expected=digest, follow=follow)
            try:
                entry, linked = await asyncio.to_thread(self.store.place, entry.digest, dest)
            except NotInCache:
                if fetch is not None:
                    raise
                # A hit damaged on disk was removed by place's check: fetch it again.
                entry, fetch = await self.fetcher.obtain(url, headers=headers, expected=digest, follow=follow)
                entry, linked = await asyncio.to_thread(self.store.place, entry.digest, dest)
            return {
                "path": str(dest),
                "size": entry.size,
                "digest": entry.digest,
                "sha256": entry.sha256 or None,  # None: still pending (see fetcher)
                "hit": fetch is None,
                "linked": linked,
                "bytes_from_origin": fetch.stats.from_origin if fetch else 0,
                "bytes_from_peers": fetch.stats.from_peers if fetch else 0,
                "seconds": time.monotonic() - started,
            }

        return await self._stream(request, run)

    async def _warm(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise UsageError("target (a URL or a cache id) is required")

        async def run(progress: Callable[[Stats], Awaitable[None]]) -> dict[str, Any]:
            entry = await self.fetcher.warm(target, lambda fetch: self._follow(fetch, progress))
            return {"entry": entry.to_json()}

        return await self._stream(request, run)

    async def _follow(self, fetch: Fetch, progress: Callable[[Stats], Awaitable[None]]) -> CacheEntry:
        return await fetch.follow(progress, PROGRESS_SECONDS)

    async def _stream(
        self, request: web.Request, run: Callable[[Callable[[Stats], Awaitable[None]]], Awaitable[dict[str, Any]]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def progress(stats: Stats) -> None:
            await response.write(json.dumps({"progress": _stats(stats)}).encode() + b"\n")

        try:
            line: dict[str, Any] = {"result": await run(progress)}
        except ShoalError as exc:
            line = {"error": {"message": str(exc), "kind": type(exc).__name__, "exit_code": exc.exit_code}}
        await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
        return response
