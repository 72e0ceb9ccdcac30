"""``shoal get URL``: download through the swarm, like curl or wget."""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from shoal.cli.main import click_parser, configure_logging, loading, run_or_exit, socket_option
from shoal.core.units import format_bytes, parse_rate
from shoal.daemon.client import DaemonClient
from shoal.daemon.config import default_socket
from shoal.peer.config import GetConfig
from shoal.peer.request import check_digest, parse_headers, resolve_destination
from shoal.tls import deferred_roots

if TYPE_CHECKING:
    from shoal.peer.api import GetResult

# Only what a cache hit through the daemon needs is imported at the top: the in-process download (aiohttp,
# the engine) is imported when it runs, so a hit costs an interpreter start and one request.
log = logging.getLogger("shoal.get")


class StatsLike(Protocol):
    """A download's counters: the engine's Stats, or a daemon's progress line."""

    @property
    def total(self) -> int: ...
    @property
    def done(self) -> int: ...
    @property
    def from_origin(self) -> int: ...
    @property
    def from_peers(self) -> int: ...
    @property
    def peers(self) -> int: ...


INTERRUPTED = "interrupted; run the same command again to resume from the pieces verified so far"
RATE_WINDOW = 10  # progress updates come every 0.2 s: a two-second moving average


class ProgressBar:
    """A rich progress bar on stderr: bytes, rate, origin vs peers, ETA."""

    def __init__(self, name: str) -> None:
        # Imported here: rich costs start-up time that a non-interactive `get` (scripts, fleets) need not pay.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TextColumn("{task.fields[rate]}"),
            TextColumn("origin {task.fields[origin]} · peers {task.fields[peers]} ({task.fields[npeers]})"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.progress.add_task(name, total=None, rate="?", origin="0 B", peers="0 B", npeers=0)
        # (seconds, bytes done) over the last RATE_WINDOW updates: the rate shown is a moving average, in the
        # same 1024-based units as every other figure (rich's own speed column is decimal).
        self._samples: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW)

    def __call__(self, stats: StatsLike) -> None:
        self._samples.append((time.monotonic(), stats.done))
        (t0, done0), (t1, done1) = self._samples[0], self._samples[-1]
        rate = f"{format_bytes((done1 - done0) / (t1 - t0))}/s" if t1 > t0 else "?"
        self.progress.update(
            self.task,
            total=stats.total or None,
            completed=stats.done,
            rate=rate,
            origin=format_bytes(stats.from_origin),
            peers=format_bytes(stats.from_peers),
            npeers=stats.peers,
        )

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _dump_tasks() -> None:
    """SIGUSR1: print every asyncio task's stack to stderr (for a download that seems stuck)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def _cancellable(run: Callable[[], asyncio.Future[GetResult] | asyncio.Task[GetResult]]) -> GetResult:
    task = asyncio.ensure_future(run())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    try:
        return await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


@click.command()
@click.argument("url")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE.")
@click.option(
    "--dest-path",
    type=click.Path(file_okay=False),
    help="Write into DIR, named after the URL (default: the current directory).",
)
@click.option("--tracker", envvar="SHOAL_TRACKER", help="Tracker URL (default: $SHOAL_TRACKER).")
@click.option(
    "--download-rate",
    callback=click_parser(parse_rate),
    metavar="RATE",
    help="Cap downloads at RATE bytes/s (1024-based K, M, G).",
)
@click.option(
    "--upload-rate",
    callback=click_parser(parse_rate),
    metavar="RATE",
    help="Cap uploads to peers at RATE bytes/s (1024-based K, M, G).",
)
@click.option(
    "--upload-time",
    type=click.FloatRange(min=0),
    default=GetConfig.upload_time,
    show_default=True,
    help="Seconds to keep serving the file to peers after it is complete.",
)
@click.option("--fallback", is_flag=True, help="Download straight from the origin if the tracker is unreachable.")
@click.option("--callback", metavar="CMD", help="Run CMD with the file's path appended after success.")
@click.option("--digest", metavar="sha256:HEX", help="Verify the whole file before it is moved into place.")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Header for the origin (repeatable).")
@click.option("--site", default="", help="Locality label: prefer peers of this site.")
@click.option("--rack", default="", help="Locality label: prefer peers of this rack.")
@click.option(
    "--listen",
    default="0.0.0.0:0",
    show_default=True,
    metavar="HOST:PORT",
    help="Where this peer serves pieces to others.",
)
@socket_option
@click.option("--no-daemon", is_flag=True, help="Download in this process even when a daemon runs.")
@click.option("-v", "--verbose", count=True, help="More logging; -vv traces the download, each line timed to the ms.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def get(
    url: str,
    output: str | None,
    dest_path: str | None,
    tracker: str | None,
    download_rate: int | None,
    upload_rate: int | None,
    upload_time: float,
    fallback: bool,
    callback: str | None,
    digest: str | None,
    headers: tuple[str, ...],
    site: str,
    rack: str,
    listen: str,
    socket_path: Path | None,
    no_daemon: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Download URL through the swarm (from peers first, the origin once).

    When a daemon runs on this host, it does the download into its cache (or answers from it at once) and
    places the file; its own tracker, rates and locality apply, and it seeds the file for as long as it is
    cached (--upload-time, --listen and the rate options are for downloads made in this process)."""
    configure_logging(verbose, quiet)
    show_bar = not quiet and sys.stderr.isatty()
    client = None if no_daemon else DaemonClient(socket_path or default_socket())
    if client is not None and client.running():
        bar = ProgressBar(url.rsplit("/", 1)[-1] or url) if show_bar else None
        run_or_exit(
            lambda: _through_daemon(client, url, output, dest_path, headers, digest, callback, quiet, bar),
            interrupted=INTERRUPTED,
        )
        return

    def report(result: GetResult) -> None:
        if bar is not None:
            bar.progress.stop()
        if not quiet:
            origin, peers = format_bytes(result.bytes_from_origin), format_bytes(result.bytes_from_peers)
            size = format_bytes(result.size)
            click.echo(f"{result.path}: {size} in {result.seconds:.2f}s (origin {origin}, peers {peers})", err=True)
            if tracker and upload_time > 0:
                click.echo(f"serving it to peers for {upload_time:g}s (Ctrl-C to stop)", err=True)

    bar = ProgressBar(url.rsplit("/", 1)[-1] or url) if show_bar else None

    def go() -> GetResult:
        with loading(), deferred_roots():  # the CA certificates load if an https request comes (shoal.tls)
            from shoal.peer.api import aget

        def run() -> asyncio.Task[GetResult]:
            return asyncio.ensure_future(
                aget(
                    url,
                    output=output,
                    dest_dir=dest_path,
                    tracker=tracker,
                    headers=headers,
                    download_rate=download_rate,
                    upload_rate=upload_rate,
                    upload_time=upload_time,
                    fallback=fallback,
                    digest=digest,
                    site=site,
                    rack=rack,
                    listen=listen,
                    callback=callback,
                    progress=bar,
                    on_complete=report,
                )
            )

        if bar is None:
            return asyncio.run(_cancellable(run))
        with bar:
            return asyncio.run(_cancellable(run))

    run_or_exit(go, interrupted=INTERRUPTED)


