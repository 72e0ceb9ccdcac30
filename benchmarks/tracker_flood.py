#!/usr/bin/env python3
"""An honest announce while a task is flooded with made-up peer ids (issue 28): what each fake's announce
costs the tracker, and what an honest peer's announce costs after the flood.

In process, no HTTP: a ``TrackerService`` on a fresh SQLite file, one task of ``--pieces`` pieces, an honest
peer that joins, then ``--flood`` fake peers that join (each from an address of its own, so only the
per-task cap applies; ``--max-peers-per-task`` past the flood: the cap is not what is measured), then
``--announces`` announces of the honest peer (half the file, two leases wanted). With ``--labels`` the
honest peer is in rack s1/r1 and asks for two scope leases, and the fakes are spread over 50 racks of
another site. Printed: milliseconds per fake announce, and the median and 90th percentile of the honest
announce.

Run it (from the repository)::

    python3 benchmarks/tracker_flood.py --flood 3000
    python3 benchmarks/tracker_flood.py --flood 3000 --labels
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest
from shoal.tracker.config import TrackerConfig
from shoal.tracker.service import TrackerService
from tracker_load_peers import length_of


async def run(args: argparse.Namespace, db: str) -> dict[str, float]:
    config = TrackerConfig(db=db, max_peers_per_task=args.flood + 1, max_new_peers_per_source=0)
    service = TrackerService(config)
    task_id = secrets.token_hex(20)
    url = f"http://origin.example/{task_id}.bin"
    identity = OriginIdentity(length_of(args.pieces), etag='"flood"')
    mine = {"site": "s1", "rack": "r1"} if args.labels else {}

    def request(peer_id: str, **fields: object) -> AnnounceRequest:
        return AnnounceRequest(peer_id=peer_id, url=url, port=7000, host="10.0.0.1", **fields)  # type: ignore[arg-type]

    async with service.store:
        first = await service.announce(task_id, request("honest", generation=0, event="started"), "10.0.0.1")
        joined = request("honest", generation=first.generation, event="started", origin=identity, **mine)
        generation = (await service.announce(task_id, joined, "10.0.0.1")).generation
        started = time.perf_counter()
        for i in range(args.flood):
            theirs = {"site": "s9", "rack": f"r{i % 50}"} if args.labels else {}
            fake = request(f"fake{i:07d}", generation=generation, event="started", **theirs)
            await service.announce(task_id, fake, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        flood_s = time.perf_counter() - started
        half = Bitfield.of(args.pieces, range(0, args.pieces, 2)).encode()
        crossings = 2 if args.labels else 0
        waits = []
        for _ in range(args.announces):
            honest = request(
                "honest", generation=generation, bitfield=half, want_leases=2, want_crossings=crossings, **mine
            )
            started = time.perf_counter()
            await service.announce(task_id, honest, "10.0.0.1")
            waits.append(time.perf_counter() - started)
    waits.sort()
    return {
        "fake_ms_each": flood_s / max(args.flood, 1) * 1e3,
        "honest_median_ms": statistics.median(waits) * 1e3,
        "honest_p90_ms": waits[int(len(waits) * 0.9)] * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=3000, help="fake peers (default 3000)")
    parser.add_argument("--announces", type=int, default=200, help="honest announces timed (default 200)")
    parser.add_argument("--pieces", type=int, default=256, help="pieces of the task (default 256)")
    parser.add_argument("--labels", action="store_true", help="a labelled swarm (racks and sites)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(run(args, f"sqlite:///{Path(tmp) / 'tracker.db'}"))
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"flood {args.flood} labels {args.labels}: {figures['fake_ms_each']:.3f} ms per fake announce; honest "
            f"median {figures['honest_median_ms']:.3f} ms, p90 {figures['honest_p90_ms']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
