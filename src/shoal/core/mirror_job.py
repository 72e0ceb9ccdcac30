"""A mirror job's lifecycle, as tunasync draws it: one pure state machine for manager and worker alike.

Pure, in the manner of h11: a JobState and an event go in with ``now``, the next JobState comes out. No
asyncio, processes, files or clock reads. Everything that decides a job's status lives here; the mirror
services (shoal.mirror) run the sync, report what happened as events, and store the states that come out.
When to run a job next is shoal.core.schedule.

The lifecycle::

                       Scheduled, Started, Restart
       none ──────────────┐
       success ───────────┤
       failed ────────────┼──────▶ pre-syncing ──PreJobDone──▶ syncing ──SyncSucceeded──▶ success
       paused ────────────┘           │   ▲                       │
         (Started, Restart only)      │   │ Retry (while          │
                                      │   │ retry is set)         │
                        SyncFailed,   ▼   │                       │  SyncFailed, WorkerLost
                        WorkerLost   failed ◀─────────────────────┘

       none, pre-syncing, syncing, success, failed ──Stopped──▶ paused
       any state ──Disabled──▶ disabled ──Enabled──▶ none

The transitions, and what each does to the state's fields (``_TRANSITIONS`` below is this table)::

    state                      event                 next         fields
    -------------------------  --------------------  -----------  ----------------------------------------
    none, success, failed      Scheduled             pre-syncing  a new run: attempts = 1, last_started
    none, success, failed,     Started               pre-syncing  a new run
      paused
    any but disabled           Restart               pre-syncing  a new run (a running sync is killed first)
    failed, while retry set    Retry                 pre-syncing  the next attempt: attempts + 1, last_started
    pre-syncing                PreJobDone            syncing
    syncing                    SyncSucceeded         success      last_update = last_ended = now, error cleared
    pre-syncing, syncing       SyncFailed(error)     failed       last_ended, error_msg, retry decided
    pre-syncing, syncing       WorkerLost            failed       last_ended, error_msg "worker lost"
    none, pre-syncing,         Stopped               paused
      syncing, success, failed
    any                        Disabled              disabled
    disabled                   Enabled               none         attempts = 0
    anything else                                                 IllegalTransition (shoal.core.errors)

Rules, and why:

- ``apply`` is the only way to a new JobState, and it refuses every pair the table does not list, so a
  stale or duplicated report (a SyncSucceeded for a job since stopped, a second Stopped) is an error the
  caller sees instead of a state that silently disagrees with the worker. ``allowed`` asks first.
- A run is the series of attempts that one Scheduled, Started or Restart begins. A failure with attempts
  to spare (``attempts < max_attempts``) sets ``retry``: the worker should start the next attempt at once
  by applying Retry, as tunasync's worker loops over its ``retry`` attempts before it gives up until the
  next scheduled run. ``max_attempts`` counts every attempt, the first included, as tunasync's ``retry``
  option does; its default is tunasync's (2).
- WorkerLost never sets ``retry``: the worker that would retry is gone. The manager decides whether to
  start the job elsewhere (Started) or wait for its schedule.
- The field names are tunasync's, with its meanings: ``last_update`` is when the mirror was last
  successfully updated (what a mirror's status page shows), not when this record last changed;
  ``last_ended`` is when the last attempt ended, successfully or not, and is what the next interval counts
  from; ``last_started`` is when the last attempt began.
- Stopping or disabling a running job does not set ``last_ended``: that run never ended, and
  ``schedule.next_run`` treats such an interrupted run as due at once when the job runs again.
- ``error_msg`` keeps the latest failure until a sync succeeds, so while a retry runs the status still
  says why the previous attempt failed.
- Restart and Disabled may arrive while a sync runs; the caller sees that the old status was pre-syncing
  or syncing and kills the sync. Only Disabled is legal in its own target state (disabling a disabled job
  is a no-op), because a configuration reload may disable every listed job again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from shoal.core.errors import IllegalTransition

# tunasync's defaultMaxRetry: two attempts in all before a run gives up until its next schedule.
DEFAULT_MAX_ATTEMPTS = 2

WORKER_LOST = "worker lost"


class JobStatus(enum.Enum):
    """A mirror job's status; the values are tunasync's, as its status API and pages spell them."""

    NONE = "none"
    PRE_SYNCING = "pre-syncing"
    SYNCING = "syncing"
    SUCCESS = "success"
    FAILED = "failed"
    PAUSED = "paused"
    DISABLED = "disabled"


# -- events: what happened (reported by a worker) and commands (from the schedule or a user) -----------


@dataclass(frozen=True, slots=True)
class Scheduled:
    """The job's schedule says it is due."""


