"""The tracker's pools: a JSON API under /v1/pools over the pool store and core.pool's decisions.

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
- One pool's changes are serialised by a per-pool lock: load, decide (core.pool), apply. Every change to
  what members must do (a push, a new assignment, a cancel, the pool removed) bumps the pool's version and
  wakes the members long-polling it, so a push reaches every member at once and they start together,
  which is what splits the origin work between them. Reports that give nobody new work (progress, done,
  a job complete) wake nobody: n members finishing at once would cost n * n heartbeats under the lock.
- A progress report of a running assignment changes no status, so it is one conditional update outside
  the lock (``PoolStore.progress``); only a report that changes a status is decided under it. Every
  member reports twice a second, so under the lock the progress reports would hold it much of the time,
  and a member's done report would queue behind them (benchmarks/pool_lab.py; figures in
  benchmarks/RESULTS.md).
- A sweep every ``SWEEP_SECONDS`` decides every open job again, so members that fell silent are marked
  left and lost replicas are repaired even when nobody else speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from shoal.core.errors import NotFound, PoolExists, ProtocolError
from shoal.core.pool import (
    Action,
    Assignment,
    Cancel,
    Credential,
    JobFailed,
    MemberStatus,
    PushEvent,
    Refusal,
    advance,
    advance_job,
    check_job_id,
    check_member_id,
    check_pool_name,
    decide,
    hash_token,
    member_secret_matches,
    new_job_id,
    new_token,
    refusal,
    replica_count,
    token_matches,
)
from shoal.core.pool_api import MEMBER_SECRET
from shoal.core.pool_messages import (
    AssignmentView,
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
    Replicas,
    ReportReply,
    WorkItem,
)
from shoal.core.push_policy import refused
from shoal.http.json_api import bearer_token, json_error, read_struct, struct_response
from shoal.http.openapi import Query, Route
from shoal.http.resolve import resolve
from shoal.storage.pool_store import JobRow, PoolFigures, PoolRow, PoolState, PoolStore
from shoal.storage.tracker_store import TrackerStore

log = logging.getLogger("shoal.tracker.pools")

SWEEP_SECONDS = 2.0
MAX_WAIT = 30.0
"""Longest long-poll a member may ask for; the tracker also keeps it under a third of the member TTL, so
a member waiting on a heartbeat is never taken for gone."""


class _Pool:
    """In-memory companions of a pool's rows: the lock and the version that long-polls wait on."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        # A random start, so a member's version from before a tracker restart never matches.
        self.version = secrets.randbelow(1 << 30)
        self.changed = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


