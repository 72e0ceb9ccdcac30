"""What every Shoal server holds a connection to: timeouts, request sizes, the open-file limit, quiet logs.

One place, so the tracker, the piece server, the seeder, the daemon and the mirror manager are alike
(:class:`Runner` is the AppRunner each of them serves through):

- **Idle and header timeout** (``idle_timeout``): a connection must deliver a request's head within this
  many seconds of its start or of its last response, or it is closed. aiohttp's keep-alive timer does both:
  it starts when the connection does and when a response ends, and bytes arriving do not restart it, so a
  head sent a byte at a time cannot hold a connection open either. Shoal's clients drop idle pooled
  connections after 15 s (aiohttp's connector), before the server does.
- **Body timeout** (``body_timeout``): a request body is read whole within this many seconds, or the
  request gets a 408 (:func:`read_body`; every body Shoal reads is a bounded JSON document).
- **Write timeout** (``write_timeout``): a connection whose unsent bytes have not shrunk for this many
  seconds is aborted (a reader that stopped reading); a file sent with sendfile must move each chunk
  (whole pieces, about 1 MiB) within ``write_timeout`` plus the chunk's time at ``floor_rate``
  (:func:`send_file`).
- **Open files**: the soft ``RLIMIT_NOFILE`` is raised to the hard limit when a server starts; at the limit
  Python 3.11's asyncio retries ``accept`` once a second but logs a traceback for each of up to 100 tries
  per wake-up, so those lines are cut to one line a second (:func:`quiet_logs`), as are aiohttp's
  tracebacks for malformed requests (each can be as long as the 8 KB request that caused it).

The timeouts can be changed for a whole process through ``SHOAL_IDLE_TIMEOUT``, ``SHOAL_BODY_TIMEOUT`` and
``SHOAL_WRITE_TIMEOUT`` (seconds; tests shorten them, an operator behind a slow link may lengthen them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from shoal.core.errors import UsageError

log = logging.getLogger("shoal.http")

SWEEP_SECONDS = 1.0
"""How often the write timeout is checked."""
CHUNK_BYTES = 4 << 20
"""sendfile goes out in chunks of this many bytes at most, each with its own deadline."""
MIN_CHUNK = 1 << 20
"""and of at least this many (whole pieces): each loop.sendfile call costs the event loop a fixed overhead,
which chunks of one small piece would pay at every piece of a fast transfer."""


@dataclass(frozen=True)
class ServerLimits:
    idle_timeout: float = 30.0
    """Seconds a connection may wait for a request head, from its start or its last response."""
    body_timeout: float = 30.0
    """Seconds a request body may take to arrive whole."""
    write_timeout: float = 15.0
    """Seconds a connection's unsent bytes may stay without shrinking before it is aborted: as long as a
    downloader waits for a silent peer (peer.fetchers.PEER_TIMEOUT)."""
    floor_rate: int = 64 << 10
    """Bytes per second below which a file transfer is taken for a stalled reader: each chunk sent with
    sendfile is due within ``write_timeout`` plus its size at this rate (1 MiB: 31 s)."""
    max_line_size: int = 8190
    """Longest request line and header line, in bytes (aiohttp's default)."""
    max_field_size: int = 8190
    """Longest header value, in bytes (aiohttp's default)."""

    def runner_options(self) -> dict[str, Any]:
        """The options of aiohttp's AppRunner (handed on to each connection's RequestHandler)."""
        return {
            "keepalive_timeout": self.idle_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
        }

    def deadline(self, size: int) -> float:
        """Seconds within which ``size`` bytes of a file transfer must be taken by the reader."""
        return self.write_timeout + size / self.floor_rate


_ENVIRONMENT = {
    "SHOAL_IDLE_TIMEOUT": "idle_timeout",
    "SHOAL_BODY_TIMEOUT": "body_timeout",
    "SHOAL_WRITE_TIMEOUT": "write_timeout",
}


def server_limits(**changes: Any) -> ServerLimits:
    """The limits of this process: the defaults, then the environment's timeouts, then ``changes``. A value
    that is not a positive number of seconds is a UsageError naming the variable."""
    values: dict[str, Any] = {}
    for variable, name in _ENVIRONMENT.items():
        raw = os.environ.get(variable)
        if raw is None or raw == "":
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = float("nan")
        if not 0 < seconds < float("inf"):
            raise UsageError(f"{variable} must be a positive number of seconds, not {raw!r}")
        values[name] = seconds
    return ServerLimits(**{**values, **changes})


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit (a server holds one per connection, and the
    usual soft limit of 1,024 is reached by a thousand idle clients); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft and (hard == resource.RLIM_INFINITY or hard > soft):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


# -- logs ------------------------------------------------------------------------------------------------


class OneLinePerSecond(logging.Filter):
    """Lets through at most one record a second of those ``picks`` chooses, as one line without its
    traceback; the next line that passes says how many were left out. Other records pass untouched."""

    def __init__(
        self,
        picks: Callable[[logging.LogRecord], bool],
        period: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.picks = picks
        self.period = period
        self.clock = clock
        self._last = -float("inf")
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.picks(record):
            return True
        message = record.getMessage()
        now = self.clock()
        if now - self._last < self.period:
            self._dropped += 1
            return False
        self._last = now
        line = message.splitlines()[0] if message else ""
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line = f"{line}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if self._dropped:
            line += f" ({self._dropped} more like it left out)"
            self._dropped = 0
        record.msg, record.args = line, None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def failed_accept(record: logging.LogRecord) -> bool:
    """asyncio's record of an ``accept`` refused for want of a file descriptor (or memory)."""
    return record.getMessage().startswith("socket.accept() out of system resource")


def malformed_request(record: logging.LogRecord) -> bool:
    """aiohttp's record of a request it could not parse (the client's fault, not a bug of ours: a handler's
    error keeps its traceback)."""
    return record.exc_info is not None and isinstance(record.exc_info[1], HttpProcessingError)


_QUIET: dict[str, OneLinePerSecond] = {}


def quiet_logs() -> None:
    """Cut the lines servers write about what clients do to one line a second, without tracebacks: asyncio's
    failed accepts at the open-file limit, and aiohttp's errors of malformed requests. Idempotent."""
    for name, picks in (("asyncio", failed_accept), ("aiohttp.server", malformed_request)):
        if name not in _QUIET:
            _QUIET[name] = OneLinePerSecond(picks)
            logging.getLogger(name).addFilter(_QUIET[name])


# -- bodies and writes -------------------------------------------------------------------------------------


LIMITS = web.AppKey("limits", ServerLimits)
"""The limits an application is served under (set by :class:`Runner`)."""


async def read_body(request: web.Request) -> bytes:
    """The request's body, whole, within the body timeout (408 past it); a 413 past client_max_size."""
    if request.content.is_eof():
        return await request.read()  # all here already (a small body, the common case): nothing to time
    limits = request.app.get(LIMITS)
    timeout = (limits or process_limits()).body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason=f"the body did not arrive within {timeout:g} s") from None


async def send_file(
    transport: asyncio.Transport, file: IO[bytes], offset: int, count: int, chunk: int, limits: ServerLimits
) -> None:
    """Send ``count`` bytes of ``file`` from ``offset`` with sendfile, in chunks of a whole number of ``chunk``
    bytes (a piece), at least MIN_CHUNK and at most CHUNK_BYTES unless one ``chunk`` is larger, each due
    within ``limits.deadline`` of its size. A chunk late is a reader too slow to keep a server's upload slot
    or connection: the transport is aborted and ConnectionResetError raised."""
    loop = asyncio.get_running_loop()
    chunk = max(1, chunk)
    chunk = max(chunk, min(-(-MIN_CHUNK // chunk), CHUNK_BYTES // chunk) * chunk)
    end = offset + count
    while offset < end:
        size = min(chunk, end - offset)
        due = limits.deadline(size)
        try:
            async with asyncio.timeout(due):
                await loop.sendfile(transport, file, offset, size)
        except TimeoutError:
            transport.abort()
            raise ConnectionResetError(f"the reader took more than {due:g} s for {size} bytes") from None
        offset += size


class Runner(web.AppRunner):
    """aiohttp's AppRunner under :class:`ServerLimits`: the idle timeout and request sizes on every
    connection, and the write timeout checked every SWEEP_SECONDS. Its setup raises the open-file limit and
    quiets the logs (:func:`raise_open_files_limit`, :func:`quiet_logs`)."""

    def __init__(self, app: web.Application, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        self.limits = limits or server_limits()
        if LIMITS not in app:
            app[LIMITS] = self.limits
        super().__init__(app, **{"access_log": None, **self.limits.runner_options(), **kwargs})
        self._sweeper: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        raise_open_files_limit()
        quiet_logs()
        await super().setup()
        self._sweeper = asyncio.create_task(self._sweep())

    async def cleanup(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await super().cleanup()

    async def _sweep(self) -> None:
        """Abort connections whose unsent bytes have not shrunk for ``write_timeout`` seconds. A closed
        connection (aiohttp's idle timeout closes with ``close``, which waits for unsent bytes) keeps its
        transport here until it is gone, so a reader that stopped cannot keep it open either."""
        # A connection's transport as last seen: aiohttp forgets it once it closes the connection.
        seen: dict[Any, asyncio.BaseTransport] = {}
        stalls = Stalls(self.limits.write_timeout)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            server = self.server
            if server is None:
                continue
            known, seen = seen, {}
            for handler in server.connections:
                transport = handler.transport or known.get(handler)
                if transport is not None:
                    seen[handler] = transport
            for transport in stalls.stalled(seen.values(), loop.time()):
                transport.abort()


class Stalls:
    """Which transports' unsent bytes have not shrunk for ``timeout`` seconds, from one look to the next (a
    server's sweep every SWEEP_SECONDS): a reader that stopped reading."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._progress: dict[asyncio.BaseTransport, tuple[int, float]] = {}
        """Per transport, the unsent bytes last seen and when they last shrank or were none."""

    def stalled(self, transports: Iterable[asyncio.BaseTransport], now: float) -> list[asyncio.WriteTransport]:
        """The ``transports`` stalled by ``now`` (logged); the others are watched on."""
        live: dict[asyncio.BaseTransport, tuple[int, float]] = {}
        stalled: list[asyncio.WriteTransport] = []
        for transport in transports:
            # A write transport by its methods: uvloop's are not asyncio.WriteTransport's subclasses.
            if not hasattr(transport, "get_write_buffer_size") or not hasattr(transport, "abort"):
                continue
            transport = cast(asyncio.WriteTransport, transport)
            unsent = transport.get_write_buffer_size()
            before, since = self._progress.get(transport, (0, now))
            if unsent == 0 or unsent < before:
                since = now
            elif now - since > self.timeout:
                peer = transport.get_extra_info("peername")
                log.info("closing the connection of %s: it took nothing for %g s", peer, now - since)
                stalled.append(transport)
                continue
            live[transport] = (unsent, since)
        self._progress = live
        return stalled


_LIMITS: ServerLimits | None = None


def process_limits() -> ServerLimits:
    """This process's limits (:func:`server_limits` with no changes), read once."""
    global _LIMITS
    if _LIMITS is None:
        _LIMITS = server_limits()
    return _LIMITS
