"""The node cache's index: one SQLite database of the content-addressed files a host keeps.

Tables::

    entries       one row per file, by digest (BLAKE3 of the whole file, hex): sha256, size, name, added,
                  last access, pinned, cached (0: known from an import or evicted, not on disk), and the
                  file's stat at its last full verification
    sources       URLs the file was fetched from (a URL names the newest digest it was seen with)
    holders       other nodes known to hold it (peer URLs from an import)
    tasks         swarm tasks the daemon seeds the file under: task id, URL, generation, origin identity
    private       files fetched with origin headers (credentials), by the key of URL and headers
                  (core.ids.headers_tag): found only by requests with the same headers, never served by id
    uses          entries in use (being placed or served), by process id: never evicted
    reservations  space promised to downloads in progress, by process id
    known_sha256  files another node holds that are known by their SHA-256 only (cloud-manager's dump,
                  core.cloud_manager_dump): name, size, added. No BLAKE3 names them, so they are no entry;
                  a row goes when an entry with its SHA-256 is recorded.

Schema changes are additive (``CREATE ... IF NOT EXISTS``, run at every open), so an index made by an older
Shoal gains the new tables the first time a newer one opens it, and an older one ignores them.

Several processes may open one index (the daemon, ``shoal cache``, the Python API): SQLite in WAL mode,
and every read-modify-write runs in a ``BEGIN IMMEDIATE`` transaction, so two inserts cannot both plan to
use the same free space. Rows of ``uses`` and ``reservations`` name a process; :meth:`CacheIndex.clear_dead`
drops those of processes that are gone, so a crash never pins an entry or leaks reserved space.

Stdlib ``sqlite3`` behind a lock (like the seeder's hash index): the callers already run in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shoal.core.cloud_manager_dump import KnownFile
from shoal.core.errors import LocalIOError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    digest TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    name TEXT NOT NULL,
    added REAL NOT NULL,
    last_access REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 1,
    verified_stat TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS entries_sha256 ON entries (sha256);
CREATE INDEX IF NOT EXISTS entries_lru ON entries (cached, last_access);
CREATE TABLE IF NOT EXISTS sources (
    digest TEXT NOT NULL REFERENCES entries ON DELETE CASCADE,
    url TEXT NOT NULL,
    PRIMARY KEY (digest, url)
);
CREATE INDEX IF NOT EXISTS sources_url ON sources (url);
CREATE TABLE IF NOT EXISTS holders (
    digest TEXT NOT NULL REFERENCES entries ON DELETE CASCADE,
    peer TEXT NOT NULL,
    PRIMARY KEY (digest, peer)
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL REFERENCES entries ON DELETE CASCADE,
    url TEXT NOT NULL,
    generation INTEGER NOT NULL,
    length INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS private (
    digest TEXT NOT NULL REFERENCES entries ON DELETE CASCADE,
    key TEXT NOT NULL,
    PRIMARY KEY (digest, key)
);
CREATE INDEX IF NOT EXISTS private_key ON private (key);
CREATE TABLE IF NOT EXISTS uses (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    pid INTEGER NOT NULL,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS known_sha256 (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    pid INTEGER NOT NULL,
    since REAL NOT NULL
);
"""

_ENTRY_COLUMNS = "digest, sha256, size, name, added, last_access, pinned, cached, verified_stat"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    digest: str
    """BLAKE3 of the whole file (hex): the entry's id, and the swarm task id of a seeded file."""
    sha256: str
    """SHA-256 of the whole file (hex); "" while it is pending (see CacheStore.complete_sha256)."""
    size: int
    name: str
    added: float
    last_access: float
    pinned: bool
    cached: bool
    """True when the file is on disk; False for an entry known from an import, or evicted."""
    verified_stat: str
    """The file's stat (inode, size, mtime, ctime) when it was last hashed whole and found intact."""
    in_use: bool = False
    sources: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The entry as ``shoal cache info`` and the daemon's control API show it."""
        return {
            "id": self.digest,
            "sha256": self.sha256 or None,
            "name": self.name,
            "size": self.size,
            "added": self.added,
            "last_access": self.last_access,
            "pinned": self.pinned,
            "cached": self.cached,
            "in_use": self.in_use,
            "sources": list(self.sources),
            "peers": list(self.holders),
        }


