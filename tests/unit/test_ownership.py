"""Which tracker owns which task (core.ownership): rendezvous hashing over live members, fencing, take-over."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.ownership import (
    CREATED_EPOCH,
    FENCE_MARGIN,
    HEARTBEAT,
    JOIN_DELAY,
    LOOP_PATIENCE,
    TTL,
    EpochFence,
    Placement,
    TrackerMember,
    counts_from,
    in_force,
    keeps_renewing,
    last_move,
    lost_tasks,
    move_times,
    must_rejoin,
    others_took_over,
    owner,
    placed_from,
    refusal_seen,
    replaceable,
    replacing,
    sharing_url,
    withdrawing,
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
    its row only when it never stopped deciding; otherwise it joins again and decides from counts_from. b
    may still decide on a reading taken before a's new row committed: whatever b read then, a task is never
    decided by both."""
    back = renewed_at + stall
    rejoins = must_rejoin(renewed_at, back)
    a_now = member("a", back + JOIN_DELAY if rejoins else 0, back + TTL)  # its row as it renewed or joined
    a_from = counts_from(back, a_now.active_from, back) if rejoins else 0.0
    a_before = member("a", active_from=0, expires=renewed_at + TTL)  # the row b may still have read
    b = member("b", active_from=0, expires=1e9)
    # b read the rows before a came back (a reading after it has a's new row), and decides on that reading
    # until its own fence.
    for read_at in (back - 0.01, renewed_at + TTL, back - TTL):
        for moment in (back, back + 1.0, back + 3.0, read_at + TTL - FENCE_MARGIN - 0.01):
            if read_at >= back or moment < back or not in_force(read_at, moment):
                continue
            for task in TASKS[:50]:
                a_decides = moment >= a_from and owner(task, [a_now, b], moment).tracker_id == "a"  # type: ignore[union-attr]
                b_decides = owner(task, [a_before, b], moment, read_at).tracker_id == "b"  # type: ignore[union-attr]
                assert not (a_decides and b_decides), (renewed_at, stall, read_at, moment)


@given(
    st.lists(st.floats(min_value=0.01, max_value=TTL - FENCE_MARGIN - 0.01), min_size=1, max_size=4),
    st.floats(min_value=0, max_value=30),
    st.floats(min_value=0, max_value=TTL - FENCE_MARGIN - 0.01),
)
def test_a_reading_that_missed_a_late_renewal_never_counts_the_member_dead(
    gaps: list[float], read_at: float, age: float
) -> None:
    """a renews late (each renewal within its fence, so it keeps deciding); b reads the rows at ``read_at``,
    perhaps before some of a's renewals, and decides on that reading ``age`` seconds later. Whenever b counts
    a dead and takes one of its tasks, a no longer decides it."""
    renewals = [0.0]
    for gap in gaps:
        renewals.append(renewals[-1] + gap)
    seen = max(s for s in [0.0, *renewals] if s <= read_at)  # the last renewal b's reading has
    a_row = member("a", active_from=-100, expires=seen + TTL)
    b = member("b", active_from=-100, expires=1e9)
    moment = read_at + age
    a_renewed = max(s for s in renewals if s <= moment) if moment >= 0 else -float("inf")
    for task in TASKS[:50]:
        b_decides = owner(task, [a_row, b], moment, read_at).tracker_id == "b"  # type: ignore[union-attr]
        a_owns = owner(task, [member("a", -100, 1e9), b], moment).tracker_id == "a"  # type: ignore[union-attr]
        a_decides = a_owns and in_force(a_renewed, moment)
        assert not (a_decides and b_decides), (renewals, read_at, moment)


def test_a_member_counts_dead_only_by_a_reading_taken_after_its_row_expired() -> None:
    a = member("a", active_from=NOW - 10, expires=NOW)
    assert not a.live(NOW + 1), "read now: dead"
    assert a.live(NOW + 1, read_at=NOW - 1), "read before it expired: it may have renewed since"
    assert not a.live(NOW + 1, read_at=NOW), "read as it expired"
    assert a.live(NOW - 1, read_at=NOW - 2)
    assert not member("a", active_from=NOW + 1).live(NOW, read_at=NOW), "not yet active"


