"""The idle hasher: a child process in its own session, at idle priority, that can be stopped mid-file."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import blake3
import pytest

from shoal.core.errors import HashingStopped
from shoal.storage.cache_store import CacheStore
from shoal.storage.idle_hash import IdleHasher
from shoal.testing.poll import wait_until


def test_it_hashes_like_the_reference(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert IdleHasher()(path) == (blake3.blake3(data).hexdigest(), hashlib.sha256(data).hexdigest())


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file"):
        IdleHasher()(tmp_path / "gone")


def test_the_child_runs_at_idle_priority_in_its_own_session_and_stop_kills_it(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 << 30)  # zeros that cost nothing on disk, and a minute of SHA-256
    hasher = IdleHasher()
    outcome: list[BaseException | tuple[str, str]] = []

    def run() -> None:
        try:
            outcome.append(hasher(path))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        pid = wait_until(lambda: hasher.child_pid, "the hashing child to start")
        # The child lowers itself first thing; give it the moment that takes.
        wait_until(lambda: os.sched_getscheduler(pid) == os.SCHED_IDLE, "the child in SCHED_IDLE")
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        assert os.getsid(pid) == pid != os.getsid(0)
        autogroup = Path(f"/proc/{pid}/autogroup")
        if autogroup.exists():
            assert autogroup.read_text().split()[-1] == "19"
    finally:
        hasher.stop()
        worker.join(10)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], HashingStopped)
    with pytest.raises(HashingStopped):
        hasher(path)  # a stopped hasher takes no more work


def test_the_cache_completes_a_pending_sha256_through_it(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    with CacheStore(tmp_path / "index.sqlite", tmp_path / "store", 64 << 20) as store:
        staged = store.staging_path("t")
        staged.write_bytes(data)
        entry = store.adopt(staged, name="model.bin", sha256_later=True)
        assert entry.sha256 == ""
        assert store.complete_sha256(hasher=IdleHasher()) == 1
        assert store.entry(entry.digest).sha256 == hashlib.sha256(data).hexdigest()


def test_a_file_evicted_before_the_child_reads_it_is_skipped_not_an_error(tmp_path: Path) -> None:
    """The pass holds no use of the entry, so an eviction may come first; the child then finds no file, and
    the pass goes on to the next entry instead of failing."""
    data = os.urandom(1 << 20)
    with CacheStore(tmp_path / "index.sqlite", tmp_path / "store", 64 << 20) as store:
        staged = store.staging_path("t")
        staged.write_bytes(data)
        entry = store.adopt(staged, name="model.bin", sha256_later=True)
        idle = IdleHasher()

        def evicted_first(path: Path) -> tuple[str, str]:
            store.evict(entry.digest)  # what `shoal cache evict` does while the pass waits for its child
            return idle(path)

        assert store.complete_sha256(hasher=evicted_first) == 0
        after = store.entry(entry.digest)
        assert not after.cached and after.sha256 == ""