@dataclass(frozen=True, slots=True)
class SeededTask:
    """A swarm task the daemon seeds an entry under."""

    task_id: str
    digest: str
    url: str
    generation: int
    length: int
    etag: str
    last_modified: str


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class CacheIndex:
    """Open with ``with CacheIndex(path) as index:``; every method may be called from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def __enter__(self) -> CacheIndex:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LocalIOError(f"cannot open the cache index {self.path}: {exc}", path=str(self.path)) from None
        self._db = db
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the cache index is not open")
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): plans made inside it see every
        other process's committed changes and no one else's can come between."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- settings ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- reading -------------------------------------------------------------------------------------

    def _entry(self, db: sqlite3.Connection, row: tuple[object, ...]) -> CacheEntry:
        digest = str(row[0])
        in_use = db.execute("SELECT 1 FROM uses WHERE digest = ? LIMIT 1", (digest,)).fetchone() is not None
        sources = tuple(r[0] for r in db.execute("SELECT url FROM sources WHERE digest = ? ORDER BY url", (digest,)))
        holders = tuple(r[0] for r in db.execute("SELECT peer FROM holders WHERE digest = ? ORDER BY peer", (digest,)))
        return CacheEntry(
            digest,
            str(row[1]),
            int(row[2]),  # type: ignore[call-overload]
            str(row[3]),
            float(row[4]),  # type: ignore[arg-type]
            float(row[5]),  # type: ignore[arg-type]
            bool(row[6]),
            bool(row[7]),
            str(row[8]),
            in_use,
            sources,
            holders,
        )

    def get(self, digest: str) -> CacheEntry | None:
        with self._lock:
            db = self._conn()
            row = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE digest = ?", (digest,)).fetchone()
            return None if row is None else self._entry(db, row)

    def by_sha256(self, sha256: str) -> CacheEntry | None:
        with self._lock:
            db = self._conn()
            row = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE sha256 = ? ORDER BY cached DESC LIMIT 1", (sha256,)
            ).fetchone()
            return None if row is None else self._entry(db, row)

    def by_prefix(self, column: str, prefix: str, *, limit: int) -> list[CacheEntry]:
        """Entries whose ``column`` (``digest`` or ``sha256``) begins with ``prefix`` (lowercase hex), at
        most ``limit``, by id."""
        if column not in ("digest", "sha256"):
            raise ValueError(f"not an id column: {column}")
        # A range rather than LIKE: it uses the column's index, and 'g' sorts after every hex digit.
        with self._lock:
            db = self._conn()
            rows = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE {column} >= ? AND {column} < ?"
                f" ORDER BY {column}, digest LIMIT ?",
                (prefix, prefix + "g", limit),
            ).fetchall()
            return [self._entry(db, row) for row in rows]

    def known_sha256(self, prefix: str, *, limit: int) -> list[KnownFile]:
        """Files known by their SHA-256 only whose SHA-256 begins with ``prefix`` (lowercase hex), at most
        ``limit``, by SHA-256."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT sha256, name, size, added FROM known_sha256 WHERE sha256 >= ? AND sha256 < ?"
                    " ORDER BY sha256 LIMIT ?",
                    (prefix, prefix + "g", limit),
                )
                .fetchall()
            )
        return [KnownFile(str(h), str(n), int(z), float(a)) for h, n, z, a in rows]

    def by_url(self, url: str) -> CacheEntry | None:
        """The cached entry last fetched from ``url``, if any."""
        with self._lock:
            db = self._conn()
            row = db.execute(
                f"SELECT {', '.join('e.' + c for c in _ENTRY_COLUMNS.split(', '))} FROM entries e"
                " JOIN sources s ON s.digest = e.digest WHERE s.url = ? AND e.cached = 1"
                " ORDER BY e.added DESC LIMIT 1",
                (url,),
            ).fetchone()
            return None if row is None else self._entry(db, row)

    def by_task(self, task_id: str) -> CacheEntry | None:
        """The cached entry seeded under the swarm task ``task_id``, if any."""
        with self._lock:
            db = self._conn()
            row = db.execute(
                f"SELECT {', '.join('e.' + c for c in _ENTRY_COLUMNS.split(', '))} FROM entries e"
                " JOIN tasks t ON t.digest = e.digest WHERE t.task_id = ? AND e.cached = 1",
                (task_id,),
            ).fetchone()
            return None if row is None else self._entry(db, row)

    def by_private_key(self, key: str) -> CacheEntry | None:
        """The cached entry last fetched under the private ``key`` (a URL with its origin headers), if any."""
        with self._lock:
            db = self._conn()
            row = db.execute(
                f"SELECT {', '.join('e.' + c for c in _ENTRY_COLUMNS.split(', '))} FROM entries e"
                " JOIN private p ON p.digest = e.digest WHERE p.key = ? AND e.cached = 1"
                " ORDER BY e.added DESC LIMIT 1",
                (key,),
            ).fetchone()
            return None if row is None else self._entry(db, row)

    def private_keys(self, digest: str) -> set[str]:
        """The private keys of an entry: empty for content anyone may have (see the table's rule)."""
        with self._lock:
            rows = self._conn().execute("SELECT key FROM private WHERE digest = ?", (digest,)).fetchall()
        return {str(r[0]) for r in rows}

    def private_digests(self) -> set[str]:
        with self._lock:
            return {str(r[0]) for r in self._conn().execute("SELECT DISTINCT digest FROM private")}

    def entries(self, *, cached_only: bool = False, since: float | None = None) -> list[CacheEntry]:
        query = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE 1=1"
        args: list[object] = []
        if cached_only:
            query += " AND cached = 1"
        if since is not None:
            query += " AND added >= ?"
            args.append(since)
        with self._lock:
            db = self._conn()
            return [self._entry(db, row) for row in db.execute(query + " ORDER BY added, digest", args).fetchall()]

    def used(self, db: sqlite3.Connection | None = None) -> tuple[int, int, int]:
        """(bytes of cached files, bytes reserved by downloads in progress, number of cached files)."""
        with self._lock:
            db = db or self._conn()
            size, count = db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM entries WHERE cached = 1").fetchone()
            (reserved,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM reservations").fetchone()
        return int(size), int(reserved), int(count)

    def eviction_candidates(self, db: sqlite3.Connection) -> list[tuple[str, int, float, bool, bool]]:
        rows = db.execute(
            "SELECT e.digest, e.size, e.last_access, e.pinned,"
            " EXISTS (SELECT 1 FROM uses u WHERE u.digest = e.digest) FROM entries e WHERE e.cached = 1"
        ).fetchall()
        return [(str(d), int(s), float(t), bool(p), bool(u)) for d, s, t, p, u in rows]

    def tasks(self) -> list[SeededTask]:
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT t.task_id, t.digest, t.url, t.generation, t.length, t.etag, t.last_modified FROM tasks t"
                    " JOIN entries e ON e.digest = t.digest WHERE e.cached = 1"
                )
                .fetchall()
            )
        return [SeededTask(*row) for row in rows]

    def cached_digests(self) -> set[str]:
        with self._lock:
            return {str(r[0]) for r in self._conn().execute("SELECT digest FROM entries WHERE cached = 1")}

    # -- writing -------------------------------------------------------------------------------------

    def insert(self, db: sqlite3.Connection, entry: CacheEntry) -> None:
        """Add or refresh an entry as cached (inside a transaction); its sources become its URLs' newest."""
        db.execute(
            f"INSERT INTO entries ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)"
            " ON CONFLICT (digest) DO UPDATE SET cached = 1, last_access = excluded.last_access,"
            " pinned = MAX(pinned, excluded.pinned), verified_stat = excluded.verified_stat,"
            " sha256 = excluded.sha256, size = excluded.size",
            (
                entry.digest,
                entry.sha256,
                entry.size,
                entry.name,
                entry.added,
                entry.last_access,
                int(entry.pinned),
                entry.verified_stat,
            ),
        )
        for url in entry.sources:
            db.execute("DELETE FROM sources WHERE url = ? AND digest != ?", (url, entry.digest))
            db.execute("INSERT OR IGNORE INTO sources VALUES (?, ?)", (entry.digest, url))
        if entry.sha256:
            db.execute("DELETE FROM known_sha256 WHERE sha256 = ?", (entry.sha256,))
        if entry.sources:
            # The same bytes came from a URL without credentials: they are nobody's secret any more.
            db.execute("DELETE FROM private WHERE digest = ?", (entry.digest,))

    def insert_private(self, db: sqlite3.Connection, digest: str, key: str) -> None:
        """Record that ``digest`` was fetched under the private ``key`` (inside a transaction)."""
        db.execute("DELETE FROM private WHERE key = ? AND digest != ?", (key, digest))
        db.execute("INSERT OR IGNORE INTO private VALUES (?, ?)", (digest, key))

    def insert_known(self, db: sqlite3.Connection, entry: CacheEntry) -> bool:
        """Record an entry another node holds (an import); an entry already here keeps its state. True when
        it was new."""
        cursor = db.execute(
            f"INSERT OR IGNORE INTO entries ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, 0, '')",
            (entry.digest, entry.sha256, entry.size, entry.name, entry.added, entry.added),
        )
        for url in entry.sources:
            db.execute("INSERT OR IGNORE INTO sources VALUES (?, ?)", (entry.digest, url))
        for peer in entry.holders:
            db.execute("INSERT OR IGNORE INTO holders VALUES (?, ?)", (entry.digest, peer))
        if entry.sha256:
            db.execute("DELETE FROM known_sha256 WHERE sha256 = ?", (entry.sha256,))
        return cursor.rowcount == 1

    def insert_known_sha256(self, db: sqlite3.Connection, known: KnownFile) -> bool:
        """Record a file known by its SHA-256 only (inside a transaction), unless an entry or a known file
        has that SHA-256 already. True when it was new."""
        if db.execute("SELECT 1 FROM entries WHERE sha256 = ? LIMIT 1", (known.sha256,)).fetchone() is not None:
            return False
        row = (known.sha256, known.name, known.size, known.added)
        cursor = db.execute("INSERT OR IGNORE INTO known_sha256 VALUES (?, ?, ?, ?)", row)
        return cursor.rowcount == 1

    def mark_evicted(self, db: sqlite3.Connection, digest: str) -> None:
        """The file is gone from disk; the row stays (with its sources) so the id can be fetched again."""
        db.execute("UPDATE entries SET cached = 0, verified_stat = '' WHERE digest = ?", (digest,))
        db.execute("DELETE FROM tasks WHERE digest = ?", (digest,))

    def touch(self, digest: str, now: float) -> None:
        with self._lock:
            self._conn().execute("UPDATE entries SET last_access = ? WHERE digest = ?", (now, digest))

    def set_pinned(self, digest: str, pinned: bool) -> bool:
        with self._lock:
            cursor = self._conn().execute("UPDATE entries SET pinned = ? WHERE digest = ?", (int(pinned), digest))
            return cursor.rowcount == 1

    def sha256_pending(self) -> list[str]:
        """Digests of cached entries whose SHA-256 is not known yet."""
        with self._lock:
            rows = self._conn().execute("SELECT digest FROM entries WHERE cached = 1 AND sha256 = ''")
            return [str(r[0]) for r in rows]

    def set_sha256(self, db: sqlite3.Connection, digest: str, sha256: str) -> bool:
        """Record a cached entry's SHA-256 (inside a transaction); False when it is no longer cached."""
        cursor = db.execute("UPDATE entries SET sha256 = ? WHERE digest = ? AND cached = 1", (sha256, digest))
        if cursor.rowcount == 1:
            db.execute("DELETE FROM known_sha256 WHERE sha256 = ?", (sha256,))
        return cursor.rowcount == 1

    def set_verified(self, digest: str, stat_key: str) -> None:
        with self._lock:
            self._conn().execute("UPDATE entries SET verified_stat = ? WHERE digest = ?", (stat_key, digest))

    def record_task(self, task: SeededTask) -> None:
        with self._lock:
            self._conn().execute(
                "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task.task_id, task.digest, task.url, task.generation, task.length, task.etag, task.last_modified),
            )

    def forget_task(self, task_id: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    def add_use(self, digest: str) -> int:
        with self._lock:
            cursor = self._conn().execute(
                "INSERT INTO uses (digest, pid, since) VALUES (?, ?, ?)", (digest, os.getpid(), time.time())
            )
            return int(cursor.lastrowid or 0)

    def end_use(self, use_id: int) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM uses WHERE id = ?", (use_id,))

    def add_reservation(self, db: sqlite3.Connection, size: int) -> int:
        cursor = db.execute(
            "INSERT INTO reservations (size, pid, since) VALUES (?, ?, ?)", (size, os.getpid(), time.time())
        )
        return int(cursor.lastrowid or 0)

    def end_reservation(self, reservation_id: int, db: sqlite3.Connection | None = None) -> None:
        with self._lock:
            (db or self._conn()).execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def clear_dead(self) -> int:
        """Drop uses and reservations of processes that no longer run; the number dropped."""
        dropped = 0
        with self.transaction() as db:
            for table in ("uses", "reservations"):
                for row_id, pid in db.execute(f"SELECT id, pid FROM {table}").fetchall():
                    if not pid_alive(int(pid)):
                        db.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
                        dropped += 1
        return dropped
