"""A download in progress on disk: the temporary file beside the destination, and its sidecar of verified
pieces.

Nothing appears at the destination until the whole file is verified: pieces are written into
``.NAME.shoal-part`` at their offsets, and only the final rename puts ``NAME`` in place. Where the part file
lives and how it is put in place (a symlink followed, a device or a FIFO written through, its part file in
a private scratch directory) is :mod:`shoal.storage.placement`'s rule. The sidecar
``.NAME.shoal-state`` records which pieces were verified and their hashes; it is replaced atomically. A
rerun trusts the sidecar only after hashing each listed piece again, so a crash between a write and a
sidecar update can never make a bad piece count as good. The part file is locked (``flock``) while it is
open: a second download to the same destination at once is refused rather than truncating and overwriting
the first one's pieces.

The blocking calls here (pwrite, fsync, rename, hashing) run in a worker thread; callers use the
``async`` wrappers in the peer layer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import blake3

from shoal.core.bitfield import Bitfield
from shoal.core.errors import LocalIOError
from shoal.core.manifest import Manifest
from shoal.storage import writeback
from shoal.storage.placement import Destination

STATE_VERSION = 1


Buffers = Sequence[bytes | memoryview]
_IOV_MAX = 512  # well under Linux's IOV_MAX of 1024
FEED_CHUNK = 4 << 20


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...


def piece_hash(data: bytes | memoryview | Buffers) -> str:
    """BLAKE3 hex digest of one piece, given whole or as the buffers it arrived in (releases the GIL)."""
    if isinstance(data, (bytes, memoryview)):
        return blake3.blake3(data).hexdigest()
    hasher = blake3.blake3()
    for buffer in data:
        hasher.update(buffer)
    return hasher.hexdigest()


def part_path(dest: Path) -> Path:
    return Destination.of(dest).temporary("shoal-part")


def state_path(dest: Path) -> Path:
    return Destination.of(dest).temporary("shoal-state")


@dataclass(frozen=True, slots=True)
class Resumed:
    have: Bitfield
    hashes: dict[int, str]


class PartFile:
    """The temporary file of one download. Open it from one thread; write, read back, sync and close from
    any: close waits for the writes, reads and syncs in progress in worker threads (a fetch cancelled while
    its thread writes does not stop the thread), so none of them lands in a file that reused the number."""

    def __init__(self, dest: Path, task_id: str, manifest: Manifest) -> None:
        """``dest`` is looked at now (a stat): a LocalIOError for one that can never be written."""
        self.dest = dest
        self.destination = Destination.of(dest)
        self.path = self.destination.temporary("shoal-part")
        self.state = self.destination.temporary("shoal-state")
        self.task_id = task_id
        self.manifest = manifest
        self._fd: int | None = None
        self._users = 0  # worker threads using the fd now
        self._closed = False  # close() was called: an open() still running closes what it opened
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def _using(self) -> Iterator[int]:
        with self._idle:
            if self._fd is None:
                raise RuntimeError("part file is not open")
            self._users += 1
            fd = self._fd
        try:
            yield fd
        finally:
            with self._idle:
                self._users -= 1
                self._idle.notify_all()

    def _fail(self, action: str, exc: OSError, path: Path | None = None) -> LocalIOError:
        where = path or self.path
        return LocalIOError(f"cannot {action} {where}: {exc.strerror or exc}", path=str(where))

    def open(self) -> Resumed:
        """Open or create the part file and return the pieces a previous run verified (re-hashed).

        Run in a worker thread, it can be overtaken by :meth:`close` (its caller was cancelled): the file is
        then closed, by close or here, and open raises RuntimeError."""
        self.destination.prepare()
        previous = self._read_state()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._fail("create", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LocalIOError(
                f"another download is writing {self.dest} (its part file {self.path} is locked)", path=str(self.dest)
            ) from None
        except OSError:
            pass  # a filesystem without locks (some network mounts): go on unlocked, as before
        with self._idle:
            if self._closed:
                os.close(fd)
                raise RuntimeError("part file closed while it was opened")
            self._fd = fd
        try:
            if previous is None:
                os.ftruncate(fd, 0)
            os.ftruncate(fd, self.manifest.length)
        except OSError as exc:
            self.close()
            raise self._fail("create", exc) from exc
        have = Bitfield(self.manifest.piece_count)
        hashes: dict[int, str] = {}
        try:
            for index, digest in (previous or {}).items():
                if piece_hash(self.read(index)) == digest:
                    have.add(index)
                    hashes[index] = digest
        except OSError as exc:
            self.close()
            raise self._fail("read", exc) from exc
        return Resumed(have, hashes)

    def _read_state(self) -> dict[int, str] | None:
        """The pieces the sidecar records, if it describes this version of this file; else None.

        An origin that names no version (neither ETag nor Last-Modified) leaves nothing to tell its file of
        today from the one the sidecar's pieces came from when the length is the same: such a download is
        never resumed, since a rerun could otherwise place a mix of two versions."""
        if not (self.manifest.identity.etag or self.manifest.identity.last_modified):
            return None
        try:
            raw = json.loads(self.state.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or any(raw.get(k) != v for k, v in self._state_identity().items()):
            return None
        pieces = raw.get("pieces")
        if not isinstance(pieces, dict):
            return None
        out = {}
        piece_count = self.manifest.piece_count
        for key, value in pieces.items():
            if isinstance(key, str) and key.isdigit() and int(key) < piece_count and isinstance(value, str):
                out[int(key)] = value
        return out

    def _state_identity(self) -> dict[str, Any]:
        """What the sidecar records of the download beside its pieces; a sidecar that says otherwise is of
        another file, or another version of it, and is not resumed."""
        m = self.manifest
        return {
            "version": STATE_VERSION,
            "task_id": self.task_id,
            "length": m.length,
            "piece_length": m.piece_length,
            "etag": m.identity.etag,
            "last_modified": m.identity.last_modified,
        }

    def save_state(self, hashes: dict[int, str]) -> None:
        """Record the verified pieces atomically (write a temporary file, then rename over the old one)."""
        body = {**self._state_identity(), "pieces": {str(k): v for k, v in sorted(hashes.items())}}
        tmp = self.state.with_name(self.state.name + ".tmp")
        try:
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self.state)
        except OSError as exc:
            raise self._fail("write", exc, self.state) from exc

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("part file is not open")
        return self._fd

    def write(self, index: int, buffers: Buffers) -> None:
        """Write a piece given as buffers, with as few pwritev calls as the kernel allows, and start its
        writeback to disk (see :mod:`shoal.storage.writeback`)."""
        start = offset = self.manifest.piece_offset(index)
        pending = [memoryview(b) for b in buffers]
        try:
            with self._using() as fd:
                while pending:
                    batch = pending[:_IOV_MAX]
                    written = os.pwritev(fd, batch, offset)
                    offset += written
                    # A short write (rare on regular files) leaves the rest of the batch for the next call.
                    while batch and written >= len(batch[0]):
                        written -= len(batch[0])
                        batch.pop(0)
                        pending.pop(0)
                    if written:
                        pending[0] = pending[0][written:]
                writeback.start(fd, start, offset - start)
        except OSError as exc:
            raise self._fail("write", exc) from exc

    def read(self, index: int) -> bytes:
        with self._using() as fd:
            return os.pread(fd, self.manifest.piece_size(index), self.manifest.piece_offset(index))

    def feed(self, first: int, end: int, hashers: Sequence[Hasher]) -> None:
        """Read pieces ``first`` up to ``end`` back, in order and in chunks of at most ``FEED_CHUNK`` bytes,
        into each of ``hashers`` (a whole-file hash that follows the download; they release the GIL)."""
        offset = self.manifest.piece_offset(first)
        stop = min(self.manifest.piece_offset(end), self.manifest.length)
        # One buffer read into again and again: a fresh 4 MiB bytes object per read would move glibc's mmap
        # threshold up, and the freed chunks would then stay in the process's heap (its RSS).
        buffer = memoryview(bytearray(min(FEED_CHUNK, max(stop - offset, 0))))
        try:
            with self._using() as fd:
                while offset < stop:
                    want = buffer[: min(FEED_CHUNK, stop - offset)]
                    got = os.preadv(fd, [want], offset)
                    if not got:
                        raise OSError(errno.EIO, "the part file is shorter than its pieces")
                    chunk = want[:got]
                    for hasher in hashers:
                        hasher.update(chunk)
                    offset += got
        except OSError as exc:
            raise self._fail("read", exc) from exc

    def sync(self) -> None:
        """fsync the part file: after a crash the renamed file must hold these bytes, not a hole."""
        try:
            with self._using() as fd:
                os.fsync(fd)
        except OSError as exc:
            raise self._fail("flush", exc) from exc

    def move_into_place(self, stop: threading.Event | None = None) -> Path | None:
        """Put the (synced, verified) part file in place (renamed, or written through and removed: see
        :meth:`Destination.write_through` for ``stop``) and drop the sidecar; the path the file's bytes are
        at now (None when written through: nowhere to read them again)."""
        self.destination.install(self.path, stop)
        with contextlib.suppress(FileNotFoundError):
            self.state.unlink()
        return None if self.destination.through else self.destination.target

    def close(self) -> None:
        """Close the file once no worker thread uses it (a write in progress takes a millisecond or so)."""
        with self._idle:
            self._closed = True
            while self._users:
                self._idle.wait()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def discard(self) -> None:
        """Remove the part file and the sidecar (the content is known to be wrong)."""
        self.close()
        for path in (self.path, self.state):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
