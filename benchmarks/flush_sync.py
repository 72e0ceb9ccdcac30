#!/usr/bin/env python3
"""fsync against fdatasync for the flush before a download is placed (storage.partfile.PartFile.sync).

Each of ``--writers`` processes writes a part file of ``--size`` as PartFile does (``ftruncate`` to the
length first, 512 KiB pieces in random order, ``sync_file_range`` started after each unless
``--no-writeback``), all at once, then flushes it with fsync or fdatasync; rounds alternate the two calls.
Printed per call: the median, smallest and largest over the rounds of the slowest writer's flush.

    python3 benchmarks/flush_sync.py --dir /tmp --size 128M --rounds 6
    python3 benchmarks/flush_sync.py --dir /tmp --writers 8 --size 16M --rounds 10
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import parse_size
from shoal.storage import writeback

PIECE = 512 * 1024


def write_and_flush(job: tuple[str, int, str, bool, float]) -> float:
    """One part file written and flushed with ``call``; the flush's seconds."""
    path, size, call, hint, start_at = job
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        piece = min(PIECE, size)
        order = list(range(size // piece))
        random.shuffle(order)
        data = os.urandom(piece)
        time.sleep(max(0.0, start_at - time.time()))  # the writers start together
        for index in order:
            os.pwrite(fd, data, index * piece)
            if hint:
                writeback.start(fd, index * piece, piece)
        began = time.perf_counter()
        getattr(os, call)(fd)
        return time.perf_counter() - began
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the part files go")
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--size", type=parse_size, default=parse_size("128M"), help="each part file")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each call")
    parser.add_argument("--no-writeback", action="store_true", help="no sync_file_range while writing")
    args = parser.parse_args()
    if args.writers < 1 or args.rounds < 1 or args.size < 1 or not args.dir.is_dir():
        parser.error("--writers, --rounds and --size must be positive and --dir a directory")
    times: dict[str, list[float]] = {"fsync": [], "fdatasync": []}
    with multiprocessing.Pool(args.writers) as pool:
        for n in range(args.rounds):
            for call in ("fsync", "fdatasync") if n % 2 == 0 else ("fdatasync", "fsync"):
                os.sync()  # the last round's writeback must not land on this one
                start_at = time.time() + 0.3
                jobs = [
                    (str(args.dir / f"flush-{os.getpid()}-{i}.part"), args.size, call, not args.no_writeback, start_at)
                    for i in range(args.writers)
                ]
                times[call].append(max(pool.map(write_and_flush, jobs)))
    for call, values in times.items():
        print(
            f"{args.writers} writer(s) x {args.size >> 20} MiB, slowest flush, {call}: median "
            f"{statistics.median(values) * 1e3:.1f} ms, min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f} "
            f"({len(values)} rounds)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
