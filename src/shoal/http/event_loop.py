"""Which event loop a server process runs on: asyncio's own, or uvloop's where it is worth it.

Rules, and why:

- **Plain asyncio by default.** Every service that serves files (peers, the daemon, the seeder) stays on
  asyncio's loop: uvloop disables aiohttp's sendfile path and halves its file throughput (DESIGN.md).
- **uvloop is for a process that serves no files and many small requests**: ``shoal tracker``, whose
  announces spend about half their time in the event loop and aiohttp's request handling, which uvloop
  runs in C (figures in benchmarks/RESULTS.md). It is the operator's choice, not the default: a tracker on
  uvloop that ran out of file descriptors reset the connection of a later request, which asyncio's loop
  answers (tests/integration/test_connection_attacks.py). That is libuv's way of shedding load: an accept
  that fails with EMFILE makes it close a descriptor it keeps in reserve, then accept and at once close
  every connection waiting in the listen queue (``uv__emfile_trick``, src/unix/stream.c), where asyncio's
  loop leaves them queued until a descriptor is free. ``auto`` takes uvloop when it is installed
  (``pip install 'shoal[tracker]'``), asyncio's loop otherwise, so a host without it loses nothing but speed.
- **The operator can always say which**: ``asyncio`` never tries uvloop; ``uvloop`` insists on it, and its
  absence is a usage error before anything starts, not a silent fallback.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from shoal.core.errors import UsageError

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")
"""What an operator may ask for (``--event-loop``)."""


def uvloop_installed() -> bool:
    """Whether uvloop can be imported here (looked up, not imported)."""
    return importlib.util.find_spec("uvloop") is not None


def choose(asked: str, *, uvloop_available: bool) -> str:
    """The loop to run (``uvloop`` or ``asyncio``) for what was ``asked`` (one of CHOICES), given whether
    uvloop is installed; a UsageError for ``uvloop`` without it, or for a name not in CHOICES."""
    if asked not in CHOICES:
        raise UsageError(f"unknown event loop {asked!r}: choose one of {', '.join(CHOICES)}")
    if asked == "asyncio":
        return "asyncio"
    if uvloop_available:
        return "uvloop"
    if asked == "uvloop":
        raise UsageError("--event-loop uvloop: uvloop is not installed (pip install 'shoal[tracker]')")
    return "asyncio"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new loop of ``name`` (a result of :func:`choose`)."""
    if name == "uvloop":
        uvloop: Any = importlib.import_module("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """``asyncio.run(main)`` on a new loop of ``name`` (a result of :func:`choose`)."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
