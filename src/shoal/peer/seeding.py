"""Seeding a completed download for a while (``shoal get --upload-time``): its file stays served from where it
was placed and is announced to the tracker as complete, every interval the tracker asks for.

Rules: only a download that announced to a tracker seeds (one made straight from the origin, with no tracker
or after ``--fallback``, has nobody to announce to), and only from a file on disk (not one written through to
a device or a FIFO). A placed file that is moved, deleted or rewritten (by a ``--callback``, by hand) is no
longer served at once: served from its path, it would fail or mislead every peer sent here. The tracker's
word that the task moved to another generation ends the seeding too. The download's state (its pieces, its
piece server entry, its tracker client) stays the engine's (:class:`~shoal.peer.engine.Download`); this
module only drives it, and :meth:`Download.leave <shoal.peer.engine.Download.leave>` ends it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.core.errors import TrackerUnavailable
from shoal.core.retry import Retries
from shoal.peer.announcer import ANNOUNCE_BACKOFF

if TYPE_CHECKING:
    from shoal.peer.engine import Download, Downloaded

log = logging.getLogger("shoal.peer")
FILE_CHECK = 1.0
"""Seconds between two checks, while seeding, that the placed file is still there and unchanged."""
FileIdentity = tuple[int, int, int, int]


def file_identity(path: Path) -> FileIdentity | None:
    """What tells a file from its replacement: device, inode, size and modification time; None if gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def seeds(download: Download, seconds: float) -> bool:
    """Whether :func:`seed` serves the completed file for ``seconds``: only when there is a tracker that
    answered (a download made straight from the origin, with no tracker or with ``--fallback``, has nobody
    to announce to) and a file to serve from (not one written through to a device or a FIFO)."""
    return download.tracker is not None and not download.direct and download.served is not None and seconds > 0


async def seed(download: Download, completed: Downloaded, seconds: float) -> None:
    """Keep serving a completed file for ``seconds``, announcing it; ``download.leave()`` ends it."""
    if not seeds(download, seconds):
        return
    tracker, served, core, clock = download.tracker, download.served, download.core, download.clock
    assert tracker is not None and served is not None and core is not None
    for index in range(completed.manifest.piece_count):
        if index not in download.withheld:
            served.add(index)
    deadline = clock() + seconds
    event = "completed"
    retry = Retries(ANNOUNCE_BACKOFF, download.rng)
    placed = await asyncio.to_thread(file_identity, completed.path)
    while clock() < deadline:
        reported = download.unreported()
        try:
            if (content := await download.register_content(completed)) is not None:
                await tracker.announce(content.task_id, download.announce_request(generation=content.generation))
            request = download.announce_request(event=event, done=reported, received=download.stats.by_scope())
            reply = await tracker.announce(download.task_id, request)
            event = "update"
            for index in reported:
                core.book.unreported.pop(index, None)
            if reply.restart or reply.generation != completed.generation:
                break
            wait = min(reply.interval, deadline - clock())
            retry.reset()
        except TrackerUnavailable as exc:
            log.info("announce while seeding failed: %s", exc)
            wait = min(retry.next_delay(cap=core.interval), deadline - clock())
        if wait > 0 and not await still_placed(completed.path, placed, wait, clock):
            # Served from its path, a file moved, deleted or rewritten (by a --callback, by hand) would fail or
            # mislead every peer sent here: out of the swarm at once.
            log.warning("%s was moved, deleted or changed: no longer serving it to peers", completed.path)
            await download.leave()
            return


async def still_placed(path: Path, placed: FileIdentity | None, seconds: float, clock: Callable[[], float]) -> bool:
    """Wait ``seconds``, checking every FILE_CHECK seconds that ``path`` is still the file placed; False as soon
    as it is not."""
    deadline = clock() + seconds
    while (left := deadline - clock()) > 0:
        await asyncio.sleep(min(FILE_CHECK, left))
        if await asyncio.to_thread(file_identity, path) != placed:
            return False
    return True
