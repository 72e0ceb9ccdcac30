"""The tracker's live dashboard: the page at ``/``, its snapshot and its stream of snapshots.

::

    GET /                         the page (shoal/web/tracker.html); its files under /dashboard/{name}
    GET /v1/dashboard             one snapshot (core.dashboard.TrackerDashboard)
    GET /v1/dashboard/events      the snapshots as server-sent events, one a second
    GET /v1/tasks[?limit=N]       the live tasks, busiest first (core.dashboard.TaskList)

Rules, and why:

- **Read-only.** The page has no control: it reads the snapshot routes, which change nothing.
- **Who may read.** Without a fleet token the tracker's API is open, and so is the page. With one
  (``--fleet-token-file``), the API needs the fleet's credential, which no browser holds: the page and its
  snapshots are readable only with ``--public-dashboard``, which opens those routes alone; ``/v1/tasks``
  stays the fleet's. Private pools are never shown (core.dashboard: nor a URL's credentials).
- **One snapshot a tick** (shoal.http.live), built from this tracker's memory (its tasks, their peers and
  byte tallies) and a bounded number of reads of the pools' tables: MAX_POOLS pools, their MAX_JOBS
  newest pushes. In a cluster each tracker shows the tasks it owns.
- **An announce never waits behind a snapshot.** A snapshot runs on the tracker's event loop, where every
  announce is decided, and choosing the busiest tasks and their stragglers takes a look at every task and
  at every peer of the tasks shown. So those walks go a slice (SLICE tasks or peers) at a time, yielding
  to the loop between two slices, over copies of the lists (a task or a peer that leaves meanwhile is
  still seen by the walk it was part of); the totals (peers, bytes) are read from counts the tracker
  keeps as it changes (core.swarm.Census, core.scope_tally). A snapshot's figures are thus those of the
  few milliseconds it took to build, not of one instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import msgspec
from aiohttp import web

from shoal.core import dashboard
from shoal.core.dashboard import (
    PeerProgress,
    PoolPanel,
    PushPanel,
    TaskList,
    TaskView,
    Throughput,
    TrackerDashboard,
    TrackerLoad,
)
from shoal.core.errors import ProtocolError
from shoal.http import live, openapi
from shoal.http.json_api import struct_response
from shoal.tracker.admission import Admission

if TYPE_CHECKING:
    from shoal.core.handout import PeerView
    from shoal.storage.task_rows import TaskRows
    from shoal.tracker.service import TrackerService

SNAPSHOT = "/v1/dashboard"
EVENTS = "/v1/dashboard/events"
PUBLIC_PATHS = frozenset({SNAPSHOT, EVENTS})
"""The routes ``--public-dashboard`` opens to readers without the fleet's credential."""
SLICE = 1000
"""Tasks or peers a snapshot looks at before it yields to the event loop: an announce arriving meanwhile
waits for one slice, not for the whole snapshot."""
VIEW_LOOKS = 50
"""What a task's view (its URL made fit to show, its peers' progress) counts for in a slice, in looks at a
peer: work of that order, so a list of a thousand small tasks (``GET /v1/tasks?limit=1000``) is sliced too."""

T = TypeVar("T")

ROUTES = (
    openapi.Route(
        "GET", SNAPSHOT, "the dashboard's snapshot: live tasks, pools' pushes, load", response=TrackerDashboard
    ),
    openapi.Route(
        "GET",
        EVENTS,
        "the dashboard's snapshots as server-sent events (one `data:` line each), one a second",
        response=TrackerDashboard,
        media="text/event-stream",
    ),
    openapi.Route(
        "GET",
        "/v1/tasks",
        "the tracker's live tasks, busiest first, each with its least advanced peers",
        response=TaskList,
        query=(openapi.Query("limit", f"most tasks listed (1-1000, default {dashboard.MAX_TASKS})", int),),
    ),
)


