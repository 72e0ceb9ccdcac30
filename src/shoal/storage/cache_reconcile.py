"""Making a node cache's index and its files agree (storage.cache_store), run when a process opens it.

A crash, a killed process or a hand in the storage directory leaves the two apart: an entry whose file is
gone or has the wrong size, an object file no entry records, a staging file nobody will finish, the uses
and reservations of a process that is gone. :func:`reconcile` settles each, and the rules say why it may:

- An entry whose file is missing or has the wrong size is dropped (CacheStore.drop): it stays known, so
  it can be fetched again, and the wrong bytes are never served.
- An object file with no entry is removed only past ORPHAN_GRACE_SECONDS: another process may be between
  the rename that made it and the commit that records it (CacheStore.adopt gives it a fresh mtime).
- A staging file is removed past STAGING_MAX_AGE (a download's part file, kept so a rerun resumes), or past
  ORPHAN_GRACE_SECONDS for a put's copy (``put-*``) or a serving link (``serving-*``, CacheStore.serving_link),
  which nothing resumes.

Blocking (file I/O, SQLite), like the store.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from shoal.storage.cache_store import CacheStore

ORPHAN_GRACE_SECONDS = 60.0
"""An object file with no entry is removed only when older than this: another process may be between
the rename that made it and the commit that records it."""
STAGING_MAX_AGE = 7 * 86400.0
"""Staging files (a download's part file kept for resuming) older than this are removed at start."""


@dataclass(frozen=True, slots=True)
class Reconciled:
    dropped: tuple[str, ...]
    """Entries whose file was missing or had the wrong size."""
    orphans: int
    """Object files with no entry, removed."""
    staging: int
    """Stale staging files removed."""
    dead: int
    """Uses and reservations of processes that are gone."""


def reconcile(store: CacheStore) -> Reconciled:
    """Make the index and the files of ``store`` (open) agree: drop entries whose file is missing or has the
    wrong size, remove object files with no entry, stale staging files, and the uses and reservations of
    processes that are gone."""
    dead = store.index.clear_dead()
    dropped = []
    cached = {e.digest: e for e in store.index.entries(cached_only=True)}
    for digest, entry in cached.items():
        try:
            size = store.object_path(digest).stat().st_size
        except FileNotFoundError:
            size = -1
        if size != entry.size:
            store.drop(digest)
            dropped.append(digest)
    now = time.time()
    orphans = 0
    for path in store.objects.glob("*/*"):
        if path.name not in cached and _age(path, now) > ORPHAN_GRACE_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                path.chmod(0o600)
                path.unlink()
                orphans += 1
    staging = 0
    for path in store.staging.iterdir():
        limit = ORPHAN_GRACE_SECONDS if path.name.startswith(("put-", "serving-")) else STAGING_MAX_AGE
        if _age(path, now) > limit:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                staging += 1
    return Reconciled(tuple(dropped), orphans, staging, dead)


def _age(path: Path, now: float) -> float:
    """Seconds since the file was last modified; 0 for one that is already gone (another process won)."""
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
