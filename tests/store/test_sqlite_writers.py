"""SQLite write transactions of one process run one at a time (storage.db.SqlStore.connection): a second
writer queues in the process instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from shoal.storage.db import SqlStore
from shoal.storage.schema import pools


async def test_a_second_writer_starts_when_the_first_commits(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
        release = asyncio.Event()
        entered: list[str] = []

        async def write(name: str, hold: asyncio.Event | None) -> None:
            async with store.connection(write=True) as conn:
                entered.append(name)
                await conn.execute(pools.insert().values(name=name, token_hash=None, created=1.5))
                if hold is not None:
                    await hold.wait()

        first = asyncio.ensure_future(write("first", release))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(write("second", None))
        await asyncio.sleep(0.2)
        assert entered == ["first"]  # the second waits for the first's commit, outside SQLite
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5.0)
        assert entered == ["first", "second"]
        async with store.connection() as conn:
            assert (await conn.execute(select(func.count()).select_from(pools))).scalar_one() == 2


async def test_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
        release = asyncio.Event()

        async def hold_write() -> None:
            async with store.connection(write=True) as conn:
                await conn.execute(pools.insert().values(name="held", token_hash=None, created=1.5))
                await release.wait()

        writer = asyncio.ensure_future(hold_write())
        await asyncio.sleep(0.05)
        async with store.connection() as conn:  # WAL: the last committed state, at once
            count = (await conn.execute(select(func.count()).select_from(pools))).scalar_one()
        assert count == 0
        release.set()
        await writer
