#!/usr/bin/env python3
"""Swarm lab: how fast N machines get one file through a capped origin link, and how much of it the origin sends.

What it builds (root required; everything lives in network namespaces it creates and deletes again)::

        swl-origin (10.77.0.1)        swl-tracker (10.77.0.2)     swl-p1 .. swl-pN (10.77.0.11 ..)
        eth0: tbf --origin-mbit       eth0: uncapped              eth0: uncapped
              |                             |                          |
        ------+-------- br0 in namespace swl-br (a bridge, no address) -+------

* ``swl-origin`` runs ``python -m shoal.testing.origin DIR --host 0.0.0.0 --port 8000`` serving a random
  file of ``--size`` bytes. Its ``eth0`` egress (toward the bridge) is shaped by ``tc qdisc ... tbf`` to
  ``--origin-mbit`` Mbit/s; everything the origin sends crosses that link and nothing else does, so the
  link's TX byte counter (``ip -s -j link``) is the origin's cost. The origin's own ``GET /_stats`` payload
  counter is read as well (HTTP body bytes, without TCP/IP headers).
* ``swl-tracker`` is on its own uncapped link, so tracker traffic never competes with the origin's. It runs
  ``shoal tracker`` (fresh SQLite database per run) or, for aria2, ``benchmarks/bt_tracker.py`` (a minimal
  BEP 3/23 tracker, independent of the code under test).
* Each ``swl-pK`` is one peer. Every namespace gets ``/etc/netns/NAME/resolv.conf`` (``nameserver
  127.0.0.1``) so that nothing waits on DNS.

Methods (all N peers start at once; the clock starts before the first process is launched, so process
start-up is included, and stops when the last peer is done):

* ``shoal``: ``shoal get URL -o FILE --tracker http://10.77.0.2:6969 --upload-time T`` in every peer, T long
  enough that every peer serves until all are done. A peer is done when its output file exists with the
  full size (shoal renames into place only when the file is complete and verified). Run without ``-q`` so
  that each peer's closing summary (bytes from origin and from peers) lands in its log.
* ``curl``: ``curl -sS -o FILE URL`` in every peer, straight from the origin; done when curl exits 0.
* ``aria2``: a v1 .torrent (SHA-1 pieces, ``url-list`` = the origin URL as a BEP 19 web seed, ``announce``
  = the lab's BitTorrent tracker), then ``aria2c`` in every peer with DHT and LPD off, PEX on, seeding on
  for longer than the run; done when its ``--on-bt-download-complete`` hook has touched ``FILE.done``
  (called when the download is complete, before seeding).
* ``single`` (not in the default list): ONE peer with curl; the practical lower bound of the capped link
  (TCP/IP headers make it a few percent slower than the nominal ``size / rate``).

After every run all peer processes (and the run's tracker) are stopped, origin counters are read, and every
peer's file is compared with the origin's by SHA-256. Figures printed per run: time until the last peer was
done, that time over the nominal lower bound ``size * 8 / (origin_mbit * 1e6)``, first and median peer
times, when the origin link started and stopped sending (so start-up and the swarm's tail show), origin
bytes over the file size (link TX counter and HTTP payload counter), files verified, the largest peak RSS
of a peer still running at the end (shoal and aria2; curl exits), and the CPU seconds used while the peers
ran by the peers, the tracker, the origin and everything else on the machine (a check that nothing else
competed for the two cores). With ``--repeat`` a median per method follows; then the DESIGN.md reference.

Run it (as root, from the repository; the defaults are the DESIGN.md lab)::

    python3 benchmarks/swarm_lab.py                                  # 8 peers, 256 MiB, 200 Mbit/s
    python3 benchmarks/swarm_lab.py --peers 4 --size 32M --methods shoal,aria2
    python3 benchmarks/swarm_lab.py --methods single,shoal,curl,aria2 --repeat 2 --json > lab.json

Files live in a fresh directory under ``--workdir`` (default /tmp, a regular disk directory; not a tmpfs).
It is removed at the end unless ``--keep`` is given or a run failed, in which case the logs (one per peer
and service; ``-v``/``-vv`` are passed on to shoal) stay and their path is printed. Namespaces named
``swl-*`` left by a killed earlier run are removed before the lab is built; none are left after it ends,
also on an error or Ctrl-C. To measure a pinned commit while src/ changes, run with ``PYTHONPATH=DIR/src``
where DIR holds ``git archive COMMIT src``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastbencode import bencode

from shoal.core import units
from shoal.core.errors import ShoalError
from shoal.testing.cpu import MachineCpu, own_cpu_seconds, process_cpu_seconds
from shoal.testing.files import sha256_file, write_random_file
from shoal.testing.processes import compile_bytecode

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SHOAL = str(Path(PYTHON).with_name("shoal")) if Path(PYTHON).with_name("shoal").exists() else "shoal"
PREFIX = "swl-"
BRIDGE_NS = PREFIX + "br"
ORIGIN_NS = PREFIX + "origin"
TRACKER_NS = PREFIX + "tracker"
ORIGIN_PORT = 8000
SHOAL_TRACKER_PORT = 6969
BT_TRACKER_PORT = 6970
FILE_NAME = "payload.bin"
POLL_SECONDS = 0.02
# The share of the capped link's bytes that is TCP payload: a full segment carries 1448 bytes (1500-byte MTU,
# TCP timestamps) in a 1514-byte Ethernet frame, and tbf charges whole frames. The veth's TX counter sees one
# header per 64 KiB GSO packet, so it counts about the payload. One curl alone takes 11.26 s for 256 MiB at
# 200 Mbit/s, 1.048x size/rate: the same ratio.
WIRE_PAYLOAD = 1448 / 1514
ALL_METHODS = ("single", "shoal", "curl", "aria2")

# DESIGN.md, "Reference figures from this kind of machine" (origin capped at 200 Mbit/s, 8 peers, 256 MiB).
REFERENCE = {
    "setup": {"peers": 8, "size": 256 << 20, "origin_mbit": 200},
    "rows": [
        {"how": "lower bound: one file over the capped link", "seconds": "10.7", "origin_ratio": "1.00"},
        {"how": "each peer straight from the origin (curl)", "seconds": "89.9", "origin_ratio": "8.02"},
        {"how": "aria2c BitTorrent swarm, origin as web seed", "seconds": "17.9-18.7", "origin_ratio": "1.59-1.66"},
    ],
    "shoal_target": {"time_over_bound": 1.15, "origin_ratio": 1.02},
}


def log(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """argparse type for sizes like ``256M``: shoal's own parser (1024-based units)."""
    try:
        return units.parse_size(text)
    except ShoalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def sh(*argv: str, check: bool = True) -> str:
    """Run a short command; its stdout, or a RuntimeError with its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# -- the lab: namespaces, links and the processes inside them ------------------------------------------


@dataclass
class Node:
    ns: str
    ip: str
    bridge_port: str  # the veth end inside the bridge namespace


class Lab:
    """Namespaces on one bridge and the processes started in them. ``with Lab(...)`` tears all of it down."""

    def __init__(self, peers: int, subnet: str, origin_mbit: float) -> None:
        self.origin = Node(ORIGIN_NS, f"{subnet}.1", "v-origin")
        self.tracker = Node(TRACKER_NS, f"{subnet}.2", "v-tracker")
        self.peers = [Node(f"{PREFIX}p{i + 1}", f"{subnet}.{11 + i}", f"v-p{i + 1}") for i in range(peers)]
        self.origin_mbit = origin_mbit
        self.procs: list[subprocess.Popen[bytes]] = []
        self.origin_proc: subprocess.Popen[bytes] | None = None

    @property
    def namespaces(self) -> list[str]:
        return [BRIDGE_NS] + [n.ns for n in (self.origin, self.tracker, *self.peers)]

    def __enter__(self) -> Lab:
        remove_stale_namespaces()
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _build(self) -> None:
        for ns in self.namespaces:
            sh("ip", "netns", "add", ns)
            netns_etc = Path("/etc/netns") / ns
            netns_etc.mkdir(parents=True, exist_ok=True)
            (netns_etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
        for node in (self.origin, self.tracker, *self.peers):
            sh(*f"ip -n {node.ns} link add eth0 type veth peer name {node.bridge_port} netns {BRIDGE_NS}".split())
            sh("ip", "-n", BRIDGE_NS, "link", "set", node.bridge_port, "master", "br0")
            sh("ip", "-n", BRIDGE_NS, "link", "set", node.bridge_port, "up")
            sh("ip", "-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            sh("ip", "-n", node.ns, "link", "set", "eth0", "up")
        # The origin's uplink: a token bucket on eth0's egress. The bucket holds at least 256 KiB (and
        # 4 ms of traffic) so that 64 KiB GSO packets pass whole and the kernel timer granularity does not
        # cut the rate; the latency bound keeps the queue short.
        rate_bytes = self.origin_mbit * 1e6 / 8
        burst = max(256 * 1024, int(rate_bytes / 250))
        tbf = f"tc qdisc add dev eth0 root tbf rate {self.origin_mbit}mbit burst {burst} latency 50ms"
        sh("ip", "netns", "exec", ORIGIN_NS, *tbf.split())

    def start_origin(self, root: Path, log_path: Path) -> None:
        """Serve ``root`` from the origin namespace (shoal's test origin: aiohttp FileResponse)."""
        self.origin_proc = self.spawn(
            ORIGIN_NS,
            [PYTHON, "-m", "shoal.testing.origin", str(root), "--host", "0.0.0.0", "--port", str(ORIGIN_PORT)],
            log_path,
        )
        wait_for_line(self.origin_proc, log_path, "origin listening on")

    def spawn(self, ns: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in namespace ``ns`` (its own session), stdout and stderr into ``log_path``."""
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
        """SIGTERM each process (its own process group), then SIGKILL what is left after ``grace``."""
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ({' '.join(proc.args[4:6])}) ignored SIGTERM for {grace:g}s; SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for proc in procs:
            with contextlib.suppress(ValueError):
                self.procs.remove(proc)

    def teardown(self) -> None:
        """Kill every process started here, then delete the namespaces; never raises."""
        try:
            self.stop(list(self.procs), grace=3.0)
        except Exception as exc:
            log(f"teardown: stopping processes: {exc}")
        remove_namespaces(self.namespaces)

    def origin_tx_bytes(self) -> int:
        """Bytes sent on the origin's capped link (the veth's TX counter inside the origin namespace)."""
        info = json.loads(sh("ip", "-n", ORIGIN_NS, "-s", "-j", "link", "show", "dev", "eth0"))
        return int(info[0]["stats64"]["tx"]["bytes"])

    def origin_http_bytes(self) -> int:
        """The origin's own count of body bytes sent (GET /_stats), fetched from the tracker namespace."""
        url = f"http://{self.origin.ip}:{ORIGIN_PORT}/_stats"
        out = sh("ip", "netns", "exec", TRACKER_NS, "curl", "-sS", "--max-time", "5", url)
        return int(json.loads(out)["bytes_sent"])


def _namespace_pids(ns: str) -> list[int]:
    return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split()]


def remove_namespaces(names: list[str]) -> None:
    existing = set(sh("ip", "netns", "list", check=False).split())
    for ns in names:
        if ns not in existing:
            continue
        # Only processes this script started can live in these namespaces; kill them by pid.
        for pid in _namespace_pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not _namespace_pids(ns):
                break
            time.sleep(0.1)
        try:
            sh("ip", "netns", "del", ns)
        except RuntimeError as exc:
            log(f"teardown: {exc}")
    for ns in names:
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    with contextlib.suppress(OSError):
        Path("/etc/netns").rmdir()  # only when empty: it may hold other namespaces' files


def remove_stale_namespaces() -> None:
    stale = [ns for ns in sh("ip", "netns", "list", check=False).split() if ns.startswith(PREFIX)]
    if stale:
        log(f"removing namespaces left by an earlier run: {' '.join(stale)}")
        remove_namespaces(stale)


def wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, needle: str, timeout: float = 20.0) -> str:
    """Wait until ``needle`` appears in the process's log; the matching line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            raise RuntimeError(f"{log_path.name} exited ({proc.returncode}) before listening:\n{tail(log_path)}")
        time.sleep(0.05)
    raise RuntimeError(f"{log_path.name}: no {needle!r} within {timeout}s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def proc_peak_rss(pid: int) -> int | None:
    """VmHWM (peak resident set) of a running process, bytes."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


@dataclass(frozen=True)
class Cpu:
    """Cumulative CPU seconds at one moment, split by who used them; differences give a run's figures."""

    peers: float
    """Peer processes: those still running (from /proc) plus those already reaped (RUSAGE_CHILDREN)."""
    services: float
    origin: float
    outside: float
    """Everything else the machine ran (kernel threads included): /proc/stat less all of the above and us."""
    machine: MachineCpu

    @classmethod
    def sample(
        cls, procs: list[subprocess.Popen[bytes]], services: list[subprocess.Popen[bytes]], origin_pid: int
    ) -> Cpu:
        # Only peers are reaped while a run is timed, so the children's rusage grows by theirs alone.
        peers = running_cpu_seconds([p for p in procs if p.poll() is None]) + children_cpu_seconds()
        services_cpu = running_cpu_seconds(services)
        origin = process_cpu_seconds(origin_pid)
        machine = MachineCpu.sample()
        outside = machine.tasks - peers - services_cpu - origin - own_cpu_seconds()
        return cls(peers, services_cpu, origin, outside, machine)


def netns_tx_bytes(pid: int, dev: str = "eth0") -> int:
    """TX bytes of ``dev`` in the network namespace of process ``pid``; a file read, cheap enough to poll."""
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() == dev:
            return int(counters.split()[8])
    raise RuntimeError(f"no {dev} in the namespace of pid {pid}")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def running_cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += process_cpu_seconds(proc.pid)
    return total


def shoal_revision() -> str:
    """The commit of the shoal checkout being measured, with "+dirty" when src/ has uncommitted changes."""
    import shoal

    repo = Path(shoal.__file__).resolve().parents[2]
    head = sh("git", "-C", str(repo), "rev-parse", "--short", "HEAD", check=False).strip() or "not a git checkout"
    dirty = sh("git", "-C", str(repo), "status", "--porcelain", "--", "src", check=False).strip()
    return f"{head}{'+dirty' if dirty else ''} ({repo})"


# -- payload and torrent ---------------------------------------------------------------------------------


def torrent_piece_length(size: int) -> int:
    """The smallest power of two from 256 KiB that cuts the file into at most 2048 pieces (mktorrent-like)."""
    piece = 256 * 1024
    while piece * 2048 < size and piece < 16 << 20:
        piece *= 2
    return piece


