"""Several tracker processes on one PostgreSQL database (tracker.cluster, core.ownership): a task is decided
by one of them, the others forward its requests there, and a tracker killed mid-swarm hands its tasks on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import msgspec
import pytest
from fastbencode import bdecode

from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.core.owner_hint import OWNER_HEADER
from shoal.core.ownership import JOIN_DELAY, TrackerMember, owner
from shoal.testing.metrics import scrape
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service
from shoal.tracker.cluster import FORWARDED_FOR, FORWARDED_TO
from tests.integration.conftest import Origin, cluster_settled, sha256, task_summary
from tests.integration.test_bt_tracker_http import announce_fields, compact_peers, encode_query
from tests.integration.test_swarm import wait_for_file
from tests.store.conftest import SERVERS, _probe, drop_schema

SIZE = 8 << 20  # 32 pieces of 256 KiB


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test process."""
    found = asyncio.run(_probe("postgresql"))
    if isinstance(found, BaseException):
        pytest.fail(f"PostgreSQL unreachable at {SERVERS['postgresql']}: {found!r}")
    asyncio.run(drop_schema(found))
    yield found


def cluster_of(t: Service) -> dict[str, Any]:
    with urllib.request.urlopen(f"{t.url}/v1/cluster") as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def test_a_lone_tracker_on_sqlite_lists_no_members_and_decides(tracker: Callable[..., Service]) -> None:
    assert cluster_of(tracker()) == {"tracker_id": "", "members": [], "deciding": True}


def start_cluster(tracker: Callable[..., Service], db: str, n: int, *extra: str) -> dict[str, Service]:
    """``n`` trackers on ``db`` (with ``extra`` arguments), once each sees all of them live; by tracker id."""
    started = [tracker(db=db, extra=extra) for _ in range(n)]
    for t in started:
        wait_until(lambda t=t: cluster_settled(cluster_of(t), n), f"{n} live members", timeout=30)
    return {cluster_of(t)["tracker_id"]: t for t in started}


def owner_of(task_id: str, t: Service) -> str:
    """The tracker that owns ``task_id`` as ``t`` sees the members (the trackers share this host's clock)."""
    rows = cluster_of(t)["members"]
    members = [TrackerMember(m["tracker_id"], m["url"], m["active_from"], m["expires"]) for m in rows]
    found = owner(task_id, members, time.time())
    assert found is not None
    return found.tracker_id


def owner_and_other(trackers: dict[str, Service], url: str) -> tuple[str, Service, Service]:
    """``url``'s task id, the member of two ``trackers`` that decides it, and the other member."""
    task_id = task_id_for_url(url)
    owner_id = owner_of(task_id, next(iter(trackers.values())))
    (other,) = (t for tracker_id, t in trackers.items() if tracker_id != owner_id)
    return task_id, trackers[owner_id], other


def get_all(
    spawn_get: Callable[..., Popen[str]], url: str, trackers: list[Service], tmp_path: Path, *extra: str
) -> list[Popen[str]]:
    """Four peers of ``url``, spread over ``trackers`` in turn, seeding for a minute once done."""
    return [
        spawn_get(
            url,
            "-o",
            str(tmp_path / f"p{i}.bin"),
            "--tracker",
            trackers[i % len(trackers)].url,
            "--upload-time",
            "60",
            *extra,
        )
        for i in range(4)
    ]


ORIGIN_PIECE = re.compile(r"DEBUG: piece (\d+) from the origin$")
"""A -vv line of `shoal get`: a piece it fetched from the origin (under an origin lease)."""


def origin_pieces(procs: list[Popen[str]]) -> Counter[int]:
    """Stop the peers and count, from their -vv logs, how often each piece was fetched from the origin."""
    fetched: Counter[int] = Counter()
    for proc in procs:
        proc.kill()
        _, stderr = proc.communicate()
        fetched.update(int(m.group(1)) for m in map(ORIGIN_PIECE.search, stderr.splitlines()) if m)
    return fetched


