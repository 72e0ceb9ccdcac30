"""Pools on several trackers sharing one PostgreSQL: a pool is decided by one of them, and the others forward
its routes there (tracker.pools), so a push through any tracker wakes a member long-polling through another."""

from __future__ import annotations

import json
import secrets
import threading
import urllib.error
import urllib.request
from typing import Any

from shoal.core.pool import MEMBER_SECRET_HEX, member_id_for
from shoal.core.pool_api import MEMBER_SECRET
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service
from shoal.tracker.cluster import FORWARDED_FOR, RETRY_AFTER
from shoal.tracker.pools import MAX_WAIT, pool_key
from tests.integration.test_pools import LOOPBACK, api
from tests.integration.test_tracker_cluster import owner_of, pg_url, start_cluster

__all__ = ["pg_url"]  # the fixture, imported for the tests here


def beat(t: Service, pool: str, secret: str, query: str = "") -> dict[str, Any]:
    """A member's heartbeat to pool ``pool`` through tracker ``t`` (``query``: ?version=N&wait=S)."""
    body = {"name": "n1", "url": "http://127.0.0.1:7000/", "free": 1 << 40}
    request = urllib.request.Request(
        f"{t.url}/v1/pools/{pool}/members/{member_id_for(secret)}{query}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", MEMBER_SECRET: secret},
    )
    with urllib.request.urlopen(request, timeout=MAX_WAIT + 30) as reply:
        return json.load(reply)  # type: ignore[no-any-return]


def long_polls(t: Service) -> float:
    """The long-polls tracker ``t`` holds, by its /metrics."""
    with urllib.request.urlopen(f"{t.url}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    (value,) = [line.split()[1] for line in text.splitlines() if line.startswith("shoal_pool_long_polls ")]
    return float(value)


def test_a_push_through_one_tracker_wakes_a_long_poll_through_another(tracker, pg_url) -> None:
    # A member TTL long enough that a long-poll may wait MAX_WAIT (a third of it at most).
    trackers = start_cluster(tracker, pg_url, 2, "--peer-ttl", str(3 * MAX_WAIT))
    (owner_id, owner), (_, other) = list(trackers.items())
    name = next(f"p{i}" for i in range(1000) if owner_of(pool_key(f"p{i}"), owner) == owner_id)
    status, created = api(other, "POST", "", {"name": name, "private": False, "allow": LOOPBACK})
    assert status == 201, created
    token = created["token"]

    secret = secrets.token_hex(MEMBER_SECRET_HEX // 2)
    version = beat(other, name, secret)["version"]  # joins, through the tracker that does not own the pool
    # A long-poll through the other tracker, held at the pool's owner, which the push comes through. Were the
    # long-poll held where it arrived, nothing there would change and it would end only after its wait.
    replies: list[dict[str, Any]] = []
    polled = threading.Thread(
        target=lambda: replies.append(beat(other, name, secret, f"?version={version}&wait={MAX_WAIT}"))
    )
    polled.start()
    wait_until(lambda: long_polls(owner) == 1, "the long-poll held at the pool's owner")
    status, pushed = api(owner, "POST", f"/{name}/jobs", {"url": "http://127.0.0.1:9/release.tar"}, token=token)
    assert status == 201, pushed
    polled.join(timeout=MAX_WAIT - 5)
    assert replies, "the long-poll did not end at the push"
    assert [w["job"] for w in replies[0]["work"]] == [pushed["job"]], replies


def test_a_private_pools_refusal_comes_back_through_the_forwarding_tracker(tracker, pg_url) -> None:
    trackers = start_cluster(tracker, pg_url, 2)
    (first_id, first), (_, second) = list(trackers.items())
    name = next(f"q{i}" for i in range(1000) if owner_of(pool_key(f"q{i}"), first) != first_id)
    status, created = api(first, "POST", "", {"name": name, "private": True})
    assert status == 201, created
    # The pool is the second tracker's: asking the first is forwarded, the owner's 401 relayed as it came.
    for via in (second, first):
        try:
            urllib.request.urlopen(f"{via.url}/v1/pools/{name}", timeout=30).close()
            raise AssertionError("a private pool answered without a token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401 and exc.headers["WWW-Authenticate"] == "Bearer", (exc.code, dict(exc.headers))
    status, shown = api(first, "GET", f"/{name}", token=created["token"])
    assert status == 200 and shown["name"] == name, shown


def test_a_pool_route_the_cluster_refuses_says_pool_and_ask_not_task_and_announce(tracker, pg_url) -> None:
    trackers = start_cluster(tracker, pg_url, 2)
    (owner_id, owner), (_, other) = list(trackers.items())
    name = next(f"r{i}" for i in range(1000) if owner_of(pool_key(f"r{i}"), owner) == owner_id)
    status, created = api(other, "POST", "", {"name": name, "private": False, "allow": LOOPBACK})
    assert status == 201, created

    def refusal(headers: dict[str, str]) -> tuple[int, str, str | None]:
        request = urllib.request.Request(f"{other.url}/v1/pools/{name}", headers=headers)
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)["error"], exc.headers["Retry-After"]
        raise AssertionError("the pool's route was answered")

    # Forwarded to the member that does not own the pool (the members disagree for a moment): never again.
    assert refusal({FORWARDED_FOR: "127.0.0.1"}) == (503, "the pool is moving; ask again", RETRY_AFTER)
    owner.kill()  # its row lives on for a few seconds: the other member still forwards to it, and fails
    assert refusal({}) == (503, "the pool's tracker did not answer; ask again", RETRY_AFTER)
