"""``shoal mirror ctl logs JOB``: a job's run logs, read where they are (``--config``: on the worker's host)
or through the manager from any host (shoal.mirror.log_relay).

Through the manager a read is bounded (core.log_share.MAX_LOG_READ) and redacted on the worker; following a
run asks the manager once a second for what came since, and moves to the next run once the one followed is
read to its end. On the worker's host the files are read as they are, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable

import click

from shoal.core.errors import ProtocolError, UsageError
from shoal.core.log_share import MAX_LOG_READ, same_run

FOLLOW_POLL = 1.0
"""Seconds between a follower's reads through the manager when the run it follows has nothing new."""

Write = Callable[[bytes], None]


def stdout_writer() -> Write:
    out = click.get_binary_stream("stdout")

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    return write


def print_local(
    config_path: os.PathLike[str], job: str, *, run: str | None, tail: int | None, follow: bool, list_runs: bool
) -> None:
    """Read the logs on this host, where the worker with ``config_path`` writes them."""
    from shoal.core.log_share import whole_lines, window
    from shoal.mirror.config import load_config
    from shoal.mirror.run_log import follow as follow_logs
    from shoal.mirror.run_log import log_place, open_run_log

    config = load_config(config_path)
    spec = config.job(job)
    if spec is None:
        raise UsageError(f"{config_path} has no job named {job!r}")
    place = log_place(config.worker, spec)
    write = stdout_writer()
    if follow:
        if run is not None:
            raise UsageError("--follow follows the latest run; leave out --run")
        with contextlib.suppress(KeyboardInterrupt):
            follow_logs(place, write)
        return
    try:
        opened = open_run_log(place, job, run)
    except ProtocolError as exc:  # NotFound: no such run (or none yet); a name that is not a run log's
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {place.directory}: {exc.strerror or exc}") from None
    with os.fdopen(opened.fd, "rb") as log:
        if list_runs:
            _print_runs(list(opened.runs), opened.latest)
        elif tail is None:
            shutil.copyfileobj(log, click.get_binary_stream("stdout"))
        else:
            w = window(os.fstat(log.fileno()).st_size, None, tail)
            log.seek(w.start)
            write(whole_lines(w, log.read(w.stop - w.start))[2])


def print_remote(
    manager: str,
    token: str | None,
    job: str,
    *,
    run: str | None,
    tail: int | None,
    follow: bool,
    list_runs: bool,
) -> None:
    """Read the logs through the manager, which asks the job's worker."""
    from shoal.mirror.client import MirrorClient

    write = stdout_writer()

    async def go() -> None:
        async with MirrorClient(manager, token) as client:
            piece = await client.job_log(job, run=run, limit=1 if list_runs else tail or MAX_LOG_READ)
            if list_runs:
                _print_runs(piece.runs, piece.latest)
                return
            if piece.start > 0 and not follow:
                click.echo(f"[the last {piece.end - piece.start} bytes of {piece.run} (of {piece.size})]", err=True)
            write(piece.text.encode())
            current, position = piece.run, piece.end
            while follow:
                piece = await client.job_log(job, run=current, offset=position, limit=MAX_LOG_READ)
                write(piece.text.encode())
                moved = piece.end > position
                current, position = piece.run, piece.end
                if moved and position < piece.size:
                    continue  # more of this run is there already
                if run is None and piece.latest is not None and not same_run(piece.latest, current):
                    current, position = piece.latest, 0  # the next run has started: follow it from its start
                    continue
                await asyncio.sleep(FOLLOW_POLL)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


def _print_runs(runs: list[str], latest: str | None) -> None:
    for name in runs:
        click.echo(f"{name}{'  (latest)' if name == latest else ''}")
