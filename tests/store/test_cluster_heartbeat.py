"""The cluster's heartbeat on the tracker's loop (tracker.cluster): one that fails does not end the next ones."""

from __future__ import annotations

import asyncio
import time

import pytest

from shoal.storage.tracker_store import TrackerStore
from shoal.testing.poll import wait_until_async
from shoal.tracker.cluster import Cluster


async def test_a_heartbeat_that_fails_is_logged_and_the_next_ones_go_on(db_url, caplog) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("trackers share PostgreSQL or MySQL databases, not SQLite files")
    calls: list[float] = []

    def held() -> list[str]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("a callback that failed once")
        return []

    async with TrackerStore(db_url) as store:
        cluster = Cluster(store, advertise="http://127.0.0.1:9", host="127.0.0.1", clock=time.time)
        cluster.listening(9)
        await cluster.join()
        beating = asyncio.create_task(
            cluster.heartbeat_forever(drop=lambda keys: None, held=held, moved=lambda at: None)
        )
        try:
            # Each new reading is acted on (held() asked) at the next heartbeat: the one after a failed one too.
            await wait_until_async(lambda: len(calls) >= 3, "heartbeats after the failed one")
            assert not beating.done()
            assert "a heartbeat failed" in caplog.text and "a callback that failed once" in caplog.text
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            await cluster.leave()
