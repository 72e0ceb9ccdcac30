"""Putting a finished file at its destination: the one rule for ``shoal get`` (in process or through the
daemon), ``shoal cache get -o`` and the daemon's pool pushes.

Rules (curl and wget write the same way):

* **A symlink is followed.** The file is placed at the link's final target: its temporary file lives in the
  target's directory and is renamed over the target, so the link stays a link, pointing to the new file.
* **A device or a FIFO is written through.** A destination that exists and is a character device
  (``/dev/null``), a block device or a FIFO is opened and the bytes are written into it; it is never renamed
  over or removed. A FIFO's write waits for a reader, as curl's does. Such a destination cannot hold a
  temporary file beside it (``/dev`` is no place for a download), so its temporary files live in this
  user's private scratch directory (``$TMPDIR/shoal-UID``, mode 0700), named after the destination, where a
  rerun finds them; they are removed once the bytes are written through.
* **A socket is refused** before anything is fetched: it cannot be opened for writing.
* **Anything else is replaced atomically**: nothing yet, or a regular file, gets the complete, flushed file
  by a rename from a temporary name beside it.

Blocking (stat, open, copy): callers run it in worker threads where it may take long.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from shoal.core.errors import LocalIOError

COPY_CHUNK = 4 << 20
FIFO_POLL_SECONDS = 0.05
"""How often a cancellable write to a FIFO tries again to open it, until a reader comes."""


def scratch_dir() -> Path:
    """This user's private directory for the temporary files of write-through destinations."""
    import tempfile  # imported here: `shoal get` answered by a daemon's cache never needs it, and it is slow to load

    return Path(tempfile.gettempdir()) / f"shoal-{os.getuid()}"


def _error(action: str, path: Path, exc: OSError) -> LocalIOError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LocalIOError(f"cannot {action} {path}: the disk is full", path=str(path))
    return LocalIOError(f"cannot {action} {path}: {exc.strerror or exc}", path=str(path))


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a file goes: ``path`` as the user named it, ``target`` the file its bytes land in (symlinks
    followed), and ``through`` whether the target is written through rather than replaced."""

    path: Path
    target: Path
    through: bool

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> Destination:
        """Look at ``path`` now (following symlinks); LocalIOError for one that can never be written."""
        named = Path(os.path.abspath(path))
        target = Path(os.path.realpath(named))
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            return cls(named, target, through=False)
        except OSError as exc:  # a symlink loop, a directory we may not search
            raise _error("write", named, exc) from None
        if stat.S_ISSOCK(mode):
            raise LocalIOError(f"cannot write {named}: it is a socket", path=str(named))
        through = stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)
        return cls(named, target, through=through)

    def temporary(self, kind: str) -> Path:
        """The name of a temporary file of this destination (``kind``: ``shoal-part``, ``shoal-state``...):
        ``.NAME.KIND`` beside the target, on its filesystem so that the final rename is atomic; for a
        write-through destination, in the scratch directory, named after the whole target path so that two
        destinations never share one."""
        if not self.through:
            return self.target.with_name(f".{self.target.name}.{kind}")
        import hashlib  # imported here, like tempfile (scratch_dir): only a device or a FIFO needs it

        tag = hashlib.sha256(os.fsencode(self.target)).hexdigest()[:16]
        return scratch_dir() / f"{self.target.name}-{tag}.{kind}"

    def prepare(self) -> None:
        """Make sure the directory of :meth:`temporary` exists: for a write-through destination, create the
        scratch directory, and refuse one that is not this user's private directory (another user could
        otherwise point our temporary names, predictable on purpose, at a file of ours)."""
        if not self.through:
            return
        directory = scratch_dir()
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _error("create", directory, exc) from None
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise LocalIOError(
                f"{directory} is not a private directory of this user; remove it or set TMPDIR elsewhere",
                path=str(directory),
            )

    def writable(self) -> None:
        """Check, before anything is fetched, that the file can be placed; LocalIOError if not."""
        if self.through:
            if not os.access(self.target, os.W_OK):
                raise LocalIOError(f"{self.path} is not writable", path=str(self.path))
            return
        parent = self.target.parent
        if not parent.is_dir():
            raise LocalIOError(f"destination directory {parent} does not exist", path=str(parent))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise LocalIOError(f"destination directory {parent} is not writable", path=str(parent))

    def install(self, complete: Path, stop: threading.Event | None = None) -> None:
        """Put the complete, flushed temporary file ``complete`` (ours: it is consumed) in place: rename it
        over the target, or write its bytes through and remove it. ``stop``: see :meth:`write_through`."""
        if self.through:
            self.write_through(complete, stop)
            complete.unlink(missing_ok=True)
            return
        try:
            os.replace(complete, self.target)
        except OSError as exc:
            raise _error("move into place", self.path, exc) from None

    def write_through(self, source: Path, stop: threading.Event | None = None) -> None:
        """Open the target for writing (no create, no truncate: it is a device or a FIFO) and copy
        ``source``'s bytes into it. A FIFO is opened once it has a reader; when ``stop`` is set meanwhile
        (the caller was cancelled: a thread blocked in open(2) would keep the process from exiting), it gives
        up with a LocalIOError."""
        try:
            out = self._open_for_writing(stop)
        except OSError as exc:
            raise _error("write", self.path, exc) from None
        try:
            with open(source, "rb") as f:
                _copy(f.fileno(), out, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            raise _error("write", self.path, exc) from None
        finally:
            os.close(out)

    def _open_for_writing(self, stop: threading.Event | None) -> int:
        flags = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC
        if stop is None:
            return os.open(self.target, flags)
        while True:
            try:
                fd = os.open(self.target, flags | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: a FIFO with no reader yet
                    raise
                if stop.wait(FIFO_POLL_SECONDS):
                    raise LocalIOError(
                        f"cannot write {self.path}: stopped while waiting for a reader", path=str(self.path)
                    ) from None
                continue
            os.set_blocking(fd, True)
            return fd


def _copy(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes: sendfile (no copy through user space), or read and write where the target's
    driver does not take it."""
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(dst, src, offset, min(COPY_CHUNK, size - offset))
            if not sent:
                raise OSError(errno.EIO, "the file is shorter than it was")
            offset += sent
        return
    except OSError as exc:
        if offset or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while offset < size:
        chunk = memoryview(os.pread(src, min(COPY_CHUNK, size - offset), offset))
        if not chunk:
            raise OSError(errno.EIO, "the file is shorter than it was")
        offset += len(chunk)
        while chunk:
            chunk = chunk[os.write(dst, chunk) :]
