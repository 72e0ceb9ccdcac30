"""A lock file held with flock(2) for a process's life, holding its PID: one daemon per cache directory
(storage.cache_lock), one tracker per SQLite file (storage.db_lock).

Rules:

* **The flock is the truth, the PID is for people.** The kernel releases an flock when its process ends,
  however it ends (SIGKILL included), so a lock never outlives its holder and nothing needs cleaning up
  after a crash. The PID in the file only names the holder in the error message.
* **The file is never removed.** Removing it would let a second process create and lock a new file while
  the first still holds the old, unlinked one: two holders.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Held:
    """Another process holds the lock; ``pid`` is the one it wrote (None: it has not written it yet)."""

    pid: int | None

    @property
    def holder(self) -> str:
        return f"pid {self.pid}" if self.pid is not None else "a process starting up"


def acquire(path: Path) -> int | Held:
    """Lock ``path`` (created if missing) and write this process's PID in it; return the descriptor to
    :func:`release`, or Held when another process holds it. OSError when the file cannot be opened or
    locked."""
    # Not O_TRUNC: the holder's PID must stay readable for the process that is refused.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        return Held(pid)
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # no PID left behind for a reader to mistake for a holder
    os.close(fd)  # releases the flock


def _read_pid(fd: int) -> int | None:
    """The PID the holder wrote; None when it has not written it yet (it locks, then writes)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
