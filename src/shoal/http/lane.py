"""A lane for a server's busiest requests: a few routes answered by plain functions on a lean HTTP/1.1 path,
on the same port as the aiohttp application, which takes every other request.

Why: a tracker's peers send it two requests, over and over (an announce and a look-up of piece hashes), each
a small JSON document. Through aiohttp each pays for its parser's callbacks, a task, a request and a
response object, routing and every middleware, more than the decision it carries. The lane parses such a
request in a few string operations and writes its reply in one call.

Rules, and why:

- **The lane takes only what it understands whole; everything else is aiohttp's.** A connection starts in
  the lane. A request it does not take (another route, another method or version, a header it does not
  handle, a head or body past its bounds) hands the connection to aiohttp for good, bytes already read
  included, before that request is answered: aiohttp then parses it as if it had read it itself, and
  answers or refuses it with all of its rules. So a request is answered by exactly one of them, in order,
  and the lane needs no rule of its own for what it does not take. Handing over happens only between two of
  the lane's requests (it answers one at a time), never while one is in flight.
- **Nothing is interpreted differently.** Two parsers in front of one service are where request smuggling
  lives: a head the two could read differently (a repeated or non-numeric Content-Length, a
  Transfer-Encoding, a line folded or ended by a bare LF, a space before a colon) is handed over, not
  guessed at.
- **The same limits as aiohttp's connections** (shoal.http.limits): a head within ``idle_timeout`` of the
  connection's start or its last reply, a body within ``body_timeout`` of its head (408 past it), unsent
  bytes that keep shrinking (``write_timeout``), checked by one sweep a second rather than a timer per
  request. A client that stops reading stops the lane taking its requests (pause_writing), and one that
  sends far ahead stops being read.
- **A route's function is cancelled when its client leaves**, as aiohttp's handlers are (the tracker's
  runner sets ``handler_cancellation``): the routes must be safe to cancel.
- **At shutdown, requests in flight end before the application is cleaned up**, as aiohttp's handlers do
  (LaneSite.stop waits for them up to the runner's shutdown timeout, then cancels them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol, cast

from aiohttp import web

from shoal.http.json_api import ERROR_TYPE, error_body
from shoal.http.limits import SWEEP_SECONDS, Runner, ServerLimits, Stalls

log = logging.getLogger("shoal.http")

MAX_HEAD = 8 << 10
"""Longest request head (request line and headers) the lane reads; a longer one is aiohttp's to judge."""
MAX_HEADERS = 128
"""Most header lines the lane reads, as aiohttp's parser (its default, which Runner keeps): a head with more
is aiohttp's to refuse."""


@dataclass(frozen=True, slots=True)
class LaneRequest:
    """A request the lane took: its method and target (path and query, as sent), ``groups`` of its route's
    pattern, its headers (names in lower case; only Connection and those of its lane's ``headers``), its body,
    the client's address and the server's address it reached."""

    method: str
    target: str
    groups: tuple[str, ...]
    headers: dict[str, str]
    body: bytes
    remote: str
    local: str


