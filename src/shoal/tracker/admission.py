"""The tracker under overload: a cap on announces in flight, and requests that outlive their clients.

Rules, and why:

- **Past the cap, refuse at once and cheaply.** An announce that finds ``limit`` announces in flight is
  answered 503 before its body is read: no decode, no lock, no store. Without a cap an overloaded tracker
  takes every request, each waits longer than its client's timeout, and useful throughput collapses (to
  0-150 announces a second in issue 27's load tests); with one, the announces it takes are served at its
  full rate and the others learn at once that they should come back.
- **The reply says when to come back.** ``Retry-After`` is whole seconds (RFC 9110, 10.2.3, delay-seconds),
  drawn at random from 1 to the announce interval: a peer told to wait comes back no later than it would
  have announced anyway, and the peers shed in one burst do not come back in one. The body is the JSON
  API's error (``{"error": ...}``) so a client knows the tracker, not a proxy, is busy (core.tracker_replies).
- **A request that changes state runs to its end, even when its client leaves.** The tracker's runner
  cancels the handler of a client that disconnected (aiohttp's ``handler_cancellation``): reads (GET, HEAD)
  stop there, nothing to undo. A request that may change state (POST, PUT, DELETE: the pools' writes) runs
  in a task of its own that the handler's cancellation does not reach, wherever the service awaits.
- **An announce is the exception: it is cancelled where it stands.** Its point of no return is one step
  without an await (decide, apply to the soft state, stage the durable write: tracker.service), and the store
  commits a staged write whatever becomes of its caller (storage.tracker_store). Cancelled before that step
  (reading its body, queued for its task's lock, reading its task from the database), it changed nothing;
  after it, only the wait for the commit ends. So announces, the tracker's busiest path, pay for no task
  and shield of their own, and one whose client left gives its slot back at once instead of queueing on.
- The BitTorrent ``/announce`` is not capped: its handler never awaits (its swarms are in memory), so no two
  are ever in flight, and each costs an eighth of a JSON announce.
- **A forward counts where it is made.** A request this tracker relays to the member that owns its task,
  swarm or pool (tracker.cluster) holds a connection to the client and one to the owner, a task and its
  buffers here until the owner answers: it takes a slot of the same cap as an announce decided here, or a
  flood of requests for other members' tasks would hold this tracker's memory and connections with
  nothing to stop it. A pool's long-poll (a heartbeat with ``wait``) waits at the owner on purpose, for
  up to MAX_WAIT: in the announces' cap it would keep announces out for that long, so relayed long-polls
  have a cap of their own (``--max-relayed-polls``). Both are answered 503 with Retry-After past their cap.
- **A scrape's requests to other members have a cap of their own** (``--max-relayed-scrapes``): a scrape
  gathers its counts from the owners of its swarms (tracker.bt), one request per member, each holding a
  connection until the member answers. In the announces' cap a flood of scrapes would keep announces out;
  with no cap it would open requests without bound and take the connections forwards need. Past the cap a
  scrape leaves those members' swarms out rather than failing: BEP 48's reply lists only the swarms it has
  counts for, and clients take a missing one as no counts this time (libtorrent reports that one torrent's
  scrape failed, as it would for an error status; Transmission keeps the counts it had), while a 503 would
  also fail the swarms this tracker answers from memory, every one of a multi-torrent scrape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shoal.core.errors import ShoalError
from shoal.http.json_api import ERROR_TYPE, error_body

log = logging.getLogger("shoal.tracker")

LOG_EVERY = 10.0
"""Seconds between two warnings that announces are being shed: one line per spell, not one per request."""
READS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods whose handlers change nothing: cancelled when their client leaves."""