def make_torrent(payload: Path, announce: str, web_seed: str, piece_length: int) -> bytes:
    """A single-file v1 metainfo (BEP 3) with SHA-1 pieces and a BEP 19 ``url-list`` web seed."""
    pieces = bytearray()
    with open(payload, "rb") as f:
        while chunk := f.read(piece_length):
            pieces += hashlib.sha1(chunk).digest()
    info = {
        b"name": payload.name.encode(),
        b"length": payload.stat().st_size,
        b"piece length": piece_length,
        b"pieces": bytes(pieces),
    }
    return bencode(
        {
            b"announce": announce.encode(),
            b"url-list": [web_seed.encode()],
            b"created by": b"shoal benchmarks/swarm_lab.py",
            b"creation date": int(time.time()),
            b"info": info,
        }
    )


# -- one run of one method -------------------------------------------------------------------------------


@dataclass
class RunResult:
    method: str
    run: int
    peers: int
    size: int
    lower_bound_s: float
    completed: int = 0
    last_done_s: float | None = None
    done_s: list[float | None] = field(default_factory=list)
    timed_out: bool = False
    origin_wire_bytes: int = 0
    origin_http_bytes: int = 0
    verified: int = 0
    # CPU seconds while the peers ran (from launch until the last peer was done):
    cpu_s_peers: float = 0.0
    cpu_s_tracker: float = 0.0
    cpu_s_origin: float = 0.0
    cpu_s_outside: float = 0.0
    """CPU seconds of processes outside the lab while the peers ran (machine total less the lab's): ~0 on a
    quiet machine; much more means another workload competed for the two cores and the run is suspect."""
    cpu_s_irq: float = 0.0
    """Interrupt and softirq time meanwhile, all cores (the veths' packets, mostly)."""
    cpu_s_idle: float = 0.0
    """Idle time meanwhile, all cores: near 0 when the run was bound by the CPU."""
    cpu_s_steal: float = 0.0
    """Time the host took from this VM's cores meanwhile (steal): the lab's CPU-bound phases stretch by it."""
    max_peer_rss: int | None = None
    origin_first_s: float | None = None
    """When the origin link had sent its first 64 KiB of the run (seconds after launch)."""
    origin_last_s: float | None = None
    """When the origin link's TX counter last moved before the last peer was done."""
    origin_slack_s: float | None = None
    """Link time unused between origin_first_s and origin_last_s: that span less the time the bytes it sent
    need at the cap, framing included (WIRE_PAYLOAD). Gaps in the origin's sending: no request open, or
    requests slower than the link."""
    origin_timeline: list[tuple[float, int]] = field(default_factory=list)
    """(seconds after launch, origin link TX bytes since launch) each time the counter moved."""
    failures: list[str] = field(default_factory=list)
    peer_reports: list[dict[str, int]] = field(default_factory=list)
    log_dir: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures and self.verified == self.peers

    @property
    def over_bound(self) -> float | None:
        return None if self.last_done_s is None else self.last_done_s / self.lower_bound_s

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data.update(
            ok=self.ok,
            over_bound=self.over_bound,
            origin_wire_ratio=self.origin_wire_bytes / self.size,
            origin_http_ratio=self.origin_http_bytes / self.size,
        )
        return data


@dataclass
class Context:
    lab: Lab
    workdir: Path
    payload: Path
    sha256: str
    size: int
    torrent: Path
    aria2_hook: Path
    timeout: float
    verbose: int

    @property
    def url(self) -> str:
        return f"http://{self.lab.origin.ip}:{ORIGIN_PORT}/{FILE_NAME}"


@dataclass
class Launch:
    """How one method runs: services to start first, each peer's command and its done test."""

    services: Callable[[Path], list[subprocess.Popen[bytes]]]
    argv: Callable[[int, Path, Path], list[str]]
    """Given the peer's index, its output file and the run's log directory: the command to run."""
    done: Callable[[Path, subprocess.Popen[bytes]], bool]
    """Given the peer's output file and process: True once that peer is done."""


_SUMMARY = re.compile(r"in [\d.]+s \(origin ([\d.]+) (B|KiB|MiB|GiB), peers ([\d.]+) (B|KiB|MiB|GiB)\)")
_UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def shoal_launch(ctx: Context) -> Launch:
    tracker_url = f"http://{ctx.lab.tracker.ip}:{SHOAL_TRACKER_PORT}"
    upload_time = ctx.timeout + 60  # every peer keeps serving until the run stops it
    verbose = [f"-{'v' * ctx.verbose}"] if ctx.verbose else []

    def services(log_dir: Path) -> list[subprocess.Popen[bytes]]:
        db = log_dir / "tracker.db"
        log_path = log_dir / "tracker.log"
        options = f"--host 0.0.0.0 --port {SHOAL_TRACKER_PORT} --db sqlite:///{db} --interval 1 --peer-ttl 5"
        proc = ctx.lab.spawn(TRACKER_NS, [SHOAL, "tracker", *options.split(), *verbose], log_path)
        wait_for_line(proc, log_path, "tracker listening on")
        return [proc]

    def argv(i: int, dest: Path, log_dir: Path) -> list[str]:
        options = f"-o {dest} --tracker {tracker_url} --upload-time {upload_time}"
        return [SHOAL, "get", ctx.url, *options.split(), *verbose]

    def done(dest: Path, proc: subprocess.Popen[bytes]) -> bool:
        # shoal renames the file into place only once it is complete and verified.
        try:
            return dest.stat().st_size == ctx.size
        except FileNotFoundError:
            return False

    return Launch(services, argv, done)


