"""The mirror manager's HTTP API (JSON, under /v1/mirror/), for workers and ``shoal mirror ctl``::

    GET    /v1/mirror/health                          no token needed: {"ok", "session"}
    POST   /v1/mirror/workers/{name}/register         {"url", "concurrency", "running": [{"job", "run_id"}]}
    POST   /v1/mirror/workers/{name}/poll             {"session", "ack"} -> {"commands": [...]} (long-poll)
    POST   /v1/mirror/jobs/{name}/report              {"worker", "run_id", "event", "error", "size", "version"}
    POST   /v1/mirror/workers/{name}/logs/{id}        a worker's answer to a log read (shoal.mirror.log_relay)
    GET    /v1/mirror/jobs[?all=1][&status=S]         the jobs' status (disabled ones only with all=1)
    GET    /v1/mirror/jobs/{name}
    GET    /v1/mirror/jobs/{name}/log[?run=R][&offset=N][&limit=N]   part of a run log, read on the job's worker
    GET    /logs/{name}/latest, /logs/{name}/{run}    the same as plain text: the status page's log link
    POST   /v1/mirror/jobs/{name}/{action}            start (body {"force": true, "worker": W} optional),
                                                      stop, disable, enable, restart
    POST   /v1/mirror/jobs/{name}/size                {"size": BYTES}: the size shown until the next success
    POST   /v1/mirror/reload                          {"worker": W} optional: that worker re-reads its config
    GET    /v1/mirror/workers
    DELETE /v1/mirror/workers/{name}
    POST   /v1/mirror/flush                           drop the disabled jobs
    GET    /v1/openapi.json                           no token needed: this API's OpenAPI document
    GET    /metrics                                   no token needed: Prometheus metrics (shoal.mirror.metrics)
    GET    /jobs                                      every job in tunasync's shape (a JSON array), for mirror
                                                      status pages; no token needed with public_status

Each body and reply is a struct of shoal.mirror.messages, and ``ROUTES`` names them; the OpenAPI document
is generated from those, so it describes exactly what the handlers accept.

Every route but health, the OpenAPI document and the metrics needs ``Authorization: Bearer TOKEN`` when the manager has
a token, compared in constant time; a missing or wrong one is a 401 before the request is read, so it
changes nothing. ``[manager] public_status`` (``--public-status``) opens ``GET /jobs`` to anyone: a
read-only view of what a mirror site shows its visitors anyway, while the token still guards every route
that changes something or tells more (errors, workers). ``public_dashboard`` (``--public-dashboard``) opens
the status page's data and its log links (``/logs/...`` and ``GET .../log``): a run log shows what the
page's error column shows, at more length, with the job's secrets redacted on its worker (core.log_share).
Errors are JSON ``{"error": ...}``: 400 bad input, 401 token, 404 unknown job or worker (or log), 409 a
status change the job's lifecycle forbids (core.mirror_job.IllegalTransition), a stale run, no worker free,
or "register again" (with ``"register": true``), 503 the database is away (or the worker holding a job's
logs), 504 a worker that did not send a log in time. Nothing a client sends is a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from shoal import __version__
from shoal.core.errors import (
    LogUnavailable,
    NoWorker,
    ProtocolError,
    StaleRun,
    StaleSession,
    StoreError,
    UnknownJob,
    UnknownWorker,
    UsageError,
)
from shoal.core.log_share import MAX_LOG_READ
from shoal.core.mirror_job import JobStatus
from shoal.core.structs import decode
from shoal.http import openapi
from shoal.http.json_api import bearer_token, json_error, json_errors, read_struct, struct_response
from shoal.http.limits import read_body
from shoal.http.metrics import PATH as metrics_path
from shoal.http.metrics import ROUTE as metrics_route
from shoal.http.metrics import serve_metrics
from shoal.http.openapi import Query, Route
from shoal.mirror import dashboard
from shoal.mirror import metrics as mirror_metrics
from shoal.mirror.job_views import job_view
from shoal.mirror.log_relay import LOG_PAGES, LogRelay
from shoal.mirror.manager import MirrorManager
from shoal.mirror.messages import (
    Flushed,
    JobAction,
    JobLog,
    LogAnswer,
    LogReceived,
    ManagerError,
    ManagerHealth,
    MirrorJobList,
    MirrorJobView,
    Poll,
    PollReply,
    Register,
    Registered,
    Reloaded,
    ReloadRequest,
    Report,
    RunReportReply,
    SetSize,
    TunasyncJob,
    WorkerList,
    WorkerRemoved,
)

log = logging.getLogger("shoal.mirror.manager")

MANAGER = web.AppKey("mirror_manager", MirrorManager)
LOGS = web.AppKey("mirror_logs", LogRelay)
PREFIX = "/v1/mirror"
_JOB_LOG = re.compile(rf"{re.escape(PREFIX)}/jobs/[^/]+/log")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ACTIONS = ("start", "stop", "disable", "enable", "restart")
TUNASYNC_JOBS = "/jobs"
_OPEN = (f"{PREFIX}/health", openapi.PATH, metrics_path)
"""What anyone may read without the token: whether the manager is up, what its API is, and its metrics
(statuses and times; no job's upstream or error)."""


MAX_BODY = 6 * MAX_LOG_READ + (64 << 10)
"""The largest request body: a worker's answer to a log read, whose text of MAX_LOG_READ bytes JSON may
write six bytes a byte (a control character as ``\\u0001``). Every route that takes a body needs the token
(a 401 comes before the body is read), so only a client holding it may send this much."""

M = TypeVar("M")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authorized(request: web.Request, token: str) -> bool:
    given = bearer_token(request)
    # compare_digest on bytes: constant time whatever the input, and no TypeError for non-ASCII text.
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _open(request: web.Request) -> bool:
    """Readable without the token: _OPEN, the status page's files, its snapshots when the dashboard is made
    public, and tunasync's ``GET /jobs`` when the status is."""
    path = request.path
    settings = request.app[MANAGER].settings
    if path in _OPEN or dashboard.is_page(path):
        return True
    if settings.public_dashboard and (
        path in dashboard.PUBLIC_PATHS
        or (request.method in ("GET", "HEAD") and (path.startswith(LOG_PAGES) or _JOB_LOG.fullmatch(path)))
    ):
        return True
    return settings.public_status and request.method in ("GET", "HEAD") and path == TUNASYNC_JOBS


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[MANAGER].settings.token
    if token and not _open(request) and not _authorized(request, token):
        return json_error(401, "a valid bearer token is required", **{"WWW-Authenticate": 'Bearer realm="shoal"'})
    try:
        return await handler(request)
    except StaleSession as exc:
        return struct_response(ManagerError(str(exc), register=True), status=409)
    except (StaleRun, NoWorker) as exc:
        return json_error(409, str(exc))
    except (UnknownJob, UnknownWorker) as exc:
        return json_error(404, str(exc))
    except LogUnavailable as exc:
        return json_error(exc.status, str(exc))
    except UsageError as exc:  # a config file that does not parse on reload
        return json_error(400, str(exc))
    # IllegalTransition (a 409), other client errors, the database failing and anything unexpected: the
    # shared json_errors middleware outside this one.


def _name(request: web.Request, what: str = "name") -> str:
    name = request.match_info[what]
    if not _NAME.fullmatch(name):
        raise ProtocolError(f"{name[:80]!r} is not a valid name ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})", field=what)
    return name


async def _optional(request: web.Request, kind: type[M]) -> M:
    """A body that may be left out: ``kind``'s defaults then."""
    raw = await read_body(request)
    return decode(raw, kind) if raw.strip() else kind()


async def health(request: web.Request) -> web.Response:
    return struct_response(ManagerHealth(ok=True, session=request.app[MANAGER].session))


async def register(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_struct(request, Register)
    running = [(item.job, item.run_id) for item in body.running]
    return struct_response(await request.app[MANAGER].register(name, body.url, body.concurrency, running))


async def poll(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_struct(request, Poll)
    return struct_response(PollReply(await request.app[MANAGER].poll(name, body.session, body.ack)))


async def report(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_struct(request, Report)
    reply = await request.app[MANAGER].report(
        name,
        worker=body.worker,
        run_id=body.run_id,
        event=body.event,
        error=body.error,
        size=body.size,
        size_text=body.size_text,
        version=body.version,
    )
    return struct_response(reply)


def _flag(request: web.Request, key: str) -> bool:
    value = request.query.get(key, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no", ""):
        raise ProtocolError(f"{key} must be 1 or 0", field=key)
    return value in ("1", "true", "yes", "")


async def list_jobs(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in JobStatus}:
        known = ", ".join(s.value for s in JobStatus)
        raise ProtocolError(f"unknown status {status[:40]!r} (known: {known})", field="status")
    include = _flag(request, "all") if "all" in request.query else False
    jobs = await request.app[MANAGER].list_jobs(include_disabled=include or status == "disabled", status=status)
    return struct_response(MirrorJobList(jobs))


async def get_job(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    job = await manager.job(_name(request))
    return struct_response(job_view(job, manager.spec_of(job)))


async def job_action(request: web.Request) -> web.Response:
    name = _name(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(reason=f"unknown action {action[:40]!r} (known: {', '.join(ACTIONS)})")
    body = await _optional(request, JobAction)
    for key in ("force", "worker"):
        if getattr(body, key) and action != "start":
            raise ProtocolError(f"{key!r} is only for start", field=key)
    return struct_response(await request.app[MANAGER].command(name, action, force=body.force, worker=body.worker))


async def set_size(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_struct(request, SetSize)
    return struct_response(await request.app[MANAGER].set_size(name, body.size, body.text))


async def tunasync_jobs(request: web.Request) -> web.Response:
    zone = datetime.now().astimezone().tzinfo or UTC  # the manager's local zone, as tunasync writes times
    return struct_response(await request.app[MANAGER].tunasync_jobs(zone))


def _count(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ProtocolError(f"{key} must be a number of bytes, not {value[:40]!r}", field=key)
    return int(value)


async def _read_log(request: web.Request, run: str | None) -> JobLog:
    limit = _count(request, "limit")
    if limit is not None and not 1 <= limit <= MAX_LOG_READ:
        raise ProtocolError(f"limit must be 1 to {MAX_LOG_READ} bytes", field="limit")
    return await request.app[LOGS].read(
        _name(request), run, offset=_count(request, "offset"), limit=limit or MAX_LOG_READ
    )


async def job_log(request: web.Request) -> web.Response:
    return struct_response(await _read_log(request, request.query.get("run")))


async def log_page(request: web.Request) -> web.Response:
    """A run log as plain text, for a browser: the status page's log link."""
    piece = await _read_log(request, request.match_info["run"])
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return web.Response(text=piece.text, content_type="text/plain", charset="utf-8", headers=headers)


async def log_answer(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_struct(request, LogAnswer)
    return struct_response(LogReceived(request.app[LOGS].deliver(name, request.match_info["id"], body)))


async def reload(request: web.Request) -> web.Response:
    body = await _optional(request, ReloadRequest)
    return struct_response(await request.app[MANAGER].reload(body.worker))


async def list_workers(request: web.Request) -> web.Response:
    return struct_response(WorkerList(await request.app[MANAGER].workers()))


async def remove_worker(request: web.Request) -> web.Response:
    return struct_response(await request.app[MANAGER].remove_worker(_name(request)))


async def flush(request: web.Request) -> web.Response:
    return struct_response(await request.app[MANAGER].flush())


_WORKER = f"{PREFIX}/workers/{{name}}"
_JOB = f"{PREFIX}/jobs/{{name}}"
_API: dict[Route, Handler] = {
    Route("GET", f"{PREFIX}/health", "whether the manager is up, and its session", response=ManagerHealth): health,
    Route(
        "POST", f"{_WORKER}/register", "a worker (re-)registers", request=Register, response=Registered, auth=True
    ): register,
    Route(
        "POST",
        f"{_WORKER}/poll",
        "a worker's heartbeat and command fetch (a long poll); a 409 with register: true asks it to register again",
        request=Poll,
        response=PollReply,
        auth=True,
    ): poll,
    Route(
        "POST",
        f"{_WORKER}/logs/{{id}}",
        "a worker's answer to a read of a run log it holds",
        request=LogAnswer,
        response=LogReceived,
        auth=True,
    ): log_answer,
    Route("GET", f"{PREFIX}/workers", "the workers", response=WorkerList, auth=True): list_workers,
    Route("DELETE", _WORKER, "forget a worker", response=WorkerRemoved, auth=True): remove_worker,
    Route(
        "GET",
        f"{PREFIX}/jobs",
        "the jobs' status",
        response=MirrorJobList,
        query=(
            Query("all", "1: include the disabled jobs"),
            Query("status", "only the jobs in this status"),
        ),
        auth=True,
    ): list_jobs,
    Route("GET", _JOB, "one job's status", response=MirrorJobView, auth=True): get_job,
    Route(
        "GET",
        f"{_JOB}/log",
        "part of one of the job's run logs, read on its worker, secrets redacted "
        "(no token needed with public_dashboard)",
        response=JobLog,
        query=(
            Query("run", "the run log's name (see runs); latest when left out"),
            Query("offset", "read forward from this byte; the log's tail when left out", int),
            Query("limit", f"the most bytes to return (1 to {MAX_LOG_READ}, the default)", int),
        ),
        auth=True,
    ): job_log,
    Route(
        "GET",
        f"{LOG_PAGES}{{name}}/{{run}}",
        "a run log as plain text (run: latest, or a name from runs), the status page's log link "
        "(no token needed with public_dashboard)",
        query=(Query("limit", f"the most bytes of its tail to return (1 to {MAX_LOG_READ}, the default)", int),),
        media="text/plain",
        auth=True,
    ): log_page,
    Route(
        "POST",
        f"{_JOB}/size",
        "set the size a job's status shows until its next successful sync",
        request=SetSize,
        response=MirrorJobView,
        auth=True,
    ): set_size,
    Route(
        "POST", f"{_JOB}/report", "a worker reports on a run", request=Report, response=RunReportReply, auth=True
    ): report,
    Route(
        "POST",
        f"{_JOB}/{{action}}",
        f"act on a job: {', '.join(ACTIONS)} (the body may be left out)",
        request=JobAction,
        response=MirrorJobView,
        auth=True,
    ): job_action,
    Route(
        "POST",
        f"{PREFIX}/reload",
        "re-read the manager's config file, or have one worker re-read its own (the body may be left out)",
        request=ReloadRequest,
        response=Reloaded,
        auth=True,
    ): reload,
    Route("POST", f"{PREFIX}/flush", "drop the disabled jobs", response=Flushed, auth=True): flush,
    Route(
        "GET",
        TUNASYNC_JOBS,
        "every job in tunasync's GET /jobs shape, for mirror status pages (no token with public_status)",
        response=list[TunasyncJob],
        auth=True,
    ): tunasync_jobs,
}
ROUTES = (*_API, *dashboard.ROUTES, metrics_route)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of the manager's API, from the structs its handlers read and write."""
    return openapi.document("Shoal mirror manager", __version__, ROUTES, description=__doc__ or "")


def build_app(manager: MirrorManager) -> web.Application:
    """The manager as an aiohttp application: it opens the store and runs the scheduler while it serves."""
    errors = json_errors(log, unavailable=(StoreError,), what="the mirror manager's database")
    app = web.Application(middlewares=[errors, guard], client_max_size=MAX_BODY)
    app[MANAGER] = manager
    app[LOGS] = LogRelay(manager)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with manager:
            scheduler = asyncio.create_task(manager.run_forever())
            yield
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler

    app.cleanup_ctx.append(lifecycle)
    for route, handler in _API.items():
        app.router.add_route(route.method, route.path, handler)
    dashboard.add_routes(app, manager)
    openapi.serve(app, openapi_document())
    mirror_metrics.install(serve_metrics(app), manager)
    return app