class Admission:
    """Announces in flight, capped at ``limit``; counts what it shed and what outlived its client."""

    def __init__(
        self,
        limit: int,
        interval: float,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_shed: Callable[[], None] | None = None,
        what: str = "announces",
        flag: str = "--max-inflight",
        shed_as: str = "answered 503",
    ) -> None:
        """``on_shed``: told of each announce answered 503 (the service's deafness: a peer shed is not silent).
        ``what``: the requests counted, and ``flag`` the option that sets ``limit``, as the 503s and the log
        name them; ``shed_as``: what became of those shed, as the log says it."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"the cap on announces in flight must be a whole number of at least 1, not {limit!r}")
        if not interval > 0:
            raise ValueError(f"the announce interval must be positive, not {interval!r}")
        self.limit = limit
        self.what = what
        self.flag = flag
        self.shed_as = shed_as
        self.longest_wait = max(1, math.ceil(interval))
        """Retry-After is drawn from 1 to this many seconds."""
        self.rng = rng or random.Random()
        self.clock = clock
        self._on_shed = on_shed
        self.inflight = 0
        self.shed = 0
        """Announces answered 503, since the start."""
        self.taken = 0
        """Announces taken (served), since the start."""
        self.abandoned = 0
        """Requests whose client left while they changed state (a write ran to its end all the same)."""
        self.capped: set[Handler] = set()
        """The announce handlers behind the cap (:func:`capped`), which whole_writes leaves in their task."""
        self._bodies: dict[tuple[str, int], bytes] = {}
        self._logged_at: float | None = None
        self._logged_shed = 0

    def enter(self) -> bool:
        """Take a slot for an announce; False when all ``limit`` are taken."""
        if self.inflight >= self.limit:
            self.shed += 1
            if self._on_shed is not None:
                self._on_shed()
            return False
        self.inflight += 1
        self.taken += 1
        return True

    def leave(self) -> None:
        """Give back the slot :meth:`enter` took."""
        if self.inflight <= 0:
            raise RuntimeError("an announce left that had not entered")
        self.inflight -= 1

    def retry_after(self) -> int:
        return self.rng.randint(1, self.longest_wait)

    def busy(self, again: str = "announce") -> web.Response:
        """The 503 for a request past the cap, which says to ``again`` after Retry-After."""
        wait, body = self.busy_reply(again)
        return web.Response(status=503, body=body, headers={"Content-Type": ERROR_TYPE, "Retry-After": str(wait)})

    def busy_reply(self, again: str = "announce") -> tuple[int, bytes]:
        """The Retry-After and JSON body of :meth:`busy`'s 503 (logged, a spell at a time). The body is one of
        a few encoded once."""
        wait = self.retry_after()
        body = self._bodies.get((again, wait))
        if body is None:
            error = f"the tracker is busy ({self.limit} {self.what} in flight); {again} again in {wait} s"
            body = self._bodies[(again, wait)] = error_body(error)
        self.warn()
        return wait, body

    def warn(self) -> None:
        """Log that requests are being shed: one line a spell of LOG_EVERY, with how many."""
        now = self.clock()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
            since = f"in the last {now - self._logged_at:.0f} s" if self._logged_at is not None else "so far"
            log.warning(
                "shedding load: %d %s %s %s (%s %d)",
                self.shed - self._logged_shed,
                self.what,
                self.shed_as,
                since,
                self.flag,
                self.limit,
            )
            self._logged_at, self._logged_shed = now, self.shed


def capped(admission: Admission, handler: Handler) -> Handler:
    """``handler`` (an announce) behind the cap: past it, the 503 of :meth:`Admission.busy` at once. The
    handler is cancelled when its client leaves (see the module's rules: it must be safe to cancel)."""

    async def admitted(request: web.Request) -> web.StreamResponse:
        if not admission.enter():
            return admission.busy()
        try:
            return await handler(request)
        except asyncio.CancelledError:
            admission.abandoned += 1
            log.debug("%s %s: the client left; the announce stops where it stands", request.method, request.path)
            raise
        finally:
            admission.leave()

    admission.capped.add(admitted)
    return admitted


def whole_writes(admission: Admission) -> Middleware:
    """A middleware: a request that may change state runs to its end though its client leaves (see the
    module's rules); a read, or an announce behind the cap, is cancelled with its client."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in READS or request.match_info.handler in admission.capped:
            return await handler(request)
        work = asyncio.ensure_future(handler(request))
        left = False

        def ended(work: asyncio.Future[web.StreamResponse]) -> None:
            # Retrieved here, or asyncio would log it as never retrieved; logged when nobody else will.
            exc = None if work.cancelled() else work.exception()
            if left and exc is not None and not isinstance(exc, ShoalError | web.HTTPException):
                log.error("unexpected error in %s %s (its client had left)", request.method, request.path, exc_info=exc)

        work.add_done_callback(ended)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if not work.done():
                left = True
                admission.abandoned += 1
                log.debug("%s %s: the client left; the request runs to its end", request.method, request.path)
            raise

    return middleware