@dataclass(frozen=True, slots=True)
class Started:
    """A user asked to run the job now (``shoal mirror start``); unlike Scheduled, also wakes a paused job."""


@dataclass(frozen=True, slots=True)
class Restart:
    """A user asked to run the job afresh, killing a sync that is running."""


@dataclass(frozen=True, slots=True)
class Retry:
    """The worker starts the next attempt of a run whose last attempt failed with ``retry`` set."""


@dataclass(frozen=True, slots=True)
class PreJobDone:
    """The pre-job hooks finished; the sync itself begins."""


@dataclass(frozen=True, slots=True)
class SyncSucceeded:
    """The sync (and its post-success hooks) finished without error."""


@dataclass(frozen=True, slots=True)
class SyncFailed:
    """A pre-job hook or the sync failed; ``error`` says how, for the status page."""

    error: str


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """The manager lost the worker that was running the job (it stopped answering or went away)."""


@dataclass(frozen=True, slots=True)
class Stopped:
    """A user stopped the job: it is paused, and the schedule leaves it alone until Started or Restart."""


@dataclass(frozen=True, slots=True)
class Disabled:
    """The job was disabled (by a user, or removed from the configuration)."""


@dataclass(frozen=True, slots=True)
class Enabled:
    """A disabled job was enabled again; it waits for its schedule."""


JobEvent = (
    Scheduled
    | Started
    | Restart
    | Retry
    | PreJobDone
    | SyncSucceeded
    | SyncFailed
    | WorkerLost
    | Stopped
    | Disabled
    | Enabled
)


@dataclass(frozen=True, slots=True)
class JobState:
    """Everything the lifecycle knows about one job; a value, replaced (never changed) by ``apply``.

    ``retry`` is the decision after a failed attempt: True when the run has attempts to spare and the
    worker should apply Retry now; False otherwise (and in every status but failed).
    """

    status: JobStatus = JobStatus.NONE
    last_update: float | None = None  # the last successful sync's end (tunasync's meaning)
    last_started: float | None = None  # when the last attempt began
    last_ended: float | None = None  # when the last attempt ended, either way
    error_msg: str = ""  # the latest failure, kept until a sync succeeds
    attempts: int = 0  # attempts made in the current (or last) run, this one included
    retry: bool = False


_S = JobStatus

