"""Trackers on one PostgreSQL level their load (core.balance): a busy member places tasks on an idle one,
the peers follow the owner the forwarding tracker names, and each task has one decider throughout."""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from subprocess import Popen

import aiohttp
import msgspec

from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest
from shoal.core.owner_hint import OWNER_HEADER
from shoal.testing.poll import wait_until, wait_until_async
from shoal.testing.processes import Service
from tests.integration.conftest import Origin, sha256, task_summary
from tests.integration.test_swarm import wait_for_file
from tests.integration.test_tracker_cluster import (  # noqa: F401 (pg_url: a fixture)
    SIZE,
    cluster_of,
    origin_pieces,
    owner_of,
    pg_url,
    start_cluster,
)

TASKS = 12
PAUSE = 0.1
"""Seconds between one peer's announces: the 12 tasks' peers make about 100 requests a second."""


def metric(t: Service, name: str) -> float:
    with urllib.request.urlopen(f"{t.url}/metrics") as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in {t.url}/metrics")


@dataclass
class Run:
    """What the peers of :func:`_peers` saw."""

    deciders: dict[str, str] = field(default_factory=dict)
    """Each task's latest decider: the owner a reply named, else the tracker asked."""
    statuses: Counter[int] = field(default_factory=Counter)
    answered: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """When each task's announces were answered 200 (time.monotonic)."""
    unreachable: int = 0
    """Announces whose tracker could not be reached (the peer went back to its first tracker)."""


async def _peers(
    urls: list[str], first: str, until: float, side: Callable[[Run], Awaitable[None]] | None = None
) -> Run:
    """One peer per task of ``urls``, announcing every PAUSE through ``first`` until it names another owner
    (OWNER_HEADER), then to that owner, as peer.tracker_client does; a 503 (busy, moving) is asked again, and
    a tracker that cannot be reached sends the peer back to ``first``, its list. ``side`` runs beside them.
    Returns what they saw once every peer has announced for ``until`` seconds, or once ``side`` is done."""
    run = Run()
    done = asyncio.Event()

    async def peer(session: aiohttp.ClientSession, url: str) -> None:
        me = PeerIdentity.from_secret(secrets.token_hex(16))
        task_id = task_id_for_url(url)
        tracker = first
        origin: OriginIdentity | None = OriginIdentity(1 << 20, etag='"v1"')
        event = "started"
        deadline = time.monotonic() + until
        while time.monotonic() < deadline and not done.is_set():
            request = AnnounceRequest(me.peer_id, url, 7000, secret=me.secret, event=event, origin=origin)
            try:
                async with session.post(
                    f"{tracker}/v1/tasks/{task_id}/announce",
                    data=msgspec.json.encode(request),
                    headers={"Content-Type": "application/json"},
                ) as reply:
                    run.statuses[reply.status] += 1
                    named = reply.headers.get(OWNER_HEADER, "").rstrip("/")
                    if reply.status == 200:
                        run.deciders[url] = named or tracker
                        run.answered[url].append(time.monotonic())
                        origin, event = None, "update"
                    if named:
                        tracker = named
            except aiohttp.ClientConnectionError:
                run.unreachable += 1
                tracker = first
            await asyncio.sleep(PAUSE)

    async def beside() -> None:
        if side is not None:
            try:
                await side(run)
            finally:
                done.set()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(beside(), *(peer(session, url) for url in urls))
    return run


