"""Mirror schedules (core.schedule): tunasync's interval rule and five-field cron expressions.

Expected run times are worked out by hand as UTC datetimes. The property tests check ``next_after``
against a reference written here minute by minute: from the expression's own parts, not from the
parser's sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.errors import CronError, UsageError
from shoal.core.schedule import Cron, next_run


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


# -- intervals --------------------------------------------------------------------------------------------

HOUR = 3600.0


def test_a_job_that_never_ran_runs_now() -> None:
    assert next_run(None, None, HOUR, 500.0) == 500.0


def test_the_next_run_is_one_interval_after_the_last_end() -> None:
    # Started at 1000, ended at 1900 (a 15-minute sync): due at 1900 + 3600, not 1000 + 3600.
    assert next_run(1000.0, 1900.0, HOUR, 2000.0) == 5500.0


def test_exactly_due() -> None:
    assert next_run(1000.0, 1900.0, HOUR, 5500.0) == 5500.0


def test_a_missed_run_happens_now_once() -> None:
    # The manager was down for a day: one run now, not 24 back to back.
    assert next_run(1000.0, 1900.0, HOUR, 1900.0 + 86400) == 1900.0 + 86400


@pytest.mark.parametrize(("started", "ended"), [(1000.0, None), (2000.0, 1900.0)])
def test_an_interrupted_run_is_due_now(started: float, ended: float | None) -> None:
    assert next_run(started, ended, HOUR, 2100.0) == 2100.0


def test_an_end_without_a_recorded_start_counts_from_the_end() -> None:
    assert next_run(None, 1900.0, HOUR, 2000.0) == 5500.0


def test_a_clock_stepped_back_delays_by_at_most_one_interval() -> None:
    # The last end reads as a day in the future: the job still runs within an interval of now.
    assert next_run(90_000.0, 90_100.0, HOUR, 1000.0) == 1000.0 + HOUR


@given(
    st.one_of(st.none(), st.floats(0, 1e9)),
    st.one_of(st.none(), st.floats(0, 1e9)),
    st.floats(1, 1e7),
    st.floats(0, 1e9),
)
def test_next_run_is_never_in_the_past_nor_more_than_an_interval_ahead(
    started: float | None, ended: float | None, interval: float, now: float
) -> None:
    due = next_run(started, ended, interval, now)
    assert now <= due <= now + interval


@pytest.mark.parametrize("interval", [0.0, -60.0, math.nan, math.inf])
def test_a_bad_interval_is_a_usage_error(interval: float) -> None:
    with pytest.raises(UsageError, match="interval"):
        next_run(None, None, interval, 0.0)


# -- cron: parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("60 * * * *", "minute"),
        ("-1 * * * *", "minute"),
        ("5-1 * * * *", "minute"),
        ("*/0 * * * *", "minute"),
        ("*/x * * * *", "minute"),
        ("1,,2 * * * *", "minute"),
        ("1, * * * *", "minute"),
        ("/5 * * * *", "minute"),
        ("1-2-3 * * * *", "minute"),
        ("a * * * *", "minute"),
        ("\u0663 * * * *", "minute"),  # an Arabic-Indic three: a digit to str.isdigit, not to cron
        ("*-5 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* mon * * *", "hour"),  # names belong to their own fields
        ("* * 0 * *", "day of month"),
        ("* * 32 * *", "day of month"),
        ("* * * 0 *", "month"),
        ("* * * 13 *", "month"),
        ("* * * foo *", "month"),
        ("* * * * 8", "day of week"),
        ("* * * * fri-mon", "day of week"),
        ("* * * * sunday", "day of week"),
        ("0 0 30 2 *", "day of month"),  # February never has a 30th
        ("0 0 31 4,6,9,11 *", "day of month"),
        ("0 0 31 4 */2", "day of month"),  # ANDed with a starred day of week: still never
        ("* * * *", "expression"),
        ("* * * * * *", "expression"),
        ("", "expression"),
        ("@reboot", "expression"),
        ("@fortnightly", "expression"),
    ],
)
def test_a_bad_expression_names_its_field(text: str, field: str) -> None:
    with pytest.raises(CronError) as info:
        Cron.parse(text)
    assert isinstance(info.value, UsageError)
    assert info.value.field == field
    assert field in str(info.value) or field == "expression"
    assert info.value.expression == text.strip()


@pytest.mark.parametrize(
    ("text", "index", "values"),
    [
        ("*/15 * * * *", 0, {0, 15, 30, 45}),
        ("1-10/3 * * * *", 0, {1, 4, 7, 10}),
        ("5/20 * * * *", 0, {5, 25, 45}),
        ("0,30,59 * * * *", 0, {0, 30, 59}),
        ("* 9-17 * * *", 1, set(range(9, 18))),
        ("* * */10 * *", 2, {1, 11, 21, 31}),
        ("* * * JAN,mar-May *", 3, {1, 3, 4, 5}),
        ("* * * * mon-fri", 4, {1, 2, 3, 4, 5}),
        ("* * * * 5-7", 4, {5, 6, 0}),
        ("* * * * 7", 4, {0}),
        ("* * * * *", 4, set(range(7))),
        ("* * * * */2", 4, {0, 2, 4, 6}),
    ],
)
def test_fields_parse_to_their_values(text: str, index: int, values: set[int]) -> None:
    cron = Cron.parse(text)
    assert [cron.minutes, cron.hours, cron.days, cron.months, cron.weekdays][index] == values


@pytest.mark.parametrize(
    ("text", "day_and"),
    [("0 0 1 * mon", False), ("0 0 * * mon", True), ("0 0 1 * *", True), ("0 0 */2 * 5", True), ("0 0 1 * */2", True)],
)
def test_the_day_fields_and_only_when_one_starts_with_a_star(text: str, day_and: bool) -> None:
    assert Cron.parse(text).day_and is day_and


@pytest.mark.parametrize(
    ("macro", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros_stand_for_their_expressions(macro: str, expression: str) -> None:
    a, b = Cron.parse(macro), Cron.parse(expression)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays, a.day_and) == (
        b.minutes,
        b.hours,
        b.days,
        b.months,
        b.weekdays,
        b.day_and,
    )
    assert str(a) == macro


def test_a_day_that_exists_only_in_leap_years_and_one_ored_with_a_weekday_are_accepted() -> None:
    assert Cron.parse("0 0 29 2 *").next_after(ts(2025, 1, 1)) == ts(2028, 2, 29)
    # ORed: 30 February never comes, but every Monday in February matches (1 February 2025 is a Saturday).
    assert Cron.parse("0 0 30 2 mon").next_after(ts(2024, 3, 1)) == ts(2025, 2, 3)
    assert Cron.parse("  0 0 1 1 *  ") == Cron.parse("0 0 1 1 *")


# -- cron: next run on known dates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("*/15 * * * *", ts(2024, 3, 10, 12, 7, 30), ts(2024, 3, 10, 12, 15)),
        ("*/15 * * * *", ts(2024, 3, 10, 12, 15), ts(2024, 3, 10, 12, 30)),  # strictly after
        ("* * * * *", ts(2024, 3, 10, 12, 15) - 0.5, ts(2024, 3, 10, 12, 15)),
        ("0 0 * * *", ts(2023, 12, 31, 23, 59, 59), ts(2024, 1, 1)),
        ("@yearly", ts(2024, 1, 1), ts(2025, 1, 1)),
        ("0 0 29 2 *", ts(2024, 3, 1), ts(2028, 2, 29)),
        ("0 0 31 * *", ts(2024, 4, 1), ts(2024, 5, 31)),
        ("0 12 * * mon-fri", ts(2024, 6, 1), ts(2024, 6, 3, 12)),  # Saturday to Monday
        # ORed day fields: the 1st, the 15th or a Friday; 2024-05-03 is the first Friday after the 1st.
        ("30 4 1,15 * 5", ts(2024, 5, 1, 5), ts(2024, 5, 3, 4, 30)),
        ("0 0 13 * fri", ts(2024, 9, 1), ts(2024, 9, 6)),
        # ANDed (day of month starts with *): odd days that are Fridays; 6 September is even, 13 is not.
        ("0 0 */2 * fri", ts(2024, 9, 1), ts(2024, 9, 13)),
        # 29 February on a Sunday: 2032 (2028's is a Tuesday).
        ("0 0 29 2 */7", ts(2024, 3, 1), ts(2032, 2, 29)),
        ("0 0 1 1 *", ts(1969, 6, 1), ts(1970, 1, 1)),  # before the epoch
        ("45 23 31 12 *", ts(2099, 12, 31, 23, 45), ts(2100, 12, 31, 23, 45)),
    ],
)
def test_next_after_on_known_dates(text: str, after: float, expected: float) -> None:
    got = Cron.parse(text).next_after(after)
    assert utc(got) == utc(expected)
    assert Cron.parse(text).matches(got)


def test_the_known_weekdays_are_right() -> None:
    assert datetime(2032, 2, 29).strftime("%a") == "Sun"
    assert datetime(2028, 2, 29).strftime("%a") == "Tue"
    assert datetime(2024, 9, 13).strftime("%a") == "Fri"


def test_a_time_just_below_a_minute_does_not_skip_it() -> None:
    # floor(t / 60) rounds this up to 2 in floating point; the run at 120 would be lost.
    t = 119.99999999999999
    assert t < 120
    assert Cron.parse("* * * * *").next_after(t) == 120.0


@pytest.mark.parametrize("t", [math.nan, math.inf, -math.inf, 1e18])
def test_next_after_refuses_times_that_are_not_dates(t: float) -> None:
    with pytest.raises(ValueError):
        Cron.parse("* * * * *").next_after(t)


# -- cron: properties against a minute-by-minute reference -------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One field as the strategy built it: its text and the values a reading of the manual gives."""

    text: str
    values: frozenset[int]


