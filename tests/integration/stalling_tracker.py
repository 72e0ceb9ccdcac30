"""``shoal tracker`` with two test-only routes that hold its event loop, run as a script by the tests of a
busy or wedged cluster member (test_tracker_busy_member). A CPU quota or a real flood cannot be had in CI,
and a wedged loop cannot be caused for real: these are the fakes of those faults.

* ``POST /test/busy?seconds=S``: keep the loop busy for S seconds in CPU-bound stretches of ``chunk``
  seconds (default 1.5), letting the loop run its other work between them: a tracker far behind, but alive.
* ``POST /test/wedge?until=PATH``: block the loop until the file PATH exists (at most two minutes): a tracker
  whose loop makes no progress at all.

Run as ``python stalling_tracker.py tracker --db ...`` (the arguments of ``shoal``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

import shoal.tracker.app as tracker_app
from shoal.cli.main import main

WEDGE_LIMIT = 120.0
"""Seconds a wedge lasts at most, should its test never release it."""


async def busy(request: web.Request) -> web.Response:
    seconds = float(request.query["seconds"])
    chunk = float(request.query.get("chunk", "1.5"))
    end = time.monotonic() + seconds
    stretches = 0
    while time.monotonic() < end:
        stop = min(end, time.monotonic() + chunk)
        while time.monotonic() < stop:  # holds the interpreter, as parsing a backlog of requests does
            pass
        stretches += 1
        await asyncio.sleep(0)  # the loop's other callbacks run, one round, then the next stretch
    return web.json_response({"stretches": stretches})


def _hold(release: Path) -> bool:
    """Block the calling thread until ``release`` exists (or WEDGE_LIMIT passed); whether it does."""
    end = time.monotonic() + WEDGE_LIMIT
    while not release.exists() and time.monotonic() < end:
        time.sleep(0.05)
    return release.exists()


async def wedge(request: web.Request) -> web.Response:
    # Called on the loop, not in a thread: blocking the loop is this route's purpose.
    return web.json_response({"released": _hold(Path(request.query["until"]))})


def build_app(*args: Any, **kwargs: Any) -> web.Application:
    app = _build_app(*args, **kwargs)
    app.router.add_post("/test/busy", busy)
    app.router.add_post("/test/wedge", wedge)
    return app


_build_app = tracker_app.build_app
tracker_app.build_app = build_app  # cli.tracker imports it when it starts the tracker

if __name__ == "__main__":
    main()
