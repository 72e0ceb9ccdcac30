#!/usr/bin/env python3
"""Single peer on loopback: how close one ``shoal get`` from one complete peer comes to plain curl.

No namespaces, no rate cap: everything on 127.0.0.1, files in a fresh directory under ``--workdir``
(default /tmp, a regular disk directory, not a tmpfs). Before every timed transfer a scratch file of the
file's size is written, flushed and deleted, and ``sync`` runs: each transfer starts with the machine's free
memory in the same state (see :func:`reset_memory`) and none pays for the writeback of the one before. The
page cache is not dropped: the source file is cached for every method alike.

1. ``python -m shoal.testing.origin DIR`` serves a random file of ``--size`` bytes (aiohttp FileResponse,
   sendfile), and ``shoal tracker`` runs on a fresh SQLite database.
2. curl: ``curl -sS -o FILE URL`` straight from the origin; wall time and rate.
3. A seeding peer: ``shoal get URL --tracker T --upload-time 3600 -q -o SEED`` runs to completion (it fetches
   from the origin through the tracker's leases) and keeps serving the file.
4. The measured peer: ``shoal get URL --tracker T -o OUT --upload-time 0`` (run without -q so that its closing
   line says how much came from the origin and from peers), under ``/usr/bin/time -v`` for its peak RSS
   ("Maximum resident set size") and CPU time. It should take everything from the seeding peer.

Printed per repetition: wall time and rate of curl and of the measured shoal get (process start to exit,
interpreter start-up included; shoal's own reported seconds beside it), shoal's rate over curl's (target
>= 0.7), its peak RSS (target < 150 MB), CPU seconds, bytes from origin and peers by its own count and
by the origin's counter, SHA-256 checks of every copy, and the CPU seconds the rest of the machine used
meanwhile (a check that nothing else competed for the cores). Also, as a reference: an fsync of curl's file
right after curl exits. ``shoal get`` flushes its file before renaming it into place, so its time includes
the disk's; curl leaves the writeback to the kernel. On a disk slower than the download, that is most of
the difference (the "durable" ratio compares curl plus its fsync with shoal get).

Run it (from the repository; no root needed)::

    python3 benchmarks/single_peer.py                  # 2 GiB
    python3 benchmarks/single_peer.py --size 256M --repeat 3 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from shoal.core import units
from shoal.core.errors import ShoalError
from shoal.testing.cpu import MachineCpu, process_cpu_seconds
from shoal.testing.files import sha256_file, write_random_file
from shoal.testing.processes import compile_bytecode

PYTHON = sys.executable
SHOAL = str(Path(PYTHON).with_name("shoal")) if Path(PYTHON).with_name("shoal").exists() else "shoal"
FILE_NAME = "payload.bin"
RATIO_TARGET = 0.7
RSS_TARGET = 150 * 10**6  # bytes ("under 150 MB")


def log(message: str) -> None:
    print(f"[single {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """argparse type for sizes like ``256M``: shoal's own parser (1024-based units)."""
    try:
        return units.parse_size(text)
    except ShoalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Processes:
    """Background processes started here, each in its own session; ``stop_all`` ends them by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {grace:g}s; SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc, grace=3.0)


def wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log_path.read_text(errors="replace"))
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"{log_path.name}: exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{log_path.name}: nothing matching {pattern!r} within {timeout}s")


def reset_memory(workdir: Path, size: int) -> None:
    """Put the machine's free memory in the same state before every timed transfer: write a scratch file of
    the transfer's size in order, flush it, delete it.

    On this VM the state decides much of a transfer's time. Freed memory goes back to the host after about
    2 s (``/sys/module/page_reporting``), and writing into pages the host took back is slow: 2 GiB go into
    the page cache in 0.4 s right after 2 GiB were freed and in 2-6 s once the host has them. Which pages
    are taken back also depends on how the freed file was written. Measured, a ``shoal get`` that followed a
    deleted curl copy took 6.9-7.7 s, one that followed a deleted ``shoal get`` copy 4.3-5.2 s: without this
    step, whichever of the pair runs second is measured in the state the other left."""
    scratch = workdir / "scratch.bin"
    block = memoryview(bytes(4 << 20))
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, size, len(block)):
            os.write(fd, block[: size - offset])
        os.fsync(fd)
    finally:
        os.close(fd)
    scratch.unlink()


def flush(path: Path) -> float:
    """Seconds an fsync of ``path`` takes: the writeback its writer left to the kernel."""
    started = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started


def origin_bytes(origin: str) -> int:
    with urllib.request.urlopen(f"{origin}/_stats", timeout=5) as resp:
        return int(json.load(resp)["bytes_sent"])


@dataclass
class Timed:
    wall_s: float
    returncode: int
    peak_rss: int | None
    cpu_s: float | None
    background_cpu_s: float
    """CPU seconds of the origin, tracker and seeding peer while it ran."""
    outside_cpu_s: float
    output: str


def timed(argv: list[str], workdir: Path, name: str, size: int, timeout: float, procs: Processes) -> Timed:
    """Run ``argv`` to its end under /usr/bin/time -v, after :func:`reset_memory` of ``size`` bytes: wall
    time, peak RSS, CPU seconds and its stderr.

    ``outside_cpu_s`` is what the rest of the machine (kernel threads included) ran meanwhile, less this
    command and the background processes of ``procs``: near 0 on a quiet machine.
    """
    sys_time = workdir / f"{name}.time"
    out_path = workdir / f"{name}.log"
    reset_memory(workdir, size)
    subprocess.run(["sync"], check=False)
    background0 = sum(process_cpu_seconds(p.pid) for p in procs.procs)
    machine0 = MachineCpu.sample()
    started = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.run(
            ["/usr/bin/time", "-v", "-o", str(sys_time), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    wall = time.monotonic() - started
    machine = (MachineCpu.sample() - machine0).tasks
    background = sum(process_cpu_seconds(p.pid) for p in procs.procs) - background0
    report = sys_time.read_text(errors="replace") if sys_time.exists() else ""
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    user = re.search(r"User time \(seconds\): ([\d.]+)", report)
    system = re.search(r"System time \(seconds\): ([\d.]+)", report)
    cpu = float(user[1]) + float(system[1]) if user and system else None
    return Timed(
        wall_s=wall,
        returncode=proc.returncode,
        peak_rss=int(rss[1]) * 1024 if rss else None,
        cpu_s=cpu,
        background_cpu_s=background,
        outside_cpu_s=max(0.0, machine - background - (cpu or 0.0)),
        output=out_path.read_text(errors="replace"),
    )


@dataclass
class Repetition:
    run: int
    curl_s: float
    curl_rate: float
    curl_ok: bool
    shoal_s: float
    shoal_rate: float
    shoal_reported_s: float | None
    shoal_ok: bool
    ratio: float
    ratio_own: float | None
    """curl's wall time over the time shoal reports itself (its interpreter start-up left out)."""
    peak_rss: int | None
    shoal_cpu_s: float | None
    background_cpu_s: float
    """Origin, tracker and seeding peer, during the timed shoal get."""
    outside_cpu_s: float
    """Everything else on the machine during the timed curl and shoal get together: ~0 when quiet."""
    curl_cpu_s: float | None
    curl_flush_s: float
    """An fsync of curl's file right after curl exits: the disk work curl leaves behind and shoal get does
    before its rename (it flushes the file before moving it into place)."""
    ratio_durable: float
    """curl's time plus that fsync, over shoal's: both runs then end with the file on disk."""
    shoal_from_origin: str
    shoal_from_peers: str
    origin_bytes_during_shoal: int


