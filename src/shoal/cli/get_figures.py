"""``shoal get --stats-json PATH``: the get's figures as one JSON document, written as the command exits.

Written whatever the outcome (success, an error, Ctrl-C), with the exit status the command ends with, so a
script reads one file instead of parsing stderr. Written atomically (a temporary file beside PATH, then a
rename): a reader never sees half a document, and a failed write leaves the previous one whole. The file
is written after the download ends, so the figures are final; bytes by scope are known for a download made
in this process, not for one the daemon made (its progress lines carry origin and peers only).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import click
import msgspec

from shoal.cli.progress import StatsLike
from shoal.core.download_values import Stats

T = TypeVar("T", bound=StatsLike)


class SourceBytes(msgspec.Struct, frozen=True):
    """Bytes taken in by source (core.messages.ScopeBytes, named as the metrics' ``source`` label)."""

    origin: int
    rack: int
    site: int
    elsewhere: int
    unlabelled: int


class GetFigures(msgspec.Struct, frozen=True):
    """What ``--stats-json`` writes."""

    url: str
    exit_status: int
    """The command's exit code (0 success; the README lists the others)."""
    through_daemon: bool
    """The daemon did the download (or answered from its cache)."""
    cache_hit: bool
    path: str | None
    """Where the file was placed ("-": stdout); None when it was not."""
    size: int | None
    """The file's length; None when it was never learned."""
    done: int
    """Bytes verified."""
    seconds: float
    """From the command's start until the file was in place, or until it ended without."""
    rate: float
    """``done`` over ``seconds``, in bytes per second."""
    bytes_from_origin: int
    bytes_from_peers: int
    bytes_by_source: SourceBytes | None
    """None through the daemon."""
    pieces: int | None
    """Pieces in the file; None through the daemon, or when never learned."""
    pieces_done: int | None


class FigureRecorder:
    """Follows one get: its counters as they move (:meth:`watch`), and its result once placed."""

    def __init__(self, url: str, *, through_daemon: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.through_daemon = through_daemon
        self.clock = clock
        self.started = clock()
        self.stats: StatsLike | None = None
        self.ended: float | None = None
        self.path: str | None = None
        self.cache_hit = False

    def watch(self, progress: Callable[[T], None] | None) -> Callable[[T], None]:
        """A progress callback that keeps the latest counters, then calls ``progress`` (the bar) if any."""

        def seen(stats: T) -> None:
            self.stats = stats
            if progress is not None:
                progress(stats)

        return seen

    def placed(self, path: str, *, hit: bool = False) -> None:
        self.ended = self.clock()
        self.path = path
        self.cache_hit = hit

    def figures(self, exit_status: int) -> GetFigures:
        seconds = (self.ended if self.ended is not None else self.clock()) - self.started
        stats = self.stats
        done = stats.done if stats is not None else 0
        by_source = pieces = pieces_done = None
        if isinstance(stats, Stats):
            scope = stats.by_scope()
            by_source = SourceBytes(scope.origin, scope.rack, scope.racks, scope.sites, scope.unlabelled)
            if stats.piece_length:
                pieces, pieces_done = stats.pieces, stats.pieces_done
        return GetFigures(
            url=self.url,
            exit_status=exit_status,
            through_daemon=self.through_daemon,
            cache_hit=self.cache_hit,
            path=self.path,
            size=stats.total if stats is not None and stats.total else None,
            done=done,
            seconds=round(seconds, 6),
            rate=round(done / seconds, 1) if seconds > 0 else 0.0,
            bytes_from_origin=stats.from_origin if stats is not None else 0,
            bytes_from_peers=stats.from_peers if stats is not None else 0,
            bytes_by_source=by_source,
            pieces=pieces,
            pieces_done=pieces_done,
        )


def check_destination(path: Path) -> Path:
    """``--stats-json``'s PATH, checked before the get starts: its directory must exist (a usage error)."""
    if not path.parent.is_dir():
        raise click.BadParameter(f"no directory {path.parent}", param_hint="--stats-json")
    if path.is_dir():
        raise click.BadParameter(f"{path} is a directory", param_hint="--stats-json")
    return path


@contextlib.contextmanager
def written_at_exit(path: Path, recorder: FigureRecorder) -> Iterator[None]:
    """Run the block (the get), then write ``recorder``'s figures to ``path`` with the exit status the
    block ends with: 0 when it returns, a SystemExit's code, 1 for anything else."""
    status = 1
    try:
        yield
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
        raise
    finally:
        write_atomically(path, msgspec.json.encode(recorder.figures(status)) + b"\n")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``. A failure is a
    warning on stderr: the get's own outcome stands."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        print(f"shoal: warning: cannot write --stats-json {path}: {exc.strerror or exc}", file=sys.stderr)
