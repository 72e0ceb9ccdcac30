"""The load generator's simulated peers after a shed announce (benchmarks/tracker_load.py, tracker_load_peers.py):
as a real peer, one told 503 with Retry-After announces again after that wait, built afresh and with no turn's
progress, once at a time, and not when its next turn or a later announce comes first."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import tracker_load
from shoal.core.retry import BUSY_JITTER
from shoal.testing.http import serving
from shoal.testing.poll import wait_until_async
from tracker_load import Load, Step, busy_wait
from tracker_load_peers import SimPeer, SimTask, Workload


def test_a_shed_announce_waits_the_retry_after_with_jitter_as_a_real_peer() -> None:
    rng = random.Random(7)
    waits = [busy_wait(503, "2", "update", rng) for _ in range(200)]
    assert all(w is not None and 2.0 <= w <= 2.0 * (1 + BUSY_JITTER) for w in waits)
    assert busy_wait(429, "3", "completed", rng) is not None


def test_no_announce_is_sent_again_without_a_delay_to_wait_or_for_a_peer_leaving() -> None:
    rng = random.Random(7)
    assert busy_wait(503, None, "update", rng) is None  # not busy: an unreachable tracker, the next turn
    assert busy_wait(503, "Tue, 08 Dec 2026 00:00:00 GMT", "update", rng) is None  # a date is not a delay
    assert busy_wait(500, "1", "update", rng) is None
    assert busy_wait(0, None, "update", rng) is None  # no reply at all
    assert busy_wait(503, "1", "stopped", rng) is None


def downloader(task: SimTask, leased: list[int]) -> SimPeer:
    peer = SimPeer(task, 0, 0, seed=False, labels=("", ""))
    peer.phase, peer.leased = "down", list(leased)
    task.hashed = (1 << task.pieces) - 1  # every piece is there to gain from the swarm
    return peer


def test_sent_again_the_announce_repeats_its_reports_and_gains_no_pieces() -> None:
    task = SimTask.make("t", 0, 256)
    peer = downloader(task, [100, 101])
    work = Workload(download_turns=8)
    first, done = peer.request(work)
    assert set(first.done) == {100, 101}
    have = peer.have
    peer.unanswered(done)  # shed
    again, repeated = peer.request(work, again=True)
    assert repeated == done and dict(again.done) == dict(first.done)
    assert peer.have == have  # no pieces from the swarm for an announce that is not a turn
    peer.request(work)
    assert peer.have.bit_count() > have.bit_count()  # a turn gains them


def test_a_seed_sent_again_counts_no_seeding_turn() -> None:
    task = SimTask.make("t", 1, 256)
    peer = SimPeer(task, 0, 0, seed=False, labels=("", ""))
    peer.phase, peer.have = "seeding", (1 << task.pieces) - 1
    work = Workload(seed_turns=1)
    peer.request(work)
    peer.request(work, again=True)
    peer.request(work, again=True)
    assert peer.phase == "seeding"  # one turn seeded of one: the next turn stops
    stopped, _ = peer.request(work)
    assert stopped.event == "stopped"


class Tracker:
    """A stand-in tracker: each announce's body is kept; the first ``shed`` are answered 503 with Retry-After
    1, each once ``release`` is set; the rest 200 at once."""

    def __init__(self, shed: int) -> None:
        self.shed = shed
        self.bodies: list[dict] = []
        self.release = asyncio.Event()
        self.release.set()
        self.asked = asyncio.Event()

    async def announce(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.read()))
        self.asked.set()
        if len(self.bodies) <= self.shed:
            await self.release.wait()
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "1"})
        return web.json_response({"generation": 1, "leases": [], "interval": 5.0})


@pytest.fixture
async def tracker_url() -> AsyncIterator[tuple[Tracker, str]]:
    tracker = Tracker(shed=1)
    app = web.Application()
    app.router.add_post("/v1/tasks/{task}/announce", tracker.announce)
    async with serving(app) as url:
        yield tracker, url


def loaded(url: str, peer: SimPeer, *more: str) -> Load:
    args = tracker_load.parse_args(["--url", url, "--hosts", "1", "--connections", "4", "--no-pin", *more])
    return Load(args, url, [peer])


async def ended(load: Load) -> None:
    """Every announce sent so far has had its reply taken."""
    await wait_until_async(lambda: not load.inflight, "the generator's announces to end")


async def test_a_shed_announce_is_sent_again_after_its_retry_after_and_counted_apart(
    tracker_url: tuple[Tracker, str],
) -> None:
    tracker, url = tracker_url
    peer = downloader(SimTask.make("t", 2, 256), [5])
    async with loaded(url, peer) as load:
        step = load.step = Step(1.0, 1.0)
        load._spawn(load.loop.time(), step, load.loop.time())
        await wait_until_async(lambda: len(tracker.bodies) == 2, "the shed announce to be sent again")
        await ended(load)
    assert tracker.bodies[1]["done"] == tracker.bodies[0]["done"] == {"5": peer.task.digest(5)}
    assert (step.offered, step.again, step.unavailable, step.ok) == (1, 1, 1, 1)
    assert load.sent_again == 1


async def test_without_retry_a_shed_peer_waits_for_its_next_turn(tracker_url: tuple[Tracker, str]) -> None:
    tracker, url = tracker_url
    peer = downloader(SimTask.make("t", 3, 256), [5])
    async with loaded(url, peer, "--no-retry") as load:
        load._spawn(load.loop.time(), None, load.loop.time())
        await ended(load)
        assert not load._again
    assert len(tracker.bodies) == 1


async def test_the_peers_next_turn_takes_the_place_of_an_announce_still_to_be_sent_again(
    tracker_url: tuple[Tracker, str],
) -> None:
    tracker, url = tracker_url
    peer = downloader(SimTask.make("t", 4, 256), [5])
    async with loaded(url, peer) as load:
        load._spawn(load.loop.time(), None, load.loop.time())
        await ended(load)
        waiting = load._again[peer.number]
        load._spawn(load.loop.time(), None, load.loop.time())  # its next turn, before the wait is over
        assert waiting.cancelled() and not load._again
        await ended(load)
    assert len(tracker.bodies) == 2


async def test_a_shed_announce_is_not_sent_again_when_a_later_one_of_the_peer_went_out_meanwhile(
    tracker_url: tuple[Tracker, str],
) -> None:
    """One announce at a time, as a real peer: the turn that went out while the shed one was unanswered is
    the peer's announce, and its reply is still to come."""
    tracker, url = tracker_url
    tracker.release.clear()
    peer = downloader(SimTask.make("t", 5, 256), [5])
    async with loaded(url, peer) as load:
        load._spawn(load.loop.time(), None, load.loop.time())
        await tracker.asked.wait()
        load._spawn(load.loop.time(), None, load.loop.time())  # the next turn, the first still unanswered
        await wait_until_async(lambda: len(tracker.bodies) == 2, "the next turn to reach the tracker")
        tracker.release.set()  # the first is shed now
        await ended(load)
        assert not load._again
    assert len(tracker.bodies) == 2