def test_a_busy_tracker_places_tasks_on_an_idle_one_and_the_peers_follow(tracker, pg_url):  # noqa: F811
    by_id = start_cluster(tracker, pg_url, 2, "--balance-floor", "1", "--balance-round", "2")
    busy_id, idle_id = list(by_id)
    busy, idle = by_id[busy_id], by_id[idle_id]
    # Tasks the hash gives to one member: all the requests are its, and the other has none.
    candidates = (f"http://127.0.0.1:9/balance-{i}.bin" for i in range(1000))
    urls = [u for u in candidates if owner_of(task_id_for_url(u), busy) == busy_id][:TASKS]

    placed: list[float] = []

    async def settle(run: Run) -> None:
        """Until every task the busy member placed is decided by the idle one (a later round may place one
        more when the first measured the tasks unevenly), then a few rounds on, then until so again."""

        async def followed() -> bool:
            made = await asyncio.to_thread(metric, busy, "shoal_tracker_cluster_placed_tasks_total")
            placed[:] = [made]
            return made > 0 and sum(d == idle.url for d in run.deciders.values()) == made

        await wait_until_async(followed, "the placed tasks decided by the idle member")
        # Peers go on for three more of the busy member's rounds (each publishes a new load), past the
        # settling wait (core.balance.settled) of the last move, in which a member that did not wait would
        # place again: a ping-pong that the assertions below catch.
        loads = [await asyncio.to_thread(metric, busy, "shoal_tracker_cluster_load")]

        async def rounds_later() -> bool:
            load = await asyncio.to_thread(metric, busy, "shoal_tracker_cluster_load")
            if load != loads[-1]:
                loads.append(load)
            return len(loads) > 3

        await wait_until_async(rounds_later, "three more balancing rounds")
        await wait_until_async(followed, "the placed tasks decided by the idle member, rounds later")

    run = asyncio.run(_peers(urls, busy.url, until=600.0, side=settle))
    deciders, statuses = run.deciders, run.statuses

    moved = [u for u, d in deciders.items() if d == idle.url]
    assert 0 < len(moved) < TASKS, f"tasks decided by the idle member at the end: {len(moved)} of {TASKS}"
    assert set(deciders.values()) == {busy.url, idle.url} and len(deciders) == TASKS
    # Only 200s and the 503s of a task that is moving (or of a member shedding): nothing failed.
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 10 * TASKS
    # The busy member placed what moved, the rows say so to both members, and the new owner knows the
    # moved tasks' peers (rebuilt from their announces).
    # About half (the tasks are alike), and nothing came back. A member that placed again before the loads
    # showed its first moves would give as much again, and the idle one would then give some back.
    assert placed == [len(moved)] and len(moved) <= TASKS // 2 + 1, (placed, moved)
    assert metric(busy, "shoal_tracker_cluster_placed_tasks_total") <= TASKS // 2 + 1
    assert metric(idle, "shoal_tracker_cluster_placed_tasks_total") == 0
    for t in (busy, idle):
        placed = {m["tracker_id"]: m["placed"] for m in cluster_of(t)["members"]}
        assert placed[idle_id] >= len(moved), placed
    for url in moved:
        peers = task_summary(idle, task_id_for_url(url))["peers"]
        assert len(peers) == 1, f"{url}: {peers}"  # type: ignore[arg-type]
    assert metric(idle, "shoal_tracker_cluster_load") > 0


def test_a_member_run_with_no_balance_keeps_its_tasks(tracker, pg_url):  # noqa: F811
    by_id = start_cluster(tracker, pg_url, 2, "--no-balance", "--balance-round", "2")
    busy_id, _ = list(by_id)
    busy = by_id[busy_id]
    candidates = (f"http://127.0.0.1:9/kept-{i}.bin" for i in range(1000))
    urls = [u for u in candidates if owner_of(task_id_for_url(u), busy) == busy_id][:TASKS]
    run = asyncio.run(_peers(urls, busy.url, until=15.0))
    assert set(run.deciders.values()) == {busy.url}
    # It still measures and publishes its load: the members that do balance weigh it.
    assert metric(busy, "shoal_tracker_cluster_load") > 10
    assert metric(busy, "shoal_tracker_cluster_placed_tasks_total") == 0


def test_the_tasks_placed_on_a_tracker_that_dies_go_back_to_the_hash(tracker, pg_url):  # noqa: F811
    """The member tasks were placed on is SIGKILLed: its placements count for nothing once its row is dead,
    the hash owner (the survivor) takes those tasks over, and their peers, back at their first tracker, are
    answered again within a few seconds."""
    by_id = start_cluster(tracker, pg_url, 2, "--balance-floor", "1", "--balance-round", "2")
    busy_id, idle_id = list(by_id)
    busy, idle = by_id[busy_id], by_id[idle_id]
    candidates = (f"http://127.0.0.1:9/killed-{i}.bin" for i in range(1000))
    urls = [u for u in candidates if owner_of(task_id_for_url(u), busy) == busy_id][:TASKS]
    killed: list[float] = []

    async def kill_once_placed(run: Run) -> None:
        deadline = time.monotonic() + 40
        while sum(d == idle.url for d in run.deciders.values()) == 0:
            assert time.monotonic() < deadline, "no task was placed on the idle tracker"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(idle.kill)
        killed.append(time.monotonic())
        # The peers go on until every task was answered again after the kill, however long the start took.
        await wait_until_async(
            lambda: all(any(t > killed[0] for t in run.answered[u]) for u in urls), "every task answered again"
        )

    run = asyncio.run(_peers(urls, busy.url, until=600.0, side=kill_once_placed))

    assert killed, "the idle tracker was never killed"
    assert set(run.deciders.values()) == {busy.url}, run.deciders
    assert run.unreachable > 0, "no peer found the dead tracker gone: the kill came too late to test anything"
    assert set(run.statuses) <= {200, 503}, run.statuses
    # Every task is answered after the kill, the moved ones once the dead row expired (6 s after its last
    # renewal, by the survivor's next reading) and the survivor's grace let it decide them.
    back = [min(t for t in run.answered[u] if t > killed[0]) - killed[0] for u in urls]
    assert max(back) < 20, f"seconds until each task was answered again: {sorted(back)}"