def test_peers_announcing_to_different_trackers_share_one_swarm(
    tmp_path, tracker, origin, make_file, spawn_get, pg_url
):
    src: Origin = origin("--rate", "8M")
    make_file(src.root / "c.bin", SIZE)
    url = src.url("c.bin")
    # No spot checks (a piece fetched again from the origin on purpose, by another host): each origin fetch
    # is then one peer's, under its lease.
    trackers = list(start_cluster(tracker, pg_url, 2, "--audit-share", "0").values())
    procs = get_all(spawn_get, url, trackers, tmp_path, "-vv")
    for i, proc in enumerate(procs):
        wait_for_file(tmp_path / f"p{i}.bin", proc, timeout=120)
        assert sha256(tmp_path / f"p{i}.bin") == sha256(src.root / "c.bin")
    task_id = task_id_for_url(url)
    # Either tracker answers for the task (one forwards to the other), and both know all four peers.
    for t in trackers:
        assert len(task_summary(t, task_id)["peers"]) == 4  # type: ignore[arg-type]
    # One swarm: each piece left the origin about once. Two split swarms would each have fetched the file.
    assert src.bytes_sent() <= 1.05 * SIZE
    # Leases stay exclusive: each piece was leased to one peer, whichever tracker it asked, and fetched from the
    # origin once (a lease granted twice, by two trackers each deciding the task, is a piece fetched twice).
    fetched = origin_pieces(procs)
    assert fetched == Counter(range(SIZE >> 18)), f"pieces fetched from the origin other than once: {fetched}"


