"""core.deafness: a peer's silence while the tracker stalled or shed announces is not held against it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.deafness import Deafness

TTL = 15.0


def ticking(start: float, until: float, deafness: Deafness | None = None) -> Deafness:
    """Ticks every second from ``start`` to ``until``, each on time."""
    d = deafness or Deafness(span=4 * TTL)
    t = start
    while t <= until:
        d.tick(t)
        t += 1.0
    return d


def test_on_time_ticks_and_no_sheds_judge_at_now() -> None:
    d = ticking(0.0, 100.0)
    assert d.spells == []
    assert d.expiry_clock(100.5) == 100.5


def test_a_clock_moved_by_hand_between_ticks_on_time_is_heard_time() -> None:
    """Tests move a fake clock: what counts as a stall is the event loop's lateness, not the clock's jump."""
    d = ticking(0.0, 10.0)
    d.tick(25.0)
    assert d.spells == []
    assert d.expiry_clock(25.0) == 25.0


def test_a_peer_heard_before_a_stall_past_its_ttl_is_not_silent_at_the_resume() -> None:
    d = ticking(0.0, 10.0)  # the peer last heard at 10.0
    d.tick(31.0, late=20.0)  # the process was stopped from 11 s to 31 s
    assert d.spells == [(11.0, 31.0)]
    judged = d.expiry_clock(31.0)
    assert judged - 10.0 < TTL  # heard for 1 s since the peer spoke, not 21
    assert judged == pytest.approx(11.0)


def test_announces_decided_before_the_late_tick_see_the_stall_already() -> None:
    d = ticking(0.0, 10.0)
    assert d.expiry_clock(31.0, overdue=20.0) == pytest.approx(11.0)  # the loop resumed; the tick has not run


def test_a_peer_silent_after_the_stall_expires_on_heard_time() -> None:
    d = ticking(0.0, 10.0)
    d.tick(31.0, late=20.0)
    ticking(32.0, 60.0, deafness=d)
    # Heard 1 s before the stall and every second after it: at 45 the peer of 10.0 has 15 s of heard silence.
    assert d.expiry_clock(45.0) - 10.0 == pytest.approx(TTL)
    assert d.expiry_clock(46.0) - 10.0 > TTL


def test_lateness_within_the_slack_is_heard() -> None:
    d = ticking(0.0, 10.0)
    d.tick(11.9, late=0.9)
    assert d.spells == []


def test_a_period_with_a_shed_announce_is_deaf_as_a_whole() -> None:
    d = ticking(0.0, 10.0)
    d.shed()
    assert d.expiry_clock(10.5) == 10.0  # between sheds: the pending period already counts
    d.tick(11.0)
    assert d.spells == [(10.0, 11.0)]
    d.tick(12.0)  # nothing shed in this one
    assert d.spells == [(10.0, 11.0)]
    assert d.expiry_clock(12.0) == 11.0


def test_shedding_without_end_expires_nobody() -> None:
    d = ticking(0.0, 5.0)
    for t in range(6, 600):
        d.shed()
        d.tick(float(t))
    assert d.expiry_clock(599.0) == 5.0
    assert len(d.spells) == 1  # merged: memory does not grow with the spell


def test_old_spells_leave_the_window_and_are_forgotten() -> None:
    d = ticking(0.0, 10.0)
    d.tick(31.0, late=20.0)
    ticking(32.0, 200.0, deafness=d)
    assert d.spells == []
    assert d.expiry_clock(200.0) == 200.0


@pytest.mark.parametrize("kwargs", [{"span": 0.0}, {"span": 1.0, "slack": -1.0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Deafness(**kwargs)


events = st.lists(
    st.tuples(
        st.sampled_from(["tick", "shed", "judge"]),
        st.floats(min_value=0.0, max_value=30.0),
        st.floats(min_value=0.0, max_value=30.0),
    ),
    max_size=80,
)


@given(events)
def test_property_the_expiry_clock_never_goes_back_nor_past_now(steps: list[tuple[str, float, float]]) -> None:
    d = Deafness(span=60.0)
    now, last = 0.0, float("-inf")
    for kind, gap, late in steps:
        now += gap
        if kind == "tick":
            d.tick(now, late=late)
        elif kind == "shed":
            d.shed()
        judged = d.expiry_clock(now, overdue=late if kind == "judge" else 0.0)
        assert last <= judged <= now
        last = judged


@given(
    st.lists(st.tuples(st.floats(min_value=0.0, max_value=5.0), st.floats(min_value=0.0, max_value=5.0)), max_size=80)
)
def test_property_without_sheds_only_lateness_past_the_slack_is_deaf(ticks: list[tuple[float, float]]) -> None:
    d = Deafness(span=1e9, slack=0.5)
    now, expected = 0.0, 0.0
    d.tick(now)
    for gap, late in ticks:
        last, now = now, now + gap
        d.tick(now, late=late)
        if now > last and late > 0.5:
            expected += now - max(last, now - late)
    assert d.deaf(float("-inf"), now) == pytest.approx(expected)


def test_deaf_since_counts_the_spells_after_the_start_and_a_period_shed_in_not_ticked_yet() -> None:
    d = ticking(0.0, 10.0)
    d.shed()
    d.tick(11.0)  # 10-11 deaf
    d.tick(12.0)
    d.tick(20.0, late=5.0)  # a stall: 15-20 deaf
    assert d.deaf_since(0.0, 20.0) == pytest.approx(6.0)
    assert d.deaf_since(10.5, 20.0) == pytest.approx(5.5)
    assert d.deaf_since(16.0, 20.0) == pytest.approx(4.0)
    d.shed()  # shed since the tick at 20: the period counts deaf up to now, as the next tick will count it
    assert d.deaf_since(0.0, 23.0) == pytest.approx(9.0)
    assert d.deaf_since(21.0, 23.0) == pytest.approx(2.0)
    d.tick(24.0)
    assert d.deaf_since(0.0, 30.0) == pytest.approx(10.0)  # the period 20-24 as counted at its tick
