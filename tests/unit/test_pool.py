"""Pools and push jobs (core.pool): the assignment and job transition tables, decide() (who is assigned,
who left, what happens to the job), the request parsers, pool names, job ids and tokens.

The legal transitions are written out again here from the diagrams in the module's docstring,
independently of its tables, so a change to either shows up as a failing test.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import product
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.errors import IllegalTransition, ProtocolError, ShoalError
from shoal.core.pool import (
    ACTIVE,
    Action,
    Assignment,
    Cancel,
    Cancelled,
    Completed,
    Credential,
    Decision,
    Evicted,
    Failed,
    Finished,
    JobFailed,
    Left,
    Member,
    MemberEvent,
    MemberStatus,
    Progress,
    PushEvent,
    PushJob,
    PushStatus,
    Refusal,
    Reopened,
    advance,
    advance_job,
    check_job_id,
    check_member_id,
    check_pool_name,
    decide,
    hash_token,
    member_id_for,
    member_secret_matches,
    new_job_id,
    new_token,
    refusal,
    replica_count,
    token_matches,
)
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.core.structs import decode
from shoal.core.whole_file import DIGEST_ALGORITHMS

ASSIGNED, RUNNING, DONE, FAILED, EVICTED, CANCELLED, LEFT = (
    MemberStatus.ASSIGNED,
    MemberStatus.RUNNING,
    MemberStatus.DONE,
    MemberStatus.FAILED,
    MemberStatus.EVICTED,
    MemberStatus.CANCELLED,
    MemberStatus.LEFT,
)
J_RUNNING, J_COMPLETE, J_FAILED, J_CANCELLED = (
    PushStatus.RUNNING,
    PushStatus.COMPLETE,
    PushStatus.FAILED,
    PushStatus.CANCELLED,
)

NOW = 1_000.0
TTL = 30.0
URL = "http://origin.example/images/disk.img"
DIGEST = "sha256:" + "ab" * 32
NO_ONE = "no live member could fetch the file"


# -- the assignment's transitions --------------------------------------------------------------------------

MEMBER_EVENTS: list[MemberEvent] = [Progress(), Completed(), Failed("HTTP 404"), Evicted(), Left(), Cancelled()]

MEMBER_LEGAL: dict[tuple[MemberStatus, type[MemberEvent]], MemberStatus] = {
    # assigned ─▶ running, done (Completed straight away), failed, cancelled, left
    (ASSIGNED, Progress): RUNNING,
    (ASSIGNED, Completed): DONE,
    (ASSIGNED, Failed): FAILED,
    (ASSIGNED, Cancelled): CANCELLED,
    (ASSIGNED, Left): LEFT,
    # running ─▶ running (reports repeat), done, failed, cancelled, left
    (RUNNING, Progress): RUNNING,
    (RUNNING, Completed): DONE,
    (RUNNING, Failed): FAILED,
    (RUNNING, Cancelled): CANCELLED,
    (RUNNING, Left): LEFT,
    # done ─▶ done (reports repeat), evicted, left
    (DONE, Completed): DONE,
    (DONE, Evicted): EVICTED,
    (DONE, Left): LEFT,
    # left ─▶ running or done: the member came back
    (LEFT, Progress): RUNNING,
    (LEFT, Completed): DONE,
}


def member_event(event_type: type[MemberEvent]) -> MemberEvent:
    return next(e for e in MEMBER_EVENTS if type(e) is event_type)


@pytest.mark.parametrize(("pair", "target"), MEMBER_LEGAL.items(), ids=lambda v: str(v))
def test_every_legal_assignment_transition(pair: tuple[MemberStatus, type[MemberEvent]], target: MemberStatus) -> None:
    status, event_type = pair
    assert advance(status, member_event(event_type)) is target


MEMBER_ILLEGAL = [(s, e) for s, e in product(MemberStatus, MEMBER_EVENTS) if (s, type(e)) not in MEMBER_LEGAL]


@pytest.mark.parametrize(("status", "event"), MEMBER_ILLEGAL, ids=str)
def test_every_other_assignment_transition_is_refused(status: MemberStatus, event: MemberEvent) -> None:
    with pytest.raises(IllegalTransition) as info:
        advance(status, event)
    assert info.value.status is status
    assert info.value.event == event
    assert info.value.http_status == 409
    assert info.value.field == "status"
    assert str(info.value) == f"{type(event).__name__} is not allowed while the assignment is {status.value}"


def test_the_assignment_table_has_the_expected_size() -> None:
    # 7 statuses x 6 events: the 15 legal pairs above, everything else refused.
    assert len(MEMBER_LEGAL) + len(MEMBER_ILLEGAL) == 42
    assert len(MEMBER_LEGAL) == 15


@pytest.mark.parametrize("status", [FAILED, EVICTED, CANCELLED])
def test_final_assignment_statuses_accept_nothing(status: MemberStatus) -> None:
    for event in MEMBER_EVENTS:
        with pytest.raises(IllegalTransition):
            advance(status, event)


def test_active_is_assigned_and_running() -> None:
    assert frozenset({ASSIGNED, RUNNING}) == ACTIVE


# -- the job's transitions ---------------------------------------------------------------------------------

JOB_EVENTS: list[PushEvent] = [Finished(), JobFailed("HTTP 404"), Reopened(), Cancel()]

JOB_LEGAL: dict[tuple[PushStatus, type[PushEvent]], PushStatus] = {
    (J_RUNNING, Finished): J_COMPLETE,
    (J_RUNNING, JobFailed): J_FAILED,
    (J_COMPLETE, Reopened): J_RUNNING,
    (J_RUNNING, Cancel): J_CANCELLED,
    (J_COMPLETE, Cancel): J_CANCELLED,
}


@pytest.mark.parametrize(("pair", "target"), JOB_LEGAL.items(), ids=lambda v: str(v))
def test_every_legal_job_transition(pair: tuple[PushStatus, type[PushEvent]], target: PushStatus) -> None:
    status, event_type = pair
    event = next(e for e in JOB_EVENTS if type(e) is event_type)
    assert advance_job(status, event) is target


JOB_ILLEGAL = [(s, e) for s, e in product(PushStatus, JOB_EVENTS) if (s, type(e)) not in JOB_LEGAL]


@pytest.mark.parametrize(("status", "event"), JOB_ILLEGAL, ids=str)
def test_every_other_job_transition_is_refused(status: PushStatus, event: PushEvent) -> None:
    with pytest.raises(IllegalTransition) as info:
        advance_job(status, event)
    assert info.value.status is status
    assert info.value.event == event
    assert info.value.http_status == 409
    assert str(info.value) == f"{type(event).__name__} is not allowed while the job is {status.value}"


def test_the_job_table_has_the_expected_size() -> None:
    assert len(JOB_LEGAL) + len(JOB_ILLEGAL) == 16
    assert len(JOB_LEGAL) == 5


def test_an_illegal_transition_is_a_409_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        advance_job(J_CANCELLED, Cancel())
    assert isinstance(info.value, ShoalError)
    assert info.value.http_status == 409
    assert ProtocolError("x").http_status == 400  # the subclass overrides, the base keeps 400


# -- decide(): factories -----------------------------------------------------------------------------------

BIG = 1 << 40


def member(member_id: str, *, age: float = 0.0, site: str = "", rack: str = "", free: int = BIG) -> Member:
    """A member last heard from ``age`` seconds before NOW (live while age < TTL)."""
    return Member(member_id, NOW - age, site, rack, free)


def parts(**statuses: MemberStatus | tuple[MemberStatus, str]) -> dict[str, Assignment]:
    """Assignments by member id: a status, or (status, error)."""
    out = {}
    for member_id, value in statuses.items():
        status, error = value if isinstance(value, tuple) else (value, "")
        out[member_id] = Assignment(member_id, status, error)
    return out


def push(replicas: int | None = None, status: PushStatus = J_RUNNING, error: str = "") -> PushJob:
    return PushJob("0123456789abcdef", URL, replicas, status, error)


def run(
    job: PushJob,
    members: Iterable[Member],
    assignments: Mapping[str, Assignment] | None = None,
    *,
    length: int | None = None,
    now: float = NOW,
) -> Decision:
    return decide(job, members, assignments or {}, now=now, ttl=TTL, length=length)


# -- decide(): push to every member ------------------------------------------------------------------------


def test_push_to_all_assigns_every_live_member() -> None:
    decision = run(push(), [member("c"), member("a"), member("b")])
    assert decision == Decision(assign=("a", "b", "c"))
    assert decision.changes


def test_push_to_all_assigns_only_live_members_without_an_assignment() -> None:
    members = [
        member("active"),
        member("holder"),
        member("failed"),
        member("evicted"),
        member("back"),  # live again, its assignment still says left: it resumes on its own
        member("new"),
        member("late", age=TTL + 1),  # silent, and with no assignment: nothing to mark as left
    ]
    assignments = parts(active=RUNNING, holder=DONE, failed=(FAILED, "HTTP 500"), evicted=EVICTED, back=LEFT)
    assert run(push(), members, assignments) == Decision(assign=("new",))


def test_push_to_all_assigns_a_member_that_joins_while_the_job_runs() -> None:
    members = [member("a"), member("b")]
    first = run(push(), members)
    assert first.assign == ("a", "b")
    later = run(push(), [*members, member("joiner")], parts(a=RUNNING, b=ASSIGNED))
    assert later == Decision(assign=("joiner",))


def test_push_to_all_assigns_nobody_once_complete() -> None:
    decision = run(push(status=J_COMPLETE), [member("a"), member("joiner")], parts(a=DONE))
    assert decision == Decision()
    assert not decision.changes


def test_push_to_all_skips_members_without_room_once_the_length_is_known() -> None:
    members = [member("small", free=99), member("exact", free=100), member("roomy", free=101)]
    assert run(push(), members, length=100).assign == ("exact", "roomy")
    assert run(push(), members, length=None).assign == ("exact", "roomy", "small")


def test_push_to_all_with_no_live_member_fails_at_once() -> None:
    assert run(push(), []) == Decision(event=JobFailed(NO_ONE))
    assert run(push(), [member("gone", age=TTL)]) == Decision(event=JobFailed(NO_ONE))


# -- decide(): members that fall silent --------------------------------------------------------------------


def test_liveness_ends_when_the_ttl_has_passed() -> None:
    assert member("m", age=TTL - 0.001).live(NOW, TTL)
    assert not member("m", age=TTL).live(NOW, TTL)


@pytest.mark.parametrize("status", [ASSIGNED, RUNNING, DONE])
def test_a_silent_member_leaves_its_active_or_done_assignment(status: MemberStatus) -> None:
    members = [member("stays"), member("silent", age=TTL)]
    decision = run(push(status=J_COMPLETE), members, parts(stays=DONE, silent=status))
    assert decision.left == ("silent",)
    assert decision.assign == ()
    assert decision.event is None  # complete, and a live member still holds the file


def test_a_member_that_is_just_live_keeps_its_assignment() -> None:
    members = [member("edge", age=TTL - 0.5)]
    assert run(push(), members, parts(edge=RUNNING)) == Decision()


@pytest.mark.parametrize("status", [FAILED, EVICTED, CANCELLED, LEFT])
def test_a_silent_member_keeps_a_final_or_left_status(status: MemberStatus) -> None:
    members = [member("a"), member("silent", age=10 * TTL)]
    assert run(push(), members, parts(a=RUNNING, silent=status)) == Decision()


def test_an_assignment_whose_member_row_is_gone_is_left() -> None:
    assert run(push(), [member("a")], parts(a=RUNNING, vanished=RUNNING)).left == ("vanished",)


def test_left_members_are_sorted() -> None:
    members = [member("z", age=TTL), member("a", age=TTL), member("m")]
    assert run(push(), members, parts(z=RUNNING, a=DONE, m=RUNNING)).left == ("a", "z")


def test_the_last_fetcher_leaving_while_someone_holds_finishes_the_job() -> None:
    members = [member("holder"), member("silent", age=TTL)]
    decision = run(push(), members, parts(holder=DONE, silent=RUNNING))
    assert decision == Decision(left=("silent",), event=Finished())


def test_everyone_leaving_fails_the_job() -> None:
    members = [member("a", age=TTL), member("b", age=2 * TTL)]
    decision = run(push(), members, parts(a=RUNNING, b=DONE))
    assert decision == Decision(left=("a", "b"), event=JobFailed(NO_ONE))


# -- decide(): replicas ------------------------------------------------------------------------------------


def test_replicas_assign_exactly_k() -> None:
    members = [member(f"m{i}", free=100 + i) for i in range(6)]
    decision = run(push(replicas=3), members)
    assert len(decision.assign) == 3
    assert decision.assign == ("m5", "m4", "m3")  # no sites or racks: the most room first
    assert decision.event is None


@pytest.mark.parametrize(
    ("assignments", "expected"),
    [
        (parts(a=DONE), 2),
        (parts(a=DONE, b=RUNNING), 1),
        (parts(a=ASSIGNED, b=RUNNING), 1),
        (parts(a=DONE, b=ASSIGNED, c=RUNNING), 0),
        (parts(a=DONE, b=DONE, c=DONE), 0),
    ],
    ids=["one-held", "held-and-running", "two-on-the-way", "all-on-the-way", "all-held"],
)
def test_replicas_assign_the_shortfall_counting_copies_on_the_way(
    assignments: dict[str, Assignment], expected: int
) -> None:
    members = [member(m) for m in "abcdefg"]
    decision = run(push(replicas=3), members, assignments)
    assert len(decision.assign) == expected
    assert not set(decision.assign) & set(assignments)


def test_replicas_count_a_silent_members_copy_as_lost() -> None:
    members = [member("gone", age=TTL), member("held"), member("spare")]
    decision = run(push(replicas=2), members, parts(gone=DONE, held=DONE))
    assert decision == Decision(assign=("spare",), left=("gone",))


@pytest.mark.parametrize("status", [DONE, EVICTED, FAILED, CANCELLED, LEFT, RUNNING, ASSIGNED])
def test_replicas_never_pick_a_member_with_any_assignment(status: MemberStatus) -> None:
    members = [member("had", free=BIG), member("fresh", free=1)]
    decision = run(push(replicas=5), members, parts(had=status))
    assert decision.assign == ("fresh",)


def test_replicas_do_not_ask_an_evicted_or_failed_member_again() -> None:
    members = [member("evicted"), member("failed"), member("holder")]
    decision = run(push(replicas=2, status=J_COMPLETE), members, parts(evicted=EVICTED, failed=FAILED, holder=DONE))
    assert decision == Decision()  # short by one, but nobody can be asked: stays complete


def test_replicas_skip_members_without_room_when_the_length_is_known() -> None:
    members = [member("tiny", free=10), member("fits", free=500), member("roomy", free=900)]
    assert run(push(replicas=3), members, length=500).assign == ("roomy", "fits")
    assert run(push(replicas=3), members, length=None).assign == ("roomy", "fits", "tiny")
    assert run(push(replicas=1), [member("tiny", free=10)], length=500) == Decision(event=JobFailed(NO_ONE))


def test_replicas_spread_across_sites_before_room() -> None:
    members = [
        member("a-held", site="A", rack="r1"),
        member("a-roomy", site="A", rack="r2", free=BIG),
        member("b-small", site="B", rack="r1", free=10),
    ]
    decision = run(push(replicas=2), members, parts(**{"a-held": DONE}))
    assert decision.assign == ("b-small",)


def test_replicas_spread_across_racks_before_room() -> None:
    members = [
        member("r1-held", site="A", rack="r1"),
        member("r1-roomy", site="A", rack="r1", free=BIG),
        member("r2-small", site="A", rack="r2", free=10),
    ]
    decision = run(push(replicas=2), members, parts(**{"r1-held": DONE}))
    assert decision.assign == ("r2-small",)


def test_site_spread_outranks_rack_spread() -> None:
    # A new rack at the holder's site is worse than any rack at another site.
    members = [
        member("held", site="A", rack="r1"),
        member("same-site-new-rack", site="A", rack="r2", free=BIG),
        member("other-site", site="B", rack="r1", free=10),
    ]
    decision = run(push(replicas=2), members, parts(held=DONE))
    assert decision.assign == ("other-site",)


def test_spread_counts_each_pick_before_the_next() -> None:
    members = [
        member("a1-9", site="A", rack="r1", free=9),
        member("a1-8", site="A", rack="r1", free=8),
        member("a2-7", site="A", rack="r2", free=7),
        member("b1-1", site="B", rack="r1", free=1),
    ]
    # 1st: nothing anywhere, most room. 2nd: site B has no copy. 3rd: sites tie at one, rack A/r2 has none.
    assert run(push(replicas=3), members).assign == ("a1-9", "b1-1", "a2-7")
    assert run(push(replicas=4), members).assign == ("a1-9", "b1-1", "a2-7", "a1-8")


def test_spread_counts_copies_on_the_way() -> None:
    members = [
        member("a-running", site="A"),
        member("a-spare", site="A", free=BIG),
        member("b-spare", site="B", free=1),
    ]
    assert run(push(replicas=2), members, parts(**{"a-running": RUNNING})).assign == ("b-spare",)


def test_equal_room_picks_by_member_id() -> None:
    members = [member("c", free=5), member("b", free=5), member("a", free=5)]
    assert run(push(replicas=2), members).assign == ("a", "b")


def test_spread_does_not_count_members_that_hold_no_copy() -> None:
    members = [
        member("a-held", site="A"),
        member("b-evicted", site="B"),
        member("a-roomy", site="A", free=BIG),
        member("b-small", site="B", free=10),
    ]
    decision = run(push(replicas=2, status=J_COMPLETE), members, parts(**{"a-held": DONE, "b-evicted": EVICTED}))
    assert decision.assign == ("b-small",)


def test_a_complete_job_short_of_replicas_reopens() -> None:
    members = [member("held"), member("lost-copy"), member("spare")]
    decision = run(push(replicas=2, status=J_COMPLETE), members, parts(held=DONE, **{"lost-copy": EVICTED}))
    assert decision == Decision(assign=("spare",), event=Reopened())


def test_a_complete_job_whose_holder_left_reopens() -> None:
    members = [member("gone", age=TTL), member("spare")]
    decision = run(push(replicas=1, status=J_COMPLETE), members, parts(gone=DONE))
    assert decision == Decision(assign=("spare",), left=("gone",), event=Reopened())


def test_a_complete_job_with_enough_replicas_stays_quiet() -> None:
    members = [member("a"), member("b"), member("spare")]
    assert run(push(replicas=2, status=J_COMPLETE), members, parts(a=DONE, b=DONE)) == Decision()


# -- decide(): the job's end -------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [None, 2])
def test_the_job_finishes_when_nobody_fetches_and_someone_holds(replicas: int | None) -> None:
    members = [member("a"), member("b")]
    assert run(push(replicas), members, parts(a=DONE, b=(FAILED, "disk full"))) == Decision(event=Finished())


@pytest.mark.parametrize("replicas", [None, 3])
def test_the_job_waits_while_a_live_member_fetches(replicas: int | None) -> None:
    members = [member("a"), member("b")]
    assert run(push(replicas), members, parts(a=DONE, b=RUNNING)) == Decision()


def test_a_job_with_replicas_finishes_short_when_nobody_else_can_fetch() -> None:
    members = [member("a"), member("b")]
    assert run(push(replicas=3), members, parts(a=DONE, b=FAILED)) == Decision(event=Finished())


def test_the_job_fails_with_the_most_common_member_error() -> None:
    members = [member(m) for m in "abcd"]
    assignments = parts(a=(FAILED, "timeout"), b=(FAILED, "HTTP 404"), c=(FAILED, "HTTP 404"), d=EVICTED)
    assert run(push(), members, assignments) == Decision(event=JobFailed("HTTP 404"))


def test_the_job_fails_with_a_silent_members_error_too() -> None:
    members = [member("a"), member("gone", age=TTL)]
    assignments = parts(a=(FAILED, "HTTP 403"), gone=(FAILED, "HTTP 403"))
    assert run(push(replicas=1), members, assignments) == Decision(event=JobFailed("HTTP 403"))


def test_a_failure_without_errors_says_nobody_could_fetch() -> None:
    members = [member("a"), member("b")]
    assert run(push(), members, parts(a=(FAILED, ""), b=EVICTED)).event == JobFailed(NO_ONE)


def test_a_job_does_not_fail_while_someone_can_still_be_assigned() -> None:
    members = [member("failed"), member("spare")]
    decision = run(push(replicas=1), members, parts(failed=(FAILED, "HTTP 404")))
    assert decision == Decision(assign=("spare",))


@pytest.mark.parametrize("status", [J_FAILED, J_CANCELLED])
@pytest.mark.parametrize("replicas", [None, 2])
def test_nothing_happens_to_a_failed_or_cancelled_job(status: PushStatus, replicas: int | None) -> None:
    members = [member("new"), member("silent", age=TTL), member("done")]
    decision = run(push(replicas, status=status), members, parts(silent=RUNNING, done=DONE))
    assert decision == Decision()


def test_decision_changes() -> None:
    assert not Decision().changes
    assert Decision(assign=("a",)).changes
    assert Decision(left=("a",)).changes
    assert Decision(event=Finished()).changes


def test_replica_count_is_live_holders() -> None:
    assignments = parts(a=DONE, b=DONE, c=RUNNING, d=EVICTED)
    assert replica_count(assignments.values(), {"a", "c", "d"}) == 1
    assert replica_count(assignments.values(), {"a", "b"}) == 2
    assert replica_count(assignments.values(), set()) == 0


# -- decide(): properties ----------------------------------------------------------------------------------

IDS = [f"m{i}" for i in range(7)]

members_st = st.lists(
    st.builds(
        Member,
        member_id=st.sampled_from(IDS),
        last_seen=st.floats(min_value=NOW - 2 * TTL, max_value=NOW),
        site=st.sampled_from(["", "A", "B"]),
        rack=st.sampled_from(["", "r1", "r2"]),
        free=st.integers(min_value=0, max_value=300),
    ),
    max_size=len(IDS),
    unique_by=lambda m: m.member_id,
)
assignments_st = st.dictionaries(
    st.sampled_from([*IDS, "ghost"]),  # "ghost": an assignment whose member row is gone
    st.tuples(st.sampled_from(list(MemberStatus)), st.sampled_from(["", "HTTP 404", "timeout"])),
    max_size=len(IDS) + 1,
).map(lambda d: {mid: Assignment(mid, status, error) for mid, (status, error) in d.items()})
jobs_st = st.builds(
    push,
    replicas=st.none() | st.integers(min_value=1, max_value=6),
    status=st.sampled_from(list(PushStatus)),
)
lengths_st = st.none() | st.integers(min_value=0, max_value=300)


def applied(job: PushJob, assignments: Mapping[str, Assignment], decision: Decision) -> tuple[PushJob, dict[str, Any]]:
    """The job and assignments after the tracker saved ``decision`` (what PoolStore.apply writes)."""
    after = dict(assignments)
    for member_id in decision.left:
        after[member_id] = replace(after[member_id], status=LEFT)
    for member_id in decision.assign:
        after[member_id] = Assignment(member_id, ASSIGNED)
    if decision.event is not None:
        job = replace(job, status=advance_job(job.status, decision.event))
    return job, after


@settings(max_examples=400, deadline=None)
@given(jobs_st, members_st, assignments_st, lengths_st)
def test_decide_assigns_only_live_members_without_an_assignment(
    job: PushJob, members: list[Member], assignments: dict[str, Assignment], length: int | None
) -> None:
    decision = run(job, members, assignments, length=length)
    live = {m.member_id for m in members if m.live(NOW, TTL)}
    assert set(decision.assign) <= live
    assert not set(decision.assign) & set(assignments)
    assert len(set(decision.assign)) == len(decision.assign)
    if length is not None:
        room = {m.member_id: m.free for m in members}
        assert all(room[mid] >= length for mid in decision.assign)
    if job.status is J_COMPLETE and job.replicas is None:
        assert decision.assign == ()
    if job.status in (J_FAILED, J_CANCELLED):
        assert decision == Decision()
    else:
        silent = {a.member_id for a in assignments.values() if a.member_id not in live and a.status in {*ACTIVE, DONE}}
        assert set(decision.left) == silent


@settings(max_examples=400, deadline=None)
@given(jobs_st.filter(lambda j: j.replicas is not None), members_st, assignments_st, lengths_st)
def test_replicas_never_overshoot(
    job: PushJob, members: list[Member], assignments: dict[str, Assignment], length: int | None
) -> None:
    assert job.replicas is not None
    decision = run(job, members, assignments, length=length)
    live = {m.member_id for m in members if m.live(NOW, TTL)}
    before = sum(1 for a in assignments.values() if a.member_id in live and a.status in {*ACTIVE, DONE})
    after = before + len(decision.assign)
    assert after <= max(job.replicas, before)


@settings(max_examples=400, deadline=None)
@given(jobs_st, members_st, assignments_st, lengths_st)
def test_deciding_again_after_applying_changes_nothing(
    job: PushJob, members: list[Member], assignments: dict[str, Assignment], length: int | None
) -> None:
    first = run(job, members, assignments, length=length)  # an illegal event would raise in applied()
    job, after = applied(job, assignments, first)
    second = run(job, members, after, length=length)
    assert second.assign == ()
    assert second == Decision()


T = TypeVar("T")


def parse(data: Any, kind: type[T]) -> T:
    """``data`` sent as JSON and decoded as the tracker decodes a body."""
    return decode(msgspec.json.encode(data), kind)


# -- request bodies ----------------------------------------------------------------------------------------


def test_a_full_push_request_parses() -> None:
    body = {"url": "HTTP://Origin.Example:80/a/b.img", "dest": "/srv/b.img", "replicas": 3, "digest": DIGEST}
    request = parse(body, PushRequest)
    assert request == PushRequest("http://origin.example/a/b.img", "/srv/b.img", 3, DIGEST)
    assert parse(request, PushRequest) == request


def test_a_minimal_push_request_parses() -> None:
    request = parse({"url": URL}, PushRequest)
    assert request == PushRequest(URL)
    assert parse({"url": URL, "dest": None, "replicas": None, "digest": None}, PushRequest) == request
    assert parse(request, PushRequest) == request


def test_a_push_digest_is_normalised_to_lower_case() -> None:
    request = parse({"url": URL, "digest": "SHA256:" + "AB" * 32}, PushRequest)
    assert request.digest == DIGEST


@pytest.mark.parametrize("algorithm", list(DIGEST_ALGORITHMS))
def test_a_push_takes_a_digest_of_every_algorithm_get_takes(algorithm: str) -> None:
    hexdigest = "Ab" * (DIGEST_ALGORITHMS[algorithm] // 2)
    request = parse({"url": URL, "digest": f"{algorithm.upper()}:{hexdigest}"}, PushRequest)
    assert request.digest == f"{algorithm}:{hexdigest.lower()}"


@pytest.mark.parametrize("replicas", [1, 10_000])
def test_push_replicas_bounds_are_accepted(replicas: int) -> None:
    assert parse({"url": URL, "replicas": replicas}, PushRequest).replicas == replicas


PUSH_MALFORMED: list[tuple[str, Any, str]] = [
    ("extra", 1, "extra"),
    ("url", None, "url"),
    ("url", 5, "url"),
    ("url", "ftp://origin.example/x", "url"),
    ("url", "not a url", "url"),
    ("url", "http:///nohost", "url"),
    ("url", "x" * 8193, "url"),
    ("dest", "relative/path", "dest"),
    ("dest", "/srv/dir/", "dest"),
    ("dest", "/", "dest"),
    ("dest", "/srv/a\0b", "dest"),
    ("dest", 7, "dest"),
    ("replicas", 0, "replicas"),
    ("replicas", -1, "replicas"),
    ("replicas", 10_001, "replicas"),
    ("replicas", True, "replicas"),
    ("replicas", False, "replicas"),
    ("replicas", 2.0, "replicas"),
    ("replicas", "2", "replicas"),
    ("digest", "ab" * 32, "digest"),
    ("digest", "md5:" + "ab" * 32, "digest"),
    ("digest", "whirlpool:" + "ab" * 64, "digest"),
    ("digest", "blake2b:" + "ab" * 32, "digest"),
    ("digest", "sha256:" + "ab" * 31, "digest"),
    ("digest", "sha256:" + "ab" * 33, "digest"),
    ("digest", "sha256:" + "zz" * 32, "digest"),
    ("digest", 5, "digest"),
]


@pytest.mark.parametrize(
    ("name", "value", "field"), PUSH_MALFORMED, ids=[f"{n}={v!r}"[:40] for n, v, _ in PUSH_MALFORMED]
)
def test_each_bad_push_field_is_named(name: str, value: Any, field: str) -> None:
    body = {"url": URL, name: value}
    with pytest.raises(ProtocolError) as info:
        parse(body, PushRequest)
    assert info.value.field == field
    assert info.value.http_status == 400


@pytest.mark.parametrize("url", ["http://mirror:s3cret-pw@origin.example/x.iso", "https://token@origin.example/x"])
def test_a_pushed_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    """Every member fetches a job's URL and every reader of the pool sees it: credentials in it would reach
    them all, and canonicalised away they would fail each member's fetch at the origin."""
    with pytest.raises(ProtocolError) as info:
        parse({"url": url}, PushRequest)
    assert info.value.field == "url" and info.value.http_status == 400
    assert "may not carry credentials" in str(info.value)
    assert "s3cret-pw" not in str(info.value) and "token@" not in str(info.value)


