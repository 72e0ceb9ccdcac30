"""The Python API: ``shoal.get(url, ...)`` and its async twin ``shoal.aget(url, ...)``.

Both share one implementation (``aget``; ``get`` runs it in a fresh event loop) and the CLI calls the same
function, so the command line and the library cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from shoal.core.download_values import Stats
from shoal.core.errors import ListenError, UsageError
from shoal.core.ids import canonical_url, headers_tag, parse_ignored_params
from shoal.core.tracker_choice import parse_trackers
from shoal.core.units import parse_rate
from shoal.http.credentials import Credentials
from shoal.http.tls import load_roots_first
from shoal.http.token_reload import reloading
from shoal.peer import seeding
from shoal.peer.callback import AFTER_SEEDING, callback_argv, run_callback
from shoal.peer.config import DEFAULT_LISTEN, GetConfig
from shoal.peer.engine import Download
from shoal.peer.request import check_digest, check_no_origin, parse_headers, parse_listen, resolve_destination
from shoal.peer.server import PieceServer, ServerConfig

log = logging.getLogger("shoal.get")


@dataclass(frozen=True, slots=True)
class GetResult:
    path: Path
    size: int
    digest: str | None
    """The ``ALGORITHM:HEX`` asked for (lower case), which the file matched; None when none was."""
    bytes_from_origin: int
    bytes_from_peers: int
    seconds: float
    task_id: str
    seeding: float = 0.0
    """Seconds the file is served to peers now that it is in place (0: it is not, see peer.seeding.seeds)."""


def _rate(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value <= 0:
            raise UsageError("rates must be positive")
        return value
    return parse_rate(value)


STDOUT = Path("-")
"""GetResult.path of a file streamed to stdout (``output="-"``)."""


async def aget(
    url: str,
    *,
    output: str | os.PathLike[str] | None = None,
    dest_dir: str | os.PathLike[str] | None = None,
    tracker: str | None = None,
    headers: Iterable[str] | Mapping[str, str] | None = None,
    download_rate: int | str | None = None,
    upload_rate: int | str | None = None,
    upload_time: float = GetConfig.upload_time,
    fallback: bool = False,
    no_origin: bool = False,
    digest: str | None = None,
    ignore_qp: Iterable[str] = (),
    site: str = "",
    rack: str = "",
    listen: str = DEFAULT_LISTEN,
    callback: str | None = None,
    after_seeding: str | None = None,
    progress: Callable[[Stats], None] | None = None,
    on_complete: Callable[[GetResult], None] | None = None,
    share_authenticated: bool = False,
    credentials: Credentials | None = None,
) -> GetResult:
    """Download ``url`` through the swarm into place; see GetConfig for what each option means.

    With ``headers`` (origin credentials) the file is private to them: fetched from the origin only, never
    announced or served; ``share_authenticated`` shares it only with the peers holding the same headers
    (core.ids.headers_tag keys its task).

    ``tracker`` defaults to the ``SHOAL_TRACKER`` environment variable; with neither, the file comes
    straight from the origin. ``callback`` is a command run with the file's path appended once the file
    is in place; if it cannot start or fails, CallbackFailed is raised at once (no seeding follows), the
    file left in place. ``after_seeding`` is a command run the same way once the serving period is over
    (ended by its time, or early because the file went away; not when the get is stopped): minion's
    ``--callback delete``, done when no peer relies on the file any more. ``on_complete`` is called with
    the result as soon as the file is in place, before the ``upload_time`` of serving it to peers.
    ``credentials`` are the fleet's token and TLS (shoal.http.credentials.load); none: a trusted LAN.
    """
    stream = output is not None and os.fspath(output) == "-"
    if stream and (dest_dir is not None or callback is not None or after_seeding is not None):
        raise UsageError("-o - streams the file to stdout: it takes no --dest-path, --callback or --after-seeding")
    if after_seeding is not None:
        callback_argv(after_seeding, AFTER_SEEDING)
    # Streamed, the file is downloaded (and served to peers) in a scratch directory removed at the end.
    scratch = tempfile.mkdtemp(prefix="shoal-stream-") if stream else None
    try:
        config = _config(
            url,
            output=None if stream else output,
            dest_dir=scratch if stream else dest_dir,
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
            share_authenticated=share_authenticated,
        )
        if credentials is not None:
            config = dataclasses.replace(config, credentials=credentials)
        placed = on_complete
        if stream:
            sys.stdout.flush()
            config = dataclasses.replace(config, stream_fd=sys.stdout.fileno())

            def placed(result: GetResult) -> None:
                _end_stream(config.stream_fd)
                if on_complete is not None:
                    on_complete(dataclasses.replace(result, path=STDOUT))

        result = await _download(
            url,
            config,
            listen=listen,
            callback=callback,
            after_seeding=after_seeding,
            progress=progress,
            on_complete=placed,
        )
        return dataclasses.replace(result, path=STDOUT) if stream else result
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _end_stream(fd: int | None) -> None:
    """The streamed file is complete and verified: its reader sees the end of the file now, not once the
    serving period that follows is over (``sha256sum`` prints, ``tar`` ends, as after curl). The descriptor
    then points at /dev/null, so nothing written later can reach the reader or fail on a closed pipe."""
    if fd is None:
        return
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


async def _download(
    url: str,
    config: GetConfig,
    *,
    listen: str,
    callback: str | None,
    after_seeding: str | None,
    progress: Callable[[Stats], None] | None,
    on_complete: Callable[[GetResult], None] | None,
) -> GetResult:
    """aget's download once its options are checked: into place, then the serving period."""
    started = time.monotonic()
    credentials = config.credentials
    server = PieceServer(
        ServerConfig(
            max_uploads=config.max_uploads,
            upload_rate=config.upload_rate,
            fleet_key=credentials.key,
            tls=credentials.server_ssl,
        )
    )
    connector = aiohttp.TCPConnector(limit=128, limit_per_host=16)
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, read_bufsize=1 << 20, middlewares=(load_roots_first,)
    )
    # The token file is read again when it changes, as a daemon's is: a rotation during a long seeding
    # period (--upload-time) reaches the tickets this piece server checks and the credentials it sends.
    async with session, reloading(credentials, on_sighup=False):
        if config.tracker is not None:
            try:
                server.bind(config.listen_host, config.listen_port)
            except OSError as exc:
                raise ListenError.from_os_error(listen, exc) from None
        download = Download(url, config, session, server)
        ticker = asyncio.ensure_future(_tick(download.stats, progress)) if progress else None
        serving = asyncio.ensure_future(_serve_from_first_piece(download, server)) if config.tracker else None
        try:
            completed = await download.run()
            if serving is not None:
                await _try_serve(server)  # an empty file has no first piece
            seconds = time.monotonic() - started
            if progress:
                progress(download.stats)
            if ticker:
                ticker.cancel()
                ticker = None
            if callback:
                # Its failure ends the get at once (CallbackFailed), with no seeding period.
                await asyncio.to_thread(run_callback, callback, completed.path)
            result = GetResult(
                path=completed.path,
                size=completed.size,
                digest=completed.digest,
                bytes_from_origin=download.stats.from_origin,
                bytes_from_peers=download.stats.from_peers,
                seconds=seconds,
                task_id=completed.task_id,
                seeding=config.upload_time if seeding.seeds(download, config.upload_time) else 0.0,
            )
            if on_complete:
                on_complete(result)
            await seeding.seed(download, completed, config.upload_time)
            if after_seeding:
                await asyncio.to_thread(run_callback, after_seeding, completed.path, AFTER_SEEDING)
            return result
        finally:
            if ticker:
                ticker.cancel()
            if serving is not None:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
            with contextlib.suppress(Exception):
                await asyncio.shield(download.leave())
            await server.stop()