def curl_launch(ctx: Context) -> Launch:
    def argv(i: int, dest: Path, log_dir: Path) -> list[str]:
        return ["curl", "-sS", "-o", str(dest), ctx.url]

    def done(dest: Path, proc: subprocess.Popen[bytes]) -> bool:
        return proc.poll() == 0

    return Launch(lambda log_dir: [], argv, done)


def aria2_launch(ctx: Context) -> Launch:
    seed_minutes = math.ceil((ctx.timeout + 60) / 60)

    def services(log_dir: Path) -> list[subprocess.Popen[bytes]]:
        log_path = log_dir / "bt_tracker.log"
        options = f"--host 0.0.0.0 --port {BT_TRACKER_PORT} --interval 2"
        proc = ctx.lab.spawn(TRACKER_NS, [PYTHON, str(HERE / "bt_tracker.py"), *options.split()], log_path)
        wait_for_line(proc, log_path, "bt tracker listening on")
        return [proc]

    def argv(i: int, dest: Path, log_dir: Path) -> list[str]:
        extra = [f"--log={log_dir / f'p{i + 1}.aria2.log'}", "--log-level=info"] if ctx.verbose else []
        return [
            "aria2c",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=true",
            f"--seed-time={seed_minutes}",
            "--seed-ratio=0.0",
            "--check-integrity=false",
            "--file-allocation=none",
            "--disable-ipv6=true",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--bt-save-metadata=false",
            "--summary-interval=0",
            "--console-log-level=warn",
            f"--dir={dest.parent}",
            f"--on-bt-download-complete={ctx.aria2_hook}",
            *extra,
            str(ctx.torrent),
        ]

    def done(dest: Path, proc: subprocess.Popen[bytes]) -> bool:
        return Path(f"{dest}.done").exists()

    return Launch(services, argv, done)


LAUNCHERS: dict[str, Callable[[Context], Launch]] = {
    "single": curl_launch,
    "shoal": shoal_launch,
    "curl": curl_launch,
    "aria2": aria2_launch,
}


def run_method(ctx: Context, method: str, run: int) -> RunResult:
    lab = ctx.lab
    peers = lab.peers[:1] if method == "single" else lab.peers
    lower_bound = ctx.size * 8 / (lab.origin_mbit * 1e6)
    result = RunResult(method, run, len(peers), ctx.size, lower_bound)
    log_dir = ctx.workdir / "logs" / f"run{run}-{method}"
    log_dir.mkdir(parents=True)
    result.log_dir = str(log_dir)
    launch = LAUNCHERS[method](ctx)
    dests = []
    for i in range(len(peers)):
        d = ctx.workdir / "peers" / f"p{i + 1}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        dests.append(d / FILE_NAME)

    services = launch.services(log_dir)
    assert lab.origin_proc is not None
    origin_pid = lab.origin_proc.pid
    subprocess.run(["sync"], check=False)  # the last run's writeback must not land on this one
    wire0, http0 = lab.origin_tx_bytes(), lab.origin_http_bytes()
    cpu0 = Cpu.sample(procs=[], services=services, origin_pid=origin_pid)

    tx_start = tx_last = tx_first = netns_tx_bytes(origin_pid)
    started, launched_at = time.monotonic(), time.time()
    procs = [
        lab.spawn(node.ns, launch.argv(i, dests[i], log_dir), log_dir / f"p{i + 1}.log") for i, node in enumerate(peers)
    ]
    if ctx.verbose:  # for the peers' -vv lines, which carry the time of day
        clock = time.strftime("%H:%M:%S", time.localtime(launched_at))
        log(f"peers launched at {clock}.{int(launched_at % 1 * 1000):03d}")
    done_at: list[float | None] = [None] * len(peers)
    failed = [False] * len(peers)
    deadline = started + ctx.timeout
    while time.monotonic() < deadline:
        # The origin link's timeline: when it started sending, when it last sent (start-up and tail).
        tx = netns_tx_bytes(origin_pid)
        if tx != tx_last:
            tx_last = tx
            result.origin_last_s = time.monotonic() - started
            result.origin_timeline.append((round(result.origin_last_s, 3), tx - tx_start))
            if result.origin_first_s is None and tx - tx_start >= 64 * 1024:
                result.origin_first_s = result.origin_last_s
                tx_first = tx
        for i, proc in enumerate(procs):
            if done_at[i] is not None or failed[i]:
                continue
            exited = proc.poll() is not None  # before the done test: an exit after it is seen next round
            if launch.done(dests[i], proc):
                done_at[i] = time.monotonic() - started
            elif exited:
                failed[i] = True
                result.failures.append(
                    f"peer {i + 1} exited with status {proc.returncode} before it was done; "
                    f"log {log_dir / f'p{i + 1}.log'}:\n{tail(log_dir / f'p{i + 1}.log', 8)}"
                )
        if all(d is not None or f for d, f in zip(done_at, failed, strict=True)):
            break
        time.sleep(POLL_SECONDS)
    else:
        result.timed_out = True
        missing = [str(i + 1) for i, d in enumerate(done_at) if d is None and not failed[i]]
        result.failures.append(f"timeout after {ctx.timeout:.0f}s; peers not done: {', '.join(missing)}")

    if result.origin_first_s is not None and result.origin_last_s is not None:
        sent_s = (tx_last - tx_first) / WIRE_PAYLOAD * 8 / (lab.origin_mbit * 1e6)
        result.origin_slack_s = max(0.0, result.origin_last_s - result.origin_first_s - sent_s)
    # Everything the machine ran while the peers ran, less the lab's own processes (reaped and running).
    cpu1 = Cpu.sample(procs=procs, services=services, origin_pid=origin_pid)
    result.cpu_s_peers = cpu1.peers - cpu0.peers
    result.cpu_s_tracker = cpu1.services - cpu0.services
    result.cpu_s_origin = cpu1.origin - cpu0.origin
    result.cpu_s_outside = max(0.0, cpu1.outside - cpu0.outside)
    machine = cpu1.machine - cpu0.machine
    result.cpu_s_irq, result.cpu_s_idle, result.cpu_s_steal = machine.irq, machine.idle, machine.steal
    rss = [r for r in (proc_peak_rss(p.pid) for p in procs if p.poll() is None) if r is not None]
    result.max_peer_rss = max(rss) if rss else None
    # Peers first, while their tracker can still hear them leave; then the run's services.
    lab.stop(procs)
    lab.stop(services)
    result.origin_wire_bytes = lab.origin_tx_bytes() - wire0
    result.origin_http_bytes = lab.origin_http_bytes() - http0
    result.done_s = [None if d is None else round(d, 3) for d in done_at]
    finished = [d for d in done_at if d is not None]
    result.completed = len(finished)
    if finished and len(finished) == len(peers):
        result.last_done_s = max(finished)

    if method == "shoal":
        for i in range(len(peers)):
            match = _SUMMARY.search((log_dir / f"p{i + 1}.log").read_text(errors="replace"))
            if match:
                result.peer_reports.append(
                    {
                        "peer": i + 1,
                        "from_origin": int(float(match[1]) * _UNIT[match[2]]),
                        "from_peers": int(float(match[3]) * _UNIT[match[4]]),
                    }
                )

    with ThreadPoolExecutor(max_workers=2) as pool:
        digests = list(pool.map(sha256_file, dests))
    for i, digest in enumerate(digests):
        if digest == ctx.sha256:
            result.verified += 1
        elif done_at[i] is not None:
            result.failures.append(f"peer {i + 1}: file differs from the origin's (sha256 {digest})")
    shutil.rmtree(ctx.workdir / "peers", ignore_errors=True)
    return result


