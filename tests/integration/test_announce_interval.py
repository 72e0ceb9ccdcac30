"""The announce interval over the tracker's real HTTP API (core.interval): a seed of a task nobody downloads
is told to come back seldom, a peer of a busy swarm soon, and each lives as long as its interval says.

The tracker runs in this process on a fake clock (no test here waits for time to pass); its peers are the
peer's own tracker client, announcing content tasks registered with every piece hash, so a peer with the
whole file is a seed."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from shoal.core.bitfield import Bitfield
from shoal.core.ids import PeerIdentity, content_task_id
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceRequest, AnnounceResponse, piece_hash_bytes
from shoal.http.listen import listen
from shoal.peer.tracker_client import TrackerClient
from shoal.testing.clock import FakeClock
from shoal.testing.hostile import identity, piece_hashes
from shoal.tracker.app import RUNNER_OPTIONS, build_app
from shoal.tracker.config import TrackerConfig
from shoal.tracker.service import TrackerService

SIZE = 1 << 20
CONFIG = {"interval": 5.0, "idle_interval": 60.0, "max_interval": 300.0, "peer_ttl": 15.0}


class Fleet:
    """Peers of content tasks, announcing to one tracker."""

    def __init__(self, client: TrackerClient, base: str, session: aiohttp.ClientSession, clock: FakeClock) -> None:
        self.client, self.base, self.session, self.clock = client, base, session, clock

    async def register(self) -> tuple[str, Manifest]:
        """A content task of fresh random bytes, registered with every piece hash."""
        data = os.urandom(SIZE)
        manifest = Manifest.for_identity(OriginIdentity(SIZE))
        hashes = piece_hashes(manifest, data)
        ordered = tuple(hashes[i] for i in range(manifest.piece_count))
        task_id = content_task_id(SIZE, manifest.piece_length, ordered)
        who = identity(f"registrar-{task_id}")
        await self.client.announce(
            task_id,
            AnnounceRequest(
                peer_id=who.peer_id,
                secret=who.secret,
                url="http://origin.example/f",
                port=1,
                event="stopped",
                origin=manifest.identity,
                piece_hash_bytes=piece_hash_bytes(ordered),
            ),
        )
        return task_id, manifest

    async def announce(self, task_id: str, manifest: Manifest, who: PeerIdentity, *, seed: bool) -> AnnounceResponse:
        have = Bitfield.full(manifest.piece_count) if seed else Bitfield(manifest.piece_count)
        request = AnnounceRequest(
            peer_id=who.peer_id,
            secret=who.secret,
            url="http://origin.example/f",
            port=7000,
            host="127.0.0.1",
            generation=1,
            bitfield=have.encode(),
        )
        return await self.client.announce(task_id, request)

    async def peers(self, task_id: str) -> set[str]:
        async with self.session.get(f"{self.base}/v1/tasks/{task_id}") as reply:
            assert reply.status == 200
            return {p["peer_id"] for p in (await reply.json())["peers"]}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    clock = FakeClock()
    app = build_app(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", **CONFIG), clock=clock)  # type: ignore[arg-type]
    runner, port = await listen(app, "127.0.0.1", 0, **RUNNER_OPTIONS)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            yield Fleet(TrackerClient(base, session), base, session, clock)
    finally:
        await runner.cleanup()


async def test_a_seed_of_an_idle_task_is_told_a_longer_interval_than_a_downloader_of_a_busy_one(
    fleet: Fleet,
) -> None:
    idle, idle_manifest = await fleet.register()
    busy, busy_manifest = await fleet.register()
    seed, other_seed, downloader = identity("seed"), identity("other-seed"), identity("downloader")

    idle_seed = await fleet.announce(idle, idle_manifest, seed, seed=True)
    await fleet.announce(busy, busy_manifest, other_seed, seed=True)
    downloading = await fleet.announce(busy, busy_manifest, downloader, seed=False)
    busy_seed = await fleet.announce(busy, busy_manifest, other_seed, seed=True)

    assert 54.0 <= idle_seed.interval <= 60.0  # the idle interval, less at most 10% of jitter
    assert 4.5 <= downloading.interval <= 5.0
    assert 4.5 <= busy_seed.interval <= 5.0  # a seed of a swarm with a downloader: the hand-outs stay fresh


async def test_a_peer_lives_as_long_as_its_interval_says(fleet: Fleet) -> None:
    task_id, manifest = await fleet.register()
    seed, downloader = identity("seed"), identity("downloader")
    told = await fleet.announce(task_id, manifest, seed, seed=True)
    assert told.interval >= 54.0
    await fleet.announce(task_id, manifest, downloader, seed=False)

    fleet.clock.advance(15.0)  # the downloader's TTL, and the seed's had it been told 5 s
    assert await fleet.peers(task_id) == {seed.peer_id}
    fleet.clock.advance(told.interval * 3 - 15.0 - 0.01)  # just short of three of the seed's intervals
    assert await fleet.peers(task_id) == {seed.peer_id}
    fleet.clock.advance(0.02)
    assert await fleet.peers(task_id) == set()


def test_a_shed_announce_waits_up_to_the_stretched_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    config = TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", announce_rate=10.0, **CONFIG)  # type: ignore[arg-type]
    service = TrackerService(config, clock)
    assert service.longest_retry() == 5  # no load: the busy interval, as before
    for n in range(200):  # 40 announces a second at 5 s: four times the target and more
        service.demand.heard(("t", str(n)), 5.0, clock() + 15.0)
    clock.advance(1.0)
    stretch = service.demand.stretch(clock())
    assert stretch > 4.0
    assert service.longest_retry() == math.ceil(5.0 * stretch)
