"""The tracker's pool API: the JSON routes under /v1/pools, and who may call what, over tracker.pools.

::

    GET    /v1/pools                                   the pools the caller may read, with counts
    POST   /v1/pools                                   create {"name", "private", "allow"}; the pool's token
                                                       is in the reply, once
    GET    /v1/pools/{pool}                            the pool, its members and its jobs
    DELETE /v1/pools/{pool}                            remove the pool, its members and jobs
    GET    /v1/pools/{pool}/members                    members, with whether each is live
    POST   /v1/pools/{pool}/members/{member}           heartbeat (joins); ?version=N&wait=S long-polls for
                                                       work: the reply comes when the pool changes
    DELETE /v1/pools/{pool}/members/{member}           the member leaves
    POST   /v1/pools/{pool}/jobs                       push {"url", "dest", "replicas", "digest"}
    GET    /v1/pools/{pool}/jobs                       every job's status
    GET    /v1/pools/{pool}/jobs/{job}                 one job's status, member by member
    POST   /v1/pools/{pool}/jobs/{job}/cancel          cancel
    POST   /v1/pools/{pool}/jobs/{job}/members/{m}     a member's report (progress, done, failed, evicted)

Rules:

- Who may do what is core.pool.refusal's rule, on ``Authorization: Bearer TOKEN`` (the operator's token,
  from ``--admin-token-file``, or the pool's): creating needs the operator's (when the tracker has one);
  pushing, cancelling and removing the pool's or the operator's; a private pool needs one of them on every
  route. None is a 401, a wrong one a 403, and neither reply says anything about the pool beyond that. The
  list of pools shows each caller only the pools it may read: a private pool's name is not given away.
- A member's heartbeat, report and leave carry its secret (``Shoal-Member-Secret``), whose hash is the
  member's id (core.pool.member_id_for): a request under another member's id is refused (403) before it
  changes anything.
- A push's URL must pass the pool's allow-list and reach no internal address (core.push_policy), with the
  addresses the tracker resolves its host to; members check again before they fetch.
- A change whose writes were left out because another tracker took the pool over meanwhile (PoolMoved:
  tracker.pools, "A pool's writes carry its epoch") is answered 503 with Retry-After, as an announce of a
  task that moved is: the client asks again, and is forwarded to the new owner. Nothing of it was written.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web
from aiohttp.typedefs import Handler

from shoal.core.errors import PoolExists, PoolMoved, ProtocolError
from shoal.core.pool import (
    Action,
    Credential,
    Refusal,
    check_member_id,
    member_secret_matches,
    refusal,
    token_matches,
)
from shoal.core.pool_api import MEMBER_SECRET
from shoal.core.pool_messages import (
    CreatePool,
    Heartbeat,
    HeartbeatReply,
    JobList,
    JobView,
    MemberLeft,
    MemberList,
    MemberReport,
    MemberView,
    PoolCreated,
    PoolList,
    PoolRemoved,
    PoolSummary,
    PoolView,
    PushRequest,
    ReportReply,
)
from shoal.http.json_api import bearer_token, json_error, read_struct, struct_response
from shoal.http.openapi import Query, Route
from shoal.storage.pool_store import PoolFigures, PoolRow
from shoal.tracker.cluster import RETRY_AFTER
from shoal.tracker.pools import MAX_WAIT, Pools

log = logging.getLogger("shoal.tracker.pools")

POOLS = web.AppKey("pools", Pools)


def credential(pools: Pools, request: web.Request, row: PoolRow | None) -> Credential:
    """What the request's bearer token is: the operator's, the pool's owner's, or neither."""
    token = bearer_token(request)
    if token is None:
        return Credential()
    operator = pools.operator_hash is not None and token_matches(pools.operator_hash, token)
    owner = row is not None and row.token_hash is not None and token_matches(row.token_hash, token)
    return Credential(True, operator, owner)


def _refusal(pools: Pools, request: web.Request, action: Action, row: PoolRow | None) -> Refusal | None:
    private, owned = (row.private, row.token_hash is not None) if row is not None else (False, True)
    return refusal(
        action,
        credential(pools, request, row),
        operator_configured=pools.operator_hash is not None,
        private=private,
        owned=owned,
    )


def _check(pools: Pools, request: web.Request, action: Action, row: PoolRow | None) -> None:
    verdict = _refusal(pools, request, action, row)
    if verdict is None:
        return
    if verdict.status == 401:
        raise web.HTTPUnauthorized(reason=verdict.reason, headers={"WWW-Authenticate": "Bearer"})
    raise web.HTTPForbidden(reason=verdict.reason)


async def authorize(pools: Pools, request: web.Request, action: Action = Action.USE) -> PoolRow:
    """The pool the request names, once the request may do ``action`` on it (core.pool.refusal): a 401
    without a token, a 403 with one that does not do."""
    row = await pools.pool(request.match_info["pool"])
    _check(pools, request, action, row)
    return row


def _member_id(request: web.Request) -> str:
    """The member the path names, once the request carries its secret: a 401 without one, a 403 with
    another member's. Checked before the request changes anything."""
    member_id = check_member_id(request.match_info["member"])
    secret = request.headers.get(MEMBER_SECRET)
    if secret is None:
        raise web.HTTPUnauthorized(
            reason=f"a member's requests carry its secret ({MEMBER_SECRET}); a daemon older than pool owners "
            "does not send it and must be upgraded"
        )
    if not member_secret_matches(member_id, secret.strip()):
        raise web.HTTPForbidden(reason=f"member {member_id!r} is not yours: the secret does not name it")
    return member_id


