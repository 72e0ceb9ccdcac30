"""A mirror job's run logs: one file per attempt, every line of its hooks and provider with its time.

The log directory of a job (``log_place``)::

    <log_dir>/debian_2026-12-06_21-30-05.log        a successful attempt
    <log_dir>/debian_2026-12-06_15-30-02.log.fail   a failed one (renamed when it failed, as tunasync does)
    <log_dir>/latest -> debian_2026-12-06_21-30-05.log

``log_dir`` is the job's, else the worker's (both may say ``{{.Name}}``, tunasync's template for the job's
name), else ``<directory>/.logs/<job>``: hidden, so the worker's seeder never publishes a log.

Rules, and why:

- ``latest`` points at the attempt under way from its first line, so ``tail -F latest`` and
  ``shoal mirror ctl logs --follow`` show a sync as it runs.
- Each line is written with its time (UTC, milliseconds) as it comes, and flushed: a sync that hangs
  shows where. Shoal's own lines (which hook, which command, how it ended) start with ``==`` after the
  time; only the hooks' and the provider's lines are matched against ``fail_on_match`` and
  ``size_pattern`` (``core.log_match``), so a pattern never matches a command line Shoal wrote.
- A line longer than ``LINE_LIMIT`` is cut into lines of that length: a program that never ends a line
  does not grow memory.
- Rotation keeps the job's ``keep`` newest run logs (names sort by time) and removes only files named as
  this job's logs, so a log directory shared by jobs, or holding other files, loses nothing else.
- ``read_run_log`` reads a piece of one run's log for a reader on another host (the manager relays it:
  shoal.mirror.log_relay); which names it accepts and which bytes it returns are core.log_share's rules.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shoal.core.errors import NotFound
from shoal.core.log_match import LogWatch
from shoal.core.log_share import FAILED, LATEST, check_run, other_name, run_log_names, whole_lines, window
from shoal.core.mirror_config import JobSpec, WorkerSettings, log_directory

LOGS = ".logs"
"""Under the worker's directory: the default home of job logs (hidden: never seeded)."""
LINE_LIMIT = 64 << 10


@dataclass(frozen=True, slots=True)
class LogPlace:
    """Where one job's run logs go, and how many are kept."""

    directory: Path
    keep: int = 10


def log_place(settings: WorkerSettings, spec: JobSpec) -> LogPlace:
    """The job's log directory and rotation, from its own keys, else the worker's."""
    template = spec.log_dir or settings.log_dir
    if template is None:
        directory = Path(settings.directory) / LOGS / spec.name
    else:
        directory = Path(log_directory(template, spec.name))
    return LogPlace(directory, spec.log_keep or settings.log_keep)


def _stamp(now: float) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)).encode() + b".%03dZ " % (int(now * 1000) % 1000)


class ChildOutput:
    """One program's output, cut into timed lines for the run log: ``with run_log.child() as output:``,
    then ``output(chunk)`` for each chunk; the last line is written when the block ends."""

    def __init__(self, log: RunLog) -> None:
        self._log = log
        self._partial = bytearray()

    def __enter__(self) -> ChildOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def __call__(self, chunk: bytes) -> None:
        self._partial += chunk
        *lines, rest = self._partial.split(b"\n")
        for line in lines:
            self._log.line(bytes(line))
        self._partial = bytearray(rest)
        while len(self._partial) > LINE_LIMIT:
            self._log.line(bytes(self._partial[:LINE_LIMIT]))
            del self._partial[:LINE_LIMIT]

    def end(self) -> None:
        """The program is done: its last line, if it did not end one."""
        if self._partial:
            self._log.line(bytes(self._partial))
            self._partial.clear()


class RunLog:
    """One attempt's log file. ``start`` makes it (blocking: call it in a thread); ``finish`` ends it."""

    def __init__(self, place: LogPlace, job: str, path: Path, file: BinaryIO, watch: LogWatch) -> None:
        self.place = place
        self.job = job
        self.path = path
        self.watch = watch
        self._file = file

    @classmethod
    def start(cls, place: LogPlace, job: str, watch: LogWatch, now: float) -> RunLog:
        """Make the log file of an attempt starting at ``now`` and point ``latest`` at it. OSError if the
        directory cannot be made or written."""
        place.directory.mkdir(parents=True, exist_ok=True)
        base = f"{job}_{time.strftime('%Y-%m-%d_%H-%M-%S', time.gmtime(now))}"
        # Runs within one second are numbered after the highest number there (not the first free one, which
        # rotation may have freed), so names keep sorting in the order the runs started.
        same_second = re.compile(rf"{re.escape(base)}(?:_(\d+))?\.log(?:{re.escape(FAILED)})?")
        taken = [int(m[1] or 1) for name in os.listdir(place.directory) if (m := same_second.fullmatch(name))]
        number = max(taken, default=0) + 1
        path = place.directory / (f"{base}.log" if number == 1 else f"{base}_{number:03d}.log")
        file = path.open("xb")
        _point_latest(place.directory, path.name)
        return cls(place, job, path, file, watch)

    def note(self, text: str) -> None:
        """A line of Shoal's own (which hook runs, how the provider ended)."""
        self._write(b"== " + text.encode("utf-8", "replace"))

    def line(self, raw: bytes) -> None:
        """A line a hook or the provider printed (without its newline)."""
        raw = raw.removesuffix(b"\r")
        self.watch.line(raw.decode("utf-8", "replace"))
        self._write(raw)

    def child(self) -> ChildOutput:
        return ChildOutput(self)

    def _write(self, raw: bytes) -> None:
        if self._file.closed:
            return
        self._file.write(_stamp(time.time()) + raw + b"\n")
        self._file.flush()

    def finish(self, ok: bool) -> Path:
        """Close the log, mark it ``.fail`` if the attempt failed, and remove the job's oldest run logs
        beyond ``keep``: the log's final path. Blocking: call it in a thread."""
        self._file.close()
        if not ok:
            failed = self.path.with_name(self.path.name + FAILED)
            os.rename(self.path, failed)
            self.path = failed
            _point_latest(self.place.directory, failed.name)
        rotate(self.place, self.job)
        return self.path


