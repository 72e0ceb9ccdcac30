"""The daemon's fetcher in process: its cache reservation when the fetch is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.daemon.fetcher import enter_in_thread
from shoal.storage.cache_store import CacheStore
from shoal.testing.poll import DEADLINE


async def test_a_reservation_still_being_made_when_its_fetch_is_cancelled_is_given_back(tmp_path: Path) -> None:
    inside, go_on, entered = threading.Event(), threading.Event(), threading.Event()
    with CacheStore(tmp_path / "index.db", tmp_path / "cache", 64 << 20) as store:

        @contextlib.contextmanager
        def slow_reservation() -> Iterator[int]:
            inside.set()
            go_on.wait(DEADLINE)  # the transaction is slow (another process holds the index)
            with store.reserve(16 << 20) as reservation:
                entered.set()
                yield reservation

        stacks: list[contextlib.ExitStack] = []

        async def fetch() -> None:
            with contextlib.ExitStack() as reservations:
                # Held, as a traceback or a logged error may hold the fetch's frame: the garbage collector
                # must not be what ends a reservation registered after the stack closed.
                stacks.append(reservations)
                await enter_in_thread(reservations, slow_reservation())
                await asyncio.sleep(60)  # the download

        task = asyncio.ensure_future(fetch())
        assert await asyncio.to_thread(inside.wait, DEADLINE)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()  # and once more while it waits for the thread
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(entered.wait, DEADLINE)  # the thread did reserve...
        assert store.index.used()[1] == 0  # ...and nothing stays reserved
