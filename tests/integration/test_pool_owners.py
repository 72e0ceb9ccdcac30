"""Pools have owners (issue 28), with real processes: each attack an outsider without credentials tried
is refused and changes nothing; the operator's token creates pools and manages any of them."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.core.pool import member_id_for
from shoal.testing.processes import Service, shoal_argv, start_tracker
from tests.integration.conftest import Origin
from tests.integration.test_pools import (  # noqa: F401 - fixtures
    LOOPBACK,
    Pool,
    api,
    make_pool,
    member,
    wait_for,
)

ADMIN = "operator-" + "7" * 40


@pytest.fixture
def admin_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin.token"
    path.write_text(ADMIN + "\n")
    path.chmod(0o600)
    return path


def heartbeat_as(tracker: Service, pool: str, member_id: str, body: Any, secret: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{tracker.url}/v1/pools/{pool}/members/{member_id}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **({"Shoal-Member-Secret": secret} if secret else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_only_the_operator_creates_pools_and_outsiders_can_neither_remove_push_nor_squat(
    tracker: Callable[..., Service],
    make_pool: Callable[..., Pool],  # noqa: F811
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    admin_file: Path,
) -> None:
    o = origin()
    make_file(o.root / "f.bin", 256 * 1024)
    t = tracker(extra=["--admin-token-file", str(admin_file)])

    # Squatting: without the operator's token no name can be taken, private or public.
    for private in (True, False):
        assert api(t, "POST", "", {"name": "prod", "private": private})[0] == 401
        assert api(t, "POST", "", {"name": "prod", "private": private}, token="guess" * 8)[0] == 403
    assert api(t, "GET", "/prod")[0] == 404
    edge = make_pool("edge", tracker_service=t, admin=ADMIN)
    assert edge.token and edge.token != ADMIN

    # The outsider's attacks on a public pool, each refused.
    for method, path, body in [
        ("DELETE", "", None),
        ("POST", "/jobs", {"url": o.url("f.bin")}),
    ]:
        status, reply = api(t, method, f"/edge{path}", body)
        assert status == 401 and set(reply) == {"error"}, (method, path, reply)
        status, reply = api(t, method, f"/edge{path}", body, token="not-the-owner")
        assert status == 403 and set(reply) == {"error"}, (method, path, reply)
    assert api(t, "GET", "/edge/jobs") == (200, {"jobs": []})  # reading a public pool stays open

    # The owner pushes; the outsider cannot cancel, the owner can (the job, with no member, has failed: a
    # 409 is the state machine's answer, given only past the token check).
    job_id = edge.push(o.url("f.bin"))
    assert api(t, "POST", f"/edge/jobs/{job_id}/cancel")[0] == 401
    assert api(t, "POST", f"/edge/jobs/{job_id}/cancel", token=edge.token)[0] == 409

    # The operator manages any pool, removing one included; the owner's token does not create.
    assert api(t, "POST", "", {"name": "other"}, token=edge.token)[0] == 403
    assert api(t, "DELETE", "/edge", token=ADMIN) == (200, {"removed": "edge"})
    assert api(t, "GET", "/edge")[0] == 404


def test_a_heartbeat_under_another_members_id_is_refused_and_changes_nothing(
    make_pool: Callable[..., Pool],  # noqa: F811
    member: Callable[..., Service],  # noqa: F811
) -> None:
    pool = make_pool()
    daemon = member(pool, "honest")
    wait_for(lambda: pool.live_members() == 1, what="the member")
    (before,) = api(pool.tracker, "GET", f"/{pool.name}/members")[1]["members"]
    assert before["url"] == daemon.url

    forged = {"name": "honest", "url": "http://203.0.113.66:1/"}
    assert heartbeat_as(pool.tracker, pool.name, before["member_id"], forged, None)[0] == 401
    status, reply = heartbeat_as(pool.tracker, pool.name, before["member_id"], forged, "a" * 32)
    assert status == 403 and "not yours" in reply["error"]
    # A report or a leave under its id is refused the same way.
    leave = f"{pool.tracker.url}/v1/pools/{pool.name}/members/{before['member_id']}"
    request = urllib.request.Request(leave, method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 401
    info.value.close()

    (after,) = api(pool.tracker, "GET", f"/{pool.name}/members")[1]["members"]
    assert after["url"] == daemon.url and after["live"]

    # An outsider may join a public pool, but only under an id of its own secret.
    secret = os.urandom(16).hex()
    status, reply = heartbeat_as(pool.tracker, pool.name, member_id_for(secret), forged, secret)
    assert status == 200, reply


def test_a_push_to_an_internal_address_is_refused_unless_the_pools_allow_list_names_it(
    tracker: Callable[..., Service], origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    make_file(o.root / "f.bin", 1024)
    t = tracker()
    token = api(t, "POST", "", {"name": "open"})[1]["token"]
    for url in ("http://169.254.169.254/latest/meta-data/iam/", o.url("f.bin"), "http://localhost:9/x"):
        status, reply = api(t, "POST", "/open/jobs", {"url": url}, token=token)
        assert status == 400 and "internal address" in reply["error"], reply
    assert api(t, "GET", "/open/jobs", token=token) == (200, {"jobs": []})

    status, reply = api(t, "POST", "", {"name": "lab", "allow": LOOPBACK})
    assert status == 201 and reply["allow"] == LOOPBACK
    lab = reply["token"]
    assert api(t, "POST", "/lab/jobs", {"url": o.url("f.bin")}, token=lab)[0] == 201
    status, reply = api(t, "POST", "/lab/jobs", {"url": "http://169.254.169.254/x"}, token=lab)
    assert status == 400 and "allow-list" in reply["error"]
    assert api(t, "POST", "", {"name": "bad", "allow": ["no such thing!"]})[0] == 400
    assert api(t, "GET", "/bad")[0] == 404


def test_without_an_operator_token_the_tracker_warns_and_the_operator_can_take_back_a_squatted_name(
    tmp_path: Path, services: list[Service], admin_file: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'tracker.db'}"
    log = tmp_path / "tracker.log"
    open_tracker = start_tracker(db, log=log)
    services.append(open_tracker)
    assert "NO OPERATOR TOKEN" in log.read_text()
    squatter = api(open_tracker, "POST", "", {"name": "prod", "private": True})[1]["token"]
    open_tracker.stop()

    guarded = start_tracker(db, extra=["--admin-token-file", str(admin_file)])
    services.append(guarded)
    assert api(guarded, "GET", "/prod")[0] == 401  # the squatter's private pool
    assert api(guarded, "POST", "", {"name": "prod2"}, token=squatter)[0] == 403  # its token creates nothing
    assert api(guarded, "POST", "", {"name": "prod"}, token=ADMIN)[0] == 409  # the name is taken...
    assert api(guarded, "DELETE", "/prod", token=ADMIN) == (200, {"removed": "prod"})  # ...until the operator
    status, reply = api(guarded, "POST", "", {"name": "prod"}, token=ADMIN)
    assert status == 201 and reply["token"] != squatter


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_an_operator_token_file_open_to_others_is_refused(tmp_path: Path, admin_file: Path, mode: int) -> None:
    admin_file.chmod(mode)
    argv = shoal_argv("tracker", "--port", "0", "--db", f"sqlite:///{tmp_path / 't.db'}")
    done = subprocess.run([*argv, "--admin-token-file", str(admin_file)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "chmod 600" in done.stderr, done.stderr


def test_a_member_of_a_removed_pool_says_so_once_and_stops_asking_often(
    make_pool: Callable[..., Pool],  # noqa: F811
    tmp_path: Path,
    services: list[Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    from shoal.testing.processes import start_daemon

    o = origin()
    make_file(o.root / "f.bin", 256 * 1024)
    gone = make_pool("gone")
    stays = make_pool("stays", tracker_service=gone.tracker)
    log = tmp_path / "member.log"
    daemon = start_daemon(
        tmp_path / "m" / "cache",
        tmp_path / "m" / "sock",
        tracker=gone.tracker.url,
        extra=["--pool", "gone", "--pool", "stays", "--name", "m"],
        log=log,
    )
    services.append(daemon)
    wait_for(lambda: gone.live_members() == 1 and stays.live_members() == 1, what="the member in both pools")
    assert api(gone.tracker, "DELETE", "/gone", token=gone.token)[0] == 200
    said = "pool gone: the tracker refused: no pool 'gone' (HTTP 404); asking again every 60 s"
    wait_for(lambda: said in log.read_text(), what="the member's one line about the removed pool")
    # A whole push in the other pool later, the member has not said it again (it would every few seconds).
    stays.wait_job(stays.push(o.url("f.bin")), "complete")
    assert log.read_text().count(said) == 1
    assert api(gone.tracker, "GET", "/gone")[0] == 404  # its heartbeats recreate nothing
