"""The piece server: every peer serves its verified pieces to other peers over HTTP.

    GET /v1/tasks/{task_id}/data?gen=G    Range: bytes=a-b (whole pieces, all verified) -> 206, sendfile
    GET /v1/tasks/{task_id}/haves?gen=G   newline-delimited JSON: first {"bitfield": ...}, then
                                          {"have": [i, ...]} as pieces are verified, {"ping": true} idle
    GET /v1/health

Rules: only tasks this process holds, only pieces verified, only the generation asked for (a 409 when it
is another), so a peer never receives bytes of another version of the file. Uploads are bounded: past
``max_uploads`` concurrent ones the server answers 503 with Retry-After and the downloader goes to another
peer. Data goes out with sendfile (zero-copy); an upload rate limit paces whole responses through a token
bucket before they start, so sendfile is kept even when limited.

The have stream lets a downloader learn of a new piece within one network round trip of its verification,
instead of waiting for the tracker's announce interval.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from shoal.core.bitfield import Bitfield
from shoal.core.errors import ProtocolError
from shoal.core.manifest import Manifest
from shoal.core.ranges import parse_piece_range
from shoal.core.rate import TokenBucket
from shoal.listen import listen

PING_SECONDS = 5.0


class _PieceResponse(web.StreamResponse):
    """A 206 of whole pieces, sent with sendfile; frees its upload slot once sent.

    aiohttp sends a returned response after the handler, so the slot is released here. web.FileResponse would
    stat, open and close the file in the default executor on every request, two thread round trips for what
    is here a local file this process wrote (or a cache file it holds): it is opened inline instead. A peer
    of a swarm serves hundreds of runs of a few pieces, and each round trip wakes a thread on a busy host.
    """

    def __init__(self, path: Path, start: int, end: int, length: int, server: PieceServer) -> None:
        super().__init__(
            status=206,
            headers={
                hdrs.CONTENT_TYPE: "application/octet-stream",
                hdrs.CONTENT_RANGE: f"bytes {start}-{end - 1}/{length}",
            },
        )
        self.content_length = end - start
        self._path = path
        self._offset = start
        self._server: PieceServer | None = server

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        try:
            try:
                file = open(self._path, "rb", buffering=0)  # noqa: ASYNC230 (see the class docstring)
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
                    await asyncio.get_running_loop().sendfile(transport, file, self._offset, self.content_length)
                await super().write_eof()
                return writer
        finally:
            if self._server is not None:
                self._server._active -= 1
                self._server = None


@dataclass(eq=False)
class ServedTask:
    """One task this peer serves: its file, its verified pieces, and the have streams watching it."""

    task_id: str
    generation: int
    manifest: Manifest
    path: Path
    have: Bitfield
    watchers: set[asyncio.Queue[list[int] | None]] = field(default_factory=set)
    uploaded: int = 0

    def add(self, index: int) -> None:
        """Mark a verified piece servable and tell every watcher."""
        if index in self.have:
            return
        self.have.add(index)
        for queue in self.watchers:
            queue.put_nowait([index])

    def discard(self, index: int) -> None:
        """Stop offering a piece (its bytes turned out bad). Watchers are not told: a peer that asks for
        it gets a 404 and forgets we had it."""
        self.have.discard(index)

    def close_watchers(self) -> None:
        for queue in self.watchers:
            queue.put_nowait(None)


# No slots: the class attributes must stay readable as the defaults (the CLI shows them).
@dataclass(frozen=True)
class ServerConfig:
    max_uploads: int = 16
    """Concurrent piece uploads; past this the server answers 503 and the asker goes elsewhere."""
    upload_rate: int | None = None
    """Bytes per second for all uploads together; None for no limit."""
    have_gap: float = 0.05
    """Seconds between two lines of a have stream while pieces keep coming: a piece verified after a quiet
    spell is sent at once, and under a stream one line carries every piece since the last. A swarm lab peer
    gains a piece every 20-25 ms and tells 7 watchers of each: with a piece every 20 ms, 0.05 s sends 2.5
    times fewer lines and halves the CPU of both ends (benchmarks/have_stream.py), for at most one gap of
    delay."""


class PieceServer:
    """Serves the pieces of the tasks registered with it. Start and stop are explicit."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.tasks: dict[str, ServedTask] = {}
        self._active = 0
        self._bucket = (
            TokenBucket(rate=self.config.upload_rate, burst=self.config.upload_rate)
            if self.config.upload_rate
            else None
        )
        self._runner: web.AppRunner | None = None
        self._routes: list[web.RouteDef] = []
        self.port = 0

    def add_route(self, route: web.RouteDef) -> None:
        """Serve one more route beside the piece routes (the daemon's whole-file content route); call
        before start."""
        self._routes.append(route)

    # -- registry ------------------------------------------------------------------------------------

    def publish(self, task_id: str, generation: int, manifest: Manifest, path: Path, have: Bitfield) -> ServedTask:
        old = self.tasks.get(task_id)
        if old is not None:
            old.close_watchers()
        served = ServedTask(task_id, generation, manifest, path, have.copy())
        self.tasks[task_id] = served
        return served

    def withdraw(self, task_id: str) -> None:
        served = self.tasks.pop(task_id, None)
        if served is not None:
            served.close_watchers()

    # -- HTTP ----------------------------------------------------------------------------------------

    def _served(self, request: web.Request) -> ServedTask:
        served = self.tasks.get(request.match_info["task_id"])
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
        if self._active >= self.config.max_uploads:
            raise web.HTTPServiceUnavailable(reason="too many uploads", headers={"Retry-After": "1"})
        self._active += 1  # released by _UploadResponse once sent, or below if we never get that far
        try:
            start, end = served.manifest.span(first, count)
            if self._bucket is not None:
                delay = self._bucket.reserve(end - start, time.monotonic())
                if delay:
                    await asyncio.sleep(delay)
            served.uploaded += end - start
            return _PieceResponse(served.path, start, end, served.manifest.length, self)
        except BaseException:
            self._active -= 1
            raise

    async def _haves(self, request: web.Request) -> web.StreamResponse:
        served = self._served(request)
        queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        served.watchers.add(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            await response.prepare(request)
            await response.write(json.dumps({"bitfield": served.have.encode()}).encode() + b"\n")
            loop = asyncio.get_running_loop()
            sent_at = -math.inf
            while True:
                try:
                    async with asyncio.timeout(PING_SECONDS):  # not wait_for: see Download._announcer
                        item = await queue.get()
                except TimeoutError:
                    await response.write(b'{"ping": true}\n')
                    continue
                if item is None:
                    break
                wait = sent_at + self.config.have_gap - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the pieces verified meanwhile join this line
                batch = list(item)
                while not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        await response.write(json.dumps({"have": batch}).encode() + b"\n")
                        return response
                    batch.extend(more)
                await response.write(json.dumps({"have": batch}).encode() + b"\n")
                sent_at = loop.time()
        except ConnectionResetError:
            pass  # the watcher went away; nothing to clean up beyond the queue
        finally:
            served.watchers.discard(queue)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "tasks": len(self.tasks), "uploads": self._active})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/tasks/{task_id}/data", self._data)
        app.router.add_get("/v1/tasks/{task_id}/haves", self._haves)
        app.router.add_get("/v1/health", self._health)
        app.router.add_routes(self._routes)
        return app

    async def start(self, host: str, port: int) -> int:
        self._runner, self.port = await listen(self.app(), host, port, shutdown_timeout=1.0)
        return self.port

    async def stop(self) -> None:
        for task_id in list(self.tasks):
            self.withdraw(task_id)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
