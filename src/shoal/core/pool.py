"""Pools and push jobs: who fetches a pushed URL, and what each part of a push is doing. Pure.

A pool is a named group of daemons (members) on a tracker. A push job asks the members to fetch one URL
into their caches: every member, or ``replicas`` of them. The tracker keeps the state and calls
:func:`decide` whenever something happens (a push, a member's heartbeat or report, the expiry sweep); the
decision says whom to assign, whose assignments to mark as left, and what happens to the job. No asyncio,
SQL or clock reads: members' ``last_seen`` and ``now`` come in as values.

One member's part in a job, an assignment (``_MEMBER_TRANSITIONS`` is this diagram)::

                Progress              Completed             Evicted
    assigned ─────────────▶ running ─────────────▶ done ─────────────▶ evicted
       │  └──────────── Completed ───────────────▶  │
       │                      │                     │
       ├──── Failed ──────────┴──▶ failed           │
       ├──── Cancelled ───────┬──▶ cancelled        │
       │                      │                     │
       └──── Left ────────────┴──▶ left ◀── Left ───┘
                                     │
                                     └── Progress ──▶ running, Completed ──▶ done   (the member came back)

    Progress and Completed are also accepted in their own target state (reports repeat).

A job (``_JOB_TRANSITIONS``)::

                 Finished                           Reopened
    running ───────────────────▶ complete ────────────────────▶ running
       │                            │   (replicas short: a copy was lost and a member can fetch one)
       │ Failed                     │
       ▼                            │ Cancel
    failed        running ── Cancel ┴──────▶ cancelled

Rules, and why:

- A member is live while it has been heard from within the TTL (the tracker's peer TTL). Assignments of a member that is
  not live are marked ``left``: their leases on the tracker expire the same way, so the pieces they were
  fetching from the origin pass to the others, and the status says who left.
- A push to every member (``replicas`` None) also assigns members that join while the job runs: they take
  a share of the origin work and receive the file. Once complete, a job assigns no one new.
- A push with ``replicas`` K keeps K live holders (``done``). Assigned and running members count as copies
  on their way, so a repair is started once, not at every heartbeat. Candidates are live members that have
  no assignment in the job (one whose copy was evicted, or that failed, is not asked again) and, when the
  file's length is known, room for it; they are spread across sites, then racks, then by most room.
- A job is complete when no live member is still fetching and at least one holds the file; it fails
  when no live member is fetching or holds it and nobody can be assigned. A member marked left that is
  heard from again counts as fetching: it resumes its assignment (a restarted daemon, say). A failed
  job's error is the one its members failed with most often (an origin failing fails each the same way).
- Pool tokens are random (:func:`new_token`); only their SHA-256 is stored, and a given token is compared
  in constant time. A slow password hash buys nothing against 256-bit random tokens.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shoal.core.errors import IllegalTransition, ProtocolError, UsageError
from shoal.core.ids import canonical_url
from shoal.core.messages import PEER_ID

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_JOB_ID = re.compile(r"[0-9a-f]{16}")


def check_pool_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ProtocolError(
            f"bad pool name {name!r}: 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            field="pool",
        )
    return name


def check_member_id(member_id: str) -> str:
    """A member id has a peer id's form (a daemon's id in its pools)."""
    if not PEER_ID.match(member_id):
        raise ProtocolError("member ids are 1-64 of A-Z, a-z, 0-9, '_', '.' and '-'", field="member")
    return member_id


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise ProtocolError(f"bad job id {job_id!r}: 16 lower-case hex characters", field="job")
    return job_id


def new_job_id() -> str:
    return secrets.token_hex(8)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(stored_hash: str, token: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_token(token))


class MemberStatus(enum.Enum):
    """One member's part in a push job."""

    ASSIGNED = "assigned"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    EVICTED = "evicted"
    CANCELLED = "cancelled"
    LEFT = "left"


class PushStatus(enum.Enum):
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


