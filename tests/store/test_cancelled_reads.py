"""A read of a task whose caller is cancelled mid-query (an announce whose client left: tracker.admission)
runs to its end (storage.db.uncancelled): on PostgreSQL, a query cancelled mid-flight made SQLAlchemy drop
its connection and asyncpg log "Future exception was never retrieved" for the reply it lost, an ERROR in
the tracker's log for every client that timed out. Against every SQL backend."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

from shoal.storage.tracker_store import TrackerStore

from .driver import TASK_ID, join


def collect_earlier_garbage() -> None:
    """Collect what earlier tests of this process left to the collector before this test watches: this test
    collects at its end to find its own futures dropped unretrieved, and an object another test leaked (an
    unclosed connection, whose ``__del__`` warns) would otherwise be reported as this test's."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


async def test_reads_cancelled_mid_query_leave_nothing_unhandled(db_url: str) -> None:
    collect_earlier_garbage()
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        async with TrackerStore(db_url) as store:
            await join(store, "p1", 1000.0)
            cancelled = 0
            for step in range(60):  # cancelled at every point of the query's round trips, one after another
                read = asyncio.ensure_future(store.read_rows(TASK_ID))
                for _ in range(step):
                    await asyncio.sleep(0)
                if read.cancel():
                    cancelled += 1
                try:
                    found = await read
                except asyncio.CancelledError:
                    continue
                assert found is not None and found.task.task_id == TASK_ID
            assert cancelled > 0
            assert await store.read_rows(TASK_ID) is not None, "the pool still serves reads"
        gc.collect()  # a future dropped unretrieved reports itself as it is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []
