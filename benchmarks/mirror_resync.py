#!/usr/bin/env python3
"""A mirror re-synced with 1% of its files changed: what the seeder hashes again, and how long the sync takes.

1. An upstream of ``--files`` files totalling ``--size`` bytes (100 files per directory, random bytes) is
   served by Debian's rsync daemon on loopback (``shoal.testing.rsyncd``).
2. A ``shoal seed`` process watches the mirror directory, with a fresh hash index.
3. The rsync provider syncs the job (versions layout: ``shoal.mirror.runner.run_attempt``, as the worker
   runs it) and the seeder publishes the version; then ``--changed`` of the files (1%) are rewritten
   upstream with new bytes of the same size and a later mtime, and the job is synced again: rsync
   hard-links the unchanged files from the first version (``--link-dest``).
4. Once the seeder has published the second version, the bytes it hashed for it (``hashed_bytes`` of
   ``/v1/seeder/health``, after minus before) are compared with the bytes changed (target: at most 1.1x).
5. The same change is synced by a bare ``rsync -a --link-dest=<first version>`` into a fresh directory;
   the second sync's wall time is compared with it (target: at most 1.5x).

Run it (from the repository; no root needed; the work directory needs about 2.1x ``--size`` free)::

    python3 benchmarks/mirror_resync.py                      # 10,000 files, 5 GiB
    python3 benchmarks/mirror_resync.py --files 1000 --size 512M
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from shoal.core import units
from shoal.core.errors import ShoalError
from shoal.core.mirror_config import JobSpec
from shoal.mirror.run_log import LogPlace
from shoal.mirror.runner import AttemptResult, current_version, run_attempt
from shoal.testing.poll import wait_until
from shoal.testing.processes import compile_bytecode, start_seeder
from shoal.testing.rsyncd import RSYNC, Module, rsync_daemon

HASHED_TARGET = 1.1
TIME_TARGET = 1.5
PER_DIRECTORY = 100


def _size(text: str) -> int:
    try:
        return units.parse_size(text)
    except ShoalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _health(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/v1/seeder/health", timeout=30) as resp:
        return json.load(resp)  # type: ignore[no-any-return]


def _name(index: int) -> Path:
    return Path(f"d{index // PER_DIRECTORY:04d}") / f"f{index:06d}.bin"


def write_upstream(root: Path, files: int, size: int) -> list[int]:
    """``files`` random files of about ``size / files`` bytes each under ``root``; their sizes."""
    each, extra = divmod(size, files)
    sizes = [each + (1 if i < extra else 0) for i in range(files)]
    for index, length in enumerate(sizes):
        path = root / _name(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(length))
    return sizes


def change(root: Path, indexes: list[int], sizes: list[int]) -> int:
    """Rewrite the files ``indexes`` with new bytes of the same size, 10 s later than before; bytes changed."""
    for index in indexes:
        path = root / _name(index)
        later = path.stat().st_mtime_ns + 10**10
        path.write_bytes(os.urandom(sizes[index]))
        os.utime(path, ns=(later, later))
    return sum(sizes[index] for index in indexes)


def timed_sync(spec: JobSpec, job_dir: Path, logs: Path) -> tuple[AttemptResult, float]:
    started = time.perf_counter()
    result = asyncio.run(run_attempt(spec, job_dir, logs=LogPlace(logs)))
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"the sync failed: {result.error}")
    return result, elapsed


def published(url: str, files: int) -> dict[str, float]:
    def ready() -> dict[str, float] | None:
        health = _health(url)
        return health if health["files"] >= files and health["pending"] == 0 else None

    return wait_until(ready, f"{files} files published", timeout=3600, interval=0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files in the mirror (default 10000)")
    parser.add_argument("--size", type=_size, default=units.parse_size("5G"), help="all files together (default 5G)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of the files changed (default 0.01)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="rsync-mirror-resync-", dir=args.workdir))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    upstream, mirror = work / "upstream", work / "mirror"
    mirror.mkdir()
    print(f"writing {args.files} files, {units.format_bytes(args.size)} upstream ...", flush=True)
    sizes = write_upstream(upstream, args.files, args.size)
    # The seeder's log goes to a file: publishing 20,000 files at once makes its embedded tracker shed load
    # (503s, retried), one warning a time.
    seeder = start_seeder(mirror, state_dir=work / "seeder-state", log=args.workdir / "rsync-mirror-resync-seeder.log")
    try:
        with rsync_daemon(work / "rsyncd", {"pub": Module(upstream)}) as daemon:
            spec = JobSpec(name="bench", provider="rsync", upstream=daemon.url("pub"), timeout=86400)
            job_dir = mirror / "bench"
            _, first_time = timed_sync(spec, job_dir, work / "logs")
            first_version = current_version(job_dir)
            assert first_version is not None
            before = published(seeder.url, args.files)
            print(f"first sync: {first_time:.1f} s; seeder hashed {units.format_bytes(before['hashed_bytes'])}")

            indexes = random.Random(1).sample(range(args.files), max(1, round(args.files * args.changed)))
            changed = change(upstream, indexes, sizes)
            _, second_time = timed_sync(spec, job_dir, work / "logs")
            after = published(seeder.url, 2 * args.files)
            hashed = after["hashed_bytes"] - before["hashed_bytes"]

            bare = work / "bare"
            started = time.perf_counter()
            subprocess.run(
                [RSYNC, "-a", f"--link-dest={first_version}", daemon.url("pub"), f"{bare}/"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            bare_time = time.perf_counter() - started
    finally:
        seeder.stop()
    hashed_ratio = hashed / changed
    time_ratio = second_time / bare_time
    print(f"changed: {len(indexes)} files, {units.format_bytes(changed)} ({changed} bytes)")
    print(
        f"second sync: hashed {units.format_bytes(hashed)} ({hashed} bytes): {hashed_ratio:.3f}x the change "
        f"(target at most {HASHED_TARGET}x): {'met' if hashed_ratio <= HASHED_TARGET else 'MISSED'}"
    )
    print(
        f"second sync: {second_time:.2f} s; bare rsync -a --link-dest: {bare_time:.2f} s: {time_ratio:.2f}x "
        f"(target at most {TIME_TARGET}x): {'met' if time_ratio <= TIME_TARGET else 'MISSED'}"
    )
    return 0 if hashed_ratio <= HASHED_TARGET and time_ratio <= TIME_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
