"""The migrations that build the tracker's tables (shoal.storage.schema has the tables as they are now).

``MIGRATIONS`` is an ordered list, each entry run once in its own transaction and recorded in
``schema_migrations``.

The rules of the list:

- Entries are never edited, once a release has run them: a database that ran an entry keeps what that
  entry built, and a fresh one must get the same.
- Each entry builds what its version had from definitions frozen inside it (the Tables it creates, declared
  in a MetaData of its own with the types of its day; the ALTERs it runs, written out), never from the
  tables of shoal.storage.schema, which change as the schema grows.
- A new column or table is a new entry at the end, with its own frozen definition, and the same change
  to the tables of shoal.storage.schema.

One process migrates a database at a time: on PostgreSQL and MySQL/MariaDB, which several trackers share,
:func:`migrate` holds a lock of the server's (an advisory lock, ``GET_LOCK``) while it reads and runs the
steps, so trackers started at once on a new database do not all create the tables (all but one failed at
start, on a duplicate type or table). A SQLite file belongs to one tracker (storage.db_lock).

tests/store/test_schema.py checks on every backend that a fresh database and one upgraded from each
earlier version both end up equal to the tables of shoal.storage.schema.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shoal.storage.schema import schema_migrations

Migration = Callable[[AsyncConnection], Awaitable[None]]

# The frozen definitions below declare what each version's DDL built, and only that: Python-side defaults,
# and the bind handling of Blob, belong to the tables of shoal.storage.schema, which the stores query. A type
# is written as the generic type of its day (Float, String(64)), not through that module's aliases (Time,
# Key), which may change.


def _schema_migrations_table(frozen: MetaData) -> Table:
    # As migrate() first created it, alongside v1: its time was a Float, a 4-byte FLOAT on MySQL until v2.
    return Table(
        "schema_migrations",
        frozen,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("description", String(200), nullable=False),
        Column("applied_at", Float, nullable=False),
    )


async def _v1_initial(conn: AsyncConnection) -> None:
    # Times were Float (a 4-byte FLOAT on MySQL, fixed by v2) and peer ids a plain String (case-insensitive
    # on MySQL, fixed by v5).
    frozen = MetaData()
    Table(
        "tasks",
        frozen,
        Column("task_id", String(64), primary_key=True),
        Column("url", Text, nullable=False),
        Column("generation", Integer, nullable=False),
        Column("length", BigInteger, nullable=True),
        Column("piece_length", Integer, nullable=True),
        Column("etag", String(512), nullable=False),
        Column("last_modified", String(128), nullable=False),
        Column("range_ok", Boolean, nullable=False),
        Column("hash_seq", Integer, nullable=False),
        Column("created", Float, nullable=False),
        Column("updated", Float, nullable=False),
    )
    Table(
        "piece_hashes",
        frozen,
        Column("task_id", String(64), primary_key=True),
        Column("piece", Integer, primary_key=True, autoincrement=False),
        Column("hash", String(64), nullable=False),
        Column("seq", Integer, nullable=False),
    )
    Table(
        "peers",
        frozen,
        Column("task_id", String(64), primary_key=True),
        Column("peer_id", String(64), primary_key=True),
        Column("host", String(255), nullable=False),
        Column("port", Integer, nullable=False),
        Column("site", String(64), nullable=False),
        Column("rack", String(64), nullable=False),
        Column("bitfield", LargeBinary, nullable=False),
        Column("generation", Integer, nullable=False),
        Column("last_seen", Float, nullable=False),
        Column("bad", Boolean, nullable=False),
    )
    Table(
        "leases",
        frozen,
        Column("task_id", String(64), primary_key=True),
        Column("piece", Integer, primary_key=True, autoincrement=False),
        Column("peer_id", String(64), nullable=False),
        Column("expires", Float, nullable=False),
    )
    await conn.run_sync(frozen.create_all)


async def _v2_double_times(conn: AsyncConnection) -> None:
    # Databases that v1 built on MySQL hold times as 4-byte FLOATs. Elsewhere v1's Float already holds
    # 8 bytes (REAL on SQLite, FLOAT = double precision on PostgreSQL).
    if conn.dialect.name != "mysql":
        return
    columns = [
        ("schema_migrations", "applied_at"),
        ("tasks", "created"),
        ("tasks", "updated"),
        ("peers", "last_seen"),
        ("leases", "expires"),
    ]
    for table, column in columns:
        await conn.execute(text(f"ALTER TABLE {table} MODIFY {column} DOUBLE NOT NULL"))


async def _v3_pools(conn: AsyncConnection) -> None:
    # Member ids were a plain String (case-insensitive on MySQL, fixed by v5).
    frozen = MetaData()
    Table(
        "pools",
        frozen,
        Column("name", String(64), primary_key=True),
        Column("token_hash", String(64), nullable=True),
        Column("created", Double, nullable=False),
    )
    Table(
        "pool_members",
        frozen,
        Column("pool", String(64), primary_key=True),
        Column("member_id", String(64), primary_key=True),
        Column("name", String(255), nullable=False),
        Column("url", String(255), nullable=False),
        Column("site", String(64), nullable=False),
        Column("rack", String(64), nullable=False),
        Column("free", BigInteger, nullable=False),
        Column("joined", Double, nullable=False),
        Column("last_seen", Double, nullable=False),
    )
    Table(
        "pool_jobs",
        frozen,
        Column("job_id", String(16), primary_key=True),
        Column("pool", String(64), nullable=False, index=True),
        Column("url", Text, nullable=False),
        Column("dest", Text, nullable=True),
        Column("replicas", Integer, nullable=True),
        Column("digest", String(80), nullable=True),
        Column("status", String(16), nullable=False),
        Column("error", Text, nullable=False),
        Column("created", Double, nullable=False),
        Column("updated", Double, nullable=False),
    )
    Table(
        "pool_assignments",
        frozen,
        Column("job_id", String(16), primary_key=True),
        Column("member_id", String(64), primary_key=True),
        Column("status", String(16), nullable=False),
        Column("done", BigInteger, nullable=False),
        Column("total", BigInteger, nullable=False),
        Column("rate", Double, nullable=False),
        Column("from_origin", BigInteger, nullable=False),
        Column("from_peers", BigInteger, nullable=False),
        Column("error", Text, nullable=False),
        Column("assigned", Double, nullable=False),
        Column("updated", Double, nullable=False),
    )
    await conn.run_sync(frozen.create_all)


async def _v4_mirror(conn: AsyncConnection) -> None:
    # Job and worker names were a plain String (case-insensitive on MySQL, fixed by v5).
    frozen = MetaData()
    Table(
        "mirror_jobs",
        frozen,
        Column("name", String(64), primary_key=True),
        Column("spec", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("last_update", Double, nullable=True),
        Column("last_started", Double, nullable=True),
        Column("last_ended", Double, nullable=True),
        Column("error_msg", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("retry", Boolean, nullable=False),
        Column("worker", String(64), nullable=True),
        Column("run_id", String(64), nullable=True),
        Column("next_schedule", Double, nullable=True),
        Column("size", BigInteger, nullable=False),
        Column("version", String(64), nullable=True),
        Column("updated", Double, nullable=False),
    )
    Table(
        "mirror_workers",
        frozen,
        Column("name", String(64), primary_key=True),
        Column("url", Text, nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("registered", Double, nullable=False),
        Column("last_seen", Double, nullable=False),
    )
    await conn.run_sync(frozen.create_all)


async def _v5_case_sensitive_keys(conn: AsyncConnection) -> None:
    # Databases built on MySQL before the identifiers were Key compare them case-insensitively.
    if conn.dialect.name != "mysql":
        return
    columns = [
        ("peers", "peer_id", "NOT NULL"),
        ("leases", "peer_id", "NOT NULL"),
        ("pool_members", "member_id", "NOT NULL"),
        ("pool_assignments", "member_id", "NOT NULL"),
        ("mirror_jobs", "name", "NOT NULL"),
        ("mirror_jobs", "worker", "NULL"),
        ("mirror_workers", "name", "NOT NULL"),
    ]
    for table, column, null in columns:
        await conn.execute(
            text(f"ALTER TABLE {table} MODIFY {column} VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin {null}")
        )


async def _v6_scope_bytes(conn: AsyncConnection) -> None:
    # What a member's download took in from its rack, other racks and other sites (core.messages.ScopeBytes).
    for column in ("from_rack", "from_racks", "from_sites"):
        await conn.execute(text(f"ALTER TABLE pool_assignments ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0"))


async def _v7_trackers(conn: AsyncConnection) -> None:
    frozen = MetaData()
    Table(
        "trackers",
        frozen,
        Column(
            "tracker_id",
            String(64).with_variant(mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql"),
            primary_key=True,
        ),
        Column("url", Text, nullable=False),
        Column("active_from", Double, nullable=False),
        Column("expires", Double, nullable=False),
    )
    cluster = Table("tracker_cluster", frozen, Column("id", Integer, primary_key=True, autoincrement=False))
    await conn.run_sync(frozen.create_all)
    await conn.execute(insert(cluster).values(id=1))


async def _v8_soft_state_in_memory(conn: AsyncConnection) -> None:
    # Peers and origin leases live in the tracker's memory from now on: what the tables hold is at most
    # one peer TTL old when a tracker of this version starts, and its peers announce again within an
    # interval. Piece hashes name their reporter.
    await conn.execute(text("DROP TABLE IF EXISTS leases"))
    await conn.execute(text("DROP TABLE IF EXISTS peers"))
    if conn.dialect.name == "mysql":
        key = "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin"
    else:
        key = "VARCHAR(64)"
    await conn.execute(text(f"ALTER TABLE piece_hashes ADD COLUMN reporter {key} NOT NULL DEFAULT ''"))


async def _v9_pool_owners(conn: AsyncConnection) -> None:
    # Every pool gets a token from now on (its owner's); whether it is private is its own column. Pools of
    # earlier versions had a token only when private.
    await conn.execute(text("ALTER TABLE pools ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE"))
    await conn.execute(text("ALTER TABLE pools ADD COLUMN allow TEXT NULL"))
    await conn.execute(text("UPDATE pools SET private = TRUE WHERE token_hash IS NOT NULL"))


async def _v10_push_digests(conn: AsyncConnection) -> None:
    # A push's digest may be of any algorithm `shoal get --digest` takes: "blake2b:" and 128 hex digits.
    match conn.dialect.name:
        case "postgresql":
            await conn.execute(text("ALTER TABLE pool_jobs ALTER COLUMN digest TYPE VARCHAR(160)"))
        case "mysql":
            await conn.execute(text("ALTER TABLE pool_jobs MODIFY digest VARCHAR(160) NULL"))
        case _:
            # SQLite keeps a column's declared type but cannot change it: the table is built again, its
            # rows copied over (SQLite's documented way for a change ALTER TABLE cannot make).
            await conn.execute(text("ALTER TABLE pool_jobs RENAME TO pool_jobs_v9"))
            await conn.execute(text("DROP INDEX IF EXISTS ix_pool_jobs_pool"))
            frozen = MetaData()
            Table(
                "pool_jobs",
                frozen,
                Column("job_id", String(16), primary_key=True),
                Column("pool", String(64), nullable=False, index=True),
                Column("url", Text, nullable=False),
                Column("dest", Text, nullable=True),
                Column("replicas", Integer, nullable=True),
                Column("digest", String(160), nullable=True),
                Column("status", String(16), nullable=False),
                Column("error", Text, nullable=False),
                Column("created", Double, nullable=False),
                Column("updated", Double, nullable=False),
            )
            await conn.run_sync(frozen.create_all)
            columns = "job_id, pool, url, dest, replicas, digest, status, error, created, updated"
            await conn.execute(text(f"INSERT INTO pool_jobs ({columns}) SELECT {columns} FROM pool_jobs_v9"))
            await conn.execute(text("DROP TABLE pool_jobs_v9"))


async def _v11_mirror_size_text(conn: AsyncConnection) -> None:
    await conn.execute(text("ALTER TABLE mirror_jobs ADD COLUMN size_text TEXT NULL"))


async def _v12_task_epochs(conn: AsyncConnection) -> None:
    # A task's ownership epoch: each tracker that takes the task over bumps it, and a write of its durable
    # facts lands only while the epoch is still the writer's (core.ownership). Existing tasks start at 0,
    # as a task created from now on does.
    await conn.execute(text("ALTER TABLE tasks ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0"))


async def _v13_placements(conn: AsyncConnection) -> None:
    # A member's load, renewed with its row, and the tasks members place on each other by load
    # (core.balance): rows of trackers that never balance read a load of 0.
    await conn.execute(text("ALTER TABLE trackers ADD COLUMN load_rate DOUBLE PRECISION NOT NULL DEFAULT 0"))
    frozen = MetaData()
    key = String(64).with_variant(mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql")
    Table(
        "placements",
        frozen,
        Column("task_key", key, primary_key=True),
        Column("tracker_id", key, nullable=False),
        Column("active_from", Double, nullable=False),
        Column("previous", key, nullable=True),
    )
    await conn.run_sync(frozen.create_all)


async def _v14_pool_epochs(conn: AsyncConnection) -> None:
    # A pool's ownership epoch, as v12 gave tasks theirs: each tracker that takes the pool over bumps it, and a
    # write of the pool's rows lands only while the epoch is still the writer's (tracker.pools). Existing
    # pools start at 0, as a pool created from now on does.
    await conn.execute(text("ALTER TABLE pools ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0"))


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "tasks, piece hashes, peers, leases", _v1_initial),
    (2, "times as DOUBLE on MySQL", _v2_double_times),
    (3, "pools, members, push jobs and assignments", _v3_pools),
    (4, "mirror jobs and workers", _v4_mirror),
    (5, "case-sensitive identifiers on MySQL", _v5_case_sensitive_keys),
    (6, "pool assignments: bytes by scope", _v6_scope_bytes),
    (7, "tracker processes sharing the database", _v7_trackers),
    (8, "peers and origin leases in the tracker's memory; piece hashes name their reporter", _v8_soft_state_in_memory),
    (9, "pools: owners' tokens, private as a column, push allow-lists", _v9_pool_owners),
    (10, "pool jobs: digests of every algorithm", _v10_push_digests),
    (11, "mirror jobs: the size as reported", _v11_mirror_size_text),
    (12, "tasks: the ownership epoch that fences their writes", _v12_task_epochs),
    (13, "trackers' loads, and tasks placed by load", _v13_placements),
    (14, "pools: the ownership epoch that fences their writes", _v14_pool_epochs),
]


MIGRATION_LOCK = "shoal_schema"
"""The name of the server's lock a migration holds (MySQL's ``GET_LOCK``; PostgreSQL's advisory lock takes a
number, LOCK_KEY)."""
LOCK_KEY = 0x73686F616C
"""PostgreSQL's advisory lock key for migrations ("shoal" in ASCII): any number other programs do not use."""
LOCK_WAIT = 120
"""Seconds MySQL waits for another process's migration (PostgreSQL's advisory lock waits as long as it takes)."""


