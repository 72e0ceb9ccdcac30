"""The tracker's BitTorrent endpoints, for standard clients (aria2c, ctorrent, libtorrent, transmission):

    GET /announce   BEP 3, with compact peers (BEP 23) and IPv6 peers in ``peers6`` (BEP 7)
    GET /scrape     BEP 48

Parsing, swarm state and replies live in core.bt_tracker; this module wires them to aiohttp.

HTTP behaviour:

* Every reply of these routes is bencoded, ``text/plain`` (as opentracker answers), errors included: the
  :func:`bencoded_errors` middleware is the innermost one, so it answers for these paths before the
  tracker's JSON error middleware could.
* A request the tracker refuses (a missing or malformed field) gets ``200`` with a ``failure reason``.
  That is BEP 3's convention, and what clients act on: libtorrent and aria2c show the reason from a 200
  body, while on any other status they report a bare HTTP error and never read it.
* A method other than GET or HEAD gets 405 and an unexpected error 500, both bencoded too, since neither
  is a rejection of the announce the client can act on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from shoal.core.bt_tracker import (
    BtAnnounce,
    BtPolicy,
    Swarms,
    encode_failure,
    encode_scrape,
    normalize_address,
    parse_scrape,
)
from shoal.core.errors import ProtocolError
from shoal.tracker.config import TrackerConfig

log = logging.getLogger("shoal.tracker.bt")
PATHS = frozenset({"/announce", "/scrape"})


class BtTracker:
    """The BitTorrent side of the tracker: the swarms, the clock and the randomness of hand-outs."""

    def __init__(
        self, config: TrackerConfig, clock: Callable[[], float] = time.time, rng: random.Random | None = None
    ) -> None:
        self.policy = BtPolicy(
            interval=config.bt_interval,
            min_interval=config.bt_min_interval,
            peer_ttl=config.bt_peer_ttl,
            default_numwant=config.bt_numwant,
            max_numwant=config.bt_max_numwant,
            scrape_limit=config.bt_scrape_limit,
            accept_ip=config.bt_accept_ip,
        )
        self.swarms = Swarms(self.policy)
        self.clock = clock
        self.rng = rng or random.Random()

    def announce(self, raw_query: str, source: str | None, local: str | None) -> bytes:
        """The bencoded reply to an announce from ``source`` that reached us at ``local``."""
        request = BtAnnounce.from_query(raw_query)
        if source is None:
            raise ProtocolError("the tracker cannot tell the client's address")
        reply = self.swarms.announce(
            request,
            source=normalize_address(source),
            tracker_address=None if local is None else normalize_address(local),
            now=self.clock(),
            rng=self.rng,
        )
        return reply.encode(compact=request.compact, no_peer_id=request.no_peer_id)

    def scrape(self, raw_query: str) -> bytes:
        return encode_scrape(self.swarms.scrape(parse_scrape(raw_query), self.clock()))

    def sweep(self) -> int:
        return self.swarms.sweep(self.clock())


BT = web.AppKey("bt", BtTracker)


def _bencoded(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="text/plain")


@web.middleware
async def bencoded_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Errors on the BitTorrent paths as bencoded failures, never JSON (see the module docstring)."""
    if request.path not in PATHS:
        return await handler(request)
    try:
        return await handler(request)
    except ProtocolError as exc:
        return _bencoded(encode_failure(str(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _bencoded(encode_failure(exc.reason), exc.status)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _bencoded(encode_failure("internal error"), 500)


def _local_address(request: web.Request) -> str | None:
    """The address the client connected to: one of this host's, and one the client can reach."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[0] if isinstance(sockname, tuple) else None


async def announce(request: web.Request) -> web.Response:
    bt = request.app[BT]
    return _bencoded(bt.announce(request.rel_url.raw_query_string, request.remote, _local_address(request)))


async def scrape(request: web.Request) -> web.Response:
    return _bencoded(request.app[BT].scrape(request.rel_url.raw_query_string))


def add_routes(app: web.Application, bt: BtTracker) -> None:
    """Serve ``bt`` at /announce and /scrape, with its error middleware inside the app's others."""
    app[BT] = bt
    app.middlewares.append(bencoded_errors)
    app.router.add_get("/announce", announce)
    app.router.add_get("/scrape", scrape)
