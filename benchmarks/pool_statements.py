#!/usr/bin/env python3
"""What each change of a pool costs the tracker's database: SQL statements and commits, in process.

A pool service (tracker.pools.Pools) over a TrackerStore on a fresh database goes through one push's life:
two members join, a push to every member, heartbeats, reports (the first progress, a progress, done), a
sweep, a cancel. For each change it prints the statements the store ran (reads included) and the
transactions it committed, counted with SQLAlchemy's engine events. Then ``--heartbeats N`` heartbeats of a
member with nothing to decide (one open job), timed: the steady state of a pool's locked writes.

The database is created afresh on the server of ``--db`` (named ``--database``, dropped first), so run it
against a server, not a database in use. It uses only the pool service's public calls, so the same script
measures another build with ``PYTHONPATH`` at that build's ``src``::

    PYTHONPATH=src python3 benchmarks/pool_statements.py --db postgresql://postgres@127.0.0.1:5432/test
    PYTHONPATH=src python3 benchmarks/pool_statements.py --db mysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from sqlalchemy import event, make_url, text

from shoal.core.pool import MemberStatus
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.storage.db import create_engine
from shoal.storage.tracker_store import TrackerStore
from shoal.testing.clock import FakeClock
from shoal.tracker.pools import Pools

POOL = "farm"


async def fresh_database(server: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server``, dropped and created again."""
    engine = create_engine(server)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def beat(member: str) -> Heartbeat:
    return Heartbeat(name=member, url=f"http://{member}.example:7000/", site="", rack="", free=1 << 40)


async def run(url: str, heartbeats: int) -> None:
    async with TrackerStore(url) as store:
        counts = {"statements": 0, "commits": 0}

        def statement(*args: Any) -> None:
            counts["statements"] += 1

        def commit(*args: Any) -> None:
            counts["commits"] += 1

        event.listen(store.engine.sync_engine, "before_cursor_execute", statement)
        event.listen(store.engine.sync_engine, "commit", commit)
        pools = Pools(store, FakeClock(), member_ttl=30.0)
        await pools.create(POOL, private=False)

        async def measure(what: str, change: Awaitable[Any]) -> Any:
            counts["statements"] = counts["commits"] = 0
            result = await change
            print(f"{what:58s} {counts['statements']:3d} statements  {counts['commits']:2d} commits")
            return result

        def heartbeat(member: str) -> Awaitable[Any]:
            return pools.heartbeat(POOL, member, beat(member), version=None, wait=0)

        await measure("first heartbeat of m1 (no job; the take-over, if any)", heartbeat("m1"))
        await measure("heartbeat of m2 (no job)", heartbeat("m2"))
        job_id = await measure("push to every member (2 assigned)", pools.push(POOL, PushRequest(url="http://o/a")))
        await measure("heartbeat of m1 (an open job, nothing decided)", heartbeat("m1"))
        running = MemberReport(MemberStatus.RUNNING, done=1, total=10, rate=1.0)
        await measure("m1's first progress (assigned -> running)", pools.report(POOL, job_id, "m1", running))
        await measure("m1's progress (running: the conditional update)", pools.report(POOL, job_id, "m1", running))
        done = MemberReport(MemberStatus.DONE, done=10, total=10)
        await measure("m1 done (m2 still assigned)", pools.report(POOL, job_id, "m1", done))
        await measure("m2 done (the job completes)", pools.report(POOL, job_id, "m2", done))
        await measure("sweep (nothing to decide)", pools.sweep())
        await measure("cancel", pools.cancel(POOL, job_id))
        if heartbeats:
            await pools.push(POOL, PushRequest(url="http://o/b"))
            started = time.perf_counter()
            for _ in range(heartbeats):
                await heartbeat("m1")
            seconds = time.perf_counter() - started
            print(f"{heartbeats} heartbeats, an open job, nothing decided: {seconds / heartbeats * 1000:.3f} ms each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a database URL on the server to use (PostgreSQL or MySQL)")
    parser.add_argument("--database", default="shoal_pool_statements", help="the database made for the run")
    parser.add_argument("--heartbeats", type=int, default=0, help="then time this many heartbeats")
    args = parser.parse_args()
    url = asyncio.run(fresh_database(args.db, args.database))
    asyncio.run(run(url, args.heartbeats))


if __name__ == "__main__":
    main()
