#!/usr/bin/env python3
"""Tracker announces through the store: how many JSON-API announces a second one tracker process decides and
commits, and how long each waits, with several peers announcing at once.

In process, no HTTP (``bt_announce.py`` measures the HTTP side): a ``TrackerService`` on ``--db`` (default: a
fresh SQLite file), one task of ``--pieces`` pieces, and ``--peers`` peers that announce ``--announces`` times
each, all at once, as peers of a swarm do: every announce reports the hash of a piece it fetched from the
origin and asks for one more lease. With ``--seeding`` the peers hold the whole file and their announces
report nothing new (a fleet's steady state: every seeder announcing once an interval). Printed: announces per
second, the tracker's CPU milliseconds per announce (this process's CPU time over the timed announces), and
the median and 90th percentile of the time from calling the service until it answered (after the
announce's write committed). With ``--fleet`` the tracker has a fleet token: every announce's reply carries a
ticket, and each announce also pays for a request credential made and checked (what the HTTP middleware
and the peer do, core.tickets), so the difference is what the fleet token costs the tracker.

Run it (from the repository; PostgreSQL and MariaDB are this machine's services)::

    python3 benchmarks/tracker_announce.py
    python3 benchmarks/tracker_announce.py --db postgresql://postgres@127.0.0.1/test
    python3 benchmarks/tracker_announce.py --db mysql://root@127.0.0.1/test --peers 16
    python3 benchmarks/tracker_announce.py --seeding
    python3 benchmarks/tracker_announce.py --seeding --fleet
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest
from shoal.core.tickets import FleetKey
from shoal.tracker.config import TrackerConfig
from shoal.tracker.service import TrackerService
from tracker_load_peers import length_of


async def run(args: argparse.Namespace, db: str) -> dict[str, float]:
    task_id = secrets.token_hex(20)  # a task of its own: a reused database holds earlier runs' tasks
    url = f"http://origin.example/{task_id}.bin"
    try:
        length = length_of(args.pieces)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    identity = OriginIdentity(length, etag=f'"{task_id}"')
    key = FleetKey.from_token(secrets.token_bytes(32)) if args.fleet else None
    # Every peer announces from one address: no per-source limit on new peers.
    service = TrackerService(TrackerConfig(db=db, max_new_peers_per_source=0, fleet_key=key))

    def request(peer: int, **fields: object) -> AnnounceRequest:
        return AnnounceRequest(
            peer_id=f"peer{peer:04d}", url=url, port=7000, host=f"10.0.{peer // 250}.{peer % 250}", **fields
        )  # type: ignore[arg-type]

    async with service.store:
        first = await service.announce(task_id, request(0, generation=0, event="started"), "10.0.0.1")
        joined = await service.announce(
            task_id, request(0, generation=first.generation, event="started", origin=identity), "10.0.0.1"
        )
        generation = joined.generation
        waits: list[float] = []
        everything = Bitfield.full(args.pieces).encode()

        async def peer(k: int) -> None:
            leased: list[int] = []  # a hash is taken only from the piece's lease holder: report those
            for _ in range(args.announces):
                if args.seeding:
                    announce = request(k, generation=generation, bitfield=everything)
                else:
                    done = {leased.pop(0): secrets.token_hex(32)} if leased else {}
                    announce = request(k, generation=generation, done=done, want_leases=1)
                started = time.perf_counter()
                if key is not None:
                    key.check_credential(key.credential(time.time()), time.time())
                reply = await service.announce(task_id, announce, "10.0.0.1")
                waits.append(time.perf_counter() - started)
                leased = [i for i in reply.leases if i not in done]

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(peer(k) for k in range(1, args.peers + 1)))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    count = args.peers * args.announces
    waits.sort()
    return {
        "announces_per_s": count / wall,
        "cpu_ms_per_announce": cpu / count * 1e3,
        "median_ms": statistics.median(waits) * 1e3,
        "p90_ms": waits[int(len(waits) * 0.9)] * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--peers", type=int, default=8, help="peers announcing at once (default 8)")
    parser.add_argument("--announces", type=int, default=50, help="announces per peer (default 50)")
    parser.add_argument("--pieces", type=int, default=512, help="pieces of the task (default 512)")
    parser.add_argument("--seeding", action="store_true", help="announces of peers holding the whole file")
    parser.add_argument("--fleet", action="store_true", help="a fleet token: tickets and request credentials")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracker-announce-") as tmp:
        for i in range(args.repeat):
            db = args.db or f"sqlite:///{Path(tmp) / f'tracker{i}.db'}"
            result = asyncio.run(run(args, db))
            backend = db.split(":", 1)[0] + (", seeding" if args.seeding else "")
            backend += ", fleet token" if args.fleet else ""
            if args.json:
                print(json.dumps({"run": i + 1, "db": backend, **{k: round(v, 2) for k, v in result.items()}}))
            else:
                print(
                    f"run {i + 1} ({backend}, {args.peers} peers x {args.announces} announces): "
                    f"{result['announces_per_s']:.0f} announces/s, {result['cpu_ms_per_announce']:.2f} ms CPU each, "
                    f"answered in {result['median_ms']:.1f} ms median, {result['p90_ms']:.1f} ms p90"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
