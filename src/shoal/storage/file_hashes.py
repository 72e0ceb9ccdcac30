"""Hashing a whole file once for both protocols: Shoal's BLAKE3 pieces and whole-file digest, and
BitTorrent's SHA-1 pieces, cut at the same boundaries.

SHA-1 is the slow one, several times slower than BLAKE3 on one core, so it runs in a thread of its own
while this thread does the BLAKE3 work; both hashers release the GIL, so a 2-core host hashes at about
SHA-1's speed. The second pass over the file is read from the page cache. (benchmarks/seed_publish.py
measures the hashing rate; figures in benchmarks/RESULTS.md.)

These functions block: call them from a worker thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3

from shoal.core.ids import content_task_id
from shoal.core.manifest import HASH_SIZE
from shoal.core.metainfo import SHA1_SIZE

READ_SIZE = 4 << 20
"""Bytes per read: whole pieces, at least this many, so small pieces do not mean small reads."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What tells one version of a file on disk from another without reading it. The same bytes reached by
    another name (a hard link) have the same FileStat: device and inode name the bytes, size and mtime tell
    a rewrite of them."""

    size: int
    mtime_ns: int
    inode: int
    device: int = 0

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True, slots=True)
class FileHashes:
    piece_length: int
    digest: str
    """BLAKE3 of the whole file, hex: the content id of a seeded file's task."""
    blake3_pieces: bytes
    """BLAKE3 of each piece, 32 bytes each, concatenated."""
    sha1_pieces: bytes
    """SHA-1 of each piece, 20 bytes each, concatenated (a torrent's ``pieces``)."""

    def content_task_id(self, length: int) -> str:
        """The id of the content task of a file of ``length`` bytes with these pieces."""
        b = self.blake3_pieces
        return content_task_id(
            length, self.piece_length, [b[i : i + HASH_SIZE].hex() for i in range(0, len(b), HASH_SIZE)]
        )

    def piece_hashes(self) -> dict[int, str]:
        """Shoal's piece hashes as the tracker API carries them: index -> hex."""
        b = self.blake3_pieces
        return {i: b[i * HASH_SIZE : (i + 1) * HASH_SIZE].hex() for i in range(len(b) // HASH_SIZE)}


def _read_pieces(fd: int, piece_length: int) -> Iterator[memoryview]:
    """Yield memoryviews of consecutive pieces of the open file ``fd`` from its start, read with pread (so
    two passes may share the descriptor); each is valid until the next one is asked for."""
    buffer = bytearray(max(1, READ_SIZE // piece_length) * piece_length)
    view = memoryview(buffer)
    offset = 0
    while got := os.preadv(fd, [buffer], offset):
        offset += got
        for start in range(0, got, piece_length):
            yield view[start : min(start + piece_length, got)]


def _sha1_pieces(fd: int, piece_length: int) -> bytes:
    return b"".join(hashlib.sha1(piece).digest() for piece in _read_pieces(fd, piece_length))


def hash_file(path: Path, piece_length: int) -> FileHashes:
    """Hash ``path`` in pieces of ``piece_length`` (a short read at EOF ends the last piece)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return hash_open_file(fd, piece_length, str(path))
    finally:
        os.close(fd)


def hash_open_file(fd: int, piece_length: int, name: str) -> FileHashes:
    """Hash the open file ``fd`` (``name`` for errors) in pieces of ``piece_length``: what was opened is what
    is hashed, whatever happens to its path meanwhile."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha1") as pool:
        sha1_future = pool.submit(_sha1_pieces, fd, piece_length)
        whole = blake3.blake3()
        pieces = bytearray()
        for piece in _read_pieces(fd, piece_length):
            whole.update(piece)
            pieces += blake3.blake3(piece).digest()
        sha1 = sha1_future.result()
    if len(sha1) // SHA1_SIZE != len(pieces) // HASH_SIZE:
        # The file grew or shrank between the two passes; the caller's stat check hashes it again.
        raise OSError(f"{name} changed while it was being hashed")
    return FileHashes(piece_length, whole.hexdigest(), bytes(pieces), sha1)
