"""One attempt of a mirror job on a worker: hooks, the provider, and a new version published whole or not at all.

The worker calls ``run_attempt`` once per attempt (``core.mirror_job`` decides whether there is another)
and reports what it returns. An attempt, in order::

    clean .staging/ (what a crash left)      make .staging/<version>/ (empty)
    start the run log (shoal.mirror.run_log); every line below goes into it
    pre_job hooks ──fail──────────────────────────────────────────────────────────┐
    on_syncing()            (the worker reports PreJobDone: the job is syncing)    │
    pre_exec hooks ──fail─────────────────────────────────────────────────────────┤
    provider (http | command | rsync | two-stage-rsync) fills .staging/<version>/  │
    post_exec hooks         (run whether the provider failed or not)              │
    ── provider or post_exec failed, or a log line matched fail_on_match ─────────┤
    post_success hooks ──fail─────────────────────────────────────────────────────┤
    rename .staging/<version> -> versions/<version>; current -> versions/<version> │
    retention removes expired versions          post_fail hooks; .staging/<version> removed
    AttemptResult(ok=True, size, version)       AttemptResult(ok=False, error)
    the run log ends (renamed .fail if the attempt failed); old run logs rotated out

The job directory::

    <job_dir>/versions/<version>/...   published versions, never written into once there
    <job_dir>/current                   symlink to versions/<newest>, replaced atomically (rename)
    <job_dir>/.staging/                 the attempt under way (hidden: the seeder does not publish it)

In the in-place layout (``layout = "in-place"``, tunasync's) the provider fills ``<job_dir>`` itself: no
versions, no ``current``, no retention; a failed attempt leaves what the provider left (rsync's
``--delay-updates`` keeps that to whole files), and the seeder republishes each file as it changes.

Rules, and why:

- Nothing half-written is published: the provider fills a staging directory, and only a rename moves it
  into ``versions/``, after the provider, its integrity checks and the post_exec and post_success hooks
  all succeeded. post_success is therefore a last gate (it can check or complete the staging directory);
  a failure anywhere removes the staging directory and leaves ``current`` as it was.
- Cancellation (the worker stops or restarts the job) kills the running command's whole process group
  (SIGTERM, SIGKILL after ``kill_grace``), removes the staging directory (in a thread, before
  ``run_attempt`` returns), and propagates CancelledError.
  A crash of the worker leaves at most ``.staging/``, which the next attempt removes first.
- ``spec.timeout`` bounds the whole attempt, hooks included, as one deadline: a job's owner thinks of
  "how long may a sync take", and a hanging hook is as stuck as a hanging rsync. The post_fail hooks run
  after the attempt has failed (often because its time ran out), so they get their own limit,
  ``FAIL_HOOK_TIMEOUT``. A timeout reads "timed out after N s". A ``timeout`` of 0 (``NO_LIMIT``) sets
  no deadline (an infinite one, which every limit below passes on as it is), as tunasync runs such a job.
- A failing post_fail hook does not change the outcome (the attempt had already failed); its own error
  is added to the attempt's.
- Every hook and the command see the worker's environment, then the job's ``env``, then these (which win):
  SHOAL_MIRROR_JOB, SHOAL_MIRROR_UPSTREAM, SHOAL_MIRROR_DIR (the job directory, also the hooks' working
  directory), SHOAL_MIRROR_WORKING_DIR (the staging directory being filled, the command's working
  directory), SHOAL_MIRROR_VERSION, SHOAL_MIRROR_ATTEMPT, SHOAL_MIRROR_PREVIOUS (the newest published
  version's directory, or empty), SHOAL_MIRROR_LOG_DIR and SHOAL_MIRROR_LOG_FILE (the run log); tunasync's
  TUNASYNC_MIRROR_NAME, TUNASYNC_WORKING_DIR, TUNASYNC_UPSTREAM_URL, TUNASYNC_LOG_DIR and TUNASYNC_LOG_FILE
  too, so its hook scripts run unchanged. post_exec, post_success and post_fail hooks also get
  SHOAL_MIRROR_EXIT_STATUS and TUNASYNC_JOB_EXIT_STATUS (the command's or rsync's status; for http 0 or
  1) and SHOAL_MIRROR_ERROR (empty on success). In the in-place layout SHOAL_MIRROR_VERSION and
  SHOAL_MIRROR_PREVIOUS are empty and the working directory is the job directory.
- The job's size is what ``size_pattern`` read from the log when it is set and matched a size, else the
  bytes of the published files. The text it matched is kept too (``size_text``), for the status pages that
  show it as tunasync does; an rsync provider's job without ``size_pattern`` keeps the text of rsync's
  ``Total file size: ... bytes``, which tunasync's rsync providers read (its bytes on disk stay the size).
- Errors keep the tail of the failing command's output (at most 4 KiB each), so the status page shows
  why without a trip to the worker's logs.
- Two attempts of one job must not run at once in one job directory; the worker ensures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shoal.core.errors import ProviderError, ProviderTimedOut
from shoal.core.log_match import LogWatch, parse_reported_size
from shoal.core.mirror_config import RSYNC_PROVIDERS, JobSpec
from shoal.core.mirror_values import NO_LIMIT
from shoal.core.retention import next_version_name, plan_retention, version_created
from shoal.mirror.providers import run_command, run_http
from shoal.mirror.rsync import run_rsync
from shoal.mirror.run_log import LOGS, LogPlace, RunLog
from shoal.mirror.shell import KILL_GRACE, OUTPUT_LIMIT, ShellResult, run_shell

log = logging.getLogger(__name__)

RSYNC_TOTAL_SIZE = r"^Total file size: ([0-9.,]+[KMGTP]?) bytes"
"""The size tunasync's rsync providers read from rsync's ``--stats`` (``Total file size: 5.37G bytes``)."""
SIZE_TEXT_LIMIT = 64
"""The longest size text kept (the API's ``SizeText``): a number with a unit is far shorter."""

FAIL_HOOK_TIMEOUT = 300.0
"""Seconds each post_fail hook may take (they run after the attempt's own time may be used up)."""

VERSIONS = "versions"
CURRENT = "current"
STAGING = ".staging"
_CURRENT_TMP = ".current.tmp"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came to."""

    ok: bool
    error: str = ""
    """Empty when ok; else a short, complete reason: the failing hook's or command's exit status and the
    tail of its output, the provider's error, or "timed out after 30 s"."""
    size: int = 0
    """Bytes in the version this attempt published, hidden files not counted (0 on failure)."""
    size_text: str | None = None
    """The size as the run's log wrote it (see the module docstring), shown as is in GET /jobs."""
    version: str | None = None
    """The published version's directory name under ``versions/``."""


class _Failed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def current_version(job_dir: Path) -> Path | None:
    """The published version ``current`` points at, or None."""
    link = job_dir / CURRENT
    try:
        target = os.readlink(link)
    except OSError:
        return None
    path = job_dir / target
    return path if path.is_dir() else None


@dataclass(frozen=True, slots=True)
class _Dirs:
    """Where an attempt works: the job directory, the directory the provider fills (a new version's, or
    the job directory itself in the in-place layout), and the scratch directories removed afterwards."""

    job_dir: Path
    version: str
    """The new version's name; empty in the in-place layout."""
    staging: Path
    parts: Path
    scratch: tuple[Path, ...]


async def run_attempt(
    spec: JobSpec,
    job_dir: Path,
    *,
    attempt: int = 1,
    on_syncing: Callable[[], Awaitable[None]] | None = None,
    kill_grace: float = KILL_GRACE,
    base_env: Mapping[str, str] | None = None,
    logs: LogPlace | None = None,
) -> AttemptResult:
    """Run one attempt of ``spec`` in ``job_dir`` (created if missing), as the module docstring draws it.

    ``base_env`` is the environment hooks and the command start from (default: this process's); ``logs``
    where its run log goes (default: ``.logs/<job>`` beside the job directory)."""
    prepare = _prepare_in_place if spec.layout == "in-place" else _prepare
    try:
        dirs = await asyncio.to_thread(prepare, job_dir)
    except OSError as exc:
        return AttemptResult(ok=False, error=f"cannot prepare the job directory {job_dir}: {exc}")
    place = logs or LogPlace(dirs.job_dir.parent / LOGS / spec.name)
    default = RSYNC_TOTAL_SIZE if spec.size_pattern is None and spec.provider in RSYNC_PROVIDERS else None
    watch = LogWatch.of(spec.fail_on_match, spec.size_pattern or default)
    try:
        run_log = await asyncio.to_thread(RunLog.start, place, spec.name, watch, time.time())
    except OSError as exc:
        await asyncio.to_thread(_discard, *dirs.scratch)
        return AttemptResult(ok=False, error=f"cannot write the run log in {place.directory}: {exc}")
    result = AttemptResult(ok=False, error="cancelled")
    try:
        result = await _logged_attempt(spec, dirs, run_log, attempt, on_syncing, kill_grace, base_env)
        return result
    finally:
        run_log.note("success" if result.ok else f"failed: {result.error}")
        await asyncio.shield(asyncio.to_thread(_finish_log, spec, run_log, result.ok))


def _finish_log(spec: JobSpec, run_log: RunLog, ok: bool) -> None:
    """End the run log; a log that cannot be renamed or rotated does not change what the attempt came to."""
    try:
        run_log.finish(ok)
    except OSError as exc:
        log.warning("%s: ending the run log %s failed: %s", spec.name, run_log.path, exc)


async def _logged_attempt(
    spec: JobSpec,
    dirs: _Dirs,
    run_log: RunLog,
    attempt: int,
    on_syncing: Callable[[], Awaitable[None]] | None,
    kill_grace: float,
    base_env: Mapping[str, str] | None,
) -> AttemptResult:
    job_dir = dirs.job_dir
    deadline = asyncio.get_running_loop().time() + spec.timeout if spec.timeout != NO_LIMIT else math.inf
    previous = current_version(job_dir) if spec.layout == "versions" else None
    logs = str(run_log.place.directory)
    env = {
        **(os.environ if base_env is None else base_env),
        **spec.env,
        "SHOAL_MIRROR_JOB": spec.name,
        "SHOAL_MIRROR_UPSTREAM": spec.upstream,
        "SHOAL_MIRROR_DIR": str(job_dir),
        "SHOAL_MIRROR_WORKING_DIR": str(dirs.staging),
        "SHOAL_MIRROR_VERSION": dirs.version,
        "SHOAL_MIRROR_ATTEMPT": str(attempt),
        "SHOAL_MIRROR_PREVIOUS": str(previous) if previous else "",
        "SHOAL_MIRROR_LOG_DIR": logs,
        "SHOAL_MIRROR_LOG_FILE": str(run_log.path),
        # tunasync's names, so its hook scripts run unchanged.
        "TUNASYNC_MIRROR_NAME": spec.name,
        "TUNASYNC_WORKING_DIR": str(dirs.staging),
        "TUNASYNC_UPSTREAM_URL": spec.upstream,
        "TUNASYNC_LOG_DIR": logs,
        "TUNASYNC_LOG_FILE": str(run_log.path),
    }
    this = _Attempt(spec, job_dir, env, deadline, kill_grace, previous, run_log)
    try:
        try:
            await this.hooks("pre_job", spec.hooks.pre_job)
            if on_syncing is not None:
                await on_syncing()
            await this.hooks("pre_exec", spec.hooks.pre_exec)
            status, provider_error = await this.provider(dirs.staging, dirs.parts)
            this.set_exit_status(status)
            this.env["SHOAL_MIRROR_ERROR"] = provider_error
            errors = [provider_error] if provider_error else []
            try:
                await this.hooks("post_exec", spec.hooks.post_exec)
            except _Failed as failure:
                errors.append(failure.message)
            matched = run_log.watch.failed_line
            if matched is not None:
                errors.append(f"the log matched fail_on_match {spec.fail_on_match!r}: {matched.strip()[:200]}")
            if errors:
                raise _Failed("; ".join(errors))
            await this.hooks("post_success", spec.hooks.post_success)
            # Not in a thread: a cancellation must not find the rename half-way to done in another thread
            # while the finally below removes the staging directory. It is a rename, a symlink, two fsyncs.
            target = job_dir if spec.layout == "in-place" else _publish(job_dir, dirs.staging, dirs.version)
        except _Failed as failure:
            return await this.failed(failure.message)
        except OSError as exc:
            return await this.failed(f"local I/O error: {exc}")
    finally:
        # Whatever happened, nothing of this attempt stays in .staging (a published version was renamed out).
        # In a thread: a failed rsync may leave a large tree, and the worker's event loop keeps its
        # heartbeat. Shielded: a second cancellation does not stop the removal half-way.
        await asyncio.shield(asyncio.to_thread(_discard, *dirs.scratch))
    version = dirs.version or None
    try:
        removed = await asyncio.to_thread(_apply_retention, spec, job_dir, dirs.version) if version else ()
        size_text = _reported_text(run_log)
        reported = parse_reported_size(size_text) if size_text is not None else None
        if spec.size_pattern is None:
            reported = None  # rsync's own total is shown, but the size counts the bytes on disk
        size = reported if reported is not None else await asyncio.to_thread(_tree_size, target)
    except OSError as exc:
        # The version is published and whole; a retention that could not finish is retried next time.
        log.warning("%s: retention after version %s failed: %s", spec.name, version, exc)
        removed, size, size_text = (), 0, None
    log.info(
        "%s: published %s (%d bytes)%s",
        spec.name,
        f"version {version}" if version else job_dir,
        size,
        f"; removed {', '.join(removed)}" if removed else "",
    )
    return AttemptResult(ok=True, size=size, size_text=size_text, version=version)


def _reported_text(run_log: RunLog) -> str | None:
    """The size the log gave (``size_pattern``'s or rsync's), if it did and it reads as a size, stripped."""
    text = run_log.watch.size_text
    if text is None:
        return None
    text = text.strip()
    if parse_reported_size(text) is None or len(text) > SIZE_TEXT_LIMIT:
        run_log.note(f"size_pattern matched {text!r}, which is not a size; the bytes on disk are counted instead")
        return None
    return text


class _Attempt:
    """The running attempt's facts, for hooks and the provider."""

    def __init__(
        self,
        spec: JobSpec,
        job_dir: Path,
        env: dict[str, str],
        deadline: float,
        kill_grace: float,
        previous: Path | None,
        run_log: RunLog,
    ) -> None:
        self.spec = spec
        self.previous = previous
        self.job_dir = job_dir
        self.env = env
        self.deadline = deadline
        self.kill_grace = kill_grace
        self.run_log = run_log

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    def timed_out(self, where: str = "") -> _Failed:
        return _Failed(f"timed out after {self.spec.timeout:g} s" + (f" ({where})" if where else ""))

    def set_exit_status(self, status: int) -> None:
        """What the post hooks see of the provider's exit status (tunasync's name too)."""
        self.env["SHOAL_MIRROR_EXIT_STATUS"] = self.env["TUNASYNC_JOB_EXIT_STATUS"] = str(status)

    async def hooks(self, stage: str, commands: tuple[str, ...], *, limit: float | None = None) -> None:
        for index, command in enumerate(commands, 1):
            label = f"{stage} hook {index} `{_short(command)}`"
            timeout = self.remaining() if limit is None else limit
            if timeout <= 0:
                raise self.timed_out(f"before the {label}")
            self.run_log.note(f"{stage} hook {index}: {command}")
            result = await self._shell(command, cwd=self.job_dir, limit=timeout)
            output = _tail(result.output)
            if result.timed_out:
                if limit is None:
                    raise _Failed(f"{self.timed_out(f'in the {label}').message}: {output}".rstrip(": "))
                raise _Failed(f"{label} timed out after {limit:g} s: {output}".rstrip(": "))
            if result.returncode != 0:
                raise _Failed(f"{label} failed with {result.status_text}: {output}".rstrip(": "))

    async def _shell(self, command: str, *, cwd: Path, limit: float) -> ShellResult:
        """``command`` run as ``run_shell`` runs it, its output in the run log."""
        with self.run_log.child() as output:
            return await run_shell(command, cwd=cwd, env=self.env, limit=limit, grace=self.kill_grace, output=output)

    async def provider(self, staging: Path, parts: Path) -> tuple[int, str]:
        """(exit status, error): the command's or rsync's status, or 0/1 for http; the error is empty on
        success."""
        remaining = self.remaining()
        if remaining <= 0:
            return 1, self.timed_out("before the provider").message
        spec = self.spec
        try:
            if spec.provider == "command":
                assert spec.command is not None
                self.run_log.note(f"command: {spec.command}")
                with self.run_log.child() as output:
                    status = await run_command(spec, staging, self.env, remaining, grace=self.kill_grace, output=output)
                return status, ""
            if spec.provider in RSYNC_PROVIDERS:
                status = await run_rsync(
                    spec,
                    staging,
                    self.env,
                    remaining,
                    previous=self.previous,
                    run_log=self.run_log,
                    grace=self.kill_grace,
                )
                return status, ""
            self.run_log.note(f"http: {spec.upstream}")
            try:
                async with asyncio.timeout(remaining):
                    # In place, the job directory is its own previous version: its unchanged files stay.
                    await run_http(spec, staging, parts, staging if spec.layout == "in-place" else self.previous)
            except TimeoutError:
                return 1, self.timed_out().message
            return 0, ""
        except ProviderTimedOut as exc:
            return 1, f"{self.timed_out().message}: {exc.output}".rstrip(": ")
        except ProviderError as exc:
            return exc.returncode or 1, str(exc)
        except OSError as exc:
            return 1, f"local I/O error: {exc}"

    async def failed(self, error: str) -> AttemptResult:
        log.warning("%s: attempt failed: %s", self.spec.name, error)
        if "SHOAL_MIRROR_EXIT_STATUS" not in self.env:
            self.set_exit_status(1)
        self.env["SHOAL_MIRROR_ERROR"] = error
        try:
            await self.hooks("post_fail", self.spec.hooks.post_fail, limit=FAIL_HOOK_TIMEOUT)
        except _Failed as failure:
            log.warning("%s: %s", self.spec.name, failure.message)
            error = f"{error}; {failure.message}"
        return AttemptResult(ok=False, error=error)


def _short(command: str) -> str:
    line = " ".join(command.split())
    return line if len(line) <= 60 else line[:57] + "..."


def _tail(output: str) -> str:
    return output.strip()[-OUTPUT_LIMIT:]


def _discard(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _prepare(job_dir: Path) -> _Dirs:
    """Make the job directory's skeleton, remove what a crashed attempt left, and make this attempt's empty
    staging directory and the directory its files are fetched into."""
    job_dir = Path(os.path.abspath(job_dir))
    versions = job_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    staging_root = job_dir / STAGING
    _discard(staging_root)
    with contextlib.suppress(FileNotFoundError):
        (job_dir / _CURRENT_TMP).unlink()
    staging_root.mkdir()
    version = next_version_name(os.listdir(versions), time.time())
    staging = staging_root / version
    parts = staging_root / f"{version}.parts"
    staging.mkdir()
    parts.mkdir()
    return _Dirs(job_dir, version, staging, parts, scratch=(staging, parts))


def _prepare_in_place(job_dir: Path) -> _Dirs:
    """The in-place layout: the provider fills the job directory itself; only the directory http files are
    fetched into is scratch."""
    job_dir = Path(os.path.abspath(job_dir))
    staging_root = job_dir / STAGING
    _discard(staging_root)
    parts = staging_root / "parts"
    parts.mkdir(parents=True)
    return _Dirs(job_dir, "", job_dir, parts, scratch=(staging_root,))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(job_dir: Path, staging: Path, version: str) -> Path:
    """Move the staging directory into versions/ and point ``current`` at it, each step atomic."""
    target = job_dir / VERSIONS / version
    os.rename(staging, target)
    _fsync_dir(target.parent)
    temporary = job_dir / _CURRENT_TMP
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    # Relative, so the job directory can be moved or mounted elsewhere.
    os.symlink(Path(VERSIONS) / version, temporary)
    os.replace(temporary, job_dir / CURRENT)
    _fsync_dir(job_dir)
    return target


def _apply_retention(spec: JobSpec, job_dir: Path, newest: str) -> tuple[str, ...]:
    """Remove the versions the job's retention expires; the names removed."""
    keep, max_age = spec.retention.keep_versions, spec.retention.max_age
    if keep is None and max_age is None:
        return ()
    versions = job_dir / VERSIONS
    known = [(name, created) for name in os.listdir(versions) if (created := version_created(name)) is not None]
    plan = plan_retention(known, keep_versions=keep, max_age=max_age, now=time.time())
    removed = []
    for name in plan:
        if name == newest:  # the plan never names the newest; this guards ``current`` against a clock jump
            continue
        # Renamed out of versions/ first, so a removal cut short leaves no half-removed version in view.
        doomed = job_dir / STAGING / f"removing-{name}"
        os.rename(versions / name, doomed)
        _discard(doomed)
        removed.append(name)
    return tuple(removed)


def _tree_size(root: Path) -> int:
    """Bytes of the files a seeder publishes from ``root``: hidden files and directories do not count."""
    total = 0
    for directory, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
