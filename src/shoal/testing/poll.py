"""Waiting in tests for something another process, thread or task does: polling against a deadline.

The rule of the suite: never sleep a fixed time and then assert; wait until the condition holds, with a
deadline generous enough for a machine whose cores are busy with other work, and fail with a message that
names what did not happen and the last value seen. A test waits on an event where one exists (an
``asyncio.Event``, a line a process prints); polling is for state it can only look at.

:func:`wait_until` is for plain tests and blocking code; :func:`wait_until_async` for coroutine tests,
whose event loop must keep running (servers in the same process answer while the test waits).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE = 60.0
"""Seconds a wait lasts unless told. Generous on purpose: a wait that succeeds returns as soon as the
condition holds, so the figure costs time only when the test is failing anyway."""

INTERVAL = 0.05
"""Seconds between two looks."""


class _Deadline:
    """When a wait gives up, and the error it then raises."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def check(self, last: object) -> None:
        if time.monotonic() > self.end:
            raise AssertionError(f"timed out after {self.timeout:g} s waiting for {self.what} (last seen: {last!r})")


def wait_until(check: Callable[[], T], what: str, *, timeout: float = DEADLINE, interval: float = INTERVAL) -> T:
    """Call ``check`` until it returns a true value, and return that value. Raise ``AssertionError`` naming
    ``what`` (and the last value) once ``timeout`` seconds have passed. Blocks the thread between looks."""
    deadline = _Deadline(what, timeout)
    while not (result := check()):
        deadline.check(result)
        time.sleep(interval)
    return result


async def wait_until_async(
    check: Callable[[], T | Awaitable[T]],
    what: str,
    *,
    timeout: float = DEADLINE,  # noqa: ASYNC109 (the deadline is what this waits against; one name for both forms)
    interval: float = INTERVAL,
) -> T:
    """:func:`wait_until` for coroutine tests: ``check`` may be a plain function or return an awaitable,
    and the event loop runs between looks."""
    deadline = _Deadline(what, timeout)
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        deadline.check(result)
        await asyncio.sleep(interval)
