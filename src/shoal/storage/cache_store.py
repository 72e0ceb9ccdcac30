"""The node cache on disk: content-addressed files under a capacity, with their index.

Layout of the storage directory::

    objects/ab/<digest>    cached files, named by the BLAKE3 of their content, read-only (0444)
    staging/               files on their way in: a put's copy, a download's part file and its sidecar, a
                           second name of a finished download still served while it moves in

Rules:

* **Nothing half-written is an entry.** A file enters by copy or download into ``staging/``, is flushed
  (fsync), hashed, renamed into ``objects/`` and only then recorded; a crash at any point leaves at most a
  staging file or an orphan object, which :func:`shoal.storage.cache_reconcile.reconcile` removes.
* **Never above capacity.** Space is reserved (evicting by :mod:`shoal.core.eviction` first) before a byte
  is written; a download's reservation is its length. A file that cannot fit is refused with nothing
  evicted.
* **Never serve corrupt bytes.** Each entry records the file's stat (inode, size, mtime, ctime) when it
  was last hashed whole. Any write to the file, including a bit flipped through a hard link, changes its
  ctime, and the next use hashes it whole again (BLAKE3, on two threads): a mismatch removes
  the entry, and the next request fetches it afresh. A scrub (:meth:`CacheStore.scrub`) hashes every
  entry regardless, for damage that leaves the stat alone. A file being judged is held open until the
  verdict, so the inode number a removal checks names that file alone: a filesystem hands a freed number
  to the next file it makes, the fresh copy fetched in its place included.
* **Placing a file** at a destination hard-links it when the filesystem allows (no copy: a 1 GiB hit
  costs milliseconds) and copies otherwise, through a temporary name and a rename either way; a symlink is
  followed and a device or a FIFO written through (:mod:`shoal.storage.placement`). A linked
  destination shares the read-only object's inode, so writing to it fails for users other than root.
* **The SHA-256 may come later.** An entry is named by its BLAKE3; its SHA-256 (for ``sha256:`` ids)
  costs many times as much CPU (benchmarks/RESULTS.md, hashing), so the daemon records it as pending
  (``""``) and completes it in the background (:meth:`CacheStore.complete_sha256`) rather than make a
  finished download wait for it. That pass never holds the entry in use, so it never delays an eviction. A
  lookup by ``sha256:`` completes every pending one first, so it is never missed.

Making the index and the files agree at start is storage.cache_reconcile's; what caches tell each other
(export and import) is storage.cache_sync's.

Blocking throughout (file I/O, hashing, SQLite): the daemon calls it from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from shoal.core.cloud_manager_dump import KnownFile
from shoal.core.errors import CacheError, IntegrityError, LocalIOError, NotInCache, UsageError
from shoal.core.eviction import DEFAULT_CAPACITY, Entry, Watermarks, plan_eviction
from shoal.core.ids import canonical_url
from shoal.core.units import format_bytes
from shoal.storage.cache_index import CacheEntry, CacheIndex, SeededTask
from shoal.storage.content_hash import hash_content
from shoal.storage.placement import Destination

log = logging.getLogger("shoal.cache")

MIN_ID_PREFIX = 8
"""The fewest hex digits an id may be shortened to: 4 billion values, so a cache's ids rarely share one."""
_HEX_ID = re.compile(rf"^[0-9a-f]{{{MIN_ID_PREFIX},64}}\Z")
_AMBIGUOUS_SHOWN = 4


@dataclass(frozen=True, slots=True)
class Usage:
    used: int
    """Bytes of cached files."""
    reserved: int
    """Bytes promised to downloads in progress."""
    capacity: int
    files: int

    @property
    def ratio(self) -> float:
        return (self.used + self.reserved) / self.capacity if self.capacity else 0.0


