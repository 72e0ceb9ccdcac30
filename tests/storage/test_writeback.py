"""Starting writeback: a written piece goes to disk on its own, without waiting for an fsync.

Observed with the kernel's ``cachestat`` (Linux 6.5+), which counts the dirty pages of a file range: pages
written and left alone stay dirty for dirty_expire_centisecs (30 s by default); pages whose writeback was
started are clean within moments.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from shoal.core.manifest import Manifest, OriginIdentity
from shoal.storage import writeback
from shoal.storage.partfile import PartFile
from shoal.testing.poll import wait_until

PIECE = 1 << 20
_SYS_CACHESTAT = 451  # x86_64 and arm64 alike (the syscall table is shared from 6.5 on)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


_libc = ctypes.CDLL(None, use_errno=True)


def dirty_pages(fd: int, offset: int, length: int) -> int:
    stat = _Stat()
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(_Range(offset, length)), ctypes.byref(stat), 0) != 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            pytest.skip("this kernel has no cachestat (Linux 6.5+)")
        raise OSError(code, os.strerror(code))
    return int(stat.dirty)


@pytest.fixture
def disk_dir(tmp_path: Path) -> Path:
    with open("/proc/self/mounts") as mounts:
        tmpfs = [line.split()[1] for line in mounts if line.split()[2] == "tmpfs"]
    if any(str(tmp_path).startswith(mount.rstrip("/") + "/") for mount in tmpfs):
        pytest.skip("tmp_path is on tmpfs, which has no writeback")
    return tmp_path


def test_a_written_piece_is_flushed_without_an_fsync(disk_dir: Path) -> None:
    manifest = Manifest(OriginIdentity(2 * PIECE, etag='"v1"'), PIECE)
    part = PartFile(disk_dir / "f.bin", "t" * 40, manifest)
    part.open()
    try:
        # Control: a plain write of piece 1 leaves its pages dirty, so the measurement can see dirty pages.
        os.pwrite(part.fd, os.urandom(PIECE), PIECE)
        assert dirty_pages(part.fd, PIECE, PIECE) > 0
        part.write(0, [os.urandom(PIECE)])
        # Generous for a busy machine, and still well inside the kernel's 30 s (the test could not fail past it).
        wait_until(lambda: dirty_pages(part.fd, 0, PIECE) == 0, "piece 0's pages written back", timeout=15.0)
        assert dirty_pages(part.fd, PIECE, PIECE) > 0  # nothing flushed the whole file meanwhile
    finally:
        part.close()


def test_start_is_a_hint_that_says_whether_it_was_taken(disk_dir: Path) -> None:
    fd = os.open(disk_dir / "g.bin", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"x" * 8192, 0)
        assert writeback.start(fd, 0, 8192) is True
        assert writeback.start(fd, 0, 0) is False  # nothing to write
    finally:
        os.close(fd)
    assert writeback.start(fd, 0, 8192) is False  # a closed descriptor: refused, not raised
