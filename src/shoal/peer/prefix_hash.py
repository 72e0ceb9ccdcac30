"""Whole-file hashes that keep pace with a download: the file's complete prefix is hashed as it grows.

A download writes verified pieces in whatever order they arrive, but a whole-file hash (the daemon's BLAKE3
content id, the SHA-256 that ``--digest`` checks) needs the bytes in file order. :class:`PrefixHash`
follows the run of pieces on disk from the start of the file: each time that run grows, a worker thread
reads the new bytes back (from the page cache: they were just written) and feeds them to the hashes. The
tracker leases the lowest free pieces first (:mod:`shoal.core.leases`), so the run trails the download by a
few pieces and, once the last piece is in, only those are left to hash. Hashing the whole file after its
last piece had made every member of a pool of eight (two cores) report its copy 0.3-0.45 s later.

The bytes hashed are those of the part file that is renamed into place, read back after each piece was
verified and written, exactly what hashing the finished file would read.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from typing import Protocol

import blake3

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest
from shoal.storage.partfile import PartFile

ALGORITHMS = ("blake3", "sha256")


class WholeHash(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def hexdigest(self) -> str: ...


def _new(name: str) -> WholeHash:
    if name == "blake3":
        return blake3.blake3()
    if name == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown whole-file hash {name!r} (known: {', '.join(ALGORITHMS)})")


class PrefixHash:
    """Whole-file hashes of a part file, fed front to back while ``on_disk`` (the pieces written) grows.

    The owner of the download calls :meth:`grew` after writing a piece, and :meth:`digests` once every
    piece is on disk; :meth:`cancel` when the download ends otherwise."""

    def __init__(self, part: PartFile, manifest: Manifest, on_disk: Bitfield, names: Iterable[str]) -> None:
        self._part = part
        self._count = manifest.piece_count
        self._on_disk = on_disk
        self._hashers = {name: _new(name) for name in names}
        self._next = 0  # every piece before this one is hashed
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._follow())

    @property
    def hashed_pieces(self) -> int:
        """How many pieces, from the first, are hashed so far."""
        return self._next

    def grew(self) -> None:
        """A piece was written: the follower looks whether the prefix grew (cheap when it did not)."""
        self._wake.set()

    async def digests(self) -> dict[str, str]:
        """The hex digest of each hash, once every piece is on disk (a read error is raised here)."""
        if not self._on_disk.complete:
            raise RuntimeError("digests() before every piece is on disk")
        self._wake.set()
        await self._task
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}

    def cancel(self) -> None:
        self._task.cancel()

    async def _follow(self) -> None:
        hashers = list(self._hashers.values())
        while self._next < self._count:
            end = self._on_disk.run_end(self._next)
            if end == self._next:
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.to_thread(self._part.feed, self._next, end, hashers)
            self._next = end