def _config(
    url: str,
    *,
    output: str | os.PathLike[str] | None,
    dest_dir: str | os.PathLike[str] | None,
    tracker: str | None,
    headers: Iterable[str] | Mapping[str, str] | None,
    download_rate: int | str | None,
    upload_rate: int | str | None,
    upload_time: float,
    fallback: bool,
    no_origin: bool,
    digest: str | None,
    ignore_qp: Iterable[str],
    site: str,
    rack: str,
    listen: str,
    callback: str | None,
    share_authenticated: bool = False,
) -> GetConfig:
    """aget's options checked (a UsageError names the first that is wrong) and made a GetConfig."""
    canonical_url(url)  # validates
    digest = check_digest(digest)
    if callback is not None:
        callback_argv(callback)
    if upload_time < 0:
        raise UsageError("upload time must not be negative")
    listen_host, listen_port = parse_listen(listen)
    extra = parse_headers(headers)
    tag = headers_tag(extra)
    tracker = tracker if tracker is not None else os.environ.get("SHOAL_TRACKER") or None
    if tag and not share_authenticated and tracker is not None:
        log.info("origin headers given: fetching from the origin only, sharing with no peer (--share-authenticated)")
        tracker = None
    config = GetConfig(
        dest=resolve_destination(url, output, dest_dir),
        tracker=_trackers(tracker),
        headers={"Accept-Encoding": "identity", **extra},
        # Shared or not, the task is keyed by the headers: a private download's pieces are never under the
        # URL's public task, even while they pass through a piece server.
        task_tag=tag,
        download_rate=_rate(download_rate),
        upload_rate=_rate(upload_rate),
        upload_time=upload_time,
        fallback=fallback,
        no_origin=no_origin,
        digest=digest,
        ignore_qp=parse_ignored_params([ignore_qp] if isinstance(ignore_qp, str) else ignore_qp),
        site=site,
        rack=rack,
        listen_host=listen_host,
        listen_port=listen_port,
    )
    if no_origin and config.tracker is None:
        raise UsageError("--no-origin needs a tracker: the file can only come from the swarm")
    check_no_origin(no_origin, fallback)
    return config


def _trackers(text: str | None) -> str | None:
    """The tracker option checked: its base URLs, normalised, comma-separated (core.tracker_choice)."""
    return None if text is None else ",".join(parse_trackers(text))


async def _serve_from_first_piece(download: Download, server: PieceServer) -> None:
    """Answer peers from our first piece on: before it there is nothing to serve, and by then the first
    requests are out, so the HTTP server's start (and its import of aiohttp.web) does not delay them.
    Peers that connect earlier wait in the listen backlog."""
    await download.first_piece.wait()
    await _try_serve(server)


async def _try_serve(server: PieceServer) -> None:
    """Start answering peers; a failure is logged, never the download's: the file still comes (or came)."""
    try:
        await server.serve()
    except Exception as exc:
        log.error("the piece server could not start (%s); other peers cannot fetch from this one", exc)


def get(url: str, **options: object) -> GetResult:
    """Blocking twin of :func:`aget` (same options, same result)."""
    return asyncio.run(aget(url, **options))  # type: ignore[arg-type]


async def _tick(stats: Stats, progress: Callable[[Stats], None]) -> None:
    while True:
        progress(stats)
        await asyncio.sleep(0.2)
