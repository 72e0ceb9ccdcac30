#!/usr/bin/env python3
"""The node cache: a hit through ``shoal get``, eviction under churn, and the daemon's memory while it seeds.

Everything runs on 127.0.0.1 under a fresh directory (``--workdir``, default /var/tmp: a disk, not a tmpfs),
removed at the end. Each part starts its own tracker (SQLite), origin (``python -m shoal.testing.origin``)
and ``shoal daemon`` (cache and control socket under the work directory), so one part's figures do not
carry another's state. The daemon's stderr goes to a log whose lines are printed after each part (it logs
warnings and errors only, so any line there is worth a look).

1. **hit**: a random file of ``--size`` bytes (default 1 GiB) in the origin's root; one
   ``shoal get URL -o DEST --socket SOCK`` fetches it into the cache (the miss, timed too), then ``--runs``
   more (default 7) each place it at a new destination beside the cache (same filesystem). Timed: the whole
   ``shoal get`` process, interpreter start-up included (``python -m shoal``, as ``shoal`` runs), and the
   seconds the daemon reports ("in 0.00s"). Checked: every hit says "cache hit", each destination is a hard
   link to the cache object (same inode), every size matches, and one destination hashes right. Target: the
   median process time under 0.2 s. ``python -c pass`` is timed as well, for the interpreter's share.
2. **churn**: an in-process CacheStore with ``--churn-capacity`` bytes (default 256 MiB) takes files of
   random sizes (4-32 MiB, seeded) until five times its capacity has been put. Usage (used + reserved) is
   read after every put and, from a thread with a second CacheStore on the same index (as another process
   would open it), every 2 ms during the puts, with the bytes on disk under ``objects/`` and ``staging/``.
   Target: never above capacity.
3. **rss**: the daemon fetches a ``--serve-size`` file (default 256 MiB), so it caches and seeds it; then
   ``--peers`` (default 8) concurrent ``shoal get URL --tracker T --no-daemon --upload-time 0`` fetch it
   from the daemon and each other. The daemon's VmRSS is sampled every 50 ms from /proc and its VmHWM
   (reset through /proc/PID/clear_refs once the file is seeded, so it is the serving phase's peak) read at
   the end. Printed: peak RSS, time for all peers, the origin's bytes sent meanwhile (its own ``/_stats``
   counter: about 0 when the peers took the file from the daemon) and each peer's origin/peer split.
   Checked: every peer's file size and one peer's hash. Target: peak under 200 MB.

Exit status 1 when a check failed (wrong content, a hit that was not one, a process that failed); a target
not met is reported but is not a failure.

Run it (from the repository; no root needed)::

    python3 benchmarks/cache.py                                   # 1 GiB hit, 256 MiB churn, 8 peers
    python3 benchmarks/cache.py --only hit --runs 15
    python3 benchmarks/cache.py --size 64M --runs 3 --serve-size 32M --peers 2 --churn-capacity 64M
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shoal.core import units
from shoal.core.errors import ShoalError
from shoal.daemon.client import DaemonClient
from shoal.daemon.config import index_path
from shoal.storage.cache_store import CacheStore
from shoal.testing.cpu import process_cpu_seconds
from shoal.testing.files import sha256_file, write_random_file
from shoal.testing.processes import Service, shoal_argv, start_daemon, start_origin, start_tracker

BENCHMARKS = ("hit", "churn", "rss")
HIT_TARGET = 0.2  # seconds, the median `shoal get` process on a hit
RSS_TARGET = 200 * 10**6  # bytes ("under 200 MB")
CHURN_FACTOR = 5  # bytes put = this many times the capacity
CHURN_SIZES = (4 << 20, 32 << 20)
CHURN_SEED = 20240
SAMPLE_CHURN = 0.002  # seconds between the churn sampler's reads
SAMPLE_RSS = 0.05  # seconds between VmRSS reads
PEER_TIMEOUT = 900.0
MIB = 1 << 20

_DAEMON_SECONDS = re.compile(r" in (\d+(?:\.\d+)?)s \(")
_PEER_SPLIT = re.compile(r"\(origin ([^,]+), peers ([^)]+)\)")


# -- small helpers -------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """argparse type for sizes like ``256M``: shoal's own parser (1024-based units)."""
    try:
        size = units.parse_size(text)
    except ShoalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return size


def size_arg(n: int) -> str:
    """The shortest exact ``--size`` spelling of ``n`` bytes (for the command lines printed to reproduce)."""
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def fmt(n: float) -> str:
    return units.format_bytes(n)


