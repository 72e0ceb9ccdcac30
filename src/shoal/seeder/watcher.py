"""Directory events from watchdog (inotify), delivered to the seeder's event loop as plain values, and the
rule for when a file is looked at after its latest event (:func:`due_after`).

watchdog calls its handlers on its own thread; the handler here only converts each event into a
``Change`` and hands it to the loop with ``call_soon_threadsafe``. All decisions are the seeder's, on the
loop. Opened and closed-without-writing events carry no news and are dropped at the source.

Moves: inotify reports a rename as IN_MOVED_FROM and IN_MOVED_TO. Inside the watched trees watchdog pairs
them into one move. A file moved in from an unwatched directory has only its IN_MOVED_TO, which watchdog
reports as *created* unless asked for full events; a created file may still be written, so it would wait
out the quiet period instead of settling at once. With full events it is a move with no source, reported
here as ``moved_in``; a move out of the watched trees (no destination) is ``deleted``: gone either way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

Kind = Literal["created", "modified", "closed", "moved", "moved_in", "deleted"]
_KINDS: frozenset[str] = frozenset(("created", "modified", "closed", "moved", "deleted"))

Why = Literal["closed", "moved", "quiet", "found"]
"""Why a file is looked at when it is: closed after writing, moved into place, quiet for the quiet period
(written, never closed), or found by a scan (start-up, a directory moved in)."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    path: Path
    is_directory: bool
    dest: Path | None = None
    """For ``moved``: where it went."""


@dataclass(frozen=True, slots=True)
class Due:
    """When a file is next looked at (monotonic seconds), and why. Looked at, it must then keep its size
    and mtime for the settle time before it is hashed."""

    at: float
    why: Why


def due_after(kind: Kind, now: float, quiet: float) -> Due:
    """When a file whose latest event is ``kind``, seen at ``now``, is looked at. A close after writing, or
    a move into place (a rename within the watched trees or from outside them: how careful writers publish),
    says its writer is done: at once. A creation or a write says more may follow: after ``quiet`` seconds
    without another event, unless a close cuts the wait short. ``found``: a file met by a scan."""
    if kind == "closed":
        return Due(now, "closed")
    if kind in ("moved", "moved_in"):
        return Due(now, "moved")
    return Due(now + quiet, "quiet")


class _Forward(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Change]) -> None:
        self.loop = loop
        self.queue = queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _KINDS:
            return
        if event.is_directory and event.event_type in ("modified", "closed"):
            return  # a directory's own mtime changes with every entry; its entries report themselves
        self.loop.call_soon_threadsafe(self.queue.put_nowait, change_of(event))


def change_of(event: FileSystemEvent) -> Change:
    """The ``Change`` for one of watchdog's events (an event of one of the kinds kept)."""
    src, is_directory = _text(event.src_path), event.is_directory
    if event.event_type != "moved":
        return Change(event.event_type, Path(src), is_directory)  # type: ignore[arg-type]
    dest = _text(event.dest_path)
    if not src:  # from outside the watched trees (full events only)
        return Change("moved_in", Path(dest), is_directory)
    if not dest:  # out of them
        return Change("deleted", Path(src), is_directory)
    return Change("moved", Path(src), is_directory, Path(dest))


def _text(path: str | bytes) -> str:
    return path.decode(errors="surrogateescape") if isinstance(path, bytes) else path


class Watcher:
    """Watches directories recursively; ``changes`` is the queue the seeder reads. Start and stop are explicit."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.changes: asyncio.Queue[Change] = asyncio.Queue()
        self._observer: InotifyObserver | None = None

    def start(self) -> None:
        handler = _Forward(asyncio.get_running_loop(), self.changes)
        observer = InotifyObserver(generate_full_events=True)  # moves from outside as moves (module docstring)
        for directory in self.dirs:
            observer.schedule(handler, str(directory), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
