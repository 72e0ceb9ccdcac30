"""One tracker per SQLite file (storage.db_lock): the flock on ``FILE.lock``; other databases take none.
The refusal of a second `shoal tracker` process is tests/integration/test_tracker_overload.py's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.core.errors import DatabaseLocked, StoreError
from shoal.storage.db_lock import DatabaseLock, sqlite_file


def test_a_second_lock_on_one_file_is_refused_whatever_the_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "tracker.db"
    (tmp_path / "link.db").symlink_to(db)
    monkeypatch.chdir(tmp_path)
    with DatabaseLock(f"sqlite:///{db}") as first:
        assert first.path == tmp_path / "tracker.db.lock"
        assert first.path.read_text().strip() == str(os.getpid())
        # flock(2) locks belong to an open file, so a second open in this process meets the first's lock
        # as another process's would.
        for spelling in (f"sqlite:///{db}", "sqlite:///tracker.db", "sqlite+aiosqlite:///link.db"):
            with pytest.raises(DatabaseLocked) as caught, DatabaseLock(spelling):
                pass
            assert caught.value.pid == os.getpid() and caught.value.exit_code == 10
            assert caught.value.path == str(db)
            assert str(caught.value) == (
                f"the database {db} is in use by another shoal tracker (pid {os.getpid()}); one tracker process "
                "per SQLite file: stop that one, or give this one another --db"
            )
    with DatabaseLock(f"sqlite:///{db}"):  # released with the first
        pass
    assert (tmp_path / "tracker.db.lock").read_text() == "", "no PID is left behind"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1/test",
        "mysql://root@127.0.0.1/test",
        "sqlite://",
        "sqlite:///:memory:",
        "not a url",
    ],
)
def test_servers_and_in_memory_databases_take_no_lock(url: str) -> None:
    assert sqlite_file(url) is None
    with DatabaseLock(url) as first, DatabaseLock(url) as second:
        assert first.path is None and second.path is None


def test_a_file_whose_directory_is_missing_is_a_database_that_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"cannot open the database .*missing/t\.db: cannot lock") as caught:
        with DatabaseLock(f"sqlite:///{tmp_path / 'missing' / 't.db'}"):
            pass
    assert caught.value.exit_code == 1