@dataclass(frozen=True, slots=True)
class LaneReply:
    """A reply as the lane writes it: ``content_type`` whole (an error's is json_api.ERROR_TYPE, with its
    charset, as the application writes its errors), then ``headers``."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


LaneHandler = Callable[[LaneRequest], Awaitable[LaneReply]]


@dataclass(frozen=True)
class LaneRoute:
    """``method`` and a request target (path and query) matching ``target`` whole, answered by ``handler``;
    ``body``: whether the request carries one (a POST's JSON document, at most the lane's ``max_body``
    bytes); ``gate``: what is asked of it once its head is read."""

    method: str
    target: re.Pattern[str]
    handler: LaneHandler
    body: bool = False
    gate: LaneGate | None = None


class LaneGate(Protocol):
    """What a route asks of a request once its head is read, before its body (a credential, a cap on
    requests in flight): :meth:`enter` answers it at once, or admits it; an admitted request :meth:`leave` s
    once answered, and is :meth:`left` first when its client left before that; one whose body did not
    arrive in time is answered ``reply`` (a 408) after ``seconds`` and is :meth:`late` instead."""

    def enter(self, groups: tuple[str, ...], headers: dict[str, str]) -> LaneReply | None: ...

    def leave(self) -> None: ...

    def left(self) -> None: ...

    def late(self, reply: LaneReply, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class _Head:
    route: LaneRoute
    target: str
    groups: tuple[str, ...]
    headers: dict[str, str]
    length: int


_FRAMING = frozenset({"content-length", "transfer-encoding", "expect", "upgrade"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Lane:
    """The routes a server answers in its lane, under ``limits``, and its live connections."""

    routes: tuple[LaneRoute, ...]
    max_body: int
    limits: ServerLimits = field(default_factory=ServerLimits)
    """Set from the runner's by LaneSite."""
    headers: frozenset[str] = frozenset()
    """Header names (lower case) its handlers and gates read, beside Connection, which is the lane's own."""
    connections: set[LaneConnection] = field(default_factory=set)
    handed_over: int = 0
    """Connections handed to aiohttp, since the start."""

    def __post_init__(self) -> None:
        self._by_line = {route.method: [r for r in self.routes if r.method == route.method] for route in self.routes}
        self._date = (0, "")

    def route(self, method: str, target: str) -> tuple[LaneRoute, tuple[str, ...]] | None:
        for route in self._by_line.get(method, ()):
            if (match := route.target.fullmatch(target)) is not None:
                return route, match.groups()
        return None

    def date(self) -> str:
        """The Date header (RFC 9110, 6.6.1: an origin server with a clock sends one), made once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]

    def sweep(self, now: float, stalls: Stalls) -> None:
        """Close the connections past a limit: no head within ``idle_timeout`` of their start or their last
        reply; no whole body within ``body_timeout`` of its head (a 408 first); unsent bytes that did not
        shrink for ``write_timeout`` (aborted)."""
        for connection in list(self.connections):
            connection.check(now)
        for transport in stalls.stalled((c.transport for c in self.connections if c.transport is not None), now):
            transport.abort()


class LaneConnection(asyncio.Protocol):
    """One client's connection while it is in the lane (see the module's rules)."""

    def __init__(self, lane: Lane, aiohttp_server: Callable[[], asyncio.Protocol]) -> None:
        self.lane = lane
        self.server = aiohttp_server
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.local = ""
        self.buffer = bytearray()
        self.since = 0.0
        """When the head being waited for became due: the connection's start or its last reply."""
        self.body_since: float | None = None
        """When the head of a request whose body has not all arrived was read."""
        self.pending: _Head | None = None
        """That request's head."""
        self.discard = 0
        """Bytes still to come of the body of a request answered at its head."""
        self.admitted: LaneGate | None = None
        """The gate that admitted a request whose route's function has not started (its body still to come,
        or its task not yet run): the connection gives its slot back if its client leaves before that. A task
        cancelled before its first step never runs its ``finally``, so ``_serve`` cannot be the one."""
        self.serving: asyncio.Task[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self.close_after = False

    # -- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport's subclasses, though they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        sockname = transport.get_extra_info("sockname")
        self.local = sockname[0] if isinstance(sockname, tuple) else ""
        self.since = asyncio.get_running_loop().time()
        self.lane.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.serving is None:
            self._take()
        if len(self.buffer) > self.lane.max_body + MAX_HEAD and self.transport is not None and not self.read_paused:
            self.read_paused = True  # a client far ahead of its replies: read on once the lane catches up
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # the transport closes; a request in flight is cancelled by connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.lane.connections.discard(self)
        self.transport = None
        if self.serving is not None:
            self.serving.cancel()
        if (gate := self.admitted) is not None:
            self.admitted = None
            gate.left()  # its client left before its route's function started
            gate.leave()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.serving is None:
            self._take()

    # -- the lane ----------------------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Close this connection if it is past the idle or the body timeout (Lane.sweep)."""
        transport = self.transport
        if transport is None or self.serving is not None:
            return
        limits = self.lane.limits
        if self.body_since is not None:
            if now - self.body_since > limits.body_timeout:
                reason = f"the body did not arrive within {limits.body_timeout:g} s"  # as read_body's 408
                late = LaneReply(408, error_body(reason), content_type=ERROR_TYPE)
                gate, self.admitted = self.admitted, None
                if gate is not None:
                    gate.late(late, now - self.body_since)
                # Answered: neither answered again by the next sweep nor served should its body still come
                # while the close is under way (unsent bytes, a TLS shutdown).
                self.pending = self.body_since = None
                self.close_after = True
                self._write(late, close=True)
        elif now - self.since > limits.idle_timeout:
            transport.close()

    def _take(self) -> None:
        """Take the next request in the buffer: read its head (handing the connection over if the request is
        not the lane's, answering at once if its route's gate says so), then, once its body is whole, serve
        it."""
        transport = self.transport
        buffer = self.buffer
        while transport is not None and not self.write_paused and self.serving is None:
            if self.discard:  # the body of a request answered at its head
                dropped = min(self.discard, len(buffer))
                del buffer[:dropped]
                self.discard -= dropped
                if self.discard:
                    return self._read_on()
            if self.pending is None:
                if self.close_after:
                    return  # its last request said Connection: close
                end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
                if end < 0:
                    if len(buffer) >= MAX_HEAD:
                        self._hand_over()
                        return
                    return self._read_on()
                head = self._parse(bytes(buffer[:end]))
                if head is None:
                    self._hand_over()
                    return
                del buffer[: end + 4]
                # RFC 9110, 7.6.1: Connection is a list of options; "close" among them ends the connection.
                options = head.headers.get("connection", "").lower().split(",")
                self.close_after = any(option.strip(" \t") == "close" for option in options)
                gate = head.route.gate
                answer = gate.enter(head.groups, head.headers) if gate is not None else None
                if answer is not None:
                    self.discard = head.length
                    self._write(answer, close=self.close_after)
                    self.since = asyncio.get_running_loop().time()
                    continue
                self.pending, self.admitted = head, gate
                self.body_since = asyncio.get_running_loop().time()
            head = self.pending
            if len(buffer) < head.length:
                return self._read_on()
            body = bytes(buffer[: head.length])
            del buffer[: head.length]
            self.pending = self.body_since = None
            if self.read_paused and len(buffer) <= self.lane.max_body:
                self.read_paused = False
                transport.resume_reading()
            method = head.route.method
            request = LaneRequest(method, head.target, head.groups, head.headers, body, self.remote, self.local)
            self.serving = asyncio.ensure_future(self._serve(head.route, request))

    def _read_on(self) -> None:
        """Read the client again if the lane had stopped (a client far ahead of its replies): the lane now
        waits for bytes not read yet, so it must read them whatever the buffer still holds (a head longer than
        ``max_body`` in part, the rest of requests answered at their head), or the connection stalls."""
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def _parse(self, head: bytes) -> _Head | None:
        """A request head the lane takes; None for one it leaves to aiohttp."""
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            return None
        lines = text.split("\r\n")
        if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 or _CONTROL.search(text):
            return None  # a bare CR or LF, or another control character aiohttp's parser refuses
        if len(lines) > MAX_HEADERS + 1:
            return None
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] != "HTTP/1.1":
            return None
        found = self.lane.route(parts[0], parts[1])
        if found is None:
            return None
        route, groups = found
        headers: dict[str, str] = {}
        length: int | None = None
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or _TOKEN.fullmatch(name) is None:
                return None  # no colon, a folded line, a space before the colon: aiohttp's to refuse
            lower = name.lower()
            value = value.strip(" \t")
            if lower in _FRAMING:
                if lower != "content-length" or length is not None or not value.isdigit() or not value.isascii():
                    return None
                length = int(value)
            elif lower == "connection" or lower in self.lane.headers:
                if lower in headers:
                    return None
                headers[lower] = value
        if route.body:
            if length is None or length > self.lane.max_body:
                return None
        elif length:
            return None
        return _Head(route, parts[1], groups, headers, length or 0)

    async def _serve(self, route: LaneRoute, request: LaneRequest) -> None:
        self.admitted = None  # the slot is this function's now: its finally gives it back
        try:
            reply = await route.handler(request)
        except asyncio.CancelledError:
            if route.gate is not None:
                route.gate.left()
            raise
        except Exception:
            log.exception("unexpected error in the lane's %s", route.target.pattern)
            reply = LaneReply(500, error_body("internal error"), content_type=ERROR_TYPE)  # as json_errors
        finally:
            self.serving = None
            if route.gate is not None:
                route.gate.leave()
        self._write(reply, close=self.close_after)
        if self.transport is not None and not self.close_after:
            self.since = asyncio.get_running_loop().time()
            if self.buffer:
                self._take()

    def _write(self, reply: LaneReply, *, close: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        status = reply.status
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            f"Date: {self.lane.date()}",
        ]
        head.extend(f"{name}: {value}" for name, value in reply.headers)
        if close:
            head.append("Connection: close")
        head.append("\r\n")
        transport.write("\r\n".join(head).encode("latin-1") + reply.body)
        if close:
            transport.close()

    def _hand_over(self) -> None:
        """Give this connection to aiohttp, with the bytes read and not yet taken."""
        transport = self.transport
        if transport is None:
            return
        self.lane.connections.discard(self)
        self.lane.handed_over += 1
        self.transport = None
        handler = self.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.read_paused:
            transport.resume_reading()
        pending, self.buffer = bytes(self.buffer), bytearray()
        if pending:
            handler.data_received(pending)