def header(title: str, reproduce: list[str]) -> None:
    print(f"\n== {title} ==", flush=True)
    print(f"reproduce: {shlex.join(['python3', 'benchmarks/cache.py', *reproduce])}", flush=True)


def verdict(label: str, met: bool) -> None:
    print(f"target {label}: {'met' if met else 'NOT met'}", flush=True)


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f} s, median {statistics.median(values):.3f} s, max {max(values):.3f} s"


@dataclass
class Checks:
    """Correctness checks of every part; any failure makes the exit status 1."""

    failed: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        print(f"check {what}: {'ok' if ok else 'FAILED'}", flush=True)
        if not ok:
            self.failed.append(what)
        return ok


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Processes started inside the block write their stderr to ``path`` (start_service leaves stderr to
    the parent's), by pointing this process's fd 2 at it while they start."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and the like from /proc/PID/status, in bytes (empty once the process is gone)."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if name.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * 1024
    return fields


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+, our own process): True if it worked."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def origin_bytes(origin: Service) -> int:
    with urllib.request.urlopen(f"{origin.url}/_stats", timeout=10) as resp:
        return int(json.load(resp)["bytes_sent"])


@dataclass
class Run:
    wall: float
    returncode: int
    stderr: str

    @property
    def daemon_seconds(self) -> float | None:
        match = _DAEMON_SECONDS.search(self.stderr)
        return float(match[1]) if match else None


def timed(argv: list[str], timeout: float = 3600.0) -> Run:
    started = time.perf_counter()
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout
    )
    return Run(time.perf_counter() - started, proc.returncode, proc.stderr.strip())


def shoal_get(url: str, dest: Path, socket: Path) -> Run:
    return timed(shoal_argv("get", url, "-o", str(dest), "--socket", str(socket)))


# -- one node: tracker, origin, daemon ----------------------------------------------------------------


@dataclass
class Node:
    tracker: Service
    origin: Service
    daemon: Service
    origin_root: Path
    cache_dir: Path
    socket: Path
    daemon_log: Path

    def url(self, name: str) -> str:
        return f"{self.origin.url}/{name}"


@contextlib.contextmanager
def node(base: Path, capacity: int) -> Iterator[Node]:
    """A tracker, an origin serving ``base/origin`` and a daemon caching in ``base/cache``; all killed on exit."""
    base.mkdir(mode=0o700, parents=True)  # the daemon's socket directory must be its user's alone
    (origin_root := base / "origin").mkdir()
    cache_dir, socket, daemon_log = base / "cache", base / "daemon.sock", base / "daemon.log"
    started: list[Service] = []
    try:
        tracker = start_tracker(f"sqlite:///{base / 'tracker.db'}")
        started.append(tracker)
        origin = start_origin(origin_root)
        started.append(origin)
        with stderr_to(daemon_log):
            daemon = start_daemon(cache_dir, socket, tracker=tracker.url, capacity=size_arg(capacity))
        started.append(daemon)
        yield Node(tracker, origin, daemon, origin_root, cache_dir, socket, daemon_log)
    finally:
        for service in reversed(started):
            service.kill()
        show_daemon_log(daemon_log)


def show_daemon_log(path: Path, limit: int = 20) -> None:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    print(f"daemon stderr: {len(lines)} line(s){':' if lines else ''}", flush=True)
    for line in lines[:limit]:
        print(f"  | {line}")
    if len(lines) > limit:
        print(f"  | ... {len(lines) - limit} more in {path}")


def object_of(cache_dir: Path, url: str) -> Path | None:
    """The cache object holding ``url``'s file, read from the daemon's index (as ``shoal cache`` would)."""
    with CacheStore(index_path(cache_dir), cache_dir) as store:
        entry = store.by_url(url)
        return store.object_path(entry.digest) if entry is not None and entry.cached else None


# -- 1. cache hit ------------------------------------------------------------------------------------


