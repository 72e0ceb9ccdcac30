"""The mirror manager's live status page: every job's status, last success, next run, size and upstream.

::

    GET /                                the page (shoal/web/mirror.html); its files under /dashboard/{name}
    GET /v1/mirror/dashboard             one snapshot (core.dashboard.MirrorDashboard)
    GET /v1/mirror/dashboard/events      the snapshots as server-sent events, one a second

Read-only: the page has no control (``shoal mirror ctl`` with the token has them). With a token the
snapshots need it too, unless the operator opened them with ``--public-dashboard`` (or ``[manager]
public_dashboard = true``); the page and its static files hold no data and are always served. One
snapshot a tick is shared by every viewer (shoal.http.live). Each job that has run links its latest run
log (``/logs/{job}/latest``, shoal.mirror.log_relay), read on its worker and readable exactly when the
snapshots are.
"""

from __future__ import annotations

from aiohttp import web

from shoal.core import dashboard
from shoal.core.dashboard import MirrorDashboard, MirrorWorkerPanel
from shoal.http import live, openapi
from shoal.mirror.log_relay import log_link
from shoal.mirror.manager import MirrorManager

SNAPSHOT = "/v1/mirror/dashboard"
EVENTS = "/v1/mirror/dashboard/events"
PUBLIC_PATHS = frozenset({SNAPSHOT, EVENTS})
"""What ``--public-dashboard`` opens to readers without the token."""
PAGE_PATHS = ("/", "/dashboard/")
"""The page and its static files: no data, served to anyone (the page says when the data is closed)."""

ROUTES = (
    openapi.Route("GET", SNAPSHOT, "the status page's snapshot: jobs and workers", response=MirrorDashboard, auth=True),
    openapi.Route(
        "GET",
        EVENTS,
        "the status page's snapshots as server-sent events (one `data:` line each), one a second",
        response=MirrorDashboard,
        media="text/event-stream",
        auth=True,
    ),
)


def is_page(path: str) -> bool:
    return path == PAGE_PATHS[0] or path.startswith(PAGE_PATHS[1])


async def mirror_snapshot(manager: MirrorManager) -> MirrorDashboard:
    jobs = await manager.list_jobs(include_disabled=True)
    shown = jobs[: dashboard.MAX_MIRROR_JOBS]
    workers = await manager.workers()
    return MirrorDashboard(
        time=manager.clock(),
        started=manager.started,
        jobs=tuple(
            dashboard.mirror_job_panel(
                name=j.name,
                status=j.status,
                worker=j.worker,
                upstream=j.upstream,
                provider=j.provider,
                last_update=j.last_update,
                last_started=j.last_started,
                last_ended=j.last_ended,
                next_schedule=j.next_schedule,
                size=j.size,
                version=j.version,
                attempts=j.attempts,
                error_msg=j.error_msg,
                log=log_link(j.name) if j.worker is not None else None,
            )
            for j in shown
        ),
        more_jobs=len(jobs) - len(shown),
        workers=tuple(MirrorWorkerPanel(w.name, w.live, w.running, w.concurrency, w.last_seen) for w in workers),
    )


FEED = web.AppKey("mirror_dashboard_feed", live.LiveFeed)


def add_routes(app: web.Application, manager: MirrorManager) -> None:
    """The page's routes on the manager's application (``manager_http.guard`` decides who reads them)."""
    feed = live.LiveFeed(lambda: mirror_snapshot(manager), period=dashboard.TICK)
    app[FEED] = feed
    settings = manager.settings
    readable = not settings.token or settings.public_dashboard

    async def page(request: web.Request) -> web.Response:
        if readable:
            return live.page("mirror.html")
        return live.closed_page(
            "This mirror manager has a token. Its operator may open this read-only page with "
            "<code>shoal mirror manager --public-dashboard</code> (or <code>[manager] public_dashboard = true</code>)."
        )

    async def snapshot(request: web.Request) -> web.Response:
        return web.Response(body=await feed.snapshot(), content_type="application/json")

    async def events(request: web.Request) -> web.StreamResponse:
        return await feed.stream(request)

    async def stop_streams(app: web.Application) -> None:
        await feed.close()

    app.on_shutdown.append(stop_streams)
    app.router.add_get("/", page)
    app.router.add_get("/dashboard/{name}", live.asset_handler())
    app.router.add_get(SNAPSHOT, snapshot)
    app.router.add_get(EVENTS, events)
