"""The interval an announce's reply gives (core.announce with core.interval), and the TTL that follows it."""

from __future__ import annotations

from dataclasses import replace

from shoal.core.announce import decide_announce
from shoal.core.announce_values import AnnounceOutcome, Pace, TrackerPolicy
from shoal.core.bitfield import Bitfield
from shoal.core.interval import Pacing
from shoal.core.leases import Lease
from shoal.core.messages import AnnounceRequest
from shoal.core.swarm import Swarm
from shoal.core.task_snapshot import TaskSnapshot

from .factories import NOW, PIECES, POLICY, TASK_ID, peer, request, snapshot, task

PACING = Pacing(busy=5.0, idle=60.0, longest=300.0, target=100.0, jitter=0.1, peer_ttl=15.0)
ADAPTIVE = replace(POLICY, peer_ttl=15.0, pacing=PACING)
EVERY = range(PIECES)


def decide(
    snap: TaskSnapshot,
    req: AnnounceRequest,
    *,
    now: float = NOW,
    pace: Pace | None = None,
    policy: TrackerPolicy = ADAPTIVE,
) -> AnnounceOutcome:
    pace = pace or Pace()
    return decide_announce(snap, req, task_id=TASK_ID, seen_host="192.0.2.9", now=now, policy=policy, pace=pace)


def seed_request(peer_id: str = "s1") -> AnnounceRequest:
    return request(peer_id, bitfield=Bitfield.full(PIECES).encode())


def test_a_seed_of_an_idle_task_is_told_the_idle_interval_and_lives_in_proportion() -> None:
    snap = snapshot(task(), peers=[peer("s2", have=EVERY)])
    out = decide(snap, seed_request())
    assert out.response is not None and out.response.interval == 60.0
    assert out.nominal == 60.0
    assert out.peer is not None and out.peer.ttl == 180.0


def test_a_downloader_is_told_the_busy_interval() -> None:
    snap = snapshot(task(), peers=[peer("s2", have=EVERY)])
    out = decide(snap, request("d1", bitfield=None))
    assert out.response is not None and out.response.interval == 5.0
    assert out.peer is not None and out.peer.ttl == 15.0


def test_a_seed_of_a_swarm_with_a_downloader_is_told_the_busy_interval() -> None:
    snap = snapshot(task(), peers=[peer("d1", have=[0, 1])])
    out = decide(snap, seed_request())
    assert out.response is not None and out.response.interval == 5.0


def test_a_seed_beside_an_origin_lease_out_is_told_the_busy_interval() -> None:
    # The lease's holder is a seed as the tracker last heard (its report is on its way): the swarm is busy.
    snap = snapshot(task(), peers=[peer("s2", have=EVERY)], leases=[Lease(3, "s2", NOW + 10)])
    out = decide(snap, seed_request())
    assert out.response is not None and out.response.interval == 5.0


def test_load_stretches_the_interval_and_jitter_shortens_it() -> None:
    snap = snapshot(task(), peers=[peer("s2", have=EVERY)])
    out = decide(snap, seed_request(), pace=Pace(stretch=2.0, draw=0.5))
    assert out.response is not None and out.response.interval == 60.0 * 2 * (1 - 0.1 * 0.5)
    assert out.nominal == 60.0  # what load is worked out from: the state's interval, not the stretched one


def test_a_downloaders_leases_expire_with_its_ttl() -> None:
    out = decide(snapshot(task()), request("d1", want_leases=2), pace=Pace(stretch=3.0))
    assert out.peer is not None and out.peer.ttl == 45.0
    assert out.put_leases and all(lease.expires == NOW + 45.0 for lease in out.put_leases)


def test_without_pacing_every_peer_is_told_the_policys_interval() -> None:
    policy = TrackerPolicy(interval=5.0, peer_ttl=30.0, max_peers=8)
    snap = snapshot(task(), peers=[peer("s2", have=EVERY)])
    out = decide(snap, seed_request(), policy=policy, pace=Pace(draw=0.9))
    assert out.response is not None and out.response.interval == 5.0
    assert out.peer is not None and out.peer.ttl == 30.0


def test_a_seed_told_a_long_interval_is_not_expired_before_its_ttl() -> None:
    swarm = Swarm(1, PIECES)
    seed = decide(snapshot(task()), seed_request())
    swarm.apply(seed)
    assert seed.peer is not None and seed.peer.ttl == 180.0
    downloader = decide(snapshot(task(), peers=list(swarm.peers.values())), request("d1"), now=NOW)
    swarm.apply(downloader)
    assert swarm.expire(NOW + 15.0, POLICY.peer_ttl) == 1  # the downloader, told 5 s
    assert set(swarm.peers) == {"s1"}
    assert swarm.expire(NOW + 179.0, 15.0) == 0
    assert swarm.expire(NOW + 180.0, 15.0) == 1 and not swarm.peers


def test_the_swarm_counts_its_seeds_as_peers_come_finish_and_go() -> None:
    swarm = Swarm(1, PIECES)
    swarm.apply(decide(snapshot(task()), request("d1", bitfield=None)))
    assert (swarm.seeds, swarm.downloading("x"), swarm.downloading("d1")) == (0, True, False)
    swarm.apply(decide(snapshot(task(), peers=list(swarm.peers.values())), seed_request("d1")))
    assert (swarm.seeds, swarm.downloading("x")) == (1, False)
    stopped = decide(snapshot(task(), peers=list(swarm.peers.values())), request("d1", event="stopped"))
    swarm.apply(stopped)
    assert (swarm.seeds, len(swarm.peers)) == (0, 0)