def bench_hit(args: argparse.Namespace, base: Path, checks: Checks) -> None:
    header(
        f"1. cache hit: shoal get of a {fmt(args.size)} file, same filesystem (target median < {HIT_TARGET} s)",
        ["--only", "hit", "--size", size_arg(args.size), "--runs", str(args.runs)],
    )
    with node(base / "hit", capacity=2 * args.size + 64 * MIB) as n:
        sha = write_random_file(n.origin_root / "hit.bin", args.size)
        url = n.url("hit.bin")
        dests = base / "hit" / "dest"
        dests.mkdir()
        same_fs = os.stat(dests).st_dev == os.stat(n.cache_dir).st_dev
        print(f"cache {n.cache_dir}, destinations {dests} (same filesystem: {'yes' if same_fs else 'NO'})")

        miss = shoal_get(url, dests / "miss.bin", n.socket)
        print(f"miss: {miss.wall:.2f} s process, daemon reported {miss.daemon_seconds or '?'} s")
        print(f"  stderr: {miss.stderr}")
        checks.check(miss.returncode == 0 and "cache hit" not in miss.stderr, "the first get fetched (a miss)")

        baseline = [timed([sys.executable, "-c", "pass"]).wall for _ in range(args.runs)]
        hits: list[Run] = []
        for i in range(args.runs):
            hit = shoal_get(url, dests / f"hit{i}.bin", n.socket)
            hits.append(hit)
            ok = hit.returncode == 0 and "cache hit" in hit.stderr
            reported = "?" if hit.daemon_seconds is None else f"{hit.daemon_seconds:.2f}"
            print(f"hit {i + 1}: {hit.wall:.3f} s process, daemon {reported} s{'' if ok else '; ' + hit.stderr}")
        checks.check(all(h.returncode == 0 and "cache hit" in h.stderr for h in hits), "every hit says 'cache hit'")
        print(f"last hit's stderr: {hits[-1].stderr}")

        walls = [h.wall for h in hits]
        own = [s for h in hits if (s := h.daemon_seconds) is not None]
        print(f"\nshoal get on a hit, whole process ({len(walls)} runs): {spread(walls)}")
        if own:
            print(f"daemon's own seconds (its 'in N.NNs', 2 decimals): {spread(own)}")
        print(f"python -c pass alone ({len(baseline)} runs): {spread(baseline)}")

        obj = object_of(n.cache_dir, url)
        placed = [dests / "miss.bin", *(dests / f"hit{i}.bin" for i in range(args.runs))]
        if obj is not None:
            inode = obj.stat().st_ino
            linked = all(p.exists() and p.stat().st_ino == inode for p in placed)
            print(f"cache object {obj}: inode {inode}, {obj.stat().st_nlink} links")
        else:
            linked = False
            print("cache object: not found in the daemon's index")
        checks.check(linked, "every destination is a hard link to the cache object")
        checks.check(all(p.exists() and p.stat().st_size == args.size for p in placed), "every destination's size")
        checks.check(sha256_file(placed[-1]) == sha, f"SHA-256 of {placed[-1].name}")
        verdict(
            f"hit under {HIT_TARGET} s (median of the whole process, {statistics.median(walls):.3f} s)",
            statistics.median(walls) < HIT_TARGET,
        )


# -- 2. churn ----------------------------------------------------------------------------------------


@dataclass
class Peak:
    """The largest usage a sampler saw; updated from one thread, read once it has stopped."""

    usage: int = 0
    disk: int = 0
    samples: int = 0


def disk_bytes(storage: Path) -> int:
    """Bytes of the files under ``objects/`` and ``staging/`` (a staging file counts as far as written)."""
    total = 0
    for sub in ("objects", "staging"):
        for root, _dirs, files in os.walk(storage / sub):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(root, name)).st_size
    return total


def sample_usage(index: Path, storage: Path, stop: threading.Event, peak: Peak) -> None:
    """Read usage through a second CacheStore on the same index every SAMPLE_CHURN seconds until ``stop``."""
    with CacheStore(index, storage) as watcher:
        while not stop.is_set():
            usage = watcher.usage()
            peak.usage = max(peak.usage, usage.used + usage.reserved)
            peak.disk = max(peak.disk, disk_bytes(storage))
            peak.samples += 1
            stop.wait(SAMPLE_CHURN)


