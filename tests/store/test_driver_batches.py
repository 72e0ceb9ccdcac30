"""PostgreSQL: the writer's batches of hash reports go as one statement on the driver's own connection
(SqlStore.driver_call, task_sql.ROWS_BATCH), which is not pinged before each batch as the pool's connections
are. A connection the server ended is known closed and replaced: the next batch commits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from shoal.storage.tracker_store import TrackerStore
from shoal.testing.poll import wait_until_async

from .driver import T0, TASK_ID, announce, digest, join, request


async def test_a_connection_the_server_ended_is_replaced_before_the_next_batch(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("the driver's own connection is PostgreSQL's")
    async with TrackerStore(db_url) as store:
        await join(store, "p1", T0, want_leases=4)
        await announce(store, request("p1", done={0: digest(0)}), T0 + 1)  # a batch on the driver's connection

        async def itself(driver: Any) -> Any:
            await asyncio.sleep(0)
            return driver

        held = await store.driver_call(itself)
        # The server ends it, as a restart or an operator's pg_terminate_backend does.
        async with store.connection() as conn:
            ended = await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": held.get_server_pid()})
            assert ended.scalar_one() is True
        await wait_until_async(held.is_closed, "the driver to hear its connection ended")
        out = await announce(store, request("p1", done={1: digest(1)}), T0 + 2)
        assert not out.rejected
    async with TrackerStore(db_url) as again:
        stored = await again.read_rows(TASK_ID)
        assert stored is not None and set(stored.hashes) == {0, 1}
