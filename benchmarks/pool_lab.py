#!/usr/bin/env python3
"""Pool lab: a push to a pool of daemons behind a capped origin link, and what member loss costs.

It builds swarm_lab's network (see benchmarks/swarm_lab.py: an origin whose uplink is shaped with tc tbf,
a tracker on its own link, N peer namespaces on one bridge) and runs in every peer namespace
``shoal daemon --tracker ... --pool lab --listen IP:7000`` with a fresh cache. Then, per scenario, with a
fresh tracker database and fresh caches:

* ``all``: ``shoal pool push lab URL``; the clock runs from the push until the job is complete (every
  member holds the verified file in its cache).
* ``kill``: the same push; two members are killed (SIGKILL) once each has 30% of the file. Printed: when
  the six survivors are done, and the origin bytes (the dead members' leases must pass to others without
  the origin sending the file twice).
* ``replicas``: ``push --replicas 6`` to the pool of 8; two of the six holders-to-be are killed at 30%.
  Printed: when six live members hold the file again (the tracker notices the dead members after its
  peer TTL, assigns the two idle members, and they fetch from the survivors).

Origin bytes are the origin link's TX counter (``ip -s -j link``) and the origin's own HTTP body count,
over the file size. The lower bound is ``size * 8 / origin_mbit``. Status is polled with curl from the
tracker namespace every 0.25 s; the times printed come from the tracker's own timestamps (the job's
``created``, each member's last report), not from the poll. A sampler in the origin namespace reads the
link's TX counter every 50 ms, so the notes also say when the origin link started and stopped sending,
counted from the push: what lies outside that span is start-up and tail, not link time.

Run it as root from the repository::

    python3 benchmarks/pool_lab.py                      # 8 members, 256 MiB, 200 Mbit/s, all scenarios
    python3 benchmarks/pool_lab.py --size 64M --scenarios all
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import FILE_NAME
from netlab import (
    ORIGIN_NS,
    ORIGIN_PORT,
    SHOAL,
    SHOAL_TRACKER_PORT,
    TRACKER_NS,
    Lab,
    human,
    log,
    parse_size,
    sh,
    wait_for_line,
)
from poolnet import POOL, PoolApi, member_argv
from shoal.testing.files import write_random_file

MEMBER_PORT = 7000
POLL = 0.25
PEER_TTL = 5


@dataclass
class Outcome:
    scenario: str
    seconds: float | None = None  # until the job was complete (or the survivors / replicas were)
    origin_tx: int = 0
    origin_http: int = 0
    member_seconds: dict[str, float] = field(default_factory=dict)
    killed: list[str] = field(default_factory=list)
    note: str = ""
    origin_span: tuple[float, float] | None = None
    """Seconds from the push until the origin link started (1 MiB out) and stopped (all but 64 KiB out)."""


_SAMPLER = """
import sys, time
while True:
    with open('/sys/class/net/eth0/statistics/tx_bytes') as f:
        print(time.time(), f.read().strip(), flush=True)
    time.sleep(0.05)
"""


class LinkSampler:
    """The origin link's TX byte counter every 50 ms, as (wall time, bytes), from one process in the
    origin namespace (a subprocess per sample would take CPU from the run it measures)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", ORIGIN_NS, sys.executable, "-c", _SAMPLER],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            stamp, count = line.split()
            self.samples.append((float(stamp), int(count)))

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._reader.join(2)

    def span(self, since: float) -> tuple[float, float] | None:
        """(start, end) of the sending after wall time ``since``, in seconds from it."""
        samples = [(t, n) for t, n in self.samples if t >= since]
        if len(samples) < 2:
            return None
        base, final = samples[0][1], samples[-1][1]
        start = next((t for t, n in samples if n - base > 1 << 20), None)
        end = next((t for t, n in samples if n >= final - (64 << 10)), None)
        if start is None or end is None:
            return None
        return start - since, end - since