def field_spec(low: int, high: int) -> st.SearchStrategy[Spec]:
    def item(draw: st.DrawFn) -> tuple[str, set[int]]:
        kind = draw(st.sampled_from(["star", "star-step", "value", "range", "range-step", "value-step"]))
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        step = draw(st.integers(1, high - low + 2))
        if kind == "star":
            return "*", set(range(low, high + 1))
        if kind == "star-step":
            return f"*/{step}", {v for v in range(low, high + 1) if (v - low) % step == 0}
        if kind == "value":
            return str(a), {a}
        if kind == "range":
            return f"{a}-{b}", set(range(a, b + 1))
        if kind == "range-step":
            return f"{a}-{b}/{step}", {v for v in range(a, b + 1) if (v - a) % step == 0}
        return f"{a}/{step}", {v for v in range(a, high + 1) if (v - a) % step == 0}

    @st.composite
    def spec(draw: st.DrawFn) -> Spec:
        items = [item(draw) for _ in range(draw(st.integers(1, 3)))]
        return Spec(",".join(text for text, _ in items), frozenset().union(*(values for _, values in items)))

    return spec()


FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def reference_matches(specs: list[Spec], when: datetime) -> bool:
    minute, hour, dom, month, dow = specs
    weekdays = {d % 7 for d in dow.values}
    in_dom = when.day in dom.values
    in_dow = when.isoweekday() % 7 in weekdays
    ored = not dom.text.startswith("*") and not dow.text.startswith("*")
    day = (in_dom or in_dow) if ored else (in_dom and in_dow)
    return when.minute in minute.values and when.hour in hour.values and when.month in month.values and day