def test_a_swarm_placed_on_another_tracker_mid_download_completes_each_piece_from_the_origin_once(
    tmp_path,
    tracker,
    origin,
    make_file,
    spawn_get,
    pg_url,  # noqa: F811
):
    """Two swarms downloading through the busy tracker, the origin held to a trickle until one of them was
    placed on the idle tracker and is decided there: every download completes, and no piece of either file
    left the origin twice (the new owner learned the origin fetches in flight from the peers' announces, as
    in a take-over, and leased none of those pieces afresh)."""
    src: Origin = origin("--rate", "64K")  # 8 MiB a file: minutes at this rate, until the move is seen
    by_id = start_cluster(
        tracker, pg_url, 2, "--balance-floor", "1", "--balance-round", "2", "--interval", "0.5", "--audit-share", "0"
    )
    busy_id, idle_id = list(by_id)
    busy, idle = by_id[busy_id], by_id[idle_id]
    names = [
        n for n in (f"moving-{i}.bin" for i in range(1000)) if owner_of(task_id_for_url(src.url(n)), busy) == busy_id
    ]
    files = names[:2]
    procs: dict[str, list[Popen[str]]] = {}
    for name in files:
        make_file(src.root / name, SIZE)
        procs[name] = [
            spawn_get(
                src.url(name), "-o", str(tmp_path / f"{name}.{i}"), "--tracker", busy.url, "--upload-time", "60", "-vv"
            )
            for i in range(3)
        ]
    # The move took effect: the idle tracker decides announces (its load counts only the requests it decides).
    wait_until(lambda: metric(busy, "shoal_tracker_cluster_placed_tasks_total") >= 1, "a swarm placed", timeout=90)
    wait_until(lambda: metric(idle, "shoal_tracker_cluster_load") > 0, "the idle tracker deciding it", timeout=60)
    assert src.bytes_sent() < SIZE, "a download ended before the move: the test tested nothing"
    src.set_rate("100M")
    for name in files:
        for i, proc in enumerate(procs[name]):
            wait_for_file(tmp_path / f"{name}.{i}", proc, timeout=120)
            assert sha256(tmp_path / f"{name}.{i}") == sha256(src.root / name)
    assert metric(idle, "shoal_tracker_cluster_placed_tasks_total") == 0
    for name in files:
        fetched = origin_pieces(procs[name])
        assert fetched == Counter(range(SIZE >> 18)), (
            f"{name}: pieces fetched from the origin other than once: {fetched}"
        )


def test_the_placements_of_tasks_nobody_announces_any_more_go_and_the_hash_owner_decides_them(
    tracker,
    pg_url,  # noqa: F811
):
    """Tasks placed on the idle member, then left by their peers: once no peer has announced one there for
    the longest peer TTL (2 s here, JSON and BitTorrent), the idle member deletes its placement, and the
    hash owner decides the task again when a peer comes back."""
    short = ("--max-interval", "0.5", "--bt-interval", "1", "--bt-peer-ttl", "2")
    by_id = start_cluster(tracker, pg_url, 2, "--balance-floor", "1", "--balance-round", "2", *short)
    busy_id, idle_id = list(by_id)
    busy, idle = by_id[busy_id], by_id[idle_id]
    candidates = (f"http://127.0.0.1:9/unused-{i}.bin" for i in range(1000))
    urls = [u for u in candidates if owner_of(task_id_for_url(u), busy) == busy_id][:TASKS]

    async def until_followed(run: Run) -> None:
        async def followed() -> bool:
            made = await asyncio.to_thread(metric, busy, "shoal_tracker_cluster_placed_tasks_total")
            return made > 0 and sum(d == idle.url for d in run.deciders.values()) == made

        await wait_until_async(followed, "the placed tasks decided by the idle member")

    run = asyncio.run(_peers(urls, busy.url, until=600.0, side=until_followed))  # the peers stop then
    moved = [u for u, d in run.deciders.items() if d == idle.url]
    assert moved
    placed = metric(busy, "shoal_tracker_cluster_placed_tasks_total")

    def unplaced() -> bool:
        return metric(idle, "shoal_tracker_cluster_unplaced_tasks_total") == placed

    wait_until(unplaced, "the idle member deleting the placements of its unused tasks", timeout=60)
    for t in (busy, idle):
        wait_until(lambda t=t: all(m["placed"] == 0 for m in cluster_of(t)["members"]), "no placement left", timeout=10)
    # A peer back later: the busy member, the hash owner, decides the task itself (no owner named elsewhere).
    back = asyncio.run(_peers(moved[:1], busy.url, until=3.0))
    assert back.deciders == {moved[0]: busy.url}, back.deciders
    assert metric(busy, "shoal_tracker_cluster_placed_tasks_total") == placed, "nothing placed again"