class PoolLab:
    def __init__(self, lab: Lab, workdir: Path, size: int, timeout: float) -> None:
        self.lab = lab
        self.workdir = workdir
        self.size = size
        self.timeout = timeout
        self.tracker_url = f"http://{lab.tracker.ip}:{SHOAL_TRACKER_PORT}"
        self.members: dict[str, subprocess.Popen[bytes]] = {}
        self.pool = PoolApi(lab, self.tracker_url)

    def start(self, run_dir: Path) -> None:
        run_dir.mkdir()
        options = f"--host 0.0.0.0 --port {SHOAL_TRACKER_PORT} --db sqlite:///{run_dir / 'tracker.db'}"
        options += f" --interval 1 --peer-ttl {PEER_TTL}"
        tracker = self.lab.spawn(TRACKER_NS, [SHOAL, "tracker", *options.split()], run_dir / "tracker.log")
        wait_for_line(tracker, run_dir / "tracker.log", "tracker listening on")
        self.pool.create()
        self.members = {}
        for node in self.lab.peers:
            home = run_dir / node.ns
            home.mkdir(mode=0o700)  # the daemon's socket directory must be its user's alone
            extra = ["--capacity", "4G", "--listen", f"{node.ip}:{MEMBER_PORT}", "--scrub-interval", "0"]
            argv = member_argv(home / "cache", home / "daemon.sock", self.tracker_url, node.ns, *extra)
            self.members[node.ns] = self.lab.spawn(node.ns, argv, home / "daemon.log")
        for node in self.lab.peers:
            wait_for_line(self.members[node.ns], run_dir / node.ns / "daemon.log", "daemon listening on", 60)
        self.pool.wait_for_members(len(self.lab.peers))

    def stop(self) -> None:
        self.lab.stop(list(self.lab.procs))
        self.lab.origin_proc = None

    def run(self, scenario: str, run_dir: Path, url: str) -> Outcome:
        self.lab.start_origin(self.workdir / "origin", run_dir.with_suffix(".origin.log"))
        self.start(run_dir)
        outcome = Outcome(scenario)
        tx0, http0 = self.lab.origin_tx_bytes(), self.lab.origin_http_bytes()
        sampler = LinkSampler()
        replicas = 6 if scenario == "replicas" else None
        to_kill = 2 if scenario in ("kill", "replicas") else 0
        started = time.monotonic()
        job = self.pool.call("POST", f"/{POOL}/jobs", {"url": url, "replicas": replicas})
        job_id = job["job"]
        created = job["created"]
        assert isinstance(created, float)
        while time.monotonic() - started < self.timeout:
            status = self.pool.call("GET", f"/{POOL}/jobs/{job_id}")
            now = time.monotonic() - started
            members = status["members"]
            assert isinstance(members, list)
            for m in members:
                if m["status"] == "done" and m["name"] not in outcome.member_seconds:
                    # A done member reports no more: its last report is when it was done.
                    outcome.member_seconds[m["name"]] = m["updated"] - created
            if len(outcome.killed) < to_kill:
                for m in members:
                    if len(outcome.killed) < to_kill and m["status"] == "running" and m["done"] >= 0.3 * self.size:
                        proc = self.members[m["name"]]
                        os.killpg(proc.pid, signal.SIGKILL)
                        outcome.killed.append(m["name"])
                        log(f"{scenario}: killed {m['name']} at {m['done'] / self.size:.0%} ({now:.1f} s)")
            replica_count = status["replicas"]
            assert isinstance(replica_count, dict)
            if status["status"] == "complete" and len(outcome.killed) == to_kill:
                live_done = [m for m in members if m["status"] == "done" and m["live"]]
                if replicas is None or (replica_count["current"] >= replicas and len(live_done) >= replicas):
                    outcome.seconds = max(outcome.member_seconds[m["name"]] for m in live_done)
                    break
            if status["status"] in ("failed", "cancelled"):
                outcome.note = f"job {status['status']}: {status['error']}"
                break
            time.sleep(POLL)
        outcome.origin_tx = self.lab.origin_tx_bytes() - tx0
        outcome.origin_http = self.lab.origin_http_bytes() - http0
        time.sleep(0.2)
        sampler.stop()
        outcome.origin_span = sampler.span(created)
        self.stop()
        return outcome


def report(outcomes: list[Outcome], size: int, mbit: float, peers: int) -> str:
    bound = size * 8 / (mbit * 1e6)
    lines = [
        f"pool lab: {peers} members, {human(size)}, origin uplink {mbit:g} Mbit/s; lower bound {bound:.1f} s",
        f"{'scenario':<10} {'seconds':>8} {'x bound':>8} {'origin tx/size':>15} {'origin http/size':>17}  notes",
    ]
    for o in outcomes:
        seconds = f"{o.seconds:.1f}" if o.seconds is not None else "-"
        ratio = f"{o.seconds / bound:.2f}" if o.seconds is not None else "-"
        notes = o.note
        if o.killed:
            notes += f"killed {', '.join(o.killed)} at 30%; "
        if o.scenario == "replicas" and o.seconds is not None:
            notes += "seconds = until 6 live members held the file again; "
        elif o.scenario == "kill":
            notes += "seconds = until the 6 survivors were done; "
        first = min(o.member_seconds.values(), default=None)
        if first is not None:
            notes += f"first member done at {first:.1f} s; "
        if o.origin_span is not None:
            notes += f"origin link sending from {o.origin_span[0]:.1f} s to {o.origin_span[1]:.1f} s"
        origin = f"{o.origin_tx / size:>15.3f} {o.origin_http / size:>17.3f}"
        lines.append(f"{o.scenario:<10} {seconds:>8} {ratio:>8} {origin}  {notes}")
    lines.append("targets (all): at most 1.15x the bound, origin bytes at most 1.02x the file size")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--size", type=parse_size, default=256 << 20)
    parser.add_argument("--origin-mbit", type=float, default=200.0)
    parser.add_argument("--scenarios", default="all,kill,replicas")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory (every process's log)")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    if os.geteuid() != 0:
        print("pool_lab.py needs root (network namespaces)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pool-lab-", dir=args.workdir))
    (workdir / "origin").mkdir()
    write_random_file(workdir / "origin" / FILE_NAME, args.size)
    outcomes = []
    with Lab(args.peers, "10.77.0", args.origin_mbit) as lab:
        bench = PoolLab(lab, workdir, args.size, args.timeout)
        url = f"http://{lab.origin.ip}:{ORIGIN_PORT}/{FILE_NAME}"
        for n, scenario in enumerate(scenarios):
            log(f"scenario {scenario}")
            outcomes.append(bench.run(scenario, workdir / f"run{n}-{scenario}", url))
            log(report(outcomes[-1:], args.size, args.origin_mbit, args.peers))
    print(report(outcomes, args.size, args.origin_mbit, args.peers))
    if args.keep:
        log(f"logs kept in {workdir}")
    else:
        sh("rm", "-rf", str(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
