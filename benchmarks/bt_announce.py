#!/usr/bin/env python3
"""BitTorrent announces per second on ONE core: Shoal's tracker (``GET /announce``) against opentracker.

Both trackers run in the same invocation, one after the other, under the same load:

* The tracker under test is pinned to CPU 0 (``taskset -c 0``): ``shoal tracker`` on a fresh SQLite
  database, and Debian's ``opentracker`` (installed with apt-get if missing). Debian builds opentracker
  with a whitelist and no way to turn it off, so the script writes a config and a whitelist of the
  benchmark's info-hashes into a temporary directory (opentracker chroots into it: paths in the config are
  relative to it) and waits until a whitelisted announce succeeds, since it loads the list in a thread.
* The load generator is ``wrk`` (installed with apt-get if missing), pinned to CPU 1, one thread,
  ``--connections`` concurrent connections: the cheapest generator at hand (C, epoll), the same for both
  trackers; against opentracker it still fills its core, which the report shows. A Lua script prepares
  ``--hashes`` x ``--ports`` distinct announces once and sends them in turn: ``--hashes`` info_hashes
  (20 bytes, all percent-encoded), and per hash ``--ports`` peers (distinct ports, peer_ids derived from
  them) of which every other one is a seed, ``numwant=50&compact=1``. Swarms therefore fill up to
  ``--ports`` peers and every reply carries up to 50 compact peers, like a busy fleet's tracker.
* Every announce opens a new connection (``Connection: close``), as BitTorrent clients announce and as
  opentracker insists (it closes the connection after every reply whatever the client asks, which wrk
  counts as read errors: the report shows them apart, as ``closed``). ``--keep-alive`` lets Shoal's
  tracker reuse connections; opentracker's figure does not change.
* Each tracker gets a ``--warmup`` run (which also fills the swarms), then ``--seconds`` measured, repeated
  ``--repeat`` times alternating between the trackers.

Printed per tracker: requests per second (median of the repetitions), the tracker's CPU seconds during the
measured runs and requests per tracker CPU-second (a figure that holds even if a tracker was not kept
busy), the load generator's CPU use (near 100% means the client, not the tracker, set the pace: the
figure is then a lower bound), the CPU seconds the rest of the machine used meanwhile (more than a little:
the run was shared and is suspect), wrk's error counts, and a check that a sample announce decodes with
peers and no failure reason. Last: Shoal's figures over opentracker's.

Run it (as root for apt-get; two CPUs needed)::

    python3 benchmarks/bt_announce.py
    python3 benchmarks/bt_announce.py --seconds 20 --repeat 3 --keep-alive
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_from_bytes

from fastbencode import bdecode

from shoal.testing.cpu import MachineCpu, process_cpu_seconds
from shoal.testing.processes import shoal_argv, start_service
from shoal.testing.sockets import listening_ports

HASH_PREFIX = b"shoal-bt-bench\x00\x00"  # 16 bytes; the last 4 of each info_hash count 0, 1, 2, ...
TRACKER_CPU, CLIENT_CPU = 0, 1

LUA = r"""
-- Written by benchmarks/bt_announce.py: hashes x ports distinct announces, prepared once, sent in turn.
local hashes, ports = {hashes}, {ports}
local prefix = "{prefix}"
local headers = {{}}
if not {keep_alive} then headers["Connection"] = "close" end
local requests = {{}}
local total = hashes * ports
local counter = 0

local function byte(n) return string.format("%%%02X", n % 256) end

function init(args)
  for k = 0, total - 1 do
    local i, slot = k % hashes, math.floor(k / hashes)
    local tail = byte(math.floor(i / 16777216)) .. byte(math.floor(i / 65536)) .. byte(math.floor(i / 256)) .. byte(i)
    local path = string.format(
      "/announce?info_hash=%s%s&peer_id=-BN0001-%06d%06d&port=%d&uploaded=0&downloaded=0&left=%d&numwant=50&compact=1",
      prefix, tail, i, slot, 1024 + slot, (slot % 2) * 1000)
    requests[k] = wrk.format("GET", path, headers)
  end
end

function request()
  local r = requests[counter]
  counter = (counter + 1) % total
  return r
