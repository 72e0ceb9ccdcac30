#!/usr/bin/env python3
"""What one write batch of the tracker's store costs the tracker's CPU, in process: the transaction a busy
tracker commits every few milliseconds (TrackerStore.write_batch).

A fresh database on the server of ``--db`` (``--database``, dropped first and at the end) holds ``--tasks``
tasks taken over by this store; each batch is ``--writes`` hash reports of distinct tasks (a task row
rewritten, ``--hashes`` new hash rows each), as announces that report pieces stage them. ``--batches``
batches run one after another; printed: the process's CPU time per batch (median of ``--rounds`` rounds,
and the smallest and largest), and the wall time. It calls only run_batch, Staged and BatchRows, so the
same script measures another build with ``PYTHONPATH`` at that build's ``src``; run the two alternately::

    PYTHONPATH=src python3 benchmarks/store_batch.py --db postgresql://postgres@127.0.0.1:5432/test
    PYTHONPATH=/tmp/main/src python3 benchmarks/store_batch.py --db postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from typing import Any

from sqlalchemy import make_url, text

from shoal.storage.db import create_engine
from shoal.storage.schema import tasks
from shoal.storage.task_sql import BatchRows, Staged, run_batch
from shoal.storage.tracker_store import TrackerStore

T0 = 1_700_000_000.0


async def scratch(server: str, name: str, *, drop_only: bool = False) -> str:
    """The URL of a new empty database ``name`` on the server of ``server`` (dropped first)."""
    admin = create_engine(server, pool_size=1)
    try:
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            if not drop_only:
                await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def task_row(task_id: str, seq: int, now: float) -> dict[str, Any]:
    return {
        "the_task_id": task_id,
        "url": f"http://origin.example/{task_id}",
        "generation": 1,
        "length": 1 << 30,
        "piece_length": 1 << 20,
        "etag": '"v1"',
        "last_modified": "",
        "range_ok": True,
        "hash_seq": seq,
        "updated": now,
    }


async def write(store: TrackerStore, staged: list[Staged]) -> list[Any]:
    """The batch written as the tracker's writer writes it (a build before TrackerStore.write_batch: always
    run_batch in a transaction)."""
    if hasattr(store, "write_batch"):
        return await store.write_batch(staged)  # type: ignore[no-any-return]
    return await store.write_transaction(functools.partial(run_batch, staged, shared=True))


async def run(args: argparse.Namespace) -> None:
    url = await scratch(args.db, args.database)
    loop = asyncio.get_running_loop()
    try:
        async with TrackerStore(url) as store:
            ids = [f"{n:040x}" for n in range(args.tasks)]
            async with store.connection(write=True) as conn:
                await conn.execute(
                    tasks.insert(),
                    [{"task_id": tid, "epoch": 7, "created": T0, **task_row(tid, 0, T0), "url": tid} for tid in ids],
                )
            seqs = dict.fromkeys(ids, 0)
            piece = 0

            def batch(start: int) -> list[Staged]:
                nonlocal piece
                staged = []
                for n in range(args.writes):
                    tid = ids[(start + n) % len(ids)]
                    hashes = []
                    for _ in range(args.hashes):
                        seqs[tid] += 1
                        hashes.append(
                            {"task_id": tid, "piece": piece, "hash": f"{piece:064x}", "seq": seqs[tid], "reporter": "p"}
                        )
                        piece += 1
                    rows = BatchRows(task_row(tid, seqs[tid], T0 + piece), hashes)
                    done = loop.create_future()
                    staged.append(Staged(lambda c: None, tid, done, None, rows, None, False, epoch=7))  # type: ignore[arg-type]
                return staged

            cpu: list[float] = []
            wall: list[float] = []
            start = 0
            for _ in range(args.rounds):
                batches = [batch(start + k * args.writes) for k in range(args.batches)]
                start += args.batches * args.writes
                c0, w0 = time.process_time(), time.perf_counter()
                for staged in batches:
                    results = await write(store, staged)
                    assert all(r is None for r in results), results
                cpu.append((time.process_time() - c0) / args.batches * 1000)
                wall.append((time.perf_counter() - w0) / args.batches * 1000)
            print(
                f"{args.writes} writes x {args.hashes} hashes a batch: CPU {statistics.median(cpu):.3f} ms a batch "
                f"(min {min(cpu):.3f}, max {max(cpu):.3f}), wall {statistics.median(wall):.3f} ms"
            )
    finally:
        await scratch(args.db, args.database, drop_only=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test", help="a server's URL")
    p.add_argument("--database", default="shoal_store_batch", help="the scratch database's name")
    p.add_argument("--tasks", type=int, default=481, help="tasks in the database (default 481)")
    p.add_argument("--writes", type=int, default=12, help="hash reports a batch, of distinct tasks (default 12)")
    p.add_argument("--hashes", type=int, default=1, help="new hashes a report (default 1)")
    p.add_argument("--batches", type=int, default=200, help="batches a round (default 200)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
