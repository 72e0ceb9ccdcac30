"""asyncio primitives that a test can watch: how many tasks are waiting on them.

A test that must know a task is parked on a lock or an event (not merely started, not yet somewhere before
it) swaps the primitive under test for a watched one and waits for ``waiting`` to count the task, instead
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


class WatchedEvent(asyncio.Event):
    """An event that counts the tasks inside :meth:`wait`."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def wait(self) -> Literal[True]:
        self.waiting += 1
        try:
            return await super().wait()
        finally:
            self.waiting -= 1
