"""A job's status written as tunasync writes it (its ``internal/status_web.go``), for mirror status pages.

Pure: times, sizes and the time zone come in as values. Rules, and why:

- A text time is Go's layout ``2006-01-02 15:04:05 -0700`` in the manager's time zone, and its ``_ts`` twin
  the Unix seconds, truncated as Go's ``Time.Unix`` truncates.
- A time that never was (a job never run, or a running job's next schedule) is Go's zero time,
  ``0001-01-01 00:00:00 +0000`` and ``-62135596800``: what tunasync sends, and what pages test for.
- A size with a text of its own (what ``size_pattern`` or rsync's statistics wrote, what ``set-size`` was
  given) is shown as that text, as tunasync shows it; ``human_size`` writes only a count of bytes, in about
  three significant digits and 1024-based units (``1.41T``, ``300G``). No size yet is tunasync's
  ``unknown``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo

GO_LAYOUT = "%Y-%m-%d %H:%M:%S %z"
ZERO_TEXT = "0001-01-01 00:00:00 +0000"
ZERO_TS = -62135596800
UNKNOWN_SIZE = "unknown"
_UNITS = ("K", "M", "G", "T", "P")


def go_time(t: float | None, zone: tzinfo) -> tuple[str, int]:
    """``(text, unix seconds)`` of ``t`` (Unix seconds, None: never) in ``zone``."""
    if t is None:
        return ZERO_TEXT, ZERO_TS
    seconds = math.floor(t)
    return datetime.fromtimestamp(seconds, UTC).astimezone(zone).strftime(GO_LAYOUT), seconds


def human_size(size: int) -> str:
    """``size`` bytes as rsync prints them (``1.41T``, ``300G``, ``512``); ``unknown`` for 0."""
    if size <= 0:
        return UNKNOWN_SIZE
    value = float(size)
    unit = ""
    for larger in _UNITS:
        if value < 1024:
            break
        value /= 1024
        unit = larger
    if not unit:
        return str(size)
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{decimals}f}{unit}"