def test_a_push_request_needs_a_url() -> None:
    with pytest.raises(ProtocolError) as info:
        parse({"replicas": 2}, PushRequest)
    assert info.value.field == "url"


@pytest.mark.parametrize("data", [None, [], "url", 5, [{"url": URL}]])
@pytest.mark.parametrize("kind", [PushRequest, MemberReport, Heartbeat])
def test_bodies_must_be_objects(kind: type, data: Any) -> None:
    with pytest.raises(ProtocolError, match="Expected `object`"):
        parse(data, kind)


def test_a_full_member_report_parses() -> None:
    body = {
        "status": "running",
        "done": 100,
        "total": 1000,
        "rate": 12.5,
        "from_origin": 60,
        "from_peers": 40,
        "error": "",
    }
    report = parse(body, MemberReport)
    assert report == MemberReport(RUNNING, done=100, total=1000, rate=12.5, from_origin=60, from_peers=40)
    assert parse(report, MemberReport) == report


def test_a_minimal_member_report_parses() -> None:
    report = parse({"status": "done"}, MemberReport)
    assert report == MemberReport(DONE)
    assert type(parse({"status": "running", "rate": 3}, MemberReport).rate) is float


def test_a_member_reports_error_is_cut_short() -> None:
    report = parse({"status": "failed", "error": "e" * 5000}, MemberReport)
    assert report.error == "e" * 2000


