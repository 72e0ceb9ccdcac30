"""The tracker's own look at an origin for a claim that a task's file changed (tracker.origin_check), against
a real origin."""

from __future__ import annotations

from dataclasses import replace

from shoal.core.manifest import OriginIdentity
from shoal.testing.clock import FakeClock
from shoal.testing.sockets import refusing_port
from shoal.tracker.origin_check import OriginCheck
from tests.integration.test_attacks import origin_identity

SIZE = 1 << 20


async def test_a_look_confirms_a_true_claim_and_contradicts_a_false_one(origin, make_file) -> None:
    src = origin()
    make_file(src.root / "f.bin", SIZE)
    url = src.url("f.bin")
    real = origin_identity(url)
    check = OriginCheck(recheck=0.05)
    try:
        assert await check.confirm(url, real, "10.0.0.1") == real
        forged = replace(real, etag='"forged"')
        assert await check.confirm(url, forged, "10.0.0.1") == real
        # The file changes: a later claim is looked at again (after ``recheck``), and borne out.
        make_file(src.root / "f.bin", SIZE + 1)
        changed = origin_identity(url)
        assert changed != real
        assert await check.confirm(url, changed, "10.0.0.1") == changed
    finally:
        await check.aclose()


async def test_a_true_claim_is_served_from_the_last_look(origin, make_file) -> None:
    src = origin()
    make_file(src.root / "g.bin", SIZE)
    url = src.url("g.bin")
    real = origin_identity(url)
    check = OriginCheck(recheck=3600)
    try:
        before = src.requests()
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            assert await check.confirm(url, real, host) == real
        assert src.requests() - before == 1
    finally:
        await check.aclose()


async def test_an_origin_out_of_reach_needs_claims_from_two_hosts() -> None:
    clock = FakeClock()
    claim = OriginIdentity(SIZE, '"v2"')
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/f.bin"
        check = OriginCheck(recheck=0, claim_ttl=60, clock=clock)
        try:
            assert await check.confirm(url, claim, "10.0.0.1") is None
            assert await check.confirm(url, claim, "10.0.0.1") is None, "one host twice is one host"
            assert await check.confirm(url, replace(claim, etag='"v3"'), "10.0.0.2") is None, "another claim"
            assert await check.confirm(url, claim, "10.0.0.2") == claim
        finally:
            await check.aclose()


async def test_claims_from_two_hosts_count_only_within_the_claim_ttl() -> None:
    clock = FakeClock()
    claim = OriginIdentity(SIZE, '"v2"')
    check = OriginCheck(enabled=False, claim_ttl=60, clock=clock)
    url = "http://origin.invalid/f.bin"  # never asked: looks are off
    assert await check.confirm(url, claim, "10.0.0.1") is None
    clock.advance(61)
    assert await check.confirm(url, claim, "10.0.0.2") is None, "the first claim lapsed"
    clock.advance(30)
    assert await check.confirm(url, claim, "10.0.0.1") == claim
    await check.aclose()
