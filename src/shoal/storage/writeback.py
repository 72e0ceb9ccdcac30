"""Start writing a file's fresh data to disk without waiting for it (Linux ``sync_file_range``).

A download is flushed before it is renamed into place (see :mod:`shoal.storage.partfile`). Left to the
page cache, a large download is still mostly in memory when it ends, and its final fsync then waits for
all of it with the machine otherwise idle. Flushed by an fsync every second instead, each fsync of the last
second's data stalls the file's writers while the journal commits. Starting the writeback of each piece as
soon as it is written keeps the disk busy beside the download, and the fsyncs find little left to wait
for (benchmarks/single_peer.py; figures in benchmarks/RESULTS.md).

Python's os module has no ``sync_file_range``: it is called from the C library through ctypes, which
releases the GIL for the call. Where it is missing (not Linux), :func:`start` does nothing, and the fsyncs
alone make the data durable, later.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of the range's dirty pages, do not wait for it


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load()


def start(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to disk, and return at once.

    A hint: False when this system cannot, or the kernel refused; an I/O error of the writeback itself is
    reported by the next fsync, as it would be without this call."""
    if _sync_file_range is None or length <= 0:
        return False
    return _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0
