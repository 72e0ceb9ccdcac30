"""The SQL of one task's durable facts: its rows read into a copy, and the writes of its announces' outcomes,
run in batches (storage.tracker_store stages them and commits a batch per transaction).

A batch runs its writes in the order staged. On a database trackers share it leaves out each write whose
copy's epoch is no longer its task's (core.ownership, "Durable writes carry the task's epoch"), checked under
the task row's lock: on PostgreSQL by the write's own UPDATE, which matches the row only at the copy's epoch
(FENCED_UPDATE, FENCE; ROWS_BATCH for a batch of hash reports alone); on MySQL/MariaDB by a locking read of
the batch's epochs at its head (LOCK_EPOCHS). A task's creation is checked by its insert.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Table,
    TableValuedAlias,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import IntegrityError

from shoal.core.announce_values import AnnounceOutcome, TaskRecord
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.ownership import CREATED_EPOCH, EpochFence
from shoal.storage.schema import piece_hashes, tasks
from shoal.storage.task_rows import TaskRows, seqs


def task_from_row(row: Any) -> TaskRecord:
    manifest = None
    if row.length is not None:
        manifest = Manifest(OriginIdentity(row.length, row.etag, row.last_modified), row.piece_length)
    return TaskRecord(
        task_id=row.task_id,
        url=row.url,
        generation=row.generation,
        manifest=manifest,
        range_ok=bool(row.range_ok),
        hash_seq=row.hash_seq,
    )


TASK_COLUMNS = (
    "url",
    "generation",
    "length",
    "piece_length",
    "etag",
    "last_modified",
    "range_ok",
    "hash_seq",
    "updated",
)
"""The columns :func:`task_values` gives, which a write of a task's row sets."""


def task_values(task: TaskRecord, now: float) -> dict[str, Any]:
    m = task.manifest
    return {
        "url": task.url,
        "generation": task.generation,
        "length": m.length if m else None,
        "piece_length": m.piece_length if m else None,
        "etag": m.identity.etag if m else "",
        "last_modified": m.identity.last_modified if m else "",
        "range_ok": task.range_ok,
        "hash_seq": task.hash_seq,
        "updated": now,
    }


def hashes_of(task_id: str) -> Any:
    return select(piece_hashes.c.piece, piece_hashes.c.hash, piece_hashes.c.seq, piece_hashes.c.reporter).where(
        piece_hashes.c.task_id == task_id
    )


def copy_of(row: Row[Any], hashed: Iterable[Row[Any]]) -> TaskRows:
    """A task's copy from its row and its hashes' rows (:func:`hashes_of`)."""
    found = list(hashed)
    return TaskRows(
        task_from_row(row),
        {r.piece: (r.hash, r.seq) for r in found},
        {r.piece: r.reporter for r in found if r.reporter},
        touched=row.updated,
        epoch=row.epoch,
    )


UPDATE_TASK = update(tasks).where(tasks.c.task_id == bindparam("the_task_id"))
"""A task's row rewritten, its SET clause from the parameters' names: one statement built once and compiled
once, rather than one built for each of the writes a busy tracker makes a second."""


def hash_rows(outcome: AnnounceOutcome) -> list[dict[str, Any]]:
    """The rows of the outcome's new hashes, in seq order."""
    tid = outcome.task.task_id
    _, first_seq = seqs(outcome)
    return [
        {
            "task_id": tid,
            "piece": piece,
            "hash": digest,
            "seq": first_seq + n,
            "reporter": outcome.reporters.get(piece, ""),
        }
        for n, (piece, digest) in enumerate(sorted(outcome.new_hashes.items()))
    ]


@dataclass(slots=True)
class BatchRows:
    """What an announce that neither makes its task nor drops hashes writes: its task's row rewritten, and
    its new hashes' rows. Those of a batch's announces go in one statement of each kind (see run_batch)."""

    task: dict[str, Any] | None
    """The task row's new values (with ``the_task_id``), None when only hashes are new."""
    hashes: list[dict[str, Any]]


