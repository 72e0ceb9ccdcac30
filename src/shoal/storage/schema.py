"""The tracker's tables and the migrations that build them.

Migrations are an ordered list; each runs once in its own transaction and is recorded in
``schema_migrations``. A new column or table is a new entry at the end; entries are never edited.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", Float, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("length", BigInteger, nullable=True),
    Column("piece_length", Integer, nullable=True),
    Column("etag", String(512), nullable=False, default=""),
    Column("last_modified", String(128), nullable=False, default=""),
    Column("range_ok", Boolean, nullable=False, default=True),
    Column("hash_seq", Integer, nullable=False, default=0),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)

piece_hashes = Table(
    "piece_hashes",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("piece", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)

peers = Table(
    "peers",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("peer_id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("site", String(64), nullable=False, default=""),
    Column("rack", String(64), nullable=False, default=""),
    Column("bitfield", LargeBinary, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("bad", Boolean, nullable=False, default=False),
)

leases = Table(
    "leases",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("piece", Integer, primary_key=True, autoincrement=False),
    Column("peer_id", String(64), nullable=False),
    Column("expires", Float, nullable=False),
)

Migration = Callable[[AsyncConnection], Awaitable[None]]


async def _v1_initial(conn: AsyncConnection) -> None:
    await conn.run_sync(
        lambda sync: metadata.create_all(sync, tables=[tasks, piece_hashes, peers, leases])
    )


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "tasks, piece hashes, peers, leases", _v1_initial),
]


async def migrate(engine: AsyncEngine) -> int:
    """Bring the schema up to date; return the version it is at."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: metadata.create_all(sync, tables=[schema_migrations]))
    async with engine.connect() as conn:
        applied = set((await conn.execute(select(schema_migrations.c.version))).scalars())
    for version, description, step in MIGRATIONS:
        if version in applied:
            continue
        async with engine.begin() as conn:
            await step(conn)
            await conn.execute(
                insert(schema_migrations).values(version=version, description=description, applied_at=time.time())
            )
    return MIGRATIONS[-1][0]
