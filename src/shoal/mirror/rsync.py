"""The ``rsync`` and ``two-stage-rsync`` providers: tunasync's command lines (``shoal.core.rsync_args``) run
into the attempt's directory.

Rules, and why:

- rsync runs as its own argument list, not through a shell, in its own process group (``shell.run_process``):
  an option from the config file is never re-parsed, and a stopped job takes rsync's children with it.
- Exit status 24 ("some files vanished before they could be transferred") is a success with a warning:
  an upstream that changes during a sync loses files between its listing and their transfer, the files
  that are there are whole, and the next run brings the rest. A status the job lists in
  ``success_exit_codes`` (tunasync's ``rsync_success_exit_codes``, 23 "partial transfer" the usual one) is
  a success with a warning too: the operator has said that upstream's errors are not theirs to fix. Every
  other non-zero status fails the attempt (and two-stage-rsync's stage 2 does not run after a stage 1
  that failed).
- The password goes to rsync in ``RSYNC_PASSWORD`` only; ``password_file`` is read at each run (its first
  line), so a rotated secret needs no reload. The password never reaches the log or an error message.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path

from shoal.core.errors import ProviderError, ProviderTimedOut
from shoal.core.mirror_config import JobSpec
from shoal.core.rsync_args import rsync_commands, rsync_environment
from shoal.mirror.run_log import RunLog
from shoal.mirror.shell import KILL_GRACE, OUTPUT_LIMIT, ShellResult, run_process

log = logging.getLogger(__name__)

VANISHED = 24
"""rsync's exit status for "some files vanished before they could be transferred"."""


def job_password(spec: JobSpec) -> str | None:
    """The job's rsync password: ``password``, or the first line of ``password_file`` (ProviderError when
    it cannot be read)."""
    if spec.password_file is None:
        return spec.password
    try:
        with open(spec.password_file, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProviderError(f"cannot read password_file {spec.password_file}: {reason}") from None


async def run_rsync(
    spec: JobSpec,
    dest: Path,
    env: Mapping[str, str],
    limit: float,
    *,
    previous: Path | None = None,
    run_log: RunLog | None = None,
    grace: float = KILL_GRACE,
) -> int:
    """Sync ``spec.upstream`` into ``dest``, hard-linking unchanged files from ``previous`` (a published
    version) when given; rsync's exit status (0, or 24 or one of ``success_exit_codes`` with a warning,
    the last such stage's). ProviderError with the status and
    the tail of rsync's output on failure; ProviderTimedOut past ``limit`` seconds, all stages together."""
    password = await asyncio.to_thread(job_password, spec)
    env = {**env, **rsync_environment(spec, password)}
    commands = rsync_commands(spec, str(dest), link_dest=None if previous is None else str(previous))
    deadline = asyncio.get_running_loop().time() + limit
    status = 0
    for stage, argv in enumerate(commands, 1):
        what = f"rsync (stage {stage} of {len(commands)})" if len(commands) > 1 else "rsync"
        if run_log is not None:
            run_log.note(f"{what}: {shlex.join(argv)}")
        result = await _run(argv, dest, env, deadline - asyncio.get_running_loop().time(), grace, run_log)
        if result.timed_out:
            raise ProviderTimedOut(f"{what} timed out", output=_tail(result.output))
        warning = None
        if result.returncode == VANISHED:
            warning = f"{what}: some files vanished before they could be transferred (exit status 24): a success"
        elif result.returncode and result.returncode in (spec.success_exit_codes or ()):
            warning = f"{what}: {result.status_text}, one of the job's success_exit_codes: a success"
        if warning is not None:
            log.warning("%s: %s", spec.name, warning)
            if run_log is not None:
                run_log.note(warning)
            status = result.returncode or status
        elif result.returncode != 0:
            raise ProviderError(
                f"{what} failed with {result.status_text}: {_tail(result.output)}".rstrip(": "),
                returncode=result.returncode,
            )
    return status


async def _run(
    argv: tuple[str, ...], dest: Path, env: Mapping[str, str], limit: float, grace: float, run_log: RunLog | None
) -> ShellResult:
    if limit <= 0:
        return ShellResult(None, "", timed_out=True)
    if run_log is None:
        return await run_process(argv, cwd=dest, env=env, limit=limit, grace=grace)
    with run_log.child() as output:
        return await run_process(argv, cwd=dest, env=env, limit=limit, grace=grace, output=output)


def _tail(output: str) -> str:
    return output.strip()[-OUTPUT_LIMIT:]