class TrackerDashboardSource:
    """Builds the tracker's snapshots from its service and admission (read, never changed)."""

    def __init__(self, service: TrackerService, admission: Admission) -> None:
        self.service = service
        self.admission = admission
        self.started = service.clock()
        self.throughput = Throughput()

    async def tasks(self, limit: int = dashboard.MAX_TASKS) -> TaskList:
        """The busiest ``limit`` tasks: ranked by their swarms' counts, and only those viewed."""
        ranking: dashboard.Ranking[tuple[int, int, str], tuple[int, int, str, TaskRows]]
        ranking = dashboard.Ranking(limit, dashboard.busiest_order)
        walk = _Walk()
        async for part in walk.over(self.service.store.in_memory()):
            ranking.offer((len(r.swarm.peers), r.swarm.seeds, r.task.task_id, r) for r in part)
        views = []
        for _, _, _, rows in ranking.kept:
            await walk.spend(VIEW_LOOKS)
            views.append(await self._task(rows, walk))
        return TaskList(tuple(views), ranking.left_out)

    async def _task(self, rows: TaskRows, walk: _Walk) -> TaskView:
        task = rows.task
        manifest = task.manifest
        total = manifest.piece_count if manifest else None
        ranking: dashboard.Ranking[tuple[int, str], tuple[int, str, PeerView]]
        ranking = dashboard.Ranking(dashboard.MAX_PEERS, dashboard.straggler_order)
        async for part in walk.over(list(rows.swarm.peers.values())):
            ranking.offer((len(p.view.have), p.view.peer_id, p.view) for p in part)
        chosen = [view for _, _, view in ranking.kept]
        shown = [
            PeerProgress(
                peer_id=view.peer_id,
                host=view.host,
                site=view.site,
                rack=view.rack,
                pieces=len(view.have),
                progress=dashboard.progress(len(view.have), total),
            )
            for view in chosen
        ]
        return dashboard.task_view(
            task.task_id,
            task.url,
            task.generation,
            manifest.length if manifest else None,
            total,
            peers=len(rows.swarm.peers),
            seeds=rows.swarm.seeds,
            shown=shown,
            received=self.service.scope_bytes.totals(task.task_id),
        )

    def load(self, tasks: TaskList) -> TrackerLoad:
        service = self.service
        cluster = service.cluster
        return TrackerLoad(
            started=self.started,
            announces_per_second=self.throughput.announces_per_second,
            inflight=self.admission.inflight,
            max_inflight=self.admission.limit,
            shed=self.admission.shed,
            tasks=len(tasks.tasks) + tasks.more,
            peers=service.store.census.peers,
            stretch=service.demand.stretch(service.clock()),
            trackers=max(1, sum(1 for m in cluster.view().members if m.live)) if cluster is not None else 1,
        )

    async def pools(self) -> tuple[list[PoolPanel], int, int]:
        """The public pools' panels (at most MAX_POOLS), how many more there are, and how many are private."""
        pools = self.service.pools
        rows = await pools.store.every_pool()
        public = [row for row in rows if not row.private]
        panels = [await self._pool(row.name) for row in public[: dashboard.MAX_POOLS]]
        return panels, max(len(public) - dashboard.MAX_POOLS, 0), len(rows) - len(public)

    async def _pool(self, name: str) -> PoolPanel:
        pools = self.service.pools
        members, live_members = await pools.store.member_counts(name, pools.clock() - pools.member_ttl)
        jobs, count = await pools.store.latest_jobs(name, dashboard.MAX_JOBS)
        pushes = []
        for job in jobs:
            view = await pools.job_status(name, job)
            shown = view.members[: dashboard.MAX_MEMBERS]
            hidden = len(view.members) - len(shown)
            if hidden:
                view = msgspec.structs.replace(view, members=shown)
            pushes.append(PushPanel(view, hidden))
        return PoolPanel(name, members, live_members, tuple(pushes), max(count - len(jobs), 0))

    async def snapshot(self) -> TrackerDashboard:
        service = self.service
        now = service.clock()
        received = service.scope_bytes.grand_totals()
        self.throughput.record(now, received.origin, dashboard.peer_bytes(received), self.admission.taken)
        tasks = await self.tasks()
        panels, more_pools, private = await self.pools()
        return TrackerDashboard(
            time=now,
            load=self.load(tasks),
            tasks=tasks,
            throughput=self.throughput.samples(),
            pools=tuple(panels),
            more_pools=more_pools,
            private_pools=private,
        )


class _Walk:
    """The walks of one snapshot, cut into slices of SLICE items between two yields to the event loop,
    however the items are split between the walks (a thousand tasks of ten peers: ten slices)."""

    def __init__(self) -> None:
        self.looked = 0
        """Items looked at since the last yield."""

    async def spend(self, looks: int) -> None:
        """Count work other than a walk's, ``looks`` worth; yield first if the slice is used up."""
        await self._room()
        self.looked += looks

    async def over(self, items: Sequence[T]) -> AsyncIterator[Sequence[T]]:
        start = 0
        while start < len(items):
            await self._room()
            part = items[start : start + SLICE - self.looked]
            self.looked += len(part)
            start += len(part)
            yield part

    async def _room(self) -> None:
        if self.looked >= SLICE:
            await asyncio.sleep(0)
            self.looked = 0


FEED = web.AppKey("dashboard_feed", live.LiveFeed)
SOURCE = web.AppKey("dashboard_source", TrackerDashboardSource)


async def page(request: web.Request) -> web.Response:
    return live.page("tracker.html")


async def closed(request: web.Request) -> web.Response:
    return live.closed_page(
        "This tracker requires the fleet's credential for reading (--fleet-token-file). "
        "Its operator may open this read-only page with <code>shoal tracker --public-dashboard</code>."
    )


async def snapshot(request: web.Request) -> web.Response:
    body = await request.app[FEED].snapshot()
    return web.Response(body=body, content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    return await request.app[FEED].stream(request)


async def tasks(request: web.Request) -> web.Response:
    text = request.query.get("limit", str(dashboard.MAX_TASKS))
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ProtocolError("limit must be a whole number from 1 to 1000", field="limit")
    return struct_response(await request.app[SOURCE].tasks(int(text)))


def fleet_guarded(public: bool) -> Callable[[str], bool]:
    """The paths the fleet's credential guards (shoal.http.fleet_auth): the API's, but the dashboard's
    snapshots when the operator made them ``public``."""
    if public:
        return lambda path: path.startswith("/v1/") and path not in PUBLIC_PATHS
    return lambda path: path.startswith("/v1/")


def add_routes(app: web.Application, service: TrackerService, admission: Admission, *, readable: bool) -> None:
    """The dashboard's routes on the tracker's application; ``readable``: the page may be served (no fleet
    token, or ``--public-dashboard``), else ``/`` explains how to open it."""
    source = TrackerDashboardSource(service, admission)
    feed = live.LiveFeed(source.snapshot, period=dashboard.TICK)
    app[SOURCE] = source
    app[FEED] = feed

    async def stop_streams(app: web.Application) -> None:
        await feed.close()

    app.on_shutdown.append(stop_streams)
    app.router.add_get("/", page if readable else closed)
    app.router.add_get("/dashboard/{name}", live.asset_handler())
    app.router.add_get(SNAPSHOT, snapshot)
    app.router.add_get(EVENTS, events)
    app.router.add_get("/v1/tasks", tasks)
