"""The backend fixture of the store contract suite: SQLite, PostgreSQL and MySQL/MariaDB.

Each test gets the plain URL of an empty database: every table of the shoal schema (and
schema_migrations) is dropped first, so runs are isolated. A server that cannot be reached fails the
test under CI (``CI=true``) and skips it, with the reason, elsewhere.

Each test process has a database of its own on each server, ``shoal_test_PID``, created on first use
(through the server's ``test`` database) and dropped when the session ends: xdist's workers, and other
runs of the suite on the same machine, never drop each other's tables. A database left by a run that was
killed is dropped by the next run that finds its process gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, make_url, text

from shoal.storage.cluster_store import ClusterStore
from shoal.storage.db import create_engine
from shoal.storage.schema import metadata
from shoal.storage.tracker_store import TrackerStore

# See tests/unit/conftest.py: keeps a failing property test's report readable under filterwarnings=error.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401

SERVERS: dict[str, list[str]] = {
    "postgresql": ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"],
    "mysql": ["mysql://root@127.0.0.1:3306/test"],
}
BACKENDS = ["sqlite", *SERVERS]
CONNECT_TIMEOUT = 10.0

# backend -> the URL of this process's database on it, or the reason no server answered. Once per session.
_probed: dict[str, str | BaseException] = {}
PREFIX = "shoal_test_"


async def _probe(backend: str) -> str | BaseException:
    if backend not in _probed:
        failure: BaseException = RuntimeError("no candidate URL")
        for url in SERVERS[backend]:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    _probed[backend] = await _own_database(url)
            except Exception as exc:
                failure = exc
                continue
            break
        else:
            _probed[backend] = failure
    return _probed[backend]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _own_database(url: str) -> str:
    """Create this process's database on the server of ``url`` (dropping those of processes that are gone);
    return its URL."""
    own = f"{PREFIX}{os.getpid()}"
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql":
                listed = "SELECT datname FROM pg_database WHERE datname LIKE 'shoal\\_test\\_%'"
            else:
                listed = "SHOW DATABASES LIKE 'shoal\\_test\\_%'"
            for (name,) in (await conn.execute(text(listed))).all():
                pid = name.removeprefix(PREFIX)
                if pid.isdigit() and not _alive(int(pid)):
                    with contextlib.suppress(Exception):  # another run may be dropping it too
                        await conn.execute(text(_drop(engine.dialect.name, name)))
            await conn.execute(text(_drop(engine.dialect.name, own)))  # a stale one of a reused pid
            await conn.execute(text(f"CREATE DATABASE {own}"))
    finally:
        await engine.dispose()
    return make_url(url).set(database=own).render_as_string(hide_password=False)


def _drop(dialect: str, name: str) -> str:
    # PostgreSQL refuses to drop a database with open connections; FORCE ends those of a killed run.
    return f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if dialect == "postgresql" else "")


@pytest.fixture(scope="session", autouse=True)
def _drop_own_databases() -> Iterator[None]:
    yield
    created = [url for url in _probed.values() if isinstance(url, str)]

    async def drop_all() -> None:
        for url in created:
            admin = make_url(url).set(database="test")
            engine = create_engine(admin.render_as_string(hide_password=False))
            try:
                async with engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(text(_drop(engine.dialect.name, str(make_url(url).database))))
            finally:
                await engine.dispose()

    if created:
        asyncio.run(drop_all())


async def drop_schema(url: str) -> None:
    """Drop every table of the database: the schema's, and those only an earlier version had (a test that
    built one and failed before migrating leaves them)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(_drop_the_rest)
    finally:
        await engine.dispose()


def _drop_the_rest(sync: Any) -> None:
    found = MetaData()
    found.reflect(sync)
    found.drop_all(sync)


@pytest.fixture(params=[pytest.param(b, marks=pytest.mark.backend) for b in BACKENDS])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The plain URL of an empty database on one backend."""
    backend: str = request.param
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'tracker.db'}"
    found = await _probe(backend)
    if isinstance(found, BaseException):
        reason = f"{backend} server unreachable at {' or '.join(SERVERS[backend])}: {found!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    await drop_schema(found)
    return found


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[tuple[ClusterStore, ClusterStore]]:
    """Two trackers' views of one database, each through its own engine as two processes would have. Not on
    SQLite: one process owns a SQLite database, and a tracker on it has no member row."""
    if db_url.startswith("sqlite"):
        pytest.skip("trackers share PostgreSQL or MySQL databases, not SQLite files")
    async with TrackerStore(db_url) as first, TrackerStore(db_url) as second:
        yield ClusterStore(first), ClusterStore(second)
