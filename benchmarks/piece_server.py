#!/usr/bin/env python3
"""Piece server: the CPU one peer spends serving a run of pieces to another.

A swarm peer serves hundreds of small runs (one to a few pieces each) while it downloads, on the same cores
as everything else, so the server's cost per request matters as much as its bulk rate. This measures it
alone, on loopback:

1. A child process runs a ``PieceServer`` (the one ``shoal get`` and the daemon use) publishing a random
   file of ``--pieces`` pieces of ``--piece-kib`` KiB, all verified.
2. This process fetches ``--requests`` one-piece runs (``GET /v1/tasks/ID/data?gen=1`` with a piece-aligned
   Range, piece indexes in turn), ``--concurrency`` at a time over one keep-alive aiohttp session, after
   200 requests of warm-up.
3. Printed per repetition: the server process's CPU seconds (user + system, from /proc) over the timed
   requests, that per request, and the wall time of the timed requests.

Run it (from the repository; no root needed)::

    python3 benchmarks/piece_server.py                         # 3,000 requests of 512 KiB, 4 at a time
    python3 benchmarks/piece_server.py --repeat 3 --json

To compare with another commit, put its ``src/`` first on the path (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.testing.cpu import process_cpu_seconds
from shoal.testing.processes import compile_bytecode, start_service

TASK = "ab" * 20
WARM_UP = 200


def serve(path: Path, piece_length: int) -> None:
    """The child: serve every piece of ``path``; say where once listening."""
    from shoal.peer.server import PieceServer

    manifest = Manifest(OriginIdentity(path.stat().st_size), piece_length)

    async def run() -> None:
        server = PieceServer()
        port = await server.start("127.0.0.1", 0)
        server.publish(TASK, 1, manifest, path, Bitfield.of(manifest.piece_count, range(manifest.piece_count)))
        print(f"piece server listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


async def fetch(port: int, manifest: Manifest, requests: int, concurrency: int) -> None:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/tasks/{TASK}/data?gen=1"
    next_request = 0
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal next_request
            while next_request < requests:
                index = next_request % manifest.piece_count
                next_request += 1
                start, end = manifest.span(index, 1)
                async with session.get(url, headers={"Range": f"bytes={start}-{end - 1}"}) as response:
                    body = await response.read()
                if response.status != 206 or len(body) != end - start:
                    raise SystemExit(f"piece {index}: HTTP {response.status}, {len(body)} bytes")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    path = workdir / "payload.bin"
    piece_length = args.piece_kib * 1024
    if not path.exists():
        path.write_bytes(os.urandom(piece_length * args.pieces))
    manifest = Manifest(OriginIdentity(path.stat().st_size), piece_length)
    child = start_service([sys.executable, __file__, "--serve", str(path), str(piece_length)])
    try:
        port = int(child.url.rsplit(":", 1)[1])
        asyncio.run(fetch(port, manifest, WARM_UP, args.concurrency))
        cpu0, t0 = process_cpu_seconds(child.proc.pid), time.monotonic()
        asyncio.run(fetch(port, manifest, args.requests, args.concurrency))
        seconds, cpu = time.monotonic() - t0, process_cpu_seconds(child.proc.pid) - cpu0
    finally:
        child.kill()
    return {"server_cpu_s": cpu, "us_per_request": cpu / args.requests * 1e6, "seconds": seconds}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="timed requests (default 3000)")
    parser.add_argument("--piece-kib", type=int, default=512, help="piece length in KiB (default 512)")
    parser.add_argument("--pieces", type=int, default=64, help="pieces in the served file (default 64)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests at once (default 4)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per repetition")
    args = parser.parse_args()
    compile_bytecode()
    runs = []
    with tempfile.TemporaryDirectory(prefix="piece-server-") as tmp:
        for i in range(args.repeat):
            run = measure(Path(tmp), args)
            runs.append(run)
            if args.json:
                print(json.dumps({"run": i + 1, **{k: round(v, 3) for k, v in run.items()}}))
            else:
                print(
                    f"run {i + 1}: {args.requests} requests of {args.piece_kib} KiB, {args.concurrency} at a time: "
                    f"server CPU {run['server_cpu_s']:.2f} s ({run['us_per_request']:.0f} us per request), "
                    f"{run['seconds']:.2f} s"
                )
    if args.repeat > 1 and not args.json:
        median = statistics.median(r["us_per_request"] for r in runs)
        print(f"median server CPU per request: {median:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