_SUMMARY = re.compile(r"in ([\d.]+)s \(origin ([^,]+), peers ([^)]+)\)")


def run(args: argparse.Namespace, workdir: Path, procs: Processes) -> dict[str, object]:
    size = args.size
    origin_dir = workdir / "origin"
    origin_dir.mkdir()
    payload = origin_dir / FILE_NAME
    log(f"writing {size / 2**20:.0f} MiB of random data to {payload}")
    sha256 = write_random_file(payload, size)

    origin_log = workdir / "origin.log"
    origin_proc = procs.start(
        [PYTHON, "-m", "shoal.testing.origin", str(origin_dir), "--host", "127.0.0.1", "--port", "0"], origin_log
    )
    origin = wait_for_line(origin_proc, origin_log, r"origin listening on (http://\S+)")[1]
    url = f"{origin}/{FILE_NAME}"
    tracker_log = workdir / "tracker.log"
    options = f"--host 127.0.0.1 --port 0 --db sqlite:///{workdir / 'tracker.db'} --interval 1 --peer-ttl 5"
    tracker_proc = procs.start([SHOAL, "tracker", *options.split()], tracker_log)
    tracker = wait_for_line(tracker_proc, tracker_log, r"tracker listening on (http://[^\s]+)")[1]
    log(f"origin {url}, tracker {tracker}")
    verbose = [f"-{'v' * args.verbose}"] if args.verbose else []

    # The seeding peer: fetches from the origin (through the tracker's leases), then serves.
    seed = workdir / "seed.bin"
    seed_log = workdir / "seed.log"
    started = time.monotonic()
    seed_proc = procs.start(
        [SHOAL, "get", url, "--tracker", tracker, "--upload-time", "3600", "-q", "-o", str(seed), *verbose], seed_log
    )
    while not (seed.exists() and seed.stat().st_size == size):
        if seed_proc.poll() is not None:
            raise RuntimeError(f"the seeding shoal get exited ({seed_proc.returncode}):\n{seed_log.read_text()}")
        if time.monotonic() - started > args.timeout:
            raise RuntimeError(f"the seeding shoal get was not done within {args.timeout:.0f}s")
        time.sleep(0.02)
    seed_s = time.monotonic() - started
    seed_ok = sha256_file(seed) == sha256
    log(
        f"seeding peer complete in {seed_s:.2f} s ({size / seed_s / 2**20:.0f} MiB/s from the origin), "
        f"sha256 {'ok' if seed_ok else 'MISMATCH'}"
    )

    reps: list[Repetition] = []
    for rep in range(1, args.repeat + 1):
        curl_out = workdir / "curl.bin"
        curl = timed(["curl", "-sS", "-o", str(curl_out), url], workdir, f"curl{rep}", size, args.timeout, procs)
        curl_flush_s = flush(curl_out)
        curl_ok = curl.returncode == 0 and sha256_file(curl_out) == sha256
        curl_out.unlink(missing_ok=True)
        log(f"run {rep}: curl {curl.wall_s:.2f} s ({size / curl.wall_s / 2**20:.0f} MiB/s)")

        out = workdir / "out.bin"
        before = origin_bytes(origin)
        get = timed(
            [SHOAL, "get", url, "--tracker", tracker, "-o", str(out), "--upload-time", "0", *verbose],
            workdir,
            f"shoal{rep}",
            size,
            args.timeout,
            procs,
        )
        during = origin_bytes(origin) - before
        shoal_ok = get.returncode == 0 and sha256_file(out) == sha256
        out.unlink(missing_ok=True)
        summary = _SUMMARY.search(get.output)
        if get.returncode != 0:
            log(f"run {rep}: shoal get exited {get.returncode}:\n{get.output[-2000:]}")
        log(f"run {rep}: shoal get {get.wall_s:.2f} s ({size / get.wall_s / 2**20:.0f} MiB/s)")
        reps.append(
            Repetition(
                run=rep,
                curl_s=curl.wall_s,
                curl_rate=size / curl.wall_s,
                curl_ok=curl_ok,
                shoal_s=get.wall_s,
                shoal_rate=size / get.wall_s,
                shoal_reported_s=float(summary[1]) if summary else None,
                shoal_ok=shoal_ok,
                ratio=curl.wall_s / get.wall_s,
                ratio_own=curl.wall_s / float(summary[1]) if summary else None,
                peak_rss=get.peak_rss,
                shoal_cpu_s=get.cpu_s,
                background_cpu_s=get.background_cpu_s,
                outside_cpu_s=curl.outside_cpu_s + get.outside_cpu_s,
                curl_cpu_s=curl.cpu_s,
                curl_flush_s=curl_flush_s,
                ratio_durable=(curl.wall_s + curl_flush_s) / get.wall_s,
                shoal_from_origin=summary[2] if summary else "?",
                shoal_from_peers=summary[3] if summary else "?",
                origin_bytes_during_shoal=during,
            )
        )
    procs.stop(seed_proc)
    return {
        "setup": {"size": size, "workdir": str(workdir), "repeat": args.repeat},
        "seed": {"seconds": seed_s, "rate": size / seed_s, "ok": seed_ok},
        "runs": [asdict(r) for r in reps],
        "median_ratio": statistics.median(r.ratio for r in reps),
        "median_ratio_durable": statistics.median(r.ratio_durable for r in reps),
        "max_peak_rss": max((r.peak_rss or 0) for r in reps),
        "targets": {"ratio": RATIO_TARGET, "peak_rss": RSS_TARGET},
    }


