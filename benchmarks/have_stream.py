#!/usr/bin/env python3
"""Have streams: what it costs a peer to tell its watchers about each piece it verifies, and them to hear it.

In a swarm every peer follows every other peer's have stream (``GET /v1/tasks/ID/haves``), so each piece a
peer verifies becomes a notification to every watcher: in the 8-peer swarm lab about 3,500 per peer. This
measures both ends alone, on loopback:

1. A child process runs a ``PieceServer`` publishing a task with no pieces, then marks ``--pieces`` pieces
   verified, one every ``--interval-ms`` (the swarm lab's peers gain one every 20-25 ms).
2. This process follows the task's have stream ``--watchers`` times over one aiohttp session, with the
   download engine's own watcher (``shoal.peer.fetchers.watch_haves``), until every watcher has heard of
   every piece.
3. Printed: the server's and the watchers' CPU seconds (user + system) from the first piece to the last
   notification, each per notification (pieces x watchers), and the lines the watchers received.

``--gap`` sets the server's ``have_gap`` (the shortest time between two lines of one stream while pieces
keep coming; default: the server's default); ``--gap 0`` writes a line for every wake-up.

Run it (from the repository; no root needed)::

    python3 benchmarks/have_stream.py                    # 7 watchers, 400 pieces, one every 20 ms
    python3 benchmarks/have_stream.py --gap 0            # a line per piece, as before have_gap
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from shoal.core.bitfield import Bitfield
from shoal.core.events import Event, PeerHas
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.testing.cpu import own_cpu_seconds, process_cpu_seconds
from shoal.testing.processes import compile_bytecode, start_service

TASK = "ab" * 20
PIECE = 256 * 1024


def serve(pieces: int, interval: float, gap: float | None) -> None:
    """The child: publish an empty task, say where, wait for SIGUSR1, then verify a piece every ``interval``."""
    from shoal.peer.server import PieceServer, ServerConfig

    async def run() -> None:
        manifest = Manifest(OriginIdentity(pieces * PIECE), PIECE)
        server = PieceServer(ServerConfig() if gap is None else ServerConfig(have_gap=gap))
        port = await server.start("127.0.0.1", 0)
        served = server.publish(TASK, 1, manifest, Path(os.devnull), Bitfield(manifest.piece_count))
        go = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
        print(f"piece server listening on http://127.0.0.1:{port}", flush=True)
        await go.wait()
        for index in range(pieces):
            served.add(index)
            await asyncio.sleep(interval)
        await asyncio.Event().wait()

    asyncio.run(run())


async def watch(port: int, args: argparse.Namespace, go: Callable[[], None]) -> tuple[float, int]:
    """Follow the stream ``args.watchers`` times; CPU seconds of this process and lines heard."""
    import aiohttp

    from shoal.peer.fetchers import watch_haves

    manifest = Manifest(OriginIdentity(args.pieces * PIECE), PIECE)
    heard = 0
    lines = 0
    everything = asyncio.Event()

    def post(event: Event) -> None:
        nonlocal heard, lines
        if isinstance(event, PeerHas) and event.added:
            heard += len(event.added)
            lines += 1
            if heard >= args.pieces * args.watchers:
                everything.set()

    url = f"http://127.0.0.1:{port}/v1/tasks/{TASK}/haves?gen=1"
    async with aiohttp.ClientSession() as session:
        watchers = [
            asyncio.ensure_future(watch_haves(session, url, f"w{i}", manifest, post)) for i in range(args.watchers)
        ]
        await asyncio.sleep(0.5)  # every stream has sent its bitfield
        cpu0 = own_cpu_seconds()
        go()
        await asyncio.wait_for(everything.wait(), timeout=args.pieces * args.interval_ms / 1000 + 30)
        cpu = own_cpu_seconds() - cpu0
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return cpu, lines


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        gap = None if sys.argv[4] == "default" else float(sys.argv[4])
        serve(int(sys.argv[2]), float(sys.argv[3]), gap)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=7, help="have streams followed (default 7)")
    parser.add_argument("--pieces", type=int, default=400, help="pieces verified (default 400)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="between two pieces (default 20)")
    parser.add_argument("--gap", type=float, default=None, help="the server's have_gap in seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compile_bytecode()
    gap = "default" if args.gap is None else str(args.gap)
    child = start_service([sys.executable, __file__, "--serve", str(args.pieces), str(args.interval_ms / 1000), gap])
    server0 = 0.0

    def go() -> None:
        nonlocal server0
        server0 = process_cpu_seconds(child.proc.pid)
        child.proc.send_signal(signal.SIGUSR1)

    try:
        watchers_cpu, lines = asyncio.run(watch(int(child.url.rsplit(":", 1)[1]), args, go))
        server_cpu = process_cpu_seconds(child.proc.pid) - server0
    finally:
        child.kill()
    notifications = args.pieces * args.watchers
    result = {
        "watchers": args.watchers,
        "pieces": args.pieces,
        "interval_ms": args.interval_ms,
        "gap": args.gap,
        "lines": lines,
        "server_cpu_s": round(server_cpu, 3),
        "watchers_cpu_s": round(watchers_cpu, 3),
        "server_us_per_notification": round(server_cpu / notifications * 1e6),
        "watchers_us_per_notification": round(watchers_cpu / notifications * 1e6),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.watchers} watchers x {args.pieces} pieces (one every {args.interval_ms:g} ms), "
            f"have_gap {'default' if args.gap is None else args.gap}: {lines} lines; "
            f"server {server_cpu:.2f} CPU-s ({result['server_us_per_notification']} us per notification), "
            f"watchers {watchers_cpu:.2f} CPU-s ({result['watchers_us_per_notification']} us per notification)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
