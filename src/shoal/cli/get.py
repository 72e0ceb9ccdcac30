"""``shoal get URL``: download through the swarm, like curl or wget."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shoal.cli.fleet import FleetOptions, fleet_options
from shoal.cli.main import (
    TRACKERS,
    FiniteRange,
    configure_logging,
    ignore_qp_option,
    loading,
    locality_options,
    log_options,
    rate_option,
    run_or_exit,
    socket_option,
)
from shoal.cli.progress import ProgressBar
from shoal.core.errors import UnsafeSocket
from shoal.core.units import format_bytes
from shoal.daemon.client import DaemonClient
from shoal.daemon.config import default_socket
from shoal.daemon.messages import FetchProgress
from shoal.http.tls import deferred_roots
from shoal.peer.callback import AFTER_SEEDING, callback_argv, run_callback
from shoal.peer.config import DEFAULT_LISTEN, GetConfig
from shoal.peer.request import check_digest, check_no_origin, parse_headers, resolve_destination
from shoal.storage.placement import Destination

if TYPE_CHECKING:
    import asyncio

    from shoal.cli.get_figures import FigureRecorder
    from shoal.peer.api import GetResult

# Only what a hand-off to the daemon needs is imported at the top: the in-process download (asyncio, aiohttp,
# the engine) is imported when it runs, so a get through the daemon costs an interpreter start and one
# request, and a fleet's gets starting together on a host's cores do not delay the daemons' downloads.

INTERRUPTED = "interrupted; run the same command again to resume from the pieces verified so far"


def _dump_tasks() -> None:
    """SIGUSR1: print every asyncio task's stack to stderr (for a download that seems stuck)."""
    import asyncio

    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def _cancellable(
    run: Callable[[], asyncio.Future[GetResult] | asyncio.Task[GetResult]],
    placed: Callable[[], GetResult | None],
    stopped: Callable[[GetResult], None],
) -> GetResult:
    """Run the download; SIGTERM stops it as Ctrl-C does (asyncio.run turns SIGINT into a cancellation).

    Stopped before the file is in place, it was interrupted (KeyboardInterrupt: exit code 130). Stopped once
    ``placed`` has the result, while the file is served to peers, the download succeeded: ``stopped`` is told
    and the result returned (exit code 0), since what the user asked for is done."""
    import asyncio

    task = asyncio.ensure_future(run())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    try:
        return await task
    except asyncio.CancelledError:
        result = placed()
        if result is None:
            raise KeyboardInterrupt from None
        stopped(result)
        return result


