"""Names of seeded files, from both directions: the REL a client asks for, and the REL of a path on disk.

A client's REL is refused, before any lookup, when it is empty, holds a NUL byte, is absolute, or has an
empty, ``.`` or ``..`` component; such a name can only be an attempt to leave the watched directories.
A path on disk has no REL (it is not published) when its real path, symlinks resolved, lies outside its
watched directory, or when it is hidden or a partial download. Whether a file is inside is judged on the
file opened (:func:`open_inside`), not on its path before or after: a symlink swapped between a check and
the open cannot lead out.

A client's REL may also pass through a symlink to a directory inside the same watched directory
(:func:`through_links`): a mirror job's ``current`` points at its newest version, so
``mirror/debian/current/README`` is a stable name for a file published as
``mirror/debian/versions/20261206T2130Z/README``. The name is resolved to the published file's own REL;
a link that leads out of its watched directory, or to a hidden or partial file, resolves to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
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


def through_links(roots: Iterable[Root], rel: str) -> str | None:
    """The REL of the file that ``rel`` (``ROOT/path``) reaches through symlinks inside its watched directory,
    or None when it is under no watched directory, names something hidden or partial, or leads out."""
    head, _, inside = rel.partition("/")
    if not inside or any(ignored(part) for part in inside.split("/")):
        return None
    for root in roots:
        if root.name == head:
            return rel_of(root, Path(os.path.realpath(root.path / inside)))
    return None


def contained(root: Root, path: Path) -> bool:
    """Whether ``path``'s real location, symlinks resolved, is inside ``root``."""
    return Path(os.path.realpath(path)).is_relative_to(root.path)


def open_inside(root: Root, path: Path, opened: Callable[[], None] | None = None) -> int | None:
    """Open ``path`` for reading (symlinks followed) and return the descriptor if the file opened lies inside
    ``root``: the path's real location, resolved after the open, is inside and is that very file (same
    device and inode). None, with nothing left open, when it leads out. ``opened`` runs between the open
    and the check (tests swap a symlink there). OSError as ``os.open`` raises it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if opened is not None:
            opened()
        st = os.fstat(fd)
        real = Path(os.path.realpath(path))
        there = os.stat(real)
        if real.is_relative_to(root.path) and (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None
