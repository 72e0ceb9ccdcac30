#!/usr/bin/env python3
"""``shoal get -o -``: the file streamed to stdout, its rate and the peak memory of the process.

On loopback, no rate cap: ``python -m shoal.testing.origin`` serves a random file of ``--size`` bytes from a
fresh directory under ``--workdir``; ``shoal get URL -o - --no-daemon`` (straight from the origin, the
stream following the verified prefix) writes it into a pipe this script reads and hashes. Printed per
repetition: wall time (process start to exit), MB/s, the process's peak RSS (``ru_maxrss`` from wait4;
target under 150 MB for 2 GiB), and whether the streamed bytes' SHA-256 matches the file's. For reference,
``curl -sS URL`` into the same reader.

    python3 benchmarks/stream_stdout.py                 # 2 GiB
    python3 benchmarks/stream_stdout.py --size 256M --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netlab import parse_size

SRC = Path(__file__).resolve().parent.parent / "src"
CHUNK = 1 << 20


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 16 << 20))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def run(argv: list[str], env: dict[str, str]) -> tuple[float, str, int, int]:
    """Wall seconds, SHA-256 of stdout, exit status and peak RSS (KiB) of ``argv``."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    digest = hashlib.sha256()
    while block := proc.stdout.read(CHUNK):
        digest.update(block)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, digest.hexdigest(), proc.returncode, usage.ru_maxrss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="2G", help="file size (default 2G)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = p.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="shoal-stream-bench-", dir=args.workdir))
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(work)}
    origin = None
    try:
        root = work / "origin"
        root.mkdir()
        expected = write_random(root / "f.bin", size)
        origin = subprocess.Popen(
            [sys.executable, "-m", "shoal.testing.origin", str(root)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert origin.stdout is not None
        url = origin.stdout.readline().split()[-1] + "/f.bin"
        mb = size / 1e6
        print(f"{size} bytes ({args.size}) on loopback, workdir {work}")
        for n in range(args.repeat):
            shoal = [sys.executable, "-m", "shoal", "get", url, "-o", "-", "--no-daemon", "-q"]
            seconds, got, code, rss = run(shoal, env)
            ok = "ok" if got == expected and code == 0 else f"MISMATCH (exit {code})"
            rate, peak = f"{mb / seconds:.0f} MB/s", f"peak RSS {rss / 1024:.0f} MB"
            print(f"[{n + 1}] shoal get -o -: {seconds:.2f} s, {rate}, {peak}, {ok}")
            if shutil.which("curl"):
                seconds, got, code, _ = run(["curl", "-sS", url], env)
                ok = "ok" if got == expected else "MISMATCH"
                print(f"[{n + 1}] curl:           {seconds:.2f} s, {mb / seconds:.0f} MB/s, {ok}")
    finally:
        if origin is not None:
            origin.terminate()
            origin.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
