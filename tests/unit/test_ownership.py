"""Which tracker owns which task (core.ownership): rendezvous hashing over live members, fencing, take-over."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.ownership import (
    FENCE_MARGIN,
    JOIN_DELAY,
    TTL,
    TrackerMember,
    in_force,
    lost_tasks,
    must_rejoin,
    others_took_over,
    owner,
    sharing_url,
)

NOW = 1000.0
HEARTBEAT_LATE = 1.5
TASKS = [f"{i:040x}" for i in range(3000)]


def member(name: str, active_from: float = NOW - 10, expires: float = NOW + 5) -> TrackerMember:
    return TrackerMember(name, f"http://{name}:6969", active_from, expires)


def test_every_task_has_one_owner_and_the_members_share_them() -> None:
    members = [member("a"), member("b"), member("c")]
    owners = Counter(owner(t, members, NOW).tracker_id for t in TASKS)  # type: ignore[union-attr]
    assert set(owners) == {"a", "b", "c"}
    assert all(800 <= n <= 1200 for n in owners.values()), owners


def test_the_owner_does_not_depend_on_the_order_members_are_listed_in() -> None:
    members = [member("a"), member("b"), member("c")]
    for task in TASKS[:200]:
        assert owner(task, members, NOW) == owner(task, members[::-1], NOW)


def test_a_dead_member_gives_up_only_its_own_tasks() -> None:
    alive = [member("a"), member("b")]
    dead = member("c", expires=NOW - 0.1)
    before = {t: owner(t, [*alive, member("c")], NOW) for t in TASKS}
    after = {t: owner(t, [*alive, dead], NOW) for t in TASKS}
    moved = [t for t in TASKS if before[t] != after[t]]
    assert moved and all(before[t].tracker_id == "c" for t in moved)  # type: ignore[union-attr]
    assert all(after[t].tracker_id in ("a", "b") for t in TASKS)  # type: ignore[union-attr]


def test_a_joining_member_counts_only_from_its_active_from() -> None:
    joining = member("new", active_from=NOW + 3)
    members = [member("a"), joining]
    assert {owner(t, members, NOW).tracker_id for t in TASKS} == {"a"}  # type: ignore[union-attr]
    assert "new" in {owner(t, members, NOW + 3).tracker_id for t in TASKS}  # type: ignore[union-attr]


def test_nobody_owns_a_task_when_no_member_is_live() -> None:
    assert owner(TASKS[0], [member("a", expires=NOW)], NOW) is None
    assert owner(TASKS[0], [], NOW) is None


def test_a_member_stops_deciding_before_its_row_expires() -> None:
    renewed = NOW
    assert in_force(renewed, NOW + TTL - FENCE_MARGIN - 0.01)
    assert not in_force(renewed, NOW + TTL - FENCE_MARGIN)
    assert not in_force(float("-inf"), NOW)  # never renewed: not yet joined, or left


@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_no_moment_has_two_deciders(renewed_at: float, later: float) -> None:
    """TrackerMember a renewed its row at ``renewed_at`` and then fell silent; b takes a's tasks once a's row has
    expired. Whenever b may decide a task of a's, a itself no longer does."""
    a = member("a", active_from=0, expires=renewed_at + TTL)
    b = member("b", active_from=0, expires=1e9)
    now = renewed_at + later
    for task in TASKS[:50]:
        b_decides = owner(task, [a, b], now).tracker_id == "b"  # type: ignore[union-attr]
        a_decides = in_force(renewed_at, now) and owner(task, [a, b], now).tracker_id == "a"  # type: ignore[union-attr]
        assert not (a_decides and b_decides)
        if not a.live(now):
            assert not a_decides


def test_the_tasks_lost_to_a_member_that_joined() -> None:
    me, other = member("me"), member("other", active_from=NOW)
    held = TASKS[:100]
    lost = lost_tasks(held, "me", [me, other], NOW)
    assert lost == [t for t in held if owner(t, [me, other], NOW).tracker_id == "other"]  # type: ignore[union-attr]
    assert 20 < len(lost) < 80
    assert lost_tasks(held, "me", [me], NOW) == []


def test_a_renewal_that_ends_after_the_member_stopped_deciding_is_a_new_join() -> None:
    assert not must_rejoin(NOW, NOW + HEARTBEAT_LATE), "a renewal a little late: the row goes on"
    assert must_rejoin(NOW, NOW + TTL - FENCE_MARGIN), "stalled until it fenced itself"
    assert must_rejoin(NOW, NOW + TTL + 30), "stalled past its row's expiry"
    assert must_rejoin(float("-inf"), NOW), "never renewed"


@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_a_stalled_member_that_comes_back_never_decides_with_the_one_that_took_its_tasks(
    renewed_at: float, stall: float
) -> None:
    """a renewed at ``renewed_at``, stalled ``stall`` seconds, and renews as soon as it runs again: it keeps
    its row only when it never stopped deciding; otherwise it joins again and counts JOIN_DELAY later. b reads
    the rows once a heartbeat, so it may still see a's old row, expired, when a runs again: whatever b saw
    then, a task is never decided by both."""
    back = renewed_at + stall
    rejoins = must_rejoin(renewed_at, back)
    a_now = member("a", back + JOIN_DELAY if rejoins else 0, back + TTL)  # its row as it renewed or joined
    a_before = member("a", active_from=0, expires=renewed_at + TTL)  # the row b may still have read
    b = member("b", active_from=0, expires=1e9)
    for moment in (back, back + 0.5, back + 1.0):  # b's view lags by up to a heartbeat (HEARTBEAT = 1 s)
        for task in TASKS[:50]:
            a_decides = owner(task, [a_now, b], moment).tracker_id == "a"  # type: ignore[union-attr]
            b_decides = owner(task, [a_before, b], moment).tracker_id == "b"  # type: ignore[union-attr]
            assert not (a_decides and b_decides), (renewed_at, stall, moment)


def test_a_member_that_rejoins_keeps_its_tasks_only_when_nobody_could_have_taken_them() -> None:
    expired = NOW  # its old row's expiry
    assert not others_took_over([], expired), "alone on its database"
    assert not others_took_over([member("b", expires=expired - FENCE_MARGIN)], expired), "b died before"
    assert others_took_over([member("b", expires=expired - FENCE_MARGIN + 0.01)], expired), "within the margin"
    assert others_took_over([member("b", expires=expired + 30)], expired), "b lived on and took them"
    assert others_took_over([member("b", expires=0), member("c", expires=expired + 1)], expired)


def test_members_that_advertise_one_url_are_named() -> None:
    a = TrackerMember("a", "http://127.0.0.1:6969", NOW - 10, NOW + 5)
    b = TrackerMember("b", "http://127.0.0.1:6969/", NOW - 10, NOW + 5)
    c = member("c")
    dead = TrackerMember("d", "http://127.0.0.1:6969", active_from=0.0, expires=NOW - 1)
    assert sharing_url("a", [a, b, c, dead], NOW) == [b]
    assert sharing_url("c", [a, b, c, dead], NOW) == []
    assert sharing_url("x", [a, b], NOW) == [], "not a member (yet): nothing to compare with"
