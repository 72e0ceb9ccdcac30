"""One tracker per SQLite file: ``FILE.lock`` beside the database, locked with flock(2) for the tracker's
whole life, holding its PID (storage.pid_lock, whose rules hold here).

A tracker keeps its tasks' soft state (peers, leases) in its own memory; two on one SQLite file would each
lease the same pieces and never see each other's peers, so the second is refused at start, naming the first
one's PID. PostgreSQL and MySQL/MariaDB are servers, not files: this lock is for SQLite only.

* **A file of its own.** SQLite locks the database file with POSIX record locks, which an flock of the same
  file would meet on NFS (where flock is emulated with them).
* **Beside the database file's real path**, so two spellings of one file (a symlink, a relative path) are
  one lock.
* **In-memory SQLite takes none**: each engine opens a database of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shoal.core.errors import DatabaseLocked, StoreError
from shoal.storage import pid_lock


def sqlite_file(url: str) -> Path | None:
    """The SQLite database file ``url`` names (its real path); None for another database, in-memory SQLite
    or a URL that is not one (the store reports that)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database or ""
    if not parsed.drivername.startswith("sqlite") or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(os.path.realpath(database))


class DatabaseLock(pid_lock.PidLock):
    """``with DatabaseLock(url):`` holds the lock of the SQLite file ``url`` names, or raises DatabaseLocked;
    nothing for other databases. It never waits for the holder (LOCK_NB): quick file I/O."""

    def __init__(self, url: str) -> None:
        self.database = sqlite_file(url)
        super().__init__(self.database.with_name(self.database.name + ".lock") if self.database else None)

    def failed(self, exc: OSError) -> Exception:
        # Like any database that cannot be opened (a missing directory, say): exit code 1.
        return StoreError(f"cannot open the database {self.database}: cannot lock {self.path}: {exc.strerror or exc}")

    def refused(self, held: pid_lock.Held) -> Exception:
        return DatabaseLocked(
            f"the database {self.database} is in use by another shoal tracker ({held.holder}); one tracker "
            "process per SQLite file: stop that one, or give this one another --db",
            path=str(self.database),
            pid=held.pid,
        )
