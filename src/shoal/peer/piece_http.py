"""The HTTP side of the piece server (see :mod:`shoal.peer.server` for the routes and their rules).

Kept apart so that a process imports aiohttp.web, a costly import, only when it starts serving: ``shoal
get`` binds its port first, announces it, and imports this once its first request is out (start-up is CPU
time when peers start together: benchmarks/swarm_lab.py; figures in benchmarks/RESULTS.md).

``ROUTES`` lists every route once, and ``GET /v1/openapi.json`` answers the OpenAPI document generated from
it, built at its first request so that a peer's start pays nothing for it. Errors are aiohttp's own: the
status and its reason in words (a downloader reads the status only).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from shoal import __version__
from shoal.core.errors import CredentialRefused, ProtocolError
from shoal.core.manifest import Manifest
from shoal.core.ranges import parse_piece_range
from shoal.core.tickets import TICKET_HEADER
from shoal.http import openapi
from shoal.http.json_api import struct_response
from shoal.http.limits import send_file, server_limits
from shoal.http.openapi import Query, Route
from shoal.peer import server as piece_server
from shoal.peer.messages import HavesLine, PeerHealth
from shoal.peer.server import PieceServer, ServedTask

MAX_UPLOAD_WAIT = 5.0
"""Seconds a rate-limited upload may wait for its turn before its headers go out; past that the asker gets
a 503. A downloader gives up on a peer that sends nothing for 15 s (``fetchers.PEER_TIMEOUT``)."""


class _PieceResponse(web.StreamResponse):
    """A 206 of whole pieces, sent with sendfile; frees its upload slot once sent.

    aiohttp sends a returned response after the handler, so the slot is released here. web.FileResponse would
    stat, open and close the file in the default executor on every request, two thread round trips for what
    is here a local file this process wrote (or a cache file it holds): it is opened inline instead. A peer
    of a swarm serves hundreds of runs of a few pieces, and each round trip wakes a thread on a busy host.
    """

    def __init__(self, served: ServedTask, start: int, end: int, manifest: Manifest, server: PieceServer) -> None:
        super().__init__(
            status=206,
            headers={
                hdrs.CONTENT_TYPE: "application/octet-stream",
                hdrs.CONTENT_RANGE: f"bytes {start}-{end - 1}/{manifest.length}",
            },
        )
        self.content_length = end - start
        self._served = served
        self._offset = start
        self._piece_length = manifest.piece_length
        self._limits = server.limits or server_limits()
        self._server: PieceServer | None = server

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        try:
            try:
                # The path as it is now, not as it was when the handler answered: a task handed over to a new
                # entry meanwhile (ServedTask.hand_over) is served from its new path.
                file = open(self._served.path, "rb", buffering=0)  # noqa: ASYNC230 (see the class docstring)
            except OSError:
                # The file went away between the check of the pieces and now (the task was evicted).
                self.set_status(404, "piece file is gone")
                del self.headers[hdrs.CONTENT_RANGE]
                self.content_length = 0
                return await super().prepare(request)
            with file:
                writer = await super().prepare(request)
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("connection lost")
                if self.content_length:  # sendfile refuses a count of 0
                    # In runs of whole pieces, each within its deadline: a reader that stalls frees its slot.
                    await send_file(
                        transport, file, self._offset, self.content_length, self._piece_length, self._limits
                    )
                    if self._server is not None:
                        self._server.served_bytes += self.content_length
                await super().write_eof()
                return writer
        finally:
            if self._server is not None:
                self._server.uploads -= 1
                self._server = None


class PieceRoutes:
    """The handlers of one PieceServer's routes."""

    def __init__(self, server: PieceServer) -> None:
        self.server = server

    def _served(self, request: web.Request) -> ServedTask:
        task_id = request.match_info["task_id"]
        if (key := self.server.config.fleet_key) is not None:
            try:
                key.check_ticket(request.headers.get(TICKET_HEADER), task_id, time.time())
            except CredentialRefused as exc:
                raise web.HTTPForbidden(reason=str(exc)) from None
        served = self.server.tasks.get(task_id)
        if served is None:
            raise web.HTTPNotFound(reason="task not served here")
        gen = request.query.get("gen", "")
        if gen != str(served.generation):
            raise web.HTTPConflict(reason=f"this peer serves generation {served.generation}")
        return served

    async def _data(self, request: web.Request) -> web.StreamResponse:
        served = self._served(request)
        try:
            first, count = parse_piece_range(request.headers.get("Range"), served.manifest)
        except ProtocolError as exc:
            raise web.HTTPRequestRangeNotSatisfiable(reason=str(exc)) from None
        if any(i not in served.have for i in range(first, first + count)):
            raise web.HTTPNotFound(reason="piece not held")
        if self.server.uploads >= self.server.config.max_uploads:
            raise web.HTTPServiceUnavailable(reason="too many uploads", headers={"Retry-After": "1"})
        self.server.uploads += 1  # released by _PieceResponse once sent, or below if we never get that far
        try:
            start, end = served.manifest.span(first, count)
            if self.server.bucket is not None:
                delay = self.server.bucket.reserve(end - start, time.monotonic())
                if delay > MAX_UPLOAD_WAIT:
                    # The asker would give up before a byte came (PEER_TIMEOUT), and an abandoned wait
                    # would still spend the budget: it goes elsewhere and asks again later instead.
                    self.server.bucket.refund(end - start)
                    retry = str(math.ceil(delay - MAX_UPLOAD_WAIT))
                    raise web.HTTPServiceUnavailable(reason="upload rate limit", headers={"Retry-After": retry})
                if delay:
                    await asyncio.sleep(delay)
                    if self.server.tasks.get(request.match_info["task_id"]) is not served:
                        # Withdrawn meanwhile (the download restarted): its file may be another version now.
                        raise web.HTTPNotFound(reason="task not served here")
            served.uploaded += end - start
            return _PieceResponse(served, start, end, served.manifest, self.server)
        except BaseException:
            self.server.uploads -= 1
            raise

    async def _haves(self, request: web.Request) -> web.StreamResponse:
        served = self._served(request)
        queue = served.watch()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            await response.prepare(request)
            await response.write(json.dumps({"bitfield": served.have.encode()}).encode() + b"\n")
            ended = False
            while not ended and (line := await queue.get()) is not None:
                # Lines that queued while the last write waited go out as one write.
                lines = [line]
                while not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    lines.append(more)
                await response.write(b"".join(lines))
        except ConnectionResetError:
            pass  # the watcher went away; nothing to clean up beyond the queue
        finally:
            served.unwatch(queue)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return struct_response(PeerHealth(ok=True, tasks=len(self.server.tasks), uploads=self.server.uploads))

    def app(self) -> web.Application:
        app = web.Application()
        handlers = {
            "/v1/tasks/{task_id}/data": self._data,
            "/v1/tasks/{task_id}/haves": self._haves,
            "/v1/health": self._health,
        }
        for route in ROUTES:
            app.router.add_get(route.path, handlers[route.path])
        app.router.add_routes(self.server.routes)
        openapi.serve(app, openapi_document)
        return app


_GEN = Query("gen", "the task's generation this peer serves; another is a 409", int, required=True)
ROUTES = (
    Route(
        "GET",
        "/v1/tasks/{task_id}/data",
        "whole verified pieces of the task, as a single Range (bytes=a-b) on the piece boundaries asks; sent with "
        "sendfile. 403 without a ticket admitting the asker to the task (with a fleet token), 404 a piece not "
        "held, 416 a range of no whole pieces, 503 with Retry-After past the uploads allowed or the upload rate",
        status=206,
        query=(_GEN,),
        media="application/octet-stream",
    ),
    Route(
        "GET",
        "/v1/tasks/{task_id}/haves",
        "the pieces this peer holds, then each as it is verified, until the task is withdrawn; each line of the "
        "reply is one HavesLine",
        response=HavesLine,
        query=(_GEN,),
        media="application/x-ndjson",
    ),
    Route("GET", "/v1/health", "whether the piece server answers, and what it serves now", response=PeerHealth),
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of a peer's piece server (a daemon's also serves its cache's whole files at
    /v1/content/{digest}, shoal.daemon.content_http)."""
    return openapi.document(
        "Shoal peer piece server", __version__, ROUTES, description=piece_server.__doc__ or "", plain_errors=True
    )
