"""``shoal mirror ctl logs JOB``: a job's run logs, read where they are (``--config``: on the worker's host)
or through the manager from any host (shoal.mirror.log_relay).

Through the manager a read is bounded (core.log_share.MAX_LOG_READ) and redacted on the worker; following a
run asks the manager once a second for what came since, and moves to the next run once the one followed is
read to its end. It follows the job, not a worker, as ``tail -F`` follows a rotated file: the manager reads
each run on the worker that holds it and says which worker has the job's newest run, so a next run that
went to another worker is followed there. A run that cannot be read any more (its worker is gone) is left
for the job's next one, with a note on stderr. On the worker's host the files are read as they are, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from shoal.core.errors import ProtocolError, TrackerUnavailable, UsageError
from shoal.core.log_share import MAX_LOG_READ, started_after

if TYPE_CHECKING:
    from shoal.mirror.client import MirrorClient
    from shoal.mirror.messages import JobLog

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
            if follow:
                await _follow(client, job, piece, given=run is not None, write=write)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


async def _follow(client: MirrorClient, job: str, piece: JobLog, *, given: bool, write: Write) -> None:
    """Follow the run of ``piece`` from its end, then (unless the run was ``given``) the job's next runs,
    on whichever worker each runs, as ``tail -F`` follows a rotated file; until interrupted."""
    current, position, where = piece.run, piece.end, piece.worker
    waiting = ""
    while True:
        read: JobLog | None = None
        try:
            read = await client.job_log(job, run=current, offset=position, limit=MAX_LOG_READ)
        except (UsageError, TrackerUnavailable) as exc:  # the run's worker is gone, or no longer keeps it
            if given:
                raise
            problem = str(exc)
        if read is not None:
            write(read.text.encode())
            moved = read.end > position
            current, position, where = read.run, read.end, read.worker
            if moved and position < read.size:
                continue  # more of this run is there already
            if not given and read.latest is not None and started_after(read.latest, current):
                current, position = read.latest, 0  # the next run has started there: follow it from its start
                continue
            problem = ""
        if not given and (read is None or read.running_on not in (None, read.worker)):
            # The job's newest run is on another worker than the run followed: follow the job there once its
            # log has started (that worker's latest may be an older run of the job until then; a run started
            # in the same second elsewhere has the same name, so a run is its worker's and its name).
            try:
                head = await client.job_log(job, limit=1)
            except (UsageError, TrackerUnavailable) as exc:
                problem = str(exc)
            else:
                if (head.worker, head.run) != (where, current) and not started_after(current, head.run):
                    current, position, where = head.run, 0, head.worker
                    continue
        if problem and problem != waiting:
            click.echo(f"[waiting for job {job}'s next run: {problem}]", err=True)
        waiting = problem
        await asyncio.sleep(FOLLOW_POLL)


def _print_runs(runs: list[str], latest: str | None) -> None:
    for name in runs:
        click.echo(f"{name}{'  (latest)' if name == latest else ''}")