ELSEWHERE = object()
"""The result of a staged write left out because its task was created by another tracker (run_batch)."""
MOVED = object()
"""The result of a staged write left out because its copy's epoch is no longer its task's (run_batch)."""


LOCK_EPOCHS = (
    select(tasks.c.task_id, tasks.c.epoch)
    .where(tasks.c.task_id.in_(bindparam("ids", expanding=True)))
    .order_by(tasks.c.task_id)
    .with_for_update()
)
"""The epochs of the tasks ``ids``, their rows locked until the transaction ends, in the order of their ids:
built once, as UPDATE_TASK is, for it runs at the head of every batch on MySQL/MariaDB."""


def _epochs(batch: list[Staged], conn: Connection) -> dict[str, int]:
    """The epochs of the batch's tasks (but those it creates), their rows locked until the batch commits: no
    take-over by another tracker comes between this and the batch's writes. Locked in the order of their ids,
    as every batch locks them, so that two trackers' batches never wait for each other in a cycle."""
    ids = sorted({staged.task_id for staged in batch if not staged.creates and staged.epoch is not None})
    if not ids:
        return {}
    return {row.task_id: row.epoch for row in conn.execute(LOCK_EPOCHS, {"ids": ids})}


def _given(table: Table, names: tuple[str, ...]) -> TableValuedAlias:
    """PostgreSQL: rows of ``table``'s columns ``names`` given as one array parameter a column (``given_NAME``),
    ``unnest``-ed into a table ``given``: one statement text whatever the rows' number, which asyncpg
    prepares once, and SQLAlchemy converts each parameter once, not each row's."""
    return (
        func.unnest(*(bindparam(f"given_{name}", type_=ARRAY(table.c[name].type)) for name in names))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(name="given")
    )