@click.command()
@click.argument("url")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write to FILE; - streams it to stdout in order as it is verified.",
)
@click.option(
    "--dest-path",
    type=click.Path(),
    metavar="PATH",
    help="Write into PATH, named after the URL, when it is a directory [default: the current directory]; "
    "else PATH is the file itself, in an existing directory.",
)
@click.option(
    "--tracker",
    envvar="SHOAL_TRACKER",
    callback=TRACKERS,
    metavar="URL[,URL...]",
    help="The tracker's base URL, or several of one cluster, asked in turn when one does not answer "
    "[default: $SHOAL_TRACKER].",
)
@rate_option("--download-rate", "downloads")
@rate_option("--upload-rate", "uploads to peers")
@click.option(
    "--upload-time",
    type=FiniteRange(min=0),
    default=GetConfig.upload_time,
    show_default=True,
    metavar="SECONDS",
    help="Keep serving the file to peers this long after it is complete.",
)
@click.option("--fallback", is_flag=True, help="Download straight from the origin if the tracker is unreachable.")
@click.option(
    "--no-origin",
    is_flag=True,
    help="Peers only: never ask the origin; fail (exit code 4) if the swarm cannot supply the file.",
)
@click.option(
    "--callback", metavar="CMD", help="Run CMD with the file's path appended after success (exit code 8 if it fails)."
)
@click.option(
    "--after-seeding",
    metavar="CMD",
    help="Run CMD with the file's path appended once the serving period is over (minion's --callback delete: "
    "'rm -f'); exit code 8 if it fails.",
)
@click.option(
    "--digest",
    "--hash",
    "digest",
    metavar="ALGO:HEX",
    help="Verify the whole file before it is moved into place (md5, sha1, sha224, sha256, sha384, sha512, "
    "blake2b or blake3).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Header for the origin (repeatable). The file is then private to the headers: fetched from the "
    "origin only, never served to peers.",
)
@click.option(
    "--share-authenticated",
    is_flag=True,
    help="With --header: share the file with the peers that hold the same headers, and with them only.",
)
@locality_options
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where this peer serves pieces to others.",
)
@fleet_options(client=True)
@socket_option
@ignore_qp_option
@click.option("--no-daemon", is_flag=True, help="Download in this process even when a daemon runs.")
@click.option(
    "--stats-json",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="At exit, success or not, write the get's figures to PATH as JSON (exit status, bytes by source, "
    "seconds, rate, pieces), atomically.",
)
@click.option("-v", "--verbose", count=True, help="More logging; -vv traces the download, each line timed to the ms.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@log_options
def get(
    url: str,
    output: str | None,
    dest_path: str | None,
    tracker: str | None,
    download_rate: int | None,
    upload_rate: int | None,
    upload_time: float,
    fallback: bool,
    no_origin: bool,
    callback: str | None,
    after_seeding: str | None,
    digest: str | None,
    headers: tuple[str, ...],
    share_authenticated: bool,
    site: str,
    rack: str,
    listen: str,
    fleet: FleetOptions,
    socket_path: Path | None,
    ignore_qp: tuple[str, ...],
    no_daemon: bool,
    stats_json: Path | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Download URL through the swarm (from peers first, the origin once).

    When a daemon runs on this host, it does the download into its cache (or answers from it at once) and
    places the file; its own tracker, rates and locality apply, and it seeds the file for as long as it is
    cached (--upload-time, --listen and the rate options are for downloads made in this process)."""
    configure_logging(verbose, quiet)
    recorder = None
    if stats_json is not None:
        from shoal.cli.get_figures import FigureRecorder, check_destination

        stats_json = check_destination(stats_json)
        recorder = FigureRecorder(url, through_daemon=False)
    with figures_at_exit(stats_json, recorder):
        show_bar = not quiet and sys.stderr.isatty()
        # A stream (-o -) is written from here: such a get is made in this process.
        in_process = no_daemon or output == "-"
        client = None if in_process else run_or_exit(lambda: _running_daemon(socket_path))
        if recorder is not None:
            recorder.through_daemon = client is not None
        if client is not None:
            bar = ProgressBar(url.rsplit("/", 1)[-1] or url) if show_bar else None
            run_or_exit(
                lambda: _through_daemon(
                    client,
                    url,
                    output,
                    dest_path,
                    headers,
                    digest,
                    callback,
                    after_seeding,
                    quiet,
                    bar,
                    share=share_authenticated,
                    ignore_qp=ignore_qp,
                    no_origin=no_origin,
                    fallback=fallback,
                    recorder=recorder,
                ),
                interrupted=INTERRUPTED,
            )
            return

        bar = ProgressBar(url.rsplit("/", 1)[-1] or url) if show_bar else None
        outcome = _Outcome(bar, quiet, recorder)

        def go() -> GetResult:
            import asyncio

            with loading(), deferred_roots():  # the CA certificates load if an https request comes (shoal.http.tls)
                from shoal.peer.api import aget
            credentials = fleet.load()

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
                        no_origin=no_origin,
                        digest=digest,
                        ignore_qp=ignore_qp,
                        site=site,
                        rack=rack,
                        listen=listen,
                        callback=callback,
                        after_seeding=after_seeding,
                        progress=bar if recorder is None else recorder.watch(bar),
                        on_complete=outcome.placed,
                        share_authenticated=share_authenticated,
                        credentials=credentials,
                    )
                )

            def cancellable() -> Coroutine[None, None, GetResult]:
                return _cancellable(run, lambda: outcome.result, outcome.stopped)

            if bar is None:
                return asyncio.run(cancellable())
            with bar:
                return asyncio.run(cancellable())

        run_or_exit(go, interrupted=INTERRUPTED)


def _running_daemon(socket_path: Path | None) -> DaemonClient | None:
    """The daemon to hand the download to, if one runs there and passes shoal.daemon.socket_guard's checks.

    One that fails them is sent nothing. Named by the user (``--socket``, ``$SHOAL_DAEMON_SOCKET``), it is an
    error, as curl fails on a proxy it cannot use rather than go around it; at the default path, where
    another local user may have got first, it is a warning and the download runs in this process."""
    client = DaemonClient(socket_path or default_socket())
    try:
        return client if client.running() else None
    except UnsafeSocket as exc:
        if socket_path is not None or os.environ.get("SHOAL_DAEMON_SOCKET"):
            raise
        click.echo(f"shoal: warning: {exc}; downloading in this process", err=True)
        return None


def figures_at_exit(path: Path | None, recorder: FigureRecorder | None) -> contextlib.AbstractContextManager[None]:
    """Write ``--stats-json`` as the block exits (cli.get_figures), when it was asked for."""
    if path is None or recorder is None:
        return contextlib.nullcontext()
    from shoal.cli.get_figures import written_at_exit

    return written_at_exit(path, recorder)


class _Outcome:
    """What `shoal get` says once the file is in place, and after the serving period it stopped."""

    def __init__(self, bar: ProgressBar | None, quiet: bool, recorder: FigureRecorder | None = None) -> None:
        self.bar = bar
        self.quiet = quiet
        self.recorder = recorder
        self.result: GetResult | None = None

    def placed(self, result: GetResult) -> None:
        self.result = result
        if self.recorder is not None:
            self.recorder.placed(str(result.path))
        if self.bar is not None:
            self.bar.progress.stop()
        if not self.quiet:
            origin, peers = format_bytes(result.bytes_from_origin), format_bytes(result.bytes_from_peers)
            size = format_bytes(result.size)
            where = "stdout" if str(result.path) == "-" else result.path
            click.echo(f"{where}: {size} in {result.seconds:.2f}s (origin {origin}, peers {peers})", err=True)
            if result.seeding > 0:
                click.echo(f"serving it to peers for {result.seeding:g}s (Ctrl-C to stop)", err=True)

    def stopped(self, result: GetResult) -> None:
        if not self.quiet:
            done = "the file was streamed to stdout" if str(result.path) == "-" else f"{result.path} is in place"
            click.echo(f"stopped serving it to peers; {done}", err=True)


def _through_daemon(
    client: DaemonClient,
    url: str,
    output: str | None,
    dest_path: str | None,
    headers: tuple[str, ...],
    digest: str | None,
    callback: str | None,
    after_seeding: str | None,
    quiet: bool,
    bar: ProgressBar | None,
    *,
    share: bool = False,
    ignore_qp: tuple[str, ...] = (),
    no_origin: bool = False,
    fallback: bool = False,
    recorder: FigureRecorder | None = None,
) -> None:
    dest = resolve_destination(url, output, dest_path)
    digest = check_digest(digest)
    check_no_origin(no_origin, fallback)
    for command, flag in ((callback, "--callback"), (after_seeding, AFTER_SEEDING)):
        if command is not None:
            callback_argv(command, flag)
    destination = Destination.of(dest)
    landing = dest
    if destination.through:
        # A device or a FIFO is written through from here: the daemon places the file in our scratch
        # directory, so that it never waits on a FIFO's reader, and Ctrl-C stops that wait.
        destination.prepare()
        landing = destination.temporary(f"shoal-{secrets.token_hex(4)}")
    place = functools.partial(
        client.get,
        url,
        landing,
        headers=parse_headers(headers),
        digest=digest,
        share=share,
        ignore_qp=ignore_qp,
        no_origin=no_origin,
    )
    progress = bar if recorder is None else recorder.watch(bar)
    try:
        with bar if bar is not None else contextlib.nullcontext():
            result = place(progress=progress)
        if destination.through:
            destination.install(landing)
    finally:
        if destination.through:
            landing.unlink(missing_ok=True)
    if recorder is not None:
        recorder.placed(str(dest), hit=result.hit)
        recorder.stats = FetchProgress(result.size, result.size, result.bytes_from_origin, result.bytes_from_peers)
    if callback:
        run_callback(callback, dest)  # before the line that says it went well, as in a download made here
    if not quiet:
        how = "written through" if destination.through else "hard link" if result.linked else "copy"
        if result.hit:
            detail = f"cache hit, {how}"
        else:
            origin, peers = format_bytes(result.bytes_from_origin), format_bytes(result.bytes_from_peers)
            detail = f"origin {origin}, peers {peers}; cached by the daemon, {how}"
        click.echo(f"{dest}: {format_bytes(result.size)} in {result.seconds:.2f}s ({detail})", err=True)
    if after_seeding:
        # The daemon seeds its own cached copy: this one has no serving period.
        run_callback(after_seeding, dest, AFTER_SEEDING)
