"""Pools with real processes: a tracker, an origin, daemons that join pools, and `shoal pool` commands."""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.core.pool import MEMBER_SECRET_HEX, member_id_for
from shoal.core.pool_api import MEMBER_SECRET
from shoal.core.tickets import SEEDER_HOLDER, FleetKey
from shoal.daemon.client import DaemonClient
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_daemon
from tests.integration.conftest import Origin

MiB = 1 << 20


def pool_cli(tracker: Service, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = shoal_argv("pool", "--tracker", tracker.url, *(["--token", token] if token else []), *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def api(tracker: Service, method: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{tracker.url}/v1/pools{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


# Pools of real daemons on a small machine: every wait here gets 90 s unless it says otherwise.
wait_for = functools.partial(wait_until, timeout=90, interval=0.2)


LOOPBACK = ["127.0.0.0/8"]
"""The allow-list of the tests' pools: their origins listen on loopback, which pushes reach only when named."""


class Pool:
    def __init__(self, tracker: Service, name: str, token: str | None = None, *, private: bool = False) -> None:
        self.tracker = tracker
        self.name = name
        self.token = token
        self.private = private

    def job(self, job_id: str) -> dict[str, Any]:
        status, reply = api(self.tracker, "GET", f"/{self.name}/jobs/{job_id}", token=self.token)
        assert status == 200, reply
        return reply  # type: ignore[no-any-return]

    def push(self, url: str, **options: Any) -> str:
        status, reply = api(self.tracker, "POST", f"/{self.name}/jobs", {"url": url, **options}, token=self.token)
        assert status == 201, reply
        return reply["job"]  # type: ignore[no-any-return]

    def last_seen(self, name: str) -> float:
        """When the tracker last heard from the member named ``name``."""
        status, reply = api(self.tracker, "GET", f"/{self.name}/members", token=self.token)
        assert status == 200, reply
        (seen,) = [m["last_seen"] for m in reply["members"] if m["name"] == name]
        return float(seen)

    def next_heartbeat(self, name: str) -> None:
        """Wait for the member named ``name`` to send the tracker another heartbeat."""
        seen = self.last_seen(name)
        wait_for(lambda: self.last_seen(name) > seen, what=f"{name}'s next heartbeat")

    def live_members(self) -> int:
        status, reply = api(self.tracker, "GET", f"/{self.name}/members", token=self.token)
        assert status == 200, reply
        return sum(1 for m in reply["members"] if m["live"])

    def wait_job(self, job_id: str, status: str, *, timeout: float = 120) -> dict[str, Any]:
        return wait_for(  # type: ignore[no-any-return]
            lambda: (job := self.job(job_id))["status"] == status and job, timeout=timeout, what=f"job {status}"
        )


@pytest.fixture
def make_pool(tracker: Callable[..., Service]) -> Callable[..., Pool]:
    def make(
        name: str = "lan", *, private: bool = False, tracker_service: Service | None = None, admin: str | None = None
    ) -> Pool:
        service = tracker_service or tracker()
        status, reply = api(service, "POST", "", {"name": name, "private": private, "allow": LOOPBACK}, token=admin)
        assert status == 201, reply
        return Pool(service, name, reply["token"], private=private)

    return make


@pytest.fixture
def member(tmp_path: Path, services: list[Service]) -> Callable[..., Service]:
    def make(pool: Pool, name: str, *extra: str, capacity: str = "1G", log: Path | None = None) -> Service:
        spec = f"{pool.name}:{pool.token}" if pool.private and pool.token else pool.name
        service = start_daemon(
            tmp_path / name / "cache",
            tmp_path / name / "daemon.sock",
            tracker=pool.tracker.url,
            capacity=capacity,
            extra=["--pool", spec, "--name", name, *extra],
            log=log,
        )
        services.append(service)
        return service

    return make


def test_a_push_reaches_every_member_and_each_byte_leaves_the_origin_about_once(
    tracker: Callable[..., Service],
    make_pool: Callable[..., Pool],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    tmp_path: Path,
) -> None:
    o = origin("--rate", "24M")
    size = 24 * MiB
    data = make_file(o.root / "release.bin", size)
    # Patience far beyond any fetch here: no scope lease is taken over, so each piece enters each rack once.
    pool = make_pool(tracker_service=tracker(extra=("--crossing-patience", "600")))
    dests = []
    for n in range(4):
        dest_dir = tmp_path / f"dest{n}"
        dest_dir.mkdir()
        dests.append(dest_dir / "release.bin")
        member(pool, f"m{n}", "--pool-dest", str(dest_dir), "--site", "dc1", "--rack", f"r{n % 2}")
    wait_for(lambda: pool.live_members() == 4, what="4 members")

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    # Each member places the file under its own allowed directory: one push, one dest path, so the test
    # pushes the dest of member 0 and checks that the others refuse to write outside their --pool-dest.
    job_id = pool.push(o.url("release.bin"), digest=digest)
    job = pool.wait_job(job_id, "complete")

    assert [m["status"] for m in job["members"]] == ["done"] * 4
    assert job["replicas"] == {"target": None, "current": 4}
    from_origin = [m["from_origin"] for m in job["members"]]
    assert sum(1 for b in from_origin if b > 0) >= 2, f"the origin work was not split: {from_origin}"
    assert o.bytes_sent() <= 1.1 * size
    assert sum(m["from_origin"] + m["from_peers"] for m in job["members"]) >= 4 * size
    # Every member is labelled: each byte from a peer came from its rack or the other rack of its site.
    entered = {"r0": 0, "r1": 0}
    for m in job["members"]:
        assert m["from_peers"] == m["from_rack"] + m["from_racks"] and m["from_sites"] == 0, m
        entered[f"r{int(m['name'][1:]) % 2}"] += m["from_origin"] + m["from_racks"]
    # A push shares the engine's scope leases: the file crossed into each rack once, from the origin or
    # the other rack, and spread inside it.
    assert entered == {"r0": size, "r1": size}, entered
    table = pool_cli(pool.tracker, "status", pool.name, job_id, token=pool.token)
    caption = " ".join(table.stdout.split())  # rich wraps the caption to the terminal
    assert table.returncode == 0 and "across racks" in caption and "0 B across sites" in caption, table.stdout

    placed = pool.push(o.url("release.bin"), dest=str(dests[0]))
    job = pool.wait_job(placed, "complete")
    statuses = {m["name"]: (m["status"], m["error"]) for m in job["members"]}
    assert statuses["m0"] == ("done", "")
    assert dests[0].read_bytes() == data
    for name in ("m1", "m2", "m3"):
        status, error = statuses[name]
        assert status == "failed" and "--pool-dest" in error
    assert not any(d.exists() for d in dests[1:])


def test_a_member_that_joins_mid_job_takes_origin_work_and_gets_the_file(
    make_pool: Callable[..., Pool],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    # The origin's 12 s of work leaves a late member (a daemon starting on a busy machine) most of it to join.
    o = origin("--rate", "2M")
    size = 24 * MiB
    make_file(o.root / "big.bin", size)
    pool = make_pool()
    member(pool, "a")
    member(pool, "b")
    wait_for(lambda: pool.live_members() == 2, what="2 members")
    job_id = pool.push(o.url("big.bin"))
    wait_for(lambda: sum(m["done"] for m in pool.job(job_id)["members"]) > 2 * MiB, what="progress")

    member(pool, "late")
    job = pool.wait_job(job_id, "complete", timeout=180)
    late = next(m for m in job["members"] if m["name"] == "late")
    assert late["status"] == "done"
    assert late["from_origin"] > 0, "the member that joined took no share of the origin work"
    assert o.bytes_sent() <= 1.1 * size


def test_a_member_killed_mid_job_leaves_and_the_others_finish(
    make_pool: Callable[..., Pool],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin("--rate", "6M")
    size = 24 * MiB
    make_file(o.root / "big.bin", size)
    pool = make_pool()
    victim = member(pool, "victim")
    member(pool, "a")
    member(pool, "b")
    wait_for(lambda: pool.live_members() == 3, what="3 members")
    job_id = pool.push(o.url("big.bin"))
    wait_for(
        lambda: next(m for m in pool.job(job_id)["members"] if m["name"] == "victim")["done"] > 3 * MiB,
        what="the victim to be under way",
    )
    victim.kill()

    job = pool.wait_job(job_id, "complete", timeout=180)
    statuses = {m["name"]: m["status"] for m in job["members"]}
    assert statuses == {"victim": "left", "a": "done", "b": "done"}
    assert job["replicas"]["current"] == 2


def test_replicas_are_restored_after_a_holder_is_killed(
    make_pool: Callable[..., Pool],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    make_file(o.root / "model.bin", 4 * MiB)
    pool = make_pool()
    members = {
        name: member(pool, name, "--site", site) for name, site in [("a", "s1"), ("b", "s1"), ("c", "s2"), ("d", "s2")]
    }
    wait_for(lambda: pool.live_members() == 4, what="4 members")

    job_id = pool.push(o.url("model.bin"), replicas=2)
    job = pool.wait_job(job_id, "complete")
    holders = [m["name"] for m in job["members"] if m["status"] == "done"]
    assert len(holders) == 2 and job["replicas"] == {"target": 2, "current": 2}
    sites = {"a": "s1", "b": "s1", "c": "s2", "d": "s2"}
    assert {sites[h] for h in holders} == {"s1", "s2"}, "the copies were not spread across sites"

    members[holders[0]].kill()
    restored = wait_for(
        lambda: (
            (job := pool.job(job_id))["replicas"]["current"] == 2
            and job["status"] == "complete"
            and {m["name"]: m["status"] for m in job["members"]}[holders[0]] == "left"
            and job
        ),
        timeout=120,
        what="the replica count restored",
    )
    statuses = {m["name"]: m["status"] for m in restored["members"]}
    assert statuses[holders[0]] == "left"
    assert statuses[holders[1]] == "done"
    assert sum(1 for s in statuses.values() if s == "done") == 2


def test_a_private_pool_refuses_without_its_token_and_reveals_nothing(
    make_pool: Callable[..., Pool],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    tmp_path: Path,
) -> None:
    o = origin()
    make_file(o.root / "secret.bin", 1 * MiB)
    pool = make_pool("private", private=True)
    assert pool.token
    member(pool, "insider")
    outsider = Pool(pool.tracker, pool.name, None, private=True)
    member(outsider, "outsider")  # joins without the token: its heartbeats are refused
    wait_for(lambda: pool.live_members() == 1, what="the member with the token")

    for method, path, body in [
        ("GET", "", None),
        ("GET", "/members", None),
        ("POST", "/jobs", {"url": o.url("secret.bin")}),
        ("GET", "/jobs", None),
        ("POST", "/members/intruder", {"name": "x", "url": "http://127.0.0.1:1"}),
        ("DELETE", "", None),
    ]:
        status, reply = api(pool.tracker, method, f"/{pool.name}{path}", body)
        assert status == 401 and set(reply) == {"error"}, (method, path, reply)
        status, reply = api(pool.tracker, method, f"/{pool.name}{path}", body, token="wrong")
        assert status == 403 and set(reply) == {"error"}, (method, path, reply)
        status, reply = api(pool.tracker, method, f"/{pool.name}{path}", body, token="\xff\xfe")  # not ASCII
        assert status == 401 and set(reply) == {"error"}, (method, path, reply)
        assert "insider" not in reply["error"] and "secret" not in reply["error"]

    status, reply = api(pool.tracker, "GET", f"/{pool.name}/members", token=pool.token)
    assert [m["name"] for m in reply["members"]] == ["insider"]
    status, reply = api(pool.tracker, "GET", f"/{pool.name}/jobs", token=pool.token)
    assert reply["jobs"] == []  # the refused push created nothing

    job = pool.wait_job(pool.push(o.url("secret.bin")), "complete")
    assert [m["name"] for m in job["members"]] == ["insider"]

    with sqlite3.connect(tmp_path / "tracker.db") as db:
        (stored,) = db.execute("SELECT token_hash FROM pools WHERE name = 'private'").fetchone()
    assert stored == hashlib.sha256(pool.token.encode()).hexdigest()

    refused = pool_cli(pool.tracker, "status", pool.name, token="wrong")
    assert refused.returncode == 2 and "HTTP 403" in refused.stderr


def test_a_push_whose_origin_fails_fails_with_the_origins_error(
    make_pool: Callable[..., Pool], member: Callable[..., Service], origin: Callable[..., Origin]
) -> None:
    o = origin()
    pool = make_pool()
    member(pool, "a")
    member(pool, "b")
    wait_for(lambda: pool.live_members() == 2, what="2 members")
    job = pool.wait_job(pool.push(o.url("missing.bin")), "failed")
    assert "404" in job["error"], job
    assert {m["status"] for m in job["members"]} == {"failed"}


def test_a_cancelled_job_stops_its_members(
    make_pool: Callable[..., Pool],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    tmp_path: Path,
) -> None:
    o = origin("--rate", "2M")
    make_file(o.root / "slow.bin", 64 * MiB)
    pool = make_pool()
    member(pool, "a")
    wait_for(lambda: pool.live_members() == 1, what="a member")
    job_id = pool.push(o.url("slow.bin"))
    wait_for(lambda: pool.job(job_id)["members"][0]["done"] > 0, what="progress")

    cancelled = pool_cli(pool.tracker, "cancel", pool.name, job_id, token=pool.token)
    assert cancelled.returncode == 0, cancelled.stderr
    job = pool.job(job_id)
    assert job["status"] == "cancelled" and job["members"][0]["status"] == "cancelled"

    # The member stops: its download ends (nothing is reserved for it any more) and the origin is sending
    # nothing (every response to it has ended).
    node = DaemonClient(tmp_path / "a" / "daemon.sock")
    wait_for(
        lambda: node.status().reserved == 0 and o.stats()["streaming"] == 0,
        timeout=20,
        what="the member to stop fetching after the cancel",
    )
    asked, sent = o.requests(), o.bytes_sent()
    # Two more heartbeats: the reply to the first, which lists the cancelled job, has been acted on by the
    # time the second arrives. The member asked the origin for nothing meanwhile.
    for _ in range(2):
        pool.next_heartbeat("a")
    assert (o.requests(), o.bytes_sent()) == (asked, sent), "the member fetched again after the cancel"
    again = pool_cli(pool.tracker, "cancel", pool.name, job_id, token=pool.token)
    assert again.returncode == 2 and "409" in again.stderr


def test_pool_commands_end_to_end(
    tracker: Callable[..., Service],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    t = tracker()
    o = origin()
    make_file(o.root / "f.bin", 2 * MiB)
    created = pool_cli(t, "create", "ops", "--allow", "127.0.0.1")
    assert created.returncode == 0 and "created pool ops" in created.stdout, created.stderr
    token = created.stdout.split()[-1]
    assert pool_cli(t, "create", "ops").returncode == 2  # exists already
    assert api(t, "POST", "", {"name": "ops"}) == (409, {"error": "pool 'ops' exists already"})
    assert pool_cli(t, "create", "Bad Name").returncode == 2
    bad_allow = pool_cli(t, "create", "ops2", "--allow", "not a host")
    assert bad_allow.returncode == 2 and "allow-list entry" in bad_allow.stderr
    pool = Pool(t, "ops")
    member(pool, "n1")
    wait_for(lambda: pool.live_members() == 1, what="a member")

    listed = pool_cli(t, "members", "ops", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "n1"
    unowned = pool_cli(t, "push", "ops", o.url("f.bin"))
    assert unowned.returncode == 2 and "HTTP 401" in unowned.stderr
    pushed = pool_cli(t, "push", "ops", o.url("f.bin"), "--watch", token=token)
    assert pushed.returncode == 0, pushed.stderr
    job_id = pushed.stdout.split()[2]
    status = pool_cli(t, "status", "ops", job_id, "--json")
    assert json.loads(status.stdout)["status"] == "complete"
    table = pool_cli(t, "status", "ops")
    assert job_id in table.stdout and "complete" in table.stdout

    assert pool_cli(t, "push", "ops", "ftp://x/y", token=token).returncode == 2
    assert pool_cli(t, "push", "ops", o.url("f.bin"), "--dest", "relative/path", token=token).returncode == 2
    assert pool_cli(t, "status", "nosuch").returncode == 2
    assert pool_cli(t, "rm", "ops").returncode == 2
    removed = pool_cli(t, "rm", "ops", token=token)
    assert removed.returncode == 0
    assert pool_cli(t, "members", "ops").returncode == 2
    unreachable = subprocess.run(
        shoal_argv("pool", "--tracker", "http://127.0.0.1:9", "members", "ops"), capture_output=True, text=True
    )
    assert unreachable.returncode == 3


def test_a_holder_that_evicts_its_copy_is_replaced(
    make_pool: Callable[..., Pool],
    member: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    tmp_path: Path,
) -> None:
    o = origin()
    make_file(o.root / "layer.bin", 2 * MiB)
    pool = make_pool()
    for name in ("a", "b", "c"):
        member(pool, name)
    wait_for(lambda: pool.live_members() == 3, what="3 members")
    job_id = pool.push(o.url("layer.bin"), replicas=2)
    job = pool.wait_job(job_id, "complete")
    holder = next(m["name"] for m in job["members"] if m["status"] == "done")

    cache = ["cache", "--cache-dir", str(tmp_path / holder / "cache")]
    listing = subprocess.run(shoal_argv(*cache, "ls", "--json"), capture_output=True, text=True, timeout=60)
    digest = json.loads(listing.stdout.splitlines()[0])["id"]
    evicted = subprocess.run(shoal_argv(*cache, "evict", digest), capture_output=True, text=True, timeout=60)
    assert evicted.returncode == 0, evicted.stderr

    restored = wait_for(
        lambda: (
            (job := pool.job(job_id))["status"] == "complete"
            and sorted(m["status"] for m in job["members"]) == ["done", "done", "evicted"]
            and job
        ),
        what="a third member fetching a replica",
    )
    assert {m["name"]: m["status"] for m in restored["members"]}[holder] == "evicted"
    assert restored["replicas"] == {"target": 2, "current": 2}


def test_a_jobs_seeder_passkey_is_shown_to_its_members_only(tracker: Callable[..., Service]) -> None:
    """A mirror worker pushes its seeder's /files/PASSKEY/REL URLs, whose passkey opens the fleet's files: the
    pool's readers (its JSON API, `shoal pool status`) see /files/PASSKEY/, a member's heartbeat the whole URL
    it fetches."""
    t = tracker()
    created = pool_cli(t, "create", "mirrors", "--allow", "127.0.0.1")
    assert created.returncode == 0, created.stderr
    token = created.stdout.split()[-1]
    passkey = FleetKey.from_token(b"the fleet's token: 0123456789abcdef").passkey(SEEDER_HOLDER)
    url = f"http://127.0.0.1:9/files/{passkey}/debian/dists/Release"
    shown = "http://127.0.0.1:9/files/PASSKEY/debian/dists/Release"

    secret = secrets.token_hex(MEMBER_SECRET_HEX // 2)
    beat = {"name": "n1", "url": "http://127.0.0.1:7000/", "free": 1 << 40}
    joined = urllib.request.Request(
        f"{t.url}/v1/pools/mirrors/members/{member_id_for(secret)}",
        data=json.dumps(beat).encode(),
        method="POST",
        headers={"Content-Type": "application/json", MEMBER_SECRET: secret},
    )
    urllib.request.urlopen(joined, timeout=30).close()

    status, pushed = api(t, "POST", "/mirrors/jobs", {"url": url}, token=token)
    assert status == 201 and pushed["url"] == shown, pushed
    job_id = pushed["job"]
    for path in ("", "/jobs", f"/jobs/{job_id}"):
        status, reply = api(t, "GET", f"/mirrors{path}", token=token)
        assert status == 200 and passkey not in json.dumps(reply) and shown in json.dumps(reply), reply
    for argv in (("status", "mirrors"), ("status", "mirrors", job_id, "--json")):
        printed = pool_cli(t, *argv, token=token)
        assert printed.returncode == 0 and passkey not in printed.stdout, printed.stdout + printed.stderr
    assert shown in pool_cli(t, "status", "mirrors", job_id, "--json").stdout

    # An origin's password would reach every reader and member alike: such a push is refused, not stored.
    status, refused = api(t, "POST", "/mirrors/jobs", {"url": "http://mirror:s3cret-pw@127.0.0.1:9/x"}, token=token)
    assert status == 400 and "may not carry credentials" in json.dumps(refused), refused
    assert "s3cret-pw" not in json.dumps(refused)

    with urllib.request.urlopen(joined, timeout=30) as reply:  # the member's next heartbeat: its work
        work = json.load(reply)["work"]
    assert [(w["job"], w["url"]) for w in work] == [(job_id, url)]
