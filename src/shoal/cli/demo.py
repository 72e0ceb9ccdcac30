"""``shoal demo``: the main job on embedded defaults, all on loopback in one process.

A tracker on SQLite, an origin serving a random file at a capped rate, and several peers that start
fetching it at once. It ends in a table of what each peer took from the origin and from peers, and the
origin's own count of bytes it sent.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shoal.cli.main import configure_logging, run_or_exit
from shoal.core.units import format_bytes, parse_rate, parse_size

if TYPE_CHECKING:
    from rich.console import Console

    from shoal.peer.api import GetResult


async def run_demo(workdir: Path, peers: int, size: int, origin_rate: int, console: Console) -> None:
    # Imported here: `shoal demo --help` needs none of them.
    import aiohttp
    from rich.table import Table

    from shoal.listen import listen
    from shoal.peer.api import aget
    from shoal.testing.files import write_random_file
    from shoal.testing.origin import build_origin
    from shoal.tracker import TrackerConfig, build_app

    data_dir = workdir / "origin"
    data_dir.mkdir()
    expected = await asyncio.to_thread(write_random_file, data_dir / "release.bin", size)
    tracker_config = TrackerConfig(db=f"sqlite:///{workdir / 'tracker.db'}", interval=1.0, peer_ttl=5.0)
    tracker_runner, tracker_port = await listen(build_app(tracker_config), "127.0.0.1", 0)
    origin_runner, origin_port = await listen(build_origin(data_dir, rate=origin_rate), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{origin_port}/release.bin"
    tracker = f"http://127.0.0.1:{tracker_port}"
    rate = format_bytes(origin_rate)
    console.print(f"origin {url} ({format_bytes(size)} at {rate}/s), tracker {tracker}, {peers} peers")
    try:
        started = time.monotonic()
        dirs = [workdir / f"peer{i}" for i in range(peers)]
        for d in dirs:
            d.mkdir()
        # Every peer keeps serving until the slowest is done, as a fleet of long-lived peers would.
        seed_time = max(3.0, size / origin_rate)
        results: list[GetResult | BaseException] = await asyncio.gather(
            *(
                aget(
                    url,
                    dest_dir=d,
                    tracker=tracker,
                    upload_time=seed_time,
                    digest=f"sha256:{expected}",
                )
                for d in dirs
            ),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{origin_port}/_stats") as r,
        ):
            origin_sent = (await r.json())["bytes_sent"]
    finally:
        await origin_runner.cleanup()
        await tracker_runner.cleanup()

    table = Table(title="shoal demo: one file, many peers")
    for column in ("peer", "from origin", "from peers", "seconds", "sha256 ok"):
        table.add_column(column, justify="right")
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            table.add_row(f"peer{i}", "-", "-", "-", f"[red]{result}")
            continue
        table.add_row(
            f"peer{i}",
            format_bytes(result.bytes_from_origin),
            format_bytes(result.bytes_from_peers),
            f"{result.seconds:.2f}",
            "yes" if result.digest == f"sha256:{expected}" else "[red]no",
        )
    console.print(table)
    console.print(
        f"origin sent {format_bytes(origin_sent)} = {origin_sent / size:.2f}x the file for {peers} peers; "
        f"one peer alone at the origin's rate would take {size / origin_rate:.1f}s; "
        f"all done (including seeding) in {elapsed:.1f}s"
    )
    if any(isinstance(r, BaseException) for r in results):
        raise SystemExit(1)


@click.command()
@click.option("--peers", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--size", default="64M", show_default=True, help="File size (1024-based K, M, G).")
@click.option("--origin-rate", default="16M", show_default=True, help="The origin's upload cap, bytes/s.")
@click.option("-v", "--verbose", count=True)
def demo(peers: int, size: str, origin_rate: str, verbose: int) -> None:
    """Run a tracker, an origin and PEERS peers on loopback, and show who fetched what."""
    configure_logging(verbose, False)

    def go() -> None:
        nbytes, rate = parse_size(size), parse_rate(origin_rate)
        with tempfile.TemporaryDirectory(prefix="shoal-demo-") as tmp:
            from rich.console import Console

            asyncio.run(run_demo(Path(tmp), peers, nbytes, rate, Console()))

    run_or_exit(go)
