"""One daemon per cache directory: the flock on ``daemon.lock``, held by real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shoal.core.errors import CacheLocked
from shoal.storage.cache_lock import CacheLock

HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from shoal.storage.cache_lock import CacheLock
    with CacheLock(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin
    """
)


def hold(cache_dir: Path) -> subprocess.Popen[str]:
    """Another process holding the cache's lock, until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(cache_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_second_holder_is_refused_naming_the_first_ones_pid(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    holder = hold(cache_dir)
    try:
        with pytest.raises(CacheLocked) as info, CacheLock(cache_dir):
            pass
        assert info.value.pid == holder.pid and info.value.exit_code == 7
        assert str(info.value) == (
            f"the cache {cache_dir} is in use by another shoal daemon (pid {holder.pid}); "
            "stop it, or give this one another --cache-dir"
        )
    finally:
        holder.communicate("")
    with CacheLock(cache_dir):  # released when its holder ended
        assert (cache_dir / "daemon.lock").read_text().strip() == str(os.getpid())


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    holder = hold(tmp_path)
    holder.kill()
    holder.communicate()
    with CacheLock(tmp_path) as lock:
        assert lock.path.exists()
    assert (tmp_path / "daemon.lock").read_text() == ""  # the file stays (see the module), its PID does not


def test_one_process_cannot_take_it_twice(tmp_path: Path) -> None:
    # An flock belongs to an open file, not a process: a second daemon object in one process is refused too.
    with CacheLock(tmp_path), pytest.raises(CacheLocked), CacheLock(tmp_path):
        pass
