"""The seeder's hash index: what each published file hashed to, so neither a restart nor a new name for the
same bytes hashes them again.

Entries are keyed by what identifies the bytes on disk, not by path: device, inode, size and mtime (ns).
A mirror's new version hard-links every unchanged file from the previous one (rsync ``--link-dest``, the
http provider's 304s), so its unchanged files are hits and only what changed is hashed. A lookup with any
of the four changed is a miss, so an edited or replaced file is always hashed afresh; an inode reused by
a new file is a miss too unless the new file has the same size and the same mtime to the nanosecond.

SQLite in WAL mode, stdlib ``sqlite3``: the index is local to the seeder and small (about 52 bytes per
piece), and its callers already run in worker threads, so a synchronous connection behind a lock is the
simple choice.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import TracebackType

from shoal.core.errors import LocalIOError
from shoal.storage.file_hashes import FileHashes, FileStat

_SCHEMA = (
    # The first index was keyed by path; its entries are hashed again once, under their identity.
    "DROP TABLE IF EXISTS file_hashes",
    """
    CREATE TABLE IF NOT EXISTS content_hashes (
        device INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        piece_length INTEGER NOT NULL,
        digest TEXT NOT NULL,
        blake3_pieces BLOB NOT NULL,
        sha1_pieces BLOB NOT NULL,
        PRIMARY KEY (device, inode, size, mtime_ns, piece_length)
    )
    """,
)


class HashIndex:
    """Open with ``with HashIndex(path) as index:``; every method may be called from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> HashIndex:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise LocalIOError(f"cannot open the hash index {self.path}: {exc}", path=str(self.path)) from None
        self._db = db
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the hash index is not open")
        return self._db

    def get(self, stat: FileStat, piece_length: int) -> FileHashes | None:
        """The hashes of the bytes ``stat`` identifies, in pieces of ``piece_length``, whatever their path."""
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT digest, blake3_pieces, sha1_pieces FROM content_hashes WHERE device = ? AND inode = ?"
                    " AND size = ? AND mtime_ns = ? AND piece_length = ?",
                    (stat.device, stat.inode, stat.size, stat.mtime_ns, piece_length),
                )
                .fetchone()
            )
        return None if row is None else FileHashes(piece_length, row[0], row[1], row[2])

    def put(self, stat: FileStat, hashes: FileHashes) -> None:
        """Remember ``hashes`` for the bytes ``stat`` identifies. What the inode held before is dropped: one
        row per inode, so a file rewritten every day does not pile up rows beside it."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            try:
                db.execute("DELETE FROM content_hashes WHERE device = ? AND inode = ?", (stat.device, stat.inode))
                db.execute(
                    "INSERT INTO content_hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stat.device,
                        stat.inode,
                        stat.size,
                        stat.mtime_ns,
                        hashes.piece_length,
                        hashes.digest,
                        hashes.blake3_pieces,
                        hashes.sha1_pieces,
                    ),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def forget(self, stat: FileStat) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM content_hashes WHERE device = ? AND inode = ?", (stat.device, stat.inode))