@pytest.mark.parametrize(
    ("status", "error", "event"),
    [
        ("running", "", Progress()),
        ("done", "", Completed()),
        ("failed", "HTTP 404", Failed("HTTP 404")),
        ("failed", "", Failed("failed")),
        ("evicted", "", Evicted()),
    ],
)
def test_a_member_report_names_its_event(status: str, error: str, event: MemberEvent) -> None:
    assert parse({"status": status, "error": error}, MemberReport).event() == event


REPORT_MALFORMED: list[tuple[str, Any, str]] = [
    ("extra", 1, "extra"),
    ("status", "assigned", "status"),
    ("status", "cancelled", "status"),
    ("status", "left", "status"),
    ("status", "RUNNING", "status"),
    ("status", None, "status"),
    ("status", 1, "status"),
    ("status", [], "status"),
    ("status", {}, "status"),
    ("done", -1, "done"),
    ("done", 1.5, "done"),
    ("done", True, "done"),
    ("done", "5", "done"),
    ("done", 1 << 62, "done"),
    ("total", -1, "total"),
    ("from_origin", -1, "from_origin"),
    ("from_peers", -5, "from_peers"),
    ("from_peers", None, "from_peers"),
    ("rate", -0.5, "rate"),
    ("rate", float("nan"), "rate"),
    ("rate", float("inf"), "rate"),
    ("rate", 1e13, "rate"),
    ("rate", True, "rate"),
    ("rate", "1", "rate"),
    ("error", 5, "error"),
    ("error", "e" * 8193, "error"),
]