LANE = web.AppKey("lane", Lane)
"""The lane of an application that has one: shoal.http.listen serves it in front of the application."""


class LaneSite(web.TCPSite):
    """aiohttp's TCPSite with ``lane`` in front of the application: each connection starts in the lane."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, lane: Lane, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.lane = lane
        if isinstance(runner, Runner):
            lane.limits = runner.limits
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would listen with aiohttp alone
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: LaneConnection(self.lane, server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await super().stop()
        for connection in list(self.lane.connections):
            if connection.serving is None and connection.transport is not None:
                connection.transport.close()
            connection.close_after = True  # one in flight closes once answered
        # The runner stops its sites first, then waits for aiohttp's handlers, then cleans the application up
        # (a tracker closes its store): the lane's requests in flight are waited for here, as long as aiohttp
        # waits for its own, and cancelled past that, or they would run on against a closed application.
        serving = {connection.serving for connection in self.lane.connections if connection.serving is not None}
        if serving:
            _, late = await asyncio.wait(serving, timeout=self._runner._shutdown_timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for connection in list(self.lane.connections):  # those cancelled, unanswered
            if connection.transport is not None:
                connection.transport.close()

    async def _sweep(self) -> None:
        stalls = Stalls(self.lane.limits.write_timeout)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.lane.sweep(loop.time(), stalls)
