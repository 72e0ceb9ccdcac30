"""``--callback CMD``: the command run with the file's path appended once the file is in place.

Light on purpose (no aiohttp): ``shoal get`` runs it after a daemon's hand-off too. It is checked before
the download starts, so a command that can never run costs no download: an empty one would run the
downloaded file itself.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
from pathlib import Path

from shoal.core.errors import CallbackFailed, UsageError

AFTER_SEEDING = "--after-seeding"
"""The option of the command run once the serving period is over, named in its errors."""


def callback_argv(command: str, flag: str = "--callback") -> list[str]:
    """The command's words, split like a shell would (no shell runs); UsageError naming ``flag`` (the option
    that gave it: ``--callback`` or ``--after-seeding``) when it is empty or its quotes do not close."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"{flag} {command!r}: {exc}") from None
    if not argv:
        raise UsageError(f"{flag} needs a command")
    return argv


def run_callback(command: str, path: Path, flag: str = "--callback") -> None:
    """Run ``command`` with ``path`` appended and wait for it. CallbackFailed when it cannot be started or
    does not exit 0; the file stays in place either way. ``flag`` names the option in the error."""
    what = "the callback" if flag == "--callback" else f"the {flag} command"
    where = f"{path} is in place, but {what} {command!r}"
    try:
        status = subprocess.call([*callback_argv(command, flag), str(path)])
    except OSError as exc:
        raise CallbackFailed(
            f"{where} could not be started: {exc.strerror or exc}", command=command, path=str(path)
        ) from None
    if status < 0:
        raise CallbackFailed(
            f"{where} was killed by {signal.Signals(-status).name}", command=command, path=str(path), status=status
        )
    if status:
        raise CallbackFailed(f"{where} exited with status {status}", command=command, path=str(path), status=status)
