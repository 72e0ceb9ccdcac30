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
from shoal.core.errors import IntegrityError, LocalIOError
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.prefix_hash import FdSink, PrefixHash
from shoal.storage.partfile import PartFile
from shoal.testing.poll import wait_until_async

PIECE = 256 * 1024
MANIFEST = Manifest(OriginIdentity(23 * PIECE + 777), PIECE)


@pytest.fixture
def data() -> bytes:
    return os.urandom(MANIFEST.length)


def open_part(tmp_path: Path) -> PartFile:
    part = PartFile(tmp_path / "f.bin", "t" * 40, MANIFEST)
    part.open()
    return part


def written_part(tmp_path: Path, data: bytes) -> PartFile:
    """A part file that holds every piece (as a rerun finds a download it had finished)."""
    part = open_part(tmp_path)
    for index in range(MANIFEST.piece_count):
        part.write(index, [piece(data, index)])
    return part


def following(part: PartFile, on_disk: Bitfield, names: list[str]) -> PrefixHash:
    prefix = PrefixHash(part, MANIFEST, on_disk, names)
    prefix.start()
    return prefix


def piece(data: bytes, index: int) -> bytes:
    start = MANIFEST.piece_offset(index)
    return data[start : start + MANIFEST.piece_size(index)]


async def settle(prefix: PrefixHash, pieces: int) -> None:
    """Wait until the follower has hashed ``pieces`` pieces (it runs in a worker thread)."""
    await wait_until_async(lambda: prefix.hashed_pieces >= pieces, f"{pieces} pieces hashed")


async def test_pieces_written_in_any_order_hash_like_the_whole_file(tmp_path: Path, data: bytes) -> None:
    part = open_part(tmp_path)
    on_disk = Bitfield(MANIFEST.piece_count)
    prefix = following(part, on_disk, ["blake3", "sha256"])
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
    prefix = following(part, on_disk, ["blake3"])
    for index in (0, 1, 2, 4, 5):
        part.write(index, [piece(data, index)])
        on_disk.add(index)
        prefix.grew()
    await settle(prefix, 3)
    # The follower moved to piece 3 and, finding it missing, waits for the next piece (no read under way).
    assert prefix.hashed_pieces == 3, "hashed past a missing piece"
    assert prefix._reading_to == 3, "reading past a missing piece"
    for index in range(3, MANIFEST.piece_count):
        if index not in on_disk:
            part.write(index, [piece(data, index)])
            on_disk.add(index)
    prefix.grew()
    assert (await prefix.digests())["blake3"] == blake3.blake3(data).hexdigest()
    part.close()


async def test_pieces_already_on_disk_are_hashed_from_the_start(tmp_path: Path, data: bytes) -> None:
    """A resumed download: every piece was verified by an earlier run before the hash was created."""
    part = written_part(tmp_path, data)
    prefix = following(part, Bitfield.full(MANIFEST.piece_count), ["sha256"])
    assert await prefix.digests() == {"sha256": hashlib.sha256(data).hexdigest()}
    part.close()


async def test_the_digest_algorithms_of_origins(tmp_path: Path, data: bytes) -> None:
    """SHA-512 and MD5, which origins publish (Repr-Digest, Content-MD5), beside the others in one pass."""
    part = written_part(tmp_path, data)
    prefix = following(part, Bitfield.full(MANIFEST.piece_count), ["sha512", "md5", "sha256"])
    assert await prefix.digests() == {name: hashlib.new(name, data).hexdigest() for name in ("sha512", "md5", "sha256")}
    part.close()


async def test_digests_before_the_last_piece_is_a_bug(tmp_path: Path) -> None:
    part = open_part(tmp_path)
    prefix = PrefixHash(part, MANIFEST, Bitfield(MANIFEST.piece_count), ["blake3"])
    with pytest.raises(RuntimeError, match="start"):
        await prefix.digests()
    prefix.start()
    with pytest.raises(RuntimeError, match="every piece"):
        await prefix.digests()
    await prefix.aclose()
    part.close()


async def test_a_part_file_cut_short_is_a_local_io_error(tmp_path: Path, data: bytes) -> None:
    part = written_part(tmp_path, data)
    os.truncate(part.fd, MANIFEST.length - 100)  # something else truncated the file under the download
    prefix = following(part, Bitfield.full(MANIFEST.piece_count), ["blake3"])
    with pytest.raises(LocalIOError):
        await prefix.digests()
    part.close()


async def test_an_unknown_hash_is_refused(tmp_path: Path) -> None:
    part = open_part(tmp_path)
    with pytest.raises(ValueError, match="crc32"):
        PrefixHash(part, MANIFEST, Bitfield(MANIFEST.piece_count), ["crc32"])
    part.close()


