#!/usr/bin/env python3
"""Where a tracker's CPU per announce goes: ``tracker_load.py`` against a tracker carrying a probe, and the
probe's figures over the last measured window, per request.

The tracker runs a copy of ``--src`` with ``tracker_breakdown_probe.py`` beside it as its
``sitecustomize`` (see that module: thread CPU time of each part of an announce's path, the collector's
passes, each thread's CPU). Everything after ``--`` goes to ``tracker_load.py``; run one rate, and the
table covers the ``--window`` seconds before the load stopped (the measured window, less its last second).

Printed: requests answered in the window, the process's CPU per request and each thread's (the event loop's
thread, SQLite's or the database driver's, the probe's own), then each timed part per request, nested as
they call each other: a part's time includes the parts below it. The probe's wrappers cost about a
microsecond a call, so the total is a little above an unprobed run's.

    python3 benchmarks/tracker_breakdown.py -- --rates 1000 --prime-rate 1000 --warmup 3 --duration 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NESTING = [
    ("lane: data_received (parse, take, write)", 0),
    ("lane: PeerAnswers.announce", 0),
    ("lane: decode and check the body", 1),
    ("lane: write", 0),
    ("aiohttp: data_received (parse)", 0),
    ("aiohttp: _handle_request", 0),
    ("aiohttp: Application._handle (route, middlewares)", 1),
    ("cluster: owner (the middleware's and the decision's)", 2),
    ("ownership.owner", 3),
    ("announce handler", 2),
    ("read_body", 3),
    ("decode and check the body", 3),
    ("TrackerService.announce", 3),
    ("cluster: last_move", 4),
    ("store.load", 4),
    ("decide_announce", 4),
    ("decide: asker's view", 5),
    ("decide: take hash reports", 5),
    ("decide: leases", 5),
    ("decide: lease holders", 6),
    ("decide: hand-out", 5),
    ("decide: addresses", 5),
    ("store.stage", 4),
    ("stage: apply to memory", 5),
    ("stage: swarm.apply", 6),
    ("crossings", 4),
    ("struct_response (encode)", 3),
    ("aiohttp: finish_response (write)", 1),
    ("store: write_batch (the writer's batches)", 0),
    ("gc", 0),
    ("gc: generation 0", 1),
    ("gc: generation 1", 1),
    ("gc: generation 2", 1),
]
ANSWERED = ("aiohttp: _handle_request", "lane: PeerAnswers.announce")


def analyse(path: Path, window: float) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]

    def answered(row: dict) -> int:
        """Requests answered by aiohttp's handler or the peers' lane (whose announces aiohttp never sees)."""
        return sum(row["calls"].get(key, 0) for key in ANSWERED)

    grew = [i for i in range(1, len(rows)) if answered(rows[i]) > answered(rows[i - 1])]
    if not grew:
        raise SystemExit("the tracker answered no requests")
    last = max(grew) - 1  # the load's last second is partial
    first = max((i for i in range(len(rows)) if rows[i]["t"] <= rows[last]["t"] - window), default=0)
    a, b = rows[first], rows[last]
    n = answered(b) - answered(a)
    span = b["t"] - a["t"]
    cpu = b["process"] - a["process"]
    print(f"window {span:.1f} s: {n} requests ({n / span:.0f}/s)")
    print(f"process CPU {cpu / n * 1e3:.3f} ms per request ({cpu / span * 100:.0f}% of a core)")
    for name, total in b["threads"].items():
        spent = total - a["threads"].get(name, 0.0)
        if spent >= 0.01:
            print(f"  thread {name}: {spent / n * 1e3:.3f} ms per request")
    print("timed parts, ms per request (calls per request; µs a call):")
    for name, depth in NESTING:
        spent = b["seconds"].get(name, 0.0) - a["seconds"].get(name, 0.0)
        count = b["calls"].get(name, 0) - a["calls"].get(name, 0)
        if count:
            print(f"  {'  ' * depth}{name}: {spent / n * 1e3:.4f} ({count / n:.2f}; {spent / count * 1e6:.1f} µs)")


def main() -> int:
    argv = sys.argv[1:]
    load_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=HERE.parent / "src", help="the src/ the tracker runs")
    p.add_argument("--window", type=float, default=14.0, help="seconds before the load stopped (default 14)")
    args = p.parse_args(own)
    with tempfile.TemporaryDirectory(prefix="tracker-breakdown-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(args.src, src, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(HERE / "tracker_breakdown_probe.py", src / "sitecustomize.py")
        out = Path(tmp) / "out"
        out.mkdir()
        env = {**os.environ, "SHOAL_BREAKDOWN_OUT": str(out)}
        command = [sys.executable, str(HERE / "tracker_load.py"), "--src", str(src), *load_args]
        code = subprocess.call(command, env=env)
        probes = sorted(out.glob("probe-*.jsonl"))
        if not probes:
            raise SystemExit("no probe output: did the tracker start?")
        analyse(probes[-1], args.window)
        return code


if __name__ == "__main__":
    sys.exit(main())
