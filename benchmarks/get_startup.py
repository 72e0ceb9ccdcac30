#!/usr/bin/env python3
"""Start-up of ``shoal get``: CPU seconds a get spends before its first origin request, on loopback.

A fleet's peers start together on hosts whose cores are busy with each other's start-up (the racks lab runs
8-9 of them on 2 cores), so every CPU-second a get spends before its first request delays the origin's first
byte. This measures it per get, alone on the machine:

- ``process``: ``shoal get URL --tracker T`` downloading in its own process (``--no-daemon``): the CPU of the
  get process at the moment the origin accepts its first request.
- ``daemon``: ``shoal get URL --socket S`` handed to a ``shoal daemon`` started beforehand: the CPU of the
  get process (interpreter, imports, the hand-off) at the moment the daemon's first origin request arrives,
  and the daemon's own CPU spent from the get's launch until then.

The origin is a small HTTP server in this process that notes the CPU of the processes it watches when a
request arrives, then answers 503 (the figures stop there; the get is killed). Each get fetches a URL of its
own, so no run joins or hits another's task. Every run also prints the wall time from launch to the first
request. Medians and minima over ``--runs``.

CPU is read from each live thread's ``/proc/PID/task/TID/schedstat`` (nanoseconds on a CPU), not from
``/proc/PID/stat``'s 10 ms ticks: one get's start-up is a few tens of ticks, and a change of 10 ms would be
one tick, lost in the medians. A thread that has ended by then is not counted (the threads a get starts,
its executors', live on).

    PYTHONPATH=src python3 benchmarks/get_startup.py --runs 15

To compare builds on a machine other work shares, where two sets of runs taken one after the other differ
by more than the builds do, ``--builds`` takes the ``src`` directories of several checkouts (``git archive``s)
and runs their gets in turn, get by get (the order reversed every other run), each build with a daemon of
its own, against one tracker and one origin:

    PYTHONPATH=src python3 benchmarks/get_startup.py --runs 40 --builds /tmp/main/src,/tmp/branch/src
"""

from __future__ import annotations

import argparse
import glob
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shoal.testing.processes import Service, shoal_argv, start_daemon, start_tracker

MODES = ("process", "daemon")


def cpu_seconds(pid: int) -> float:
    """Seconds on a CPU of the live threads of ``pid`` (the first field of each thread's schedstat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as stat:
                total += int(stat.read().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that ended as it was read
            continue
    return total / 1e9


@dataclass
class Watch:
    """What the origin notes at the first request of a run: the CPU of the watched processes, and when."""

    pids: list[int]
    first: threading.Event
    cpu: list[float] | None = None
    at: float | None = None


class Origin(http.server.ThreadingHTTPServer):
    watch: Watch | None = None


class FirstRequest(http.server.BaseHTTPRequestHandler):
    server: Origin

    def do_GET(self) -> None:
        self._note()

    def do_HEAD(self) -> None:
        self._note()

    def _note(self) -> None:
        watch = self.server.watch
        if watch is not None and not watch.first.is_set():
            watch.cpu = [cpu_seconds(pid) for pid in watch.pids]
            watch.at = time.monotonic()
            watch.first.set()
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def one_run(
    origin: Origin, argv: list[str], daemon_pid: int | None, env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """CPU of the get, CPU of the daemon (0 without one) and wall time, from launch to the first request."""
    daemon_before = cpu_seconds(daemon_pid) if daemon_pid else 0.0
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    watch = Watch([proc.pid] + ([daemon_pid] if daemon_pid else []), threading.Event())
    origin.watch = watch
    try:
        if not watch.first.wait(30):
            proc.kill()
            raise RuntimeError(f"no origin request within 30 s: {proc.communicate()[1].decode(errors='replace')}")
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert watch.cpu is not None and watch.at is not None
    daemon_cpu = watch.cpu[1] - daemon_before if daemon_pid else 0.0
    return watch.cpu[0], daemon_cpu, watch.at - started


def build_env(src: str | None) -> dict[str, str] | None:
    """The environment of a build's processes: its ``src`` first on PYTHONPATH (None: this environment)."""
    if src is None:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU of shoal get before its first origin request")
    parser.add_argument("--runs", type=int, default=15, help="gets per mode and build (default 15)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"from {','.join(MODES)} (default both)")
    parser.add_argument(
        "--builds", default="", help="src directories of the builds to compare get by get (default: this one)"
    )
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    builds: list[str | None] = [b for b in args.builds.split(",") if b] or [None]
    if args.runs < 1 or not modes or any(m not in MODES for m in modes):
        parser.error(f"--runs must be positive and --modes from {','.join(MODES)}")
    if any(b is not None and not (Path(b) / "shoal").is_dir() for b in builds):
        parser.error("--builds takes src directories, each holding the shoal package")
    for build in builds:  # each build's own bytecode, as an installed tool has (processes.compile_bytecode)
        code = "from shoal.testing.processes import compile_bytecode; compile_bytecode()"
        subprocess.run([sys.executable, "-c", code], env=build_env(build), check=True)
    origin = Origin(("127.0.0.1", 0), FirstRequest)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{origin.server_address[1]}/file"
    with tempfile.TemporaryDirectory(prefix="get-startup-") as tmp:
        work = Path(tmp)
        tracker = start_tracker(f"sqlite:///{work / 'tracker.db'}", interval=1.0, peer_ttl=5.0)
        daemons: dict[int, Service] = {}
        try:
            if "daemon" in modes:
                for k, build in enumerate(builds):
                    sock = work / f"run{k}" / "daemon.sock"
                    daemons[k] = start_daemon(work / f"cache{k}", sock, tracker=tracker.url, env=build_env(build))
            # (mode, build) -> the get's CPU, the daemon's CPU and the wall time of each run
            figures: dict[tuple[str, int], tuple[list[float], list[float], list[float]]] = {
                (mode, k): ([], [], []) for mode in modes for k in range(len(builds))
            }
            for mode in modes:
                for i in range(args.runs):
                    for k in range(len(builds)) if i % 2 == 0 else reversed(range(len(builds))):
                        url, dest = f"{base}?{mode}={i}&build={k}", str(work / f"{mode}-{i}-{k}")
                        if mode == "process":
                            argv = shoal_argv("get", url, "-o", dest, "--tracker", tracker.url, "--no-daemon")
                            pid = None
                        else:
                            argv = shoal_argv("get", url, "-o", dest, "--socket", str(work / f"run{k}" / "daemon.sock"))
                            pid = daemons[k].proc.pid
                        get_cpu, daemon_cpu, wall = one_run(origin, argv, pid, build_env(builds[k]))
                        figures[mode, k][0].append(get_cpu)
                        figures[mode, k][1].append(daemon_cpu)
                        figures[mode, k][2].append(wall)
            print(f"{'mode':<8} {'get CPU s (median, min)':>24} {'daemon CPU s':>13} {'wall s to request':>18}  build")
            for (mode, k), (gets, daemon_cpus, walls) in figures.items():
                print(
                    f"{mode:<8} {statistics.median(gets):>14.4f}, {min(gets):.4f} "
                    f"{statistics.median(daemon_cpus):>13.4f} {statistics.median(walls):>18.3f}  {builds[k] or '-'}"
                )
        finally:
            for daemon in daemons.values():
                daemon.stop()
            tracker.stop()
            origin.shutdown()
    print(f"{args.runs} gets per mode and build; python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
