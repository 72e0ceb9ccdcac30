#!/usr/bin/env python3
"""``shoal get -o -``: the file streamed to stdout, its rate and the peak memory of the process.

On loopback, no rate cap: ``python -m shoal.testing.origin`` serves a random file of ``--size`` bytes from a
fresh directory under ``--workdir``; ``shoal get URL -o - --no-daemon`` (straight from the origin, the
stream following the verified prefix) writes it into a pipe this script reads and hashes. Printed per
repetition: wall time (process start to exit), MB/s, the process's peak RSS (``ru_maxrss`` from wait4;
target under 150 MB for 2 GiB), and whether the streamed bytes' SHA-256 matches the file's. For reference,
``curl -sS URL`` into the same reader.

``--from-peer``: through the swarm instead. A ``shoal tracker`` on a fresh SQLite database and one seeding
peer (``shoal get URL --tracker T -o FILE --upload-time 3600``) that fetched the file first; the measured
``shoal get URL --tracker T -o - --no-origin --upload-time 0`` then takes every piece from that peer
(``--no-origin``: not a request to the origin), and the bytes the origin sent meanwhile (``/_stats``) are
printed to show it.

    python3 benchmarks/stream_stdout.py                 # 2 GiB
    python3 benchmarks/stream_stdout.py --from-peer     # 2 GiB, every byte from a peer
    python3 benchmarks/stream_stdout.py --size 256M --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netlab import parse_size

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))
from shoal.testing.processes import Service, start_tracker  # noqa: E402

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


def origin_bytes(base: str) -> int:
    with urllib.request.urlopen(f"{base}/_stats", timeout=10) as reply:
        return int(json.load(reply)["bytes_sent"])


def start_seeding_peer(url: str, tracker: str, work: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A peer that fetches the file (through the tracker's leases) and keeps serving it; returned once the
    file is in place, which ``shoal get`` does only when every piece is verified."""
    held = work / "held.bin"
    argv = [sys.executable, "-m", "shoal", "get", url, "--tracker", tracker, "-o", str(held)]
    peer = subprocess.Popen([*argv, "--upload-time", "3600", "--no-daemon", "-q"], stderr=subprocess.DEVNULL, env=env)
    while not held.exists():
        if peer.poll() is not None:
            raise SystemExit(f"the seeding peer exited {peer.returncode} before its file was in place")
        time.sleep(0.1)
    return peer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="2G", help="file size (default 2G)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--from-peer", action="store_true", help="stream through the swarm, every byte from a peer")
    args = p.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="shoal-stream-bench-", dir=args.workdir))
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(work)}
    origin = None
    tracker: Service | None = None
    peer: subprocess.Popen[bytes] | None = None
    try:
        root = work / "origin"
        root.mkdir()
        expected = write_random(root / "f.bin", size)
        origin = subprocess.Popen(
            [sys.executable, "-m", "shoal.testing.origin", str(root)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert origin.stdout is not None
        base = origin.stdout.readline().split()[-1]
        url = base + "/f.bin"
        mb = size / 1e6
        shoal = [sys.executable, "-m", "shoal", "get", url, "-o", "-", "--no-daemon", "-q"]
        where = "straight from the origin"
        if args.from_peer:
            tracker = start_tracker(f"sqlite:///{work / 'tracker.db'}", interval=1.0, peer_ttl=30.0)
            peer = start_seeding_peer(url, tracker.url, work, env)
            shoal += ["--tracker", tracker.url, "--no-origin", "--upload-time", "0"]
            where = "from a seeding peer (--no-origin)"
        print(f"{size} bytes ({args.size}) on loopback, {where}, workdir {work}")
        for n in range(args.repeat):
            before = origin_bytes(base)
            seconds, got, code, rss = run(shoal, env)
            ok = "ok" if got == expected and code == 0 else f"MISMATCH (exit {code})"
            rate, peak = f"{mb / seconds:.0f} MB/s", f"peak RSS {rss / 1024:.0f} MB"
            sent = f"the origin sent {origin_bytes(base) - before} bytes meanwhile"
            print(f"[{n + 1}] shoal get -o -: {seconds:.2f} s, {rate}, {peak}, {ok}; {sent}")
            if shutil.which("curl") and not args.from_peer:
                seconds, got, code, _ = run(["curl", "-sS", url], env)
                ok = "ok" if got == expected else "MISMATCH"
                print(f"[{n + 1}] curl:           {seconds:.2f} s, {mb / seconds:.0f} MB/s, {ok}")
    finally:
        if peer is not None:
            peer.terminate()
            peer.wait()
        if tracker is not None:
            tracker.stop()
        if origin is not None:
            origin.terminate()
            origin.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