def stat_key(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _io_error(action: str, path: Path, exc: OSError) -> LocalIOError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LocalIOError(f"cannot {action} {path}: the disk is full", path=str(path))
    return LocalIOError(f"cannot {action} {path}: {exc.strerror or exc}", path=str(path))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheStore:
    """Open with ``with CacheStore(index_path, storage_dir, capacity) as store:``. Thread-safe; several
    processes may open the same cache."""

    def __init__(
        self,
        index_path: Path,
        storage_dir: Path,
        capacity: int | None = None,
        *,
        watermarks: Watermarks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity is not None and capacity <= 0:
            raise UsageError("the cache's capacity must be positive")
        self.index = CacheIndex(Path(index_path))
        self.storage = Path(storage_dir)
        self.objects = self.storage / "objects"
        self.staging = self.storage / "staging"
        self._capacity = capacity
        self.watermarks = watermarks or Watermarks()
        self.clock = clock
        # Held while an object file and its entry change together (adopt's rename and insert, a drop's check,
        # mark and unlink): a drop of a damaged copy must not unlink a fresh one adopted under its id.
        self._objects_lock = threading.Lock()
        self.evictions = 0
        """Entries this process evicted to make room (:meth:`reserve`), since it opened the cache."""

    def __enter__(self) -> CacheStore:
        try:
            for directory in (self.storage, self.objects, self.staging):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise _io_error("create", self.storage, exc) from None
        self.index.__enter__()
        if self._capacity is not None:
            stored = self.index.get_meta("capacity")
            if stored is not None and int(stored) != self._capacity:
                # Never silent: a smaller capacity changes what stays cached.
                log.warning(
                    "cache %s: capacity changed from %s to %s",
                    self.storage,
                    format_bytes(int(stored)),
                    format_bytes(self._capacity),
                )
            self.index.set_meta("capacity", str(self._capacity))
        return self

    def __exit__(self, *exc: object) -> None:
        self.index.__exit__()

    @property
    def capacity(self) -> int:
        stored = self.index.get_meta("capacity")
        return int(stored) if stored else (self._capacity or DEFAULT_CAPACITY)

    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    # -- looking up ----------------------------------------------------------------------------------

    def lookup(self, ident: str) -> CacheEntry | None:
        """The entry an id names: a BLAKE3 digest (bare or ``blake3:HEX``) or ``sha256:HEX``, whole or as a
        prefix of at least MIN_ID_PREFIX hex digits (``shoal cache ls`` shows 16). A prefix must name one
        entry: one that begins several ids is a UsageError listing them. Pending SHA-256s are completed
        before a ``sha256:`` lookup, so a file just cached is found by either id."""
        kind, _, value = ident.strip().lower().rpartition(":")
        if not _HEX_ID.match(value) or kind not in ("", "blake3", "sha256"):
            raise UsageError(
                f"not a cache id: {ident!r} (expected 64 hex digits, blake3:HEX or sha256:HEX, or a unique "
                f"prefix of at least {MIN_ID_PREFIX} hex digits)"
            )
        column = "sha256" if kind == "sha256" else "digest"
        if kind == "sha256":
            self.complete_sha256()
        if len(value) == 64:
            return self.index.by_sha256(value) if kind == "sha256" else self.index.get(value)
        found = self.index.by_prefix(column, value, limit=_AMBIGUOUS_SHOWN + 1)
        if len(found) > 1:
            shown = ", ".join(e.sha256 if kind == "sha256" else e.digest for e in found[:_AMBIGUOUS_SHOWN])
            more = " and more" if len(found) > _AMBIGUOUS_SHOWN else ""
            raise UsageError(f"ambiguous id {ident.strip()!r}: it begins {shown}{more}; give more digits")
        return found[0] if found else None

    def known_only(self, ident: str) -> KnownFile | None:
        """The file a ``sha256:`` id names when it is known by its SHA-256 only (from a cloud-manager dump:
        core.cloud_manager_dump) and no entry has it; None otherwise. A prefix must name one."""
        kind, _, value = ident.strip().lower().rpartition(":")
        if kind != "sha256" or not _HEX_ID.match(value) or self.lookup(ident) is not None:
            return None
        found = self.index.known_sha256(value, limit=_AMBIGUOUS_SHOWN + 1)
        if len(found) > 1:
            shown = ", ".join(k.sha256 for k in found[:_AMBIGUOUS_SHOWN])
            more = " and more" if len(found) > _AMBIGUOUS_SHOWN else ""
            raise UsageError(f"ambiguous id {ident.strip()!r}: it begins {shown}{more}; give more digits")
        return found[0] if found else None

    def entry(self, ident: str) -> CacheEntry:
        found = self.lookup(ident)
        if found is None:
            known = self.known_only(ident)
            if known is not None:
                raise NotInCache(
                    f"{ident} ({known.name}) is known by its SHA-256 only, from an import of cloud-manager's dump, "
                    f"and no source for it is known: 'shoal cache put' the file, or fetch it with "
                    f"'shoal get URL --digest sha256:{known.sha256}'",
                    digest=ident,
                )
            raise NotInCache(f"no cache entry {ident}", digest=ident)
        return found

    def info(self, ident: str) -> CacheEntry:
        """The entry, with its SHA-256 completed if it was pending: what ``shoal cache info`` shows."""
        found = self.entry(ident)
        if not found.sha256 and found.cached:
            self.complete_sha256([found.digest])
            found = self.entry(found.digest)
        return found

    def cached(self, ident: str) -> CacheEntry:
        found = self.entry(ident)
        if not found.cached:
            raise NotInCache(f"{ident} is known but not on this node's disk", digest=found.digest)
        return found

    def by_url(self, url: str) -> CacheEntry | None:
        return self.index.by_url(canonical_url(url))

    def by_task(self, task_id: str) -> CacheEntry | None:
        return self.index.by_task(task_id)

    def by_private_key(self, key: str) -> CacheEntry | None:
        return self.index.by_private_key(key)

    def private(self, digest: str) -> bool:
        """True for content fetched with origin credentials only: served to nobody by id, exported never."""
        return bool(self.index.private_keys(digest))

    def entries(self) -> list[CacheEntry]:
        return self.index.entries()

    def usage(self) -> Usage:
        used, reserved, files = self.index.used()
        return Usage(used, reserved, self.capacity, files)

    # -- space ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reserve(self, size: int) -> Iterator[int]:
        """Promise ``size`` bytes, evicting least recently used entries if needed; the promise ends on exit
        (or becomes the entry, through :meth:`adopt`). Raises CacheFull with nothing evicted."""
        with self.index.transaction() as db:
            used, reserved, _ = self.index.used(db)
            candidates = [Entry(*row) for row in self.index.eviction_candidates(db)]
            plan = plan_eviction(
                candidates, used=used + reserved, incoming=size, capacity=self.capacity, watermarks=self.watermarks
            )
            for digest in plan:
                self.index.mark_evicted(db, digest)
            reservation = self.index.add_reservation(db, size)
        self.evictions += len(plan)
        for digest in plan:
            self._unlink_object(digest)
        try:
            yield reservation
        finally:
            self.index.end_reservation(reservation)

    # -- entering ------------------------------------------------------------------------------------

    def staging_path(self, name: str) -> Path:
        return self.staging / name

    def serving_link(self, path: Path) -> Path:
        """A second name in ``staging/`` (``serving-*``) for the staging file ``path``, so that its bytes stay
        where a reader was sent while :meth:`adopt` moves the file into ``objects/``. The caller removes it
        once nobody is sent there any more (a crash leaves it to
        :func:`~shoal.storage.cache_reconcile.reconcile`). Blocking."""
        link = self.staging / f"serving-{secrets.token_hex(8)}"
        try:
            os.link(path, link)
        except OSError as exc:
            raise _io_error("link", path, exc) from None
        return link

    def put(self, path: Path, *, name: str | None = None, pin: bool = False, sources: Iterable[str] = ()) -> CacheEntry:
        """Copy a local file into the cache; returns its entry (whose ``digest`` is the id)."""
        path = Path(path)
        sources = tuple(canonical_url(u) for u in sources)  # a bad URL is refused before anything is copied
        try:
            st = path.stat()
        except OSError as exc:
            raise _io_error("read", path, exc) from None
        if not path.is_file():
            raise UsageError(f"{path} is not a regular file")
        tmp = self.staging / f"put-{secrets.token_hex(8)}"
        with self.reserve(st.st_size) as reservation:
            try:
                try:
                    shutil.copyfile(path, tmp)
                    with open(tmp, "rb+") as f:
                        os.fsync(f.fileno())
                except OSError as exc:
                    raise _io_error("copy into the cache", path, exc) from None
                return self.adopt(tmp, name=name or path.name, pin=pin, sources=sources, reservation=reservation)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    def adopt(
        self,
        tmp: Path,
        *,
        name: str,
        sources: Iterable[str] = (),
        pin: bool = False,
        expected: str | None = None,
        reservation: int | None = None,
        task: SeededTask | None = None,
        sha256_later: bool = False,
        hashes: Mapping[str, str] | None = None,
        private_key: str | None = None,
    ) -> CacheEntry:
        """Move a complete, flushed staging file into the cache and record it (with the swarm task it was
        fetched as, if any). ``expected`` is a BLAKE3 or ``sha256:`` id the content must match.

        ``private_key``: the file was fetched with origin credentials (core.ids.headers_tag); it is found by
        that key only (:meth:`by_private_key`), and never served by id (:meth:`private`).

        ``sha256_later``: record the SHA-256 as pending instead of hashing for it now (unless ``expected``
        is one), for a caller that completes it off the critical path (see :meth:`complete_sha256`).

        ``hashes``: whole-file hex digests (``blake3``, ``sha256``) the caller computed from these very bytes
        as it wrote them (a download's PrefixHash); the file is read again only for what they lack."""
        # Before the file moves into objects/: a bad URL found after the rename would leave an orphan object.
        sources = tuple(canonical_url(u) for u in sources)
        kind, _, value = (expected or "").lower().rpartition(":")
        known = hashes or {}
        need_sha256 = (kind == "sha256" or not sha256_later) and "sha256" not in known
        try:
            if "blake3" in known and not need_sha256:
                digest, sha256 = known["blake3"], known.get("sha256", "")
            else:
                digest, sha256 = hash_content(tmp, sha256=need_sha256)
                sha256 = sha256 or known.get("sha256", "")
            st = tmp.stat()
        except OSError as exc:
            raise _io_error("hash", tmp, exc) from None
        if expected is not None:
            if value != (sha256 if kind == "sha256" else digest):
                got = f"sha256:{sha256}" if kind == "sha256" else f"blake3:{digest}"
                raise IntegrityError(
                    f"the content does not match {expected}: it is {got}", expected=expected, actual=f"blake3:{digest}"
                )
        final = self.object_path(digest)
        with self._objects_lock:
            try:
                # A fresh mtime: cache_reconcile takes an object older than ORPHAN_GRACE_SECONDS with no entry for
                # an orphan, and a part file's last write may be long past once a large file has been hashed.
                os.utime(tmp)
                os.chmod(tmp, 0o444)
                final.parent.mkdir(mode=0o700, exist_ok=True)
                os.replace(tmp, final)
                _fsync_dir(final.parent)
                key = stat_key(final.stat())
            except OSError as exc:
                raise _io_error("store", final, exc) from None
            now = self.clock()
            entry = CacheEntry(
                digest=digest,
                sha256=sha256,
                size=st.st_size,
                name=name,
                added=now,
                last_access=now,
                pinned=pin,
                cached=True,
                verified_stat=key,
                sources=sources,
            )
            with self.index.transaction() as db:
                self.index.insert(db, entry)
                if private_key is not None:
                    self.index.insert_private(db, digest, private_key)
                if reservation is not None:
                    self.index.end_reservation(reservation, db)
        if task is not None:
            self.index.record_task(replace(task, digest=digest))
        return self.entry(digest)

    def complete_sha256(
        self,
        digests: Iterable[str] | None = None,
        *,
        hasher: Callable[[Path], tuple[str, str]] | None = None,
    ) -> int:
        """Hash the files of entries whose SHA-256 is pending (those of ``digests``, or all) and record it;
        the BLAKE3 id is checked in the same read, and a damaged file is removed. The number completed.
        ``hasher``: how to get a file's (BLAKE3, SHA-256); default :func:`hash_content` in this thread (the
        daemon's background pass passes :class:`shoal.storage.idle_hash.IdleHasher`).

        The pass holds no use of the entry: work nobody waits for must never keep a file from eviction
        (by the LRU or ``shoal cache evict``), and an idle-priority child on a busy host may take a minute.
        So the file may be evicted or replaced while it is hashed; the hash is recorded only if the same
        file (inode) is still the entry's, cached, when it is done. The file is held open from the look at
        its inode to the verdict: a filesystem gives a freed inode's number to the next file it makes (ext4
        does at once), so a fresh copy fetched after the damaged one was dropped would otherwise carry its
        number, and be taken for it and dropped."""
        hasher = hasher or hash_content
        completed = 0
        for digest in list(digests) if digests is not None else self.index.sha256_pending():
            entry = self.index.get(digest)
            if entry is None or not entry.cached or entry.sha256:
                continue
            path = self.object_path(digest)
            try:
                held = open(path, "rb")  # closed by the with below, after the verdict
            except FileNotFoundError:
                continue  # evicted meanwhile, or missing: the next use's check drops it
            except OSError as exc:
                raise _io_error("read", path, exc) from None
            with held:
                inode = os.fstat(held.fileno()).st_ino
                completed += self._complete_one(digest, path, inode, hasher)
        return completed

    def _complete_one(self, digest: str, path: Path, inode: int, hasher: Callable[[Path], tuple[str, str]]) -> int:
        """:meth:`complete_sha256` of one file, ``inode`` at ``path`` when it began (held open by the
        caller): 1 when its SHA-256 was recorded."""
        try:
            blake, sha256 = hasher(path)
        except OSError as exc:
            if _inode(path) != inode:
                return 0  # evicted or replaced under the hasher: nothing of this file to record
            raise _io_error("read", path, exc) from None
        if blake != digest:
            self.drop(digest, inode=inode)
            return 0
        with self._objects_lock, self.index.transaction() as db:
            # Under the lock and in one transaction: no eviction or adopt can come between the check and
            # the write.
            return int(_inode(path) == inode and self.index.set_sha256(db, digest, sha256))

    # -- using ---------------------------------------------------------------------------------------

    def verify(self, entry: CacheEntry, *, force: bool = False) -> bool:
        """True when the entry's file is intact; a damaged or missing one is removed (the entry is kept as
        known, with its sources, so it can be fetched again). Hashes only when the stat changed, or ``force``.
        The file is held open until the verdict, as in :meth:`complete_sha256`: its inode number then names
        it and no other file."""
        path = self.object_path(entry.digest)
        try:
            held = open(path, "rb")  # closed by the with below, after the verdict
        except FileNotFoundError:
            self.drop(entry.digest)
            return False
        except OSError as exc:
            raise _io_error("read", path, exc) from None
        with held:
            st = os.fstat(held.fileno())
            key, inode = stat_key(st), st.st_ino
            if not force and key == entry.verified_stat:
                return True
            try:
                digest, _ = hash_content(path, sha256=False)
            except FileNotFoundError:
                digest = ""  # removed since it was opened: gone all the same
            except OSError as exc:
                raise _io_error("read", path, exc) from None
            if digest != entry.digest:
                self.drop(entry.digest, inode=inode)
                return False
        self.index.set_verified(entry.digest, key)
        return True

    @contextlib.contextmanager
    def using(self, ident: str, *, touch: bool = True) -> Iterator[tuple[CacheEntry, Path]]:
        """Hold an entry in use (it cannot be evicted) after verifying it; yields it and its file's path.
        Raises NotInCache when it is not on disk or failed verification. ``touch``: count it as used
        (its last access, for eviction), unless the cache is only looking after it."""
        entry = self.cached(ident)
        use = self.index.add_use(entry.digest)
        try:
            if not self.verify(entry):
                raise NotInCache(f"{entry.digest} was damaged on disk and has been removed", digest=entry.digest)
            if touch:
                self.index.touch(entry.digest, self.clock())
            yield entry, self.object_path(entry.digest)
        finally:
            self.index.end_use(use)

    def place(self, ident: str, dest: Path) -> tuple[CacheEntry, bool]:
        """Put an entry's file at ``dest`` by :mod:`shoal.storage.placement`'s rule: a hard link if possible,
        else a copy, through a temporary name beside the target (a symlink followed); a device or a FIFO is
        written through. (entry, linked)."""
        destination = Destination.of(dest)
        with self.using(ident) as (entry, path):
            if destination.through:
                destination.write_through(path)
                return entry, False
            tmp = destination.temporary(f"shoal-{secrets.token_hex(4)}")
            linked = True
            try:
                try:
                    os.link(path, tmp)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    linked = False
                    shutil.copyfile(path, tmp)
                    os.chmod(tmp, 0o644)
                    with open(tmp, "rb+") as f:
                        os.fsync(f.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise _io_error("write", destination.path, exc) from None
            try:
                destination.install(tmp)
            finally:
                # Left after a failed rename, and after a successful one when dest is already a link to the
                # same object: rename(2) then does nothing.
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            if linked:
                # A new link changes the inode's ctime: record it, or the next use would hash the file again.
                with contextlib.suppress(OSError):
                    self.index.set_verified(entry.digest, stat_key(path.stat()))
        return entry, linked

    # -- managing ------------------------------------------------------------------------------------

    def evict(self, ident: str) -> CacheEntry:
        entry = self.cached(ident)
        if entry.pinned:
            raise CacheError(f"{entry.digest} is pinned; unpin it first", digest=entry.digest)
        if entry.in_use:
            raise CacheError(f"{entry.digest} is in use", digest=entry.digest)
        self.drop(entry.digest)
        return entry

    def pin(self, ident: str, pinned: bool = True) -> CacheEntry:
        entry = self.cached(ident) if pinned else self.entry(ident)
        self.index.set_pinned(entry.digest, pinned)
        return self.entry(entry.digest)

    def drop(self, digest: str, *, inode: int | None = None) -> None:
        """Forget a damaged or missing file; its entry stays known, so it can be fetched again. ``inode``: the
        file found damaged. A file that has replaced it since (a fresh copy of the same content adopted
        under this id while it was being hashed) is left alone: dropping by id would remove the good copy."""
        with self._objects_lock:
            if inode is not None:
                try:
                    if self.object_path(digest).stat().st_ino != inode:
                        return
                except FileNotFoundError:
                    pass
            with self.index.transaction() as db:
                self.index.mark_evicted(db, digest)
            self._unlink_object(digest)

    def _unlink_object(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.object_path(digest).unlink()

    def scrub(self) -> list[str]:
        """Hash every cached file whole; the digests of the damaged ones, which are removed."""
        return [e.digest for e in self.index.entries(cached_only=True) if not self.verify(e, force=True)]


def _inode(path: Path) -> int | None:
    """The file's inode number; None when it is gone."""
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def describe(usage: Usage) -> str:
    return (
        f"{format_bytes(usage.used + usage.reserved)} of {format_bytes(usage.capacity)} "
        f"({usage.ratio:.1%}), {usage.files} files"
    )
