"""SQLite write transactions of one process run one at a time (storage.db.SqlStore.connection and
write_transaction): a second writer queues in the process instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from shoal.core.errors import StoreError
from shoal.storage.db import SqlStore
from shoal.storage.schema import pools
from shoal.testing.poll import DEADLINE, wait_until_async
from shoal.testing.watched import WatchedLock


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

        queue = store._sqlite_writer = WatchedLock()
        first = asyncio.ensure_future(write("first", release))
        await wait_until_async(lambda: entered == ["first"] or first.done(), "the first writer's transaction")
        second = asyncio.ensure_future(write("second", None))
        await wait_until_async(lambda: queue.waiting == 1 or second.done(), "the second writer to queue")
        assert entered == ["first"]  # the second waits for the first's commit, outside SQLite
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), DEADLINE)
        assert entered == ["first", "second"]
        async with store.connection() as conn:
            assert (await conn.execute(select(func.count()).select_from(pools))).scalar_one() == 2


async def test_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
        holding, release = asyncio.Event(), asyncio.Event()

        async def hold_write() -> None:
            async with store.connection(write=True) as conn:
                await conn.execute(pools.insert().values(name="held", token_hash=None, created=1.5))
                holding.set()
                await release.wait()

        writer = asyncio.ensure_future(hold_write())
        await asyncio.wait_for(holding.wait(), DEADLINE)
        async with store.connection() as conn:  # WAL: the last committed state, at once
            count = (await conn.execute(select(func.count()).select_from(pools))).scalar_one()
        assert count == 0
        release.set()
        await writer


async def test_a_write_transaction_runs_whole_in_one_worker_thread(tmp_path: Path) -> None:
    """The tracker's writes on a SQLite file: every statement of the transaction in one thread, not the
    event loop's (aiosqlite would hop to its thread and back for each statement)."""
    async with SqlStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
        threads: set[int] = set()

        def work(conn: Connection) -> int:
            for name in ("a", "b", "c"):
                threads.add(threading.get_ident())
                conn.execute(pools.insert().values(name=name, token_hash=None, created=1.5))
            return int(conn.execute(select(func.count()).select_from(pools)).scalar_one())

        assert await store.write_transaction(work) == 3
        assert len(threads) == 1 and threading.get_ident() not in threads
        async with store.connection() as conn:  # committed, and seen by the async engine
            assert (await conn.execute(select(func.count()).select_from(pools))).scalar_one() == 3


async def test_a_write_transaction_waits_for_the_writer_before_it(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
        release = asyncio.Event()
        entered: list[str] = []

        async def hold_write() -> None:
            async with store.connection(write=True) as conn:
                entered.append("async")
                await conn.execute(pools.insert().values(name="held", token_hash=None, created=1.5))
                await release.wait()

        def work(conn: Connection) -> None:
            entered.append("thread")
            conn.execute(pools.insert().values(name="next", token_hash=None, created=1.5))

        queue = store._sqlite_writer = WatchedLock()
        holder = asyncio.ensure_future(hold_write())
        await wait_until_async(lambda: entered == ["async"] or holder.done(), "the first writer's transaction")
        second = asyncio.ensure_future(store.write_transaction(work))
        await wait_until_async(lambda: queue.waiting == 1 or second.done(), "the second writer to queue")
        assert entered == ["async"]  # queued in the process, not in SQLite's busy handler
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, second), DEADLINE)
        assert entered == ["async", "thread"]


async def test_a_failed_write_transaction_is_a_store_error_and_writes_nothing(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:

        def work(conn: Connection) -> None:
            conn.execute(pools.insert().values(name="dup", token_hash=None, created=1.5))
            conn.execute(pools.insert().values(name="dup", token_hash=None, created=1.5))  # primary key

        with pytest.raises(StoreError, match="database error"):
            await store.write_transaction(work)
        async with store.connection() as conn:
            assert (await conn.execute(select(func.count()).select_from(pools))).scalar_one() == 0


async def test_in_memory_sqlite_writes_on_its_own_connection() -> None:
    """A second engine would open a second, empty in-memory database: the write runs on the async one."""
    async with SqlStore("sqlite:///:memory:") as store:

        def work(conn: Connection) -> None:
            conn.execute(pools.insert().values(name="mem", token_hash=None, created=1.5))

        await store.write_transaction(work)
        async with store.connection() as conn:
            assert (await conn.execute(select(func.count()).select_from(pools))).scalar_one() == 1


async def test_a_cancelled_write_transaction_holds_off_the_next_writer_until_its_thread_ends(tmp_path: Path) -> None:
    async with SqlStore(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
        in_thread, go_on = threading.Event(), threading.Event()
        entered: list[str] = []

        def slow(conn: Connection) -> None:
            conn.execute(pools.insert().values(name="slow", token_hash=None, created=1.5))
            in_thread.set()
            assert go_on.wait(DEADLINE)

        async def next_writer() -> None:
            async with store.connection(write=True) as conn:
                entered.append("next")
                await conn.execute(pools.insert().values(name="next", token_hash=None, created=1.5))

        queue = store._sqlite_writer = WatchedLock()
        caller = asyncio.ensure_future(store.write_transaction(slow))
        assert await asyncio.to_thread(in_thread.wait, DEADLINE)
        caller.cancel()
        await asyncio.sleep(0)  # the first cancellation is delivered
        caller.cancel()  # twice, as a shutdown may: still no early release
        with pytest.raises(asyncio.CancelledError):
            await caller
        waiting = asyncio.ensure_future(next_writer())
        await wait_until_async(lambda: queue.waiting == 1 or waiting.done(), "the next writer to queue")
        assert entered == []  # in the process's queue, not in SQLite's busy handler
        go_on.set()
        await asyncio.wait_for(waiting, DEADLINE)
        async with store.connection() as conn:  # the cancelled caller's transaction still committed
            names = (await conn.execute(select(pools.c.name).order_by(pools.c.name))).scalars().all()
        assert names == ["next", "slow"]
