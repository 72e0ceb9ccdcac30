#!/usr/bin/env python3
"""The tracker dashboard's cost per tick: how long one snapshot takes to build and encode, and how big it is,
for a tracker holding ``--tasks`` live tasks of ``--peers`` peers each.

In process, no HTTP: a ``TrackerService`` on a fresh SQLite file is filled by announces (each peer holds a
random share of its task's pieces), then the dashboard's source (tracker.dashboard) builds ``--repeat``
snapshots, each encoded once as the live feed does (shoal.http.live: one snapshot a tick is shared by every
viewer, so this is the whole cost of a tick whatever the number of open pages, apart from the writes).
Printed: the median and the slowest build in milliseconds, the tracker's CPU milliseconds per snapshot, the
snapshot's size in bytes, and the longest the event loop was held while a snapshot was built (then
``--repeat`` builds again beside a task that yields at every turn of the loop and times the gaps between its
turns, in CPU time of the loop's thread, so that other processes taking the core do not count): an announce
arriving meanwhile waits that long at most before it is looked at, on a core of its own.

    PYTHONPATH=src python3 benchmarks/dashboard_tick.py --tasks 1000 --peers 20
    PYTHONPATH=src python3 benchmarks/dashboard_tick.py --tasks 10 --peers 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest, ScopeBytes
from shoal.tracker.admission import Admission
from shoal.tracker.config import TrackerConfig
from shoal.tracker.dashboard import TrackerDashboardSource
from shoal.tracker.service import TrackerService

PIECES = 256
LENGTH = PIECES << 20  # 256 MiB: 256 pieces of 1 MiB


async def fill(service: TrackerService, tasks: int, peers: int, rng: random.Random) -> None:
    identity = OriginIdentity(LENGTH, etag='"bench"')
    for t in range(tasks):
        task_id = f"{t:040x}"
        url = f"http://origin.example/releases/file-{t}.bin"
        generation = 0
        for p in range(peers):
            have = Bitfield.of(PIECES, rng.sample(range(PIECES), rng.randrange(PIECES + 1)))
            request = AnnounceRequest(
                peer_id=f"p{t}-{p}",
                url=url,
                port=7000,
                host=f"10.{t % 250}.{p // 250}.{p % 250}",
                site=f"s{p % 3}",
                rack=f"r{p % 12}",
                generation=generation,
                origin=identity,
                bitfield=have.encode(),
                received=ScopeBytes(origin=rng.randrange(LENGTH), rack=rng.randrange(LENGTH)),
            )
            reply = await service.announce(task_id, request, "10.0.0.1")
            generation = reply.generation


async def run(args: argparse.Namespace, db: str) -> dict[str, float]:
    config = TrackerConfig(db=db, max_new_peers_per_source=0, max_peers_per_task=0, peer_ttl=86400.0)
    service = TrackerService(config)
    # The collector's rules the tracker runs under (tracker.collector): without them a full collection of
    # the soft state, not the snapshot, would be the longest hold of the loop.
    with service.collector:
        async with service.store:
            return await measure(service, config, args)


async def measure(service: TrackerService, config: TrackerConfig, args: argparse.Namespace) -> dict[str, float]:
    await fill(service, args.tasks, args.peers, random.Random(1))
    source = TrackerDashboardSource(service, Admission(config.max_inflight, config.interval))
    builds: list[float] = []
    size = 0
    cpu0 = time.process_time()
    for _ in range(args.repeat):
        started = time.perf_counter()
        size = len(msgspec.json.encode(await source.snapshot()))
        builds.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu0
    held = await longest_hold(source, args.repeat)
    return {
        "median_ms": statistics.median(builds) * 1e3,
        "max_ms": max(builds) * 1e3,
        "cpu_ms": cpu / args.repeat * 1e3,
        "bytes": size,
        "held_ms": held * 1e3,
    }


async def longest_hold(source: TrackerDashboardSource, repeat: int) -> float:
    """Seconds of the loop thread's CPU: the longest gap between two turns of the event loop while ``repeat``
    snapshots are built."""
    gaps: list[float] = []
    building = True

    async def turns() -> None:
        last = time.thread_time()
        while building:
            await asyncio.sleep(0)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    probe = asyncio.ensure_future(turns())
    await asyncio.sleep(0)
    for _ in range(repeat):
        msgspec.json.encode(await source.snapshot())
    building = False
    await probe
    return max(gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="live tasks (default 1000)")
    parser.add_argument("--peers", type=int, default=20, help="live peers per task (default 20)")
    parser.add_argument("--repeat", type=int, default=20, help="snapshots built (default 20)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-tick-") as tmp:
        result = asyncio.run(run(args, f"sqlite:///{Path(tmp) / 'tracker.db'}"))
    if args.json:
        print(json.dumps({"tasks": args.tasks, "peers": args.peers, **{k: round(v, 2) for k, v in result.items()}}))
    else:
        print(
            f"{args.tasks} tasks x {args.peers} peers ({args.tasks * args.peers:,} peers): a snapshot in "
            f"{result['median_ms']:.1f} ms median, {result['max_ms']:.1f} ms at most, {result['cpu_ms']:.1f} ms CPU; "
            f"{result['bytes']:,} bytes; the event loop held {result['held_ms']:.1f} ms at most"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
