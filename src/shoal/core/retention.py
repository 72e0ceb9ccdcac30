"""Which versions of a mirror job's content to remove: a pure plan from the versions and ``now``.

A job's directory holds one subdirectory per successful attempt (``versions/<version>``); the mirror
runner asks this plan after each new version and removes what it names. Versions are (name, created)
pairs; ``created`` is POSIX seconds, and the newest is the one with the largest ``created`` (ties broken by
the larger name, since version names sort by time).

Rules:

- The newest version is never removed, whatever the limits say: a mirror always has something to serve,
  and ``current`` points at it.
- ``keep_versions = K`` keeps the newest K versions and removes the rest.
- ``max_age = A`` removes every version created more than A seconds before ``now`` (except the newest).
- With both, a version is removed when either rule removes it; with neither, nothing is removed.
- The plan lists the versions to remove oldest first, so a removal cut short leaves the newest ones.
"""

from __future__ import annotations

from collections.abc import Iterable


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