def test_a_tracker_killed_mid_swarm_hands_its_tasks_on(tmp_path, tracker, origin, make_file, spawn_get, pg_url):
    """Three trackers; the peers announce to the two that do not own the task, and its owner is SIGKILLed
    once the swarm is under way: the task moves to a survivor, which rebuilds its peers from their next
    announces, and every download completes with each piece leaving the origin once."""
    src: Origin = origin("--rate", "1M")  # 8 s for the file: the kill lands mid-download
    make_file(src.root / "k.bin", SIZE)
    url = src.url("k.bin")
    task_id = task_id_for_url(url)
    by_id = start_cluster(tracker, pg_url, 3, "--audit-share", "0")
    first = next(iter(by_id.values()))
    doomed = by_id[owner_of(task_id, first)]
    survivors = [t for t in by_id.values() if t is not doomed]
    procs = get_all(spawn_get, url, survivors, tmp_path, "-vv")
    wait_until(lambda: src.bytes_sent() >= SIZE // 4, "a quarter of the file from the origin", timeout=60)
    doomed.kill()
    for i, proc in enumerate(procs):
        wait_for_file(tmp_path / f"p{i}.bin", proc, timeout=120)
        assert sha256(tmp_path / f"p{i}.bin") == sha256(src.root / "k.bin")
    # The task moved to a survivor, which rebuilt its peers from their announces.
    assert owner_of(task_id, survivors[0]) in {cluster_of(t)["tracker_id"] for t in survivors}
    wait_until(lambda: len(task_summary(survivors[0], task_id)["peers"]) == 4, "the 4 peers at the new owner")
    assert src.bytes_sent() <= 1.05 * SIZE
    # No piece was leased twice across the takeover: the new owner learned the fetches in flight from the
    # peers' announces (and leased nothing afresh meanwhile), so each piece left the origin once.
    fetched = origin_pieces(procs)
    assert fetched == Counter(range(SIZE >> 18)), f"pieces fetched from the origin other than once: {fetched}"


async def _announce_from(source: str, tracker_url: str, url: str, forwarded_for: str) -> None:
    """A peer at ``source`` (a loopback address) joins ``url``'s task through ``tracker_url``, claiming with the
    members' header that it announces for ``forwarded_for``."""
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    common = {"peer_id": me.peer_id, "secret": me.secret, "url": url, "port": 7000}
    headers = {FORWARDED_FOR: forwarded_for, "Content-Type": "application/json"}
    path = f"{tracker_url}/v1/tasks/{task_id_for_url(url)}/announce"
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        generation = 0
        for origin in (None, OriginIdentity(SIZE, etag='"v1"')):
            request = AnnounceRequest(**common, event="started", generation=generation, origin=origin)
            body = msgspec.json.encode(request)
            deadline = time.monotonic() + 30
            while True:  # a busy or moving task (503) is asked again, as a peer would
                async with session.post(path, data=body, headers=headers) as reply:
                    if reply.status != 503 or time.monotonic() > deadline:
                        assert reply.status == 200, await reply.text()
                        generation = msgspec.json.decode(await reply.read(), type=AnnounceResponse).generation
                        break
                await asyncio.sleep(0.2)


def test_only_a_member_may_say_whom_it_forwards_for(tracker, pg_url):
    """X-Shoal-Forwarded-For is believed from the members' hosts only: a peer elsewhere that sets it is
    recorded at the address it announced from, whichever tracker it asked, so nobody can get another
    host handed out as a peer of a task."""
    url = "http://127.0.0.1:9/forwarded.bin"
    task_id, owner, other = owner_and_other(start_cluster(tracker, pg_url, 2), url)
    owner_url, other_url = owner.url, other.url
    # From outside the members' hosts (127.0.0.1, where both trackers run): to the owner, and through the
    # other member, which forwards it with the address it saw.
    asyncio.run(_announce_from("127.0.0.7", owner_url, url, "10.9.9.9"))
    asyncio.run(_announce_from("127.0.0.8", other_url, url, "10.9.9.9"))
    # From a member's host the header is taken: the control that shows the check can tell them apart.
    asyncio.run(_announce_from("127.0.0.1", owner_url, url, "127.0.0.99"))
    hosts = sorted(p["host"] for p in task_summary(owner, task_id)["peers"])  # type: ignore[union-attr]
    assert hosts == ["127.0.0.7", "127.0.0.8", "127.0.0.99"]


def test_a_peers_connection_stays_in_the_lane_whichever_member_decides_its_task(tracker, pg_url):
    """The peers' lane relays an announce and a hash look-up about a task another member decides, as the
    application's forward does (the owner named in its header), and the owner's lane serves what was
    forwarded to it: neither member hands a connection to the application for them."""
    url = "http://127.0.0.1:9/relayed-in-the-lane.bin"
    task_id, owner, other = owner_and_other(start_cluster(tracker, pg_url, 2), url)
    owner_url, other_url = owner.url, other.url
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    common = {"peer_id": me.peer_id, "secret": me.secret, "url": url, "port": 7000}

    async def ask(session: aiohttp.ClientSession, method: str, path: str, body: bytes = b"") -> bytes:
        deadline = time.monotonic() + 30
        while True:  # a moving task (503) is asked again, as a peer would
            async with session.request(method, f"{other_url}{path}", data=body or None) as reply:
                payload = await reply.read()
                if reply.status != 503 or time.monotonic() > deadline:
                    assert reply.status == 200, payload
                    assert reply.headers[OWNER_HEADER] == owner_url
                    return payload
            await asyncio.sleep(0.2)

    async def run() -> int:
        # One connection to the member that does not decide the task, kept for every request.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            generation = 0
            for origin in (None, OriginIdentity(SIZE, etag='"v1"'), OriginIdentity(SIZE, etag='"v1"')):
                request = AnnounceRequest(**common, event="started", generation=generation, origin=origin)
                body = await ask(session, "POST", f"/v1/tasks/{task_id}/announce", msgspec.json.encode(request))
                reply = msgspec.json.decode(body, type=AnnounceResponse)
                assert reply.owner == owner_url  # named by the owner, which saw the forward
                generation = reply.generation
            await ask(session, "GET", f"/v1/tasks/{task_id}/hashes?since=0")
            return 4

    before = {t.url: scrape(t.url) for t in (owner, other)}
    asked = asyncio.run(run())
    after = {t.url: scrape(t.url) for t in (owner, other)}

    def grew(t: Service, name: str, **labels: str) -> float:
        return after[t.url].value(name, **labels) - before[t.url].value(name, **labels)

    assert grew(other, "shoal_tracker_forwarded_total", direction="out") >= asked
    assert grew(owner, "shoal_tracker_forwarded_total", direction="in") >= asked
    # The only connections handed over are the second scrapes' own (/metrics is the application's route).
    assert grew(other, "shoal_tracker_lane_handovers_total") == 1
    assert grew(owner, "shoal_tracker_lane_handovers_total") == 1


async def _bt_get(source: str, url: str) -> dict[bytes, Any]:
    """A bencoded GET from ``source`` (a loopback address), asked again while the cluster says 503."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + 30
        while True:
            async with session.get(url) as reply:
                body = await reply.read()
                if reply.status != 503 or time.monotonic() > deadline:
                    assert reply.status == 200, body
                    decoded = bdecode(body)
                    assert isinstance(decoded, dict) and b"failure reason" not in decoded, decoded
                    return decoded
            await asyncio.sleep(0.2)


def test_bittorrent_clients_of_one_swarm_at_different_trackers_see_each_other(tracker, pg_url):
    """A BitTorrent swarm is decided by one member too: clients announcing to different trackers are handed
    out to each other, and a scrape through any member counts the swarms wherever they are owned."""
    trackers = start_cluster(tracker, pg_url, 2)
    ids = sorted(trackers)
    first = trackers[ids[0]]
    # One swarm owned by each member, so the scrape has to gather from both.
    hashes: dict[str, bytes] = {}
    for n in range(1000):
        info_hash = hashlib.sha1(b"swarm %d" % n).digest()
        hashes.setdefault(owner_of(info_hash.hex(), first), info_hash)
        if len(hashes) == 2:
            break
    for tracker_id in ids:
        info_hash = hashes[tracker_id]
        for n, (source, via) in enumerate([("127.0.0.7", trackers[ids[0]]), ("127.0.0.8", trackers[ids[1]])]):
            query = encode_query({**announce_fields(n, info_hash=info_hash, left=0 if n else 1000), "compact": 1})
            reply = asyncio.run(_bt_get(source, f"{via.url}/announce?{query}"))
        # The second client, at the other tracker, is handed the first.
        assert compact_peers(reply[b"peers"]) == {("127.0.0.7", 6880)}
    both = "&".join(f"info_hash={quote_from_bytes(h, safe='')}" for h in hashes.values())
    for t in trackers.values():
        files = asyncio.run(_bt_get("127.0.0.9", f"{t.url}/scrape?{both}"))[b"files"]
        assert {h: (c[b"complete"], c[b"incomplete"]) for h, c in files.items()} == {h: (1, 1) for h in hashes.values()}


def test_a_bittorrent_clients_connection_stays_in_the_lane_whichever_member_decides_its_swarm(tracker, pg_url):
    """The peers' lane relays a BitTorrent announce about a swarm another member decides, as the application's
    forward does, and the owner's lane serves what was forwarded to it, judging the client by the address
    the forwarding member names (X-Shoal-Forwarded-For) and the one the client reached it at
    (X-Shoal-Forwarded-To, BitTorrent's loopback rule): neither member hands a connection over for them."""
    trackers = start_cluster(tracker, pg_url, 2)
    info_hash = hashlib.sha1(b"a swarm relayed in the lane").digest()
    owner_id = owner_of(info_hash.hex(), next(iter(trackers.values())))
    owner_url = trackers[owner_id].url
    other_id, other = next((tid, t) for tid, t in trackers.items() if tid != owner_id)

    async def announce(session: aiohttp.ClientSession, url: str, n: int, **headers: str) -> dict[bytes, Any]:
        query = encode_query({**announce_fields(n, info_hash=info_hash), "compact": 1})
        deadline = time.monotonic() + 30
        while True:  # a moving swarm (503) is asked again, as a client would
            async with session.get(f"{url}/announce?{query}", headers=headers) as reply:
                body = await reply.read()
                if reply.status != 503 or time.monotonic() > deadline:
                    assert reply.status == 200 and "Server" not in reply.headers, (reply.headers, body)
                    decoded = bdecode(body)
                    assert isinstance(decoded, dict) and b"failure reason" not in decoded, decoded
                    return decoded
            await asyncio.sleep(0.2)

    async def run() -> tuple[dict[bytes, Any], dict[bytes, Any], dict[bytes, Any]]:
        # One connection to the member that does not decide the swarm, kept for every announce: clients on
        # this host, stored at 127.0.0.1.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for n in range(3):
                last = await announce(session, other.url, n)
            # A client on another host (10.1.1.1) that reached a member at 10.0.0.5, forwarded from a member's
            # host: handed this host's clients at the address it reached, and recorded at its own.
            forwarded = {FORWARDED_FOR: "10.1.1.1", FORWARDED_TO: "10.0.0.5"}
            lan = await announce(session, owner_url, 9, **forwarded)
            return last, lan, await announce(session, other.url, 3)

    before = {tid: scrape(t.url) for tid, t in trackers.items()}
    last, lan, local = asyncio.run(run())
    after = {tid: scrape(t.url) for tid, t in trackers.items()}
    assert compact_peers(last[b"peers"]) == {("127.0.0.1", 6880), ("127.0.0.1", 6881)}
    assert compact_peers(lan[b"peers"]) == {("10.0.0.5", 6880 + n) for n in range(3)}
    assert ("10.1.1.1", 6889) in compact_peers(local[b"peers"])

    def grew(tid: str, name: str, **labels: str) -> float:
        return after[tid].value(name, **labels) - before[tid].value(name, **labels)

    assert grew(other_id, "shoal_tracker_forwarded_total", direction="out") >= 4
    assert grew(owner_id, "shoal_tracker_forwarded_total", direction="in") >= 5
    # The only connections handed over are the second scrapes' own (/metrics is the application's route).
    assert grew(other_id, "shoal_tracker_lane_handovers_total") == 1
    assert grew(owner_id, "shoal_tracker_lane_handovers_total") == 1


def test_a_tracker_stalled_past_its_fence_joins_again(tracker, pg_url, tmp_path):
    """A tracker whose process stalls (SIGSTOP) until the others count it dead comes back as a new member:
    it forgets the tasks it held and counts only JOIN_DELAY after registering again, so it never decides a
    task while the member that took its tasks over still does."""
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    started = [tracker(db=pg_url, log=logs[0]), tracker(db=pg_url, log=logs[1])]
    for t in started:
        wait_until(lambda t=t: cluster_settled(cluster_of(t), 2), "2 live members", timeout=30)
    awake, stalled = started
    stalled_id = cluster_of(stalled)["tracker_id"]

    def row_of(t: Service) -> dict[str, Any]:
        return next(m for m in cluster_of(t)["members"] if m["tracker_id"] == stalled_id)

    before = row_of(awake)
    os.kill(stalled.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: not row_of(awake)["live"], "the awake tracker counts the stalled one dead", timeout=30)
    finally:
        os.kill(stalled.proc.pid, signal.SIGCONT)
    resumed = time.time()
    after = wait_until(
        lambda: (row := row_of(awake))["active_from"] > before["active_from"] and row,
        "the stalled tracker's new row",
        timeout=30,
    )
    assert after["active_from"] >= resumed + JOIN_DELAY - 1.0, (after, resumed)
    wait_until(lambda: row_of(awake)["live"], "the tracker that stalled counts again", timeout=30)
    assert "joining again" in logs[1].read_text()


def test_trackers_that_advertise_one_url_say_so(tracker, pg_url, tmp_path):
    """Two trackers on different hosts that each advertise their default (127.0.0.1) forward a task's
    requests to themselves, and one's tasks are never answered: both log an ERROR naming the other and
    --advertise. Here the second names the first's URL as its own."""
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = tracker(db=pg_url, log=logs[0])
    tracker(db=pg_url, log=logs[1], extra=("--advertise", first.url))
    for log in logs:
        wait_until(lambda log=log: "advertises this tracker's URL" in log.read_text(), f"the ERROR in {log.name}")
        assert "--advertise" in log.read_text()