@pytest.mark.parametrize(
    ("name", "value", "field"), REPORT_MALFORMED, ids=[f"{n}={v!r}"[:40] for n, v, _ in REPORT_MALFORMED]
)
def test_each_bad_report_field_is_named(name: str, value: Any, field: str) -> None:
    body = {"status": "running", name: value}
    with pytest.raises(ProtocolError) as info:
        parse(body, MemberReport)
    assert info.value.field == field


def test_a_report_needs_a_status() -> None:
    with pytest.raises(ProtocolError) as info:
        parse({"done": 1}, MemberReport)
    assert info.value.field == "status"


def test_a_full_heartbeat_parses() -> None:
    body = {"name": "node-1", "url": "http://10.0.0.5:7000/", "site": "fra", "rack": "r12", "free": 1 << 40}
    beat = parse(body, Heartbeat)
    assert beat == Heartbeat("node-1", "http://10.0.0.5:7000/", "fra", "r12", 1 << 40)
    assert msgspec.to_builtins(beat) == body
    assert parse(beat, Heartbeat) == beat


def test_a_minimal_heartbeat_parses() -> None:
    assert parse({}, Heartbeat) == Heartbeat("", "")
    assert parse({"free": 0}, Heartbeat) == Heartbeat("", "")


def test_heartbeat_label_lengths_at_their_limits_are_accepted() -> None:
    beat = parse({"name": "n" * 255, "url": "u" * 255, "site": "s" * 64, "rack": "r" * 64}, Heartbeat)
    assert (len(beat.name), len(beat.url), len(beat.site), len(beat.rack)) == (255, 255, 64, 64)


