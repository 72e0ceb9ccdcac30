"""The mirror manager's HTTP API (JSON, under /v1/mirror/), for workers and ``shoal mirror ctl``::

    GET    /v1/mirror/health                          no token needed: {"ok", "session"}
    POST   /v1/mirror/workers/{name}/register         {"url", "concurrency", "running": [{"job", "run_id"}]}
    POST   /v1/mirror/workers/{name}/poll             {"session", "ack"} -> {"commands": [...]} (long-poll)
    POST   /v1/mirror/jobs/{name}/report              {"worker", "run_id", "event", "error", "size", "version"}
    GET    /v1/mirror/jobs[?all=1][&status=S]         the jobs' status (disabled ones only with all=1)
    GET    /v1/mirror/jobs/{name}
    POST   /v1/mirror/jobs/{name}/{action}            start (body {"force": true} optional), stop, disable,
                                                      enable, restart
    POST   /v1/mirror/reload                          {"worker": W} optional: that worker re-reads its config
    GET    /v1/mirror/workers
    DELETE /v1/mirror/workers/{name}
    POST   /v1/mirror/flush                           drop the disabled jobs

Every route but health needs ``Authorization: Bearer TOKEN`` when the manager has a token, compared in
constant time; a missing or wrong one is a 401 before the request is read, so it changes nothing.
Errors are JSON ``{"error": ...}``: 400 bad input, 401 token, 404 unknown job or worker, 409 a status
change the job's lifecycle forbids (core.mirror_job.IllegalTransition), a stale run, no worker free, or
"register again" (with ``"register": true``), 503 the database is away. Nothing a client sends is a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from shoal.core.errors import (
    NoWorker,
    ProtocolError,
    StaleRun,
    StaleSession,
    StoreError,
    UnknownJob,
    UnknownWorker,
    UsageError,
)
from shoal.core.mirror_job import JobStatus
from shoal.http.json_api import bearer_token, json_error, json_errors, read_json
from shoal.mirror.manager import MirrorManager, job_json

log = logging.getLogger("shoal.mirror.manager")

MANAGER = web.AppKey("mirror_manager", MirrorManager)
PREFIX = "/v1/mirror"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ACTIONS = ("start", "stop", "disable", "enable", "restart")


def _authorized(request: web.Request, token: str) -> bool:
    given = bearer_token(request)
    # compare_digest on bytes: constant time whatever the input, and no TypeError for non-ASCII text.
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    token = request.app[MANAGER].settings.token
    if token and request.path != f"{PREFIX}/health" and not _authorized(request, token):
        return json_error(401, "a valid bearer token is required", **{"WWW-Authenticate": 'Bearer realm="shoal"'})
    try:
        return await handler(request)
    except StaleSession as exc:
        return web.json_response({"error": str(exc), "register": True}, status=409)
    except (StaleRun, NoWorker) as exc:
        return json_error(409, str(exc))
    except (UnknownJob, UnknownWorker) as exc:
        return json_error(404, str(exc))
    except UsageError as exc:  # a config file that does not parse on reload
        return json_error(400, str(exc))
    # IllegalTransition (a 409), other client errors, the database failing and anything unexpected: the
    # shared json_errors middleware outside this one.


def _name(request: web.Request, what: str = "name") -> str:
    name = request.match_info[what]
    if not _NAME.fullmatch(name):
        raise ProtocolError(f"{name[:80]!r} is not a valid name ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})", field=what)
    return name


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    if optional and not (await request.read()).strip():
        return {}
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ProtocolError("the body must be a JSON object")
    return data


def _field(data: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    if data.get(key) is None:
        if default is ...:
            raise ProtocolError(f"{key!r} is required", field=key)
        return default
    value = data[key]
    # bool is an int in Python; a JSON true is not a count.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"{key!r} must be a {kind.__name__}, not {type(value).__name__}", field=key)
    return value


def _count(data: dict[str, Any], key: str, low: int, default: Any = ...) -> int:
    value = _field(data, key, int, default)
    if value < low or value > 2**62:
        raise ProtocolError(f"{key!r} must be between {low} and 2**62", field=key)
    return int(value)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "session": request.app[MANAGER].session})


async def register(request: web.Request) -> web.Response:
    name = _name(request)
    data = await _body(request)
    url = _field(data, "url", str, "")
    concurrency = _count(data, "concurrency", 1)
    running_raw = _field(data, "running", list, [])
    running: list[tuple[str, str]] = []
    for item in running_raw:
        if not (isinstance(item, dict) and isinstance(item.get("job"), str) and isinstance(item.get("run_id"), str)):
            raise ProtocolError("each running entry must be {'job': str, 'run_id': str}", field="running")
        running.append((item["job"], item["run_id"]))
    return web.json_response(await request.app[MANAGER].register(name, url, concurrency, running))


async def poll(request: web.Request) -> web.Response:
    name = _name(request)
    data = await _body(request)
    session = _field(data, "session", str)
    ack = _count(data, "ack", 0, 0)
    commands = await request.app[MANAGER].poll(name, session, ack)
    return web.json_response({"commands": commands})


async def report(request: web.Request) -> web.Response:
    name = _name(request)
    data = await _body(request)
    reply = await request.app[MANAGER].report(
        name,
        worker=_field(data, "worker", str),
        run_id=_field(data, "run_id", str),
        event=_field(data, "event", str),
        error=_field(data, "error", str, ""),
        size=_count(data, "size", 0, 0),
        version=_field(data, "version", str, None),
    )
    return web.json_response(reply)


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
    return web.json_response({"jobs": jobs})


async def get_job(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    job = await manager.job(_name(request))
    return web.json_response(job_json(job, manager.spec_of(job)))


async def job_action(request: web.Request) -> web.Response:
    name = _name(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(reason=f"unknown action {action[:40]!r} (known: {', '.join(ACTIONS)})")
    data = await _body(request, optional=True)
    force = _field(data, "force", bool, False)
    if force and action != "start":
        raise ProtocolError("'force' is only for start", field="force")
    return web.json_response(await request.app[MANAGER].command(name, action, force=force))


async def reload(request: web.Request) -> web.Response:
    data = await _body(request, optional=True)
    worker = _field(data, "worker", str, None)
    if worker is not None and not _NAME.fullmatch(worker):
        raise ProtocolError(f"{worker[:80]!r} is not a valid worker name", field="worker")
    return web.json_response(await request.app[MANAGER].reload(worker))


async def list_workers(request: web.Request) -> web.Response:
    return web.json_response({"workers": await request.app[MANAGER].workers()})


async def remove_worker(request: web.Request) -> web.Response:
    return web.json_response(await request.app[MANAGER].remove_worker(_name(request)))


async def flush(request: web.Request) -> web.Response:
    return web.json_response(await request.app[MANAGER].flush())


def build_app(manager: MirrorManager) -> web.Application:
    """The manager as an aiohttp application: it opens the store and runs the scheduler while it serves."""
    errors = json_errors(log, unavailable=(StoreError,), what="the mirror manager's database")
    app = web.Application(middlewares=[errors, guard], client_max_size=1024 * 1024)
    app[MANAGER] = manager

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with manager:
            scheduler = asyncio.create_task(manager.run_forever())
            yield
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler

    app.cleanup_ctx.append(lifecycle)
    r = app.router
    r.add_get(f"{PREFIX}/health", health)
    r.add_post(f"{PREFIX}/workers/{{name}}/register", register)
    r.add_post(f"{PREFIX}/workers/{{name}}/poll", poll)
    r.add_get(f"{PREFIX}/workers", list_workers)
    r.add_delete(f"{PREFIX}/workers/{{name}}", remove_worker)
    r.add_get(f"{PREFIX}/jobs", list_jobs)
    r.add_get(f"{PREFIX}/jobs/{{name}}", get_job)
    r.add_post(f"{PREFIX}/jobs/{{name}}/report", report)
    r.add_post(f"{PREFIX}/jobs/{{name}}/{{action}}", job_action)
    r.add_post(f"{PREFIX}/reload", reload)
    r.add_post(f"{PREFIX}/flush", flush)
    return app
