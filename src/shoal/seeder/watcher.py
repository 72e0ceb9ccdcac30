"""Directory events from watchdog (inotify), delivered to the seeder's event loop as plain values.

watchdog calls its handlers on its own thread; the handler here only converts each event into a
``Change`` and hands it to the loop with ``call_soon_threadsafe``. All decisions are the seeder's, on the
loop. Opened and closed-without-writing events carry no news and are dropped at the source.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

Kind = Literal["created", "modified", "closed", "moved", "deleted"]
_KINDS: frozenset[str] = frozenset(("created", "modified", "closed", "moved", "deleted"))


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    path: Path
    is_directory: bool
    dest: Path | None = None
    """For ``moved``: where it went."""


class _Forward(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Change]) -> None:
        self.loop = loop
        self.queue = queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _KINDS:
            return
        if event.is_directory and event.event_type in ("modified", "closed"):
            return  # a directory's own mtime changes with every entry; its entries report themselves
        dest = Path(_text(event.dest_path)) if event.event_type == "moved" else None
        change = Change(event.event_type, Path(_text(event.src_path)), event.is_directory, dest)  # type: ignore[arg-type]
        self.loop.call_soon_threadsafe(self.queue.put_nowait, change)


def _text(path: str | bytes) -> str:
    return path.decode(errors="surrogateescape") if isinstance(path, bytes) else path


class Watcher:
    """Watches directories recursively; ``changes`` is the queue the seeder reads. Start and stop are explicit."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.changes: asyncio.Queue[Change] = asyncio.Queue()
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        handler = _Forward(asyncio.get_running_loop(), self.changes)
        observer = Observer()
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
