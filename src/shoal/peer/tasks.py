"""The background tasks of one download attempt: each started with ``spawn``, all stopped by ``stop``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("shoal.peer")
STOP_SECONDS = 5.0


class Tasks:
    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Cancel every task and wait for them, at most STOP_SECONDS: a task that ignores its cancellation
        (see peer.announcer) must not hang the download."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            for task in stuck:
                log.error("task %s did not stop within %.0fs", task.get_coro(), STOP_SECONDS)
        self._running.clear()
