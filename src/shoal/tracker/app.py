"""The tracker's HTTP service: the versioned JSON API over tracker.service (the announces' decisions and the
soft state) and the store.

The messages are core.messages' structs (decoded and checked there), decisions in core.announce through
tracker.service, persistence in storage.tracker_store; this module only wires them to aiohttp. Every error
a client can cause becomes a 4xx with a JSON body ``{"error": "..."}``; nothing a client sends can produce a
500. The BitTorrent endpoints (/announce, /scrape) are tracker.bt's, with bencoded replies and errors of
their own; the pools' (/v1/pools) tracker.pool_routes'.

Several trackers may share a PostgreSQL or MySQL database: each task, BitTorrent swarm and pool is decided
by one of them at a time, and the others forward its requests there (``_owned_here``, tracker.cluster,
core.ownership).

Under overload (tracker.admission): past ``max_inflight`` JSON announces in flight, an announce is answered
503 with ``Retry-After`` before its body is read, and so is a request this tracker would forward to another
member (a pool's long-poll past ``max_relayed_polls``), and a scrape past ``max_relayed_scrapes`` leaves out
the swarms of the members it would have asked (tracker.bt); the runner cancels the handlers of clients that left
(RUNNER_OPTIONS), and a request that may change state, an announce included, runs to its end all the same.
A second tracker on a SQLite file is refused at start (storage.db_lock).

A peer's announce and hash look-up are answered, most of the time, by the peers' lane in front of this
application (tracker.peer_lane, shoal.http.lane); the routes here answer them on a connection the lane
handed over. Both give peer_lane.PeerAnswers' replies; the checks before the body (credential, cap, owner)
are the middlewares' here and the lane's gate there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shoal.core.errors import ProtocolError, StoreError
from shoal.core.ids import is_content_task, is_task_id
from shoal.core.messages import (
    AnnounceRequest,
    AnnounceResponse,
    ClusterView,
    HashesResponse,
    Health,
    TaskSummary,
)
from shoal.http import openapi
from shoal.http.fleet_auth import require_fleet
from shoal.http.json_api import json_error, json_errors, struct_response
from shoal.http.lane import LANE, LaneReply
from shoal.http.limits import read_body
from shoal.http.listen import ON_LISTENING
from shoal.http.metrics import ROUTE as metrics_route
from shoal.http.metrics import serve_metrics
from shoal.storage.db_lock import DatabaseLock
from shoal.tracker import bt, dashboard, peer_lane, pool_routes, pools
from shoal.tracker import metrics as tracker_metrics
from shoal.tracker.admission import Admission, capped, whole_writes
from shoal.tracker.cluster import FORWARD_TIMEOUT, Cluster
from shoal.tracker.config import TrackerConfig
from shoal.tracker.service import TrackerService

log = logging.getLogger("shoal.tracker")
API_VERSION = 1
MAX_LINE_SIZE = 32 << 10
"""Longest request line the tracker takes: a BEP 48 scrape of the 256 info-hashes allowed, each sent as
``info_hash=`` and 60 characters of percent-encoding, is over 15 KB (aiohttp's default is 8 KB)."""
RUNNER_OPTIONS: dict[str, Any] = {"handler_cancellation": True, "max_line_size": MAX_LINE_SIZE}
"""How the tracker's application is served (shoal.http.limits.Runner, aiohttp's AppRunner): the handler of a
client that left is cancelled, so reads stop and the cap counts live work (tracker.admission); and the
request line may be long enough for a full scrape."""
SERVICE = web.AppKey("service", TrackerService)
ADMISSION = web.AppKey("admission", Admission)
ANSWERS = web.AppKey("answers", peer_lane.PeerAnswers)


def _task_id(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    if not is_task_id(task_id):
        raise ProtocolError("task id must be 40 or 64 lower-case hex characters", field="task_id")
    return task_id


async def health(request: web.Request) -> web.Response:
    return struct_response(Health(ok=True, api=API_VERSION))


def _response(reply: LaneReply) -> web.Response:
    headers = (("Content-Type", reply.content_type), *reply.headers)  # as the lane writes it, parameters and all
    return web.Response(status=reply.status, body=reply.body, headers=headers)


async def announce(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    body = await read_body(request)
    cluster = request.app[SERVICE].cluster
    seen = cluster.client_address(request) if cluster else request.remote or ""
    # The peer asked another member, which forwarded: name ourselves so that its next announces of this task
    # come here directly (core.owner_hint).
    owner = cluster.url if cluster is not None and cluster.forwarded(request) else ""
    return _response(await request.app[ANSWERS].announce(task_id, body, seen, owner))


async def hashes(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        raise ProtocolError("since must be an integer", field="since") from None
    return _response(await request.app[ANSWERS].hashes(task_id, since))


async def task_info(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    service = request.app[SERVICE]
    judged = service.judged(service.clock())
    summary = await service.store.summary(task_id, judged, service.config.peer_ttl)
    if summary is None:
        return json_error(404, f"unknown task {task_id}")
    if not is_content_task(task_id) and (named := service.aliases.best(task_id)):
        summary = msgspec.structs.replace(summary, content_task=named)
    return struct_response(msgspec.structs.replace(summary, received=service.scope_bytes.totals(task_id)))


async def cluster_info(request: web.Request) -> web.Response:
    cluster = request.app[SERVICE].cluster
    # On SQLite the tracker is its only member and decides every task from its start: a check on
    # "deciding", the cluster's readiness signal, must not read a lone tracker as one that decides nothing.
    return struct_response(cluster.view() if cluster is not None else ClusterView("", (), deciding=True))


ROUTES = (
    openapi.Route("GET", "/v1/health", "whether the tracker answers, and its API version", response=Health),
    openapi.Route(
        "POST",
        "/v1/tasks/{task_id}/announce",
        "a peer's announce: joins the task's swarm; the reply hands out peers and origin leases",
        request=AnnounceRequest,
        response=AnnounceResponse,
    ),
    openapi.Route(
        "GET",
        "/v1/tasks/{task_id}/hashes",
        "the piece hashes the tracker took since a sequence number",
        response=HashesResponse,
        query=(openapi.Query("since", "the hash_seq of an earlier reply; 0 for every hash", int),),
    ),
    openapi.Route("GET", "/v1/tasks/{task_id}", "what the tracker knows of a task", response=TaskSummary),
    openapi.Route(
        "GET", "/v1/cluster", "the trackers sharing this one's database, which own the tasks", response=ClusterView
    ),
)
"""The tracker's own JSON API; with pool_routes.ROUTES, what /v1/openapi.json describes."""


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of every JSON API the tracker serves: its own and the pools'."""
    return openapi.document(
        "Shoal tracker",
        str(API_VERSION),
        (*ROUTES, *bt.ROUTES, *pool_routes.ROUTES, *dashboard.ROUTES, metrics_route),
        description="The tracker's JSON API (tasks, announces, piece hashes) and its pools' (push jobs). With a "
        "fleet token, every route but /v1/health and /v1/openapi.json needs the fleet's credential in X-Shoal-Fleet "
        '(a 401 {"error": ..., "credential": "fleet"} without), and an announce reply carries the peer\'s ticket '
        "for the task, which other peers' piece servers ask for in X-Shoal-Ticket.",
    )


def _owned_here(cluster: Cluster, bt_tracker: bt.BtTracker, admission: Admission, polls: Admission) -> Middleware:
    """A task's routes, and a BitTorrent swarm's announces, are served by the tracker that owns them
    (tracker.cluster); a scrape gathers its counts from the owners itself (tracker.bt). A BitTorrent
    announce's passkey is checked here, before it is forwarded, as the fleet's credential of a JSON route is
    (by require_fleet, outside this middleware): a stranger's announce costs no member a forward, and the
    owner checks it again. A request forwarded from here takes a slot of ``admission`` until the owner
    answers, a pool's long-poll one of ``polls`` (tracker.admission: a forward counts where it is made)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        task_id = request.match_info.get("task_id", "")
        if is_task_id(task_id):  # every announce: straight to the cluster, no helper made and awaited first
            again = "announce" if request.method == "POST" else "ask"
            return await cluster.forward(request, handler, task_id, what="task", again=again, slots=admission)

        async def forward(
            key: str, what: str, again: str, patience: float = FORWARD_TIMEOUT, slots: Admission = admission
        ) -> web.StreamResponse:
            """``key``'s request, here or at its owner; a 503 names it as ``what`` and says to ``again``."""
            return await cluster.forward(request, handler, key, patience, what=what, again=again, slots=slots)

        if bt.bt_path(request.path) == "/announce" and (key := bt.announce_key(request.rel_url.raw_query_string)):
            if (refusal := bt.refusal(bt_tracker, request)) is not None:
                return refusal
            return await forward(key, "swarm", "announce")
        if key := bt.admitted_key(request):  # a swarm's admissions live with its announces, at its owner
            return await forward(key, "swarm", "ask")
        if pool := request.match_info.get("pool"):  # a pool's lock and long-polls live at its owner
            patience = pool_routes.relay_patience(request, FORWARD_TIMEOUT)
            long_poll = patience > FORWARD_TIMEOUT  # a heartbeat with ``wait``
            return await forward(pools.pool_key(pool), "pool", "ask", patience, polls if long_poll else admission)
        return await handler(request)  # not an owned route, or a malformed one the handler refuses

    return middleware


async def _membership(cluster: Cluster, service: TrackerService) -> None:
    await cluster.join()
    await cluster.heartbeat_forever(drop=service.drop_keys, held=service.held_keys, moved=service.tasks_moved)


def _warn_no_operator_token(port: int) -> None:
    log.warning(
        "NO OPERATOR TOKEN (--admin-token-file): anyone who reaches this tracker may create pools and take "
        "their names; run it so only on a trusted network"
    )


def build_app(config: TrackerConfig, clock: Callable[[], float] = time.time) -> web.Application:
    """The tracker as an aiohttp application; listening is the caller's business (AppRunner/TCPSite, with
    RUNNER_OPTIONS). Its start takes the SQLite file's lock (DatabaseLocked when another tracker holds it)."""
    service = TrackerService(config, clock)
    admission = Admission(
        config.max_inflight, config.interval, on_shed=service.deafness.shed, what="announces and forwards"
    )
    polls = Admission(
        config.max_relayed_polls,
        config.interval,
        what="forwarded pool long-polls",
        flag="--max-relayed-polls",
    )
    scrapes = Admission(
        config.max_relayed_scrapes,
        config.bt_interval,
        what="requests for other trackers' scrape counts",
        flag="--max-relayed-scrapes",
        shed_as="not sent (their swarms left out of the scrape)",
    )
    errors = json_errors(log, unavailable=(StoreError,), what=peer_lane.DATABASE)
    cluster = service.cluster
    # whole_writes inside errors: a request that outlived its client still fails as JSON to a client that
    # stayed; a task's request goes to its owner (cluster) inside both, and bt's middleware (appended by
    # add_routes) inside all.
    # The fleet's credential is checked first inside errors: a stranger's request costs nothing more.
    guarded = dashboard.fleet_guarded(config.public_dashboard)
    fleet = [require_fleet(config.fleet_key, clock=clock, guarded=guarded)] if config.fleet_key is not None else []
    owned = [_owned_here(cluster, service.bt, admission, polls)] if cluster is not None else []
    middlewares = [errors, *fleet, whole_writes(admission), *owned]
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body)
    app[SERVICE] = service
    app[ADMISSION] = admission
    app[ANSWERS] = answers = peer_lane.PeerAnswers(service, admission)
    listening: list[Callable[[int], None]] = [cluster.listening] if cluster is not None else []
    if config.admin_token_hash is None:
        listening.append(_warn_no_operator_token)  # once listening: a tracker that cannot start says only why
    app[ON_LISTENING] = listening

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        with DatabaseLock(config.db), service.collector:
            async with service.store:
                await service.resume()
                loops = [
                    asyncio.create_task(service.expire_forever()),
                    asyncio.create_task(service.pools.sweep_forever()),
                ]
                if cluster is not None:
                    loops.append(asyncio.create_task(_membership(cluster, service)))
                yield
                for loop in loops:
                    loop.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                if cluster is not None:
                    await cluster.leave()
                await service.origin_check.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v1/health", health)
    app.router.add_post("/v1/tasks/{task_id}/announce", capped(admission, announce))
    app.router.add_get("/v1/tasks/{task_id}/hashes", hashes)
    app.router.add_get("/v1/tasks/{task_id}", task_info)
    app.router.add_get("/v1/cluster", cluster_info)
    bt.add_routes(app, service.bt, cluster, scrapes)
    pool_routes.add_routes(app, service.pools)
    dashboard.add_routes(app, service, admission, readable=config.fleet_key is None or config.public_dashboard)
    openapi.serve(app, openapi_document())

    def handed_over() -> int:  # read at each scrape: the lane is made with the timer
        return app[LANE].handed_over

    timer = None
    if config.metrics:
        timer = tracker_metrics.install(app, serve_metrics(app), service, admission, scrapes, handed_over)
    app[LANE] = peer_lane.peer_lane(answers, config, timer, clock)
    return app
