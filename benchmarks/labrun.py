"""One run of one download method in a network lab (netlab.Lab): its processes, its clock and its counts.

A method (``shoal``, ``daemon``, ``pool``, ``curl``, ``aria2``; ``single`` is curl in the first peer alone) is a
:class:`Launch`:
the services to start first, each peer's command, and the test that a peer is done. :func:`run_method`
starts every peer at once (the clock starts before the first process is launched, so process start-up is
included) and stops when the last one is done; it reads the origin link's counters, the CPU used meanwhile
by the peers, the services, the origin and everything else, and compares every peer's file with the
origin's by SHA-256. Shoal's peers get the lab's locality labels (``Lab.peer_labels``); the aria2 swarm
uses benchmarks/bt_tracker.py, independent of the code under test, and the origin as BEP 19 web seed.

``shoal`` starts one ``shoal get`` process per host when the clock starts (its interpreter's start-up is in
the time); ``daemon`` is the resident deployment: a ``shoal daemon`` per host, started and listening before
the clock starts (a service of the run, so its CPU counts with the tracker's), and each host's ``shoal get``
hands its download to it over the control socket; a get that ran in its own process fails the run. ``pool``
is a fleet's push: the same daemons, members of one pool (benchmarks/poolnet.py), and one ``shoal pool push``
when the clock starts instead of a process per host; a peer is done when its daemon's cache holds the file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labtorrent import make_torrent, torrent_piece_length
from netlab import (
    ORIGIN_PORT,
    PYTHON,
    SHOAL,
    SHOAL_TRACKER_PORT,
    Lab,
    human,
    log,
    proc_peak_rss,
    sh,
    tail,
    wait_for_line,
)
from poolnet import PoolApi, member_argv
from shoal.testing.cpu import MachineCpu, own_cpu_seconds, process_cpu_seconds
from shoal.testing.files import sha256_file, write_random_file

HERE = Path(__file__).resolve().parent
BT_TRACKER_PORT = 6970
FILE_NAME = "payload.bin"
DAEMON_DIR = "daemons"  # under the run's work directory: the daemon method's caches and sockets
POLL_SECONDS = 0.02
# The share of the capped link's bytes that is TCP payload: a full segment carries 1448 bytes (1500-byte MTU,
# TCP timestamps) in a 1514-byte Ethernet frame, and tbf charges whole frames. The veth's TX counter sees one
# header per 64 KiB GSO packet, so it counts about the payload. One curl alone takes 11.26 s for 256 MiB at
# 200 Mbit/s, 1.048x size/rate: the same ratio.
WIRE_PAYLOAD = 1448 / 1514


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
    origin_segments: int = 0
    """TCP segments the origin sent (a GSO packet counts as the segments it is cut into)."""
    origin_retransmits: int = 0
    """Of ``origin_segments``, retransmitted: each carried up to one MSS (1448 bytes here) once more."""
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

    def count_cpu(self, before: Cpu, after: Cpu) -> None:
        """The CPU figures of the run from samples taken at launch and when the last peer was done."""
        self.cpu_s_peers = after.peers - before.peers
        self.cpu_s_tracker = after.services - before.services
        self.cpu_s_origin = after.origin - before.origin
        self.cpu_s_outside = max(0.0, after.outside - before.outside)
        machine = after.machine - before.machine
        self.cpu_s_irq, self.cpu_s_idle, self.cpu_s_steal = machine.irq, machine.idle, machine.steal

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
    """How one method runs: services to start first, each peer's command (or one push for all) and its done
    test."""

    services: Callable[[Path], list[subprocess.Popen[bytes]]]
    argv: Callable[[int, Path, Path], list[str]]
    """Given the peer's index, its output file and the run's log directory: the command to run."""
    done: Callable[[int, Path, subprocess.Popen[bytes]], bool]
    """Given the peer's index, output file and process (the push's, with ``push``): True once it is done."""
    push: Callable[[Path], list[str]] | None = None
    """Instead of a command per peer: one command, run in the tracker's namespace when the clock starts
    (given the run's log directory), that sends the file to every peer; it may end before they are done."""


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
        proc = ctx.lab.spawn(ctx.lab.tracker.ns, [SHOAL, "tracker", *options.split(), *verbose], log_path)
        wait_for_line(proc, log_path, "tracker listening on")
        return [proc]

    def argv(i: int, dest: Path, log_dir: Path) -> list[str]:
        options = f"-o {dest} --tracker {tracker_url} --upload-time {upload_time}"
        return [SHOAL, "get", ctx.url, *options.split(), *ctx.lab.peer_labels(i), *verbose]

    def done(i: int, dest: Path, proc: subprocess.Popen[bytes]) -> bool:
        # shoal renames the file into place only once it is complete and verified.
        try:
            return dest.stat().st_size == ctx.size
        except FileNotFoundError:
            return False

    return Launch(services, argv, done)


def start_daemons(
    ctx: Context, log_dir: Path, argv: Callable[[int, Path, Path], list[str]]
) -> list[subprocess.Popen[bytes]]:
    """A ``shoal daemon`` in every peer's namespace, from ``argv`` (given the peer's index, its cache directory
    and its control socket) with the peer's labels; started together, then each waited for until it serves.
    Fresh caches every run (``DAEMON_DIR``, removed after the run), so nothing is a hit."""
    verbose = [f"-{'v' * ctx.verbose}"] if ctx.verbose else []
    daemons = []
    for i, node in enumerate(ctx.lab.peers):
        cache = ctx.workdir / DAEMON_DIR / f"p{i + 1}" / "cache"
        command = [*argv(i, cache, daemon_socket(ctx, i)), *ctx.lab.peer_labels(i), *verbose]
        daemons.append((ctx.lab.spawn(node.ns, command, log_dir / f"d{i + 1}.log"), log_dir / f"d{i + 1}.log"))
    for proc, log_path in daemons:
        wait_for_line(proc, log_path, "daemon listening on", timeout=60.0)
    return [proc for proc, _ in daemons]


def daemon_launch(ctx: Context) -> Launch:
    """Shoal as a fleet deploys it: a resident ``shoal daemon`` on every host, started (and listening) with the
    run's tracker before the clock starts, and each host's ``shoal get`` handed to its daemon over the control
    socket."""
    tracker = shoal_launch(ctx)
    tracker_url = f"http://{ctx.lab.tracker.ip}:{SHOAL_TRACKER_PORT}"
    verbose = [f"-{'v' * ctx.verbose}"] if ctx.verbose else []

    def daemon(i: int, cache: Path, socket: Path) -> list[str]:
        return [SHOAL, "daemon", "--cache-dir", str(cache), "--socket", str(socket), "--tracker", tracker_url]

    def services(log_dir: Path) -> list[subprocess.Popen[bytes]]:
        return tracker.services(log_dir) + start_daemons(ctx, log_dir, daemon)

    def argv(i: int, dest: Path, log_dir: Path) -> list[str]:
        options = f"-o {dest} --socket {daemon_socket(ctx, i)} --stats-json {log_dir / f'p{i + 1}.stats.json'}"
        return [SHOAL, "get", ctx.url, *options.split(), *verbose]

    return Launch(services, argv, tracker.done)


def pool_launch(ctx: Context) -> Launch:
    """A fleet's push: the resident daemons of ``daemon``, members of one pool (benchmarks/poolnet.py) that the
    tracker counts live before the clock starts, and one ``shoal pool push`` when it starts, with no process
    started per host. A peer is done once its daemon's cache holds a file of the payload's size (an object is
    renamed into the cache only once complete and verified), which is then linked to the peer's output file
    for the run's SHA-256 check."""
    tracker = shoal_launch(ctx)
    pool = PoolApi(ctx.lab, f"http://{ctx.lab.tracker.ip}:{SHOAL_TRACKER_PORT}")

    def member(i: int, cache: Path, socket: Path) -> list[str]:
        return member_argv(cache, socket, pool.tracker_url, f"p{i + 1}")

    def services(log_dir: Path) -> list[subprocess.Popen[bytes]]:
        procs = tracker.services(log_dir)
        pool.create()
        procs += start_daemons(ctx, log_dir, member)
        pool.wait_for_members(len(ctx.lab.peers))
        return procs

    def done(i: int, dest: Path, proc: subprocess.Popen[bytes]) -> bool:
        for path in (ctx.workdir / DAEMON_DIR / f"p{i + 1}" / "cache" / "objects").glob("*/*"):
            if path.stat().st_size == ctx.size:
                os.link(path, dest)
                return True
        return False

    def no_argv(i: int, dest: Path, log_dir: Path) -> list[str]:
        raise AssertionError("the pool method starts one push, no command per peer")

    return Launch(services, no_argv, done, push=lambda log_dir: pool.push_argv(ctx.url))


def daemon_socket(ctx: Context, index: int) -> Path:
    return ctx.workdir / DAEMON_DIR / f"p{index + 1}" / "run" / "daemon.sock"


def daemon_failures(log_dir: Path, peers: int) -> list[str]:
    """The daemon method's check that every get was served by its daemon (``through_daemon`` in the figures
    each get wrote at exit), not downloaded in its own process."""
    failures = []
    for i in range(peers):
        path = log_dir / f"p{i + 1}.stats.json"
        try:
            through = json.loads(path.read_text()).get("through_daemon")
        except (OSError, ValueError) as exc:
            failures.append(f"peer {i + 1}: no figures from its get ({exc})")
            continue
        if through is not True:
            failures.append(f"peer {i + 1}: its get was not served by its daemon (through_daemon {through})")
    return failures


def curl_launch(ctx: Context) -> Launch:
    def argv(i: int, dest: Path, log_dir: Path) -> list[str]:
        return ["curl", "-sS", "-o", str(dest), ctx.url]

    def done(i: int, dest: Path, proc: subprocess.Popen[bytes]) -> bool:
        return proc.poll() == 0

    return Launch(lambda log_dir: [], argv, done)


def aria2_launch(ctx: Context) -> Launch:
    seed_minutes = math.ceil((ctx.timeout + 60) / 60)

    def services(log_dir: Path) -> list[subprocess.Popen[bytes]]:
        log_path = log_dir / "bt_tracker.log"
        options = f"--host 0.0.0.0 --port {BT_TRACKER_PORT} --interval 2"
        proc = ctx.lab.spawn(ctx.lab.tracker.ns, [PYTHON, str(HERE / "bt_tracker.py"), *options.split()], log_path)
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

    def done(i: int, dest: Path, proc: subprocess.Popen[bytes]) -> bool:
        return Path(f"{dest}.done").exists()

    return Launch(services, argv, done)


LAUNCHERS: dict[str, Callable[[Context], Launch]] = {
    "single": curl_launch,
    "shoal": shoal_launch,
    "daemon": daemon_launch,
    "pool": pool_launch,
    "curl": curl_launch,
    "aria2": aria2_launch,
}


def run_method(ctx: Context, method: str, run: int, label: str = "") -> RunResult:
    """One run of ``method`` in ``ctx.lab``; its logs go to ``logs/LABELrunRUN-METHOD``."""
    lab = ctx.lab
    peers = lab.peers[:1] if method == "single" else lab.peers
    result = RunResult(method, run, len(peers), ctx.size, lab.lower_bound_s(ctx.size))
    log_dir = ctx.workdir / "logs" / f"{label}run{run}-{method}"
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
    wire0, http0, segments0 = lab.origin_tx_bytes(), lab.origin_http_bytes(), lab.origin_tcp_segments()
    cpu0 = Cpu.sample(procs=[], services=services, origin_pid=origin_pid)
    tx_start = netns_tx_bytes(origin_pid)
    started, launched_at = time.monotonic(), time.time()
    if launch.push is not None:
        procs = [lab.spawn(lab.tracker.ns, launch.push(log_dir), log_dir / "push.log")]
    else:
        procs = [
            lab.spawn(node.ns, launch.argv(i, dests[i], log_dir), log_dir / f"p{i + 1}.log")
            for i, node in enumerate(peers)
        ]
    if ctx.verbose:  # for the peers' -vv lines, which carry the time of day
        clock = time.strftime("%H:%M:%S", time.localtime(launched_at))
        log(f"peers launched at {clock}.{int(launched_at % 1 * 1000):03d}")
    done_at = watch_peers(ctx, launch, procs, dests, result, started, tx_start)
    # Everything the machine ran while the peers ran, less the lab's own processes (reaped and running).
    result.count_cpu(cpu0, Cpu.sample(procs=procs, services=services, origin_pid=origin_pid))
    rss = [r for r in (proc_peak_rss(p.pid) for p in procs if p.poll() is None) if r is not None]
    result.max_peer_rss = max(rss) if rss else None
    if method == "daemon":
        # A get handed to its daemon ends on its own once the file is in place, writing its figures as it
        # exits (daemon_failures reads them); stopped at once, it might not have written them yet.
        with contextlib.suppress(subprocess.TimeoutExpired):
            deadline = time.monotonic() + 10.0
            for proc in procs:
                proc.wait(max(0.0, deadline - time.monotonic()))
    # Peers first, while their tracker can still hear them leave; then the run's services.
    lab.stop(procs)
    lab.stop(services)
    shutil.rmtree(ctx.workdir / DAEMON_DIR, ignore_errors=True)
    result.origin_wire_bytes = lab.origin_tx_bytes() - wire0
    result.origin_http_bytes = lab.origin_http_bytes() - http0
    segments = lab.origin_tcp_segments()
    result.origin_segments, result.origin_retransmits = segments[0] - segments0[0], segments[1] - segments0[1]
    result.done_s = [None if d is None else round(d, 3) for d in done_at]
    finished = [d for d in done_at if d is not None]
    result.completed = len(finished)
    if finished and len(finished) == len(peers):
        result.last_done_s = max(finished)
    if method in ("shoal", "daemon"):
        result.peer_reports = shoal_reports(log_dir, len(peers))
    if method == "daemon":
        result.failures += daemon_failures(log_dir, len(peers))
    with ThreadPoolExecutor(max_workers=2) as pool:
        digests = list(pool.map(sha256_file, dests))
    for i, digest in enumerate(digests):
        if digest == ctx.sha256:
            result.verified += 1
        elif done_at[i] is not None:
            result.failures.append(f"peer {i + 1}: file differs from the origin's (sha256 {digest})")
    shutil.rmtree(ctx.workdir / "peers", ignore_errors=True)
    return result


def watch_peers(
    ctx: Context,
    launch: Launch,
    procs: list[subprocess.Popen[bytes]],
    dests: list[Path],
    result: RunResult,
    started: float,
    tx_start: int,
) -> list[float | None]:
    """Poll until every peer is done or has failed, or the run times out: when each peer was done (seconds
    after ``started``). Failures, and the origin link's timeline and slack, go into ``result``."""
    assert ctx.lab.origin_proc is not None
    origin_pid = ctx.lab.origin_proc.pid
    tx_last = tx_first = tx_start
    log_dir = Path(result.log_dir)
    done_at: list[float | None] = [None] * len(dests)
    failed = [False] * len(dests)
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
        for i in range(len(dests)):
            if done_at[i] is not None or failed[i]:
                continue
            proc, log_path = (procs[0], log_dir / "push.log") if launch.push else (procs[i], log_dir / f"p{i + 1}.log")
            exited = proc.poll() is not None  # before the done test: an exit after it is seen next round
            if launch.done(i, dests[i], proc):
                done_at[i] = time.monotonic() - started
            elif exited and (launch.push is None or proc.returncode != 0):  # a push ends before its peers
                failed[i] = True
                result.failures.append(
                    f"peer {i + 1}: {log_path.stem} exited with status {proc.returncode} before it was done; "
                    f"log {log_path}:\n{tail(log_path, 8)}"
                )
        if all(d is not None or f for d, f in zip(done_at, failed, strict=True)):
            break
        time.sleep(POLL_SECONDS)
    else:
        result.timed_out = True
        missing = [str(i + 1) for i, d in enumerate(done_at) if d is None and not failed[i]]
        result.failures.append(f"timeout after {ctx.timeout:.0f}s; peers not done: {', '.join(missing)}")
    if result.origin_first_s is not None and result.origin_last_s is not None:
        sent_s = (tx_last - tx_first) / WIRE_PAYLOAD * 8 / (ctx.lab.origin_mbit * 1e6)
        result.origin_slack_s = max(0.0, result.origin_last_s - result.origin_first_s - sent_s)
    return done_at


def shoal_reports(log_dir: Path, peers: int) -> list[dict[str, int]]:
    """Each shoal peer's own closing count: bytes from the origin and from peers (from its log)."""
    reports = []
    for i in range(peers):
        match = _SUMMARY.search((log_dir / f"p{i + 1}.log").read_text(errors="replace"))
        if match:
            reports.append(
                {
                    "peer": i + 1,
                    "from_origin": int(float(match[1]) * _UNIT[match[2]]),
                    "from_peers": int(float(match[3]) * _UNIT[match[4]]),
                }
            )
    return reports


def measured_software() -> dict[str, object]:
    """What a run measured and the machine's load when it started, for the report's header."""
    return {
        "shoal": shoal_revision(),
        "aria2": sh("aria2c", "--version", check=False).splitlines()[0] if shutil.which("aria2c") else "no aria2c",
        "curl": " ".join(sh("curl", "--version", check=False).split()[:2]),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def write_payload(workdir: Path, size: int) -> tuple[Path, str]:
    """The origin's file in ``workdir/origin``: random bytes; its path and SHA-256."""
    origin_dir = workdir / "origin"
    origin_dir.mkdir()
    payload = origin_dir / FILE_NAME
    log(f"writing {human(size)} of random data to {payload}")
    return payload, write_random_file(payload, size)


def lab_context(
    lab: Lab, workdir: Path, payload: Path, sha256: str, args: argparse.Namespace, timeout: float, origin_log: str
) -> Context:
    """Start the origin in ``lab`` (its log ``logs/ORIGIN_LOG``, new for each lab: a start is recognised by
    its line in the log; with ``-v``, a line per request) and write what the methods need: the torrent
    (aria2 only; one for all labs of a session, whose tracker address is the same) and the hook aria2 calls
    when a download is complete."""
    (workdir / "logs").mkdir(exist_ok=True)
    lab.start_origin(payload.parent, workdir / "logs" / origin_log, log_requests=args.verbose > 0)
    url = f"http://{lab.origin.ip}:{ORIGIN_PORT}/{FILE_NAME}"
    torrent = workdir / f"{FILE_NAME}.torrent"
    if "aria2" in args.methods and not torrent.exists():
        piece = args.bt_piece_kib * 1024 if args.bt_piece_kib else torrent_piece_length(args.size)
        torrent.write_bytes(make_torrent(payload, f"http://{lab.tracker.ip}:{BT_TRACKER_PORT}/announce", url, piece))
        log(f"torrent {torrent} ({human(piece)} pieces)")
    hook = workdir / "aria2-done.sh"
    # aria2 calls the hook with GID, number of files and the first file's path.
    hook.write_text('#!/bin/sh\n: > "$3.done"\n')
    hook.chmod(0o755)
    return Context(lab, workdir, payload, sha256, args.size, torrent, hook, timeout, args.verbose)


def run_logged(ctx: Context, method: str, run: int, label: str = "") -> RunResult:
    """One run of ``method`` (``label`` before its name in the log and its log directory), its outcome logged."""
    what = f"{label}run {run}: {method}"
    log(f"{what} ({1 if method == 'single' else len(ctx.lab.peers)} peers) ...")
    result = run_method(ctx, method, run, label)
    summary = (
        f"{result.last_done_s:.2f} s" if result.last_done_s is not None else f"{result.completed}/{result.peers} done"
    )
    log(
        f"{what}: {summary}, origin {result.origin_wire_bytes / ctx.size:.3f}x "
        f"(HTTP {result.origin_http_bytes / ctx.size:.3f}x, {result.origin_retransmits} of "
        f"{result.origin_segments} TCP segments retransmitted), "
        f"verified {result.verified}/{result.peers}" + ("" if result.ok else f" -- FAILED, logs in {result.log_dir}")
    )
    time.sleep(1.0)  # let TIME_WAIT and writeback settle between runs
    return result