HEARTBEAT_MALFORMED: list[tuple[str, Any, str]] = [
    ("extra", 1, "extra"),
    ("member_id", "m1", "member_id"),
    ("name", 5, "name"),
    ("name", "n" * 256, "name"),
    ("url", "u" * 256, "url"),
    ("url", ["http://x/"], "url"),
    ("site", "s" * 65, "site"),
    ("rack", "r" * 65, "rack"),
    ("rack", False, "rack"),
    ("free", -1, "free"),
    ("free", 1.0, "free"),
    ("free", True, "free"),
    ("free", "100", "free"),
]


@pytest.mark.parametrize(
    ("name", "value", "field"), HEARTBEAT_MALFORMED, ids=[f"{n}={v!r}"[:40] for n, v, _ in HEARTBEAT_MALFORMED]
)
def test_each_bad_heartbeat_field_is_named(name: str, value: Any, field: str) -> None:
    body = {"name": "node-1", "url": "http://10.0.0.5:7000/", name: value}
    with pytest.raises(ProtocolError) as info:
        parse(body, Heartbeat)
    assert info.value.field == field


def test_of_several_unknown_fields_the_first_in_the_body_is_named() -> None:
    with pytest.raises(ProtocolError) as info:
        parse({"url": URL, "zeta": 1, "alpha": 2}, PushRequest)
    assert info.value.field == "zeta"


