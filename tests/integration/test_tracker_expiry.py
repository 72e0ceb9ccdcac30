"""The tracker's expiry loop: peers that stop announcing are dropped round after round, whatever one round
met."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from shoal.core.messages import AnnounceRequest, ScopeBytes
from shoal.core.pool_messages import Heartbeat
from shoal.http.metrics import Metrics
from shoal.testing.clock import FakeClock
from shoal.testing.metrics import parse
from shoal.testing.poll import wait_until_async
from shoal.tracker.admission import Admission
from shoal.tracker.bt import swarm_key
from shoal.tracker.config import TrackerConfig
from shoal.tracker.metrics import TrackerCollector
from shoal.tracker.pools import pool_key
from shoal.tracker.service import TrackerService
from tests.integration.test_bt_tracker_http import announce_fields, encode_query


async def test_the_expiry_loop_outlives_a_failed_round(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    service = TrackerService(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", interval=0.01))
    real_expire = service.store.expire
    rounds = 0

    async def expire(now: float, ttl: float) -> int:
        # The fault: a round failed by something other than the database (a write committed beside the
        # expiry that could not be encoded, before the tracker refused such input). Not caused for real:
        # the input validation now keeps it from happening.
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a write staged beside the expiry failed")
        return await real_expire(now, ttl)

    service.store.expire = expire  # type: ignore[method-assign]
    async with service.store:
        loop = asyncio.ensure_future(service.expire_forever())
        try:
            await wait_until_async(lambda: rounds >= 3, "three expiry rounds")
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop
    assert rounds >= 3
    assert any(r.levelno == logging.ERROR and "expiring peers failed" in r.message for r in caplog.records)


HOUR = 3600.0


def _request(task: str, peer_id: str, **fields: object) -> AnnounceRequest:
    return AnnounceRequest(peer_id=peer_id, url=f"http://origin.example/{task}", port=7000, **fields)  # type: ignore[arg-type]


async def test_tasks_without_peers_leave_after_the_retention_and_announced_ones_stay(tmp_path: Path) -> None:
    clock = FakeClock()
    config = TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", interval=5, peer_ttl=15, task_retention=HOUR)
    service = TrackerService(config, clock=clock)
    idle, seeded, busy = "a" * 40, "b" * 40, "c" * 40
    async with service.store:
        await service.resume()
        for task in (idle, seeded, busy):
            await service.announce(task, _request(task, "p1", event="started"), "10.0.0.1")
        # A seeder keeps announcing one task; nobody announces the others after their start. An announce of
        # one of them is being decided at every pass (its lock is held): that task is left alone.
        removed = []
        for _ in range(24):
            clock.advance(300)
            await service.announce(seeded, _request(seeded, "seeder"), "10.0.0.2")
            await service.store.expire(clock.now, config.peer_ttl)
            async with service._lock(busy):
                removed.append(await service.retire_tasks(clock.now))
        assert removed == [0] * 12 + [1] + [0] * 11  # after an hour (12 x 300 s), not before
        assert await service.store.summary(idle, clock.now, config.peer_ttl) is None
        summary = await service.store.summary(seeded, clock.now, config.peer_ttl)
        assert summary is not None and [p.peer_id for p in summary.peers] == ["seeder"]
        assert await service.store.read_rows(busy) is not None
        assert await service.retire_tasks(clock.now) == 1  # its lock free now
        assert await service.store.read_rows(busy) is None
        # A removed task's next announce makes it afresh.
        again = await service.announce(idle, _request(idle, "p2", event="started"), "10.0.0.1")
        assert again.generation == 1 and await service.store.read_rows(idle) is not None
        # Retention 0: nothing is removed, however old.
        await service.store.expire(clock.advance(10 * HOUR), config.peer_ttl)
        forever = TrackerService(replace(config, task_retention=0), clock=clock)
        forever.store = service.store
        assert await forever.retire_tasks(clock.now) == 0
        assert await service.retire_tasks(clock.now) == 2  # the seeder's task too, once it stopped announcing


async def test_a_retired_task_leaves_the_byte_tally_and_the_counters_keep_its_bytes(tmp_path: Path) -> None:
    clock = FakeClock()
    config = TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", interval=5, peer_ttl=15, task_retention=HOUR)
    service = TrackerService(config, clock=clock)
    metrics = Metrics()
    metrics.add(TrackerCollector(service, Admission(4, 5.0)))
    idle, seeded = "a" * 40, "b" * 40
    async with service.store:
        await service.resume()
        await service.announce(idle, _request(idle, "p1", received=ScopeBytes(origin=100, rack=20)), "10.0.0.1")
        await service.announce(seeded, _request(seeded, "s1", received=ScopeBytes(origin=7)), "10.0.0.2")
        counted = parse((await metrics.exposition()).decode())
        assert counted.total("shoal_tracker_received_bytes_total") == 127
        removed = 0
        while not removed:  # the idle task goes after an hour; the seeded one is announced all along
            clock.advance(300)
            await service.announce(seeded, _request(seeded, "s1", received=ScopeBytes(origin=7)), "10.0.0.2")
            await service.store.expire(clock.now, config.peer_ttl)
            removed = await service.retire_tasks(clock.now)
        assert removed == 1 and await service.store.read_rows(idle) is None
        assert len(service.scope_bytes) == 1 and service.scope_bytes.totals(idle) == ScopeBytes()
        assert service.scope_bytes.totals(seeded) == ScopeBytes(origin=7)
        after = parse((await metrics.exposition()).decode())
        for source in ("origin", "rack", "site", "elsewhere", "unlabelled"):
            labels = {"source": source}
            assert after.value("shoal_tracker_received_bytes_total", **labels) == counted.value(
                "shoal_tracker_received_bytes_total", **labels
            ), source
        # A task that moved to another tracker leaves the tally too; the counters keep what was counted.
        service.drop_tasks([seeded])
        assert len(service.scope_bytes) == 0
        assert service.scope_bytes.grand_totals() == ScopeBytes(origin=107, rack=20)


async def test_what_another_tracker_took_over_is_let_go_by_its_key(tmp_path: Path) -> None:
    """The keys of a task, a BitTorrent swarm and a pool (core.ownership): a tracker that loses them forgets
    each, and keeps the rest."""
    service = TrackerService(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}"), clock=FakeClock())
    task, other = "a" * 40, "b" * 40
    swarm = bytes(range(20))
    query = encode_query({**announce_fields(1, info_hash=swarm), "compact": 1})
    async with service.store:
        await service.resume()
        for t in (task, other):
            await service.announce(t, _request(t, "p1", event="started"), "10.0.0.1")
        service.bt.announce(query, "10.0.0.2", "10.0.0.9")
        await service.pools.create("lab", private=False)
        await service.pools.heartbeat("lab", "m1", Heartbeat(name="m1"), version=None, wait=0)
        assert sorted(service.held_keys()) == sorted([task, other, swarm_key(swarm), pool_key("lab")])
        service.drop_keys([task, swarm_key(swarm), pool_key("lab")])
        assert service.held_keys() == [other]
        assert len(service.bt.swarms) == 0