end
"""


def log(message: str) -> None:
    print(f"[bt_announce {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def info_hash(i: int) -> bytes:
    return HASH_PREFIX + i.to_bytes(4, "big")


def ensure_installed(command: str, package: str) -> str:
    path = shutil.which(command)
    if path is None:
        log(f"{command} is missing: apt-get install -y {package}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
        path = shutil.which(command)
    if path is None:
        sys.exit(f"cannot find {command} after installing {package}")
    return path


def sample_announce(base: str, hashes: int) -> dict[bytes, object]:
    """One announce like the load's, from a leecher on a port the load does not use."""
    query = f"info_hash={quote_from_bytes(info_hash(hashes - 1), safe='')}&peer_id=-BN0001-sample000000"
    query += "&port=1023&uploaded=0&downloaded=0&left=1000&numwant=50&compact=1"
    with urllib.request.urlopen(f"{base}/announce?{query}", timeout=5) as response:
        reply = bdecode(response.read())
    assert isinstance(reply, dict)
    return reply


def start_opentracker(workdir: Path, hashes: int) -> tuple[subprocess.Popen[bytes], str]:
    binary = ensure_installed("opentracker", "opentracker")
    root = workdir / "opentracker"
    root.mkdir()
    (root / "whitelist").write_text("".join(info_hash(i).hex() + "\n" for i in range(hashes)))
    # opentracker chroots into tracker.rootdir and drops to nobody: the whitelist path is inside the root.
    # Port 0: the kernel picks a free port, read back from the kernel's table of the process's sockets
    # (opentracker does not print it), so nothing else can take it between a probe and the bind.
    (root / "opentracker.conf").write_text(
        f"listen.tcp 127.0.0.1:0\naccess.whitelist /whitelist\ntracker.rootdir {root}\n"
    )
    root.chmod(0o755)
    out = open(workdir / "opentracker.log", "wb")
    proc = subprocess.Popen(
        ["taskset", "-c", str(TRACKER_CPU), binary, "-f", str(root / "opentracker.conf")],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            ports = listening_ports(proc.pid)  # taskset execs opentracker: the same process
            if ports:
                base = f"http://127.0.0.1:{min(ports)}"
                if b"failure reason" not in sample_announce(base, hashes):
                    return proc, base
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log_text = (workdir / "opentracker.log").read_text(errors="replace")
            raise RuntimeError(f"opentracker did not serve the whitelist within 20 s:\n{log_text}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Run:
    rps: float
    tracker_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    """Everything else on the machine during the run."""
    seconds: float
    errors: int
    """wrk's connect, write and timeout errors and non-2xx replies: 0 in a sound run."""
    closed: int
    """wrk's read errors: connections the server closed after a reply (opentracker does, always)."""


@dataclass
class Result:
    name: str
    runs: list[Run] = field(default_factory=list)
    sample: str = ""

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def per_cpu_second(self) -> float:
        cpu = sum(r.tracker_cpu_s for r in self.runs)
        return sum(r.rps * r.seconds for r in self.runs) / cpu if cpu else 0.0

    @property
    def client_load(self) -> float:
        return sum(r.client_cpu_s for r in self.runs) / sum(r.seconds for r in self.runs)


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(base: str, script: Path, seconds: float, connections: int, tracker_pid: int) -> Run:
    """One wrk run on CLIENT_CPU; the tracker's and the client's CPU seconds during it."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    tracker0, machine0 = process_cpu_seconds(tracker_pid), MachineCpu.sample()
    argv = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script)]
    done = subprocess.run([*argv, f"{base}/announce"], capture_output=True, text=True, timeout=seconds + 60)
    tracker_cpu, machine = process_cpu_seconds(tracker_pid) - tracker0, (MachineCpu.sample() - machine0).tasks
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    match = _RPS.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    socket_errors = _SOCKET_ERRORS.search(done.stdout)
    connect, read, write, timeout = map(int, socket_errors.groups()) if socket_errors else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(done.stdout)
    errors = connect + write + timeout + (int(non_2xx[1]) if non_2xx else 0)
    other = max(0.0, machine - tracker_cpu - client_cpu)
    return Run(float(match[1]), tracker_cpu, client_cpu, other, seconds, errors, read)


def describe_sample(reply: dict[bytes, object]) -> str:
    if b"failure reason" in reply:
        return f"FAILURE {reply[b'failure reason']!r}"
    peers = reply.get(b"peers", b"")
    count = len(peers) // 6 if isinstance(peers, bytes) else len(peers) if isinstance(peers, list) else 0
    return f"ok, {count} peers, complete {reply.get(b'complete')}, incomplete {reply.get(b'incomplete')}"


def run(args: argparse.Namespace, workdir: Path) -> list[Result]:
    ensure_installed("wrk", "wrk")
    script = workdir / "announce.lua"
    prefix = quote_from_bytes(HASH_PREFIX, safe="")
    script.write_text(
        LUA.format(hashes=args.hashes, ports=args.ports, prefix=prefix, keep_alive=str(args.keep_alive).lower())
    )

    shoal = start_service(
        [
            "taskset",
            "-c",
            str(TRACKER_CPU),
            *shoal_argv("tracker", "--host", "127.0.0.1", "--port", "0", "--db", f"sqlite:///{workdir / 'shoal.db'}"),
        ]
    )
    opentracker, opentracker_base = start_opentracker(workdir, args.hashes)
    trackers: list[tuple[Result, str, int, Callable[[], None]]] = [
        (Result("shoal"), shoal.url, shoal.proc.pid, shoal.stop),
        (Result("opentracker"), opentracker_base, opentracker.pid, lambda: stop(opentracker)),
    ]
    try:
        for result, base, pid, _ in trackers:
            log(f"{result.name}: warm-up {args.warmup:g} s at {base}")
            wrk(base, script, args.warmup, args.connections, pid)
        for repetition in range(1, args.repeat + 1):
            for result, base, pid, _ in trackers:
                measured = wrk(base, script, args.seconds, args.connections, pid)
                log(
                    f"run {repetition}: {result.name} {measured.rps:,.0f} req/s, "
                    f"tracker CPU {measured.tracker_cpu_s:.1f} s, client CPU {measured.client_cpu_s:.1f} s, "
                    f"other CPU {measured.other_cpu_s:.1f} s, errors {measured.errors}, closed {measured.closed}"
                )
                result.runs.append(measured)
        for result, base, _, _ in trackers:
            result.sample = describe_sample(sample_announce(base, args.hashes))
    finally:
        for _, _, _, halt in trackers:
            halt()
    return [result for result, *_ in trackers]


def format_report(results: list[Result], args: argparse.Namespace) -> str:
    shoal, opentracker = results
    connection = f"{args.connections} keep-alive connections" if args.keep_alive else "a new connection per request"
    lines = [
        f"GET /announce, tracker pinned to CPU {TRACKER_CPU}, wrk (1 thread) on CPU {CLIENT_CPU}, {connection}; "
        f"{args.hashes} swarms x {args.ports} peers, numwant=50 compact=1; {args.repeat} x {args.seconds:g} s "
        f"after {args.warmup:g} s warm-up",
        "",
        f"{'tracker':<12} {'req/s':>9} {'req/CPU-s':>10} {'client CPU':>10} {'other CPU s':>11} {'errors':>7}"
        f" {'closed':>9}  sample announce",
    ]
    for r in results:
        errors, closed = sum(run.errors for run in r.runs), sum(run.closed for run in r.runs)
        other = sum(run.other_cpu_s for run in r.runs)
        lines.append(
            f"{r.name:<12} {r.rps:>9,.0f} {r.per_cpu_second:>10,.0f} {r.client_load:>10.0%} {other:>11.1f} {errors:>7}"
            f" {closed:>9,}"
            f"  {r.sample}"
        )
    lines += [
        "",
        f"shoal / opentracker: {shoal.rps / opentracker.rps:.3f} of the requests per second, "
        f"{shoal.per_cpu_second / opentracker.per_cpu_second:.3f} of the requests per CPU second",
        "req/s: median over the runs; req/CPU-s: requests over the tracker's CPU seconds in the measured runs;",
        "client CPU: wrk's share of its core (near 100%: the client set the pace, the figure is a lower bound);",
        "other CPU s: what the rest of the machine ran during the measured runs (more than a little: suspect);",
        "errors: wrk's connect, write and timeout errors and non-2xx replies; closed: connections the tracker",
        "closed after a reply, counted by wrk as read errors (opentracker closes every one).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Announces per second on one core: Shoal's tracker vs opentracker.")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=5.0, help="length of the warm-up run per tracker (default 5)")
    parser.add_argument("--repeat", type=int, default=2, help="measured runs per tracker, alternating (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--hashes", type=int, default=200, help="swarms (info_hashes) announced to (default 200)")
    parser.add_argument("--ports", type=int, default=50, help="peers per swarm (default 50)")
    parser.add_argument("--keep-alive", action="store_true", help="reuse connections (opentracker closes them)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, Lua script)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup <= 0 or args.repeat < 1 or not 0 < args.hashes < 10**6 or args.ports < 1:
        parser.error("--seconds, --warmup, --repeat, --hashes and --ports must be positive (--hashes < 10**6)")
    if not {TRACKER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        sys.exit(f"needs CPUs {TRACKER_CPU} and {CLIENT_CPU}")
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bt-announce-"))
    try:
        results = run(args, workdir)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        log(f"stopped: {exc}")
        log(f"kept {workdir}")
        return 1
    if args.keep:
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
