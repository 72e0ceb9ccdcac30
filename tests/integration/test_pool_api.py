"""``shoal.Pool``, the Python pool API dragonload's users drove (issue 29), against a real tracker and real
daemons: create, push (with a digest of any algorithm ``shoal get`` takes), status, watch until the end, ls."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

import shoal
from shoal.core.errors import PoolRefused, TrackerUnavailable, UsageError
from shoal.core.pool import MemberStatus, PushStatus
from shoal.testing.processes import Service
from tests.integration.conftest import Origin
from tests.integration.test_pool_owners import ADMIN, admin_file  # noqa: F401 - fixture
from tests.integration.test_pools import LOOPBACK, member, wait_for  # noqa: F401 - fixtures
from tests.integration.test_pools import Pool as PoolHandle


def test_the_pool_api_pushes_watches_and_lists_with_a_digest_of_any_algorithm(
    tracker: Callable[..., Service],
    member: Callable[..., Service],  # noqa: F811
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    admin_file: Path,  # noqa: F811
) -> None:
    o = origin("--rate", "4M")
    data = make_file(o.root / "release.bin", 4 << 20)
    t = tracker(extra=["--admin-token-file", str(admin_file)])

    with shoal.Pool(t.url, "edge", token=ADMIN) as operator:
        token = operator.create(allow=LOOPBACK)
    pool = shoal.Pool(t.url, "edge", token=token)
    member(PoolHandle(t, "edge", token), "m1")
    member(PoolHandle(t, "edge", token), "m2")
    wait_for(lambda: sum(m.live for m in pool.members()) == 2, what="2 members")

    md5 = "MD5:" + hashlib.md5(data).hexdigest().upper()  # the algorithm's case and the hex's are ignored
    job = pool.push(o.url("release.bin"), digest=md5)
    views = list(pool.watch(job, every=0.2))
    assert views[-1].status is PushStatus.COMPLETE, views[-1]
    assert all(v.status is PushStatus.RUNNING for v in views[:-1])
    assert views[-1].digest == md5.lower()
    assert [m.status for m in views[-1].members] == [MemberStatus.DONE] * 2
    assert pool.status(job).status is PushStatus.COMPLETE

    # A digest the file does not match fails on every member, checked by the member (not by an id).
    wrong = "blake2b:" + hashlib.blake2b(b"other bytes").hexdigest()
    failed = list(pool.watch(pool.push(o.url("release.bin"), digest=wrong), every=0.2))[-1]
    assert failed.status is PushStatus.FAILED
    assert all(m.status is MemberStatus.FAILED and "digest" in m.error for m in failed.members), failed.members

    (listed,) = pool.ls()
    assert (listed.name, listed.private, listed.members_live, listed.jobs_running) == ("edge", False, 2, 0)
    assert [j.job for j in pool.jobs()] == [job, failed.job]

    # Closed, it opens again on its next use, as shoal.Cache does.
    pool.close()
    pool.close()
    assert pool.status(job).job == job


def test_the_pool_api_asks_nothing_until_used_and_says_what_is_wrong(
    tracker: Callable[..., Service],
    admin_file: Path,  # noqa: F811
) -> None:
    nowhere = shoal.Pool("http://127.0.0.1:9", "edge")  # nothing is asked yet
    with pytest.raises(TrackerUnavailable):
        nowhere.ls()
    t = tracker(extra=["--admin-token-file", str(admin_file)])
    with pytest.raises(UsageError, match="names no pool"):
        shoal.Pool(t.url).push("http://127.0.0.1:1/f")
    with pytest.raises(UsageError, match="--digest takes ALGORITHM:HEX"):
        shoal.Pool(t.url, "edge").push("http://127.0.0.1:1/f", digest="crc32:0000")
    with pytest.raises(PoolRefused, match="operator's token") as refused:
        shoal.Pool(t.url, "edge").create()
    assert refused.value.status == 401
    with pytest.raises(PoolRefused, match="no pool 'edge'"):
        shoal.Pool(t.url, "edge").status("0" * 16)
