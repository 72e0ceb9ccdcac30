"""When a mirror job runs next: tunasync's interval rule, and five-field cron expressions.

Pure: times go in as POSIX seconds (``now`` included) and come out the same way; no clock reads. The
mirror manager asks ``next_run`` or ``Cron.next_after`` after each run and arms its own timer.

Intervals (tunasync): the next run is one interval after the last one *ended*, so a sync that takes longer
than its interval never runs back to back with itself, and a slow mirror drifts later rather than piling
up. See ``next_run`` for the edge cases.

Cron expressions, as Vixie cron and cronie read them, always in UTC::

    field          values    names
    minute         0-59
    hour           0-23
    day of month   1-31
    month          1-12      jan-dec
    day of week    0-7       sun-sat     (0 and 7 are both Sunday)

Each field is ``*``, a number, a range ``a-b``, either with a step (``*/15``, ``1-30/2``), ``a/n``
(``a`` to the field's end, step ``n``), or a comma-separated list of these. Names are three letters, any
case, and may appear in ranges (``mon-fri``). The macros ``@yearly`` (``@annually``), ``@monthly``,
``@weekly``, ``@daily`` (``@midnight``) and ``@hourly`` stand for their usual expressions; ``@reboot``
means nothing to a schedule and is refused.

Rules, and why:

- A time matches when its minute, hour and month match and its day does. The day rule is cron's own,
  not the intuitive one: when both day fields are restricted, a day matching *either* matches
  ("0 0 1,15 * mon" runs on the 1st, the 15th and every Monday); when either day field starts with ``*``,
  both must match, and ``*`` matches everything. Like Vixie cron, "restricted" means "does not start with
  ``*``", so ``*/2`` in one day field ANDs with the other.
- UTC, always: a schedule in local time skips or repeats runs at daylight-saving changes, and mirror
  schedules are fleet-wide. Leap seconds do not exist in POSIX time, so every minute is 60 seconds.
- ``next_after(t)`` is strictly after ``t``: a job that ran at 00:00 asks for the run after 00:00.
- An expression that can never match (``0 0 30 2 *``) is refused when parsed, not discovered as a job
  that silently never runs.
- Out-of-range values, reversed ranges, zero steps, empty list items and a wrong number of fields are
  UsageErrors (CronError) naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shoal.core.errors import CronError, UsageError


def next_run(last_started: float | None, last_ended: float | None, interval: float, now: float) -> float:
    """When a job on a fixed ``interval`` (seconds) runs next, at or after ``now``.

    - Never run (no start, no end): now.
    - The last run started and has not ended (``last_ended`` is None or before ``last_started``): now. A
      caller asking about such a job has found it interrupted (its process died, or it was stopped or
      disabled mid-run); its mirror may be half-synced, so it runs again at once.
    - Otherwise ``last_ended + interval``, but never before ``now`` (a run missed while the manager was down
      happens at once, once, not once per missed interval) and never more than one interval after ``now``
      (a wall clock stepped back does not postpone the job by the step).
    """
    if not (math.isfinite(interval) and interval > 0):
        raise UsageError(f"a mirror interval must be a positive number of seconds, not {interval!r}")
    if last_ended is None or (last_started is not None and last_started > last_ended):
        return now
    return min(max(last_ended + interval, now), now + interval)


_MACROS: Mapping[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = {
    name: i
    for i, name in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}
_DAY_NAMES = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day of week", 0, 7, _DAY_NAMES),
)

# The most days each month can have (February in a leap year), to refuse a day of month that never comes.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _parse_field(text: str, field: _Field, expression: str) -> frozenset[int]:
    def fail(message: str) -> CronError:
        return CronError(f"bad {field.name} field {text!r}: {message}", expression=expression, field=field.name)

    def value(token: str) -> int:
        if token.lower() in field.names:
            return field.names[token.lower()]
        # isascii: str.isdigit accepts other scripts' digits ("٣", "²"), which int() may or may not take.
        if not (token.isascii() and token.isdigit()):
            raise fail(f"{token!r} is not a number" + (" or a name" if field.names else ""))
        number = int(token)
        if not field.low <= number <= field.high:
            raise fail(f"{number} is outside {field.low}-{field.high}")
        return number

    values: set[int] = set()
    for item in text.split(","):
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise fail(f"the step in {item!r} must be a positive number")
            step = int(step_text)
        if not span:
            raise fail("an empty list item" if not item else f"{item!r} has nothing before the step")
        if span == "*":
            low, high = field.low, field.high
        elif "-" in span:
            first, _, last = span.partition("-")
            low, high = value(first), value(last)
            if low > high:
                raise fail(f"the range {span!r} runs backwards")
        else:
            low = value(span)
            # "a/n" means a to the field's end in steps of n, as cronie and most parsers read it.
            high = field.high if slash else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed five-field cron expression; build one with ``Cron.parse``.

    The sets hold the values each field matches (``weekdays`` with Sunday as 0 only); ``day_and`` is
    True when either day field started with ``*``, so both day fields must match rather than either.
    """

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_and: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Read ``text``; CronError (a UsageError) naming the bad field if it is not a valid expression."""
        expression = text.strip()
        fields = _MACROS.get(expression.lower(), expression).split()
        if expression.startswith("@") and expression.lower() not in _MACROS:
            raise CronError(
                f"unknown macro (known: {', '.join(sorted(_MACROS))})", expression=expression, field="expression"
            )
        if len(fields) != len(_FIELDS):
            raise CronError(
                f"has {len(fields)} fields, not 5 (minute hour day-of-month month day-of-week)",
                expression=expression,
                field="expression",
            )
        minutes, hours, days, months, weekdays = (
            _parse_field(part, field, expression) for part, field in zip(fields, _FIELDS, strict=True)
        )
        day_and = fields[2].startswith("*") or fields[4].startswith("*")
        cron = cls(
            expression=expression,
            minutes=minutes,
            hours=hours,
            days=days,
            months=months,
            weekdays=frozenset(d % 7 for d in weekdays),  # 7 is Sunday too
            day_and=day_and,
        )
        # With the day of month restricted and ANDed, some chosen month must have some chosen day. (ORed
        # with a restricted day of week, or with "*..." in the day of month, which always includes the
        # 1st, a day always comes: every date falls on every weekday within a 400-year Gregorian cycle.)
        if day_and and not fields[2].startswith("*"):
            if not any(day <= _MONTH_DAYS[month - 1] for month in months for day in days):
                raise CronError(
                    f"day of month {fields[2]!r} never occurs in month {fields[3]!r}",
                    expression=expression,
                    field="day of month",
                )
        return cron

    def __str__(self) -> str:
        return self.expression

    def _day_matches(self, when: datetime) -> bool:
        in_days = when.day in self.days
        in_weekdays = when.isoweekday() % 7 in self.weekdays  # isoweekday: Monday 1 .. Sunday 7
        return (in_days and in_weekdays) if self.day_and else (in_days or in_weekdays)

    def matches(self, t: float) -> bool:
        """Whether the minute holding ``t`` (UTC) matches the expression."""
        when = datetime.fromtimestamp(t, UTC)
        return (
            when.minute in self.minutes
            and when.hour in self.hours
            and when.month in self.months
            and self._day_matches(when)
        )

    def next_after(self, t: float) -> float:
        """The first whole minute strictly after ``t`` that matches, in POSIX seconds.

        Walks forward a field at a time (a month, a day, an hour, then a minute that does not match is
        skipped whole), so a yearly expression costs a few hundred steps, not half a million minutes.
        ValueError for a ``t`` that is not finite or whose next run would fall after the year 9999.
        """
        if not math.isfinite(t):
            raise ValueError(f"not a time: {t!r}")
        try:
            # Floor division of floats is exact, unlike floor(t / 60), which can round up to the next minute.
            when = datetime.fromtimestamp((int(t // 60) + 1) * 60, UTC)
            # parse() refused the expressions that never match, and the Gregorian calendar repeats every
            # 400 years, so a match comes before this bound; it guards the loop against a bug, not input.
            give_up = when.year + 401
            while when.year <= give_up:
                if when.month not in self.months:
                    first = when.replace(day=1, hour=0, minute=0)
                    when = (first + timedelta(days=32)).replace(day=1)
                elif not self._day_matches(when):
                    when = when.replace(hour=0, minute=0) + timedelta(days=1)
                elif when.hour not in self.hours:
                    when = when.replace(minute=0) + timedelta(hours=1)
                elif when.minute not in self.minutes:
                    when += timedelta(minutes=1)
                else:
                    return when.timestamp()
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"no run of {self.expression!r} after {t!r} that a date can hold") from exc
        raise AssertionError(f"{self.expression!r} found no match in 400 years")
