"""The pool API's messages (``/v1/pools``, served by tracker.pool_routes): each once, as a msgspec struct that
decodes and checks the requests (core.structs.decode) and encodes the replies.

Requests refuse fields they do not know (``forbid_unknown_fields``): a misspelt ``replica`` must not push
to every member. Replies are read by clients of other versions, which take what they know.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from shoal.core.errors import ProtocolError, UsageError
from shoal.core.ids import canonical_url
from shoal.core.messages import POOL_NAME
from shoal.core.pool import (
    Completed,
    Evicted,
    Failed,
    MemberEvent,
    MemberStatus,
    Progress,
    PushStatus,
)
from shoal.core.push_policy import MAX_ENTRIES, check_entries
from shoal.core.whole_file import Digest, parse_user_digest

Count = Annotated[int, Meta(ge=0, lt=1 << 62)]
_TEXT = 8192
_ERROR_KEPT = 2000
_REPORTED = (MemberStatus.RUNNING, MemberStatus.DONE, MemberStatus.FAILED, MemberStatus.EVICTED)

# -- requests --------------------------------------------------------------------------------------------


class CreatePool(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Create a pool; its token (the owner's; a private pool's members join with it) is in the reply, once."""

    name: Annotated[str, Meta(pattern=POOL_NAME.pattern, description="1-64 of a-z, 0-9, '.', '_', '-'")]
    private: bool = False
    allow: (
        Annotated[
            list[Annotated[str, Meta(max_length=_TEXT)]],
            Meta(
                max_length=MAX_ENTRIES,
                description="what pushes may fetch: URL prefixes, addresses or networks, host names "
                "(core.push_policy); loopback and link-local addresses only when named here",
            ),
        ]
        | None
    ) = None

    def checked(self) -> CreatePool:
        try:
            allow = list(check_entries(self.allow or ()))
        except UsageError as exc:
            raise ProtocolError(str(exc), field="allow") from None
        return msgspec.structs.replace(self, allow=allow or None)


class PushRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Make a pool's members fetch ``url`` into their caches (``replicas`` of them; every one if null)."""

    url: Annotated[str, Meta(max_length=_TEXT)]
    dest: Annotated[str, Meta(max_length=_TEXT, description="also place the file at this absolute path")] | None = None
    replicas: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    digest: Digest | None = None

    def checked(self) -> PushRequest:
        try:
            url = canonical_url(self.url)
        except UsageError as exc:
            raise ProtocolError(str(exc), field="url") from None
        if "@" in urlsplit(self.url.strip()).netloc:
            # The job's URL is what every reader of the pool sees and every member fetches: credentials
            # would reach them all, and left out they would make each member's fetch fail at the origin.
            raise ProtocolError(
                "a pushed URL may not carry credentials (user:password@): every member fetches it and every "
                "reader of the pool sees it; publish the file through a seeder instead",
                field="url",
            )
        dest = self.dest
        if dest is not None and (not dest.startswith("/") or "\0" in dest or dest.endswith("/")):
            raise ProtocolError("dest must be an absolute file path", field="dest")
        try:
            digest = None if self.digest is None else parse_user_digest(self.digest)
        except UsageError as exc:
            raise ProtocolError(str(exc), field="digest") from None
        return msgspec.structs.replace(self, url=url, digest=digest)


class MemberReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A member's report on its assignment: its status and progress counters."""

    status: Annotated[MemberStatus, Meta(description="running, done, failed or evicted")]
    done: Count = 0
    total: Count = 0
    rate: Annotated[float, Meta(ge=0, lt=1e13)] = 0.0
    from_origin: Count = 0
    from_peers: Count = 0
    error: Annotated[str, Meta(max_length=_TEXT)] = ""
    from_rack: Count = 0
    """Of ``from_peers``: from peers of the member's rack (core.messages.ScopeBytes)."""
    from_racks: Count = 0
    """Of ``from_peers``: from other racks of its site."""
    from_sites: Count = 0
    """Of ``from_peers``: from other sites."""

    def checked(self) -> MemberReport:
        if self.status not in _REPORTED:
            raise ProtocolError("status must be running, done, failed or evicted", field="status")
        # A member's error is shown in status tables and stored per assignment: its start says what failed.
        return msgspec.structs.replace(self, error=self.error[:_ERROR_KEPT]) if len(self.error) > _ERROR_KEPT else self

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


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A member's heartbeat: its name, where it serves, its locality and its cache's room."""

    name: Annotated[str, Meta(max_length=255)] = ""
    url: Annotated[str, Meta(max_length=255)] = ""
    site: Annotated[str, Meta(max_length=64)] = ""
    rack: Annotated[str, Meta(max_length=64)] = ""
    free: Count = 0


# -- replies ---------------------------------------------------------------------------------------------


class PoolCreated(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    private: bool
    token: str | None = None
    """The pool's token: its owner's (and a private pool's members'); shown once, only its hash is kept."""
    allow: list[str] | None = None


class MemberView(msgspec.Struct, frozen=True):
    """A member of a pool, as its heartbeats describe it; ``live`` while heard from within the TTL."""

    pool: str
    member_id: str
    name: str
    url: str
    site: str
    rack: str
    free: int
    joined: float
    last_seen: float
    live: bool


class Replicas(msgspec.Struct, frozen=True):
    target: int | None
    """The copies the push keeps; null: every member."""
    current: int


class AssignmentView(msgspec.Struct, frozen=True):
    """One member's part in a job. The member's fields are null once it has left the pool."""

    member: str
    name: str | None
    url: str | None
    site: str | None
    rack: str | None
    live: bool
    status: MemberStatus
    done: int
    total: int
    rate: float
    from_origin: int
    from_peers: int
    from_rack: int
    from_racks: int
    from_sites: int
    eta: float | None
    """Seconds left at the current rate, while running."""
    error: str
    updated: float


class JobView(msgspec.Struct, frozen=True):
    """A push job's status, member by member."""

    job: str
    pool: str
    url: str
    dest: str | None
    digest: str | None
    status: PushStatus
    error: str
    replicas: Replicas
    created: float
    updated: float
    members: list[AssignmentView]


class PoolView(msgspec.Struct, frozen=True):
    name: str
    private: bool
    created: float
    members: list[MemberView]
    jobs: list[JobView]
    allow: list[str] | None = None
    """The pool's allow-list for pushes (core.push_policy); null: any URL but internal addresses."""


class PoolSummary(msgspec.Struct, frozen=True):
    """A pool in the tracker's list: no member, job or token in it, only counts."""

    name: str
    private: bool
    created: float
    members_live: int
    """Members heard from within the TTL."""
    jobs_running: int


class PoolList(msgspec.Struct, frozen=True):
    """The pools the asker may read (core.pool.refusal, Action.USE): every public pool, and the private
    ones its token opens (the operator's opens all)."""

    pools: list[PoolSummary]


class PoolRemoved(msgspec.Struct, frozen=True):
    removed: str


class MemberList(msgspec.Struct, frozen=True):
    members: list[MemberView]


class JobList(msgspec.Struct, frozen=True):
    jobs: list[JobView]


class WorkItem(msgspec.Struct, frozen=True):
    """An assignment of the member a heartbeat reply is for: the push, its job and the assignment's status."""

    url: str
    dest: str | None
    replicas: int | None
    digest: str | None
    job: str
    status: MemberStatus
    allow: list[str] = []
    """The pool's allow-list: the member checks the URL against it, with the addresses it resolves, before
    it fetches (core.push_policy)."""


class HeartbeatReply(msgspec.Struct, frozen=True):
    version: int
    """The pool's version: a heartbeat naming it waits until the pool changes."""
    work: list[WorkItem]


class MemberLeft(msgspec.Struct, frozen=True):
    left: bool


class ReportReply(msgspec.Struct, frozen=True):
    status: MemberStatus
    """The assignment's status after the report."""
