"""Versions of a mirror job's content: their names, and which to remove. Pure: names and ``now`` in.

A job's directory holds one subdirectory per successful attempt (``versions/<version>``); the mirror
runner asks this plan after each new version and removes what it names. Versions are (name, created)
pairs; ``created`` is POSIX seconds, and the newest is the one with the largest ``created`` (ties broken by
the larger name, since version names sort by time).

Version names are UTC timestamps, ``20261122T101500Z``, with ``-0001``, ``-0002``... added when a
name is taken, so that names sort in the order the versions were made (``next_version_name``).

Retention rules:

- The newest version is never removed, whatever the limits say: a mirror always has something to serve,
  and ``current`` points at it.
- ``keep_versions = K`` keeps the newest K versions and removes the rest.
- ``max_age = A`` removes every version created more than A seconds before ``now`` (except the newest).
- With both, a version is removed when either rule removes it; with neither, nothing is removed.
- The plan lists the versions to remove oldest first, so a removal cut short leaves the newest ones.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable

_VERSION = re.compile(r"(\d{8}T\d{6}Z)(?:-(\d{4}))?")
_STAMP = "%Y%m%dT%H%M%SZ"


def version_created(name: str) -> float | None:
    """When the version of this name was made (POSIX seconds), or None if ``name`` is not a version name."""
    match = _VERSION.fullmatch(name)
    if not match:
        return None
    try:
        return float(calendar.timegm(time.strptime(match[1], _STAMP)))
    except ValueError:
        return None


def next_version_name(existing: Iterable[str], now: float) -> str:
    """A name for a version made at ``now`` that sorts after every version name in ``existing``.

    The newest version must also have the greatest name, or a clock stepped back would make the version
    just published look old to the retention plan: then the name keeps the latest existing timestamp and
    takes the next free suffix."""
    names = [name for name in existing if version_created(name) is not None]
    base = time.strftime(_STAMP, time.gmtime(now))
    latest = max(names, default=None)
    if latest is None or base > latest:
        return base
    match = _VERSION.fullmatch(latest)
    assert match is not None
    suffix = int(match[2] or 0) + 1 if match[1] >= base else 1
    if suffix > 9999:
        raise ValueError(f"more than 9999 versions named {match[1]}")
    return f"{max(match[1], base)}-{suffix:04d}"


def plan_retention(
    versions: Iterable[tuple[str, float]],
    *,
    keep_versions: int | None,
    max_age: float | None,
    now: float,
) -> tuple[str, ...]:
    """The names of the versions to remove, oldest first; ValueError for a limit that is not positive."""
    if keep_versions is not None and keep_versions < 1:
        raise ValueError(f"keep_versions must be at least 1, not {keep_versions}")
    if max_age is not None and not max_age > 0:
        raise ValueError(f"max_age must be positive, not {max_age}")
    newest_first = sorted(versions, key=lambda v: (v[1], v[0]), reverse=True)
    remove: list[str] = []
    for rank, (name, created) in enumerate(newest_first):
        if rank == 0:
            continue
        too_many = keep_versions is not None and rank >= keep_versions
        too_old = max_age is not None and now - created > max_age
        if too_many or too_old:
            remove.append(name)
    return tuple(reversed(remove))
