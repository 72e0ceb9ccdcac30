"""What a mirror job's run log says: whether ``fail_on_match`` matched, and the size ``size_pattern`` read.

Pure: lines in, facts out (``shoal.mirror.run_log`` feeds it every line the hooks and the provider print,
as they print them, so nothing is read twice and memory does not grow with the log).

Rules, and why:

- Each pattern is matched against one line at a time (``re.search``): a log is a stream of lines, and
  a pattern anchored with ``^`` or ``$`` means the start or end of a line, as it does in grep.
- ``fail_on_match``: the first matching line is kept; it is the one the error shows.
- ``size_pattern``: the last matching line wins (a two-stage sync prints its statistics twice; the
  second is the whole mirror's). Its one group is read by ``parse_reported_size``.
- Sizes as rsync prints them: digits with thousands separators (``1,234,567``, its default), or a number
  with a unit letter K, M, G, T or P in units of 1000 (``-h``: ``5.37G``) or, followed by ``iB``, of 1024
  (``5.37GiB``), optionally followed by ``B`` or `` bytes``. Anything else is not a size: the job keeps
  the bytes counted on disk, and the log says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE = re.compile(r"^\s*(\d[\d,]*(?:\.\d+)?)\s*(?:([KMGTP])(i?)B?)?\s*(?:B|bytes)?\s*$", re.IGNORECASE)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_reported_size(text: str) -> int | None:
    """Bytes, from a size as rsync and friends print it (see the module docstring); None if it is not one."""
    match = _SIZE.match(text)
    if match is None:
        return None
    number, unit, binary = match.groups()
    value = float(number.replace(",", ""))
    if unit:
        value *= (1024 if binary else 1000) ** _POWERS[unit.upper()]
    return round(value)


@dataclass
class LogWatch:
    """The patterns of one job, and what the lines seen so far matched."""

    fail_on_match: re.Pattern[str] | None = None
    size_pattern: re.Pattern[str] | None = None
    failed_line: str | None = None
    """The first line that matched ``fail_on_match``."""
    size_text: str | None = None
    """The group of the last line that matched ``size_pattern``."""

    @classmethod
    def of(cls, fail_on_match: str | None, size_pattern: str | None) -> LogWatch:
        """For a job's two keys (checked to compile by ``core.mirror_config``)."""
        return cls(
            re.compile(fail_on_match) if fail_on_match is not None else None,
            re.compile(size_pattern) if size_pattern is not None else None,
        )

    def line(self, text: str) -> None:
        if self.failed_line is None and self.fail_on_match is not None and self.fail_on_match.search(text):
            self.failed_line = text
        if self.size_pattern is not None and (match := self.size_pattern.search(text)):
            self.size_text = match[1]