# The table in the module docstring, one literal entry per legal (status, event) pair. Retry's entry has a
# guard the table cannot show: the failed state must have ``retry`` set (checked in ``_check``).
_TRANSITIONS: dict[tuple[JobStatus, type[JobEvent]], JobStatus] = {
    (_S.NONE, Scheduled): _S.PRE_SYNCING,
    (_S.SUCCESS, Scheduled): _S.PRE_SYNCING,
    (_S.FAILED, Scheduled): _S.PRE_SYNCING,
    (_S.NONE, Started): _S.PRE_SYNCING,
    (_S.SUCCESS, Started): _S.PRE_SYNCING,
    (_S.FAILED, Started): _S.PRE_SYNCING,
    (_S.PAUSED, Started): _S.PRE_SYNCING,
    (_S.NONE, Restart): _S.PRE_SYNCING,
    (_S.PRE_SYNCING, Restart): _S.PRE_SYNCING,
    (_S.SYNCING, Restart): _S.PRE_SYNCING,
    (_S.SUCCESS, Restart): _S.PRE_SYNCING,
    (_S.FAILED, Restart): _S.PRE_SYNCING,
    (_S.PAUSED, Restart): _S.PRE_SYNCING,
    (_S.FAILED, Retry): _S.PRE_SYNCING,
    (_S.PRE_SYNCING, PreJobDone): _S.SYNCING,
    (_S.SYNCING, SyncSucceeded): _S.SUCCESS,
    (_S.PRE_SYNCING, SyncFailed): _S.FAILED,
    (_S.SYNCING, SyncFailed): _S.FAILED,
    (_S.PRE_SYNCING, WorkerLost): _S.FAILED,
    (_S.SYNCING, WorkerLost): _S.FAILED,
    (_S.NONE, Stopped): _S.PAUSED,
    (_S.PRE_SYNCING, Stopped): _S.PAUSED,
    (_S.SYNCING, Stopped): _S.PAUSED,
    (_S.SUCCESS, Stopped): _S.PAUSED,
    (_S.FAILED, Stopped): _S.PAUSED,
    (_S.NONE, Disabled): _S.DISABLED,
    (_S.PRE_SYNCING, Disabled): _S.DISABLED,
    (_S.SYNCING, Disabled): _S.DISABLED,
    (_S.SUCCESS, Disabled): _S.DISABLED,
    (_S.FAILED, Disabled): _S.DISABLED,
    (_S.PAUSED, Disabled): _S.DISABLED,
    (_S.DISABLED, Disabled): _S.DISABLED,
    (_S.DISABLED, Enabled): _S.NONE,
}

RUNNING = frozenset({JobStatus.PRE_SYNCING, JobStatus.SYNCING})


def is_running(status: JobStatus) -> bool:
    """True while an attempt is under way (pre-syncing or syncing): a worker holds the job."""
    return status in RUNNING


def _check(state: JobState, event: JobEvent) -> JobStatus:
    """The next status, or IllegalTransition."""
    target = _TRANSITIONS.get((state.status, type(event)))
    if target is None:
        raise IllegalTransition("job", state.status, event)
    if isinstance(event, Retry) and not state.retry:
        raise IllegalTransition("job", state.status, event, f"the run has used its {state.attempts} attempt(s)")
    return target


def allowed(state: JobState, event: JobEvent) -> bool:
    """Whether ``apply(state, event, ...)`` would succeed."""
    try:
        _check(state, event)
    except IllegalTransition:
        return False
    return True


def apply(state: JobState, event: JobEvent, now: float, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> JobState:
    """The state after ``event`` happened at ``now``; IllegalTransition if the table does not allow it.

    ``max_attempts`` (at least 1) is the job's attempts per run; only SyncFailed reads it, to decide
    ``retry``.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    target = _check(state, event)
    # ``retry`` is a decision about the failure just reported; every other transition withdraws it.
    after = replace(state, status=target, retry=False)
    match event:
        case Scheduled() | Started() | Restart():
            return replace(after, attempts=1, last_started=now)
        case Retry():
            return replace(after, attempts=state.attempts + 1, last_started=now)
        case SyncSucceeded():
            return replace(after, last_update=now, last_ended=now, error_msg="")
        case SyncFailed(error=error):
            # An empty message would leave the status page blank about a failure.
            return replace(
                after,
                last_ended=now,
                error_msg=error or "sync failed",
                retry=state.attempts < max_attempts,
            )
        case WorkerLost():
            return replace(after, last_ended=now, error_msg=WORKER_LOST)
        case Enabled():
            return replace(after, attempts=0)
        case PreJobDone() | Stopped() | Disabled():
            return after