async def create_pool(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    _check(pools, request, Action.CREATE, None)
    body = await read_struct(request, CreatePool)
    allow = tuple(body.allow or ())
    try:
        token = await pools.create(body.name, body.private, allow)
    except PoolExists as exc:
        return json_error(409, str(exc))
    log.info("pool %s created (%s)", body.name, "private" if body.private else "public")
    return struct_response(PoolCreated(body.name, body.private, token, body.allow), status=201)


async def list_pools(request: web.Request) -> web.Response:
    """The pools the request may read, as anyone may read a public pool's members and jobs: a private pool
    is listed only to its token's holders and the operator, so an outsider learns not even its name."""
    pools = request.app[POOLS]
    counts = await pools.store.live_counts(live_since=pools.clock() - pools.member_ttl)
    listed = []
    for row in await pools.store.every():
        if _refusal(pools, request, Action.USE, row) is None:
            figures = counts.get(row.name, PoolFigures())
            listed.append(PoolSummary(row.name, row.private, row.created, figures.members_live, figures.jobs_running))
    return struct_response(PoolList(listed))


async def show_pool(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request)
    jobs = [await pools.job_status(row.name, job) for job in await pools.store.jobs(row.name)]
    allow = list(row.allow) or None
    return struct_response(PoolView(row.name, row.private, row.created, await _members(pools, row), jobs, allow))


async def remove_pool(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request, Action.MANAGE)
    await pools.remove(row.name)
    log.info("pool %s removed", row.name)
    return struct_response(PoolRemoved(row.name))


async def _members(pools: Pools, row: PoolRow) -> list[MemberView]:
    now = pools.clock()
    return [
        MemberView(**member, live=now - member["last_seen"] < pools.member_ttl)
        for member in await pools.store.members(row.name)
    ]


async def list_members(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request)
    return struct_response(MemberList(await _members(pools, row)))


def relay_patience(request: web.Request, patience: float) -> float:
    """Seconds a tracker forwarding ``request`` to the pool's owner waits for the reply: ``patience``, and a
    heartbeat's long-poll (``wait``) more. A malformed ``wait`` adds nothing: the owner refuses it."""
    try:
        wait = float(request.query.get("wait", "0"))
    except ValueError:
        return patience
    return patience + (min(wait, MAX_WAIT) if math.isfinite(wait) and wait > 0 else 0.0)


def _query_number(request: web.Request, key: str, *, high: float) -> float | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ProtocolError(f"{key} must be a number", field=key) from None
    if not 0 <= value <= high:
        raise ProtocolError(f"{key} must be from 0 to {high:g}", field=key)
    return value


async def heartbeat(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request)
    member_id = _member_id(request)
    beat = await read_struct(request, Heartbeat)
    version = _query_number(request, "version", high=float(1 << 62))
    wait = _query_number(request, "wait", high=MAX_WAIT) or 0.0
    reply = await pools.heartbeat(
        row.name, member_id, beat, version=None if version is None else int(version), wait=wait, allow=row.allow
    )
    return struct_response(reply)


async def leave(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request)
    await pools.leave(row.name, _member_id(request))
    return struct_response(MemberLeft(True))


async def push(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request, Action.MANAGE)
    body = await read_struct(request, PushRequest)
    await pools.check_url(row, body.url)
    job_id = await pools.push(row.name, body)
    job = await pools.store.job(row.name, job_id)
    assert job is not None
    return struct_response(await pools.job_status(row.name, job), status=201)


async def list_jobs(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request)
    return struct_response(JobList([await pools.job_status(row.name, job) for job in await pools.store.jobs(row.name)]))


async def show_job(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request)
    job = await pools.job(row.name, request.match_info["job"])
    return struct_response(await pools.job_status(row.name, job))


async def cancel(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request, Action.MANAGE)
    await pools.cancel(row.name, request.match_info["job"])
    job = await pools.job(row.name, request.match_info["job"])
    return struct_response(await pools.job_status(row.name, job))


async def report(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    row = await authorize(pools, request)
    member_id = _member_id(request)
    body = await read_struct(request, MemberReport)
    status = await pools.report(row.name, request.match_info["job"], member_id, body)
    return struct_response(ReportReply(status))


_LONG_POLL = (
    Query("version", "the version of the member's last reply: the reply waits until the pool changes", int),
    Query("wait", f"seconds to wait for a change, at most {MAX_WAIT:g}", float),
)
_HANDLERS = (
    (
        Route("POST", "/v1/pools", "create a pool", request=CreatePool, response=PoolCreated, status=201, auth=True),
        create_pool,
    ),
    (
        Route(
            "GET",
            "/v1/pools",
            "the pools the caller may read: each one's name, whether it is private, live members, running jobs",
            response=PoolList,
            auth=True,
        ),
        list_pools,
    ),
    (Route("GET", "/v1/pools/{pool}", "the pool, its members and jobs", response=PoolView, auth=True), show_pool),
    (Route("DELETE", "/v1/pools/{pool}", "remove the pool", response=PoolRemoved, auth=True), remove_pool),
    (Route("GET", "/v1/pools/{pool}/members", "the members", response=MemberList, auth=True), list_members),
    (
        Route(
            "POST",
            "/v1/pools/{pool}/members/{member}",
            "a member's heartbeat (joins the pool); the reply lists its assignments",
            request=Heartbeat,
            response=HeartbeatReply,
            query=_LONG_POLL,
            auth=True,
        ),
        heartbeat,
    ),
    (Route("DELETE", "/v1/pools/{pool}/members/{member}", "the member leaves", response=MemberLeft, auth=True), leave),
    (
        Route(
            "POST",
            "/v1/pools/{pool}/jobs",
            "push a download to the pool's members",
            request=PushRequest,
            response=JobView,
            status=201,
            auth=True,
        ),
        push,
    ),
    (Route("GET", "/v1/pools/{pool}/jobs", "every job's status", response=JobList, auth=True), list_jobs),
    (Route("GET", "/v1/pools/{pool}/jobs/{job}", "a job's status", response=JobView, auth=True), show_job),
    (Route("POST", "/v1/pools/{pool}/jobs/{job}/cancel", "cancel a job", response=JobView, auth=True), cancel),
    (
        Route(
            "POST",
            "/v1/pools/{pool}/jobs/{job}/members/{member}",
            "a member's report on its assignment",
            request=MemberReport,
            response=ReportReply,
            auth=True,
        ),
        report,
    ),
)
ROUTES = tuple(route for route, _ in _HANDLERS)
"""The pool API, as /v1/openapi.json describes it (with the tracker's own routes)."""


def _moved_is_busy(handler: Handler) -> Handler:
    """``handler``, with a change left out because the pool moved (PoolMoved) answered 503 with Retry-After."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PoolMoved as exc:
            return json_error(503, f"{exc}; ask again", **{"Retry-After": RETRY_AFTER})

    return handle


def add_routes(app: web.Application, pools: Pools) -> None:
    app[POOLS] = pools
    for route, handler in _HANDLERS:
        app.router.add_route(route.method, route.path, _moved_is_busy(handler))
