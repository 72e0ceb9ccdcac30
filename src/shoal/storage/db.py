"""Database URLs and engines.

Users write plain URLs (``sqlite:///var/lib/shoal/tracker.db``, ``postgresql://user@host/db``,
``mysql://root@host/db``); Shoal picks the async driver itself: aiosqlite, asyncpg, aiomysql. A URL that
already names a driver is used as given. SQLite runs in WAL mode so readers never block the writer; the
tracker's write transactions on a SQLite file run whole in a worker thread (``write_transaction``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shoal.core.errors import StoreError, UsageError
from shoal.core.redact import redact_url
from shoal.storage.migrations import migrate

T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """One line on a database failure: the driver's own words, without SQLAlchemy's wrapping (the driver's
    class name, the statement, the "Background on this error" link on a second line)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        args = exc.orig.args
        # PyMySQL's errors are (code, message); asyncpg's and sqlite3's a message alone.
        text = str(args[1]) if len(args) == 2 and isinstance(args[0], int) else str(exc.orig)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc)
    return " ".join(text.split()) or type(exc).__name__


def safe_url(url: str) -> str:
    """``url`` for messages and logs: its password, if any, as ``***`` (also in a URL SQLAlchemy cannot
    read, whose user-info part is masked as text)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number
        return redact_url(url)


_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}
_EXTRAS = {"asyncpg": "postgresql", "aiomysql": "mysql"}
"""The drivers that are extras of the package (pyproject.toml), so that a peer host does not install them."""


def async_url(url: str) -> str:
    """Map a plain database URL to its async-driver form; raise UsageError for anything else."""
    try:
        parsed = make_url(url)
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError(f"port {parsed.port}")
    except (ArgumentError, ValueError):
        raise UsageError(
            f"malformed database URL {safe_url(url)!r} (try sqlite:///path, postgresql://..., mysql://...)"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _DRIVERS:
        raise UsageError(f"unsupported database {backend!r} in {safe_url(url)!r} (use sqlite, postgresql or mysql)")
    if not driver:
        parsed = parsed.set(drivername=_DRIVERS[backend])
    if parsed.drivername.startswith("sqlite") and not parsed.database:
        raise UsageError(f"a SQLite URL needs a file path: sqlite:///path/to/tracker.db, not {safe_url(url)!r}")
    _require_driver(parsed.drivername.partition("+")[2])
    return parsed.render_as_string(hide_password=False)


def _require_driver(driver: str) -> None:
    """A UsageError naming the extra to install when a URL's driver is one of the package's extras and is
    not installed (SQLAlchemy's own error would be a traceback at the first connection)."""
    extra = _EXTRAS.get(driver)
    if extra is None:
        return
    try:
        importlib.import_module(driver)
    except ImportError:
        raise UsageError(
            f"the {extra} database driver ({driver}) is not installed: pip install 'shoal[{extra}]'"
        ) from None


async def uncancelled(work: Awaitable[T]) -> T:
    """Await ``work`` (a database call) such that a cancelled caller (an announce whose client left) does not
    cancel it: a query cancelled mid-flight makes SQLAlchemy drop its connection, and asyncpg then logs
    "Future exception was never retrieved" for the reply it lost. The call runs to its end and its connection
    goes back to the pool; the caller gets CancelledError at once, and what the call returns or raises is
    dropped."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieved)
    return await asyncio.shield(task)


def _retrieved(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: a failure nobody awaited any more is not logged as unhandled


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str, *, pool_size: int = 10, **options: Any) -> AsyncEngine:
    """An engine on ``url``; on a server database, with a pool of ``pool_size`` connections (and as many
    more while it is busy, unless it is one: a dedicated connection). ``options`` go to SQLAlchemy's
    ``create_async_engine`` (``isolation_level``, ``pool_pre_ping``)."""
    full = async_url(url)
    if full.startswith("sqlite"):
        engine = create_async_engine(full, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    overflow = 0 if pool_size == 1 else pool_size
    return create_async_engine(
        full, **{"pool_pre_ping": True, "max_overflow": overflow, **options}, pool_size=pool_size
    )


def sqlite_writer_engine(engine: AsyncEngine) -> Engine | None:
    """A plain (pysqlite) engine on the same SQLite file, for write transactions run whole in a worker
    thread; None for other databases and for in-memory SQLite (a second engine would open another one)."""
    url = engine.url
    database = url.database or ""
    if engine.dialect.name != "sqlite" or not database or ":memory:" in database or url.query.get("mode") == "memory":
        return None
    # Its connections are used by whichever executor thread runs the transaction (one at a time).
    writer = create_sync_engine(url.set(drivername="sqlite+pysqlite"), connect_args={"check_same_thread": False})
    event.listen(writer, "connect", _sqlite_pragmas)
    return writer


class SqlStore:
    """A store over one database: ``async with`` opens the engine and brings the schema up to date
    (shoal.storage.migrations, which every store shares); ``connection()`` maps database
    failures to StoreError. The tracker's and the mirror manager's stores build on it."""

    def __init__(self, url: str, *, pool_size: int = 10, migrate: bool = True) -> None:
        """``pool_size``: the connections of a server database's pool (create_engine); ``migrate``: bring
        the schema up to date as it opens (False for a second store of a process whose first did)."""
        self.url = url
        self._pool_size = pool_size
        self._migrate = migrate
        self._engine: AsyncEngine | None = None
        # SQLite takes one writer at a time, and a second one waits in its busy handler, which sleeps in
        # steps of up to 100 ms. Writers of this process queue here instead and start the moment the
        # previous one commits (see connection()).
        self._sqlite_writer: asyncio.Lock | None = None
        self._sync_writer: Engine | None = None
        self._autocommit: AsyncEngine | None = None  # PostgreSQL: driver_call's connection, once called

    async def __aenter__(self) -> Self:
        self._engine = create_engine(self.url, pool_size=self._pool_size)
        self._sqlite_writer = asyncio.Lock() if self._engine.dialect.name == "sqlite" else None
        try:
            if self._migrate:
                await migrate(self._engine)
        except (SQLAlchemyError, OSError) as exc:
            await self._engine.dispose()
            self._engine = None
            raise StoreError(f"cannot open the database {safe_url(self.url)}: {describe(exc)}") from exc
        self._sync_writer = sqlite_writer_engine(self._engine)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sync_writer is not None:
            self._sync_writer.dispose()
            self._sync_writer = None
        if self._autocommit is not None:
            await self._autocommit.dispose()
            self._autocommit = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"the store is not open; use 'async with {type(self).__name__}(url)'")
        return self._engine

    @contextlib.asynccontextmanager
    async def connection(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (a transaction when ``write``); database failures become StoreError. On SQLite,
        write transactions of this process run one at a time."""
        serial = self._sqlite_writer if write and self._sqlite_writer is not None else contextlib.nullcontext()
        try:
            async with serial, self.engine.begin() if write else self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database error: {describe(exc)}") from exc

    @property
    def driver_calls(self) -> bool:
        """Whether :meth:`driver_call` is open to this store (PostgreSQL)."""
        return self.engine.dialect.name == "postgresql"

    async def driver_call(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Await ``work`` on the PostgreSQL driver's own connection (asyncpg's), in autocommit: each statement
        is its own transaction, and goes to the server in one round trip, without SQLAlchemy's BEGIN and
        COMMIT around it or its per-statement machinery on the event loop. The connection is one of its own,
        not pinged before each call as the pool's are (a round trip each): one the server closed (a restart)
        is known closed by the driver, and replaced. Database failures become StoreError."""
        import asyncpg  # the driver of every PostgreSQL URL (async_url)

        if not self.driver_calls:
            raise RuntimeError(f"driver_call is for PostgreSQL, not {self.engine.dialect.name}")
        if self._autocommit is None:
            self._autocommit = create_engine(self.url, pool_size=1, isolation_level="AUTOCOMMIT", pool_pre_ping=False)
        try:
            async with self._autocommit.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                if driver is None or driver.is_closed():
                    await conn.invalidate()  # the next use connects afresh
                    driver = (await conn.get_raw_connection()).driver_connection
                return await work(driver)
        except (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"database error: {describe(exc)}") from exc

    async def write_transaction(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction and commit; database failures become StoreError.

        On a SQLite file the whole transaction runs in a worker thread on a plain sqlite3 connection: one
        thread hop, where aiosqlite makes several for each statement (cursor, execute, close), which had
        been most of the tracker's CPU time per announce. Other databases run ``work`` on the async
        driver (``run_sync``). A caller cancelled meanwhile does not stop the thread: its transaction may
        still commit, and the next writer waits for it to end."""
        if self._sync_writer is None:
            async with self.connection(write=True) as conn:
                return await conn.run_sync(work)
        writer, serial = self._sync_writer, self._sqlite_writer
        assert serial is not None

        def transaction() -> T:
            with writer.begin() as conn:
                return work(conn)

        def release(done: asyncio.Future[T]) -> None:
            serial.release()  # when the thread is done, however many times the caller was cancelled
            if not done.cancelled():
                done.exception()  # retrieved: a cancelled caller's failure is not logged as unhandled

        try:
            await serial.acquire()
            done = asyncio.ensure_future(asyncio.to_thread(transaction))
            done.add_done_callback(release)
            return await asyncio.shield(done)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database error: {describe(exc)}") from exc
