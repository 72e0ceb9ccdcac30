"""The tracker's dashboard built in slices on the tracker's event loop (tracker.dashboard): an announce
arriving while a snapshot is built is decided between two slices, and the snapshot is the one a build in
one go would make. In process, on a real SQLite file; no clock and no timing: loop turns are counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest, ScopeBytes
from shoal.tracker import dashboard
from shoal.tracker.admission import Admission
from shoal.tracker.config import TrackerConfig
from shoal.tracker.dashboard import TrackerDashboardSource
from shoal.tracker.service import TrackerService

PIECES = 16
TASKS, PEERS = 3, 30


def _announce(task: int, peer: int, pieces: int, generation: int) -> AnnounceRequest:
    return AnnounceRequest(
        peer_id=f"p{task}-{peer}",
        url=f"http://origin.example/file-{task}.bin",
        port=7000,
        host=f"10.0.{task}.{peer}",
        generation=generation,
        origin=OriginIdentity(PIECES << 18),
        bitfield=Bitfield.of(PIECES, range(pieces)).encode(),
        received=ScopeBytes(origin=peer),
    )


async def _filled(tmp_path: Path) -> TrackerService:
    config = TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", max_new_peers_per_source=0)
    service = TrackerService(config)
    await service.store.__aenter__()
    for task in range(TASKS):
        generation = 0
        for peer in range(PEERS):
            reply = await service.announce(f"{task:040x}", _announce(task, peer, peer % PIECES, generation), "10.0.0.1")
            generation = reply.generation
    return service


async def test_an_announce_is_decided_between_two_slices_of_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await _filled(tmp_path)
    try:
        source = TrackerDashboardSource(service, Admission(64, 5.0))
        whole = await source.tasks()  # SLICE is larger than everything here: one slice
        monkeypatch.setattr(dashboard, "SLICE", 10)
        turns = 0
        building = True

        async def count_turns() -> None:
            nonlocal turns
            while building:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.ensure_future(count_turns())
        snapshot = asyncio.ensure_future(source.tasks())
        await asyncio.sleep(0)  # the snapshot has taken its first slice
        assert not snapshot.done()
        update = _announce(0, PEERS, 0, 1)  # a new peer of a known task: decided in memory, nothing written
        announced = asyncio.ensure_future(service.announce(f"{0:040x}", update, "10.0.0.1"))
        done, _ = await asyncio.wait({snapshot, announced}, return_when=asyncio.FIRST_COMPLETED)
        assert announced in done and snapshot not in done, "the announce waited for the whole snapshot"
        sliced = await snapshot
        building = False
        await counter
        # 3 tasks and 90 peers, 10 a slice: the loop turned at least once between each two slices.
        assert turns >= (TASKS + TASKS * PEERS) // 10 - 1
        assert [t.task_id for t in sliced.tasks] == [t.task_id for t in whole.tasks]
        # The new peer joined between two slices: it is in the snapshot or not, and nothing else changed.
        new = f"p0-{PEERS}"
        for before, after in zip(whole.tasks, sliced.tasks, strict=True):
            shown = [p.peer_id for p in after.shown if p.peer_id != new]
            assert shown == [p.peer_id for p in before.shown][: len(shown)]
        again = {t.task_id: t.peers for t in (await source.tasks()).tasks}
        assert again == {t.task_id: t.peers + (t.task_id == f"{0:040x}") for t in whole.tasks}
    finally:
        await service.store.__aexit__(None, None, None)


async def test_a_sliced_snapshot_is_the_one_built_in_one_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = await _filled(tmp_path)
    try:
        source = TrackerDashboardSource(service, Admission(64, 5.0))
        whole = await source.tasks(limit=2)
        for size in (1, 7, 29, 31):
            monkeypatch.setattr(dashboard, "SLICE", size)
            assert await source.tasks(limit=2) == whole, size
        assert whole.more == 1 and len(whole.tasks) == 2
        load = source.load(whole)
        assert (load.tasks, load.peers) == (TASKS, TASKS * PEERS)
    finally:
        await service.store.__aexit__(None, None, None)
