"""An ``asyncio.Lock`` that a test can watch: how many tasks are waiting to take it.

A test that must know a task is queued behind a lock (not merely started, not yet somewhere before it)
swaps the lock under test for a :class:`WatchedLock` and waits for ``waiting`` to count the task, instead
of sleeping and hoping the task got that far.
"""

from __future__ import annotations

import asyncio
from typing import Literal


class WatchedLock(asyncio.Lock):
    """A lock that counts the tasks inside :meth:`acquire` (queued, or about to take it)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def acquire(self) -> Literal[True]:
        self.waiting += 1
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1