class Pools:
    """The pools' service: authorisation, decisions and long-polls over the pool store."""

    def __init__(
        self,
        store: TrackerStore,
        clock: Callable[[], float] = time.time,
        *,
        member_ttl: float,
        operator_hash: str | None = None,
    ) -> None:
        self.store = PoolStore(store)
        self.clock = clock
        self.member_ttl = member_ttl
        self.operator_hash = operator_hash
        """The SHA-256 of the operator's token; None: anyone may create a pool (a trusted LAN)."""
        self._pools: dict[str, _Pool] = {}

    def _pool(self, name: str) -> _Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = _Pool()
        return pool

    async def pool(self, name: str) -> PoolRow:
        row = await self.store.get(check_pool_name(name))
        if row is None:
            raise NotFound(f"no pool {name!r}")
        return row

    async def create(self, name: str, private: bool, allow: tuple[str, ...] = ()) -> str:
        """Create the pool; its token, which only the caller ever sees."""
        check_pool_name(name)
        token = new_token()
        await self.store.create(name, hash_token(token), self.clock(), private=private, allow=allow)
        return token

    async def check_url(self, row: PoolRow, url: str) -> None:
        """A ProtocolError when ``url`` may not be pushed to the pool (core.push_policy)."""
        reason = refused(url, row.allow, await resolve(url))
        if reason is not None:
            raise ProtocolError(reason, field="url")

    async def remove(self, name: str) -> None:
        pool = self._pool(name)
        async with pool.lock:
            await self.store.remove(name)
            pool.bump()
        self._pools.pop(name, None)

    async def push(self, name: str, request: PushRequest) -> str:
        pool = self._pool(name)
        job_id = new_job_id()
        async with pool.lock:
            await self.store.add_job(name, job_id, request, self.clock())
            job = await self.store.job(name, job_id)
            assert job is not None
            await self._decide(name, job)
            pool.bump()
        return job_id

    async def cancel(self, name: str, job_id: str) -> None:
        pool = self._pool(name)
        async with pool.lock:
            job = await self.job(name, job_id)
            advance_job(job.job.status, Cancel())  # IllegalTransition (409) once it ended
            await self.store.cancel(job_id, self.clock())
            pool.bump()

    async def report(self, name: str, job_id: str, member_id: str, report: MemberReport) -> MemberStatus:
        pool = self._pool(name)
        if report.status is MemberStatus.RUNNING and await self.store.progress(
            name, check_job_id(job_id), member_id, report, self.clock()
        ):
            return MemberStatus.RUNNING
        async with pool.lock:
            job = await self.job(name, job_id)
            state = await self.store.state(name, job)
            current = state.assignments.get(member_id)
            if current is None:
                raise NotFound(f"member {member_id!r} has no part in job {job_id}")
            status = advance(current.status, report.event())
            await self.store.report(job_id, member_id, status, report, self.clock())
            if status is not current.status:
                # The state just read, with this report's outcome, is what the store now holds: decide on
                # it rather than read it all again.
                state.assignments[member_id] = Assignment(member_id, status, report.error)
                if await self._decide(name, job, state):
                    pool.bump()
            return status

    async def heartbeat(
        self,
        name: str,
        member_id: str,
        beat: Heartbeat,
        *,
        version: int | None,
        wait: float,
        allow: tuple[str, ...] = (),
    ) -> HeartbeatReply:
        """``allow``: the pool's allow-list, which each work item carries for the member to check."""
        pool = self._pool(name)
        async with pool.lock:
            await self.store.heartbeat(name, member_id, beat, self.clock())
            if await self._decide_open(name):
                pool.bump()
        wait = min(wait, self.member_ttl / 3)
        if version == pool.version and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pool.changed.wait(), wait)
        # A cancel is listed for a few heartbeats' worth of time: long enough for the member to hear of it.
        work = await self.store.member_work(name, member_id, cancelled_since=self.clock() - 3 * self.member_ttl)
        return HeartbeatReply(
            pool.version,
            [
                WorkItem(
                    job.request.url,
                    job.request.dest,
                    job.request.replicas,
                    job.request.digest,
                    job.job.job_id,
                    status,
                    list(allow),
                )
                for job, status in work
            ],
        )

    async def leave(self, name: str, member_id: str) -> None:
        pool = self._pool(name)
        async with pool.lock:
            await self.store.leave(name, member_id)
            if await self._decide_open(name):
                pool.bump()

    async def sweep(self) -> None:
        """Decide every open job again: members that fell silent leave, lost replicas are repaired."""
        for name in await self.store.open_pools():
            pool = self._pool(name)
            async with pool.lock:
                if await self._decide_open(name):
                    pool.bump()

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception:  # pragma: no cover - logged, tried again next round
                log.exception("pool sweep failed")

    async def job(self, name: str, job_id: str) -> JobRow:
        job = await self.store.job(name, check_job_id(job_id))
        if job is None:
            raise NotFound(f"no job {job_id} in pool {name!r}")
        return job

    async def _decide_open(self, name: str) -> bool:
        """Decide every open job of the pool; True when a member was given new work. The caller holds the
        lock."""
        assigned = False
        for job in await self.store.jobs(name, open_only=True):
            assigned = await self._decide(name, job) or assigned
        return assigned

    async def _decide(self, name: str, job: JobRow, state: PoolState | None = None) -> bool:
        """Decide ``job`` (on ``state`` when the caller has it current, else read) and save the outcome; True
        when a member was given new work (the caller then wakes the pool's long-polls). The caller holds the
        lock."""
        if state is None:
            state = await self.store.state(name, job)
        now = self.clock()
        decision = decide(job.job, state.members, state.assignments, now=now, ttl=self.member_ttl, length=state.length)
        if not decision.changes:
            return False
        status, error = job.job.status, job.job.error
        if decision.event is not None:
            status = advance_job(status, decision.event)
            error = _error_of(decision.event, error)
        await self.store.apply(job.job, decision, status, error, now)
        if decision.event is not None:
            log.info("pool %s job %s: %s", name, job.job.job_id, status.value)
        return bool(decision.assign)

    async def job_status(self, name: str, job: JobRow) -> JobView:
        now = self.clock()
        members = []
        live: set[str] = set()
        assignments = []
        for row in await self.store.assignments(job.job.job_id):
            is_live = row["last_seen"] is not None and now - row["last_seen"] < self.member_ttl
            if is_live:
                live.add(row["member_id"])
            assignments.append(Assignment(row["member_id"], MemberStatus(row["status"])))
            remaining = max(row["total"] - row["done"], 0)
            running = row["status"] == "running" and row["rate"] > 0
            members.append(
                AssignmentView(
                    member=row["member_id"],
                    name=row["name"],
                    url=row["url"],
                    site=row["site"],
                    rack=row["rack"],
                    live=is_live,
                    status=MemberStatus(row["status"]),
                    done=row["done"],
                    total=row["total"],
                    rate=row["rate"],
                    from_origin=row["from_origin"],
                    from_peers=row["from_peers"],
                    from_rack=row["from_rack"],
                    from_racks=row["from_racks"],
                    from_sites=row["from_sites"],
                    eta=remaining / row["rate"] if running else None,
                    error=row["error"],
                    updated=row["updated"],
                )
            )
        request = job.request
        return JobView(
            job=job.job.job_id,
            pool=name,
            url=request.url,
            dest=request.dest,
            digest=request.digest,
            status=job.job.status,
            error=job.job.error,
            replicas=Replicas(target=job.job.replicas, current=replica_count(assignments, live)),
            created=job.created,
            updated=job.updated,
            members=members,
        )


def _error_of(event: PushEvent, error: str) -> str:
    return event.error if isinstance(event, JobFailed) else error


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


def add_routes(app: web.Application, pools: Pools) -> None:
    app[POOLS] = pools
    for route, handler in _HANDLERS:
        app.router.add_route(route.method, route.path, handler)
