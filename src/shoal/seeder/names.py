"""Names of seeded files, from both directions: the REL a client asks for, and the REL of a path on disk.

A client's REL is refused, before any lookup, when it is empty, holds a NUL byte, is absolute, or has an
empty, ``.`` or ``..`` component; such a name can only be an attempt to leave the watched directories.
A path on disk has no REL (it is not published) when its real path, symlinks resolved, lies outside its
watched directory, or when it is hidden or a partial download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shoal.core.errors import ProtocolError

PARTIAL_SUFFIXES = (".part", ".shoal-part", ".shoal-state", ".aria2")
"""Downloads in progress: ours (.NAME.shoal-part, hidden anyway), curl/wget/browsers' and aria2's."""
TOOL_SUFFIXES = (".mdcache",)
"""Other tools' working files: distributor's cached metadata, left in the directories it served."""


@dataclass(frozen=True, slots=True)
class Root:
    """A watched directory: its name in URLs and its real path."""

    name: str
    path: Path

    @classmethod
    def of(cls, directory: Path) -> Root:
        real = directory.resolve(strict=True)
        return cls(real.name or "root", real)


def parse_rel(raw: str) -> str:
    """Validate a REL from a request; return it unchanged or raise ProtocolError."""
    if not raw:
        raise ProtocolError("no file named", field="path")
    if "\0" in raw:
        raise ProtocolError("a file name must not contain NUL", field="path")
    if raw.startswith("/"):
        raise ProtocolError("a file name must be relative", field="path")
    if any(part in ("", ".", "..") for part in raw.split("/")):
        raise ProtocolError("a file name must not contain empty, '.' or '..' components", field="path")
    return raw


def ignored(name: str) -> bool:
    """Hidden files and directories, partial downloads and other tools' working files are never published."""
    return name.startswith(".") or name.endswith(PARTIAL_SUFFIXES) or name.endswith(TOOL_SUFFIXES)


def rel_of(root: Root, path: Path) -> str | None:
    """The REL of ``path`` under ``root`` (by its name in the tree, not its target), or None if it is not
    publishable: outside the root, hidden or partial at any level."""
    try:
        inside = Path(os.path.abspath(path)).relative_to(root.path)
    except ValueError:
        return None
    if not inside.parts or any(ignored(part) for part in inside.parts):
        return None
    return "/".join((root.name, *inside.parts))


def contained(root: Root, path: Path) -> bool:
    """Whether ``path``'s real location, symlinks resolved, is inside ``root``."""
    return Path(os.path.realpath(path)).is_relative_to(root.path)