def _as_given(names: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """The parameters of :func:`_given` for ``rows``, tuples of the columns ``names`` (at least one)."""
    return {f"given_{name}": list(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}


_FENCED = ("task_id", "epoch", *TASK_COLUMNS)
_task_rows = _given(tasks, _FENCED)
FENCED_UPDATE = (
    update(tasks)
    .where(tasks.c.task_id == _task_rows.c.task_id, tasks.c.epoch == _task_rows.c.epoch)
    .values({name: _task_rows.c[name] for name in TASK_COLUMNS})
    .returning(tasks.c.task_id, tasks.c.epoch)
)
"""PostgreSQL: task rows rewritten, each only while it holds the epoch given with it, in one statement
(:func:`_given`); it returns the (task, epoch) of the rows it rewrote. Their rows stay locked until the transaction
ends, so no take-over comes between this and the writes behind it. A row at another epoch as the statement begins is
neither locked nor waited for (its write is left out); one whose epoch changes while the statement runs (a take-over
under way) is waited for and checked again. The rows are not locked in the order of their ids, as LOCK_EPOCHS locks
them: two trackers' batches can wait for each other only if each tracker took over a task of the other's batch while
that batch's statement ran, and PostgreSQL then fails one of them (a deadlock), whose writes fail as on any database
error."""

FENCE = (
    update(tasks)
    .where(tasks.c.task_id == bindparam("the_task_id"), tasks.c.epoch == bindparam("the_epoch"))
    .values(epoch=tasks.c.epoch)
)
"""PostgreSQL: a task's row locked, and left as it is, only while it holds the epoch ``the_epoch`` (one row
counted), for a write FENCED_UPDATE does not carry (a new generation, revocations)."""


_HASHED = ("task_id", "piece", "hash", "seq", "reporter")
_hash_rows = _given(piece_hashes, _HASHED)
INSERT_HASHES = insert(piece_hashes).from_select(list(_HASHED), select(*(_hash_rows.c[name] for name in _HASHED)))
"""PostgreSQL: hash rows inserted in one statement (:func:`_given`)."""


def _arrays(columns: Iterable[tuple[Table, str]], first: int) -> str:
    """PostgreSQL: ``$first, $first+1, ...`` as arrays of ``columns``' types (a table and a column name each)."""
    dialect = PGDialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves its constructor unannotated
    return ", ".join(
        f"${first + n}::{table.c[name].type.compile(dialect=dialect)}[]" for n, (table, name) in enumerate(columns)
    )


_HASHES_AT = ("task_id", "epoch", "piece", "hash", "seq", "reporter")
"""The columns of a hash row as ROWS_BATCH takes it: its task's, the epoch of the copy it was decided on, its own."""
_HASHES_AT_TABLES = [(tasks if name in ("task_id", "epoch") else piece_hashes, name) for name in _HASHES_AT]

ROWS_BATCH = f"""
WITH given AS (
  SELECT * FROM unnest({_arrays([(tasks, name) for name in _FENCED], 1)}) AS given({", ".join(_FENCED)})
), landed AS (
  UPDATE tasks SET {", ".join(f"{name} = given.{name}" for name in TASK_COLUMNS)}
  FROM given WHERE tasks.task_id = given.task_id AND tasks.epoch = given.epoch
  RETURNING tasks.task_id, tasks.epoch
), added AS (
  INSERT INTO piece_hashes ({", ".join(_HASHED)})
  SELECT {", ".join(f"h.{name}" for name in _HASHED)}
  FROM unnest({_arrays(_HASHES_AT_TABLES, len(_FENCED) + 1)}) AS h({", ".join(_HASHES_AT)})
  JOIN landed ON landed.task_id = h.task_id AND landed.epoch = h.epoch
)
SELECT task_id, epoch FROM landed"""
"""PostgreSQL, for the driver itself: a batch whose every write only rewrites its task's row and adds hashes, as one
statement. It rewrites the task rows (one array a column, as FENCED_UPDATE: each only while it holds the epoch given
with it) and inserts the hashes of the rows it rewrote (a data-modifying WITH: the INSERT reads the UPDATE's
RETURNING), and returns the (task, epoch) of those rows. Sent in autocommit, it is its own transaction: one round trip
where BEGIN, FENCED_UPDATE, INSERT_HASHES and COMMIT are four, each waiting for a turn of a busy tracker's loop."""


def rows_only(batch: list[Staged]) -> bool:
    """Whether every write of ``batch`` only rewrites its task's row and adds hashes (ROWS_BATCH writes those)."""
    return all(staged.rows is not None and staged.rows.task is not None and not staged.creates for staged in batch)


async def run_rows_batch(driver: Any, batch: list[Staged]) -> list[Any]:
    """Run a batch that is :func:`rows_only` as ROWS_BATCH on ``driver``, an asyncpg connection in autocommit: its
    results as run_batch gives them (None for a write that landed, ``MOVED`` for one whose copy's epoch is no longer
    its task's, or that was decided on a copy that did not take its task over). Every task row's last values win and
    every hash row of a row that landed goes in, as run_batch's."""
    fenced: dict[tuple[str, int], dict[str, Any]] = {}
    hashed: list[tuple[Any, ...]] = []
    for staged in batch:
        if staged.epoch is None:
            continue
        assert staged.rows is not None and staged.rows.task is not None  # rows_only
        fenced[staged.task_id, staged.epoch] = staged.rows.task
        hashed.extend(
            (staged.task_id, staged.epoch, *(row[name] for name in _HASHED[1:])) for row in staged.rows.hashes
        )
    landed: set[tuple[str, int]] = set()
    if fenced:
        given = [
            (task_id, epoch, *(values[name] for name in TASK_COLUMNS))
            for (task_id, epoch), values in sorted(fenced.items())
        ]
        columns = [list(values) for values in zip(*given, strict=True)]
        hash_columns = [list(values) for values in zip(*hashed, strict=True)] if hashed else [[] for _ in _HASHES_AT]
        landed = {(row[0], row[1]) for row in await driver.fetch(ROWS_BATCH, *columns, *hash_columns)}
    return [None if (staged.task_id, staged.epoch) in landed else MOVED for staged in batch]


def _rewrite_fenced(conn: Connection, rows: dict[tuple[str, int], dict[str, Any]]) -> set[tuple[str, int]]:
    """Rewrite the task rows ``rows`` (by task and epoch) with FENCED_UPDATE; those it rewrote."""
    given = [
        (task_id, epoch, *(values[name] for name in TASK_COLUMNS)) for (task_id, epoch), values in sorted(rows.items())
    ]
    return {(row.task_id, row.epoch) for row in conn.execute(FENCED_UPDATE, _as_given(_FENCED, given))}


SQLITE_UPDATE_TASK = f"UPDATE tasks SET {', '.join(f'{name} = ?' for name in TASK_COLUMNS)} WHERE task_id = ?"
"""SQLite: UPDATE_TASK as the driver takes it (:func:`_update_values`)."""
SQLITE_INSERT_HASHES = f"INSERT INTO piece_hashes ({', '.join(_HASHED)}) VALUES ({', '.join('?' for _ in _HASHED)})"
"""SQLite: a hash row inserted, as the driver takes it."""


def _update_values(row: dict[str, Any]) -> tuple[Any, ...]:
    """The parameters of SQLITE_UPDATE_TASK for a task row (BatchRows.task)."""
    return (*(row[name] for name in TASK_COLUMNS), row["the_task_id"])


def run_batch(batch: list[Staged], conn: Connection, *, shared: bool) -> list[Any]:
    """Run a batch's writes in order, in the caller's transaction. Consecutive writes that only rewrite task rows and
    add hashes (``rows``) go as one UPDATE and one INSERT of many rows each: per statement the driver and
    SQLAlchemy cost as much as per row many times over, and a busy tracker's batches are dozens of such writes.
    Within such a run every task row's last values win and every hash row goes in, as one by one. A write whose
    creation of its task found it created elsewhere (``ELSEWHERE``) leaves out the writes of that task behind it
    too: they were decided on the copy it created. On a database trackers share (``shared``) a write whose
    copy's epoch is not its task's is left out (``MOVED``), wherever the database is, as is one of a copy that
    did not take its task over (core.ownership.EpochFence). On PostgreSQL the check is the writes' own UPDATE
    (FENCED_UPDATE: a run's rows, each at its copy's epoch, and the hashes then only of those it rewrote, in one
    statement too: INSERT_HASHES; FENCE for the others); on MySQL/MariaDB the batch first locks its tasks' rows
    and reads their epochs (LOCK_EPOCHS), where UPDATE tells neither which rows matched nor, with many rows, how
    many each. On SQLite the UPDATE and the INSERT go as the driver's own text (SQLITE_UPDATE_TASK,
    SQLITE_INSERT_HASHES), without SQLAlchemy's handling of each row's parameters: the batch runs in a worker
    thread, whose Python holds the interpreter lock the tracker's event loop needs."""
    folded = shared and conn.dialect.name == "postgresql"
    plain = conn.dialect.name == "sqlite"
    results: list[Any] = []
    elsewhere: set[str] = set()
    fence = EpochFence(_epochs(batch, conn) if shared and not folded else None)
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    fenced: dict[tuple[str, int], dict[str, Any]] = {}  # folded: the run's task rows, the last of each copy's
    waiting: list[tuple[int, Staged]] = []  # folded: the run's writes, by their place in ``results``

    def flush() -> None:
        if fenced:
            landed = _rewrite_fenced(conn, fenced)
            fenced.clear()
            for at, staged in waiting:
                if (staged.task_id, staged.epoch) in landed:
                    assert staged.rows is not None
                    inserts.extend(staged.rows.hashes)
                else:
                    results[at] = MOVED
            waiting.clear()
        if updates:
            if plain:
                conn.exec_driver_sql(SQLITE_UPDATE_TASK, [_update_values(row) for row in updates])
            else:
                conn.execute(UPDATE_TASK, updates)
            updates.clear()
        if inserts:
            if folded:
                conn.execute(INSERT_HASHES, _as_given(_HASHED, [tuple(row[n] for n in _HASHED) for row in inserts]))
            elif plain:
                conn.exec_driver_sql(SQLITE_INSERT_HASHES, [tuple(row[n] for n in _HASHED) for row in inserts])
            else:
                conn.execute(piece_hashes.insert(), inserts)
            inserts.clear()

    for staged in batch:
        if staged.task_id in elsewhere:
            results.append(ELSEWHERE)
            continue
        if not staged.creates and not fence.lands(staged.task_id, staged.epoch):
            results.append(MOVED)
            continue
        rows = staged.rows
        if folded and not staged.creates:
            assert staged.epoch is not None  # fence.lands
            if rows is not None and rows.task is not None:
                fenced[staged.task_id, staged.epoch] = rows.task
                waiting.append((len(results), staged))
                results.append(None)
                continue
            flush()
            if conn.execute(FENCE, {"the_task_id": staged.task_id, "the_epoch": staged.epoch}).rowcount != 1:
                results.append(MOVED)
                continue
        if rows is None:
            flush()
            result = staged.run(conn)
            if result is ELSEWHERE:
                elsewhere.add(staged.task_id)
            elif staged.creates:
                fence.created(staged.task_id)
            results.append(result)
            continue
        if rows.task is not None:
            updates.append(rows.task)
        inserts.extend(rows.hashes)
        results.append(None)
    flush()
    return results


@dataclass(slots=True)
class Staged:
    """A write staged for the database: what it runs in the batch's transaction (``run``, or the ``rows``
    run_batch writes together with its neighbours'), the task it changed, and the future its caller awaits;
    the copy it was decided on (None: one read without taking the task over, not kept), and whether it
    creates the task."""

    run: Callable[[Connection], Any]
    task_id: str
    done: asyncio.Future[Any]
    outcome: AnnounceOutcome
    rows: BatchRows | None
    copy: TaskRows | None
    creates: bool
    epoch: int | None = None
    """The copy's epoch as the batch begins (set then, on the loop): a copy's epoch changes only when no
    write of it is pending (a refresh), or to None when its creation of the task failed."""


def write_outcome(
    conn: Connection, outcome: AnnounceOutcome, *, created: bool, task_changed: bool, now: float
) -> object:
    """Write what ``outcome`` changed; ELSEWHERE (and nothing written) when its creation of the task found
    the task created by another tracker sharing the database."""
    task = outcome.task
    tid = task.task_id
    if created:
        insert = tasks.insert().values(task_id=tid, created=now, epoch=CREATED_EPOCH, **task_values(task, now))
        if conn.dialect.name == "sqlite":
            conn.execute(insert)  # one process's database: nobody else creates its tasks
        else:
            try:
                with conn.begin_nested():  # a savepoint: the batch's other writes go on without this one
                    conn.execute(insert)
            except IntegrityError:
                # A locking read: it sees the latest commit, also in a repeatable-read transaction (MySQL).
                mine = select(tasks.c.task_id).where(tasks.c.task_id == tid).with_for_update(read=True)
                exists = conn.execute(mine).first()
                if exists is None:
                    raise  # some other constraint: a failure like any other
                return ELSEWHERE
    elif task_changed:
        conn.execute(UPDATE_TASK, {"the_task_id": tid, **task_values(task, now)})
    if outcome.new_generation:
        conn.execute(delete(piece_hashes).where(piece_hashes.c.task_id == tid))
    if outcome.revoked:
        conn.execute(
            delete(piece_hashes).where(
                and_(piece_hashes.c.task_id == tid, piece_hashes.c.piece.in_(sorted(outcome.revoked)))
            )
        )
    if outcome.new_hashes:
        conn.execute(piece_hashes.insert(), hash_rows(outcome))
    return None
