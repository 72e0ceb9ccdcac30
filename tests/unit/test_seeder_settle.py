"""When the seeder looks at a file after its latest event (shoal.seeder.watcher.due_after), and how
watchdog's events become changes (change_of): plain values, explicit times."""

from __future__ import annotations

from pathlib import Path

import pytest
from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)

from shoal.seeder.watcher import Change, Due, change_of, due_after

QUIET = 2.0
NOW = 100.0


@pytest.mark.parametrize(
    ("kind", "due"),
    [
        ("closed", Due(NOW, "closed")),
        ("moved", Due(NOW, "moved")),
        ("moved_in", Due(NOW, "moved")),
        ("created", Due(NOW + QUIET, "quiet")),
        ("modified", Due(NOW + QUIET, "quiet")),
    ],
)
def test_a_writer_that_is_done_settles_at_once_and_one_that_may_write_more_waits_for_quiet(kind, due) -> None:
    assert due_after(kind, NOW, QUIET) == due


def test_the_latest_event_decides() -> None:
    # Created, written, then closed 0.3 s later: the close cuts the quiet wait short.
    events = [("created", NOW), ("modified", NOW + 0.1), ("closed", NOW + 0.3)]
    assert [due_after(kind, at, QUIET) for kind, at in events][-1] == Due(NOW + 0.3, "closed")
    # Written again after its close: a new quiet wait from the write.
    assert due_after("modified", NOW + 1.0, QUIET) == Due(NOW + 1.0 + QUIET, "quiet")


def test_a_move_from_outside_the_watched_trees_is_a_move_in_not_a_creation() -> None:
    # inotify's IN_MOVED_TO without its IN_MOVED_FROM, as watchdog's full events report it.
    moved_in = change_of(FileMovedEvent("", "/w/releases/a.bin"))
    assert moved_in == Change("moved_in", Path("/w/releases/a.bin"), False)
    assert due_after(moved_in.kind, NOW, QUIET).why == "moved"


def test_a_move_out_of_the_watched_trees_is_a_deletion() -> None:
    assert change_of(FileMovedEvent("/w/releases/a.bin", "")) == Change("deleted", Path("/w/releases/a.bin"), False)
    assert change_of(DirMovedEvent("/w/releases/d", "")) == Change("deleted", Path("/w/releases/d"), True)


def test_other_events_keep_their_kind() -> None:
    assert change_of(FileMovedEvent("/w/a", "/w/b")) == Change("moved", Path("/w/a"), False, Path("/w/b"))
    assert change_of(FileCreatedEvent("/w/a")).kind == "created"
    assert change_of(FileModifiedEvent("/w/a")).kind == "modified"
    assert change_of(FileClosedEvent("/w/a")).kind == "closed"