def test_a_new_member_decides_only_once_every_reading_without_its_row_is_too_old() -> None:
    registered, committed = NOW, NOW + 0.5
    assert counts_from(registered, registered + JOIN_DELAY, committed) == committed + JOIN_DELAY
    assert counts_from(registered, registered + JOIN_DELAY, registered) == registered + JOIN_DELAY
    # Another member's last reading without the row began before the commit; it decides on it until its fence.
    assert counts_from(registered, registered + JOIN_DELAY, committed) > committed + TTL - FENCE_MARGIN
    assert counts_from(registered, registered, committed) == registered, "alone: nobody else can be deciding"


def test_the_renewals_stop_only_when_the_loop_has_made_no_progress_for_its_patience() -> None:
    assert keeps_renewing(NOW, NOW)
    assert keeps_renewing(NOW - 4.2, NOW), "a loop four seconds behind is busy, not wedged"
    assert keeps_renewing(NOW - LOOP_PATIENCE + 0.01, NOW)
    assert not keeps_renewing(NOW - LOOP_PATIENCE, NOW)
    assert not keeps_renewing(NOW - LOOP_PATIENCE - HEARTBEAT, NOW)


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


def test_a_write_lands_only_on_the_epoch_its_copy_took_the_task_over_with() -> None:
    fence = EpochFence({"t": 3, "u": 7})
    assert fence.lands("t", 3) and fence.lands("u", 7)
    assert not fence.lands("t", 2), "another tracker took the task over since the copy was read"
    assert not fence.lands("t", 4)
    assert not fence.lands("gone", 3), "a task whose row is gone has no epoch"
    assert not fence.lands("t", None), "a copy read without taking the task over writes nothing"


def test_a_task_created_in_the_batch_takes_the_writes_of_its_creating_copy() -> None:
    fence = EpochFence({})
    assert not fence.lands("t", CREATED_EPOCH), "no row yet: a write before the creation finds none"
    fence.created("t")
    assert fence.lands("t", CREATED_EPOCH)
    assert not fence.lands("t", CREATED_EPOCH + 1)


def test_on_a_database_of_one_tracker_only_the_take_over_is_checked() -> None:
    fence = EpochFence(None)
    assert fence.lands("t", 0) and fence.lands("t", 5)
    fence.created("t")
    assert fence.lands("t", 1)
    assert not fence.lands("t", None)


def _hashed_elsewhere(members: list[TrackerMember], name: str) -> str:
    """A task the hash gives to a member other than ``name``."""
    return next(t for t in TASKS if owner(t, members, NOW).tracker_id != name)  # type: ignore[union-attr]


def test_a_placement_changes_nothing_before_its_active_from_and_names_the_owner_after() -> None:
    members = [member("a"), member("b"), member("c")]
    task = _hashed_elsewhere(members, "c")
    hashed = owner(task, members, NOW)
    assert hashed is not None
    placed = {task: Placement(task, "c", NOW + 2, None)}
    assert owner(task, members, NOW, placements=placed) == hashed, "before active_from: the hash owner"
    assert owner(task, members, NOW + 2, placements=placed).tracker_id == "c"  # type: ignore[union-attr]
    other = next(t for t in TASKS if t != task)
    assert owner(other, members, NOW + 2, placements=placed) == owner(other, members, NOW + 2)


def test_before_its_active_from_a_replacing_placement_keeps_the_owner_the_one_it_replaced() -> None:
    members = [member("a"), member("b"), member("c")]
    task = _hashed_elsewhere(members, "b")
    moved_again = {task: Placement(task, "c", NOW + 2, previous="b")}
    assert owner(task, members, NOW, placements=moved_again).tracker_id == "b"  # type: ignore[union-attr]
    assert owner(task, members, NOW + 2, placements=moved_again).tracker_id == "c"  # type: ignore[union-attr]


def test_a_placement_on_a_dead_member_falls_back_to_the_hash() -> None:
    members = [member("a"), member("b"), member("c", expires=NOW - 1)]
    task = TASKS[0]
    placed = {task: Placement(task, "c", NOW - 30, None)}
    assert owner(task, members, NOW, placements=placed) == owner(task, members, NOW)
    assert owner(task, members, NOW, placements=placed).tracker_id in {"a", "b"}  # type: ignore[union-attr]
    # and so does its ``previous`` before active_from
    later = {task: Placement(task, "a", NOW + 5, previous="c")}
    assert owner(task, members, NOW, placements=later) == owner(task, members, NOW)


