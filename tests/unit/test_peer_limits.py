"""The tracker's limits on new peers (core.peer_limits), with values and times."""

from __future__ import annotations

import pytest

from shoal.core.peer_limits import PeerLimits, source_key

T0 = 1_700_000_000.0


def limits(*, cap: int = 0, rate: int = 0) -> PeerLimits:
    return PeerLimits(max_peers_per_task=cap, new_peers_per_minute=rate, interval=5.0)


def test_a_full_task_takes_no_new_peer_and_says_to_come_back_after_an_interval() -> None:
    lim = limits(cap=3)
    assert lim.admit(swarm_size=2, source="10.0.0.1", now=T0) is None
    refusal = lim.admit(swarm_size=3, source="10.0.0.1", now=T0)
    assert refusal is not None and (refusal.status, refusal.retry_after) == (503, 5)
    assert "has 3 peers" in refusal.message and "--max-peers-per-task" in refusal.message
    assert lim.refused_full == 1


def test_a_source_has_a_burst_of_a_minutes_worth_then_the_rate() -> None:
    lim = limits(rate=60)  # one a second
    assert all(lim.admit(swarm_size=0, source="10.0.0.1", now=T0) is None for _ in range(60))
    refusal = lim.admit(swarm_size=0, source="10.0.0.1", now=T0)
    assert refusal is not None and (refusal.status, refusal.retry_after) == (429, 1)
    assert "10.0.0.1" in refusal.message and "at most 60 a minute" in refusal.message
    # Another source has its own bucket; the refused one gets a token back a second later, one only.
    assert lim.admit(swarm_size=0, source="10.0.0.2", now=T0) is None
    assert lim.admit(swarm_size=0, source="10.0.0.1", now=T0 + 0.5) is not None
    assert lim.admit(swarm_size=0, source="10.0.0.1", now=T0 + 1.0) is None
    assert lim.admit(swarm_size=0, source="10.0.0.1", now=T0 + 1.0) is not None
    assert lim.refused_rate == 3


def test_refusals_take_no_token() -> None:
    lim = limits(rate=60)
    for _ in range(60):
        lim.admit(swarm_size=0, source="h", now=T0)
    for _ in range(100):  # a client that keeps asking does not push its own wait further out
        refusal = lim.admit(swarm_size=0, source="h", now=T0 + 0.5)
        assert refusal is not None and refusal.retry_after == 1
    assert lim.admit(swarm_size=0, source="h", now=T0 + 1.0) is None


def test_the_cap_is_checked_first_and_costs_no_token() -> None:
    lim = limits(cap=1, rate=1)
    refusal = lim.admit(swarm_size=1, source="h", now=T0)
    assert refusal is not None and refusal.status == 503
    assert lim.admit(swarm_size=0, source="h", now=T0) is None


def test_zero_turns_the_limits_off() -> None:
    lim = limits()
    assert all(lim.admit(swarm_size=10**6, source="h", now=T0) is None for _ in range(10_000))
    assert len(lim) == 0


def test_buckets_that_refilled_are_dropped() -> None:
    lim = limits(rate=60)  # one a second, a burst of 60
    for _ in range(60):
        lim.admit(swarm_size=0, source="a", now=T0)
    for _ in range(30):
        lim.admit(swarm_size=0, source="b", now=T0 + 50)
    lim.sweep(T0 + 59)
    assert len(lim) == 2  # a has 59 tokens, b 39
    lim.sweep(T0 + 61)
    assert len(lim) == 1  # a is full again: as good as a new bucket
    lim.sweep(T0 + 80)
    assert len(lim) == 0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("peer.example", "peer.example"),
    ],
)
def test_sources_are_counted_by_address_and_ipv6_by_its_64(host: str, key: str) -> None:
    assert source_key(host) == key
