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

Who may do what (:func:`refusal`; the README's ``shoal pool`` section says the same):

- **Create** a pool: the operator (the tracker's ``--admin-token-file``). A tracker without one lets
  anyone create (a trusted LAN), so there the first creator takes a name; the operator's credential, once
  configured, still removes any pool, so a squatted name is never lost to the operator.
- **Manage** a pool (push, cancel, remove): the operator, or the pool's owner: whoever holds the token its
  creation returned (every pool has one; a private pool's members hold it too). A pool from before owners
  existed has no token: only the operator manages it, or anyone on a tracker without an operator.
- **Use** a pool (join, heartbeat, report, read its status): anyone for a public pool; the token's holder
  or the operator for a private one.
- A member's heartbeats, reports and leave carry its secret: its id is derived from it
  (:func:`member_id_for`), as a peer's is (core.ids), so nobody can speak for a member whose secret they
  do not hold, and the tracker stores nothing for it.
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

from shoal.core.errors import IllegalTransition, ProtocolError
from shoal.core.messages import PEER_ID, POOL_NAME

_JOB_ID = re.compile(r"[0-9a-f]{16}")


def check_pool_name(name: str) -> str:
    if not POOL_NAME.match(name):
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


# -- who may do what ---------------------------------------------------------------------------------------


class Action(enum.Enum):
    CREATE = "create"
    MANAGE = "manage"  # push, cancel, remove
    USE = "use"  # join, heartbeat, report, read


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request's bearer token turned out to be: ``given`` at all, the operator's, the pool's."""

    given: bool = False
    operator: bool = False
    owner: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401: no credential given; 403: the one given does not do
    reason: str


def refusal(
    action: Action, credential: Credential, *, operator_configured: bool, private: bool = False, owned: bool = True
) -> Refusal | None:
    """None when ``credential`` may do ``action`` on a pool (``private``; ``owned``: it has a token), else
    why not (see the module's rules). A refusal says nothing about the pool beyond what it needs."""
    if credential.operator:
        return None
    match action:
        case Action.CREATE:
            allowed = not operator_configured
            need = "creating a pool needs the operator's token"
        case Action.MANAGE:
            allowed = credential.owner if owned else not operator_configured
            need = "this needs the pool's token or the operator's"
        case Action.USE:
            allowed = credential.owner or not private
            need = "this pool needs a token"
    if allowed:
        return None
    if not credential.given:
        return Refusal(401, need)
    return Refusal(403, "wrong token for this pool" if action is not Action.CREATE else need)


MEMBER_SECRET_HEX = 32
"""A member's secret is 16 random bytes, as lower-case hex (the daemon keeps it in its cache's index)."""


def member_id_for(secret: str) -> str:
    """The id a member holding ``secret`` heartbeats under: 24 hex characters of its SHA-256."""
    return hashlib.sha256(b"shoal-pool-member\n" + secret.encode()).hexdigest()[:24]


def member_secret_matches(member_id: str, secret: str) -> bool:
    ok = len(secret) == MEMBER_SECRET_HEX and all(c in "0123456789abcdef" for c in secret)
    return ok and hmac.compare_digest(member_id_for(secret), member_id)


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
