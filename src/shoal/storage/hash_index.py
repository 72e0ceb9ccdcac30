"""The seeder's hash index: what each published file hashed to, so a restart does not hash it again.

Entries are keyed by path and hold the file's size, mtime and inode at hashing time; a lookup with any of
those changed is a miss, so an edited, replaced or renamed-over file is always hashed afresh. SQLite in WAL
mode, stdlib ``sqlite3``: the index is local to the seeder and small (about 52 bytes per piece), and its
callers already run in worker threads, so a synchronous connection behind a lock is the simple choice.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import TracebackType

from shoal.core.errors import LocalIOError
from shoal.storage.file_hashes import FileHashes, FileStat

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    piece_length INTEGER NOT NULL,
    digest TEXT NOT NULL,
    blake3_pieces BLOB NOT NULL,
    sha1_pieces BLOB NOT NULL
)
"""


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
            db.execute(_SCHEMA)
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

    def get(self, path: str, stat: FileStat, piece_length: int) -> FileHashes | None:
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT digest, blake3_pieces, sha1_pieces FROM file_hashes"
                    " WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ? AND piece_length = ?",
                    (path, stat.size, stat.mtime_ns, stat.inode, piece_length),
                )
                .fetchone()
            )
        return None if row is None else FileHashes(piece_length, row[0], row[1], row[2])

    def put(self, path: str, stat: FileStat, hashes: FileHashes) -> None:
        with self._lock:
            self._conn().execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    path,
                    stat.size,
                    stat.mtime_ns,
                    stat.inode,
                    hashes.piece_length,
                    hashes.digest,
                    hashes.blake3_pieces,
                    hashes.sha1_pieces,
                ),
            )

    def forget(self, path: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM file_hashes WHERE path = ?", (path,))

    def paths(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._conn().execute("SELECT path FROM file_hashes")]
