"""The mirror manager's decisions: which jobs are due, which workers are lost, who runs a job, when next.

Pure, like the rest of core: the manager (shoal.mirror.manager) reads its state from the store, asks these
functions with ``now``, and applies the answers (core.mirror_job events, store writes, worker commands).
Nothing here reads a clock, a socket or a database.

Rules, and why:

- A job is due when it is idle (none, success or failed without a retry pending) and its
  ``next_schedule`` has come. Paused and disabled jobs are never due: a user stopped them. Due jobs are
  taken oldest-due first, so a backlog drains in the order it built up.
- A worker is lost when it has not been heard of for ``worker_timeout`` seconds. The manager counts a
  worker as heard of at its own start, so a manager that was down longer than the timeout does not
  declare every worker lost before they had a chance to re-register.
- A job runs on the worker it names, or on any live worker otherwise; a worker takes no more jobs than
  its concurrency, unless a user forces a start. Among the candidates the least loaded (running jobs over
  concurrency) wins, ties broken by name, so the choice is deterministic and spreads jobs out.
- The next run follows the job's cron expression when it has one, its interval otherwise (core.schedule
  holds both rules). A job whose worker was lost is due at once: its run never finished, and tunasync's
  rule for an interrupted run is to run again.
- When a worker (re-)registers it says which jobs it is running. A job the manager believes runs there
  but the worker does not mention was lost with the worker's previous process; a job the worker runs but
  the manager assigned elsewhere (or stopped) must be cancelled there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shoal.core.mirror_job import JobState, JobStatus
from shoal.core.schedule import Cron, next_run

IDLE = frozenset({JobStatus.NONE, JobStatus.SUCCESS, JobStatus.FAILED})
"""The statuses in which the schedule may start a job (core.mirror_job's Scheduled is legal in them)."""


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """What the manager knows of a worker when it places a job."""

    name: str
    concurrency: int  # jobs it runs at once (at least 1)
    running: int  # jobs the manager has it running now
    live: bool = True  # registered with this manager and not lost


@dataclass(frozen=True, slots=True)
class JobTiming:
    """What the schedule needs of a job."""

    name: str
    state: JobState
    next_schedule: float | None


def due_jobs(jobs: Iterable[JobTiming], now: float) -> list[str]:
    """The names of the idle jobs whose next run has come, oldest-due first (then by name)."""
    due = [
        job
        for job in jobs
        if job.state.status in IDLE
        and not job.state.retry
        and job.next_schedule is not None
        and job.next_schedule <= now
    ]
    due.sort(key=lambda job: (job.next_schedule, job.name))
    return [job.name for job in due]


def lost_workers(last_seen: Mapping[str, float], now: float, timeout: float, *, since: float) -> list[str]:
    """The workers unheard of for ``timeout`` seconds, counting ``since`` (the manager's start) as heard of."""
    if not timeout > 0:
        raise ValueError(f"worker timeout must be positive, not {timeout!r}")
    return sorted(name for name, seen in last_seen.items() if now - max(seen, since) >= timeout)


def choose_worker(wanted: str | None, workers: Sequence[WorkerLoad], *, force: bool = False) -> str | None:
    """The worker that should run a job naming ``wanted`` (None: any), or None if no worker can take it now.

    ``force`` ignores the workers' concurrency (a user's ``start --force``), never their liveness.
    """
    candidates = [
        w for w in workers if w.live and (wanted is None or w.name == wanted) and (force or w.running < w.concurrency)
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda w: (w.running / max(w.concurrency, 1), w.name))
    return best.name


def next_schedule(interval: float, cron: str | None, state: JobState, now: float) -> float:
    """When an idle job runs next: by its cron expression if it has one, else one interval after its last
    run ended (core.schedule.next_run). A cron job that never ran waits for its first match; one whose
    last run was interrupted runs at once, like an interval job; otherwise its next match after the last
    run ended (a match missed while the manager was down is in the past, so due at once, and only once)."""
    if cron is None:
        return next_run(state.last_started, state.last_ended, interval, now)
    expression = Cron.parse(cron)
    if state.last_ended is None:
        return now if state.last_started is not None else expression.next_after(now)
    if state.last_started is not None and state.last_started > state.last_ended:
        return now
    return expression.next_after(state.last_ended)


@dataclass(frozen=True, slots=True)
class RunsReconciled:
    """What a worker's registration changes: jobs lost with its previous process, jobs it must cancel."""

    lost: tuple[str, ...]
    cancel: tuple[str, ...]


def reconcile(assigned: Iterable[str], reported: Iterable[str]) -> RunsReconciled:
    """Compare the jobs the manager has running on a worker with those the worker says it runs."""
    mine, theirs = set(assigned), set(reported)
    return RunsReconciled(lost=tuple(sorted(mine - theirs)), cancel=tuple(sorted(theirs - mine)))
