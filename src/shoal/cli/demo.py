"""``shoal demo``: the main job on embedded defaults, all on loopback in one process.

A tracker on SQLite, an origin serving a random file at a capped rate, and several peers that start
fetching it at once. While they run it shows each peer's progress (a live display on a terminal, a line
a second otherwise, and a line as each peer finishes); it ends in a table of what each peer took from the
origin and from peers, and beside the origin's own count of bytes sent, what the same fetch costs without
Shoal: every peer from the origin, the file's size times the peers, at the origin's cap.

The demo's tracker and peers are closed to everyone but each other, as the services warn they should be:
a loopback port is open to every process of the host, so the demo makes a fleet token and an operator
token of its own for the run (kept in memory, never shown), and none of its services warns that anyone
may use it; the tracker's dashboard stays readable in a browser (read-only, as ``--public-dashboard``). The
warnings stay for a service that is open; a demo that warned about its own setup would teach its user to
skip them.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shoal.cli.main import click_parser, configure_logging, run_or_exit, verbose_option
from shoal.cli.progress import Rate, StatsLike, make_progress, sources
from shoal.core.errors import UsageError
from shoal.core.units import format_bytes, parse_rate, parse_size

if TYPE_CHECKING:
    from rich.console import Console

    from shoal.peer.api import GetResult

LINE_PERIOD = 1.0  # seconds between progress lines when the output is not a terminal


class Watch:
    """What the demo shows while its peers run: on a terminal a live display, a download's two lines per
    peer (shoal.cli.progress); otherwise a line every LINE_PERIOD seconds with the totals. Either way a
    line as each peer finishes."""

    def __init__(self, console: Console, peers: int, size: int) -> None:
        self.console = console
        self.size = size
        self.started = time.monotonic()
        self.stats: list[StatsLike | None] = [None] * peers
        self.finished = 0
        self.live = make_progress(console, transient=True) if console.is_terminal else None
        self.tasks = [
            self.live.add_task(f"peer{i}", total=size, rate="?", sources=sources(0, 0, 0)) if self.live else None
            for i in range(peers)
        ]
        self.rates = [Rate() for _ in range(peers)]

    def progress(self, i: int) -> Any:
        """The progress callback of peer ``i``'s download."""

        def update(stats: StatsLike) -> None:
            self.stats[i] = stats
            if self.live is not None:
                self.live.update(
                    self.tasks[i],
                    completed=stats.done,
                    rate=self.rates[i](stats.done, time.monotonic()),
                    sources=sources(stats.from_origin, stats.from_peers, stats.peers),
                )

        return update

    def done(self, i: int) -> Any:
        """The completion callback of peer ``i``'s download: the file is in place (it serves on)."""

        def report(result: GetResult) -> None:
            self.finished += 1
            origin, peers = format_bytes(result.bytes_from_origin), format_bytes(result.bytes_from_peers)
            self.console.print(
                f"peer{i} has the file after {result.seconds:.1f}s (origin {origin}, peers {peers}); "
                f"{self.finished} of {len(self.stats)} done",
                highlight=False,
                soft_wrap=True,
            )

        return report

    def line(self) -> str:
        """The totals of every peer, for output that is not a terminal."""
        known = [s for s in self.stats if s is not None]
        done = sum(s.done for s in known)
        whole = self.size * len(self.stats)
        origin, peers = sum(s.from_origin for s in known), sum(s.from_peers for s in known)
        return (
            f"{time.monotonic() - self.started:5.1f}s  {format_bytes(done)} of {format_bytes(whole)} "
            f"({100 * done // max(whole, 1)}%)  origin {format_bytes(origin)} · peers {format_bytes(peers)}  "
            f"{self.finished} of {len(self.stats)} peers done"
        )

    async def show(self) -> None:
        """Print a line every LINE_PERIOD seconds until every peer has the file (a live display refreshes
        by itself)."""
        if self.live is not None:
            return
        while True:
            await asyncio.sleep(LINE_PERIOD)
            if self.finished == len(self.stats):
                return
            self.console.print(self.line(), highlight=False, soft_wrap=True)

    def __enter__(self) -> Watch:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


