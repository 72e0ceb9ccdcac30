"""The seeder's watcher and its settle decision with real inotify events, in process."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from shoal.seeder.catalog import SeededFile
from shoal.seeder.config import SeederConfig
from shoal.seeder.service import Seeder
from shoal.seeder.watcher import Change, Watcher, due_after
from shoal.storage.hash_index import HashIndex

# Patience for an event to arrive on a busy machine, never a measure of how fast it comes.
EVENT_SECONDS = 30.0


async def next_change_of(watcher: Watcher, path: Path) -> Change:
    async with asyncio.timeout(EVENT_SECONDS):
        while True:
            change = await watcher.changes.get()
            if path in (change.path, change.dest):
                return change


async def test_a_file_moved_in_from_an_unwatched_directory_takes_the_move_path(tmp_path: Path) -> None:
    watched, outside = tmp_path / "releases", tmp_path / "incoming"
    watched.mkdir()
    outside.mkdir()
    (outside / "a.bin").write_bytes(os.urandom(1000))
    watcher = Watcher([watched])
    watcher.start()
    try:
        os.rename(outside / "a.bin", watched / "a.bin")
        change = await next_change_of(watcher, watched / "a.bin")
    finally:
        watcher.stop()
    assert change.kind == "moved_in"
    assert due_after(change.kind, 0.0, 2.0).why == "moved"


class Published:
    def __init__(self) -> None:
        self.entries: asyncio.Queue[SeededFile] = asyncio.Queue()

    async def publishing(self, entry: SeededFile) -> None:
        pass

    def published(self, entry: SeededFile) -> None:
        self.entries.put_nowait(entry)

    def unpublished(self, entry: SeededFile) -> None:
        pass


async def test_the_seeder_publishes_a_moved_in_file_after_the_settle_time_not_the_quiet_period(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watched, outside = tmp_path / "releases", tmp_path / "incoming"
    watched.mkdir()
    outside.mkdir()
    data = os.urandom(100_000)
    (outside / "a.bin").write_bytes(data)
    # A quiet period longer than the wait below: a file that took the quiet path is never published here.
    config = SeederConfig(dirs=(watched,), state_dir=tmp_path / "state", quiet=600.0)
    caplog.set_level(logging.INFO, logger="shoal.seeder")
    with HashIndex(tmp_path / "hashes.db") as index:
        seeder = Seeder(config, index)
        listener = Published()
        seeder.listeners.append(listener)
        await seeder.start()
        try:
            os.rename(outside / "a.bin", watched / "a.bin")
            async with asyncio.timeout(EVENT_SECONDS):
                entry = await listener.entries.get()
        finally:
            await seeder.stop()
    assert entry.rel == "releases/a.bin" and entry.stat.size == len(data)
    assert any("releases/a.bin" in r.message and "settled after a move" in r.message for r in caplog.records)