# -- assignment events: reported by the member (Progress, Completed, Failed, Evicted) or decided by the
# tracker (Left, Cancelled) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """The member is fetching."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The member holds the whole, verified file in its cache."""


@dataclass(frozen=True, slots=True)
class Failed:
    error: str


@dataclass(frozen=True, slots=True)
class Evicted:
    """The member's copy is no longer in its cache."""


@dataclass(frozen=True, slots=True)
class Left:
    """The member stopped heartbeating, or left the pool."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The job was cancelled."""


MemberEvent = Progress | Completed | Failed | Evicted | Left | Cancelled

_M = MemberStatus
_MEMBER_TRANSITIONS: dict[tuple[MemberStatus, type[MemberEvent]], MemberStatus] = {
    (_M.ASSIGNED, Progress): _M.RUNNING,
    (_M.RUNNING, Progress): _M.RUNNING,
    (_M.LEFT, Progress): _M.RUNNING,
    (_M.ASSIGNED, Completed): _M.DONE,
    (_M.RUNNING, Completed): _M.DONE,
    (_M.DONE, Completed): _M.DONE,
    (_M.LEFT, Completed): _M.DONE,
    (_M.ASSIGNED, Failed): _M.FAILED,
    (_M.RUNNING, Failed): _M.FAILED,
    (_M.DONE, Evicted): _M.EVICTED,
    (_M.ASSIGNED, Cancelled): _M.CANCELLED,
    (_M.RUNNING, Cancelled): _M.CANCELLED,
    (_M.ASSIGNED, Left): _M.LEFT,
    (_M.RUNNING, Left): _M.LEFT,
    (_M.DONE, Left): _M.LEFT,
}

ACTIVE = frozenset({MemberStatus.ASSIGNED, MemberStatus.RUNNING})
"""Statuses in which a member still works on the job."""

_WORKING = ACTIVE | {MemberStatus.LEFT}
"""What counts as work under way for a live member: a member marked left that is heard from again resumes
its assignment (its heartbeat replies list it), so it keeps the job open instead of letting it fail."""


def advance(status: MemberStatus, event: MemberEvent) -> MemberStatus:
    """The assignment's next status; IllegalTransition for a pair the diagram does not list."""
    try:
        return _MEMBER_TRANSITIONS[(status, type(event))]
    except KeyError:
        raise IllegalTransition("assignment", status, event) from None


# -- job events, decided by :func:`decide` (Cancel comes from a user) -----------------------------------


@dataclass(frozen=True, slots=True)
class Finished:
    """No live member is fetching any more, and at least one holds the file."""


@dataclass(frozen=True, slots=True)
class JobFailed:
    error: str