def bench_churn(args: argparse.Namespace, base: Path, checks: Checks) -> None:
    capacity = args.churn_capacity
    header(
        f"2. churn: CacheStore of {fmt(capacity)} taking {CHURN_FACTOR}x its capacity (target never above capacity)",
        ["--only", "churn", "--churn-capacity", size_arg(capacity)],
    )
    rng = random.Random(CHURN_SEED)
    low, high = CHURN_SIZES[0], min(CHURN_SIZES[1], capacity)
    pool = rng.randbytes(high)  # each file: a unique 8-byte prefix, then a slice of this
    storage, sources = base / "churn" / "cache", base / "churn" / "sources"
    sources.mkdir(parents=True)
    index = index_path(storage)

    puts = put_bytes = 0
    put_seconds = 0.0
    after_put = 0
    peak = Peak()
    stop = threading.Event()
    with CacheStore(index, storage, capacity) as store:
        sampler = threading.Thread(target=sample_usage, args=(index, storage, stop, peak), daemon=True)
        sampler.start()
        try:
            while put_bytes < CHURN_FACTOR * capacity:
                size = rng.randint(max(low, 8), high)
                source = sources / f"file{puts}.bin"
                start = rng.randrange(0, len(pool) - size + 9)
                source.write_bytes(puts.to_bytes(8, "big") + pool[start : start + size - 8])
                began = time.perf_counter()
                store.put(source, name=source.name)
                put_seconds += time.perf_counter() - began
                source.unlink()
                puts += 1
                put_bytes += size
                usage = store.usage()
                after_put = max(after_put, usage.used + usage.reserved)
        finally:
            stop.set()
            sampler.join()
        final = store.usage()
        evicted = sum(1 for e in store.entries() if not e.cached)

    highest = max(after_put, peak.usage)
    print(f"puts: {puts} files of {fmt(low)}-{fmt(high)} (seed {CHURN_SEED}), {fmt(put_bytes)} in all")
    print(f"capacity: {fmt(capacity)} ({capacity} B)")
    print(f"max used + reserved after a put: {fmt(after_put)} ({after_put / capacity:.3f} of capacity)")
    print(
        f"max used + reserved sampled every {SAMPLE_CHURN * 1000:g} ms by a second store ({peak.samples} samples): "
        f"{fmt(peak.usage)} ({peak.usage / capacity:.3f})"
    )
    print(f"max bytes on disk (objects/ + staging/), same samples: {fmt(peak.disk)} ({peak.disk / capacity:.3f})")
    print(f"at the end: {final.files} files cached, {fmt(final.used)} used, {fmt(final.reserved)} reserved")
    print(f"evictions: {evicted} entries no longer cached (of {puts} put)")
    print(f"put throughput: {put_bytes / put_seconds / 1e6:.0f} MB/s ({put_seconds:.2f} s in put: copy, fsync, hash)")
    never_above = highest <= capacity and peak.disk <= capacity
    print(f"never above capacity: {'yes' if never_above else 'no'}")
    checks.check(final.reserved == 0, "no reservation left at the end")
    verdict(f"never above capacity (highest {highest / capacity:.3f} of it)", never_above)


# -- 3. daemon RSS while serving peers ---------------------------------------------------------------


def wait_seeding(socket: Path, timeout: float = 30.0) -> list[str]:
    """The daemon's seeded task ids, once it reports at least one (or after ``timeout``)."""
    client = DaemonClient(socket, timeout=10)
    deadline = time.monotonic() + timeout
    while True:
        seeding = client.status().seeding
        if seeding or time.monotonic() > deadline:
            return seeding
        time.sleep(0.1)