# -- report ----------------------------------------------------------------------------------------------


def format_table(results: list[RunResult], args: argparse.Namespace, setup: dict[str, object]) -> str:
    lower_bound = float(setup["lower_bound_s"])  # type: ignore[arg-type]
    lines = [
        f"swarm lab: {args.peers} peers, {human(args.size)} file, origin link capped at {args.origin_mbit:g} Mbit/s "
        f"(tbf); lower bound size/rate = {lower_bound:.2f} s "
        f"({lower_bound / WIRE_PAYLOAD:.2f} s of frames on the wire)",
        f"shoal {setup['shoal']}; {setup['aria2']}; {setup['curl']}; load average at start {setup['loadavg']}",
        "",
        f"{'method':<7} {'run':>3} {'peers':>5} {'last done':>10} {'x bound':>8} {'first':>7} {'median':>7} "
        f"{'origin sent':>12} {'slack':>5} "
        f"{'origin/size':>11} {'http/size':>9} {'sha256 ok':>9} {'peak RSS':>9} "
        f"{'CPU s: peers':>12} {'tracker':>7} {'origin':>6} {'other':>6} {'irq':>5} {'idle':>5} {'steal':>5}",
    ]
    for r in results:
        finished = sorted(d for d in r.done_s if d is not None)
        last = f"{r.last_done_s:.2f} s" if r.last_done_s is not None else f"{r.completed}/{r.peers} done"
        over = f"{r.over_bound:.2f}" if r.over_bound is not None else "-"
        first = f"{finished[0]:.2f}" if finished else "-"
        median = f"{statistics.median(finished):.2f}" if finished else "-"
        rss = f"{r.max_peer_rss / 2**20:.0f} MiB" if r.max_peer_rss else "-"
        sending = (
            f"{r.origin_first_s:.1f}-{r.origin_last_s:.1f}"
            if r.origin_first_s is not None and r.origin_last_s is not None
            else "-"
        )
        lines.append(
            f"{r.method:<7} {r.run:>3} {r.peers:>5} {last:>10} {over:>8} {first:>7} {median:>7} {sending:>12} "
            f"{'-' if r.origin_slack_s is None else f'{r.origin_slack_s:.2f}':>5} "
            f"{r.origin_wire_bytes / r.size:>11.3f} {r.origin_http_bytes / r.size:>9.3f} "
            f"{f'{r.verified}/{r.peers}':>9} {rss:>9} {r.cpu_s_peers:>12.1f} {r.cpu_s_tracker:>7.1f} "
            f"{r.cpu_s_origin:>6.1f} {r.cpu_s_outside:>6.1f} {r.cpu_s_irq:>5.1f} {r.cpu_s_idle:>5.1f} "
            f"{r.cpu_s_steal:>5.1f}"
        )
    if args.repeat > 1:
        lines.append("")
        for method in args.methods:
            runs = [r for r in results if r.method == method]
            times = [r.last_done_s for r in runs if r.last_done_s is not None]
            ratios = [r.origin_wire_bytes / r.size for r in runs]
            if times:
                lines.append(
                    f"{method:<7} median of {len(times)}/{len(runs)} complete runs: last done "
                    f"{statistics.median(times):.2f} s ({statistics.median(times) / lower_bound:.2f}x bound, "
                    f"range {min(times):.2f}-{max(times):.2f} s), origin/size {statistics.median(ratios):.3f}"
                )
            else:
                lines.append(f"{method:<7} no complete run out of {len(runs)}")
    lines += [
        "",
        "last done: from launching the first peer to the last peer done; x bound: that / lower bound; first,",
        "median: peer done times; origin sent: from when the origin link had sent its first 64 KiB to when it",
        "last sent (seconds after launch; before it is start-up, after it the swarm's tail); slack: that span",
        "less the time its bytes need at the cap with TCP/IP/Ethernet framing (seconds the link sat idle);",
        "origin/size: TX bytes of the origin's capped veth (TCP/IP headers included) / file size;",
        "http/size: the origin's own body-byte counter (GET /_stats) / file size (it misses aborted responses);",
        "peak RSS: largest VmHWM of a peer still running at the end; CPU s: CPU seconds used while the peers ran",
        "(2 cores give 2 per second) by the peers, the run's tracker, the origin, and everything else on the",
        "machine, kernel threads included (other: more than a few means the run shared the cores); irq: interrupt",
        "and softirq time (the veths' packets, charged to no process); idle: cores with nothing to run (near 0:",
        "the run was bound by the CPU); steal: time the host took from this VM's cores (the run stretches by it).",
    ]
    for r in results:
        if r.peer_reports:
            origin = sum(p["from_origin"] for p in r.peer_reports) / r.size
            peers = sum(p["from_peers"] for p in r.peer_reports) / r.size
            per_peer = ", ".join(f"{p['from_origin'] / 2**20:.0f}" for p in r.peer_reports)
            lines.append(
                f"shoal run {r.run}: the peers' own counts: origin {origin:.3f}x, peers {peers:.3f}x the file; "
                f"MiB from origin per peer: {per_peer}"
            )
    for r in results:
        for failure in r.failures:
            lines.append(f"FAILED {r.method} run {r.run}: {failure}")
    setup = REFERENCE["setup"]
    same = (args.peers, args.size, args.origin_mbit) == (setup["peers"], setup["size"], setup["origin_mbit"])
    lines += [
        "",
        "reference figures (DESIGN.md; origin capped at 200 Mbit/s, 8 peers, 256 MiB)"
        + ("" if same else " -- NOT this run's setup, compare with care")
        + ":",
    ]
    for row in REFERENCE["rows"]:
        lines.append(f"  {row['how']:<46} {row['seconds']:>10} s   origin bytes / size {row['origin_ratio']}")
    target = REFERENCE["shoal_target"]
    lines.append(
        f"  shoal target: last done <= {target['time_over_bound']}x the lower bound "
        f"({target['time_over_bound'] * lower_bound:.1f} s here), origin bytes <= {target['origin_ratio']}x"
    )
    for r in results:
        if r.method == "shoal":
            time_ok = r.over_bound is not None and r.over_bound <= target["time_over_bound"]
            bytes_ok = r.origin_wire_bytes / r.size <= target["origin_ratio"]
            lines.append(
                f"  shoal run {r.run}: time target {'met' if time_ok else 'MISSED'}, "
                f"origin-bytes target {'met' if bytes_ok else 'MISSED'} (by the link counter)"
            )
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Swarm lab: N peers in network namespaces fetch one file from a capped origin "
        "(shoal vs curl vs aria2c). Run as root.",
    )
    parser.add_argument("--peers", type=int, default=8, help="number of peer namespaces (default 8)")
    parser.add_argument("--size", type=parse_size, default=256 << 20, help="file size, e.g. 256M, 1G (default 256M)")
    parser.add_argument("--origin-mbit", type=float, default=200.0, help="origin uplink cap in Mbit/s (default 200)")
    parser.add_argument(
        "--methods",
        default="shoal,curl,aria2",
        help=f"comma-separated, in run order, from {','.join(ALL_METHODS)} (default shoal,curl,aria2)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the list of methods this many times")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before a run is declared failed (default 12x the lower bound + 30)",
    )
    parser.add_argument(
        "--bt-piece-kib",
        type=int,
        default=None,
        help="torrent piece length in KiB (default: power of two from 256 KiB, at most 2048 pieces)",
    )
    parser.add_argument("--subnet", default="10.77.0", help="first three octets of the lab's /24 (default 10.77.0)")
    parser.add_argument("--workdir", default="/tmp", help="parent of the run's directory (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (files and logs)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="run shoal with -v (-vv with -vv) and aria2c with an info log",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        parser.error(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ALL_METHODS)}")
    args.methods = methods
    if not 1 <= args.peers <= 200:
        parser.error("--peers must be between 1 and 200")
    if args.size <= 0 or args.origin_mbit <= 0 or args.repeat < 1:
        parser.error("--size, --origin-mbit and --repeat must be positive")
    if not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", args.subnet):
        parser.error("--subnet takes three octets, e.g. 10.77.0")
    return args


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the lab is always torn down."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("swarm_lab.py needs root (network namespaces, tc)")
    tools = ["ip", "tc", "curl", "sync"] + (["aria2c"] if "aria2" in args.methods else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}")
    lower_bound = args.size * 8 / (args.origin_mbit * 1e6)
    timeout = args.timeout or 12 * lower_bound + 30
    compile_bytecode()  # the peers start as an installed shoal does, from bytecode
    workdir = Path(tempfile.mkdtemp(prefix="swarm-lab-", dir=args.workdir))
    setup: dict[str, object] = {
        "peers": args.peers,
        "size": args.size,
        "origin_mbit": args.origin_mbit,
        "methods": args.methods,
        "repeat": args.repeat,
        "workdir": str(workdir),
        "lower_bound_s": lower_bound,
        "shoal": shoal_revision(),
        "aria2": sh("aria2c", "--version", check=False).splitlines()[0] if shutil.which("aria2c") else "no aria2c",
        "curl": " ".join(sh("curl", "--version", check=False).split()[:2]),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    results: list[RunResult] = []
    keep = args.keep
    interrupted = False
    with terminate_on_signals():
        try:
            origin_dir = workdir / "origin"
            origin_dir.mkdir()
            payload = origin_dir / FILE_NAME
            log(f"writing {human(args.size)} of random data to {payload}")
            sha256 = write_random_file(payload, args.size)
            with Lab(args.peers, args.subnet, args.origin_mbit) as lab:
                log(f"lab up: {len(lab.namespaces)} namespaces, origin {lab.origin.ip} at {args.origin_mbit:g} Mbit/s")
                (workdir / "logs").mkdir()
                lab.start_origin(origin_dir, workdir / "logs" / "origin.log")
                url = f"http://{lab.origin.ip}:{ORIGIN_PORT}/{FILE_NAME}"
                torrent = workdir / f"{FILE_NAME}.torrent"
                if "aria2" in args.methods:
                    piece = args.bt_piece_kib * 1024 if args.bt_piece_kib else torrent_piece_length(args.size)
                    torrent.write_bytes(
                        make_torrent(payload, f"http://{lab.tracker.ip}:{BT_TRACKER_PORT}/announce", url, piece)
                    )
                    log(f"torrent {torrent} ({human(piece)} pieces)")
                hook = workdir / "aria2-done.sh"
                # aria2 calls the hook with GID, number of files and the first file's path.
                hook.write_text('#!/bin/sh\n: > "$3.done"\n')
                hook.chmod(0o755)
                ctx = Context(lab, workdir, payload, sha256, args.size, torrent, hook, timeout, args.verbose)
                for run in range(1, args.repeat + 1):
                    for method in args.methods:
                        log(f"run {run}: {method} ({1 if method == 'single' else args.peers} peers) ...")
                        result = run_method(ctx, method, run)
                        results.append(result)
                        summary = (
                            f"{result.last_done_s:.2f} s"
                            if result.last_done_s is not None
                            else f"{result.completed}/{result.peers} done"
                        )
                        log(
                            f"run {run}: {method}: {summary}, origin {result.origin_wire_bytes / args.size:.3f}x, "
                            f"verified {result.verified}/{result.peers}"
                            + ("" if result.ok else f" -- FAILED, logs in {result.log_dir}")
                        )
                        time.sleep(1.0)  # let TIME_WAIT and writeback settle between runs
        except KeyboardInterrupt:
            log("interrupted; tearing down")
            keep = interrupted = True
        finally:
            if any(not r.ok for r in results):
                keep = True
            if keep:
                # Keep the logs; the peers' copies go (and the payload too, unless --keep asked for it).
                shutil.rmtree(workdir / "peers", ignore_errors=True)
                if not args.keep:
                    shutil.rmtree(workdir / "origin", ignore_errors=True)
                log(f"kept {workdir} (logs in {workdir / 'logs'})")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            leftovers = [ns for ns in sh("ip", "netns", "list", check=False).split() if ns.startswith(PREFIX)]
            if leftovers:
                log(f"WARNING: namespaces left behind: {' '.join(leftovers)}")
    if args.json:
        print(json.dumps({"setup": setup, "runs": [r.to_json() for r in results], "reference": REFERENCE}, indent=2))
    elif results:
        print(format_table(results, args, setup))
    if interrupted:
        return 130
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
