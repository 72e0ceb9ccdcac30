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
from typing import Self


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


class PidLock:
    """``with LOCK:`` holds the lock file ``path`` for the block (no lock for None), or raises what
    :meth:`refused` makes of the holder. What a lock is for, and so its errors, is its subclass's. Blocking
    (quick file I/O); it never waits for the holder (LOCK_NB)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None

    def prepare(self) -> None:
        """Make ready what the lock file needs (its directory, say), before it is opened."""

    def refused(self, held: Held) -> Exception:
        """The error for a lock another process holds."""
        raise NotImplementedError

    def failed(self, exc: OSError) -> Exception:
        """The error for a lock file that cannot be made, opened or locked."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self.path is None:
            return self
        try:
            self.prepare()
            locked = acquire(self.path)
        except OSError as exc:
            raise self.failed(exc) from None
        if isinstance(locked, Held):
            raise self.refused(locked)
        self._fd = locked
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            release(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    """The PID the holder wrote; None when it has not written it yet (it locks, then writes)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