def _through_daemon(
    client: DaemonClient,
    url: str,
    output: str | None,
    dest_path: str | None,
    headers: tuple[str, ...],
    digest: str | None,
    callback: str | None,
    quiet: bool,
    bar: ProgressBar | None,
) -> None:
    dest = resolve_destination(url, output, dest_path)
    check_digest(digest)
    if bar is not None:
        with bar:
            result = client.get(url, dest, headers=parse_headers(headers), digest=digest, progress=bar)
    else:
        result = client.get(url, dest, headers=parse_headers(headers), digest=digest)
    if not quiet:
        how = "hard link" if result["linked"] else "copy"
        if result["hit"]:
            detail = f"cache hit, {how}"
        else:
            origin, peers = format_bytes(result["bytes_from_origin"]), format_bytes(result["bytes_from_peers"])
            detail = f"origin {origin}, peers {peers}; cached by the daemon, {how}"
        click.echo(f"{dest}: {format_bytes(result['size'])} in {result['seconds']:.2f}s ({detail})", err=True)
    if callback:
        try:
            code = subprocess.call([*shlex.split(callback), str(dest)])
        except OSError as exc:
            log.error("callback %r could not start: %s", callback, exc.strerror or exc)
            return
        if code != 0:
            log.error("callback %r exited with status %d", callback, code)
