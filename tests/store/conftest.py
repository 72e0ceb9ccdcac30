"""The backend fixture of the store contract suite: SQLite, PostgreSQL and MySQL/MariaDB.

Each test gets the plain URL of an empty database: every table of the shoal schema (and
schema_migrations) is dropped first, so runs are isolated. A server that cannot be reached fails the
test under CI (``CI=true``) and skips it, with the reason, elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from pathlib import Path

import pytest

from shoal.storage.db import create_engine
from shoal.storage.schema import metadata

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

# backend -> a URL that answered, or the reason none did. Probed once per session.
_probed: dict[str, str | BaseException] = {}


async def _probe(backend: str) -> str | BaseException:
    if backend not in _probed:
        failure: BaseException = RuntimeError("no candidate URL")
        for url in SERVERS[backend]:
            engine = create_engine(url)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT), engine.connect():
                    pass
            except Exception as exc:
                failure = exc
                continue
            finally:
                await engine.dispose()
            _probed[backend] = url
            break
        else:
            _probed[backend] = failure
    return _probed[backend]


async def drop_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
    finally:
        await engine.dispose()


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
