"""Database URLs and engines.

Users write plain URLs (``sqlite:///var/lib/shoal/tracker.db``, ``postgresql://user@host/db``,
``mysql://root@host/db``); Shoal picks the async driver itself: aiosqlite, asyncpg, aiomysql. A URL that
already names a driver is used as given. SQLite runs in WAL mode so readers never block the writer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shoal.core.errors import UsageError

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


def async_url(url: str) -> str:
    """Map a plain database URL to its async-driver form; raise UsageError for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(
            f"malformed database URL {url!r} (try sqlite:///path, postgresql://..., mysql://...)"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _DRIVERS:
        raise UsageError(f"unsupported database {backend!r} in {url!r} (use sqlite, postgresql or mysql)")
    if not driver:
        parsed = parsed.set(drivername=_DRIVERS[backend])
    if parsed.drivername.startswith("sqlite") and not parsed.database:
        raise UsageError(f"a SQLite URL needs a file path: sqlite:///path/to/tracker.db, not {url!r}")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    full = async_url(url)
    if full.startswith("sqlite"):
        engine = create_async_engine(full)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(full, pool_pre_ping=True, pool_size=10, max_overflow=10)
