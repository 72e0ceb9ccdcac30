"""The tracker's tables as they are now: the stores query them.

How a database gets there is shoal.storage.migrations: a new column or table here is a new migration there,
with the same change (its rules are written there). tests/store/test_schema.py checks on every backend that
the migrations build these tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Boolean,
    Column,
    ColumnElement,
    Dialect,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    func,
    text,
)
from sqlalchemy.dialects import mysql


class _HexBlob(TypeDecorator[bytes]):
    """A BLOB whose values travel as hex text and are unhexed by the server.

    aiomysql 0.3 with PyMySQL >= 1.2.3 fails on every bytes parameter ("'str' object is not callable",
    aio-libs/aiomysql#1080), so on MySQL the bytes never reach the driver's escaping. The column stays a
    BLOB; only the bind changes. Drop this once aiomysql ships the fix.
    """

    impl = LargeBinary
    cache_ok = True

    def bind_expression(self, bindvalue: BindParameter[Any]) -> ColumnElement[Any]:
        return func.unhex(bindvalue)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        # Replaces (not wraps) LargeBinary's processor, which would turn the hex text back into bytes.
        return lambda value: None if value is None else bytes(value).hex()


# No table of the current schema has a BLOB since version 8; the tests bind the bytes of earlier versions'
# rows through it.
Blob = LargeBinary().with_variant(_HexBlob(), "mysql", "mariadb")
# Identifiers that tell apart upper and lower case (peer ids, pool member ids, mirror job and worker names are
# [A-Za-z0-9_.-]). MySQL compares strings case-insensitively by default: "Peer" and "peer" would be one
# key there, and one peer's upsert, stop or bad mark would hit the other's row.
Key = String(64).with_variant(mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb")
# Times are epoch seconds. SQLAlchemy's Float is a 4-byte FLOAT on MySQL, which rounds today's epoch to
# about two minutes; DOUBLE keeps sub-millisecond precision on every backend.
Time = Double

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", Time, nullable=False),
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
    Column("created", Time, nullable=False),
    Column("updated", Time, nullable=False),
    # The ownership epoch (core.ownership, "Durable writes"): bumped by each tracker that takes the task over,
    # and every later write of the task's durable facts lands only while it is still the writer's.
    Column("epoch", Integer, nullable=False, server_default=text("0")),
)

piece_hashes = Table(
    "piece_hashes",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("piece", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    # The peer whose report of the origin's bytes the tracker took ("": nobody alone vouches for it, as for
    # a content task's hashes): a spot check that catches it lying revokes its other hashes, after a
    # restart too (core.audit).
    Column("reporter", Key, nullable=False, server_default=""),
)

# A task's peers and origin leases are soft state, kept in the memory of the tracker process that owns the
# task (core.swarm): version 8 dropped the tables earlier versions kept them in.

# The mirror manager's state (shoal.mirror.manager): one row per job, with its core.mirror_job.JobState
# fields, and one per worker that ever registered.
mirror_jobs = Table(
    "mirror_jobs",
    metadata,
    Column("name", Key, primary_key=True),
    Column("spec", Text, nullable=False),  # the JobSpec as JSON (JobSpec.to_json)
    Column("status", String(16), nullable=False),
    Column("last_update", Time, nullable=True),
    Column("last_started", Time, nullable=True),
    Column("last_ended", Time, nullable=True),
    Column("error_msg", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("retry", Boolean, nullable=False),
    Column("worker", Key, nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("next_schedule", Time, nullable=True),
    Column("size", BigInteger, nullable=False),
    # The size as the job's log or `set-size` wrote it ("1.41T"), shown verbatim in GET /jobs as tunasync
    # shows it; NULL: none, the bytes in `size` are shown.
    Column("size_text", Text, nullable=True),
    Column("version", String(64), nullable=True),
    Column("updated", Time, nullable=False),
)

mirror_workers = Table(
    "mirror_workers",
    metadata,
    Column("name", Key, primary_key=True),
    Column("url", Text, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("registered", Time, nullable=False),
    Column("last_seen", Time, nullable=False),
)

pools = Table(
    "pools",
    metadata,
    Column("name", String(64), primary_key=True),
    # SHA-256 of the pool's token, its owner's (and a private pool's members'); NULL: a pool from before
    # version 9, which only the operator manages.
    Column("token_hash", String(64), nullable=True),
    Column("created", Time, nullable=False),
    Column("private", Boolean, nullable=False, server_default=false()),
    Column("allow", Text, nullable=True),  # the push allow-list (core.push_policy) as a JSON list; NULL: none
    # The ownership epoch (tracker.pools, "A pool's writes carry its epoch"): bumped by each tracker that takes
    # the pool over, and every later write of the pool's rows lands only while it is still the writer's.
    Column("epoch", Integer, nullable=False, server_default=text("0")),
)

pool_members = Table(
    "pool_members",
    metadata,
    Column("pool", String(64), primary_key=True),
    Column("member_id", Key, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("url", String(255), nullable=False),
    Column("site", String(64), nullable=False, default=""),
    Column("rack", String(64), nullable=False, default=""),
    Column("free", BigInteger, nullable=False, default=0),
    Column("joined", Time, nullable=False),
    Column("last_seen", Time, nullable=False),
)

DIGEST_LENGTH = 160
"""A push's ``ALGORITHM:HEX`` (core.whole_file.DIGEST_ALGORITHMS): the longest, blake2b's, is 136 characters."""

pool_jobs = Table(
    "pool_jobs",
    metadata,
    Column("job_id", String(16), primary_key=True),
    Column("pool", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("dest", Text, nullable=True),
    Column("replicas", Integer, nullable=True),
    Column("digest", String(DIGEST_LENGTH), nullable=True),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=False, default=""),
    Column("created", Time, nullable=False),
    Column("updated", Time, nullable=False),
)

pool_assignments = Table(
    "pool_assignments",
    metadata,
    Column("job_id", String(16), primary_key=True),
    Column("member_id", Key, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("done", BigInteger, nullable=False, default=0),
    Column("total", BigInteger, nullable=False, default=0),
    Column("rate", Double, nullable=False, default=0.0),
    Column("from_origin", BigInteger, nullable=False, default=0),
    Column("from_peers", BigInteger, nullable=False, default=0),
    Column("error", Text, nullable=False, default=""),
    Column("assigned", Time, nullable=False),
    Column("updated", Time, nullable=False),
    Column("from_rack", BigInteger, nullable=False, server_default=text("0")),
    Column("from_racks", BigInteger, nullable=False, server_default=text("0")),
    Column("from_sites", BigInteger, nullable=False, server_default=text("0")),
)

trackers = Table(
    "trackers",
    metadata,
    Column("tracker_id", Key, primary_key=True),
    Column("url", Text, nullable=False),
    Column("active_from", Time, nullable=False),
    Column("expires", Time, nullable=False),
    Column("load_rate", Double, nullable=False, server_default=text("0")),
)
"""Tracker processes sharing the database (core.ownership): each renews its row while it lives, and its
load with it (core.balance)."""

placements = Table(
    "placements",
    metadata,
    Column("task_key", Key, primary_key=True),
    Column("tracker_id", Key, nullable=False),
    Column("active_from", Time, nullable=False),
    Column("previous", Key, nullable=True),
)
"""Tasks given to a member by load rather than by hash (core.ownership, "Placements")."""

tracker_cluster = Table(
    "tracker_cluster",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
)
"""One row, locked by a tracker registering, so that two registering at once see each other."""
