"""The seeder: watches directories, decides when a file is complete, hashes it, and publishes it.

When a file is published::

    created / modified ──(no event for `quiet` s)──┐
    closed after write / moved in (from anywhere) ─┼─> settle: size and mtime unchanged for `settle` s
    found by the start-up scan ────────────────────┘        │
                                                            v
                 hash index hit (device, inode, size, mtime) ── or ── hash (SHA-1 + BLAKE3, threads)
                                                            │
                                  stat changed while hashing? ── yes: settle and hash again
                                                            │ no
                                                            v
                                                        published

A file is hashed through one descriptor, opened once and checked to lie inside its watched directory
(names.open_inside), and is served only while its path leads to that same file (inode, size, mtime): a
symlink swapped during publication cannot make the seeder hash or serve a file from elsewhere.

A published file that is modified, moved out or deleted is unpublished at once (a client must never get a
torrent for bytes that are no longer there); a modified one is published again once it settles. Every
event of a path restarts its wait, so a file being written is looked at once, after its writer is done.
When a path is looked at after an event is :func:`shoal.seeder.watcher.due_after`'s rule; the reason is
logged with the publication.

One owner: all of this runs on the event loop, in one task per path that is waiting or hashing; the
catalog it fills is what the HTTP endpoints and the wire seeder read. Listeners (the tracker registrar)
hear of every publication and withdrawal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat as stat_module
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from shoal.core.manifest import piece_length_for
from shoal.core.metainfo import TorrentInfo
from shoal.seeder.catalog import Catalog, SeededFile
from shoal.seeder.config import SeederConfig
from shoal.seeder.names import Root, contained, open_inside, rel_of
from shoal.seeder.watcher import Change, Due, Watcher, Why, due_after
from shoal.storage.file_hashes import FileHashes, FileStat, hash_open_file
from shoal.storage.hash_index import HashIndex

log = logging.getLogger("shoal.seeder")

HASH_JOBS = 2
"""Files hashed at once. Each job already keeps two cores busy (SHA-1 beside BLAKE3); two jobs let a small
file through while a large one hashes."""


PREPARE_SECONDS = 2.0
"""How long publication waits for listeners to get ready (the registrar's first announces)."""


class Listener(Protocol):
    async def publishing(self, entry: SeededFile) -> None: ...
    def published(self, entry: SeededFile) -> None: ...
    def unpublished(self, entry: SeededFile) -> None: ...


class _Wait:
    """A path that is waiting to settle or being hashed."""

    __slots__ = ("due", "moved", "task", "why")

    def __init__(self, due: Due) -> None:
        self.due = due.at
        self.why: Why = due.why
        """Why it is looked at when it is (the latest event's rule), for the publication's log line."""
        self.moved = asyncio.Event()
        """Set when ``due`` changes, so a close wakes a path that was waiting out a quiet period."""
        self.task: asyncio.Task[None] | None = None

    async def until_due(self) -> None:
        while (delay := self.due - time.monotonic()) > 0:
            self.moved.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.moved.wait()


class Seeder:
    def __init__(self, config: SeederConfig, index: HashIndex, catalog: Catalog | None = None) -> None:
        self.config = config
        self.index = index
        self.catalog = catalog or Catalog()
        self.roots = [Root.of(d) for d in config.dirs]
        names = [r.name for r in self.roots]
        if len(set(names)) != len(names):
            raise ValueError(f"watched directories must have distinct names, got {names}")
        self.listeners: list[Listener] = []
        self.hashing_seconds = 0.0
        self.hashed_bytes = 0
        self.opened: Callable[[Path], None] | None = None
        """Called in the hashing thread between a file's open and the check that it lies inside its watched
        directory (names.open_inside): tests swap a symlink there."""
        self._waits: dict[Path, _Wait] = {}
        self._hash_slots = asyncio.Semaphore(HASH_JOBS)
        self._watcher = Watcher([r.path for r in self.roots])
        self._events: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch first, then scan, so a file written during the scan is seen by one or the other."""
        self._watcher.start()
        self._events = asyncio.create_task(self._consume())
        for root in self.roots:
            await self._scan(root.path)

    async def stop(self) -> None:
        self._watcher.stop()
        tasks = [w.task for w in self._waits.values() if w.task is not None]
        if self._events is not None:
            tasks.append(self._events)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._waits.clear()

    # -- events --------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            change = await self._watcher.changes.get()
            try:
                await self._apply(change)
            except Exception:  # one bad event must not stop the watcher
                log.exception("handling %s of %s failed", change.kind, change.path)

    async def _apply(self, change: Change) -> None:
        path = change.path
        if change.kind == "moved":
            self._gone(change.path, change.is_directory)
            assert change.dest is not None
            path = change.dest
        if change.kind == "deleted":
            self._gone(path, change.is_directory)
        elif change.is_directory:
            if change.kind in ("created", "moved", "moved_in"):
                await self._scan(path)  # files made before inotify watched the directory
        else:
            self._touch(path, due_after(change.kind, time.monotonic(), self.config.quiet))

    async def _scan(self, directory: Path) -> None:
        files = await asyncio.to_thread(_walk, directory)
        for path in files:
            self._touch(path, Due(time.monotonic(), "found"))

    def _root_rel(self, path: Path) -> tuple[Root, str] | None:
        for root in self.roots:
            rel = rel_of(root, path)
            if rel is not None:
                return root, rel
        return None

    def _touch(self, path: Path, due: Due) -> None:
        found = self._root_rel(path)
        if found is None:
            return
        _, rel = found
        entry = self.catalog.get(rel)
        if entry is not None and due.why == "quiet":
            self._withdraw(rel)  # being rewritten: its torrent no longer describes it
        self.catalog.seen(rel)
        wait = self._waits.get(path)
        if wait is None:
            wait = self._waits[path] = _Wait(due)
            wait.task = asyncio.create_task(self._settle_and_publish(path, wait))
        else:
            wait.due, wait.why = due.at, due.why  # a close cuts a quiet wait short; a write starts a new one
            wait.moved.set()

    def _gone(self, path: Path, is_directory: bool) -> None:
        found = self._root_rel(path)
        if found is None:
            return
        _, rel = found
        names = self.catalog.under(rel) if is_directory else [rel]
        for name in names:
            self._withdraw(name)
        for waiting in [p for p in self._waits if p == path or (is_directory and p.is_relative_to(path))]:
            wait = self._waits.pop(waiting)
            if wait.task is not None:
                wait.task.cancel()

    def _withdraw(self, rel: str) -> None:
        entry = self.catalog.unpublish(rel)
        if entry is not None:
            log.info("unpublished %s", rel)
            for listener in self.listeners:
                listener.unpublished(entry)

    # -- settle, hash, publish -----------------------------------------------------------------------

    async def _settle_and_publish(self, path: Path, wait: _Wait) -> None:
        try:
            while True:
                await wait.until_due()
                first = _regular_stat(path)
                if first is None:
                    break
                hashes = await asyncio.to_thread(self._cached, first)
                if hashes is None:
                    # A hash index hit proves the file is the one hashed before; anything else must settle.
                    await asyncio.sleep(self.config.settle)
                    if wait.due > time.monotonic() or _regular_stat(path) != first:
                        continue
                    try:
                        hashes = await self._hash(path, first)
                    except PermissionError as exc:
                        log.warning("not publishing %s: %s", path, exc)
                        break
                    except _LeadsOut as exc:
                        log.warning("not publishing %s: it leads out of %s", path, exc.root)
                        break
                    if hashes is None:  # it changed while being hashed
                        continue
                if await self._publish(path, first, hashes, wait):
                    break
        finally:
            if self._waits.get(path) is wait:
                del self._waits[path]
            found = self._root_rel(path)
            if found is not None and self.catalog.get(found[1]) is None and self.catalog.is_pending(found[1]):
                self.catalog.unpublish(found[1])  # gone or unpublishable: wake waiting /serve requests

    def _cached(self, stat: FileStat) -> FileHashes | None:
        return self.index.get(stat, piece_length_for(stat.size))

    async def _hash(self, path: Path, stat: FileStat) -> FileHashes | None:
        """Hash and remember the file; None if it changed or vanished meanwhile (look again); _LeadsOut if the
        file opened lies outside its watched directory."""
        found = self._root_rel(path)
        if found is None:
            return None
        async with self._hash_slots:
            started = time.perf_counter()
            try:
                hashes = await asyncio.to_thread(self._hash_inside, found[0], path, stat)
            except (PermissionError, _LeadsOut):
                raise
            except OSError as exc:
                log.info("hashing %s failed (%s); will look again", path, exc)
                return None
            if hashes is None:
                return None
            self.hashing_seconds += time.perf_counter() - started
            self.hashed_bytes += stat.size
        if _regular_stat(path) != stat:
            return None
        await asyncio.to_thread(self.index.put, stat, hashes)
        return hashes

    def _hash_inside(self, root: Root, path: Path, stat: FileStat) -> FileHashes | None:
        """Open the file once, check that what was opened lies inside ``root`` and is the file of ``stat``,
        and hash it through that descriptor: a symlink swapped at any moment cannot make the seeder hash (and
        then serve, by inode) a file outside. None when it is not the file of ``stat`` (look again)."""
        opened = self.opened
        fd = open_inside(root, path, (lambda: opened(path)) if opened is not None else None)
        if fd is None:
            raise _LeadsOut(root.path)
        try:
            if FileStat.of(os.fstat(fd)) != stat:
                return None
            return hash_open_file(fd, piece_length_for(stat.size), str(path))
        finally:
            os.close(fd)

    async def _publish(self, path: Path, stat: FileStat, hashes: FileHashes, wait: _Wait) -> bool:
        """Publish unless the file was written again meanwhile (then False: settle and hash again)."""
        found = self._root_rel(path)
        if found is None:
            return True
        root, rel = found
        if not contained(root, path):
            log.warning("not publishing %s: it leads out of %s", rel, root.path)
            return True
        due = wait.due
        private = self.config.credentials.key is not None  # the tracker takes announces with a passkey only
        info = TorrentInfo(path.name, stat.size, hashes.piece_length, hashes.sha1_pieces, private)
        task_id = hashes.content_task_id(stat.size)
        entry = SeededFile(rel, root.name, path, stat, hashes, info, info.info_hash(), time.time(), task_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PREPARE_SECONDS):
                for listener in self.listeners:
                    await listener.publishing(entry)
        if wait.due != due:
            return False
        old = self.catalog.publish(entry)
        if old is not None and old.info_hash != entry.info_hash:
            for listener in self.listeners:
                listener.unpublished(old)
        log.info("published %s (%d bytes, %s; %s)", rel, stat.size, hashes.digest[:16], _WHY[wait.why])
        for listener in self.listeners:
            listener.published(entry)
        return True


class _LeadsOut(Exception):
    """The file opened for a path lies outside its watched directory."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.root = root


_WHY: dict[Why, str] = {
    "closed": "settled after a close",
    "moved": "settled after a move",
    "quiet": "settled after the quiet period without a close",
    "found": "found by a scan",
}


def _regular_stat(path: Path) -> FileStat | None:
    """The stat of a regular file (following symlinks), or None if it is gone or something else."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStat.of(st) if stat_module.S_ISREG(st.st_mode) else None


def _walk(directory: Path) -> list[Path]:
    """Every file under ``directory``; symlinked directories are not entered (their files may be anywhere)."""
    found: list[Path] = []
    for base, _, files in os.walk(directory):
        found.extend(Path(base, name) for name in files)
    return found