def _point_latest(directory: Path, name: str) -> None:
    temporary = directory / f".{LATEST}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(name, temporary)
    os.replace(temporary, directory / LATEST)


def rotate(place: LogPlace, job: str) -> list[str]:
    """Remove the job's run logs beyond the ``keep`` newest; the names removed."""
    pattern = run_log_names(job)
    logs = sorted(name for name in os.listdir(place.directory) if pattern.fullmatch(name))
    doomed = logs[: max(0, len(logs) - place.keep)]
    for name in doomed:
        with contextlib.suppress(FileNotFoundError):
            (place.directory / name).unlink()
    return doomed


def latest_log(place: LogPlace) -> Path | None:
    """The run log ``latest`` points at, or None when the job has none yet."""
    try:
        return place.directory / os.readlink(place.directory / LATEST)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class OpenedLog:
    """A run log opened for reading (``fd``, which the caller closes), with what its directory holds."""

    fd: int
    run: str
    latest: str | None
    runs: tuple[str, ...]


def open_run_log(place: LogPlace, job: str, run: str | None) -> OpenedLog:
    """Open ``job``'s run log ``run`` (None or ``latest``: the latest; a name with or without ``.fail``
    finds the run either way). ProtocolError for a name that is not one of the job's run logs, NotFound
    when there is no such log (or none yet), OSError when the directory cannot be read. The file is opened
    without following a link, so nothing outside the log directory is read under a run's name. Blocking."""
    asked = check_run(job, run)
    names = run_log_names(job)
    try:
        runs = tuple(sorted(name for name in os.listdir(place.directory) if names.fullmatch(name)))
    except FileNotFoundError:
        runs = ()
    latest = latest_log(place)
    latest_name = latest.name if latest is not None and names.fullmatch(latest.name) else None
    if asked == LATEST:
        if latest_name is None:
            raise NotFound(f"job {job} has no run log in {place.directory} yet")
        asked = latest_name
    for name in (asked, other_name(asked)):
        try:
            fd = os.open(place.directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # ELOOP: a link where a log should be
                continue
            raise
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return OpenedLog(fd, name, latest_name, runs)
        os.close(fd)
    raise NotFound(f"job {job} has no run log {asked} (kept: {', '.join(runs[-5:]) or 'none'})")


@dataclass(frozen=True, slots=True)
class LogRead:
    """A piece of one run's log (core.log_share decides which bytes): ``data`` is ``[start, end)`` of the
    ``size`` bytes the log had when read; ``runs`` are the job's run logs kept, oldest first."""

    run: str
    latest: str | None
    runs: tuple[str, ...]
    size: int
    start: int
    end: int
    data: bytes


def read_run_log(place: LogPlace, job: str, run: str | None, *, offset: int | None, limit: int) -> LogRead:
    """Part of ``job``'s run log ``run`` (``open_run_log``; its errors): the tail of ``limit`` bytes, or
    up to ``limit`` from ``offset`` on, cut to whole lines (core.log_share). Blocking: call it in a thread."""
    opened = open_run_log(place, job, run)
    try:
        w = window(os.fstat(opened.fd).st_size, offset, limit)
        data = os.pread(opened.fd, w.stop - w.start, w.start)
    finally:
        os.close(opened.fd)
    start, end, shown = whole_lines(w, data)
    return LogRead(opened.run, opened.latest, opened.runs, w.size, start, end, shown)


def follow(place: LogPlace, write: Callable[[bytes], None], *, poll: float = 0.2) -> None:
    """Write the latest run log, then whatever is added to it and to every later run's log, as it comes,
    until interrupted (``tail -F latest``). A run's log is followed by its inode, so the rename of a failed
    run's log to ``.fail`` does not start it over; a new run is switched to once the old log is read to
    its end. Blocking: it is the whole of ``shoal mirror ctl logs --follow``."""
    current: BinaryIO | None = None
    identity: tuple[int, int] | None = None
    try:
        while True:
            if current is not None:
                while chunk := current.read(65536):
                    write(chunk)
            path = latest_log(place)
            try:
                st = os.stat(path) if path is not None else None
            except FileNotFoundError:
                st = None
            if st is not None and path is not None and (st.st_dev, st.st_ino) != identity:
                if current is not None:
                    current.close()
                current, identity = path.open("rb"), (st.st_dev, st.st_ino)
                continue
            time.sleep(poll)
    finally:
        if current is not None:
            current.close()