def test_a_replacing_placement_names_the_replaced_ones_member_until_it_is_in_force_even_one_dead_now() -> None:
    """A task placed on x, x dead, the hash owner g decides it and places it on t; x registers again (the same
    id) before the new row's active_from. A member without the new row (the rows read before it committed) and
    one with it must name the same owner at every instant before active_from, or both g (by its own record
    of the move) and x (by the old row) decide the task."""
    g, t, x_live = (member(name, expires=NOW + 100) for name in "gtx")
    task = next(k for k in TASKS if owner(k, [g, t, x_live], NOW).tracker_id == "g")  # type: ignore[union-attr]
    old = Placement(task, "x", NOW - 30, None)
    assert replaceable(old, NOW)
    new = replacing(task, "t", old, NOW + JOIN_DELAY)
    for x in (member("x", expires=NOW - 1), member("x", NOW + 1, NOW + 100)):  # dead; registered again
        for when in (NOW, NOW + 1, NOW + JOIN_DELAY - 0.5):
            members = [g, t, x]
            assert owner(task, members, when, placements={task: new}) == owner(
                task, members, when, placements={task: old}
            ), (x, when)
    assert owner(task, [g, t, x_live], NOW + JOIN_DELAY, placements={task: new}).tracker_id == "t"  # type: ignore[union-attr]
    assert replacing(task, "t", None, NOW + JOIN_DELAY).previous is None  # no row: the hash owner's


def test_a_placement_not_in_force_yet_is_not_replaced() -> None:
    """It names one owner until its active_from and another after: no single ``previous`` says both."""
    assert not replaceable(Placement("t", "b", NOW + 1, "a"), NOW)
    assert replaceable(Placement("t", "b", NOW + 1, "a"), NOW + 1)


def test_lost_tasks_count_placements() -> None:
    members = [member("a"), member("b")]
    mine = [t for t in TASKS[:50] if owner(t, members, NOW).tracker_id == "a"]  # type: ignore[union-attr]
    placed = {mine[0]: Placement(mine[0], "b", NOW - 1, None)}
    assert lost_tasks(mine, "a", members, NOW, placements=placed) == [mine[0]]
    assert lost_tasks(mine, "a", members, NOW - 2, placements=placed) == []


def test_the_member_placed_on_decides_once_every_reading_has_the_row() -> None:
    placed = Placement("t", "b", NOW + JOIN_DELAY, None)
    # Read promptly: from FENCE_MARGIN after active_from (clocks that disagree).
    assert placed_from(placed, NOW + 1) == NOW + JOIN_DELAY + FENCE_MARGIN
    # Read late (its write was slow, a renewal failed): JOIN_DELAY after that reading, when no reading another
    # member decides on (at most TTL - FENCE_MARGIN old, clocks within FENCE_MARGIN) can predate the row.
    assert placed_from(placed, NOW + 10) == NOW + 10 + JOIN_DELAY
    assert JOIN_DELAY >= TTL - FENCE_MARGIN + FENCE_MARGIN


@given(st.floats(0, 100), st.floats(0, 100), st.floats(0, TTL - FENCE_MARGIN), st.floats(-FENCE_MARGIN, FENCE_MARGIN))
def test_from_the_placed_members_start_no_reading_decided_on_predates_the_row(
    written: float, delay: float, age: float, skew: float
) -> None:
    """The row commits at ``written``; the member placed on first reads it ``delay`` later. At any moment from
    its start, another member (its clock off by ``skew``) decides on a reading at most TTL - FENCE_MARGIN old
    by its own clock: that reading began after the row committed, so it names the new owner."""
    placed = Placement("t", "b", written + JOIN_DELAY, None)
    start = placed_from(placed, written + delay)
    reading_began = start + skew - age  # the other member's clock reads start + skew
    assert reading_began - skew >= written  # back on the shared time line


def _placed_away_from_its_hash_owner() -> tuple[TrackerMember, TrackerMember, str, Placement]:
    """g and t live; a task the hash gives g, placed on t long ago."""
    g, t = member("g", expires=NOW + 1e6), member("t", expires=NOW + 1e6)
    task = next(k for k in TASKS if owner(k, [g, t], NOW).tracker_id == "g")  # type: ignore[union-attr]
    return g, t, task, Placement(task, "t", NOW - 100, None)


