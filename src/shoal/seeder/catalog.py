"""The catalog: which files are published, under which names, and which are seen but still hashing.

A file's name in URLs (its REL) is the watched directory's name, a slash, and its path inside that
directory: ``releases/v2/app.tar.gz``. Only files in the catalog are ever served, and a file enters it only
after the seeder checked that its real path lies inside its watched directory; that, with the checks on
incoming names in ``names``, is what keeps everything outside the watched directories unreachable.

One owner: the seeder's event loop. Readers (the HTTP handlers, the wire seeder) only look things up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.metainfo import TorrentInfo
from shoal.seeder.wire import WireTorrent
from shoal.storage.file_hashes import FileHashes, FileStat


@dataclass(frozen=True, slots=True)
class SeededFile:
    rel: str
    root: str
    """The watched directory's name: the first component of ``rel``."""
    path: Path
    stat: FileStat
    hashes: FileHashes
    info: TorrentInfo
    info_hash: bytes
    published_at: float
    """Wall-clock time of publication."""
    task_id: str
    """A seeded file's task is its content (DESIGN.md): the BLAKE3 of its manifest, which commits to every
    piece hash (``FileHashes.content_task_id``). Computed once at publication: every file request names it."""

    @property
    def etag(self) -> str:
        return f'"{self.hashes.digest}"'

    @property
    def identity(self) -> OriginIdentity:
        # A strong ETag alone names the version (RFC 9110 8.8.3), so Last-Modified is left out: touching a
        # file without changing it keeps its task.
        return OriginIdentity(self.stat.size, self.etag, "")

    @property
    def manifest(self) -> Manifest:
        return Manifest.for_identity(self.identity)


class Catalog:
    def __init__(self) -> None:
        self.files: dict[str, SeededFile] = {}
        self._by_info_hash: dict[bytes, SeededFile] = {}
        self._pending: dict[str, asyncio.Event] = {}

    # -- the owner's side ----------------------------------------------------------------------------

    def seen(self, rel: str) -> None:
        """A file exists and will be published once hashed; /serve of it waits."""
        self._pending.setdefault(rel, asyncio.Event())

    def publish(self, entry: SeededFile) -> SeededFile | None:
        """Publish (or replace) an entry; return the one it replaced."""
        old = self.files.get(entry.rel)
        if old is not None:
            self._by_info_hash.pop(old.info_hash, None)
        self.files[entry.rel] = entry
        self._by_info_hash[entry.info_hash] = entry
        waiting = self._pending.pop(entry.rel, None)
        if waiting is not None:
            waiting.set()
        return old

    def unpublish(self, rel: str) -> SeededFile | None:
        waiting = self._pending.pop(rel, None)
        if waiting is not None:
            waiting.set()  # wakes /serve, which then finds nothing and answers 404
        entry = self.files.pop(rel, None)
        if entry is not None and self._by_info_hash.get(entry.info_hash) is entry:
            del self._by_info_hash[entry.info_hash]
        return entry

    def under(self, rel_prefix: str) -> list[str]:
        """Names published or pending at or below a directory name (for a directory moved out)."""
        prefix = rel_prefix.rstrip("/") + "/"
        names = set(self.files) | set(self._pending)
        return sorted(n for n in names if n.startswith(prefix) or n == rel_prefix)

    # -- lookups -------------------------------------------------------------------------------------

    def get(self, rel: str) -> SeededFile | None:
        return self.files.get(rel)

    async def wait_for(self, rel: str) -> SeededFile | None:
        """The entry for ``rel``, once published; None at once if it is neither published nor pending."""
        entry = self.files.get(rel)
        waiting = self._pending.get(rel)
        if entry is not None or waiting is None:
            return entry
        await waiting.wait()
        return self.files.get(rel)

    def named(self, rel: str, roots: Iterable[str]) -> list[str]:
        """The RELs a client's name may mean: itself when it is known (published or pending), else each
        ``ROOT/rel`` of the watched directories' names that is (distributor's ``/serve?file.iso`` names a
        file by its path inside the one directory it served). Sorted; empty when none is known."""
        if rel in self.files or rel in self._pending:
            return [rel]
        return sorted(
            f"{root}/{rel}" for root in set(roots) if f"{root}/{rel}" in self.files or f"{root}/{rel}" in self._pending
        )

    def is_pending(self, rel: str) -> bool:
        return rel in self._pending

    def pending_names(self) -> list[str]:
        """Files seen and not yet published (being written or hashed)."""
        return sorted(set(self._pending) - set(self.files))

    def newest(self, root: str | None = None) -> SeededFile | None:
        candidates = [f for f in self.files.values() if root is None or f.root == root]
        return max(candidates, key=lambda f: (f.stat.mtime_ns, f.published_at), default=None)

    def wire_torrent(self, info_hash: bytes) -> WireTorrent | None:
        entry = self._by_info_hash.get(info_hash)
        if entry is None:
            return None
        return WireTorrent(entry.info_hash, entry.path, entry.stat.size, entry.info.piece_length)