def bench_rss(args: argparse.Namespace, base: Path, checks: Checks) -> None:
    header(
        f"3. daemon RSS while {args.peers} peers fetch a {fmt(args.serve_size)} file from it "
        f"(target peak < {RSS_TARGET / 1e6:.0f} MB)",
        ["--only", "rss", "--serve-size", size_arg(args.serve_size), "--peers", str(args.peers)],
    )
    peers: list[subprocess.Popen[bytes]] = []
    with node(base / "rss", capacity=2 * args.serve_size + 64 * MIB) as n:
        try:
            sha = write_random_file(n.origin_root / "serve.bin", args.serve_size)
            url = n.url("serve.bin")
            out = base / "rss" / "peers"
            out.mkdir()
            fetch = shoal_get(url, out / "daemon-copy.bin", n.socket)
            print(f"daemon's fetch: {fetch.wall:.2f} s; {fetch.stderr}")
            checks.check(fetch.returncode == 0, "the daemon fetched the file")
            seeding = wait_seeding(n.socket)
            checks.check(bool(seeding), f"the daemon seeds it ({len(seeding)} task(s))")

            pid = n.daemon.proc.pid
            before = proc_status(pid)
            hwm_reset = reset_hwm(pid)
            print(
                f"daemon before the peers: VmRSS {before.get('VmRSS', 0) / 1e6:.1f} MB, VmHWM so far (its fetch "
                f"included) {before.get('VmHWM', 0) / 1e6:.1f} MB; VmHWM reset: {'yes' if hwm_reset else 'no'}"
            )
            origin0, cpu0 = origin_bytes(n.origin), process_cpu_seconds(pid)
            argv = ["get", url, "--tracker", n.tracker.url, "--no-daemon", "--upload-time", "0"]
            started = time.perf_counter()
            for i in range(args.peers):
                with open(out / f"peer{i}.log", "wb") as peer_log:
                    peers.append(
                        subprocess.Popen(
                            shoal_argv(*argv, "-o", str(out / f"peer{i}.bin")),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=peer_log,
                        )
                    )
            peak_rss, samples = 0, 0
            while any(p.poll() is None for p in peers):
                peak_rss = max(peak_rss, proc_status(pid).get("VmRSS", 0))
                samples += 1
                if time.perf_counter() - started > PEER_TIMEOUT:
                    print(f"peers still running after {PEER_TIMEOUT:.0f} s: killing them")
                    break
                time.sleep(SAMPLE_RSS)
            elapsed = time.perf_counter() - started
            after = proc_status(pid)
            peak_rss = max(peak_rss, after.get("VmRSS", 0))
            origin_sent, cpu = origin_bytes(n.origin) - origin0, process_cpu_seconds(pid) - cpu0
        finally:
            for p in peers:
                if p.poll() is None:
                    p.kill()
                p.wait()

        for i, p in enumerate(peers):
            text = (out / f"peer{i}.log").read_text(errors="replace").strip()
            split = _PEER_SPLIT.search(text)
            detail = f"origin {split[1]}, peers {split[2]}" if split else text[-300:]
            print(f"peer {i}: exit {p.returncode}; {detail}")
        hwm = after.get("VmHWM", 0)
        print(f"\nall {args.peers} peers done in {elapsed:.2f} s")
        print(f"daemon peak VmRSS (sampled every {SAMPLE_RSS * 1000:g} ms, {samples} samples): {peak_rss / 1e6:.1f} MB")
        print(f"daemon VmHWM at the end{' (since the reset)' if hwm_reset else ' (lifetime)'}: {hwm / 1e6:.1f} MB")
        print(f"daemon CPU while the peers ran: {cpu:.2f} s")
        print(
            f"origin bytes sent meanwhile: {fmt(origin_sent)} ({origin_sent / args.serve_size:.3f} of the file; "
            "each peer's identity probe is 1 B; the peers took the rest from the daemon and each other)"
        )
        files = [out / f"peer{i}.bin" for i in range(args.peers)]
        checks.check(all(p.returncode == 0 for p in peers), "every peer exited 0")
        checks.check(all(f.exists() and f.stat().st_size == args.serve_size for f in files), "every peer's size")
        checks.check(sha256_file(files[0]) == sha, f"SHA-256 of {files[0].name}")
        peak = max(peak_rss, hwm if hwm_reset else 0)
        verdict(f"daemon RSS under {RSS_TARGET / 1e6:.0f} MB (peak {peak / 1e6:.1f} MB)", peak < RSS_TARGET)


# -- main --------------------------------------------------------------------------------------------


def parse_only(values: list[str] | None) -> list[str]:
    chosen = [name.strip() for value in values or [] for name in value.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"--only takes {', '.join(BENCHMARKS)}, not {', '.join(unknown)}")
    return [name for name in BENCHMARKS if name in chosen] if chosen else list(BENCHMARKS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="file of the hit (default 1G)")
    parser.add_argument("--runs", type=int, default=7, help="hits timed (default 7)")
    parser.add_argument("--churn-capacity", type=parse_size, default=256 * MIB, help="churn cache (default 256M)")
    parser.add_argument("--serve-size", type=parse_size, default=256 * MIB, help="file the peers fetch (default 256M)")
    parser.add_argument("--peers", type=int, default=8, help="concurrent peers (default 8)")
    parser.add_argument(
        "--only", action="append", metavar="NAME[,NAME]", help=f"run only these ({', '.join(BENCHMARKS)}); repeatable"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("/var/tmp"), help="a fresh directory is made under it (default /var/tmp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the fresh directory (logs, cache) at the end")
    args = parser.parse_args()
    if args.runs < 1 or args.peers < 1:
        parser.error("--runs and --peers must be at least 1")
    chosen = parse_only(args.only)

    base = Path(tempfile.mkdtemp(prefix="shoal-cachebench-", dir=args.workdir))
    print(f"work directory: {base}", flush=True)
    checks = Checks()
    parts = {"hit": bench_hit, "churn": bench_churn, "rss": bench_rss}
    try:
        for name in chosen:
            parts[name](args, base, checks)
    finally:
        if args.keep:
            print(f"\nkept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if checks.failed:
        print(f"\nFAILED checks: {'; '.join(checks.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
