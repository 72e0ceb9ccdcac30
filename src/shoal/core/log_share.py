"""What a mirror job's run log shows to a reader off its worker's host: which run, which bytes, and which
secrets hidden.

A run log (shoal.mirror.run_log) stays on the worker that wrote it; the manager asks that worker for a
piece of it (shoal.mirror.log_relay) to answer the status page's log link and ``shoal mirror ctl logs``.
The decisions are here, as values; the worker reads the file. Rules, and why:

- A read names a run by its log's file name (``debian_2026-12-06_21-30-05.log``, ``….log.fail``) or asks
  for ``latest``; any other name is refused before a file is opened, so no request reaches outside the
  job's log directory or into another job's logs. A run named with or without ``.fail`` is found either
  way, so a reader following a run does not lose it when it fails and its log is renamed.
- A read is bounded (``MAX_LOG_READ``). Without an offset it is the log's tail; with one it runs forward
  from there, which is how a reader following a run asks for what came since.
- Only whole lines are shown: a tail starts after the first newline of its window, a forward read stops
  after the last one (the rest comes with the next read), so a window's edge never cuts a secret in two
  where redaction could not recognise it. A window that holds no whole line (one line longer than the
  window) is shown as it is, so a reader is never stuck behind it or shown nothing.
- The text is redacted (core.redact): every URL's password, and the job's own secrets by value: rsync's
  password, the upstream's password and query, and the values of ``env`` variables named like secrets.
  Commands and hooks print what they like; these are what Shoal knows to be secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from shoal.core.errors import ProtocolError
from shoal.core.redact import redact_secrets

LATEST = "latest"
"""The name of the link to a job's newest run log, and what a read asks for when it names no run."""
FAILED = ".fail"
"""The suffix a failed run's log gets (tunasync's)."""

MAX_LOG_READ = 1 << 20
"""The most bytes of a run log one read returns: a status page link shows the last MiB of a run."""

_SECRET_NAME = re.compile(r"PASS|TOKEN|SECRET|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
"""``env`` variables whose values are hidden in what a log shows (RSYNC_PASSWORD, AWS_SECRET_ACCESS_KEY)."""


def run_log_names(job: str) -> re.Pattern[str]:
    """The file names of ``job``'s run logs: ``<job>_<UTC time>[_<n>].log[.fail]``."""
    return re.compile(rf"{re.escape(job)}_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d(?:_\d+)?\.log(?:{re.escape(FAILED)})?")


def check_run(job: str, run: str | None) -> str:
    """The run a read asks for (``latest`` when None); ProtocolError (400) for any name that is not one of
    ``job``'s run logs."""
    if run is None or run == LATEST:
        return LATEST
    if not run_log_names(job).fullmatch(run):
        raise ProtocolError(f"{run[:80]!r} is not the name of a run log of job {job!r} (see its 'runs')", field="run")
    return run


def other_name(run: str) -> str:
    """The name the same run's log has before or after it failed."""
    return run.removesuffix(FAILED) if run.endswith(FAILED) else run + FAILED


def started_after(a: str, b: str) -> bool:
    """Whether run ``a`` started after run ``b`` (two run log names of one job). The names sort in the order
    their runs started, on one worker and across workers as far as their clocks agree (UTC time, then a
    zero-padded number within a second; shoal.mirror.run_log names them)."""
    return a.removesuffix(FAILED) > b.removesuffix(FAILED)


def same_run(a: str | None, b: str | None) -> bool:
    """Whether two run log names are the same run's (one may be its ``.fail`` name)."""
    return a is not None and b is not None and a.removesuffix(FAILED) == b.removesuffix(FAILED)


@dataclass(frozen=True, slots=True)
class Window:
    """The bytes ``[start, stop)`` of a log of ``size`` bytes to read; ``tail``: no offset was asked."""

    start: int
    stop: int
    size: int
    tail: bool


def window(size: int, offset: int | None, limit: int) -> Window:
    """The bytes to read: the last ``limit`` without an offset, else up to ``limit`` from ``offset``."""
    limit = max(1, min(limit, MAX_LOG_READ))
    if offset is None:
        return Window(max(0, size - limit), size, size, tail=True)
    start = min(max(0, offset), size)
    return Window(start, min(size, start + limit), size, tail=False)


def whole_lines(w: Window, data: bytes) -> tuple[int, int, bytes]:
    """``data`` (the bytes of ``w``, which may be fewer if the file shrank) cut to whole lines: the start
    and end offsets of what is shown, and those bytes."""
    start, end = w.start, w.start + len(data)
    if w.tail and start > 0:
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            data, start = data[cut + 1 :], start + cut + 1
    elif not w.tail and not data.endswith(b"\n"):
        cut = data.rfind(b"\n")
        if cut >= 0:
            data, end = data[: cut + 1], start + cut + 1
    return start, end, data


def job_secrets(*, password: str | None, upstream: str, env: dict[str, str]) -> tuple[str, ...]:
    """What a job's log must not show by value: its rsync password, its upstream's password and query (and
    each value in it), and the values of its ``env`` variables named like secrets."""
    found: list[str] = [password] if password else []
    parts = urlsplit(upstream) if "://" in upstream else None
    if parts is not None:
        with_password = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
        found += [with_password, parts.query]
        found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    found += [value for name, value in env.items() if _SECRET_NAME.search(name)]
    return tuple(s for s in found if s)


def shown_text(data: bytes, secrets: Iterable[str]) -> str:
    """A log's bytes as text for a reader: UTF-8 (undecodable bytes as U+FFFD), secrets as ``***``."""
    return redact_secrets(data.decode("utf-8", "replace"), secrets)