async def test_a_piece_written_again_after_it_was_hashed_restarts_the_hashes(tmp_path: Path, data: bytes) -> None:
    """The engine dropped a piece whose bytes on disk did not match the tracker's hash and fetched it
    again: the hashes must be of the bytes finally in the file, not of the dropped ones."""
    part = open_part(tmp_path)
    on_disk = Bitfield(MANIFEST.piece_count)
    prefix = following(part, on_disk, ["blake3"])
    stale = bytearray(data)
    stale[5 : 5 + 10] = b"\0" * 10  # piece 0 as an earlier run left it
    for index in range(8):
        part.write(index, [piece(bytes(stale), index)])
        on_disk.add(index)
        prefix.grew()
    await settle(prefix, 8)
    on_disk.discard(0)
    prefix.invalidate(0)
    part.write(0, [piece(data, 0)])
    for index in range(8, MANIFEST.piece_count):
        part.write(index, [piece(data, index)])
        on_disk.add(index)
    on_disk.add(0)
    prefix.grew()
    assert (await prefix.digests())["blake3"] == blake3.blake3(data).hexdigest()
    part.close()


async def test_a_piece_past_the_hashed_prefix_is_dropped_without_a_restart(tmp_path: Path, data: bytes) -> None:
    part = open_part(tmp_path)
    on_disk = Bitfield(MANIFEST.piece_count)
    prefix = following(part, on_disk, ["blake3"])
    for index in (0, 1, 5):
        part.write(index, [piece(data, index)])
        on_disk.add(index)
        prefix.grew()
    await settle(prefix, 2)
    on_disk.discard(5)
    prefix.invalidate(5)
    assert prefix.hashed_pieces == 2
    await prefix.aclose()
    part.close()


async def test_an_empty_file_hashes_to_the_empty_digest(tmp_path: Path) -> None:
    manifest = Manifest(OriginIdentity(0), PIECE)
    part = PartFile(tmp_path / "empty", "t" * 40, manifest)
    part.open()
    prefix = PrefixHash(part, manifest, Bitfield(0), ["blake3", "sha256"])
    prefix.start()
    assert await prefix.digests() == {"blake3": blake3.blake3(b"").hexdigest(), "sha256": hashlib.sha256().hexdigest()}
    part.close()


async def test_closing_waits_for_the_read_in_progress_and_leaves_no_error_behind(tmp_path: Path, data: bytes) -> None:
    part = written_part(tmp_path, data)
    prefix = following(part, Bitfield.full(MANIFEST.piece_count), ["sha256"])
    await asyncio.sleep(0)  # the first read is under way in its thread
    await prefix.aclose()
    part.close()  # no read is left to use the closed descriptor
    assert prefix.hashed_pieces in range(MANIFEST.piece_count + 1)


async def test_a_sink_gets_the_file_in_order_while_pieces_arrive_in_any(tmp_path: Path, data: bytes) -> None:
    part = open_part(tmp_path)
    on_disk = Bitfield(MANIFEST.piece_count)
    read, write = os.pipe()
    received = bytearray()
    reader = asyncio.get_running_loop().run_in_executor(None, _drain, read, received)
    prefix = PrefixHash(part, MANIFEST, on_disk, [], FdSink(write))
    prefix.start()
    order = list(range(MANIFEST.piece_count))
    random.Random(3).shuffle(order)
    for index in order:
        part.write(index, [piece(data, index)])
        on_disk.add(index)
        prefix.grew()
        await asyncio.sleep(0)
    assert await prefix.digests() == {}
    os.close(write)
    await reader
    assert bytes(received) == data
    part.close()


async def test_a_piece_dropped_after_it_was_streamed_breaks_the_stream(tmp_path: Path, data: bytes) -> None:
    part = written_part(tmp_path, data)
    on_disk = Bitfield.full(MANIFEST.piece_count)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        prefix = PrefixHash(part, MANIFEST, on_disk, ["sha256"], FdSink(devnull, "/dev/null"))
        prefix.start()
        await settle(prefix, MANIFEST.piece_count)
        prefix.invalidate(3)  # its bytes left already: the stream cannot take them back
        with pytest.raises(IntegrityError, match="piece 3 changed after it was written to /dev/null"):
            await prefix.digests()
    finally:
        os.close(devnull)
    part.close()


async def test_a_sink_whose_reader_left_is_a_local_io_error(tmp_path: Path, data: bytes) -> None:
    part = written_part(tmp_path, data)
    read, write = os.pipe()
    os.close(read)
    prefix = PrefixHash(part, MANIFEST, Bitfield.full(MANIFEST.piece_count), [], FdSink(write))
    prefix.start()
    with pytest.raises(LocalIOError, match="cannot write the file to stdout"):
        await prefix.digests()
    os.close(write)
    part.close()


def _drain(fd: int, into: bytearray) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while block := pipe.read(1 << 16):
            into.extend(block)
