"""The migrations build the tables the stores query, on a fresh database and on one from each earlier version.

A database's schema is reflected (SQLAlchemy's inspector) and compared with the tables of
shoal.storage.schema: the tables; each column's kind of type, nullability and whether it has a server
default; primary keys; indexes. A column or table added to those tables without a migration, or a
migration that builds something else, fails here, on every backend (see conftest.db_url). A database of an
earlier version is built by the migrations up to it, with a row in each of its tables that must survive
the upgrade.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    Connection,
    Dialect,
    Double,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    insert,
    inspect,
    literal,
    select,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from shoal.storage.db import create_engine
from shoal.storage.migrations import MIGRATIONS, migrate
from shoal.storage.schema import Blob, metadata, schema_migrations

VERSIONS = [version for version, _, _ in MIGRATIONS]
LATEST = VERSIONS[-1]

Kind = tuple[Any, ...]
# ("table", name), ("column", table, name, kind, nullable, has a server default), ("primary key", table,
# columns), ("index", table, name, columns, unique): a set, so a failed comparison lists what differs.
Schema = set[tuple[Any, ...]]


def kind(type_: TypeEngine[Any], dialect: Dialect) -> Kind:
    """What a column of ``type_`` holds on ``dialect``: the same for a type declared in the tables and for
    the type reflected from the column it built."""
    # A variant's type on this backend (Key, Blob), looked up as the DDL compiler does. (dialect_impl() would
    # give the driver's runtime type, which on PostgreSQL makes a Text a plain String.)
    t = type_._variant_mapping.get(dialect.name, type_)
    if isinstance(t, TypeDecorator):
        t = t.load_dialect_impl(dialect)
    if isinstance(t, Boolean) or (dialect.name == "mysql" and isinstance(t, mysql.TINYINT)):
        return ("boolean",)  # MySQL's BOOLEAN is a TINYINT(1)
    if isinstance(t, BigInteger):
        return ("bigint",)
    if isinstance(t, Integer):
        return ("integer",)
    if isinstance(t, Float):
        return ("float", float_bytes(t, dialect))
    if isinstance(t, String):
        # The character set and collation are set only where a column's differ from its table's (Key's on
        # MySQL); a plain String has neither.
        name = "text" if isinstance(t, Text) else "string"
        return (name, t.length, getattr(t, "charset", None), t.collation)
    if isinstance(t, LargeBinary):
        return ("binary",)
    raise AssertionError(f"kind() does not know {t!r} on {dialect.name}: add it")


def float_bytes(t: Float[Any], dialect: Dialect) -> int:
    """How many bytes a float column holds: v2 exists because v1's times held 4 on MySQL."""
    if dialect.name == "sqlite":
        return 8  # every SQLite REAL is 8 bytes, whether its column was declared FLOAT or DOUBLE
    if isinstance(t, Double):
        return 8
    if dialect.name == "postgresql" and isinstance(t, REAL):
        return 4
    if t.precision is None:
        return 4 if dialect.name == "mysql" else 8  # PostgreSQL's FLOAT is double precision
    return 4 if t.precision <= 24 else 8


def schema_of(sync: Connection) -> Schema:
    """The schema the database holds."""
    inspector = inspect(sync)
    facts: Schema = set()
    for table in inspector.get_table_names():
        facts.add(("table", table))
        for column in inspector.get_columns(table):
            has_default = column["default"] is not None
            facts.add(
                ("column", table, column["name"], kind(column["type"], sync.dialect), column["nullable"], has_default)
            )
        facts.add(("primary key", table, tuple(inspector.get_pk_constraint(table)["constrained_columns"])))
        for index in inspector.get_indexes(table):
            facts.add(("index", table, index["name"], tuple(index["column_names"]), bool(index["unique"])))
    return facts


def declared(dialect: Dialect) -> Schema:
    """The schema the tables of shoal.storage.schema declare, as schema_of() describes a database."""
    facts: Schema = set()
    for table in metadata.tables.values():
        others = [c for c in table.constraints if not isinstance(c, PrimaryKeyConstraint)]
        assert not others, f"schema_of() compares no constraints but primary keys yet: teach it {others}"
        facts.add(("table", table.name))
        for column in table.columns:
            has_default = column.server_default is not None
            facts.add(("column", table.name, column.name, kind(column.type, dialect), column.nullable, has_default))
        facts.add(("primary key", table.name, tuple(column.name for column in table.primary_key.columns)))
        for index in table.indexes:
            facts.add(("index", table.name, index.name, tuple(column.name for column in index.columns), index.unique))
    return facts


