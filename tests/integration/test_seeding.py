"""The daemon's seeding of cached files (shoal.daemon.seeding), in process: a real cache and piece server."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from shoal.daemon.seeding import Seeding
from shoal.peer.server import PieceServer
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.cache_index import SeededTask
from shoal.storage.cache_store import CacheStore
from shoal.testing.hostile import identity
from shoal.testing.poll import DEADLINE, wait_until_async
from shoal.testing.sockets import refusing_port

URL = "http://origin.invalid/file.bin"


async def test_a_task_added_again_stays_served(tmp_path: Path) -> None:
    """The file of a seeded task is fetched again (its copy was damaged, say) and the task added again: the
    first seeding loop ends, and must leave the task the second one published on the piece server."""
    with CacheStore(tmp_path / "index.db", tmp_path / "cache", 1 << 20) as store:
        part = store.staging_path("f.part")
        part.write_bytes(os.urandom(1000))
        task = SeededTask("t" * 40, "", URL, 1, 1000, '"v1"', "")
        entry = store.adopt(part, name="f", task=task)
        record = replace(task, digest=entry.digest)
        server = PieceServer()
        async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
            # No tracker listens here: the loops keep retrying, as they do while a tracker is down.
            port = stack.enter_context(refusing_port())
            tracker = TrackerClient(f"http://127.0.0.1:{port}", session)
            announces = 0
            announce = tracker.announce

            async def counted(*args: Any, **kwargs: Any) -> Any:
                nonlocal announces
                announces += 1
                return await announce(*args, **kwargs)

            tracker.announce = counted  # type: ignore[method-assign]
            seeding = Seeding(
                store, server, tracker, identity=identity("p1"), host="", site="", rack="", retry_seconds=0.05
            )
            try:
                seeding.add(record)
                first = server.tasks[record.task_id]
                first_loop = seeding._tasks[record.task_id]
                await wait_until_async(lambda: announces >= 2, "the first loop retrying its announce")
                seeding.add(record)
                second = server.tasks[record.task_id]
                assert second is not first
                await asyncio.wait([first_loop], timeout=DEADLINE)
                assert first_loop.done()  # ended, with whatever it does on its way out
                assert server.tasks.get(record.task_id) is second
                assert seeding.task_ids == [record.task_id]
            finally:
                await seeding.stop()
            assert record.task_id not in server.tasks  # stopping withdraws it
