"""Whole-file hashes that keep pace with a download: the file's complete prefix is hashed as it grows.

A download writes verified pieces in whatever order they arrive, but a whole-file hash (the daemon's BLAKE3
content id, the digest ``--digest`` or the origin names) needs the bytes in file order. :class:`PrefixHash`
follows the run of pieces on disk from the start of the file: each time that run grows, a worker thread
reads the new bytes back (from the page cache: they were just written) and feeds them to the hashes.

How closely it follows depends on the order pieces arrive in. Peers that start together fill the file
front to back, since the tracker leases the lowest free pieces first (:mod:`shoal.core.leases`): the run
then trails the download by a few pieces, and only those are left once the last piece is in (hashing the
whole file only after its last piece would add a whole-file pass to every copy's finish:
benchmarks/pool_lab.py; figures in benchmarks/RESULTS.md). A peer that joins a swarm which already holds
the file picks its pieces from peers at random, so most of its hashing still comes at the end, as it did
before.

The bytes hashed are those of the part file that is renamed into place, read back after each piece was
verified and written. A piece the download drops and fetches again (its bytes on disk turned out not to
match the tracker's hash) is reported with :meth:`PrefixHash.invalidate`: if it was read already, or is
being read, the hashes start over from the first piece.

The same reads feed a ``sink`` (:class:`FdSink`, ``shoal get -o -``): the file streamed to a descriptor in
order as its prefix completes, every byte verified before it leaves. What left cannot be taken back, so a
piece dropped after it was streamed breaks the stream (:meth:`PrefixHash.digests` raises IntegrityError).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Iterable
from typing import Protocol

import blake3

from shoal.core.bitfield import Bitfield
from shoal.core.errors import IntegrityError, LocalIOError
from shoal.core.manifest import Manifest
from shoal.core.whole_file import DIGEST_ALGORITHMS
from shoal.storage.partfile import Hasher, PartFile

ALGORITHMS = tuple(DIGEST_ALGORITHMS)
"""BLAKE3 names a cached file; every one is what a ``--digest`` may name, and an origin's published digest
uses three of them (core.digests)."""
FEED_BYTES = 32 << 20
"""At most this much is read per worker-thread call, so a cancelled hash (Ctrl-C on a large resumed
download) waits for one such read, not for the whole resumed prefix."""


class WholeHash(Hasher, Protocol):
    def hexdigest(self) -> str: ...


def _new(name: str) -> WholeHash:
    if name == "blake3":
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    if name in ALGORITHMS:
        return hashlib.new(name)
    raise ValueError(f"unknown whole-file hash {name!r} (known: {', '.join(ALGORITHMS)})")


class FdSink:
    """The file, written to a descriptor (stdout) in order: a consumer of the prefix's reads, in its thread.
    A write that fails (the reader went away: EPIPE) is a LocalIOError, not the part file's read error."""

    def __init__(self, fd: int, name: str = "stdout") -> None:
        self.fd = fd
        self.name = name
        self.written = 0

    def update(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data)
        try:
            while view:
                sent = os.write(self.fd, view)
                view = view[sent:]
                self.written += sent
        except OSError as exc:
            raise LocalIOError(f"cannot write the file to {self.name}: {exc.strerror or exc}") from None


class PrefixHash:
    """Whole-file hashes of a part file, fed front to back while ``on_disk`` (the pieces written) grows.

    The owner of the download calls :meth:`start`, then :meth:`grew` after writing a piece and
    :meth:`invalidate` after dropping one, and :meth:`digests` once every piece is on disk; :meth:`aclose`
    when the download ends otherwise (before its part file is closed)."""

    def __init__(
        self, part: PartFile, manifest: Manifest, on_disk: Bitfield, names: Iterable[str], sink: FdSink | None = None
    ) -> None:
        self._part = part
        self._sink = sink
        self._broken: str | None = None  # why the sink's stream cannot be completed
        self._manifest = manifest
        self._on_disk = on_disk
        self._names = sorted(set(names))
        self._hashers = {name: _new(name) for name in self._names}
        self._next = 0  # every piece before this one is hashed
        self._reading_to = 0  # the end of the read in progress (== _next when none is)
        self._epoch = 0  # bumped when the hashes start over; a read begun in an older epoch is dropped
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def hashed_pieces(self) -> int:
        """How many pieces, from the first, are hashed so far."""
        return self._next

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._follow())

    def grew(self) -> None:
        """A piece was written: the follower looks whether the prefix grew (cheap when it did not)."""
        self._wake.set()

    def invalidate(self, index: int) -> None:
        """Piece ``index`` left the disk's verified set (it will be written again): if its old bytes were
        hashed, or are being read, start over."""
        if index < max(self._next, self._reading_to):
            if self._sink is not None and self._broken is None:
                self._broken = f"piece {index} changed after it was written to {self._sink.name}"
            self._epoch += 1
            self._hashers = {name: _new(name) for name in self._names}
            self._next = self._reading_to = 0
            self._wake.set()

    async def digests(self) -> dict[str, str]:
        """The hex digest of each hash, once every piece is on disk (a read error is raised here)."""
        if self._task is None:
            raise RuntimeError("digests() before start()")
        if not self._on_disk.complete:
            raise RuntimeError("digests() before every piece is on disk")
        self._wake.set()
        await self._task
        if self._broken is not None:
            raise IntegrityError(f"the stream cannot be completed: {self._broken}")
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}

    async def aclose(self) -> None:
        """Stop following and wait for the read in progress, so the part file can be closed after it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _follow(self) -> None:
        count, piece_length = self._manifest.piece_count, self._manifest.piece_length
        pieces_per_read = max(1, FEED_BYTES // piece_length)
        while self._next < count:
            end = min(self._on_disk.run_end(self._next), self._next + pieces_per_read)
            if end == self._next:
                self._wake.clear()
                await self._wake.wait()
                continue
            epoch, hashers = self._epoch, list[Hasher](self._hashers.values())
            if self._sink is not None and self._broken is None:
                hashers.append(self._sink)
            self._reading_to = end
            read = asyncio.ensure_future(asyncio.to_thread(self._part.feed, self._next, end, hashers))
            try:
                await asyncio.shield(read)
            except asyncio.CancelledError:
                # Let the read end (at most FEED_BYTES) before the owner may close the part file.
                with contextlib.suppress(Exception):
                    await read
                raise
            if epoch == self._epoch:
                self._next = end
            self._reading_to = self._next