@asynccontextmanager
async def _one_migrator(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the server's migration lock (nothing to hold on SQLite). It is a session's lock, on a connection of
    its own kept for the migration, released at the end (the server drops it too if the process dies)."""
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "mysql", "mariadb"):
        yield
        return
    async with engine.connect() as conn:
        if dialect == "postgresql":
            take, release = text("SELECT pg_advisory_lock(:key)"), text("SELECT pg_advisory_unlock(:key)")
            params: dict[str, Any] = {"key": LOCK_KEY}
            await conn.execute(take, params)
        else:
            take, release = text("SELECT GET_LOCK(:name, :wait)"), text("SELECT RELEASE_LOCK(:name)")
            params = {"name": MIGRATION_LOCK, "wait": LOCK_WAIT}
            if (await conn.execute(take, params)).scalar() != 1:
                raise TimeoutError(f"another process held the schema's migration lock for {LOCK_WAIT} s")
        await conn.commit()  # the lock is the session's: no transaction stays open beside the migration
        try:
            yield
        finally:
            await conn.execute(release, params)
            await conn.commit()


async def migrate(engine: AsyncEngine, *, upto: int | None = None) -> int:
    """Bring the schema up to date, or only up to version ``upto`` (the tests build older databases this
    way); return the version it is at.

    Each step not yet recorded in ``schema_migrations`` runs in its own transaction, which also records it,
    under the server's migration lock (the module's docstring).
    """
    versions = [version for version, _, _ in MIGRATIONS]
    if upto is not None and upto not in versions:
        raise ValueError(f"no schema version {upto}; the versions are {versions}")
    async with _one_migrator(engine):
        return await _migrate(engine, upto)


async def _migrate(engine: AsyncEngine, upto: int | None) -> int:
    async with engine.begin() as conn:
        bookkeeping = _schema_migrations_table(MetaData())
        await conn.run_sync(lambda sync: bookkeeping.create(sync, checkfirst=True))
    async with engine.connect() as conn:
        applied: set[int] = set((await conn.execute(select(schema_migrations.c.version))).scalars())
    for version, description, step in MIGRATIONS:
        if upto is not None and version > upto:
            break
        if version in applied:
            continue
        async with engine.begin() as conn:
            await step(conn)
            await conn.execute(
                insert(schema_migrations).values(version=version, description=description, applied_at=time.time())
            )
        applied.add(version)
    return max(applied)
