"""Hashing a cached file at idle priority, in a child process, for work nobody waits for.

The daemon completes a cached file's SHA-256 after the download that brought it has finished
(:meth:`CacheStore.complete_sha256`). That pass must give way to everything else the host runs, and a
thread of the daemon cannot: a thread's nice value orders it only against the threads of its own
scheduling group, and Linux puts every session in a group of its own (autogroup, or a service's cgroup),
which the scheduler shares the cores between evenly. BLAKE3 also hashes on a pool of threads that the
library started from whichever thread used it first, at that thread's priority. On a pool lab of eight
daemons sharing two cores, the first members done hashed at full weight against the last ones'
downloads.

So the hashing runs in a child in a new session (its own group) that lowers itself before reading a byte:
its group's nice to 19 (``/proc/self/autogroup``), its own nice to 19, and the SCHED_IDLE policy, which
the BLAKE3 threads it starts inherit. Each step is best effort: a kernel without autogroup, or a
sandbox that forbids SCHED_IDLE, still gets the rest.

Run as ``python -m shoal.storage.idle_hash PATH``: prints ``BLAKE3_HEX SHA256_HEX``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from shoal.core.errors import HashingStopped


class IdleHasher:
    """``hasher(path) -> (blake3 hex, sha256 hex)``, hashed by an idle child; :meth:`stop` kills the child
    of a pass in progress (its caller gets HashingStopped) and refuses further work. Thread-safe: the
    daemon calls it from its hashing thread and stops it from the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self._stopped = False

    @property
    def child_pid(self) -> int | None:
        """The pid of the child hashing now, if any (for tests and diagnostics)."""
        child = self._child
        return None if child is None else child.pid

    def __call__(self, path: Path) -> tuple[str, str]:
        with self._lock:
            if self._stopped:
                raise HashingStopped(f"stopped before hashing {path}")
            child = self._child = subprocess.Popen(
                [sys.executable, "-m", "shoal.storage.idle_hash", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        try:
            out, err = child.communicate()
        finally:
            with self._lock:
                self._child = None
        if self._stopped:
            raise HashingStopped(f"stopped while hashing {path}")
        fields = out.split()
        if child.returncode != 0 or len(fields) != 2:
            raise OSError(f"hashing {path} failed: {err.strip() or f'exit status {child.returncode}'}")
        return fields[0], fields[1]

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._child is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._child.kill()


def _lower_priority() -> None:
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write("19")
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shoal.storage.idle_hash PATH", file=sys.stderr)
        return 2
    _lower_priority()
    # Imported after lowering: even the import runs at idle priority.
    from shoal.storage.content_hash import hash_content

    try:
        blake, sha256 = hash_content(Path(argv[0]))
    except OSError as exc:
        print(f"{argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(blake, sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