@dataclass(frozen=True, slots=True)
class Reopened:
    """A copy was lost and the replica count is short: a member was assigned to fetch one."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """A user cancelled the job."""


PushEvent = Finished | JobFailed | Reopened | Cancel

_P = PushStatus
_JOB_TRANSITIONS: dict[tuple[PushStatus, type[PushEvent]], PushStatus] = {
    (_P.RUNNING, Finished): _P.COMPLETE,
    (_P.RUNNING, JobFailed): _P.FAILED,
    (_P.COMPLETE, Reopened): _P.RUNNING,
    (_P.RUNNING, Cancel): _P.CANCELLED,
    (_P.COMPLETE, Cancel): _P.CANCELLED,
}


def advance_job(status: PushStatus, event: PushEvent) -> PushStatus:
    try:
        return _JOB_TRANSITIONS[(status, type(event))]
    except KeyError:
        raise IllegalTransition("job", status, event) from None


# -- values the tracker loads and hands to decide() ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    last_seen: float
    site: str = ""
    rack: str = ""
    free: int = 0  # bytes of room in the member's cache

    def live(self, now: float, ttl: float) -> bool:
        return now - self.last_seen < ttl


@dataclass(frozen=True, slots=True)
class Assignment:
    member_id: str
    status: MemberStatus
    error: str = ""


@dataclass(frozen=True, slots=True)
class PushJob:
    job_id: str
    url: str
    replicas: int | None  # None: every member
    status: PushStatus = PushStatus.RUNNING
    error: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    assign: tuple[str, ...] = ()  # members to give a new assignment
    left: tuple[str, ...] = ()  # members whose assignment becomes left
    event: PushEvent | None = None  # what happens to the job, if anything

    @property
    def changes(self) -> bool:
        return bool(self.assign or self.left or self.event)


def replica_count(assignments: Iterable[Assignment], live: set[str]) -> int:
    """Live members holding the file."""
    return sum(1 for a in assignments if a.status is MemberStatus.DONE and a.member_id in live)


def decide(
    job: PushJob,
    members: Iterable[Member],
    assignments: Mapping[str, Assignment],
    *,
    now: float,
    ttl: float,
    length: int | None = None,
) -> Decision:
    """What follows from the job's state and its pool's members at ``now``; see the module's rules.
    ``ttl``: seconds a member may stay silent and still be live (the tracker's peer TTL). ``length``: the
    file's length once the tracker knows it (members without room for it are not picked)."""
    if job.status in (PushStatus.FAILED, PushStatus.CANCELLED):
        return Decision()
    members = list(members)
    live = {m.member_id for m in members if m.live(now, ttl)}
    left = tuple(
        sorted(
            a.member_id
            for a in assignments.values()
            if a.member_id not in live and (a.status in ACTIVE or a.status is MemberStatus.DONE)
        )
    )
    after = {mid: Assignment(mid, MemberStatus.LEFT) if mid in left else a for mid, a in assignments.items()}
    candidates = [
        m for m in members if m.member_id in live and m.member_id not in after and (length is None or m.free >= length)
    ]
    assign: tuple[str, ...] = ()
    if job.replicas is None:
        if job.status is PushStatus.RUNNING:
            assign = tuple(sorted(m.member_id for m in candidates))
    else:
        on_the_way = sum(1 for a in after.values() if a.member_id in live and a.status in _WORKING)
        short = job.replicas - replica_count(after.values(), live) - on_the_way
        if short > 0:
            # Copies held or on their way; a member that failed or evicted holds nothing at its site.
            holding = {mid for mid, a in after.items() if a.status in _WORKING or a.status is MemberStatus.DONE}
            holders = [m for m in members if m.member_id in live and m.member_id in holding]
            assign = _spread(candidates, holders, short)
    active = sum(1 for a in after.values() if a.member_id in live and a.status in _WORKING) + len(assign)
    held = replica_count(after.values(), live)
    event: PushEvent | None = None
    if job.status is PushStatus.RUNNING and active == 0:
        event = Finished() if held else JobFailed(_common_error(after.values()))
    elif job.status is PushStatus.COMPLETE and assign:
        event = Reopened()
    return Decision(assign, left, event)


def _spread(candidates: list[Member], holders: list[Member], count: int) -> tuple[str, ...]:
    """Pick ``count`` candidates, each time the one whose site, then rack, has the fewest copies so far,
    then the one with the most room."""
    sites = Counter(m.site for m in holders)
    racks = Counter((m.site, m.rack) for m in holders)
    pool = sorted(candidates, key=lambda m: (-m.free, m.member_id))
    chosen: list[str] = []
    for _ in range(min(count, len(pool))):
        best = min(pool, key=lambda m: (sites[m.site], racks[(m.site, m.rack)]))
        pool.remove(best)
        chosen.append(best.member_id)
        sites[best.site] += 1
        racks[(best.site, best.rack)] += 1
    return tuple(chosen)


def _common_error(assignments: Iterable[Assignment]) -> str:
    errors = Counter(a.error for a in assignments if a.status is MemberStatus.FAILED and a.error)
    if not errors:
        return "no live member could fetch the file"
    return errors.most_common(1)[0][0]


# -- request bodies --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushRequest:
    url: str
    dest: str | None = None
    replicas: int | None = None
    digest: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> PushRequest:
        body = _object(data, {"url", "dest", "replicas", "digest"})
        url = _string(body, "url", required=True)
        assert url is not None
        try:
            url = canonical_url(url)
        except UsageError as exc:
            raise ProtocolError(str(exc), field="url") from None
        dest = _string(body, "dest")
        if dest is not None and (not dest.startswith("/") or "\0" in dest or dest.endswith("/")):
            raise ProtocolError("dest must be an absolute file path", field="dest")
        replicas = body.get("replicas")
        if replicas is not None and (type(replicas) is not int or not 1 <= replicas <= 10_000):
            raise ProtocolError("replicas must be an integer from 1 to 10000", field="replicas")
        digest = _string(body, "digest")
        if digest is not None:
            kind, _, value = digest.lower().partition(":")
            if kind != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ProtocolError("digest must be sha256: and 64 hex characters", field="digest")
            digest = f"sha256:{value}"
        return cls(url, dest, replicas, digest)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "dest": self.dest, "replicas": self.replicas, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class MemberReport:
    """A member's report on its assignment: its status and progress counters."""

    status: MemberStatus
    done: int = 0
    total: int = 0
    rate: float = 0.0
    from_origin: int = 0
    from_peers: int = 0
    error: str = ""

    @classmethod
    def from_json(cls, data: Any) -> MemberReport:
        body = _object(data, {"status", "done", "total", "rate", "from_origin", "from_peers", "error"})
        try:
            status = MemberStatus(body.get("status"))
        except ValueError:
            raise ProtocolError("status must be running, done, failed or evicted", field="status") from None
        if status not in (MemberStatus.RUNNING, MemberStatus.DONE, MemberStatus.FAILED, MemberStatus.EVICTED):
            raise ProtocolError("status must be running, done, failed or evicted", field="status")
        counters = {key: _count(body, key) for key in ("done", "total", "from_origin", "from_peers")}
        rate = body.get("rate", 0)
        if type(rate) not in (int, float) or not 0 <= rate < 1e13:
            raise ProtocolError("rate must be a non-negative number", field="rate")
        error = _string(body, "error") or ""
        return cls(status, rate=float(rate), error=error[:2000], **counters)

    def event(self) -> MemberEvent:
        match self.status:
            case MemberStatus.RUNNING:
                return Progress()
            case MemberStatus.DONE:
                return Completed()
            case MemberStatus.FAILED:
                return Failed(self.error or "failed")
            case _:
                return Evicted()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "done": self.done,
            "total": self.total,
            "rate": self.rate,
            "from_origin": self.from_origin,
            "from_peers": self.from_peers,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A member's heartbeat: its name, where it serves, its locality and its cache's room."""

    name: str
    url: str
    site: str = ""
    rack: str = ""
    free: int = 0

    @classmethod
    def from_json(cls, data: Any) -> Heartbeat:
        body = _object(data, {"name", "url", "site", "rack", "free"})
        labels = {key: _string(body, key) or "" for key in ("name", "url", "site", "rack")}
        for key, value in labels.items():
            if len(value) > (255 if key in ("name", "url") else 64):
                raise ProtocolError(f"{key} is too long", field=key)
        return cls(free=_count(body, "free"), **labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "site": self.site,
            "rack": self.rack,
            "free": self.free,
        }


def _object(data: Any, keys: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError("the body must be a JSON object")
    unknown = sorted(set(data) - keys)
    if unknown:
        raise ProtocolError(f"unknown field {unknown[0]!r}", field=unknown[0])
    return data


def _string(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"{key} is required", field=key)
        return None
    if not isinstance(value, str) or len(value) > 8192:
        raise ProtocolError(f"{key} must be a string", field=key)
    return value


def _count(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if type(value) is not int or not 0 <= value < 1 << 62:
        raise ProtocolError(f"{key} must be a non-negative integer", field=key)
    return value
