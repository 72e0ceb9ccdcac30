"""One daemon per cache directory: ``daemon.lock`` in the cache directory, locked with flock(2) for the
daemon's whole life, holding its PID.

Two daemons on one cache would each enforce their own capacity and evict without regard to the other's
downloads in progress, so the second one is refused at start, naming the first one's PID.

Rules:

* **The flock is the truth, the PID is for people.** The kernel releases an flock when its process ends,
  however it ends (SIGKILL included), so a lock never outlives its daemon and nothing needs cleaning up
  after a crash. The PID in the file only names the holder in the error message.
* **The file is never removed.** Removing it would let a second daemon create and lock a new file while the
  first still holds the old, unlinked one: two holders.
* **Only daemons take it.** ``shoal cache`` and the Python API may work on a cache while its daemon runs:
  they share it through the index's transactions (see :mod:`shoal.storage.cache_index`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from shoal.core.errors import CacheLocked, LocalIOError

LOCK_NAME = "daemon.lock"


class CacheLock:
    """``with CacheLock(cache_dir):`` holds the cache directory's lock, or raises CacheLocked. Blocking
    (file I/O): the daemon takes it from a worker thread."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.path = self.cache_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> CacheLock:
        try:
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Not O_TRUNC: the holder's PID must stay readable for the daemon that is refused.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LocalIOError(f"cannot lock {self.path}: {exc.strerror or exc}", path=str(self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"pid {pid}" if pid is not None else "a process starting up"
            raise CacheLocked(
                f"the cache {self.cache_dir} is in use by another shoal daemon ({holder}); "
                "stop it, or give this one another --cache-dir",
                path=str(self.cache_dir),
                pid=pid,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise LocalIOError(f"cannot lock {self.path}: {exc.strerror or exc}", path=str(self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # no PID left behind for a reader to mistake for a holder
            os.close(self._fd)  # releases the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    """The PID the holder wrote; None when it has not written it yet (it locks, then writes)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
