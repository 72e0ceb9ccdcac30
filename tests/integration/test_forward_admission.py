"""A request a tracker forwards to another member counts against the forwarding tracker's cap (tracker.admission:
a forward holds a connection, a task and buffers there until the owner answers), a pool's long-poll
forwarded so against a cap of its own, which keeps announces out no longer than the long-poll waits, and a
scrape's requests for other members' counts against another. Real
trackers on PostgreSQL; the owner that does not answer is a real process stopped with SIGSTOP."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote_from_bytes

import msgspec
from fastbencode import bdecode

from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.messages import AnnounceRequest
from shoal.core.pool import MEMBER_SECRET_HEX
from shoal.testing.metrics import scrape
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service
from shoal.tracker.pools import MAX_WAIT, pool_key
from tests.integration.conftest import cluster_settled
from tests.integration.test_bt_tracker_http import announce_fields, encode_query
from tests.integration.test_owner_hint import a_task_owned_by
from tests.integration.test_pool_cluster import beat, long_polls
from tests.integration.test_pools import LOOPBACK, api
from tests.integration.test_tracker_cluster import cluster_of, owner_of, pg_url

__all__ = ["pg_url"]  # the fixture, imported for these tests


def owner_and_forwarder(
    tracker: Callable[..., Service], pg_url: str, *forwarder_options: str
) -> tuple[Service, str, Service]:
    """Two trackers on ``pg_url``, the second with ``forwarder_options``, once both count: (the first, its
    id, the second). Member TTLs long enough for a long-poll of MAX_WAIT (a third of it at most)."""
    ttl = str(3 * MAX_WAIT)
    owner = tracker(db=pg_url, extra=("--peer-ttl", ttl))
    forwarder = tracker(db=pg_url, extra=("--peer-ttl", ttl, *forwarder_options))
    for t in (owner, forwarder):
        wait_until(lambda t=t: cluster_settled(cluster_of(t), 2), "2 live members", timeout=30)
    return owner, cluster_of(owner)["tracker_id"], forwarder


def announce(t: Service, url: str, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
    """A new peer's first announce of ``url``'s task through ``t``: the status, headers and JSON body."""
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    body = AnnounceRequest(peer_id=me.peer_id, secret=me.secret, url=url, port=7000, event="started", generation=0)
    request = urllib.request.Request(
        f"{t.url}/v1/tasks/{task_id_for_url(url)}/announce",
        data=msgspec.json.encode(body),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.load(exc)


def in_flight(t: Service) -> float:
    return scrape(t.url).value("shoal_tracker_announces_inflight")


@contextmanager
def stopped(t: Service) -> Iterator[None]:
    """``t``'s process stopped (SIGSTOP) for the block: it takes connections and answers nothing."""
    os.kill(t.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(t.proc.pid, signal.SIGCONT)


def assert_busy(status: int, headers: dict[str, str], body: Any, what: str) -> None:
    assert status == 503, (status, body)
    assert headers["Retry-After"].isdigit() and int(headers["Retry-After"]) >= 1, headers
    assert "busy" in body["error"] and what in body["error"], body


def test_a_second_forward_past_the_forwarding_trackers_cap_is_shed_at_once(tracker, pg_url) -> None:
    owner, owner_id, forwarder = owner_and_forwarder(tracker, pg_url, "--max-inflight", "1")
    url = a_task_owned_by(owner_id, forwarder)
    assert announce(forwarder, url)[0] == 200  # forwarded, and answered by the owner
    first: list[tuple[int, dict[str, str], Any]] = []
    with stopped(owner):
        held = threading.Thread(target=lambda: first.append(announce(forwarder, url)))
        held.start()
        # The first forward waits for the stopped owner, in the forwarding tracker's only slot.
        wait_until(lambda: in_flight(forwarder) == 1, "the first forward in flight at the forwarding tracker")
        status, headers, body = announce(forwarder, a_task_owned_by(owner_id, forwarder), timeout=5)
        assert_busy(status, headers, body, "(1 announces and forwards in flight); announce again")
    held.join(timeout=30)
    assert first and first[0][0] == 200, first  # the owner answered it once it ran again
    wait_until(lambda: in_flight(forwarder) == 0, "the slot given back")
    assert announce(forwarder, url)[0] == 200


def test_forwarded_pool_long_polls_have_a_cap_of_their_own(tracker, pg_url) -> None:
    """A long-poll forwarded to the pool's owner waits there on purpose: it takes no announce's slot, and
    past --max-relayed-polls the next one is shed at once."""
    owner, owner_id, forwarder = owner_and_forwarder(tracker, pg_url, "--max-inflight", "1", "--max-relayed-polls", "1")
    name = next(f"p{i}" for i in range(1000) if owner_of(pool_key(f"p{i}"), owner) == owner_id)
    status, created = api(forwarder, "POST", "", {"name": name, "private": False, "allow": LOOPBACK})
    assert status == 201, created
    secrets_ = [secrets.token_hex(MEMBER_SECRET_HEX // 2) for _ in range(2)]
    versions = [beat(forwarder, name, s)["version"] for s in secrets_]  # both join through the forwarder
    replies: list[dict[str, Any]] = []
    polled = threading.Thread(
        target=lambda: replies.append(beat(forwarder, name, secrets_[0], f"?version={versions[0]}&wait={MAX_WAIT}"))
    )
    polled.start()
    try:
        wait_until(lambda: long_polls(owner) == 1, "the first long-poll held at the pool's owner")
        # The announces' one slot is free: a forward of an announce goes through meanwhile.
        assert announce(forwarder, a_task_owned_by(owner_id, forwarder))[0] == 200
        try:
            beat(forwarder, name, secrets_[1], f"?version={versions[1]}&wait={MAX_WAIT}")
            raise AssertionError("a second forwarded long-poll was taken past --max-relayed-polls 1")
        except urllib.error.HTTPError as exc:
            assert_busy(exc.code, dict(exc.headers), json.load(exc), "(1 forwarded pool long-polls in flight)")
    finally:
        token = created["token"]
        status, pushed = api(owner, "POST", f"/{name}/jobs", {"url": "http://127.0.0.1:9/release.tar"}, token=token)
        assert status == 201, pushed
        polled.join(timeout=MAX_WAIT - 5)
    assert replies, "the first long-poll did not end at the push"


def _bt(t: Service, path: str, timeout: float = 30) -> dict[bytes, Any]:
    """A BitTorrent GET of ``path`` (announce or scrape) at ``t``, from a client on 127.0.0.1."""
    with urllib.request.urlopen(f"{t.url}{path}", timeout=timeout) as reply:
        decoded = bdecode(reply.read())
    assert isinstance(decoded, dict) and b"failure reason" not in decoded, decoded
    return decoded


def _scrape(t: Service, hashes: list[bytes], timeout: float = 30) -> dict[bytes, tuple[int, int]]:
    query = "&".join(f"info_hash={quote_from_bytes(h, safe='')}" for h in hashes)
    files = _bt(t, f"/scrape?{query}", timeout)[b"files"]
    return {h: (c[b"complete"], c[b"incomplete"]) for h, c in files.items()}


def test_a_scrapes_requests_to_other_members_have_a_cap_of_their_own_past_which_their_swarms_are_left_out(
    tracker, pg_url
) -> None:
    """A scrape asks the owners of its swarms for their counts; with the one --max-relayed-scrapes slot held (a
    scrape waiting for a stopped owner), the next scrape answers at once with the swarms this tracker counts
    and without the owner's, and announces (one --max-inflight slot) go on meanwhile."""
    owner, owner_id, forwarder = owner_and_forwarder(
        tracker, pg_url, "--max-inflight", "1", "--max-relayed-scrapes", "1"
    )
    forwarder_id = cluster_of(forwarder)["tracker_id"]
    hashes = [hashlib.sha1(b"swarm %d" % n).digest() for n in range(1000)]
    theirs = [h for h in hashes if owner_of(h.hex(), forwarder) == owner_id][:2]
    ours = next(h for h in hashes if owner_of(h.hex(), forwarder) == forwarder_id)
    for n, info_hash in enumerate([*theirs, ours]):  # a leecher in each, through the forwarder
        _bt(forwarder, "/announce?" + encode_query({**announce_fields(n, info_hash=info_hash), "compact": 1}))
    every = {h: (0, 1) for h in [*theirs, ours]}
    assert _scrape(forwarder, [*theirs, ours]) == every

    def scraping() -> float:
        return scrape(forwarder.url).value("shoal_tracker_scrape_requests_inflight")

    first: list[dict[bytes, tuple[int, int]]] = []
    with stopped(owner):
        held = threading.Thread(target=lambda: first.append(_scrape(forwarder, [theirs[0]])))
        held.start()
        wait_until(lambda: scraping() == 1, "the first scrape's request waiting at the stopped owner")
        assert _scrape(forwarder, [theirs[1], ours], timeout=5) == {ours: (0, 1)}, "the owner's swarm left out"
        assert scrape(forwarder.url).value("shoal_tracker_scrape_requests_shed_total") == 1
        # Announces keep their own cap: one of the forwarder's swarms is answered meanwhile.
        _bt(forwarder, "/announce?" + encode_query({**announce_fields(9, info_hash=ours), "compact": 1}), timeout=5)
        assert in_flight(forwarder) == 0, "a scrape's request holds no announce slot"
    held.join(timeout=30)
    assert first == [{theirs[0]: (0, 1)}], "the owner answered the first once it ran again"
    wait_until(lambda: scraping() == 0, "the slot given back")
    assert _scrape(forwarder, [*theirs, ours]) == {**every, ours: (0, 2)}
