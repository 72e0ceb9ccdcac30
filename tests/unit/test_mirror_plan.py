"""The mirror manager's pure decisions (core.mirror_plan), with values and a fixed ``now``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shoal.core.mirror_job import JobState, JobStatus
from shoal.core.mirror_plan import (
    JobTiming,
    WorkerLoad,
    choose_worker,
    due_jobs,
    lost_workers,
    next_schedule,
    reconcile,
)

NOW = 1_800_000_000.0


def timing(name: str, status: JobStatus, next_at: float | None, *, retry: bool = False) -> JobTiming:
    return JobTiming(name, JobState(status=status, retry=retry), next_at)


def test_due_jobs_are_idle_and_come_oldest_first() -> None:
    jobs = [
        timing("later", JobStatus.SUCCESS, NOW + 1),
        timing("b", JobStatus.FAILED, NOW - 5),
        timing("a", JobStatus.NONE, NOW - 5),
        timing("oldest", JobStatus.SUCCESS, NOW - 60),
        timing("exactly-now", JobStatus.NONE, NOW),
        timing("paused", JobStatus.PAUSED, NOW - 100),
        timing("disabled", JobStatus.DISABLED, NOW - 100),
        timing("running", JobStatus.SYNCING, NOW - 100),
        timing("pre", JobStatus.PRE_SYNCING, NOW - 100),
        timing("retrying", JobStatus.FAILED, NOW - 100, retry=True),
        timing("unscheduled", JobStatus.NONE, None),
    ]
    assert due_jobs(jobs, NOW) == ["oldest", "a", "b", "exactly-now"]


def test_lost_workers_count_from_the_managers_start() -> None:
    seen = {"fresh": NOW - 1, "stale": NOW - 30, "edge": NOW - 10}
    assert lost_workers(seen, NOW, 10, since=NOW - 100) == ["edge", "stale"]
    # A manager that started 5 s ago gives every worker its full timeout to re-register.
    assert lost_workers(seen, NOW, 10, since=NOW - 5) == []
    assert lost_workers(seen, NOW + 5, 10, since=NOW - 5) == ["edge", "stale"]
    with pytest.raises(ValueError):
        lost_workers(seen, NOW, 0, since=NOW)


def test_choose_worker_respects_the_named_worker_liveness_and_concurrency() -> None:
    workers = [
        WorkerLoad("w1", concurrency=2, running=1),
        WorkerLoad("w2", concurrency=2, running=0),
        WorkerLoad("w3", concurrency=1, running=1),
        WorkerLoad("dead", concurrency=8, running=0, live=False),
    ]
    assert choose_worker(None, workers) == "w2"  # least loaded
    assert choose_worker("w1", workers) == "w1"
    assert choose_worker("w3", workers) is None  # full
    assert choose_worker("w3", workers, force=True) == "w3"
    assert choose_worker("dead", workers) is None
    assert choose_worker("dead", workers, force=True) is None  # force never revives a lost worker
    assert choose_worker("nobody", workers) is None
    assert choose_worker(None, []) is None
    full = [WorkerLoad("x", 1, 1), WorkerLoad("y", 2, 2)]
    assert choose_worker(None, full) is None
    assert choose_worker(None, full, force=True) == "x"  # ties by load ratio go by name


def test_next_schedule_by_interval() -> None:
    never = JobState()
    assert next_schedule(600, None, never, NOW) == NOW
    ended = JobState(status=JobStatus.SUCCESS, last_started=NOW - 100, last_ended=NOW - 50)
    assert next_schedule(600, None, ended, NOW) == NOW + 550
    interrupted = JobState(status=JobStatus.PAUSED, last_started=NOW - 10, last_ended=NOW - 50)
    assert next_schedule(600, None, interrupted, NOW) == NOW
    long_ago = JobState(status=JobStatus.FAILED, last_started=NOW - 10_000, last_ended=NOW - 9_000)
    assert next_schedule(600, None, long_ago, NOW) == NOW


def test_next_schedule_by_cron_ignores_the_interval() -> None:
    now = datetime(2026, 11, 22, 10, 7, 30, tzinfo=UTC).timestamp()
    hourly_at_15 = "15 * * * *"
    never = JobState()
    assert next_schedule(1, hourly_at_15, never, now) == datetime(2026, 11, 22, 10, 15, tzinfo=UTC).timestamp()
    ended = JobState(status=JobStatus.SUCCESS, last_started=now - 60, last_ended=now - 30)
    assert next_schedule(1, hourly_at_15, ended, now) == datetime(2026, 11, 22, 10, 15, tzinfo=UTC).timestamp()
    # Ended before a match that the manager missed: that match, in the past, so due at once.
    missed = JobState(status=JobStatus.SUCCESS, last_started=now - 7200, last_ended=now - 7100)
    assert next_schedule(1, hourly_at_15, missed, now) < now
    interrupted = JobState(status=JobStatus.PAUSED, last_started=now - 5)
    assert next_schedule(1, hourly_at_15, interrupted, now) == now


def test_reconcile_a_registration() -> None:
    result = reconcile(assigned=["a", "b"], reported=["b", "c"])
    assert result.lost == ("a",)
    assert result.cancel == ("c",)
    assert reconcile([], []).lost == ()
