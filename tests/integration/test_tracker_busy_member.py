"""A member whose event loop is kept busy keeps its membership and its tasks; a member whose loop is wedged
loses them to the others, and joins again once it runs (tracker.membership: the renewals' own thread and
its watchdog; core.ownership). Real trackers on PostgreSQL; the busy and the wedged loop are the fakes of
stalling_tracker.py, as a CPU quota or a flood cannot be had in CI and a wedge cannot be caused for real."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.core.ownership import LOOP_PATIENCE, TTL
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, start_service
from tests.integration.conftest import cluster_settled, task_summary
from tests.integration.test_owner_hint import a_task_owned_by
from tests.integration.test_tracker_cluster import cluster_of, pg_url

__all__ = ["pg_url"]  # the fixture, imported for these tests

HELPER = Path(__file__).with_name("stalling_tracker.py")
PEER_TTL = "120"  # the peers' records outlive every stall of these tests: what goes, goes by a drop


def stalling_tracker(db: str, log: Path, services: list[Service]) -> Service:
    argv = [sys.executable, str(HELPER), "tracker", "--host", "127.0.0.1", "--port", "0", "--db", db]
    argv += ["--interval", "1", "--idle-interval", "1", "--peer-ttl", PEER_TTL]
    service = start_service(argv, log=log)
    services.append(service)
    return service


def post(t: Service, path: str, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(f"{t.url}{path}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def join_task(t: Service, url: str) -> str:
    """A new peer joins ``url``'s task at tracker ``t`` (which must answer for it); its peer id."""
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    common = {"peer_id": me.peer_id, "secret": me.secret, "url": url, "port": 7000}
    path = f"{t.url}/v1/tasks/{task_id_for_url(url)}/announce"

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            generation = 0
            for origin in (None, OriginIdentity(1 << 20, etag='"v1"')):
                request = AnnounceRequest(**common, event="started", generation=generation, origin=origin)
                async with session.post(path, data=msgspec.json.encode(request)) as reply:
                    assert reply.status == 200, (reply.status, await reply.text())
                    generation = msgspec.json.decode(await reply.read(), type=AnnounceResponse).generation

    asyncio.run(run())
    return me.peer_id


def peers_of(t: Service, task_id: str) -> set[str]:
    return {p["peer_id"] for p in task_summary(t, task_id)["peers"]}  # type: ignore[attr-defined]


def answered(t: Service, task_id: str) -> tuple[set[str]] | None:
    """The task's peers as ``t`` (or the member it forwards to) answers; None while they answer 503."""
    try:
        return (peers_of(t, task_id),)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return None


def row_of(member_id: str, seen_by: Service) -> dict[str, Any]:
    return next(m for m in cluster_of(seen_by)["members"] if m["tracker_id"] == member_id)


def errors_in(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "ERROR" in line or "Traceback" in line]


def two_members(
    tracker: Callable[..., Service], pg_url: str, tmp_path: Path, services: list[Service]
) -> tuple[Service, str, Service, list[Path]]:
    """A stalling tracker and a plain one on ``pg_url``, once both count: (the stalling one, its id, the
    other, their logs)."""
    logs = [tmp_path / "stalling.log", tmp_path / "other.log"]
    stalling = stalling_tracker(pg_url, logs[0], services)
    other = tracker(db=pg_url, peer_ttl=float(PEER_TTL), log=logs[1])
    for t in (stalling, other):
        wait_until(lambda t=t: cluster_settled(cluster_of(t), 2), "2 live members", timeout=30)
    return stalling, cluster_of(stalling)["tracker_id"], other, logs


def test_a_member_whose_loop_is_kept_busy_keeps_its_row_and_its_tasks(tracker, pg_url, tmp_path, services):
    """Its loop runs other work only every 1.5 s for 12 s, so each round trip of a renewal on that loop would
    take 1.5 s (and the row lapse): renewed from their own thread, the row holds, and so do its tasks' peers."""
    busy, busy_id, other, logs = two_members(tracker, pg_url, tmp_path, services)
    url = a_task_owned_by(busy_id, other)
    task_id = task_id_for_url(url)
    peer = join_task(busy, url)
    before = row_of(busy_id, other)

    done = post(busy, "/test/busy?seconds=12&chunk=1.5", timeout=120)

    assert done["stretches"] >= 7, done  # the loop was held that long, in stretches
    after = row_of(busy_id, other)
    assert after["live"] and after["active_from"] == before["active_from"], (before, after)  # the same row
    assert after["expires"] > before["expires"] + 10, (before, after)  # renewed all along
    assert peer in peers_of(busy, task_id), "the busy member kept the task's soft state"
    assert peer in peers_of(other, task_id), "and the other member still forwards the task to it"
    assert "joining again" not in logs[0].read_text()
    assert "moved to another tracker" not in logs[0].read_text() + logs[1].read_text()
    assert errors_in(logs[0]) == [] and errors_in(logs[1]) == []


def test_a_member_whose_loop_is_wedged_loses_its_tasks_and_joins_again(tracker, pg_url, tmp_path, services):
    """Its loop makes no progress at all: the renewals stop after LOOP_PATIENCE, its row lapses, and the
    other member decides its task. Once the loop runs again it joins again (a new row, counting later) and
    forgets the task's soft state, which the other member decided meanwhile."""
    wedged, wedged_id, other, logs = two_members(tracker, pg_url, tmp_path, services)
    url = a_task_owned_by(wedged_id, other)
    task_id = task_id_for_url(url)
    first = join_task(wedged, url)
    before = row_of(wedged_id, other)
    release = tmp_path / "release"
    held: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: held.update(post(wedged, f"/test/wedge?until={release}", 300)))
    thread.start()
    try:
        wait_until(
            lambda: not row_of(wedged_id, other)["live"],
            "the other member counts the wedged one dead",
            timeout=LOOP_PATIENCE + TTL + 30,
        )
        second = join_task(other, url)  # decided by the other member now, not forwarded to the wedged one
        assert peers_of(other, task_id) == {second}, "the other member took the task over without its soft state"
        assert "made no progress" in logs[0].read_text()
    finally:
        release.touch()
        thread.join(timeout=150)
    assert held == {"released": True}
    again = wait_until(
        lambda: (row := row_of(wedged_id, other))["active_from"] > before["active_from"] and row["live"] and row,
        "the wedged member's new row, counting",
        timeout=60,
    )
    assert again["active_from"] >= before["expires"], (before, again)
    assert "joining again" in logs[0].read_text()
    # Back as a member, it owns the task again (until then it answers 503, and the other member forwards the
    # task to it, never back), and starts from the peers' next announces, not from ``first``.
    seen = wait_until(lambda: answered(wedged, task_id), "the task answered by the wedged member again", timeout=30)
    assert seen == (set(),), (seen, first)  # neither ``first`` (forgotten) nor the other member's peer
    assert errors_in(logs[0]) == [] and errors_in(logs[1]) == []
