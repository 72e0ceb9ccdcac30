"""The mirror job lifecycle (core.mirror_job): every transition the table allows, every one it refuses,
the retry decision, and lost workers.

The legal transitions are written out again here, independently of the module's table, so a change to
either shows up as a failing test.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import IllegalTransition, ProtocolError, ShoalError
from shoal.core.mirror_job import (
    DEFAULT_MAX_ATTEMPTS,
    WORKER_LOST,
    Disabled,
    Enabled,
    JobEvent,
    JobState,
    JobStatus,
    PreJobDone,
    Restart,
    Retry,
    Scheduled,
    Started,
    Stopped,
    SyncFailed,
    SyncSucceeded,
    WorkerLost,
    allowed,
    apply,
    is_running,
)
from shoal.core.schedule import next_run

NONE, PRE, SYNC, OK, FAIL, PAUSED, OFF = (
    JobStatus.NONE,
    JobStatus.PRE_SYNCING,
    JobStatus.SYNCING,
    JobStatus.SUCCESS,
    JobStatus.FAILED,
    JobStatus.PAUSED,
    JobStatus.DISABLED,
)

EVENTS: list[JobEvent] = [
    Scheduled(),
    Started(),
    Restart(),
    Retry(),
    PreJobDone(),
    SyncSucceeded(),
    SyncFailed("rsync exited with 23"),
    WorkerLost(),
    Stopped(),
    Disabled(),
    Enabled(),
]

LEGAL: dict[tuple[JobStatus, type[JobEvent]], JobStatus] = {
    **{(s, Scheduled): PRE for s in (NONE, OK, FAIL)},
    **{(s, Started): PRE for s in (NONE, OK, FAIL, PAUSED)},
    **{(s, Restart): PRE for s in (NONE, PRE, SYNC, OK, FAIL, PAUSED)},
    (FAIL, Retry): PRE,  # only while retry is set
    (PRE, PreJobDone): SYNC,
    (SYNC, SyncSucceeded): OK,
    (PRE, SyncFailed): FAIL,
    (SYNC, SyncFailed): FAIL,
    (PRE, WorkerLost): FAIL,
    (SYNC, WorkerLost): FAIL,
    **{(s, Stopped): PAUSED for s in (NONE, PRE, SYNC, OK, FAIL)},
    **{(s, Disabled): OFF for s in JobStatus},
    (OFF, Enabled): NONE,
}

NOW = 1_000.0


def state_in(status: JobStatus, **fields: Any) -> JobState:
    """A state in ``status`` with a plausible history: a Retry-able failure for FAILED, an unended run for
    the running statuses; ``fields`` override."""
    state = JobState(status, last_update=10.0, last_started=20.0, last_ended=30.0, attempts=1)
    if status is FAIL:
        state = replace(state, error_msg="earlier failure", retry=True)
    if is_running(status):
        state = replace(state, last_ended=5.0)
    return replace(state, **fields)


@pytest.mark.parametrize(("pair", "target"), LEGAL.items(), ids=lambda v: str(v))
def test_every_legal_transition(pair: tuple[JobStatus, type[JobEvent]], target: JobStatus) -> None:
    status, event_type = pair
    event = next(e for e in EVENTS if type(e) is event_type)
    state = state_in(status)
    assert allowed(state, event)
    assert apply(state, event, NOW).status is target


ILLEGAL = [(s, e) for s, e in product(JobStatus, EVENTS) if (s, type(e)) not in LEGAL]


@pytest.mark.parametrize(("status", "event"), ILLEGAL, ids=str)
def test_every_other_transition_is_refused(status: JobStatus, event: JobEvent) -> None:
    state = state_in(status)
    assert not allowed(state, event)
    with pytest.raises(IllegalTransition) as info:
        apply(state, event, NOW)
    assert info.value.status is status
    assert info.value.event == event
    assert type(event).__name__ in str(info.value) and status.value in str(info.value)


def test_the_table_has_the_expected_size() -> None:
    # 7 statuses x 11 events: the legal pairs above, everything else refused.
    assert len(LEGAL) + len(ILLEGAL) == 77
    assert len(LEGAL) == 33


def test_an_illegal_transition_is_a_protocol_error_and_a_shoal_error() -> None:
    with pytest.raises(ProtocolError) as info:
        apply(JobState(), PreJobDone(), NOW)
    assert isinstance(info.value, ShoalError)
    assert info.value.field == "status"


def test_the_initial_state() -> None:
    state = JobState()
    assert state.status is NONE
    assert (state.last_update, state.last_started, state.last_ended) == (None, None, None)
    assert (state.error_msg, state.attempts, state.retry) == ("", 0, False)


# -- what each transition does to the fields ---------------------------------------------------------


@pytest.mark.parametrize("event", [Scheduled(), Started(), Restart()], ids=lambda e: type(e).__name__)
def test_a_new_run_counts_its_first_attempt_and_keeps_the_history(event: JobEvent) -> None:
    before = state_in(FAIL, attempts=2, retry=False)
    after = apply(before, event, NOW)
    expected = JobState(PRE, 10.0, last_started=NOW, last_ended=30.0, error_msg="earlier failure", attempts=1)
    assert after == expected


def test_a_successful_run_from_none() -> None:
    state = apply(JobState(), Scheduled(), 100.0)
    state = apply(state, PreJobDone(), 101.0)
    assert state.status is SYNC and state.last_started == 100.0 and is_running(state.status)
    state = apply(state, SyncSucceeded(), 160.0)
    assert state == JobState(OK, last_update=160.0, last_started=100.0, last_ended=160.0, attempts=1)
    assert not is_running(state.status)


def test_success_clears_the_error_of_an_earlier_attempt() -> None:
    state = apply(state_in(FAIL), Retry(), NOW)
    assert state.error_msg == "earlier failure"  # kept while the retry runs: it says why we retry
    state = apply(apply(state, PreJobDone(), NOW + 1), SyncSucceeded(), NOW + 2)
    assert state.error_msg == "" and state.last_update == NOW + 2


def test_a_failure_records_its_error_and_end() -> None:
    running = apply(apply(JobState(), Started(), 100.0), PreJobDone(), 101.0)
    failed = apply(running, SyncFailed("rsync: connection refused"), 130.0)
    assert failed.status is FAIL
    assert failed.error_msg == "rsync: connection refused"
    assert failed.last_ended == 130.0 and failed.last_update is None


def test_a_failing_pre_job_hook_fails_the_attempt() -> None:
    pre = apply(JobState(), Scheduled(), 100.0)
    failed = apply(pre, SyncFailed("pre-job hook exited 1"), 102.0)
    assert failed.status is FAIL and failed.error_msg == "pre-job hook exited 1"


def test_an_empty_error_still_says_something() -> None:
    pre = apply(JobState(), Scheduled(), 100.0)
    assert apply(pre, SyncFailed(""), 101.0).error_msg == "sync failed"


def test_stopping_a_running_job_leaves_its_run_unended() -> None:
    running = apply(apply(state_in(OK), Scheduled(), 100.0), PreJobDone(), 101.0)
    paused = apply(running, Stopped(), 120.0)
    assert paused.status is PAUSED and paused.last_ended == 30.0
    # The schedule treats such an interrupted run as due at once when the job runs again.
    assert next_run(paused.last_started, paused.last_ended, 3600.0, 500.0) == 500.0


def test_a_paused_job_waits_for_a_start_not_the_schedule() -> None:
    paused = apply(JobState(), Stopped(), 100.0)
    assert not allowed(paused, Scheduled())
    assert apply(paused, Started(), 200.0).status is PRE


def test_disabling_is_idempotent_and_enabling_waits_for_the_schedule() -> None:
    off = apply(state_in(SYNC, attempts=2), Disabled(), 100.0)
    assert apply(off, Disabled(), 101.0) == off
    assert not allowed(off, Scheduled()) and not allowed(off, Started()) and not allowed(off, Restart())
    on = apply(off, Enabled(), 200.0)
    assert on.status is NONE and on.attempts == 0
    assert (on.last_update, on.last_started) == (off.last_update, off.last_started)


def test_restart_of_a_running_job_begins_a_new_run() -> None:
    state = apply(JobState(), Scheduled(), 100.0)
    state = apply(state, SyncFailed("timeout"), 110.0, max_attempts=3)
    state = apply(state, Retry(), 111.0)
    assert state.attempts == 2
    state = apply(state, Restart(), 115.0)
    assert state.status is PRE and state.attempts == 1 and state.last_started == 115.0


# -- the retry decision --------------------------------------------------------------------------------


def fail_once(state: JobState, now: float, max_attempts: int) -> JobState:
    return apply(
        apply(state, PreJobDone(), now), SyncFailed(f"attempt {state.attempts}"), now + 1, max_attempts=max_attempts
    )


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_a_run_retries_until_it_has_used_its_attempts(max_attempts: int) -> None:
    state = apply(JobState(), Scheduled(), 0.0)
    for attempt in range(1, max_attempts + 1):
        assert state.attempts == attempt
        state = fail_once(state, attempt * 10.0, max_attempts)
        assert state.status is FAIL
        assert state.retry is (attempt < max_attempts)
        if state.retry:
            assert allowed(state, Retry())
            state = apply(state, Retry(), attempt * 10.0 + 2)
            assert state.status is PRE and state.last_started == attempt * 10.0 + 2 and not state.retry
    assert not state.retry
    with pytest.raises(IllegalTransition, match=f"used its {max_attempts} attempt"):
        apply(state, Retry(), 1000.0)


def test_the_default_is_two_attempts_like_tunasync() -> None:
    assert DEFAULT_MAX_ATTEMPTS == 2
    first = apply(apply(JobState(), Scheduled(), 0.0), SyncFailed("x"), 1.0)
    assert first.retry
    second = apply(apply(first, Retry(), 2.0), SyncFailed("x"), 3.0)
    assert second.attempts == 2 and not second.retry


def test_a_retry_that_succeeds() -> None:
    state = fail_once(apply(JobState(), Scheduled(), 0.0), 1.0, 2)
    state = apply(apply(apply(state, Retry(), 3.0), PreJobDone(), 4.0), SyncSucceeded(), 9.0)
    assert state == JobState(OK, last_update=9.0, last_started=3.0, last_ended=9.0, attempts=2)


def test_a_schedule_tick_while_a_retry_is_pending_begins_a_new_run() -> None:
    state = fail_once(apply(JobState(), Scheduled(), 0.0), 1.0, 2)
    assert state.retry
    state = apply(state, Scheduled(), 50.0)
    assert state.attempts == 1 and not state.retry


@pytest.mark.parametrize("event", [Stopped(), Disabled(), Restart(), Started()], ids=lambda e: type(e).__name__)
def test_any_other_transition_withdraws_the_retry(event: JobEvent) -> None:
    failed = state_in(FAIL, retry=True)
    after = apply(failed, event, NOW)
    assert not after.retry
    if after.status is not PRE:
        assert not allowed(after, Retry())


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        apply(JobState(), Scheduled(), NOW, max_attempts=0)


# -- lost workers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [PRE, SYNC])
def test_a_lost_worker_fails_a_running_job_without_a_retry(status: JobStatus) -> None:
    running = state_in(status, attempts=1)
    lost = apply(running, WorkerLost(), NOW, max_attempts=5)
    assert lost.status is FAIL
    assert lost.error_msg == WORKER_LOST == "worker lost"
    assert lost.last_ended == NOW and lost.last_update == running.last_update
    assert not lost.retry  # the worker that would retry is gone; the manager starts the job elsewhere
    assert apply(lost, Started(), NOW + 1).status is PRE


@pytest.mark.parametrize("status", [NONE, OK, FAIL, PAUSED, OFF])
def test_a_lost_worker_means_nothing_to_an_idle_job(status: JobStatus) -> None:
    assert not allowed(state_in(status), WorkerLost())


# -- any sequence ----------------------------------------------------------------------------------------


@given(
    st.lists(st.tuples(st.sampled_from(EVENTS), st.floats(0, 100, allow_nan=False)), max_size=60),
    st.integers(1, 4),
)
def test_any_sequence_keeps_the_invariants(steps: list[tuple[JobEvent, float]], max_attempts: int) -> None:
    state, now = JobState(), 0.0
    for event, delay in steps:
        now += delay
        if not allowed(state, event):
            with pytest.raises(IllegalTransition):
                apply(state, event, now, max_attempts=max_attempts)
            continue
        before, state = state, apply(state, event, now, max_attempts=max_attempts)
        assert state.status is LEGAL[before.status, type(event)]
        assert not state.retry or (state.status is FAIL and state.attempts < max_attempts)
        if is_running(state.status):
            assert 1 <= state.attempts <= max_attempts
            assert state.last_started is not None
        if state.status is OK:
            assert state.last_update == state.last_ended == now and state.error_msg == ""
        if state.status is FAIL:
            assert state.error_msg and state.last_ended == now
        for earlier, later in [(before.last_update, state.last_update), (before.last_ended, state.last_ended)]:
            assert earlier is None or (later is not None and later >= earlier)
