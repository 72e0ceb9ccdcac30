#!/usr/bin/env python3
"""What the tracker's metrics cost it, part by part, in process: CPU time an announce pays for being counted
and timed, and what a scrape of ``/metrics`` takes as the tracker's tasks grow.

- **Per announce**: the announce timer's middleware (shoal.tracker.metrics: a path check, two clock reads, a
  histogram observation and a counter increment) around a handler that answers at once, against the handler
  alone; and core.announce_counts' ``add`` of one announce's outcome. Both in microseconds, the best of
  ``--repeat`` runs of ``--calls`` calls each. ``tracker_load.py`` (with ``--tracker-args=--no-metrics`` for
  the tracker without) measures the same over HTTP, among everything else an announce costs.
- **Per scrape**: the exposition of a tracker (its service built, never started) whose scope tally holds
  ``--tasks`` tasks of ``--peers`` peers each, in milliseconds: the collectors read the state then.

Run it (from a checkout; under the machine's CPU lock when others share it)::

    python3 benchmarks/metrics_cost.py
    python3 benchmarks/metrics_cost.py --tasks 100000 --peers 2
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from shoal.core.announce_counts import AnnounceCounts
from shoal.core.announce_values import AnnounceOutcome, TaskRecord
from shoal.core.messages import ScopeBytes
from shoal.http.metrics import Metrics
from shoal.tracker.admission import Admission
from shoal.tracker.config import TrackerConfig
from shoal.tracker.metrics import AnnounceTimer, TrackerCollector
from shoal.tracker.service import TrackerService


def best_per_call(run: Callable[[], float], calls: int, repeat: int) -> float:
    """Microseconds per call: the best of ``repeat`` runs (the least disturbed by other work)."""
    return min(run() for _ in range(repeat)) / calls * 1e6


async def loop_of(step: Callable[[], Awaitable[object]], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        await step()
    return time.process_time() - started


def middleware_cost(calls: int, repeat: int) -> tuple[float, float]:
    """Microseconds per announce: the handler alone, and inside the announce timer."""
    reply = web.Response(status=200)

    async def handler(request: web.Request) -> web.StreamResponse:
        return reply

    timed = AnnounceTimer(Metrics()).middleware()
    request = make_mocked_request("POST", f"/v1/tasks/{secrets.token_hex(32)}/announce")

    def bare() -> float:
        return asyncio.run(loop_of(lambda: handler(request), calls))

    def wrapped() -> float:
        return asyncio.run(loop_of(lambda: timed(request, handler), calls))

    return best_per_call(bare, calls, repeat), best_per_call(wrapped, calls, repeat)


def counts_cost(calls: int, repeat: int) -> float:
    counts = AnnounceCounts()
    outcome = AnnounceOutcome(task=TaskRecord(secrets.token_hex(32), "http://origin.example/f", 1, None))
    outcome.new_hashes[3] = "0" * 64
    outcome.leases_granted = 2

    def run() -> float:
        started = time.process_time()
        for _ in range(calls):
            counts.add(outcome)
        return time.process_time() - started

    return best_per_call(run, calls, repeat)


def scrape_cost(tasks: int, peers: int, repeat: int) -> float:
    """Milliseconds per exposition of a tracker with ``tasks`` tasks in its scope tally."""
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as scratch:
        service = TrackerService(TrackerConfig(db=f"sqlite:///{scratch}/never-opened.db"))
        for _ in range(tasks):
            task_id = secrets.token_hex(32)
            for peer in range(peers):
                service.scope_bytes.record(task_id, f"peer{peer}", ScopeBytes(origin=1 << 20, rack=1 << 20), now=1.0)
        metrics = Metrics()
        AnnounceTimer(metrics)
        metrics.add(TrackerCollector(service, Admission(64, 5.0)))

        def run() -> float:
            started = time.process_time()
            asyncio.run(metrics.exposition())
            return time.process_time() - started

        return best_per_call(run, 1, repeat) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200_000, help="calls per run (default 200,000)")
    p.add_argument("--repeat", type=int, default=5, help="runs; the best is printed (default 5)")
    p.add_argument("--tasks", type=int, default=10_000, help="tasks in the scraped tracker (default 10,000)")
    p.add_argument("--peers", type=int, default=3, help="peers per task (default 3)")
    args = p.parse_args()
    bare, wrapped = middleware_cost(args.calls, args.repeat)
    print(f"announce timer: {wrapped - bare:.2f} µs an announce ({bare:.2f} µs the bare handler, {wrapped:.2f} timed)")
    print(f"announce counts: {counts_cost(args.calls, args.repeat):.2f} µs an announce")
    scrape = scrape_cost(args.tasks, args.peers, args.repeat)
    print(f"scrape: {scrape:.1f} ms with {args.tasks:,} tasks of {args.peers} peers")


if __name__ == "__main__":
    main()
