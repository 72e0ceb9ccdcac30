"""The messages of the mirror manager's HTTP API (shoal.mirror.manager_http), one msgspec struct each.

The manager decodes requests and encodes replies with these structs, the client (shoal.mirror.client)
encodes requests and decodes replies with them, and the OpenAPI document (``manager_http.ROUTES``) is
generated from them, so the three cannot disagree. Rules, and why:

- A request's unknown fields are ignored, so a newer worker or ctl can add one without breaking an older
  manager; what a field may hold is its type's and its ``msgspec.Meta``'s to say.
- Counts are bounded by ``MAX_COUNT``: the store keeps them in a signed 64-bit column.
- Commands to a worker are a tagged union on ``op``: a worker reads ``{"op": "run", ...}`` into ``RunJob``.
- The field names are the wire's since the API began; a reply keeps every field it had.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from shoal.core.mirror_config import JobSpec
from shoal.core.mirror_values import Name

MAX_COUNT = 2**62
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
SizeText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
"""A size as a log or a user wrote it (``1.41T``, ``1,234,567``)."""


# -- the worker protocol ----------------------------------------------------------------------------------


class ManagerHealth(msgspec.Struct, frozen=True):
    ok: bool
    session: str
    """The manager process's session: it changes when the manager restarts."""


class RunningJob(msgspec.Struct, frozen=True):
    job: str
    run_id: str


class Register(msgspec.Struct, frozen=True):
    """A worker (re-)registers: where its seeder is, how many jobs it runs at once, which runs it has."""

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
    url: str = ""
    running: list[RunningJob] = []


class Registered(msgspec.Struct, frozen=True):
    session: str
    hold: float
    """Seconds a poll waits for a command before answering empty."""
    lost: list[str]
    """Jobs the manager counted as running on this worker's previous process, now failed as lost."""


class Poll(msgspec.Struct, frozen=True):
    """A worker's heartbeat and command fetch; ``ack`` is the last command's ``seq`` it has handled."""

    session: str
    ack: Count = 0


class RunJob(msgspec.Struct, frozen=True, tag="run", tag_field="op"):
    """Run an attempt of a job (a new run, or the manager's retry of one)."""

    job: JobSpec
    run_id: str
    attempt: int
    force: bool = False
    seq: int = 0


class CancelJob(msgspec.Struct, frozen=True, tag="cancel", tag_field="op"):
    """Cancel a job's attempt: only that run's when ``run_id`` is given."""

    job: str
    run_id: str | None = None
    seq: int = 0


class ReloadWorker(msgspec.Struct, frozen=True, tag="reload", tag_field="op"):
    """Re-read the worker's config file, then register again."""

    seq: int = 0


class SendLog(msgspec.Struct, frozen=True, tag="log", tag_field="op"):
    """Send part of a job's run log (core.log_share: ``run`` None is the latest; no ``offset``: the tail of
    ``limit`` bytes) to the manager as request ``id`` (shoal.mirror.log_relay). The job's spec says where
    its logs are and which secrets to hide."""

    id: str
    job: JobSpec
    run: str | None = None
    offset: Count | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)] = 1 << 20
    seq: int = 0


Command = RunJob | CancelJob | ReloadWorker | SendLog


class PollReply(msgspec.Struct, frozen=True):
    commands: list[Command]


class Report(msgspec.Struct, frozen=True):
    """What became of a run: ``syncing`` (its pre-job hooks are done), ``success`` or ``failure``."""

    worker: str
    run_id: str
    event: str
    error: str = ""
    size: Count = 0
    size_text: SizeText | None = None
    """success: the size as the run's log wrote it (what ``size_pattern`` captured, or rsync's ``Total file
    size``), which ``GET /jobs`` shows as tunasync does; None: the bytes in ``size`` are shown."""
    version: str | None = None


class RunReportReply(msgspec.Struct, frozen=True):
    status: str
    retry: bool
    """Run the next attempt now, as number ``attempt``."""
    attempt: int


class LogPiece(msgspec.Struct, frozen=True):
    """Part of one run's log, redacted (core.log_share): the worker's answer to a SendLog, and (as
    ``JobLog``) the manager's to a reader. ``text`` is the bytes ``[start, end)`` of a log that had ``size``
    bytes when read; a reader following the run asks next from ``end``."""

    run: str
    """The run log's file name (``<job>_<UTC time>.log``, ``.log.fail`` once it failed)."""
    latest: str | None
    """The run ``latest`` points at now."""
    runs: list[str]
    """The job's run logs kept on its worker, oldest first."""
    size: Count
    start: Count
    end: Count
    text: str