def format_report(result: dict[str, object], size: int) -> str:
    mib = 2**20
    seed = result["seed"]
    assert isinstance(seed, dict)
    lines = [
        f"single peer on loopback: {size / mib:.0f} MiB file, origin = aiohttp FileResponse, files on disk "
        f"under {result['setup']['workdir']}",  # type: ignore[index]
        f"seeding peer (shoal get from the origin via tracker leases): {seed['seconds']:.2f} s, "
        f"{seed['rate'] / mib:.0f} MiB/s, sha256 {'ok' if seed['ok'] else 'MISMATCH'}",
        "",
        f"{'run':>3} {'curl s':>7} {'curl MiB/s':>10} {'shoal s':>8} {'(own)':>7} {'shoal MiB/s':>11} "
        f"{'ratio':>6} {'(own)':>6} {'peak RSS':>9} {'CPU s':>6} {'curl CPU':>8} {'from origin':>12} "
        f"{'from peers':>11} {'origin sent':>11} {'sha256':>7} {'seed CPU':>8} {'other':>5} {'curl fsync':>10} "
        f"{'durable':>7}",
    ]
    for r in result["runs"]:  # type: ignore[attr-defined]
        own = f"{r['shoal_reported_s']:.2f}" if r["shoal_reported_s"] is not None else "-"
        rss = f"{r['peak_rss'] / 1e6:.0f} MB" if r["peak_rss"] else "-"
        cpu = f"{r['shoal_cpu_s']:.1f}" if r["shoal_cpu_s"] is not None else "-"
        curl_cpu = f"{r['curl_cpu_s']:.1f}" if r["curl_cpu_s"] is not None else "-"
        ok = "ok" if r["curl_ok"] and r["shoal_ok"] else "BAD"
        ratio_own = f"{r['ratio_own']:.2f}" if r["ratio_own"] is not None else "-"
        lines.append(
            f"{r['run']:>3} {r['curl_s']:>7.2f} {r['curl_rate'] / mib:>10.0f} {r['shoal_s']:>8.2f} {own:>7} "
            f"{r['shoal_rate'] / mib:>11.0f} {r['ratio']:>6.2f} {ratio_own:>6} {rss:>9} {cpu:>6} {curl_cpu:>8} "
            f"{r['shoal_from_origin']:>12} {r['shoal_from_peers']:>11} {r['origin_bytes_during_shoal']:>11} {ok:>7} "
            f"{r['background_cpu_s']:>8.1f} {r['outside_cpu_s']:>5.1f} {r['curl_flush_s']:>10.2f} "
            f"{r['ratio_durable']:>7.2f}"
        )
    ratio, rss = result["median_ratio"], result["max_peak_rss"]
    assert isinstance(ratio, float) and isinstance(rss, int)
    lines += [
        "",
        "shoal s: wall time of the shoal get process (start-up included); (own): the time it reports itself;",
        "ratio: shoal rate / curl rate (own: by shoal's own time); origin sent: the origin's body-byte counter",
        "during the shoal get; CPU s: user + system of the shoal get (curl CPU: of curl); seed CPU: origin,",
        "tracker and seeding peer during the shoal get; other: CPU seconds of everything else on the machine",
        "during the timed curl and shoal get (more than a few: the machine was shared, the run is suspect);",
        "curl fsync: an fsync of curl's file right after it exits (shoal get flushes its file before the",
        "rename; curl leaves that to the kernel); durable: (curl s + curl fsync) / shoal s.",
        f"targets: ratio >= {RATIO_TARGET} -> median {ratio:.2f} {'met' if ratio >= RATIO_TARGET else 'MISSED'}; "
        f"peak RSS < {RSS_TARGET / 1e6:.0f} MB -> max {rss / 1e6:.0f} MB {'met' if rss < RSS_TARGET else 'MISSED'}",
        f"(the durable ratio, median {result['median_ratio_durable']:.2f}, is a reference, not the target)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One shoal get from one complete peer vs curl, on loopback.")
    parser.add_argument("--size", type=parse_size, default=2 << 30, help="file size, e.g. 2G, 256M (default 2G)")
    parser.add_argument("--repeat", type=int, default=1, help="timed curl and shoal get pairs (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for one transfer")
    parser.add_argument("--workdir", default="/tmp", help="parent of the run's directory (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs; copies are deleted)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="run shoal get with -v (or -vv)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.repeat < 1:
        parser.error("--size and --repeat must be positive")
    if not Path("/usr/bin/time").exists():
        sys.exit("needs /usr/bin/time (apt-get install -y time)")
    compile_bytecode()  # shoal get starts as an installed shoal does, from bytecode
    workdir = Path(tempfile.mkdtemp(prefix="shoal-single-", dir=args.workdir))
    procs = Processes()
    keep = args.keep

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        result = run(args, workdir, procs)
    except (KeyboardInterrupt, RuntimeError, subprocess.TimeoutExpired) as exc:
        keep = True
        log(f"stopped: {exc or type(exc).__name__}")
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        procs.stop_all()
        for big in ("origin", "seed.bin", "out.bin", "curl.bin"):
            path = workdir / big
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if keep:
            log(f"kept {workdir} (logs)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else format_report(result, args.size))
    runs = result["runs"]
    assert isinstance(runs, list)
    return 0 if all(r["curl_ok"] and r["shoal_ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