# One value of each kind. The float is exact in a 4-byte FLOAT, so v1's times hold it on MySQL too; the
# string is mixed case for the keys that tell case apart.
VALUES: dict[str, Any] = {
    "boolean": True,
    "integer": 7,
    "bigint": 2**40 + 1,
    "float": 1234.5,
    "string": "Mixed.Case_1",
    "text": "a longer text",
    "binary": b"\x00\xffAb",
}


def value_of(k: Kind) -> Any:
    value = VALUES[k[0]]
    return value[: k[1]] if k[0] == "string" else value


def write_rows(sync: Connection) -> dict[str, dict[str, Any]]:
    """Write a row into each table the database holds (but schema_migrations, which migrate() writes), with
    a value of each column's kind; return them by table."""
    tables = MetaData()
    tables.reflect(sync)
    written: dict[str, dict[str, Any]] = {}
    for table in tables.sorted_tables:
        if table.name == schema_migrations.name:
            continue
        row = {column.name: value_of(kind(column.type, sync.dialect)) for column in table.columns}
        # Bytes go through Blob's bind, which steps around aiomysql's failure on bytes parameters.
        sync.execute(insert(table).values({k: literal(v, Blob) if isinstance(v, bytes) else v for k, v in row.items()}))
        written[table.name] = row
    return written


DROPPED = {"peers", "leases"}
"""Tables an earlier version had and a later one dropped (v8: the tracker's soft state is in memory)."""


def read_rows(sync: Connection, written: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows of the tables in ``written`` that the schema still has, with the columns written."""
    written = {name: row for name, row in written.items() if name not in DROPPED}
    tables = MetaData()
    tables.reflect(sync, only=list(written))
    read: dict[str, dict[str, Any]] = {}
    for name, row in written.items():
        table = tables.tables[name]
        # By its primary key: a table may hold rows its migration wrote (tracker_cluster's one row).
        key = [table.c[column.name] == row[column.name] for column in table.primary_key.columns]
        found = sync.execute(select(table).where(*key)).mappings().one()
        read[name] = {column: found[column] for column in row}
    return read


async def test_a_fresh_database_gets_the_declared_tables(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert await migrate(engine) == LATEST
        async with engine.connect() as conn:
            found = await conn.run_sync(schema_of)
            versions = (await conn.execute(select(schema_migrations.c.version))).scalars().all()
    finally:
        await engine.dispose()
    assert sorted(versions) == VERSIONS
    assert found == declared(engine.dialect)


async def test_processes_starting_at_once_on_a_new_database_all_migrate_it(db_url: str) -> None:
    """Trackers started together on one new database (each its own engine, as each process has): one
    builds the schema, the others wait for it and find it built, and none fails on a table or type that
    another created meanwhile."""
    if db_url.startswith("sqlite"):
        pytest.skip("a SQLite file belongs to one tracker process (storage.db_lock)")
    engines = [create_engine(db_url) for _ in range(4)]
    try:
        reached = await asyncio.gather(*(migrate(engine) for engine in engines), return_exceptions=True)
        async with engines[0].connect() as conn:
            found = await conn.run_sync(schema_of)
            versions = (await conn.execute(select(schema_migrations.c.version))).scalars().all()
    finally:
        for engine in engines:
            await engine.dispose()
    assert reached == [LATEST] * len(engines)
    assert sorted(versions) == VERSIONS
    assert found == declared(engines[0].dialect)


@pytest.mark.parametrize("version", VERSIONS[:-1])
async def test_a_database_of_an_earlier_version_is_upgraded_with_its_rows(db_url: str, version: int) -> None:
    engine = create_engine(db_url)
    try:
        assert await migrate(engine, upto=version) == version
        async with engine.begin() as conn:
            before = (await conn.execute(select(schema_migrations.c.version))).scalars().all()
            written = await conn.run_sync(write_rows)
        assert await migrate(engine) == LATEST
        async with engine.connect() as conn:
            found = await conn.run_sync(schema_of)
            read = await conn.run_sync(read_rows, written)
            versions = (await conn.execute(select(schema_migrations.c.version))).scalars().all()
    finally:
        await engine.dispose()
    assert sorted(before) == VERSIONS[: VERSIONS.index(version) + 1]
    assert sorted(versions) == VERSIONS
    assert found == declared(engine.dialect)
    assert read == {name: row for name, row in written.items() if name not in DROPPED}