# -- names, ids and tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "build-farm", "eu.west_1", "x" * 64, "9-._"])
def test_good_pool_names(name: str) -> None:
    assert check_pool_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "Build", "-lead", ".lead", "_lead", "a b", "a/b", "pool\n", "pööl", "a:b"]
)
def test_bad_pool_names(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_pool_name(name)
    assert info.value.field == "pool"


def test_new_job_ids_are_good_and_distinct() -> None:
    ids = {new_job_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(check_job_id(job_id) == job_id for job_id in ids)


@pytest.mark.parametrize(
    "job_id", ["", "0123456789abcde", "0123456789abcdef0", "0123456789ABCDEF", "0123456789abcdeg", "0123456789abcde\n"]
)
def test_bad_job_ids(job_id: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_job_id(job_id)
    assert info.value.field == "job"


def test_tokens_are_random_and_url_safe() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    alphabet = set(string.ascii_letters + string.digits + "-_")
    assert all(len(t) == 43 and set(t) <= alphabet for t in tokens)  # 32 random bytes in base64url


def test_only_the_tokens_sha256_is_stored_and_it_matches() -> None:
    token = new_token()
    stored = hash_token(token)
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert len(stored) == 64 and token not in stored
    assert token_matches(stored, token)
    assert not token_matches(stored, token + "x")
    assert not token_matches(stored, new_token())
    assert not token_matches(stored, stored)  # the hash itself is no token
    assert not token_matches(stored, "")


@given(st.text(max_size=60), st.text(max_size=60))
def test_token_matches_exactly_the_hashed_token(token: str, other: str) -> None:
    assert token_matches(hash_token(token), token)
    assert token_matches(hash_token(token), other) == (token == other)


def test_a_member_marked_left_that_is_heard_from_again_keeps_the_job_open() -> None:
    returning = {"a": Assignment("a", MemberStatus.LEFT)}
    decision = run(push(), [member("a")], returning)
    assert decision == Decision()  # it resumes; the job neither fails nor finishes
    gone = run(push(), [member("a", age=TTL + 1)], returning)
    assert isinstance(gone.event, JobFailed)
    replicas = run(push(replicas=1), [member("a"), member("b")], returning)
    assert replicas.assign == ()  # its copy is on the way again


@pytest.mark.parametrize("member_id", ["", "a" * 65, "a b", "a/b", "id\n", "é"])
def test_bad_member_ids_are_refused(member_id: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        check_member_id(member_id)
    assert raised.value.field == "member"


def test_member_ids_have_a_peer_ids_form() -> None:
    assert check_member_id("a1b2-c3.d_4") == "a1b2-c3.d_4"


# -- who may do what ---------------------------------------------------------------------------------------

NOBODY = Credential()
STRANGER = Credential(given=True)
OWNER = Credential(given=True, owner=True)
OPERATOR = Credential(given=True, operator=True)


@pytest.mark.parametrize("configured", [True, False])
def test_the_operator_may_do_anything(configured: bool) -> None:
    for action in Action:
        for private in (True, False):
            for owned in (True, False):
                verdict = refusal(action, OPERATOR, operator_configured=configured, private=private, owned=owned)
                assert verdict is None


def test_creating_needs_the_operator_when_the_tracker_has_one() -> None:
    assert refusal(Action.CREATE, NOBODY, operator_configured=True) == Refusal(
        401, "creating a pool needs the operator's token"
    )
    assert refusal(Action.CREATE, STRANGER, operator_configured=True) == Refusal(
        403, "creating a pool needs the operator's token"
    )
    assert refusal(Action.CREATE, NOBODY, operator_configured=False) is None


@pytest.mark.parametrize("configured", [True, False])
@pytest.mark.parametrize("private", [True, False])
def test_managing_an_owned_pool_needs_its_token_with_or_without_an_operator(configured: bool, private: bool) -> None:
    def verdict(who: Credential) -> Refusal | None:
        return refusal(Action.MANAGE, who, operator_configured=configured, private=private)

    assert verdict(OWNER) is None
    assert verdict(NOBODY) is not None and verdict(NOBODY).status == 401  # type: ignore[union-attr]
    assert verdict(STRANGER) == Refusal(403, "wrong token for this pool")


def test_a_pool_from_before_owners_is_managed_by_the_operator_or_on_an_open_tracker_by_anyone() -> None:
    assert refusal(Action.MANAGE, NOBODY, operator_configured=False, owned=False) is None
    assert refusal(Action.MANAGE, NOBODY, operator_configured=True, owned=False) is not None
    assert refusal(Action.MANAGE, STRANGER, operator_configured=True, owned=False) is not None


def test_a_public_pool_is_used_by_anyone_and_a_private_one_by_its_token_holders() -> None:
    assert refusal(Action.USE, NOBODY, operator_configured=True, private=False) is None
    assert refusal(Action.USE, OWNER, operator_configured=True, private=True) is None
    assert refusal(Action.USE, NOBODY, operator_configured=False, private=True) == Refusal(
        401, "this pool needs a token"
    )
    assert refusal(Action.USE, STRANGER, operator_configured=False, private=True) == Refusal(
        403, "wrong token for this pool"
    )


def test_a_member_id_is_named_by_its_secret_only() -> None:
    secret = "0123456789abcdef" * 2
    member_id = member_id_for(secret)
    assert len(member_id) == 24 and member_id == member_id_for(secret)
    assert member_secret_matches(member_id, secret)
    assert not member_secret_matches(member_id, "f" * 32)
    assert not member_secret_matches(member_id, secret.upper())  # not the secret's form
    assert not member_secret_matches("m-1", secret)
    assert not member_secret_matches(member_id, "")