def first_minute_after(t: float) -> datetime:
    return datetime.fromtimestamp((math.floor(t) // 60 + 1) * 60, UTC)


def check_against_reference(specs: list[Spec], t: float, horizon_minutes: int) -> None:
    text = " ".join(s.text for s in specs)
    cron = Cron.parse(text)
    assert [cron.minutes, cron.hours, cron.days, cron.months] == [s.values for s in specs[:4]]
    got = cron.next_after(t)
    assert got > t and got % 60 == 0
    assert cron.matches(got) and reference_matches(specs, utc(got)), text
    # No earlier minute matches: every minute from the first one after t, up to the result (or the horizon).
    when, end = first_minute_after(t), min(utc(got), first_minute_after(t) + timedelta(minutes=horizon_minutes))
    while when < end:
        assert not reference_matches(specs, when), f"{text}: {when} matches before {utc(got)}"
        when += timedelta(minutes=1)


TIMES = st.floats(ts(1990, 1, 1), ts(2090, 1, 1), allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(field_spec(0, 59), field_spec(0, 23), field_spec(0, 7), TIMES)
def test_next_after_is_the_first_match_dense(minute: Spec, hour: Spec, dow: Spec, t: float) -> None:
    """Any day of month and month: a match comes within a week, and every minute before it is checked."""
    days, months = Spec("*", frozenset(range(1, 32))), Spec("*", frozenset(range(1, 13)))
    check_against_reference([minute, hour, days, months, dow], t, horizon_minutes=8 * 24 * 60)


@settings(max_examples=150, deadline=None)
@given(st.tuples(*(field_spec(low, high) for low, high in FIELD_RANGES)), TIMES)
def test_next_after_is_the_first_match_any_expression(specs: tuple[Spec, ...], t: float) -> None:
    """Any expression: the result matches, and no minute in the two days before it (or up to it) does."""
    text = " ".join(s.text for s in specs)
    dom, month, dow = specs[2], specs[3], specs[4]
    possible = any(
        day <= (29 if m == 2 else 30 if m in (4, 6, 9, 11) else 31) for m in month.values for day in dom.values
    )
    # Impossible only when the day of month is restricted and ANDed (the day of week starts with *).
    if not possible and not dom.text.startswith("*") and dow.text.startswith("*"):
        with pytest.raises(CronError) as info:
            Cron.parse(text)
        assert info.value.field == "day of month"
        return
    check_against_reference(list(specs), t, horizon_minutes=2 * 24 * 60)
