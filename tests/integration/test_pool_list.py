"""The list of pools (``GET /v1/pools``, ``shoal pool ls``) with a real tracker and daemon: counts, no
secrets, and a private pool shown only to those its rules let read it (issue 29, from dragonload)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.testing.processes import Service, shoal_argv
from tests.integration.conftest import Origin
from tests.integration.test_pool_owners import ADMIN, admin_file  # noqa: F401 - fixture
from tests.integration.test_pools import (  # noqa: F401 - fixtures
    Pool,
    api,
    make_pool,
    member,
    pool_cli,
    wait_for,
)

SUMMARY = {"name", "private", "created", "members_live", "jobs_running"}


def listed(tracker: Service, token: str | None = None) -> dict[str, dict[str, object]]:
    status, reply = api(tracker, "GET", "", token=token)
    assert status == 200, reply
    return {p["name"]: p for p in reply["pools"]}


def test_pools_are_listed_with_counts_and_a_private_one_only_to_its_token_and_the_operator(
    tracker: Callable[..., Service],
    make_pool: Callable[..., Pool],  # noqa: F811
    member: Callable[..., Service],  # noqa: F811
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    admin_file: Path,  # noqa: F811
) -> None:
    o = origin("--rate", "256K")  # slow: the job is still running when it is counted
    make_file(o.root / "slow.bin", 8 << 20)
    t = tracker(extra=["--admin-token-file", str(admin_file)])
    edge = make_pool("edge", tracker_service=t, admin=ADMIN)
    vault = make_pool("vault", private=True, tracker_service=t, admin=ADMIN)
    make_pool("empty", tracker_service=t, admin=ADMIN)
    member(edge, "m1")
    member(vault, "v1")
    wait_for(lambda: edge.live_members() == 1 and vault.live_members() == 1, what="the members")
    job = edge.push(o.url("slow.bin"))

    outsider = listed(t)
    assert set(outsider) == {"edge", "empty"}, "an outsider learned a private pool's name"
    assert outsider["edge"] == {**outsider["edge"], "private": False, "members_live": 1, "jobs_running": 1}
    assert outsider["empty"]["members_live"] == 0 and outsider["empty"]["jobs_running"] == 0
    assert all(set(p) == SUMMARY for p in outsider.values()), "the list carries more than counts"
    # A wrong token reads what an outsider reads; the private pool's token opens it, the operator's all.
    assert set(listed(t, token="not-a-token-of-any-pool")) == {"edge", "empty"}
    assert set(listed(t, token=vault.token)) == {"edge", "empty", "vault"}
    every = listed(t, token=ADMIN)
    assert every["vault"]["private"] is True and every["vault"]["members_live"] == 1

    # The command: a table, and the same list as JSON.
    table = pool_cli(t, "ls")
    assert table.returncode == 0, table.stderr
    assert "edge" in table.stdout and "public" in table.stdout and "vault" not in table.stdout
    as_json = pool_cli(t, "ls", "--json", token=vault.token)
    assert as_json.returncode == 0, as_json.stderr
    assert [p["name"] for p in json.loads(as_json.stdout)["pools"]] == ["edge", "empty", "vault"]

    # A job that ends is no longer counted.
    assert api(t, "POST", f"/edge/jobs/{job}/cancel", token=edge.token)[0] == 200
    assert listed(t)["edge"]["jobs_running"] == 0


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_pool_ls_without_a_tracker_is_a_usage_error(extra: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_TRACKER"}
    done = subprocess.run(shoal_argv("pool", "ls", *extra), capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "no tracker" in done.stderr
