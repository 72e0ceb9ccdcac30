"""The piece server: every peer serves its verified pieces to other peers over HTTP.

    GET /v1/tasks/{task_id}/data?gen=G    Range: bytes=a-b (whole pieces, all verified) -> 206, sendfile
    GET /v1/tasks/{task_id}/haves?gen=G   newline-delimited JSON: first {"bitfield": ...}, then
                                          {"have": [i, ...]} as pieces are verified, {"ping": true} idle
    GET /v1/health
    GET /v1/openapi.json                  these routes' OpenAPI document

Rules: only tasks this process holds, only pieces verified, only the generation asked for (a 409 when it
is another), so a peer never receives bytes of another version of the file. With a fleet token, a task's
routes answer only a request with a ticket (``X-Shoal-Ticket``) admitting its sender to that task, checked
with the fleet's key alone (core.tickets); any other gets a 403 before anything of the task is looked at,
so a stranger learns nothing, not even whether the task is served here. Uploads are bounded: past
``max_uploads`` concurrent ones the server answers 503 with Retry-After and the downloader goes to another
peer, and each run of pieces of a response must be taken within a deadline of its size (shoal.http.limits,
``send_file``): a reader that stalls loses its connection and its upload slot. Data goes out with sendfile
(zero-copy); an upload rate limit paces whole responses through a token bucket before they start, so
sendfile is kept even when limited.

The have stream lets a downloader learn of a new piece within one network round trip of its verification,
instead of waiting for the tracker's announce interval.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.core.bitfield import Bitfield, iter_bits
from shoal.core.manifest import Manifest
from shoal.core.rate import TokenBucket
from shoal.core.tickets import FleetKey
from shoal.http.credentials import warn_if_open

if TYPE_CHECKING:
    from aiohttp import web

    from shoal.http.limits import ServerLimits

log = logging.getLogger("shoal.peer")

BACKLOG = 128
PING_SECONDS = 5.0
"""A have stream quiet this long gets a ping line, so a watcher can tell an idle peer from a dead one."""
PING_LINE = b'{"ping": true}\n'


@dataclass(eq=False)
class ServedTask:
    """One task this peer serves: its file, its verified pieces, and the have streams watching it.

    Newly verified pieces are told to the watchers as one line for all of them: a piece after a quiet spell
    at once, under a stream of pieces one line per ``have_gap`` with every piece since the last, and a ping
    after PING_SECONDS without a line. The line is encoded once and each watcher's stream only writes it."""

    task_id: str
    generation: int
    manifest: Manifest
    path: Path
    have: Bitfield
    have_gap: float
    watchers: set[asyncio.Queue[bytes | None]] = field(default_factory=set)
    uploaded: int = 0
    _news: list[int] = field(default_factory=list, init=False, repr=False)
    _sending: asyncio.TimerHandle | asyncio.Handle | None = field(default=None, init=False, repr=False)
    _due: float = field(default=0.0, init=False, repr=False)  # when _sending runs
    _sent_at: float = field(default=-math.inf, init=False, repr=False)  # the last have line: the gap's start
    _spoke_at: float = field(default=-math.inf, init=False, repr=False)  # the last line: pings count from it
    _pinging: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _successor: ServedTask | None = field(default=None, init=False, repr=False)  # see hand_over

    def add(self, index: int, *, at_once: bool = False) -> None:
        """Mark a verified piece servable and tell every watcher: within one have_gap, or ``at_once`` for a
        piece no other peer holds yet (one we fetched from the origin), with every piece waiting for the
        gap. The swarm waits for those; a piece taken from a peer is available elsewhere meanwhile."""
        if index in self.have:
            return
        self.have.add(index)
        if not self.watchers or self._closed:
            return  # a watcher that comes later starts from the bitfield
        self._news.append(index)
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now if at_once else max(now, self._sent_at + self.have_gap)
        if self._sending is not None:
            if due >= self._due:
                return
            self._sending.cancel()
        self._due = due
        # call_soon even when due: pieces verified in the same loop iteration share the line.
        self._sending = loop.call_at(due, self._send_news) if due > now else loop.call_soon(self._send_news)

    def continues_as(self, generation: int, manifest: Manifest, have: Bitfield) -> bool:
        """True if serving ``generation`` with ``manifest`` and ``have`` is this task going on: the same
        generation and pieces, and every piece served now still held."""
        return (
            not self._closed
            and generation == self.generation
            and (manifest.length, manifest.piece_length) == (self.manifest.length, self.manifest.piece_length)
            and not self.have.mask & ~have.mask
        )

    def hand_over(self, successor: ServedTask) -> None:
        """Move the have streams to ``successor`` (the same task, served from now on), after the pieces not
        yet told; they are then told the pieces ``successor`` holds beyond ours. This entry ends, and a
        stream that stops later leaves ``successor`` (:meth:`unwatch`). A response this entry answered that
        is not sent yet opens ``successor``'s file: its old path may be gone by then."""
        self.path = successor.path
        if self._news:
            self._tell(self._have_line())
        self._stop_timers()
        self._closed = True
        self._successor = successor
        added = successor.have.mask & ~self.have.mask
        successor.have = self.have.copy()
        successor.watchers, self.watchers = self.watchers, set()
        if successor.watchers:
            successor._pinging = asyncio.get_running_loop().call_later(PING_SECONDS, successor._ping)
        for index in iter_bits(added):
            successor.add(index)

    def discard(self, index: int) -> None:
        """Stop offering a piece (its bytes turned out bad). Watchers are not told: a peer that asks for
        it gets a 404 and forgets we had it."""
        self.have.discard(index)

    def watch(self) -> asyncio.Queue[bytes | None]:
        """A new watcher's queue of lines (None: the stream ends). Its first line, the bitfield, is the
        caller's to send."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.watchers.add(queue)
        if self._closed:
            queue.put_nowait(None)
        elif self._pinging is None:
            self._pinging = asyncio.get_running_loop().call_later(PING_SECONDS, self._ping)
        return queue

    def unwatch(self, queue: asyncio.Queue[bytes | None]) -> None:
        if self._successor is not None:
            self._successor.unwatch(queue)  # the stream was handed over with the task
            return
        self.watchers.discard(queue)
        if not self.watchers:
            self._stop_timers()
            self._news.clear()

    def close_watchers(self) -> None:
        """End every have stream (the task is withdrawn or replaced), after the pieces not yet told."""
        if self._news:
            self._tell(self._have_line())
        self._stop_timers()
        self._tell(None)
        self._closed = True

    def _have_line(self) -> bytes:
        news, self._news = self._news, []
        return json.dumps({"have": news}).encode() + b"\n"

    def _send_news(self) -> None:
        self._sending = None
        if self._news:
            self._sent_at = self._spoke_at = asyncio.get_running_loop().time()
            self._tell(self._have_line())

    def _ping(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._spoke_at
        if idle >= PING_SECONDS:
            self._spoke_at = loop.time()
            self._tell(PING_LINE)
            idle = 0.0
        self._pinging = loop.call_later(PING_SECONDS - idle, self._ping)

    def _tell(self, line: bytes | None) -> None:
        for queue in self.watchers:
            queue.put_nowait(line)

    def _stop_timers(self) -> None:
        for handle in (self._sending, self._pinging):
            if handle is not None:
                handle.cancel()
        self._sending = self._pinging = None


# No slots: the class attributes must stay readable as the defaults (the CLI shows them).
@dataclass(frozen=True)
class ServerConfig:
    max_uploads: int = 16
    """Concurrent piece uploads; past this the server answers 503 and the asker goes elsewhere."""
    upload_rate: int | None = None
    """Bytes per second for all uploads together; None for no limit."""
    have_gap: float = 0.05
    """Seconds between two lines of a have stream while pieces keep coming: a piece verified after a quiet
    spell is sent at once, and under a stream one line carries every piece since the last. A peer of a
    busy swarm gains a piece every few tens of milliseconds and tells every watcher of each: a line per gap
    rather than per piece sends fewer lines and spends less CPU at both ends, for at most one gap of delay
    (benchmarks/have_stream.py, with and without the gap; figures in benchmarks/RESULTS.md)."""
    fleet_key: FleetKey | None = None
    """The fleet token's keys: a task's routes need a ticket admitting the asker to the task (a 403 without).
    None: anyone who reaches the server may fetch what it serves."""
    tls: ssl.SSLContext | None = None
    """Serve over TLS (https), with client certificates required when the context asks for them."""


class PieceServer:
    """Serves the pieces of the tasks registered with it. Start and stop are explicit."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.tasks: dict[str, ServedTask] = {}
        self.uploads = 0  # responses being sent; past config.max_uploads the server answers 503
        self.served_bytes = 0
        """Bytes of pieces sent whole to peers since the server started (the daemon's /metrics)."""
        self.bucket = (
            TokenBucket(rate=self.config.upload_rate, burst=self.config.upload_rate)
            if self.config.upload_rate
            else None
        )
        self._socket: socket.socket | None = None
        self._serving = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.routes: list[web.RouteDef] = []
        self.port = 0
        self.limits: ServerLimits | None = None
        """The limits it serves under (shoal.http.limits), known once it serves."""

    def add_route(self, route: web.RouteDef) -> None:
        """Serve one more route beside the piece routes (the daemon's whole-file content route); call
        before serve (or start)."""
        self.routes.append(route)

    # -- registry ------------------------------------------------------------------------------------

    def publish(self, task_id: str, generation: int, manifest: Manifest, path: Path, have: Bitfield) -> ServedTask:
        """Serve ``path`` as the task's file with the pieces of ``have``, replacing what was served for it.

        The same generation with no piece fewer is the same file under a new path (a daemon's download
        adopted into its cache, then seeded): the have streams move to the new entry and are told of the
        pieces added. Ended, they would make every peer following this one forget it just as it holds the
        whole file, the swarm's best source for the last pieces. Anything else ends them."""
        old = self.tasks.get(task_id)
        served = ServedTask(task_id, generation, manifest, path, have.copy(), self.config.have_gap)
        if old is not None and old.continues_as(generation, manifest, have):
            old.hand_over(served)
        elif old is not None:
            old.close_watchers()
        self.tasks[task_id] = served
        return served

    def withdraw(self, task_id: str, served: ServedTask | None = None) -> bool:
        """Stop serving a task (with ``served``: only if that is what is served for it now); True if it was."""
        current = self.tasks.get(task_id)
        if current is None or (served is not None and current is not served):
            return False
        del self.tasks[task_id]
        current.close_watchers()
        return True

    # -- HTTP ----------------------------------------------------------------------------------------

    def bind(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port) without answering yet, and return the port: it can be
        announced at once, and peers that connect before :meth:`serve` wait in the listen backlog.

        ``host`` as aiohttp's TCPSite takes it: ``""`` for every interface (IPv4 and IPv6), an address, or a
        name (looked up here, blocking: call it before there is other work on the loop)."""
        if self._socket is not None:
            raise RuntimeError("the piece server is bound already")
        if not host:
            dual = socket.has_dualstack_ipv6()
            family = socket.AF_INET6 if dual else socket.AF_INET
            sock = socket.create_server(("", port), family=family, backlog=BACKLOG, dualstack_ipv6=dual)
        else:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, address = found[0]
            sock = socket.create_server(address[:2], family=family, backlog=BACKLOG)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        return self.port

    async def serve(self) -> None:
        """Answer on the bound socket; at once if it does already (concurrent calls wait for one start).
        The HTTP side is imported here, so a `shoal get` pays for aiohttp.web while its first bytes travel
        rather than before its first request. A start that fails closes the socket: peers are refused
        instead of waiting in its backlog."""
        async with self._serving:
            if self._runner is not None:
                return
            if self._socket is None:
                raise RuntimeError("serve() without a bound socket")
            from aiohttp import web

            from shoal.http.limits import Runner, server_limits
            from shoal.peer.piece_http import PieceRoutes

            runner: web.AppRunner | None = None
            try:
                self.limits = server_limits()
                runner = Runner(PieceRoutes(self).app(), self.limits, shutdown_timeout=1.0)
                await runner.setup()
                await web.SockSite(runner, self._socket, ssl_context=self.config.tls).start()
            except BaseException as exc:
                if runner is not None:
                    await runner.cleanup()
                if isinstance(exc, Exception):
                    self._socket.close()
                    self._socket = None
                raise
            self._runner = runner
        secured = self.config.fleet_key is not None or (
            self.config.tls is not None and self.config.tls.verify_mode == ssl.CERT_REQUIRED
        )
        # A peer bound to one address names it, as the tracker does; one bound to every interface, its port.
        host = self._socket.getsockname()[0]
        where = f"port {self.port}" if host in ("0.0.0.0", "::") else f"{host}:{self.port}"
        warn_if_open(log, "peer", where, secured, "fetch every piece this peer serves")

    async def start(self, host: str, port: int) -> int:
        """Bind and serve at once."""
        self.bind(host, port)
        await self.serve()
        return self.port

    async def stop(self) -> None:
        for task_id in list(self.tasks):
            self.withdraw(task_id)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