class LogAnswer(msgspec.Struct, frozen=True):
    """What a worker posts for a SendLog: the piece, or why there is none (``status`` is the HTTP status the
    manager answers its reader with: 404 no such log, 400 a bad name, 503 the log cannot be read)."""

    piece: LogPiece | None = None
    error: str = ""
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 404


class LogReceived(msgspec.Struct, frozen=True):
    """The manager's reply to a worker's LogAnswer: False when no reader waits for it any more."""

    received: bool


class JobLog(msgspec.Struct, frozen=True):
    """``GET /v1/mirror/jobs/{name}/log``: part of one of the job's run logs, read on the worker that holds it.

    ``latest`` and ``runs`` are that worker's; ``running_on`` is the worker of the job's newest run (its
    status' ``worker``): when it is another, a newer run may be there (a reader following the job goes on
    there, shoal.cli.mirror_logs)."""

    job: str
    worker: str
    run: str
    latest: str | None
    runs: list[str]
    size: int
    start: int
    end: int
    text: str
    running_on: str | None = None


# -- what users ask (shoal mirror ctl) --------------------------------------------------------------------


class MirrorJobView(msgspec.Struct, frozen=True):
    """A job's status as the API and ``shoal mirror ctl list --format json`` show it (tunasync's fields)."""

    name: str
    worker: str | None
    status: str
    last_update: float | None
    last_started: float | None
    last_ended: float | None
    next_schedule: float | None
    upstream: str
    provider: str
    size: int
    version: str | None
    attempts: int
    error_msg: str
    queued: bool = False
    """A start is waiting for a free slot on a worker that runs all it may (``start`` without ``force``)."""


class MirrorJobList(msgspec.Struct, frozen=True):
    jobs: list[MirrorJobView]


class JobAction(msgspec.Struct, frozen=True):
    force: bool = False
    """start only: start at once even if the worker runs all it may (without it such a start waits)."""
    worker: Name | None = None
    """start only: run on this worker (tunasynctl's ``-w``); a job that names its worker runs only there."""


class SetSize(msgspec.Struct, frozen=True):
    """The size a job's status shows until its next successful sync (tunasynctl's ``set-size``)."""

    size: Count
    text: SizeText | None = None
    """The size as the user wrote it (``300G``), shown as is by ``GET /jobs``, as tunasync does."""


class ReloadRequest(msgspec.Struct, frozen=True):
    worker: Name | None = None
    """Ask this worker to re-read its config file; None: the manager re-reads its own."""


class Reloaded(msgspec.Struct, frozen=True):
    """What a reload did: the jobs the manager's config added, updated and disabled, or the worker asked."""

    added: list[str] = []
    updated: list[str] = []
    disabled: list[str] = []
    worker: str | None = None
    reloading: bool = False


class WorkerView(msgspec.Struct, frozen=True):
    name: str
    url: str
    concurrency: int
    registered: float
    last_seen: float
    live: bool
    running: int


class WorkerList(msgspec.Struct, frozen=True):
    workers: list[WorkerView]


class WorkerRemoved(msgspec.Struct, frozen=True):
    removed: str
    jobs_failed: list[str]


class Flushed(msgspec.Struct, frozen=True):
    removed: list[str]


class ManagerError(msgspec.Struct, frozen=True):
    """Every error reply: the reason, and ``register`` on the 409 that asks a worker to register again."""

    error: str
    register: bool = False


# -- tunasync's status, for mirror sites ------------------------------------------------------------------


class TunasyncJob(msgspec.Struct, frozen=True):
    """One job as tunasync's manager answers ``GET /jobs`` (its WebMirrorStatus), field for field and in its
    order: what mirror sites' status pages read. Text times are ``2006-01-02 15:04:05 -0700`` in the
    manager's time zone; a time that never was is Go's zero time, as tunasync sends it."""

    name: str
    is_master: bool
    status: str
    last_update: str
    last_update_ts: int
    last_started: str
    last_started_ts: int
    last_ended: str
    last_ended_ts: int
    next_schedule: str
    next_schedule_ts: int
    upstream: str
    size: str
    """As tunasync shows it: the text the last success's log gave (its ``size_pattern``, or rsync's ``Total
    file size``) or ``set-size`` was given, as written (``1.41T``); else the bytes on disk as rsync prints
    sizes (``300G``, 1024-based); ``unknown`` before the first success."""
