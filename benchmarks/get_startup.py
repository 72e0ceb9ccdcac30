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

    PYTHONPATH=src python3 benchmarks/get_startup.py --runs 15
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shoal.testing.cpu import process_cpu_seconds
from shoal.testing.processes import compile_bytecode, shoal_argv, start_daemon, start_tracker

MODES = ("process", "daemon")


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
            watch.cpu = [process_cpu_seconds(pid) for pid in watch.pids]
            watch.at = time.monotonic()
            watch.first.set()
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def one_run(origin: Origin, argv: list[str], daemon_pid: int | None) -> tuple[float, float, float]:
    """CPU of the get, CPU of the daemon (0 without one) and wall time, from launch to the first request."""
    daemon_before = process_cpu_seconds(daemon_pid) if daemon_pid else 0.0
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU of shoal get before its first origin request")
    parser.add_argument("--runs", type=int, default=15, help="gets per mode (default 15)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"from {','.join(MODES)} (default both)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if args.runs < 1 or not modes or any(m not in MODES for m in modes):
        parser.error(f"--runs must be positive and --modes from {','.join(MODES)}")
    compile_bytecode()
    origin = Origin(("127.0.0.1", 0), FirstRequest)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{origin.server_address[1]}/file"
    with tempfile.TemporaryDirectory(prefix="get-startup-") as tmp:
        work = Path(tmp)
        tracker = start_tracker(f"sqlite:///{work / 'tracker.db'}", interval=1.0, peer_ttl=5.0)
        daemon = None
        if "daemon" in modes:
            daemon = start_daemon(work / "cache", work / "run" / "daemon.sock", tracker=tracker.url)
        try:
            print(f"{'mode':<8} {'get CPU s (median, min)':>24} {'daemon CPU s':>13} {'wall s to request':>18}")
            for mode in modes:
                gets, daemons, walls = [], [], []
                for i in range(args.runs):
                    url, dest = f"{base}?{mode}={i}", str(work / f"{mode}-{i}")
                    if mode == "process":
                        argv, pid = shoal_argv("get", url, "-o", dest, "--tracker", tracker.url, "--no-daemon"), None
                    else:
                        assert daemon is not None
                        argv = shoal_argv("get", url, "-o", dest, "--socket", str(work / "run" / "daemon.sock"))
                        pid = daemon.proc.pid
                    get_cpu, daemon_cpu, wall = one_run(origin, argv, pid)
                    gets.append(get_cpu)
                    daemons.append(daemon_cpu)
                    walls.append(wall)
                print(
                    f"{mode:<8} {statistics.median(gets):>15.3f}, {min(gets):.3f} "
                    f"{statistics.median(daemons):>13.3f} {statistics.median(walls):>18.3f}"
                )
        finally:
            if daemon is not None:
                daemon.stop()
            tracker.stop()
            origin.shutdown()
    print(f"{args.runs} gets per mode; python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
