"""The client side of the pool API (tracker.pool_routes), sans I/O: each operation as a Call (its method, path,
body and reply message), and the one mapping of a reply to that message or an error.

Two transports run these calls: tracker.pool_client (urllib, for ``shoal pool``: it starts quickly) and
daemon.pools (aiohttp, in the daemon). Bodies are the core.pool_messages structs, encoded here; a reply
is read by core.tracker_replies, a refusal (an unknown pool, a missing or wrong token, a bad push, a
report that no longer fits) being a PoolRefused with the tracker's message and status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import quote

import msgspec

from shoal.core.errors import PoolRefused
from shoal.core.pool_messages import (
    CreatePool,
    Heartbeat,
    HeartbeatReply,
    JobList,
    JobView,
    MemberLeft,
    MemberList,
    MemberReport,
    PoolCreated,
    PoolList,
    PoolRemoved,
    PoolView,
    PushRequest,
    ReportReply,
)
from shoal.core.tracker_replies import read_reply

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One request of the pool API: ``path`` is under the tracker's base URL."""

    method: str
    path: str
    reply: type[R]
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Headers of this call beyond the transport's (a member's secret)."""

    def read(self, tracker: str, status: int, reason: str, content_type: str, body: bytes) -> R:
        """The reply to this call as its message; TrackerUnavailable or PoolRefused otherwise."""
        return read_reply(tracker, status, reason, content_type, body, self.reply, refused)


def refused(message: str, status: int) -> PoolRefused:
    return PoolRefused(f"the tracker refused: {message} (HTTP {status})", status=status)


def _pool(pool: str) -> str:
    return f"/v1/pools/{quote(pool, safe='')}"


def _job(pool: str, job: str) -> str:
    return f"{_pool(pool)}/jobs/{quote(job, safe='')}"


MEMBER_SECRET = "Shoal-Member-Secret"
"""The header that carries a member's secret (core.pool.member_id_for) on its heartbeats, reports and leave."""


def _member(secret: str) -> tuple[tuple[str, str], ...]:
    return ((MEMBER_SECRET, secret),)


def create(pool: str, *, private: bool, allow: list[str] | None = None) -> Call[PoolCreated]:
    return Call("POST", "/v1/pools", PoolCreated, msgspec.json.encode(CreatePool(pool, private, allow or None)))


def listing() -> Call[PoolList]:
    """The pools the caller may read (a private one only with its token or the operator's)."""
    return Call("GET", "/v1/pools", PoolList)


def show(pool: str) -> Call[PoolView]:
    return Call("GET", _pool(pool), PoolView)


def remove(pool: str) -> Call[PoolRemoved]:
    return Call("DELETE", _pool(pool), PoolRemoved)


def members(pool: str) -> Call[MemberList]:
    return Call("GET", f"{_pool(pool)}/members", MemberList)


def heartbeat(
    pool: str, member: str, beat: Heartbeat, *, wait: float, version: int | None, secret: str
) -> Call[HeartbeatReply]:
    """A heartbeat that waits up to ``wait`` seconds for the pool to change from ``version``."""
    query = f"?wait={wait:g}" + ("" if version is None else f"&version={version}")
    path = f"{_pool(pool)}/members/{quote(member, safe='')}{query}"
    return Call("POST", path, HeartbeatReply, msgspec.json.encode(beat), _member(secret))


def leave(pool: str, member: str, *, secret: str) -> Call[MemberLeft]:
    return Call("DELETE", f"{_pool(pool)}/members/{quote(member, safe='')}", MemberLeft, headers=_member(secret))


def push(pool: str, request: PushRequest) -> Call[JobView]:
    return Call("POST", f"{_pool(pool)}/jobs", JobView, msgspec.json.encode(request))


def jobs(pool: str) -> Call[JobList]:
    return Call("GET", f"{_pool(pool)}/jobs", JobList)


def job(pool: str, job_id: str) -> Call[JobView]:
    return Call("GET", _job(pool, job_id), JobView)


def cancel(pool: str, job_id: str) -> Call[JobView]:
    return Call("POST", f"{_job(pool, job_id)}/cancel", JobView)


def report(pool: str, job_id: str, member: str, body: MemberReport, *, secret: str) -> Call[ReportReply]:
    path = f"{_job(pool, job_id)}/members/{quote(member, safe='')}"
    return Call("POST", path, ReportReply, msgspec.json.encode(body), _member(secret))
