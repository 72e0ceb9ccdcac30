"""Live pages: one snapshot a tick, shared by every viewer, pushed as server-sent events; and the static
files of the pages (shoal/web/, package data).

Rules, and why:

- **One snapshot a tick, whatever the number of viewers.** :class:`LiveFeed` computes a snapshot at most
  once per ``period`` and encodes it once; every stream and every ``GET`` of the snapshot in that tick
  gets the same bytes. A hundred open pages cost the service what one costs, plus the writes.
- **Nothing ticks while nobody looks.** The feed's loop runs only while a stream is open; a ``GET`` computes
  a snapshot when the last one is older than a period.
- **A slow viewer only skips snapshots.** Each stream sends the latest snapshot when it is ready for
  another, so none queues behind a slow reader, and the server's write timeout (shoal.http.limits) drops a
  reader that stopped.
- **Streams end when the service stops.** An open page would otherwise hold the server's shutdown for its
  grace period; the browser's EventSource reconnects by itself (``retry``).
- The stream is ``text/event-stream`` (the WHATWG HTML standard, 9.2): one ``data:`` line a snapshot (JSON
  never holds a raw newline), and a comment line as it opens, so proxies pass the headers on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

log = logging.getLogger("shoal.http.live")

RETRY_MS = 3000
"""How soon a browser reconnects a stream that ended (the SSE ``retry`` field)."""
ASSETS = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
"""The static files a page may use, by suffix; nothing else under shoal/web/ is served."""
_PAGE_HEADERS = {
    # The pages load only their own files: no script or style from anywhere else runs in them.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class LiveFeed:
    """Snapshots of ``compute`` (a struct), one per ``period`` seconds at most, encoded once and shared."""

    def __init__(
        self,
        compute: Callable[[], Awaitable[Any]],
        *,
        period: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.compute = compute
        self.period = period
        self.clock = clock
        self.viewers = 0
        self.computed = 0
        """Snapshots computed since the start (whatever the number of viewers)."""
        self._latest: tuple[float, bytes] | None = None
        self._pending: asyncio.Future[bytes] | None = None
        self._changed = asyncio.Event()
        """Set (and replaced) when a new snapshot is ready, or the feed closes."""
        self._loop: asyncio.Task[None] | None = None
        self._closing = False

    async def snapshot(self) -> bytes:
        """The latest snapshot's JSON, computed afresh when it is older than a period; callers arriving
        while it is computed share that computation."""
        latest = self._latest
        if latest is not None and self.clock() - latest[0] < self.period:
            return latest[1]
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._compute())
        pending = self._pending
        try:
            return await asyncio.shield(pending)
        finally:
            if self._pending is pending and pending.done():
                self._pending = None

    async def _compute(self) -> bytes:
        body = msgspec.json.encode(await self.compute())
        self._latest = (self.clock(), body)
        self.computed += 1
        self._wake()
        return body

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _tick_forever(self) -> None:
        while True:
            try:
                await self.snapshot()
            except Exception:  # one bad tick must not end the feed: the next one tries again
                log.exception("computing a live snapshot failed")
            await asyncio.sleep(self.period)

    def _watch(self) -> None:
        self.viewers += 1
        if self._loop is None:
            self._loop = asyncio.create_task(self._tick_forever())

    def _unwatch(self) -> None:
        self.viewers -= 1
        if self.viewers == 0 and self._loop is not None:
            self._loop.cancel()
            self._loop = None

    async def _next(self, seen: bytes | None) -> bytes | None:
        """The next snapshot other than ``seen``; None once the feed closes."""
        while not self._closing:
            latest = self._latest
            if latest is not None and latest[1] is not seen:
                return latest[1]
            await self._changed.wait()
        return None

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Serve the feed to one viewer as server-sent events until it leaves or the feed closes."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(f": shoal live feed\nretry: {RETRY_MS}\n\n".encode())
        self._watch()
        try:
            seen: bytes | None = None
            while (body := await self._next(seen)) is not None:
                await response.write(b"data: " + body + b"\n\n")
                seen = body
        except ConnectionResetError:
            pass  # the viewer left while a snapshot was being written
        finally:
            self._unwatch()
        return response

    async def close(self) -> None:
        """End every stream (the service is stopping) and the ticks."""
        self._closing = True
        self._wake()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None


def asset(name: str) -> bytes:
    """A file of shoal/web/ (package data); FileNotFoundError for one that is not there."""
    return resources.files("shoal.web").joinpath(name).read_bytes()


def asset_handler() -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler serving ``{name}`` from shoal/web/: only names of ASSETS's kinds, never a path."""

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in ASSETS:
            raise web.HTTPNotFound()
        try:
            body = asset(name)
        except (FileNotFoundError, IsADirectoryError):
            raise web.HTTPNotFound() from None
        return web.Response(body=body, content_type=ASSETS[suffix], headers=_PAGE_HEADERS)

    return handler


def page(name: str) -> web.Response:
    """The HTML page ``name`` of shoal/web/."""
    return web.Response(body=asset(name), content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


def closed_page(reason: str, status: int = 401) -> web.Response:
    """A plain page saying why a dashboard is not readable here (no data, no script)."""
    body = (
        "<!doctype html><meta charset=utf-8><title>Shoal dashboard</title>"
        f"<body style='font-family:system-ui;margin:3rem'><h1>Shoal dashboard</h1><p>{reason}</p>"
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=_PAGE_HEADERS)
