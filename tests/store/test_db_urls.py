"""Plain database URLs map to Shoal's async drivers (storage.db)."""

from __future__ import annotations

import pytest

from shoal.core.errors import UsageError
from shoal.storage.db import async_url


@pytest.mark.parametrize(
    ("plain", "full"),
    [
        ("sqlite:///var/lib/shoal/tracker.db", "sqlite+aiosqlite:///var/lib/shoal/tracker.db"),
        ("sqlite:////abs/tracker.db", "sqlite+aiosqlite:////abs/tracker.db"),
        ("postgresql://shoal@db.example/tracker", "postgresql+asyncpg://shoal@db.example/tracker"),
        ("postgres://shoal@db.example:6543/tracker", "postgresql+asyncpg://shoal@db.example:6543/tracker"),
        ("mysql://root@127.0.0.1:3306/test", "mysql+aiomysql://root@127.0.0.1:3306/test"),
        ("mariadb://root@127.0.0.1/test", "mysql+aiomysql://root@127.0.0.1/test"),
        ("postgresql://u:s3cr%40t@h/db", "postgresql+asyncpg://u:s3cr%40t@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db"),
    ],
)
def test_plain_urls_get_an_async_driver(plain: str, full: str) -> None:
    assert async_url(plain) == full


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "malformed"),
        ("not a url", "malformed"),
        ("/var/lib/shoal/tracker.db", "malformed"),
        ("oracle://scott@h/db", "unsupported"),
        ("redis://127.0.0.1:6379/0", "unsupported"),
        ("sqlite://", "file path"),
        ("sqlite:///", "file path"),
    ],
)
def test_bad_urls_are_usage_errors(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        async_url(url)
