"""The TrackerStore contract, run against every SQL backend (see conftest.db_url)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import inspect, select, text

from shoal.core.announce import AnnounceOutcome, PeerRecord, TaskSnapshot
from shoal.core.bitfield import Bitfield
from shoal.core.errors import StoreError
from shoal.core.handout import PeerView
from shoal.core.leases import Lease
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest
from shoal.storage.db import create_engine
from shoal.storage.schema import MIGRATIONS, metadata, migrate, schema_migrations
from shoal.storage.tracker_store import TaskRows, TrackerStore

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


async def assert_applied(store: TrackerStore, outcome: AnnounceOutcome) -> None:
    """What an outcome wrote is what load() reads back, and the copy in memory is what the database holds."""
    snapshot = await store.load(TASK_ID, outcome.new_hashes)
    stored = await store.read_rows(TASK_ID)
    assert stored is not None
    assert in_order(stored.snapshot(outcome.new_hashes)) == in_order(snapshot)
    assert await store.hashes_since(TASK_ID, 0) == stored.hashes_since(0)
    assert snapshot.task == outcome.task
    peers = {p.view.peer_id: p for p in snapshot.peers}
    if outcome.peer is not None:
        assert (
            in_order(replace(snapshot, peers=[peers[outcome.peer.view.peer_id]])).peers
            == in_order(replace(snapshot, peers=[outcome.peer])).peers
        )
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


def in_order(snapshot: TaskSnapshot) -> TaskSnapshot:
    """The snapshot with its peers sorted, and what is kept in memory only left out: peers' accusers (a
    restarted tracker judges a peer afresh; its stored ``bad`` mark stays), spot checks and who reported
    each hash."""
    peers = [replace(p, view=replace(p.view, accusers=frozenset()), reported=0) for p in snapshot.peers]
    return replace(snapshot, peers=sorted(peers, key=lambda p: p.view.peer_id), audits={}, reporters={})


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
    assert sorted(versions) == [version for version, _, _ in MIGRATIONS]
    assert stored is not None
    snapshot = stored.snapshot(())
    assert [p.last_seen for p in snapshot.peers] == [T0 + 0.25]
    assert [lease.expires for lease in snapshot.leases.values()] == [T0 + 0.25 + TTL]
    await assert_peer_ids_tell_case_apart(db_url)


async def assert_peer_ids_tell_case_apart(db_url: str) -> None:
    async with TrackerStore(db_url) as store:
        await join(store, "Peer", T0 + 1)
        await join(store, "peer", T0 + 2)
        stored = await store.read_rows(TASK_ID)  # the database's rows, not the copy in memory
    assert stored is not None
    assert {"Peer", "peer"} <= {p.view.peer_id for p in stored.snapshot(()).peers}


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


async def test_bad_marks_are_stored_and_respected(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    await step(store, "p1", T0, done={i: digest(i) for i in range(4)})
    await join(store, "p2", T0, bitfield=bitfield(0, 1, 2, 3))
    await join(store, "p3", T0, bitfield=bitfield(0))
    # Accusers on two hosts: the second one bans p2 for everyone.
    await step(store, "p1", T0 + 1, "10.9.0.1", bad_peers=("p2",))
    rows = await store.read_rows(TASK_ID)
    assert rows is not None and not rows.peers["p2"].bad
    await step(store, "p3", T0 + 1, "10.9.0.2", bad_peers=("p2",), bitfield=bitfield(0))
    rows = await store.read_rows(TASK_ID)
    assert rows is not None and rows.peers["p2"].bad
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
    stored = await store.read_rows(TASK_ID)
    assert stored is not None and in_order(stored.snapshot(())) == in_order(after)
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
    after = await store.load(TASK_ID, [0])
    assert after.peers == [] and after.known_hashes == {0: digest(0)}
    stored = await store.read_rows(TASK_ID)
    assert stored is not None and in_order(after) == in_order(stored.snapshot([0]))
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


async def test_a_read_of_a_task_not_in_memory_waits_for_the_staged_writes(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=4)
    outcome, reported = await stage(store, request("p1", done={0: digest(0)}), T0 + 1)
    expired = asyncio.ensure_future(store.expire(T0 + 1 + TTL + 1, TTL))
    await asyncio.sleep(0)  # the sweep drops the copy (p1 is silent) and stages its deletes
    after = await store.load(TASK_ID, [0])  # from the database, once both writes are in it
    assert after.peers == [] and after.known_hashes == {0: digest(0)} and after.task == outcome.task
    await reported
    assert await expired == 1


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


class WriteDuringRead(TrackerStore):
    """A store whose next database read of a task is overtaken by a write (another request's announce)."""

    write: Callable[[], Awaitable[object]] | None = None

    async def read_rows(self, task_id: str) -> TaskRows | None:
        rows = await super().read_rows(task_id)
        if self.write is not None:
            write, self.write = self.write, None
            await write()
        return rows


async def test_a_read_overtaken_by_a_write_is_not_kept(db_url: str) -> None:
    async with WriteDuringRead(db_url) as store:
        await join(store, "p1", T0, want_leases=4)
        assert await store.expire(T0 + TTL + 1, TTL) == 1  # the task leaves memory
        store.write = lambda: join(store, "p2", T0 + TTL + 2, want_leases=4)
        overtaken = await store.load(TASK_ID, ())
        assert overtaken.peers == []  # read before p2's announce landed
        now = await store.load(TASK_ID, ())
        assert [p.view.peer_id for p in now.peers] == ["p2"] and len(now.leases) == 4


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


async def test_a_failed_apply_changes_nothing(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=2)
    await step(store, "p1", T0 + 1, done={0: digest(0)})
    before = await store.load(TASK_ID, [0])
    assert before.task is not None
    # The task row and the peer are written first; the hash insert then hits the stored piece 0.
    outcome = AnnounceOutcome(
        task=replace(before.task, hash_seq=before.task.hash_seq + 1),
        peer=PeerRecord(PeerView("p9", "10.0.0.9", 7000, "", "", Bitfield(PIECES)), 1, T0 + 2),
        new_hashes={0: digest(0, "b")},
        put_leases=[Lease(5, "p9", T0 + 2 + TTL)],
    )
    with pytest.raises(StoreError):
        await store.apply(outcome, created=False)
    after = await store.load(TASK_ID, [0])
    assert in_order(after) == in_order(before)


async def test_a_failed_write_fails_the_writes_staged_behind_it(store: TrackerStore) -> None:
    await join(store, "p1", T0, want_leases=2)
    await step(store, "p1", T0 + 1, done={0: digest(0)})
    before = await store.load(TASK_ID, [0, 1])
    assert before.task is not None
    # The hash insert hits the stored piece 0, so this write fails (see test_a_failed_apply_changes_nothing).
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
    assert in_order(await store.load(TASK_ID, [0, 1])) == in_order(before)  # the copy was dropped and read again
    await announce(store, request("p1", done={1: digest(1)}), T0 + 4)  # and the task goes on
    assert (await store.load(TASK_ID, [1])).known_hashes == {1: digest(1)}


async def test_database_errors_become_store_errors(store: TrackerStore, db_url: str) -> None:
    await join(store, "p1", T0)
    await drop_schema(db_url)
    # Reads of a task not held in memory go to the database; every write does.
    with pytest.raises(StoreError):
        await store.load("f" * 40, ())
    with pytest.raises(StoreError):
        await store.hashes_since("f" * 40, 0)
    with pytest.raises(StoreError):
        await store.read_rows(TASK_ID)
    with pytest.raises(StoreError):
        await store.expire(T0, TTL)
    with pytest.raises(StoreError):
        await announce(store, request("p1", generation=0), T0)


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


async def test_a_restarted_tracker_gives_the_live_peers_and_leases_one_ttl(db_url: str) -> None:
    """core.resume on each backend: what was live when the tracker stopped is live for one TTL after it
    comes back, however long it was down; what was already silent stays gone."""
    async with TrackerStore(db_url) as first:
        await join(first, "gone", T0 - TTL - 5, want_leases=2)  # silent for over a TTL when the tracker stopped
        await join(first, "p1", T0, want_leases=4)
        await join(first, "p2", T0 + 10, want_leases=2)
        before = await first.load(TASK_ID, ())
        live = {i: lease.peer_id for i, lease in before.leases.items() if lease.expires >= T0 + 10}
    assert sorted(live.values()) == ["p1"] * 4 + ["p2"] * 2
    restart = T0 + 10 + 3 * TTL  # down for three TTLs
    async with TrackerStore(db_url) as second:
        assert await second.resume(restart, TTL) == (2, 6)
        after = await second.load(TASK_ID, ())
        assert {p.view.peer_id: p.last_seen for p in after.peers if p.last_seen >= restart - TTL} == {
            "p1": restart,
            "p2": restart,
        }
        resumed = {i: lease for i, lease in after.leases.items() if lease.expires > restart}
        assert {i: lease.peer_id for i, lease in resumed.items()} == live
        assert {lease.expires for lease in resumed.values()} == {restart + TTL}
        # Nobody heard of for a TTL after the restart: forgotten like any silent peer, leases with them.
        assert await second.expire(restart + TTL + 1, TTL) == 3
        assert (await second.load(TASK_ID, ())).leases == {}
    async with TrackerStore(db_url) as empty_restart:
        assert await empty_restart.resume(restart + 2 * TTL, TTL) == (0, 0), "nothing was left to carry over"