@given(st.floats(0, 30), st.floats(0, 30), st.floats(0, TTL - FENCE_MARGIN - 0.01), st.floats(0, 30))
def test_a_placement_its_member_deletes_never_leaves_two_deciders(
    commit_after: float, moment_after: float, age: float, t_lag: float
) -> None:
    """t stops deciding the task by its record and sends the delete at NOW; it commits ``commit_after`` later.
    At any moment from NOW, g decides on a reading at most TTL - FENCE_MARGIN old, and t on its latest, which
    may lag far: a reading has the row until the delete commits. Never do both decide."""
    g, t, task, placed = _placed_away_from_its_hash_owner()
    committed = NOW + commit_after
    moment = NOW + moment_after

    def rows(read_at: float) -> dict[str, Placement]:
        return {task: placed} if read_at < committed else {}

    g_read = moment - age
    g_decides = owner(task, [g, t], moment, g_read, rows(g_read)).tracker_id == "g"  # type: ignore[union-attr]
    t_read = moment - t_lag
    t_rows = rows(t_read)
    t_owns = owner(task, [g, t], moment, t_read, t_rows).tracker_id == "t"  # type: ignore[union-attr]
    t_decides = t_owns and not withdrawing(task, {task: placed}, t_rows)
    assert not (g_decides and t_decides), (commit_after, moment_after, age, t_lag)
    if moment >= committed and t_read >= committed:
        assert t_decides is False and g_decides == (g_read >= committed), "the hash owner's, once read so"


def test_without_its_record_the_member_that_deletes_a_placement_would_decide_beside_the_hash_owner() -> None:
    g, t, task, placed = _placed_away_from_its_hash_owner()
    committed = NOW + 1
    # g read the rows after the delete committed; t's latest reading is from before.
    assert owner(task, [g, t], NOW + 2, NOW + 1.5, {}).tracker_id == "g"  # type: ignore[union-attr]
    assert owner(task, [g, t], NOW + 2, committed - 0.5, {task: placed}).tracker_id == "t"  # type: ignore[union-attr]
    assert withdrawing(task, {task: placed}, {task: placed}), "so t refuses it until its reading lacks the row"


def test_a_withdrawn_placement_stops_counting_once_the_reading_lacks_it_or_has_another_row() -> None:
    placed = Placement("k", "t", NOW, None)
    assert withdrawing("k", {"k": placed}, {"k": placed})
    assert not withdrawing("k", {"k": placed}, {}), "deleted: the rows say who decides"
    assert not withdrawing("k", {"k": placed}, {"k": Placement("k", "u", NOW + 5, "t")}), "replaced since"
    assert not withdrawing("other", {"k": placed}, {"k": placed, "other": placed})


def test_a_refused_move_is_settled_only_by_a_reading_taken_after_the_refusal() -> None:
    assert not refusal_seen(NOW, NOW - 0.5), "read before the store said no: it may lack the row that refused it"
    assert not refusal_seen(NOW, NOW), "begun at the same instant: not known to be after"
    assert refusal_seen(NOW, NOW + 0.01)


def test_one_live_member_owns_every_task_whatever_its_placements_name() -> None:
    alone = member("a")
    dead = member("b", expires=NOW - 1)
    placed = {TASKS[0]: Placement(TASKS[0], "b", NOW - 5, None), TASKS[1]: Placement(TASKS[1], "c", NOW + 5, "b")}
    for task in TASKS[:200]:
        assert owner(task, [alone, dead], NOW, placements=placed) is alone
    assert owner(TASKS[0], [dead], NOW, placements=placed) is None


times_st = st.floats(0, 100, allow_nan=False)
members_st = st.lists(st.tuples(times_st, times_st), max_size=4)


@given(members_st, st.lists(times_st, max_size=4), times_st)
def test_last_move_is_the_latest_join_death_or_start_by_now(
    rows: list[tuple[float, float]], starts: list[float], now: float
) -> None:
    """:func:`last_move` over :func:`move_times` is the definition: the latest ``active_from`` and ``expires``
    of the members, and the latest start, that are not after ``now``."""
    members = [TrackerMember(f"m{i}", "", active_from, expires) for i, (active_from, expires) in enumerate(rows)]
    expected = max(
        [m.active_from for m in members if m.active_from <= now]
        + [m.expires for m in members if m.expires <= now]
        + [start for start in starts if start <= now],
        default=float("-inf"),
    )
    assert last_move(move_times(members, starts), now) == expected
