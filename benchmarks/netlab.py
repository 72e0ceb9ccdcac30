"""Network labs: network namespaces, links and bridges, capped links, and the processes run inside them.

The labs in this folder (swarm_lab.py on one switch, racks_lab.py with racks behind capped uplinks) build
their networks from these parts and run their processes through a :class:`Lab`, which deletes every
namespace it created and kills every process it started when it ends, also on an error or Ctrl-C
(:class:`Session` turns SIGTERM and SIGHUP into Ctrl-C). Each lab names its namespaces with a prefix of its
own and removes only namespaces of that prefix: other programs on the machine create namespaces too.

Every namespace gets ``/etc/netns/NAME/resolv.conf`` (``nameserver 127.0.0.1``) so that nothing waits on DNS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, Self, TypeVar

from shoal.core import units
from shoal.core.errors import ShoalError

PYTHON = sys.executable
SHOAL = str(Path(PYTHON).with_name("shoal")) if Path(PYTHON).with_name("shoal").exists() else "shoal"
SHOAL_TRACKER_PORT = 6969
PREFIX = "swl-"
ORIGIN_NS = PREFIX + "origin"
TRACKER_NS = PREFIX + "tracker"
ORIGIN_PORT = 8000


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


def add_namespace(ns: str) -> None:
    """A namespace with ``lo`` up and ``/etc/netns/NS/resolv.conf`` naming 127.0.0.1: without it a name
    lookup inside the namespace (Python's ``http.server`` does one at start) waits seconds on DNS."""
    sh("ip", "netns", "add", ns)
    netns_etc = Path("/etc/netns") / ns
    netns_etc.mkdir(parents=True, exist_ok=True)
    (netns_etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def add_bridge(ns: str, name: str) -> None:
    sh("ip", "-n", ns, "link", "add", name, "type", "bridge")
    sh("ip", "-n", ns, "link", "set", name, "up")


def add_bridge_port(ns: str, dev: str, bridge: str) -> None:
    sh("ip", "-n", ns, "link", "set", dev, "master", bridge)
    sh("ip", "-n", ns, "link", "set", dev, "up")


def shape_egress(ns: str, dev: str, mbit: float) -> None:
    """Cap what ``dev`` sends at ``mbit`` Mbit/s with a token bucket (``replace``: also a new rate)."""
    # The bucket holds at least 256 KiB (and 4 ms of traffic) so that 64 KiB GSO packets pass whole and the
    # kernel timer granularity does not cut the rate; the latency bound keeps the queue short.
    rate_bytes = mbit * 1e6 / 8
    burst = max(256 * 1024, int(rate_bytes / 250))
    sh(
        "ip",
        "netns",
        "exec",
        ns,
        *f"tc qdisc replace dev {dev} root tbf rate {mbit}mbit burst {burst} latency 50ms".split(),
    )


def link_tx_bytes(ns: str) -> dict[str, int]:
    """Every link's TX byte counter in namespace ``ns``, by name (one ``ip -s -j link`` call)."""
    return {
        link["ifname"]: int(link["stats64"]["tx"]["bytes"])
        for link in json.loads(sh("ip", "-n", ns, "-s", "-j", "link"))
    }


def qdisc_drops(ns: str) -> dict[str, int]:
    """Packets each link's root qdisc (a capped link's tbf) dropped in namespace ``ns``, by link name (one
    ``tc -s -j qdisc show`` call): a TCP sender sends each again, so they cost its link those bytes twice."""
    return {
        q["dev"]: int(q.get("drops", 0))
        for q in json.loads(sh("tc", "-n", ns, "-s", "-j", "qdisc", "show"))
        if q.get("root")
    }


class Lab:
    """Namespaces on one bridge and the processes started in them. ``with Lab(...)`` tears all of it down.

    A subclass with another topology (benchmarks/racks_lab.py) sets its own ``prefix``, nodes and ``_build``;
    what runs in the namespaces and how the runs are counted stays here."""

    prefix = PREFIX

    def __init__(self, peers: int, subnet: str, origin_mbit: float) -> None:
        self.switch_ns = self.prefix + "br"
        self.origin = Node(self.prefix + "origin", f"{subnet}.1", "v-origin")
        self.tracker = Node(self.prefix + "tracker", f"{subnet}.2", "v-tracker")
        self.peers = [Node(f"{self.prefix}p{i + 1}", f"{subnet}.{11 + i}", f"v-p{i + 1}") for i in range(peers)]
        self.origin_mbit = origin_mbit
        self.procs: list[subprocess.Popen[bytes]] = []
        self.origin_proc: subprocess.Popen[bytes] | None = None

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_ns] + [n.ns for n in (self.origin, self.tracker, *self.peers)]

    def lower_bound_s(self, size: int) -> float:
        """The nominal time the file needs over the narrowest link every peer's copy must cross."""
        return size * 8 / (self.origin_mbit * 1e6)

    def peer_labels(self, index: int) -> list[str]:
        """``shoal get`` options that place peer ``index`` (locality labels); none on one switch."""
        return []

    def __enter__(self) -> Self:
        remove_stale_namespaces(self.prefix)
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
            add_namespace(ns)
        add_bridge(self.switch_ns, "br0")
        for node in (self.origin, self.tracker, *self.peers):
            self.attach(node, "br0")
        shape_egress(self.origin.ns, "eth0", self.origin_mbit)

    def attach(self, node: Node, bridge: str) -> None:
        """Give ``node`` an ``eth0`` with its address, its other end a port of ``bridge`` in the switch."""
        sh(*f"ip -n {node.ns} link add eth0 type veth peer name {node.bridge_port} netns {self.switch_ns}".split())
        add_bridge_port(self.switch_ns, node.bridge_port, bridge)
        sh("ip", "-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
        sh("ip", "-n", node.ns, "link", "set", "eth0", "up")

    def start_origin(self, root: Path, log_path: Path, log_requests: bool = False) -> None:
        """Serve ``root`` from the origin namespace (shoal's test origin: aiohttp FileResponse); with
        ``log_requests``, a line in its log for every request, its byte range and whether it completed."""
        argv = [PYTHON, "-m", "shoal.testing.origin", str(root), "--host", "0.0.0.0", "--port", str(ORIGIN_PORT)]
        self.origin_proc = self.spawn(self.origin.ns, argv + ["--log-requests"] * log_requests, log_path)
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
        return link_tx_bytes(self.origin.ns)["eth0"]

    def origin_tcp_segments(self) -> tuple[int, int]:
        """The origin namespace's TCP segments sent and of them retransmitted (``OutSegs``, ``RetransSegs``
        of its /proc/net/snmp): what its link carried beyond the HTTP bytes, besides framing."""
        snmp = sh("ip", "netns", "exec", self.origin.ns, "cat", "/proc/net/snmp")
        lines = [line.split() for line in snmp.splitlines()]
        names, values = [line for line in lines if line[0] == "Tcp:"][:2]
        tcp = dict(zip(names[1:], values[1:], strict=True))
        return int(tcp["OutSegs"]), int(tcp["RetransSegs"])

    def origin_http_bytes(self) -> int:
        """The origin's own count of body bytes sent (GET /_stats), fetched from the tracker namespace."""
        url = f"http://{self.origin.ip}:{ORIGIN_PORT}/_stats"
        out = sh("ip", "netns", "exec", self.tracker.ns, "curl", "-sS", "--max-time", "5", url)
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


def remove_stale_namespaces(prefix: str) -> None:
    stale = [ns for ns in sh("ip", "netns", "list", check=False).split() if ns.startswith(prefix)]
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


def check_tools(script: str, methods: list[str]) -> None:
    """Exit with the reason unless this runs as root with the tools the methods need."""
    if os.geteuid() != 0:
        sys.exit(f"{script} needs root (network namespaces, tc)")
    tools = ["ip", "tc", "curl", "sync"] + (["aria2c"] if "aria2" in methods else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}")


class Outcome(Protocol):
    """A run's outcome as a Session sees it: whether it succeeded."""

    @property
    def ok(self) -> bool: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class Session(Generic[OutcomeT]):
    """A lab script's run directory, from creation to its end.

    ``with Session(...) as session:`` creates the directory under ``parent`` and turns SIGTERM and SIGHUP into
    KeyboardInterrupt so that every ``with Lab`` unwinds. Ctrl-C ends the block quietly (``interrupted``).
    On leaving, the logs stay when ``--keep`` was given, a run failed or the session was interrupted (the
    peers' copies go, and the payload unless ``--keep``); otherwise the directory goes. Namespaces of
    ``prefix`` still there are reported: the lab failed to tear them down."""

    def __init__(self, parent: str, name: str, prefix: str, keep: bool) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=name, dir=parent))
        self.prefix = prefix
        self.keep = keep
        self.results: list[OutcomeT] = []
        self.interrupted = False
        self._signals = terminate_on_signals()

    def __enter__(self) -> Session[OutcomeT]:
        self._signals.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> bool:
        try:
            if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
                log("interrupted; tearing down")
                self.interrupted = True
            self._finish()
        finally:
            self._signals.__exit__(None, None, None)
        return self.interrupted

    def _finish(self) -> None:
        workdir = self.workdir
        if self.keep or self.interrupted or any(not r.ok for r in self.results):
            shutil.rmtree(workdir / "peers", ignore_errors=True)
            if not self.keep:
                shutil.rmtree(workdir / "origin", ignore_errors=True)
            log(f"kept {workdir} (logs in {workdir / 'logs'})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        leftovers = [ns for ns in sh("ip", "netns", "list", check=False).split() if ns.startswith(self.prefix)]
        if leftovers:
            log(f"WARNING: namespaces left behind: {' '.join(leftovers)}")

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if all(r.ok for r in self.results) else 1
