"""One daemon per cache directory: ``daemon.lock`` in the cache directory, locked with flock(2) for the
daemon's whole life, holding its PID (storage.pid_lock, whose rules hold here).

Two daemons on one cache would each enforce their own capacity and evict without regard to the other's
downloads in progress, so the second one is refused at start, naming the first one's PID.

**Only daemons take it.** ``shoal cache`` and the Python API may work on a cache while its daemon runs: they
share it through the index's transactions (see :mod:`shoal.storage.cache_index`).
"""

from __future__ import annotations

from pathlib import Path

from shoal.core.errors import CacheLocked, LocalIOError
from shoal.storage import pid_lock

LOCK_NAME = "daemon.lock"


class CacheLock(pid_lock.PidLock):
    """``with CacheLock(cache_dir):`` holds the cache directory's lock, or raises CacheLocked. Blocking
    (file I/O): the daemon takes it from a worker thread."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        super().__init__(self.cache_dir / LOCK_NAME)

    def prepare(self) -> None:
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def failed(self, exc: OSError) -> Exception:
        return LocalIOError(f"cannot lock {self.path}: {exc.strerror or exc}", path=str(self.path))

    def refused(self, held: pid_lock.Held) -> Exception:
        return CacheLocked(
            f"the cache {self.cache_dir} is in use by another shoal daemon ({held.holder}); "
            "stop it, or give this one another --cache-dir",
            path=str(self.cache_dir),
            pid=held.pid,
        )
