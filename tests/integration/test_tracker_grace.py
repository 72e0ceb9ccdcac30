"""The tracker's grace after a start (or tasks moved to it): no origin lease granted afresh on a task read from
the database while the peers that may hold leases from before have not had two intervals of being heard, and
none of that longer than a peer TTL (tracker.service, GRACE_INTERVALS)."""

from __future__ import annotations

from pathlib import Path

from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.testing.clock import FakeClock
from shoal.tracker.config import TrackerConfig
from shoal.tracker.service import TrackerService

TASK = "a" * 40
URL = f"http://origin.example/{TASK}"
IDENTITY = OriginIdentity(64 * 256 * 1024, '"v1"')
CONFIG = dict(interval=5.0, peer_ttl=15.0)  # grace: 10 s heard, at most 15 s


async def ask(service: TrackerService, peer: str, **fields: object) -> AnnounceResponse:
    fields = {"generation": 1, **fields}
    request = AnnounceRequest(peer_id=peer, url=URL, port=7000, **fields)  # type: ignore[arg-type]
    return await service.announce(TASK, request, "10.0.0.1")


async def restarted(tmp_path: Path, clock: FakeClock) -> TrackerService:
    """A tracker whose database holds TASK, whose one downloader was leased pieces 0-3 before the restart."""
    db = f"sqlite:///{tmp_path / 'tracker.db'}"
    before = TrackerService(TrackerConfig(db=db, **CONFIG), clock=clock)  # type: ignore[arg-type]
    async with before.store:
        await before.resume()
        await ask(before, "p1", event="started", generation=0, origin=IDENTITY)
        assert (await ask(before, "p1", want_leases=4)).leases == (0, 1, 2, 3)
    return TrackerService(TrackerConfig(db=db, **CONFIG), clock=clock)  # type: ignore[arg-type]


async def newcomer_leases(service: TrackerService, peer: str) -> tuple[int, ...]:
    await ask(service, peer, event="started", origin=IDENTITY)
    return (await ask(service, peer, want_leases=4)).leases


async def test_a_grace_spent_shedding_announces_lasts_until_its_peers_had_two_intervals_of_being_heard(
    tmp_path: Path,
) -> None:
    """p1 fetches pieces 0-3 under leases granted before the restart; its announces are shed (503) for the
    first interval after it. Ten seconds on, the tracker has heard its peers for five: p2 gets no lease that
    could be one of p1's. Five seconds more of hearing, and p2 is leased what nobody has claimed."""
    clock = FakeClock()
    service = await restarted(tmp_path, clock)
    async with service.store:
        await service.resume()
        service.deafness.tick(clock.now)
        service.deafness.shed()  # p1's announce, among others, answered 503 with Retry-After
        service.deafness.tick(clock.advance(5.0))
        service.deafness.tick(clock.advance(5.0))
        clock.advance(0.5)
        assert await newcomer_leases(service, "p2") == ()
        clock.advance(5.0)
        assert await newcomer_leases(service, "p3") == (0, 1, 2, 3)


async def test_a_grace_heard_throughout_ends_after_two_intervals(tmp_path: Path) -> None:
    clock = FakeClock()
    service = await restarted(tmp_path, clock)
    async with service.store:
        await service.resume()
        service.deafness.tick(clock.now)
        service.deafness.tick(clock.advance(5.0))
        clock.advance(4.5)
        assert await newcomer_leases(service, "p2") == ()
        service.deafness.tick(clock.advance(0.5))
        clock.advance(0.5)
        assert await newcomer_leases(service, "p3") == (0, 1, 2, 3)


async def test_a_grace_ends_a_peer_ttl_after_it_began_however_long_the_tracker_shed(tmp_path: Path) -> None:
    """By then every lease granted before the restart has lapsed by the plain TTL unless its holder was
    heard since: a tracker shedding without end still leases the file."""
    clock = FakeClock()
    service = await restarted(tmp_path, clock)
    async with service.store:
        await service.resume()
        service.deafness.tick(clock.now)
        for _ in range(2):
            service.deafness.shed()
            service.deafness.tick(clock.advance(5.0))
        service.deafness.shed()
        clock.advance(4.5)  # 14.5 s after the start, deaf throughout
        assert await newcomer_leases(service, "p2") == ()
        clock.advance(1.0)
        assert await newcomer_leases(service, "p3") == (0, 1, 2, 3)


async def test_a_peer_that_names_its_fetches_in_the_grace_gets_its_leases_back(tmp_path: Path) -> None:
    clock = FakeClock()
    service = await restarted(tmp_path, clock)
    async with service.store:
        await service.resume()
        service.deafness.tick(clock.now)
        service.deafness.shed()
        service.deafness.tick(clock.advance(5.0))
        service.deafness.tick(clock.advance(5.0))
        clock.advance(1.0)
        assert (await ask(service, "p1", fetching=(0, 1, 2, 3))).leases == (0, 1, 2, 3)
        clock.advance(5.0)  # the grace is over: p2 is leased the pieces after them
        assert await newcomer_leases(service, "p2") == (4, 5, 6, 7)
