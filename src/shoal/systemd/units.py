"""The systemd units shipped in the package (``units/*.service``), and writing them where systemd reads them.

The shipped files start ``/usr/local/bin/shoal``, where a system-wide ``pip install`` puts the command; the
copies ``shoal install-units`` writes start the shoal they were written by (a virtual environment's, say),
so that the units run the installation the operator just used. Each file is written whole to a temporary
name beside its destination and renamed into place: systemd never reads half a unit.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

from shoal.core.errors import LocalIOError, UsageError

SHIPPED_COMMAND = "/usr/local/bin/shoal"
DEFAULT_DIR = Path("/etc/systemd/system")


def unit_names() -> list[str]:
    """The units shipped, by file name: ``shoal-tracker.service``..."""
    folder = resources.files("shoal.systemd") / "units"
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".service"))


def shipped_text(name: str) -> str:
    return (resources.files("shoal.systemd") / "units" / name).read_text(encoding="utf-8")


def this_command() -> str:
    """How a unit starts this installation's shoal: its ``shoal`` script where the installer put one, else
    this interpreter with ``-m shoal`` (a source checkout)."""
    script = Path(sysconfig.get_path("scripts")) / "shoal"
    if os.access(script, os.X_OK):
        return _quoted(str(script))
    return f"{_quoted(sys.executable)} -m shoal"


def _quoted(path: str) -> str:
    """A path as a unit's command line takes it (systemd splits on white space, and honours quotes)."""
    return f'"{path}"' if any(c.isspace() for c in path) else path


def render(text: str, command: str) -> str:
    """A shipped unit's text with its command lines starting ``command`` instead of the shipped path."""
    return text.replace(f"={SHIPPED_COMMAND} ", f"={command} ")


def install(directory: Path, command: str) -> list[Path]:
    """Write every unit into ``directory`` (which must exist), starting ``command``; the paths written."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory (systemd reads units from /etc/systemd/system)")
    written = []
    for name in unit_names():
        destination = directory / name
        _write_whole(destination, render(shipped_text(name), command))
        written.append(destination)
    return written


def _write_whole(destination: Path, text: str) -> None:
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    except OSError as exc:
        raise LocalIOError(f"cannot write into {destination.parent}: {exc.strerror}", path=str(destination)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise LocalIOError(f"cannot write {destination}: {exc.strerror}", path=str(destination)) from None