async def run_demo(workdir: Path, peers: int, size: int, origin_rate: int, console: Console) -> None:
    # Imported here: `shoal demo --help` needs none of them.
    import aiohttp

    from shoal.core.pool import hash_token
    from shoal.core.tickets import FleetKey
    from shoal.http.credentials import Credentials
    from shoal.http.listen import listen
    from shoal.peer.api import aget
    from shoal.testing.files import write_random_file
    from shoal.testing.origin import build_origin
    from shoal.tracker import TrackerConfig, build_app

    data_dir = workdir / "origin"
    data_dir.mkdir()
    expected = await asyncio.to_thread(write_random_file, data_dir / "release.bin", size)
    fleet = Credentials(key=FleetKey.from_token(secrets.token_hex(32).encode()))
    tracker_config = TrackerConfig(
        db=f"sqlite:///{workdir / 'tracker.db'}",
        interval=1.0,
        peer_ttl=5.0,
        fleet_key=fleet.key,
        admin_token_hash=hash_token(secrets.token_hex(32)),  # no pool in a demo: nobody may make one
        public_dashboard=True,  # a browser holds no fleet credential; the page is read-only
    )
    tracker_runner, tracker_port = await listen(build_app(tracker_config), "127.0.0.1", 0)
    origin_runner, origin_port = await listen(build_origin(data_dir, rate=origin_rate), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{origin_port}/release.bin"
    tracker = f"http://127.0.0.1:{tracker_port}"
    rate = format_bytes(origin_rate)
    console.print(f"origin {url} ({format_bytes(size)} at {rate}/s), tracker {tracker}, {peers} peers", soft_wrap=True)
    try:
        started = time.monotonic()
        dirs = [workdir / f"peer{i}" for i in range(peers)]
        for d in dirs:
            d.mkdir()
        # Every peer keeps serving until the slowest is done, as a fleet of long-lived peers would.
        seed_time = max(3.0, size / origin_rate)
        with Watch(console, peers, size) as watch:
            showing = asyncio.ensure_future(watch.show())
            try:
                results: list[GetResult | BaseException] = await asyncio.gather(
                    *(
                        aget(
                            url,
                            dest_dir=d,
                            tracker=tracker,
                            # On loopback, as the tracker and the origin: a demo opens no port to the network.
                            listen="127.0.0.1:0",
                            upload_time=seed_time,
                            digest=f"sha256:{expected}",
                            credentials=fleet,
                            progress=watch.progress(i),
                            on_complete=watch.done(i),
                        )
                        for i, d in enumerate(dirs)
                    ),
                    return_exceptions=True,
                )
            finally:
                showing.cancel()
        elapsed = time.monotonic() - started
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{origin_port}/_stats") as r,
        ):
            origin_sent = (await r.json())["bytes_sent"]
    finally:
        await origin_runner.cleanup()
        await tracker_runner.cleanup()
    _summary(console, results, expected, size, origin_rate, origin_sent, elapsed)
    if any(isinstance(r, BaseException) for r in results):
        raise SystemExit(1)


def _summary(
    console: Console,
    results: list[GetResult | BaseException],
    expected: str,
    size: int,
    origin_rate: int,
    origin_sent: int,
    elapsed: float,
) -> None:
    """The tables at the end: each peer, then Shoal beside the same fetch without it."""
    from rich.table import Table

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

    peers = len(results)
    finished = [r.seconds for r in results if not isinstance(r, BaseException)]
    # Without Shoal every peer takes the whole file from the origin, and the origin's cap is shared.
    alone_bytes = peers * size
    compare = Table(title=f"{peers} peers, origin capped at {format_bytes(origin_rate)}/s", title_justify="left")
    for column in ("", "origin sent", "until all have it"):
        compare.add_column(column, justify="right" if column else "left")
    compare.add_row(
        "without Shoal", f"{format_bytes(alone_bytes)} = {peers} x the file", f"{alone_bytes / origin_rate:.1f}s"
    )
    compare.add_row(
        "with Shoal",
        f"{format_bytes(origin_sent)} = {origin_sent / size:.2f} x the file",
        f"{max(finished):.1f}s" if finished else "-",
    )
    console.print(compare)
    console.print(
        "without Shoal: each peer fetches the whole file from the origin (the time estimated at its cap); "
        f"the demo ended after {elapsed:.1f}s, the peers serving each other until the last had the file",
        highlight=False,
    )


def _size(text: str) -> int:
    size = parse_size(text)
    if size <= 0:
        raise UsageError(f"the file size must be positive, not {text!r}")
    return size


@click.command()
@click.option(
    "--peers", default=4, show_default=True, type=click.IntRange(1, 64), metavar="N", help="How many peers fetch."
)
@click.option(
    "--size",
    default="64M",
    show_default=True,
    callback=click_parser(_size),
    metavar="SIZE",
    help="File size (1024-based K, M, G).",
)
@click.option(
    "--origin-rate",
    default="16M",
    show_default=True,
    callback=click_parser(parse_rate),
    metavar="RATE",
    help="The origin's upload cap in bytes/s (1024-based K, M, G).",
)
@verbose_option
def demo(peers: int, size: int, origin_rate: int, verbose: int) -> None:
    """Run a tracker, an origin and N peers on loopback, and show who fetched what."""
    configure_logging(verbose, False)

    def go() -> None:
        from rich.console import Console

        with tempfile.TemporaryDirectory(prefix="shoal-demo-") as tmp:
            asyncio.run(run_demo(Path(tmp), peers, size, origin_rate, Console()))

    run_or_exit(go)
