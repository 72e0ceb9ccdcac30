"""Whole-file hashes that follow a download's complete prefix (peer.prefix_hash) on a real part file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import blake3
import pytest

from shoal.core.bitfield import Bitfield
from shoal.core.errors import LocalIOError
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.prefix_hash import PrefixHash
from shoal.storage.partfile import PartFile

PIECE = 256 * 1024
MANIFEST = Manifest(OriginIdentity(23 * PIECE + 777), PIECE)


@pytest.fixture
def data() -> bytes:
    return os.urandom(MANIFEST.length)


def open_part(tmp_path: Path) -> PartFile:
    part = PartFile(tmp_path / "f.bin", "t" * 40, MANIFEST)
    part.open()
    return part


def piece(data: bytes, index: int) -> bytes:
    start = MANIFEST.piece_offset(index)
    return data[start : start + MANIFEST.piece_size(index)]


async def settle(prefix: PrefixHash, pieces: int) -> None:
    """Wait until the follower has hashed ``pieces`` pieces (it runs in a worker thread)."""
    for _ in range(500):
        if prefix.hashed_pieces >= pieces:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {prefix.hashed_pieces} of {pieces} pieces hashed")


async def test_pieces_written_in_any_order_hash_like_the_whole_file(tmp_path: Path, data: bytes) -> None:
    part = open_part(tmp_path)
    on_disk = Bitfield(MANIFEST.piece_count)
    prefix = PrefixHash(part, MANIFEST, on_disk, ["blake3", "sha256"])
    order = list(range(MANIFEST.piece_count))
    random.Random(7).shuffle(order)
    for index in order:
        part.write(index, [piece(data, index)])
        on_disk.add(index)
        prefix.grew()
        await asyncio.sleep(0)
    digests = await prefix.digests()
    assert digests == {"blake3": blake3.blake3(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
    part.close()


async def test_the_prefix_is_hashed_while_later_pieces_are_missing(tmp_path: Path, data: bytes) -> None:
    part = open_part(tmp_path)
    on_disk = Bitfield(MANIFEST.piece_count)
    prefix = PrefixHash(part, MANIFEST, on_disk, ["blake3"])
    for index in (0, 1, 2, 4, 5):
        part.write(index, [piece(data, index)])
        on_disk.add(index)
        prefix.grew()
    await settle(prefix, 3)
    await asyncio.sleep(0.05)
    assert prefix.hashed_pieces == 3, "hashed past a missing piece"
    for index in range(3, MANIFEST.piece_count):
        if index not in on_disk:
            part.write(index, [piece(data, index)])
            on_disk.add(index)
    prefix.grew()
    assert (await prefix.digests())["blake3"] == blake3.blake3(data).hexdigest()
    part.close()


async def test_pieces_already_on_disk_are_hashed_from_the_start(tmp_path: Path, data: bytes) -> None:
    """A resumed download: every piece was verified by an earlier run before the hash was created."""
    part = open_part(tmp_path)
    for index in range(MANIFEST.piece_count):
        part.write(index, [piece(data, index)])
    prefix = PrefixHash(part, MANIFEST, Bitfield.full(MANIFEST.piece_count), ["sha256"])
    assert await prefix.digests() == {"sha256": hashlib.sha256(data).hexdigest()}
    part.close()


async def test_digests_before_the_last_piece_is_a_bug(tmp_path: Path) -> None:
    part = open_part(tmp_path)
    prefix = PrefixHash(part, MANIFEST, Bitfield(MANIFEST.piece_count), ["blake3"])
    with pytest.raises(RuntimeError):
        await prefix.digests()
    prefix.cancel()
    part.close()


async def test_a_part_file_cut_short_is_a_local_io_error(tmp_path: Path, data: bytes) -> None:
    part = open_part(tmp_path)
    for index in range(MANIFEST.piece_count):
        part.write(index, [piece(data, index)])
    os.truncate(part.fd, MANIFEST.length - 100)  # something else truncated the file under the download
    prefix = PrefixHash(part, MANIFEST, Bitfield.full(MANIFEST.piece_count), ["blake3"])
    with pytest.raises(LocalIOError):
        await prefix.digests()
    part.close()


async def test_an_unknown_hash_is_refused(tmp_path: Path) -> None:
    part = open_part(tmp_path)
    with pytest.raises(ValueError, match="md5"):
        PrefixHash(part, MANIFEST, Bitfield(MANIFEST.piece_count), ["md5"])
    part.close()
