"""Hashing a file for both protocols, and the seeder's hash index."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3
import pytest

from shoal.core.errors import LocalIOError
from shoal.storage.file_hashes import READ_SIZE, FileStat, hash_file
from shoal.storage.hash_index import HashIndex


@pytest.mark.parametrize(
    ("size", "piece_length"),
    [
        (0, 262144),
        (1, 262144),
        (262144, 262144),
        (3 * 262144 + 5, 262144),
        (READ_SIZE + 7, 1 << 20),
        (9 << 20, 8 << 20),
    ],
)
def test_hashes_match_references(tmp_path: Path, size: int, piece_length: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    hashes = hash_file(path, piece_length)
    pieces = [data[i : i + piece_length] for i in range(0, size, piece_length)]
    assert hashes.digest == blake3.blake3(data).hexdigest()
    assert hashes.sha1_pieces == b"".join(hashlib.sha1(p).digest() for p in pieces)
    assert hashes.blake3_pieces == b"".join(blake3.blake3(p).digest() for p in pieces)
    assert hashes.piece_hashes() == {i: blake3.blake3(p).hexdigest() for i, p in enumerate(pieces)}


def test_index_hits_only_the_same_bytes_on_disk_whatever_their_name(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1000))
    stat = FileStat.of(path.stat())
    assert stat.device == path.stat().st_dev
    hashes = hash_file(path, 262144)
    with HashIndex(tmp_path / "state" / "hashes.db") as index:
        assert index.get(stat, 262144) is None
        index.put(stat, hashes)
        assert index.get(stat, 262144) == hashes
        os.link(path, tmp_path / "link")
        assert index.get(FileStat.of((tmp_path / "link").stat()), 262144) == hashes
        for changed in (
            FileStat(stat.size + 1, stat.mtime_ns, stat.inode, stat.device),
            FileStat(stat.size, stat.mtime_ns + 1, stat.inode, stat.device),
            FileStat(stat.size, stat.mtime_ns, stat.inode + 1, stat.device),
            FileStat(stat.size, stat.mtime_ns, stat.inode, stat.device + 1),
        ):
            assert index.get(changed, 262144) is None
        assert index.get(stat, 524288) is None
    with HashIndex(tmp_path / "state" / "hashes.db") as index:  # it survives a restart
        assert index.get(stat, 262144) == hashes
        index.forget(stat)
        assert index.get(stat, 262144) is None


def test_a_rewritten_inode_replaces_its_entry(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 1000)
    old = FileStat.of(path.stat())
    with HashIndex(tmp_path / "hashes.db") as index:
        index.put(old, hash_file(path, 262144))
        with path.open("r+b") as f:  # the same inode, new bytes
            f.write(b"b" * 1000)
        os.utime(path, ns=(old.mtime_ns + 10**9, old.mtime_ns + 10**9))
        new = FileStat.of(path.stat())
        assert new.inode == old.inode
        index.put(new, hash_file(path, 262144))
        assert index.get(old, 262144) is None
        assert index.get(new, 262144) == hash_file(path, 262144)


def test_an_unusable_index_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(LocalIOError, match="hash index"), HashIndex(tmp_path / "file" / "hashes.db"):
        pass
