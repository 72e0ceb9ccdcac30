"""The TrackerStore contract, run against every SQL backend (see conftest.db_url).

The database holds a task's durable facts (the task, its piece hashes and their reporters); its peers and
leases live in memory only (core.swarm). Each step checks both: the copy in memory is what the database
holds, and the swarm's aggregates are what a swarm built afresh from its peers and leases would have."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import inspect, select, text

from shoal.core.announce import decide_announce
from shoal.core.announce_values import AnnounceOutcome, PeerRecord
from shoal.core.bitfield import Bitfield, iter_bits
from shoal.core.errors import StoreError
from shoal.core.handout import PeerView
from shoal.core.leases import Lease
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest
from shoal.core.task_snapshot import TaskSnapshot
from shoal.storage.db import create_engine
from shoal.storage.migrations import MIGRATIONS, migrate
from shoal.storage.schema import metadata, schema_migrations
from shoal.storage.task_sql import Staged
from shoal.storage.tracker_store import TaskRows, TrackerStore
from shoal.testing.poll import wait_until_async
from tests.unit.test_swarm_state import assert_consistent as assert_swarm_consistent

from .conftest import drop_schema
from .driver import (
    CHANGED,
    IDENTITY,
    MANIFEST,
    PIECES,
    POLICY,
    T0,
    TASK_ID,
    URL,
    announce,
    bitfield,
    decide,
    digest,
    join,
    request,
)

TTL = POLICY.peer_ttl


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[TrackerStore]:
    async with TrackerStore(db_url) as opened:
        yield opened


def assert_census(store: TrackerStore) -> None:
    """The store's census is its swarms' peers and seeds added up."""
    swarms = [rows.swarm for rows in store._rows.values()]
    assert store.tasks_in_memory() == len(swarms)
    assert store.census.peers == sum(len(swarm.peers) for swarm in swarms)
    assert store.census.seeds == sum(swarm.seeds for swarm in swarms)


async def test_the_census_counts_the_tasks_in_memory_as_they_come_and_go(store: TrackerStore) -> None:
    # (Its seeds are counted by the same changes: tests/unit/test_swarm_state.py.)
    await join(store, "p1", T0)
    await join(store, "p2", T0)
    assert store.census.peers == 2
    assert_census(store)
    await store.expire(T0 + TTL + 1, TTL)  # both silent: the task leaves memory
    assert store.tasks_in_memory() == 0 and (store.census.peers, store.census.seeds) == (0, 0)
    await join(store, "p2", T0 + 2 * TTL)  # read back from the database, its peer counted
    assert store.tasks_in_memory() == 1 and store.census.peers == 1
    assert_census(store)
    store.forget([TASK_ID])  # another tracker owns it now
    assert store.tasks_in_memory() == 0 and (store.census.peers, store.census.seeds) == (0, 0)


async def assert_applied(store: TrackerStore, outcome: AnnounceOutcome) -> None:
    """What an outcome changed is what load() reads back, and the durable facts in memory are what the
    database holds."""
    snapshot = await store.load(TASK_ID, outcome.new_hashes)
    stored = await store.read_rows(TASK_ID)
    memory = store._rows[TASK_ID]
    assert stored is not None
    assert stored.task == memory.task == snapshot.task == outcome.task
    assert (stored.hashes, stored.reporters, stored.hashed) == (memory.hashes, memory.reporters, memory.hashed)
    assert await store.hashes_since(TASK_ID, 0) == stored.hashes_since(0)
    assert snapshot.swarm is memory.swarm
    assert_swarm_consistent(memory.swarm)
    assert_census(store)
    peers = {p.view.peer_id: p for p in snapshot.peers}
    if outcome.peer is not None:
        kept = peers[outcome.peer.view.peer_id]
        assert replace(kept, view=replace(kept.view, bad=outcome.peer.view.bad)) == outcome.peer
    if outcome.remove_peer:
        assert outcome.remove_peer not in peers
    for lease in outcome.put_leases:
        assert snapshot.leases[lease.piece] == lease
    put = {lease.piece for lease in outcome.put_leases}
    assert not (set(outcome.drop_leases) - put) & set(snapshot.leases)
    assert snapshot.known_hashes == outcome.new_hashes
    for peer_id in outcome.mark_bad:
        if peer_id in peers:
            assert peers[peer_id].view.bad


def durable(snapshot: TaskSnapshot) -> tuple[object, ...]:
    """What of a snapshot the database holds."""
    return snapshot.task, dict(snapshot.known_hashes), snapshot.hashed, dict(snapshot.reporters)


async def step(
    store: TrackerStore, peer_id: str, now: float, seen_host: str = "192.0.2.1", **fields: object
) -> AnnounceOutcome:
    outcome = await announce(store, request(peer_id, **fields), now, seen_host)
    await assert_applied(store, outcome)
    return outcome


# -- schema --------------------------------------------------------------------------------------------


async def test_migrate_is_idempotent_and_records_versions(db_url: str) -> None:
    async with TrackerStore(db_url) as store:
        assert await migrate(store.engine) == MIGRATIONS[-1][0]
        assert await migrate(store.engine) == MIGRATIONS[-1][0]
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(schema_migrations))).all()
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert [(r.version, r.description) for r in rows] == [(v, d) for v, d, _ in MIGRATIONS]
    assert all(r.applied_at > 1_600_000_000 for r in rows)
    assert set(metadata.tables) <= tables
    # Reopening an existing database migrates nothing and keeps the data.
    async with TrackerStore(db_url) as store:
        await join(store, "p1", T0)
    async with TrackerStore(db_url) as store:
        snapshot = await store.load(TASK_ID, ())
        async with store.engine.connect() as conn:
            assert len((await conn.execute(select(schema_migrations))).all()) == len(MIGRATIONS)
    assert snapshot.task is not None and snapshot.task.manifest == MANIFEST


async def test_migrating_a_version_1_database(db_url: str) -> None:
    """A database that v1 built serves the tracker once migrated: times keep their fractions (v2 turns
    MySQL's 4-byte FLOATs into DOUBLEs) and peer ids tell case apart (v5). tests/store/test_schema.py
    compares the upgraded schema itself."""
    engine = create_engine(db_url)
    try:
        assert await migrate(engine, upto=1) == 1
    finally:
        await engine.dispose()
    async with TrackerStore(db_url) as store:
        await join(store, "p1", T0 + 0.25, want_leases=1)
        stored = await store.read_rows(TASK_ID)  # the database's rows, not the copy in memory
        async with store.engine.connect() as conn:
            versions = (await conn.execute(select(schema_migrations.c.version))).scalars().all()
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert sorted(versions) == [version for version, _, _ in MIGRATIONS]
    assert stored is not None and stored.task.manifest == MANIFEST
    assert not {"peers", "leases"} & tables, "v6 drops the tables of the soft state"
    await assert_peer_ids_tell_case_apart(db_url)


async def assert_peer_ids_tell_case_apart(db_url: str) -> None:
    """Two peers whose ids differ only in case report hashes: each is named as its own reporter."""
    async with TrackerStore(db_url) as store:
        await join(store, "Peer", T0 + 1, want_leases=1)
        await join(store, "peer", T0 + 2, want_leases=1)
        swarm = store._rows[TASK_ID].swarm
        for peer_id in ("Peer", "peer"):
            piece = next(iter_bits(swarm.own(peer_id)))
            await announce(store, request(peer_id, done={piece: digest(piece)}), T0 + 3)
        stored = await store.read_rows(TASK_ID)  # the database's rows, not the copy in memory
    assert stored is not None
    assert {"Peer", "peer"} <= set(stored.reporters.values())


async def test_peer_ids_that_differ_only_in_case_are_two_peers(db_url: str) -> None:
    await assert_peer_ids_tell_case_apart(db_url)


async def test_opening_an_unreachable_database_is_a_store_error() -> None:
    # (A SQLite file in a missing directory fails the same way, but aiosqlite's worker thread then
    # outlives the test's event loop and reports a stray error into the next test.)
    for url in ("postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"):
        with pytest.raises(StoreError, match="cannot open"):
            async with TrackerStore(url):
                pass


# -- apply and load ------------------------------------------------------------------------------------


async def test_unknown_task_loads_empty(store: TrackerStore) -> None:
    assert await store.load(TASK_ID, [0, 1]) == TaskSnapshot(None, [], {}, {})
    assert await store.hashes_since(TASK_ID, 0) is None
    assert await store.summary(TASK_ID, T0, TTL) is None


async def test_a_swarm_sequence_reads_back_as_applied(store: TrackerStore) -> None:
    first = await announce(store, request("p1", generation=0, event="started"), T0)
    assert first.task.manifest is None
    await assert_applied(store, first)
    await step(store, "p1", T0 + 0.5, event="started", origin=IDENTITY, site="dc1", rack="r1", want_leases=4)
    await step(store, "p2", T0 + 1.25, generation=0, event="started", host="")
    # p2 names no host of its own, so the address the tracker saw stands in.
    p2 = {"host": "", "site": "dc1", "rack": "r2", "port": 7001}
    granted = await step(store, "p2", T0 + 1.5, **p2, want_leases=4)
    assert granted.response is not None and len(granted.response.leases) == 4
    given_back = granted.response.leases[0]
    await step(
        store,
        "p1",
        T0 + 2.75,
        done={0: digest(0), 1: digest(1)},
        bitfield=bitfield(0, 1),
        site="dc1",
        rack="r1",
        want_leases=2,
    )
    await step(store, "p2", T0 + 3.0, **p2, released=[given_back], bitfield=bitfield(0))
    last = await step(store, "p3", T0 + 4.0, generation=0, event="started")
    assert last.response is not None and last.response.manifest == MANIFEST

    snapshot = await store.load(TASK_ID, range(PIECES))
    assert snapshot.task is not None
    assert snapshot.task.generation == 1 and snapshot.task.hash_seq == 2 and snapshot.task.url == URL
    assert snapshot.known_hashes == {0: digest(0), 1: digest(1)}
    views = {p.view.peer_id: p.view for p in snapshot.peers}
    assert set(views) == {"p1", "p2", "p3"}
    assert list(views["p1"].have) == [0, 1] and views["p1"].rack == "r1"
    assert views["p2"].host == "192.0.2.1" and views["p2"].port == 7001
    assert {lease.peer_id for lease in snapshot.leases.values()} == {"p1", "p2"}
    assert not {0, 1, given_back} & set(snapshot.leases)
    assert list(views["p2"].have) == [0], "fetched from p1"


async def test_repeating_an_identical_announce_is_harmless(store: TrackerStore) -> None:
    await join(store, "p1", T0)
    first = await step(store, "p1", T0 + 1, bitfield=bitfield(3))
    again = await step(store, "p1", T0 + 1, bitfield=bitfield(3))
    assert again.peer == first.peer


async def test_stopped_removes_the_peer_and_its_leases(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    await join(store, "p2", T0, want_leases=4)
    await step(store, "p1", T0 + 1, event="stopped")
    snapshot = await store.load(TASK_ID, ())
    assert [p.view.peer_id for p in snapshot.peers] == ["p2"]
    assert {lease.peer_id for lease in snapshot.leases.values()} == {"p2"}
    assert len(snapshot.leases) == 4


async def test_bad_marks_are_kept_and_respected(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    await step(store, "p1", T0, done={i: digest(i) for i in range(4)})
    await join(store, "p2", T0, bitfield=bitfield(0, 1, 2, 3))
    await join(store, "p3", T0, bitfield=bitfield(0))
    # Accusers on two hosts: the second one bans p2 for everyone.
    await step(store, "p1", T0 + 1, "10.9.0.1", bad_peers=("p2",))
    swarm = store._rows[TASK_ID].swarm
    assert not swarm.peers["p2"].view.bad and swarm.accused_by == {"10.9.0.1": {"p2"}}
    await step(store, "p3", T0 + 1, "10.9.0.2", bad_peers=("p2",), bitfield=bitfield(0))
    assert swarm.peers["p2"].view.bad and "p2" not in swarm.index
    await step(store, "p4", T0 + 2, generation=0)
    out = await step(store, "p4", T0 + 2, want_leases=2)
    assert out.response is not None
    assert sorted(p.peer_id for p in out.response.peers) == ["p1", "p3"]
    assert out.response.leases == (4, 5)


# -- generations and hashes ----------------------------------------------------------------------------


async def _busy_task(store: TrackerStore) -> None:
    """Two peers with leases, bitfields and reported hashes."""
    await join(store, "p1", T0, want_leases=4)
    await join(store, "p2", T0, want_leases=4)
    await step(store, "p1", T0 + 1, done={0: digest(0), 1: digest(1)}, bitfield=bitfield(0, 1), want_leases=2)
    await step(store, "p2", T0 + 1, bitfield=bitfield(0), want_leases=2)


async def _assert_fresh_generation(store: TrackerStore, generation: int) -> None:
    snapshot = await store.load(TASK_ID, range(PIECES))
    assert snapshot.task is not None and snapshot.task.generation == generation
    assert snapshot.known_hashes == {} and snapshot.leases == {}
    assert all(len(p.view.have) == 0 for p in snapshot.peers)
    hashes = await store.hashes_since(TASK_ID, 0)
    assert hashes is not None and hashes.generation == generation and hashes.hashes == {}


async def test_origin_change_clears_hashes_leases_and_bitfields(store: TrackerStore) -> None:
    await _busy_task(store)
    out = await step(store, "p2", T0 + 2, origin=CHANGED, bitfield=bitfield(0))
    assert out.new_generation
    await _assert_fresh_generation(store, 2)
    snapshot = await store.load(TASK_ID, ())
    assert snapshot.task is not None and snapshot.task.manifest == Manifest.for_identity(CHANGED)
    # Peers of the old generation are told to restart, and start the new one empty.
    out = await step(store, "p1", T0 + 3, bitfield=bitfield(0, 1), want_leases=1)
    assert out.response is not None and out.response.restart and out.response.generation == 2
    out = await step(store, "p1", T0 + 4, generation=2, want_leases=1)
    assert out.response is not None and out.response.leases == (0,)


async def test_a_conflicting_hash_is_rejected_and_changes_nothing_stored(store: TrackerStore) -> None:
    await _busy_task(store)
    before = await store.read_rows(TASK_ID)
    out = await step(store, "p1", T0 + 2, done={1: digest(1, "b")})
    assert not out.new_generation and out.rejected == [1]
    after = await store.read_rows(TASK_ID)
    assert before is not None and after is not None
    assert after.task == before.task and after.hashes == before.hashes
    assert store.stage(out, created=False).done(), "a rejected report changes nothing durable: no write"


async def test_a_stale_report_changes_nothing_stored(store: TrackerStore) -> None:
    await _busy_task(store)
    await step(store, "p2", T0 + 2, origin=CHANGED)
    before = await store.load(TASK_ID, range(PIECES))
    await step(store, "p1", T0 + 3, generation=1, origin=IDENTITY, done={5: digest(5)})
    after = await store.load(TASK_ID, range(PIECES))
    assert after.task == before.task and after.known_hashes == {}


async def test_hashes_since_returns_only_newer_hashes(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    await step(store, "p1", T0 + 1, done={1: digest(1), 0: digest(0)})
    await step(store, "p1", T0 + 2, done={2: digest(2)})
    await step(store, "p1", T0 + 3, done={2: digest(2)})  # a repeated report adds nothing
    everything = await store.hashes_since(TASK_ID, 0)
    assert everything is not None
    assert (everything.generation, everything.seq) == (1, 3)
    assert everything.hashes == {0: digest(0), 1: digest(1), 2: digest(2)}
    newer = await store.hashes_since(TASK_ID, 2)
    assert newer is not None and newer.hashes == {2: digest(2)} and newer.seq == 3
    none = await store.hashes_since(TASK_ID, 3)
    assert none is not None and none.hashes == {}


# -- expiry and summary --------------------------------------------------------------------------------


async def test_expire_removes_silent_peers_and_expired_leases(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    await join(store, "p2", T0 + 20, want_leases=4)
    before = await store.load(TASK_ID, ())
    p1_pieces = {i for i, lease in before.leases.items() if lease.peer_id == "p1"}
    assert len(p1_pieces) == 4

    assert await store.expire(T0 + TTL - 1, TTL) == 0
    assert await store.expire(T0 + TTL + 1, TTL) == 1
    after = await store.load(TASK_ID, ())
    assert_swarm_consistent(store._rows[TASK_ID].swarm)
    assert [p.view.peer_id for p in after.peers] == ["p2"]
    assert {lease.peer_id for lease in after.leases.values()} == {"p2"}
    assert len(after.leases) == 4
    # The silent peer's pieces go to the next asker.
    await step(store, "p3", T0 + TTL + 2, generation=0)
    out = await step(store, "p3", T0 + TTL + 2, want_leases=8)
    assert out.response is not None and p1_pieces <= set(out.response.leases)


async def test_a_task_left_without_peers_is_read_again_from_the_database(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    await step(store, "p1", T0 + 1, done={0: digest(0)})
    assert await store.expire(T0 + 1 + TTL + 1, TTL) == 1
    assert TASK_ID not in store._rows
    after = await store.load(TASK_ID, [0])
    assert list(after.peers) == [] and after.known_hashes == {0: digest(0)} and after.reporters == {0: "p1"}
    # A peer coming back finds the task as it was.
    out = await join(store, "p1", T0 + 40, want_leases=2)
    assert out.response is not None and out.response.hash_seq == 1


async def stage(store: TrackerStore, req: AnnounceRequest, now: float) -> tuple[AnnounceOutcome, asyncio.Future[None]]:
    """Decide an announce on the store's copy and stage it, without waiting for the commit."""
    outcome, created = await decide(store, req, now)
    return outcome, store.stage(outcome, created=created)


async def test_staged_announces_are_decided_on_the_copy_and_commit_in_order(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    staged = [await stage(store, request("p1", done={i: digest(i)}), T0 + 1 + i) for i in range(3)]
    # Each was decided on the state the one before it staged, before any of them committed.
    assert [outcome.task.hash_seq for outcome, _ in staged] == [1, 2, 3]
    assert (await store.hashes_since(TASK_ID, 0)).hashes == {i: digest(i) for i in range(3)}  # type: ignore[union-attr]
    await asyncio.gather(*(done for _, done in staged))
    await assert_applied(store, staged[-1][0])
    assert (await store.read_rows(TASK_ID)).hashes_since(0).hashes == {i: digest(i) for i in range(3)}  # type: ignore[union-attr]


class HeldWriter(TrackerStore):
    """A store whose write transactions wait until the test lets them run."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.go = asyncio.Event()
        self.waiting = 0

    async def write_batch(self, batch: list[Staged]) -> list[Any]:
        self.waiting += 1
        await self.go.wait()
        self.waiting -= 1
        return await super().write_batch(batch)


async def stage_task(
    store: TrackerStore, task_id: str, req: AnnounceRequest, now: float
) -> tuple[AnnounceOutcome, asyncio.Future[None]]:
    """:func:`stage` for any task."""
    snapshot = replace(await store.load(task_id, req.done, now=now, peer_ttl=TTL), origin_seen=req.origin)
    outcome = decide_announce(snapshot, req, task_id=task_id, seen_host="192.0.2.1", now=now, policy=POLICY)
    return outcome, store.stage(outcome, created=snapshot.task is None)


async def test_a_batch_of_reports_on_several_tasks_commits_as_written_one_by_one(db_url: str) -> None:
    """The writes staged while one commits go in one transaction, consecutive hash reports (a task row and
    hash rows each) in one statement of each kind: the database ends as after writing them one by one, with
    every hash and each task's last hash_seq, and a new task's write among them keeps its place."""
    other, third = "d" * 40, "e" * 40
    other_url, third_url = f"http://origin.example/{other}", f"http://origin.example/{third}"
    async with HeldWriter(db_url) as store:
        store.go.set()
        await join(store, "p1", T0, want_leases=8)
        await join_task(store, other, "q1", T0, want_leases=8)
        store.go.clear()
        first = await stage(store, request("p1", done={0: digest(0)}), T0 + 1)
        await wait_until_async(lambda: store.waiting == 1, "the writer holding a batch of the first write alone")
        batch = [
            await stage_task(store, other, request("q1", url=other_url, done={0: digest(0), 1: digest(1)}), T0 + 2),
            await stage(store, request("p1", done={1: digest(1)}), T0 + 3),
            await stage_task(store, third, request("r1", url=third_url, generation=0, event="started"), T0 + 4),
            await stage_task(store, other, request("q1", url=other_url, done={2: digest(2)}), T0 + 5),
        ]
        assert [outcome.task.hash_seq for outcome, _ in batch] == [2, 2, 0, 3]
        store.go.set()
        await asyncio.gather(first[1], *(done for _, done in batch))
        held = {tid: store._rows[tid].task for tid in (TASK_ID, other, third)}
    async with TrackerStore(db_url) as again:
        for tid, hashes in ((TASK_ID, {0: digest(0), 1: digest(1)}), (other, {i: digest(i) for i in range(3)})):
            stored = await again.read_rows(tid)
            assert stored is not None and stored.task == held[tid]
            assert stored.hashes_since(0).hashes == hashes
        made = await again.read_rows(third)
        assert made is not None and made.task == held[third] and made.hashes == {}


async def test_an_announce_that_changes_nothing_durable_waits_for_no_write(db_url: str) -> None:
    async with HeldWriter(db_url) as store:
        store.go.set()
        await join(store, "p1", T0, want_leases=4)
        store.go.clear()
        # A hash report: durable, so its write is staged, and held.
        _, reported = await stage(store, request("p1", done={0: digest(0)}), T0 + 1)
        await wait_until_async(lambda: store.waiting == 1, "the hash report's write to reach the writer")
        # Another peer's join and its announces while that write is held: decided on the copy, answered at
        # once (the task exists; nothing they change is durable).
        _, joined = await stage(store, request("p2", generation=0, event="started"), T0 + 2)
        out, working = await stage(store, request("p2", bitfield=bitfield(0), want_leases=2), T0 + 2)
        assert joined.done() and working.done() and not reported.done()
        assert out.response is not None and out.response.leases == (4, 5)
        assert out.response.hash_seq == 1, "told of the hash whose write is on its way"
        # The first announce of another task reads it without waiting for the held write, and its own
        # creation is staged behind it.
        other = "c" * 40
        snapshot = await store.load(other, ())
        assert snapshot.task is None
        # A sweep keeps a task in memory while a write of it is pending, even without live peers.
        assert await store.expire(T0 + 1 + TTL + 1, TTL) == 2
        assert TASK_ID in store._rows
        store.go.set()
        await reported
        assert (await store.read_rows(TASK_ID)).hashes_since(0).hashes == {0: digest(0)}  # type: ignore[union-attr]
        assert await store.expire(T0 + 1 + TTL + 1, TTL) == 0 and TASK_ID not in store._rows


async def test_reads_of_a_task_not_in_memory_at_once_share_one_copy(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    assert await store.expire(T0 + TTL + 1, TTL) == 1  # the task leaves memory
    # Two requests (a hash look-up and an announce, say) read it at once. Had the second read replaced the
    # copy the first put in place, an announce decided on the first copy would be lost: its leases granted
    # again to the next asker.
    first, second = await asyncio.gather(store._task_rows(TASK_ID), store._task_rows(TASK_ID))
    assert first is not None and first is second
    out = await join(store, "p2", T0 + TTL + 2, want_leases=4)
    assert out.response is not None and out.response.leases == (0, 1, 2, 3)
    again = await join(store, "p3", T0 + TTL + 3, want_leases=4)
    assert again.response is not None and again.response.leases == (4, 5, 6, 7)


class HeldTakeOver(TrackerStore):
    """A store whose reads of a task into memory (take-overs, on a shared database) wait until the test lets
    them run, and are counted."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.go = asyncio.Event()
        self.waiting = 0
        self.taken = 0

    async def _take_over(self, task_id: str) -> TaskRows | None:
        self.waiting += 1
        await self.go.wait()
        self.waiting -= 1
        self.taken += 1
        return await super()._take_over(task_id)


async def test_an_announce_during_a_read_of_its_task_waits_for_it_and_its_write_lands(db_url: str) -> None:
    """One read of a task into memory at a time: a second would bump the task's epoch past the copy the
    first kept (on a shared database), and the writes decided on that copy would be left out."""
    async with HeldTakeOver(db_url) as store:
        store.go.set()
        await join(store, "p1", T0, want_leases=4)
        assert await store.expire(T0 + TTL + 1, TTL) == 1  # the task leaves memory
        store.go.clear()
        store.taken = 0
        reading = asyncio.ensure_future(store.load(TASK_ID, ()))
        await wait_until_async(lambda: store.waiting == 1, "the read of the task held")
        joining = asyncio.ensure_future(join(store, "p2", T0 + TTL + 2, want_leases=4))
        store.go.set()
        await asyncio.gather(reading, joining)
        assert store.taken == 1, "the announce decided on the copy the read kept"
        joined = joining.result()
        assert joined.response is not None and joined.response.leases == (0, 1, 2, 3)
        await announce(store, request("p2", done={0: digest(0)}), T0 + TTL + 3)  # lands: TaskMoved otherwise
        stored = await store.read_rows(TASK_ID)
        assert stored is not None and stored.hashes_since(0).hashes == {0: digest(0)}


async def test_expire_keeps_the_leases_of_a_peer_that_keeps_announcing(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    await step(store, "p1", T0 + 25)
    assert await store.expire(T0 + TTL + 1, TTL) == 0
    assert len((await store.load(TASK_ID, ())).leases) == 4


async def test_summary(store: TrackerStore) -> None:
    await join(store, "p1", T0, site="dc1", rack="r1", want_leases=3)
    await step(store, "p1", T0 + 1, site="dc1", rack="r1", done={0: digest(0)})
    await join(store, "p2", T0 - TTL, want_leases=2)
    found = await store.summary(TASK_ID, T0 + 2, TTL)
    assert found is not None
    summary = msgspec.json.decode(msgspec.json.encode(found))  # the reply as JSON
    peers = summary.pop("peers")
    assert summary == {
        "task_id": TASK_ID,
        "url": URL,
        "generation": 1,
        "length": IDENTITY.length,
        "piece_length": MANIFEST.piece_length,
        "pieces": PIECES,
        "etag": IDENTITY.etag,
        "last_modified": IDENTITY.last_modified,
        "range_ok": True,
        "hashed_pieces": 1,
        "rejected_reports": 0,
        "refused_origins": 0,
        "leases": 2,
        "content_task": "",  # named by the service (core.content_alias), not the store
        "received": {},  # summed by the service (core.scope_tally), not the store
    }
    assert peers == [
        {
            "peer_id": "p1",
            "host": "10.0.0.1",
            "port": 7000,
            "site": "dc1",
            "rack": "r1",
            "pieces": 1,
            "bad": False,
            "accusers": 0,
            "last_seen": T0 + 1,
        },
    ]


# -- failures ------------------------------------------------------------------------------------------


async def test_a_failed_write_changes_nothing_durable(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=2)
    await step(store, "p1", T0 + 1, done={0: digest(0)})
    before = await store.load(TASK_ID, [0])
    assert before.task is not None
    # The task row is written first; the hash insert then hits the stored piece 0.
    outcome = AnnounceOutcome(
        task=replace(before.task, hash_seq=before.task.hash_seq + 1),
        peer=PeerRecord(PeerView("p9", "10.0.0.9", 7000, "", "", Bitfield(PIECES)), 1, T0 + 2),
        new_hashes={0: digest(0, "b"), 1: digest(1)},
        put_leases=[Lease(5, "p9", T0 + 2 + TTL)],
    )
    with pytest.raises(StoreError):
        await store.apply(outcome, created=False)
    assert store._rows[TASK_ID].stale
    after = await store.load(TASK_ID, [0, 1])
    # The durable facts are the database's again; the hash sequence does not go back (peers may have been
    # told it); the soft state stays.
    assert after.known_hashes == {0: digest(0)} and after.hashed == 0b1
    assert after.task == replace(before.task, hash_seq=before.task.hash_seq + 1)
    assert "p9" in {p.view.peer_id for p in after.peers} and after.leases[5].peer_id == "p9"
    assert_swarm_consistent(store._rows[TASK_ID].swarm)
    out = await announce(store, request("p1", done={1: digest(1)}), T0 + 3)
    assert out.task.hash_seq == before.task.hash_seq + 2 and not out.rejected
    stored = await store.read_rows(TASK_ID)
    assert stored is not None and stored.task == out.task and set(stored.hashes) == {0, 1}


async def test_a_failed_write_fails_the_writes_staged_behind_it(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=2)
    await step(store, "p1", T0 + 1, done={0: digest(0)})
    before = await store.load(TASK_ID, [0, 1])
    assert before.task is not None
    facts = durable(before)
    # The hash insert hits the stored piece 0, so this write fails (see test_a_failed_write_changes_nothing_durable).
    bad = AnnounceOutcome(
        task=replace(before.task, hash_seq=before.task.hash_seq + 1),
        peer=PeerRecord(PeerView("p9", "10.0.0.9", 7000, "", "", Bitfield(PIECES)), 1, T0 + 2),
        new_hashes={0: digest(0, "b")},
    )
    failing = store.stage(bad, created=False)
    await asyncio.sleep(0)  # the writer takes it: what is staged next goes in the next transaction
    # Decided on a copy that includes the failing write: it must not land without it.
    _, behind = await stage(store, request("p1", done={1: digest(1)}), T0 + 3)
    for done in (failing, behind):
        with pytest.raises(StoreError):
            await done
    assert durable(await store.load(TASK_ID, [0, 1]))[1:] == facts[1:]  # read again
    await announce(store, request("p1", done={1: digest(1)}), T0 + 4)  # and the task goes on
    assert (await store.load(TASK_ID, [1])).known_hashes == {1: digest(1)}


async def test_database_errors_become_store_errors(store: TrackerStore, db_url: str) -> None:
    await join(store, "p1", T0, want_leases=2)
    await drop_schema(db_url)
    # Reads of a task not held in memory go to the database, and so does every durable change.
    with pytest.raises(StoreError):
        await store.load("f" * 40, ())
    with pytest.raises(StoreError):
        await store.hashes_since("f" * 40, 0)
    with pytest.raises(StoreError):
        await store.read_rows(TASK_ID)
    # What changes nothing durable needs no database: the expiry sweep, an announce of a known task.
    assert await store.expire(T0 + 1, TTL) == 0
    out = await announce(store, request("p2", generation=0, event="started"), T0 + 1)
    assert out.response is not None and out.response.generation == 1
    with pytest.raises(StoreError):
        await announce(store, request("p1", done={0: digest(0)}), T0 + 1)


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    async with TrackerStore(f"sqlite:///{path}") as store, store.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
    # WAL is a property of the file: a plain connection that sets nothing sees it too.
    with contextlib.closing(sqlite3.connect(path)) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_revoked_hashes_are_dropped_and_a_replacement_follows_them(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=3)
    await step(store, "p1", T0 + 1, done={0: digest(0), 1: digest(1), 2: digest(2)})
    before = await store.load(TASK_ID, [0, 1, 2])
    assert before.task is not None
    seq = before.task.hash_seq
    # A spot check caught p1 (core.audit): piece 0's hash is replaced, piece 1's revoked.
    outcome = AnnounceOutcome(
        task=replace(before.task, hash_seq=seq + 3), revoked=[0, 1], new_hashes={0: digest(0, "b")}, reporters={0: ""}
    )
    await store.apply(outcome, created=False)
    stored = await store.read_rows(TASK_ID)
    assert stored is not None
    assert {piece: h for piece, (h, _) in stored.hashes.items()} == {0: digest(0, "b"), 2: digest(2)}
    news = await store.hashes_since(TASK_ID, seq)
    assert news is not None and news.seq == seq + 3
    assert news.hashes == {0: digest(0, "b")} and news.revoked == (1,)
    assert (await store.load(TASK_ID, [])).hashed == 0b101


# -- a restart -----------------------------------------------------------------------------------------


async def test_a_restarted_tracker_knows_the_durable_facts_and_no_peers(db_url: str) -> None:
    """The database holds the task, its hashes and who reported them; peers and leases lived in the old
    process's memory, and come back only as the peers announce again (their fetches in flight through
    ``fetching``)."""
    async with TrackerStore(db_url) as first:
        await join(first, "p1", T0, want_leases=4)
        await join(first, "p2", T0 + 1, want_leases=2)
        await announce(first, request("p1", done={0: digest(0)}), T0 + 2)
        before = await first.load(TASK_ID, [0])
    async with TrackerStore(db_url) as second:
        second.grace_until = T0 + 10
        after = await second.load(TASK_ID, [0], now=T0 + 3, peer_ttl=TTL)
        assert durable(after) == durable(before) and after.reporters == {0: "p1"}
        assert list(after.peers) == [] and after.leases == {}
        assert after.grace, "a task read back during the grace period grants no lease afresh"
        # p2 comes back fetching its two pieces: they are its again; p3 gets no lease meanwhile.
        back = await announce(second, request("p2", fetching=(4, 5), want_leases=2), T0 + 3)
        assert back.response is not None and back.response.leases == (4, 5)
        fresh = await join(second, "p3", T0 + 4, want_leases=2)
        assert fresh.response is not None and fresh.response.leases == ()
        later = await announce(second, request("p3", want_leases=2), T0 + 11)
        # Piece 0's hash is known, but nobody live holds it: leased again, like every piece p1 held.
        assert later.response is not None and later.response.leases == (0, 1)
        assert not (await second.load(TASK_ID, (), now=T0 + 11, peer_ttl=TTL)).grace
    async with TrackerStore(db_url) as third:
        # A task this process created itself has no peers from before: no grace.
        third.grace_until = T0 + 100
        other = "c" * 40
        req = request("q1", generation=0, event="started")
        snapshot = await third.load(other, (), now=T0 + 20, peer_ttl=TTL)
        outcome = decide_announce(snapshot, req, task_id=other, seen_host="192.0.2.1", now=T0 + 20, policy=POLICY)
        await third.apply(outcome, created=True)
        assert not (await third.load(other, (), now=T0 + 20, peer_ttl=TTL)).grace


# -- retention: tasks no peer announces leave the database ------------------------------------------------


async def announce_task(store: TrackerStore, task_id: str, req: AnnounceRequest, now: float) -> AnnounceOutcome:
    """One announce of ``task_id`` as the tracker service runs it, its write stamped at ``now``."""
    store.clock = lambda: now
    snapshot = replace(await store.load(task_id, req.done, now=now, peer_ttl=TTL), origin_seen=req.origin)
    outcome = decide_announce(snapshot, req, task_id=task_id, seen_host="192.0.2.1", now=now, policy=POLICY)
    await store.apply(outcome, created=snapshot.task is None)
    return outcome


async def join_task(store: TrackerStore, task_id: str, peer_id: str, now: float, **fields: Any) -> AnnounceOutcome:
    url = f"http://origin.example/{task_id}"
    await announce_task(store, task_id, request(peer_id, url=url, generation=0, event="started"), now)
    return await announce_task(
        store, task_id, request(peer_id, url=url, event="started", origin=IDENTITY, **fields), now
    )


async def stored_ids(store: TrackerStore, table: str) -> set[str]:
    async with store.connection() as conn:
        return set((await conn.execute(text(f"SELECT DISTINCT task_id FROM {table}"))).scalars())


async def test_idle_tasks_leave_the_database_and_live_ones_stay(store: TrackerStore) -> None:
    idle, live, held = "a" * 40, "c" * 40, "d" * 40
    for task_id in (idle, live, held):
        joined = await join_task(store, task_id, "p1", T0, want_leases=1)
        assert joined.response is not None and joined.response.leases == (0,)
        await announce_task(
            store, task_id, request("p1", url=f"http://origin.example/{task_id}", done={0: digest(0)}), T0
        )
    assert await stored_ids(store, "piece_hashes") == {idle, live, held}
    # Every peer falls silent: the tasks leave memory; one comes back long after, one lingers in memory.
    assert await store.expire(T0 + TTL + 1, TTL) == 3
    assert store.held() == []
    await announce_task(store, live, request("p2", url=f"http://origin.example/{live}", generation=0), T0 + 1000)
    assert store.held() == [live]
    # Recorded as alive once its record is older than `every`, and not again within it.
    assert await store.touch(T0 + 1000, every=100) == 1
    assert await store.touch(T0 + 1050, every=100) == 0
    await store.load(held, ())  # a read puts a task in memory without peers
    assert await store.idle_tasks(T0 + 500) == sorted([idle, held])
    assert await store.idle_tasks(T0 + 500, after=idle, limit=1) == [held]
    assert await store.idle_tasks(T0) == []
    # Only a task idle in the database and absent from memory goes, with its hashes.
    assert await store.remove_tasks([idle, live, held], T0 + 500) == [idle]
    assert await stored_ids(store, "tasks") == {live, held}
    assert await stored_ids(store, "piece_hashes") == {live, held}
    assert (await store.load(idle, ())).task is None
    # One that is no longer idle by the time of its removal stays.
    store.forget([held])
    await announce_task(store, held, request("p3", url=f"http://origin.example/{held}", generation=0), T0 + 2000)
    await store.expire(T0 + 2000 + TTL + 1, TTL)
    assert await store.touch(T0 + 2000, every=100) == 0  # not in memory any more: nothing to record
    assert await store.remove_tasks([held], T0 + 500) == [held]  # its announce changed nothing durable
    # A task removed is made afresh by its next announce: no hashes, generation 1 again.
    again = await join_task(store, idle, "p9", T0 + 3000, want_leases=1)
    assert again.response is not None and again.response.hash_seq == 0 and again.response.leases == (0,)


async def test_a_read_overlapping_a_removal_is_not_kept(store: TrackerStore) -> None:
    task_id = "e" * 40
    await join_task(store, task_id, "p1", T0)
    await store.expire(T0 + TTL + 1, TTL)
    reads = [asyncio.ensure_future(store.hashes_since(task_id, 0)) for _ in range(3)]
    removal = asyncio.ensure_future(store.remove_tasks([task_id], T0 + 1))
    await asyncio.gather(*reads, removal)
    assert removal.result() == [task_id]
    assert task_id not in store.held(), "a copy read while the task was removed stays out of memory"
    assert await store.hashes_since(task_id, 0) is None
