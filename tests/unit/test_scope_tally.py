"""Bytes by scope summed over a task's peers (core.scope_tally), and their message (core.messages.ScopeBytes)."""

from __future__ import annotations

import pytest

from shoal.core.errors import ProtocolError
from shoal.core.messages import ScopeBytes
from shoal.core.scope_tally import ScopeTally
from shoal.core.structs import decode

T = "a" * 40


def test_each_peer_counts_once_with_what_grew_since_its_last_announce() -> None:
    tally = ScopeTally()
    tally.record(T, "p1", ScopeBytes(origin=10, rack=5), 1.0)
    tally.record(T, "p2", ScopeBytes(racks=7), 1.0)
    tally.record(T, "p1", ScopeBytes(origin=10, rack=8), 2.0)  # totals so far, not increments
    assert tally.totals(T) == ScopeBytes(origin=10, rack=8, racks=7)
    assert tally.totals("b" * 40) == ScopeBytes()


def test_a_peer_that_left_keeps_its_bytes_and_a_new_download_under_its_id_counts_whole() -> None:
    tally = ScopeTally()
    tally.record(T, "p1", ScopeBytes(sites=4), 1.0)
    tally.record(T, "p1", ScopeBytes(sites=6), 2.0, leaving=True)
    assert tally.totals(T) == ScopeBytes(sites=6)
    tally.record(T, "p1", ScopeBytes(sites=1), 3.0)  # after leaving: a new download
    assert tally.totals(T) == ScopeBytes(sites=7)
    tally.record(T, "p1", ScopeBytes(origin=2), 4.0)  # a counter went back: a new download again
    assert tally.totals(T) == ScopeBytes(origin=2, sites=7)


def test_peers_not_heard_of_are_forgotten_but_their_bytes_stay() -> None:
    tally = ScopeTally()
    tally.record(T, "old", ScopeBytes(unlabelled=3), 1.0)
    tally.record(T, "new", ScopeBytes(unlabelled=5), 9.0)
    tally.forget_before(5.0)
    tally.record(T, "new", ScopeBytes(unlabelled=6), 10.0)
    assert tally.totals(T) == ScopeBytes(unlabelled=9)
    tally.record(T, "old", ScopeBytes(unlabelled=3), 11.0)  # forgotten: its totals count as new
    assert tally.totals(T) == ScopeBytes(unlabelled=12)


def test_negative_or_absurd_byte_counts_are_refused() -> None:
    assert decode(b'{"rack":5}', ScopeBytes) == ScopeBytes(rack=5)
    for bad in (b"-1", b"1e300", b'"x"', str(1 << 60).encode()):
        with pytest.raises(ProtocolError, match="rack"):
            decode(b'{"rack":%s}' % bad, ScopeBytes)


def test_a_forgotten_task_leaves_the_tally_and_keeps_its_bytes_in_the_grand_totals() -> None:
    tally = ScopeTally()
    tally.record("a", "p1", ScopeBytes(origin=10, rack=5), 1.0)
    tally.record("a", "p2", ScopeBytes(racks=3), 1.0)
    tally.record("b", "p1", ScopeBytes(origin=1, unlabelled=2), 1.0)
    before = tally.grand_totals()
    assert before == ScopeBytes(origin=11, rack=5, racks=3, unlabelled=2)
    tally.forget(["a", "never-seen"])
    assert len(tally) == 1 and tally.totals("a") == ScopeBytes()
    assert tally.grand_totals() == before  # a counter never goes down
    # The task's peers were forgotten with it: a later announce of one is a new entry, counted whole.
    tally.record("a", "p1", ScopeBytes(origin=10, rack=6), 2.0)
    assert tally.totals("a") == ScopeBytes(origin=10, rack=6)
    assert tally.grand_totals() == ScopeBytes(origin=21, rack=11, racks=3, unlabelled=2)


def test_the_grand_totals_are_every_tasks_totals_added_up() -> None:
    tally = ScopeTally()
    for n, task in enumerate("abcd"):
        for peer in ("p1", "p2"):
            tally.record(task, peer, ScopeBytes(origin=n, sites=n + 1), float(n))
            tally.record(task, peer, ScopeBytes(origin=2 * n, sites=n + 1), float(n) + 0.5)  # origin grew by n
    assert tally.grand_totals() == ScopeBytes(origin=2 * (0 + 2 + 4 + 6), sites=2 * (1 + 2 + 3 + 4))
    expected = ScopeBytes()
    for task in "abcd":
        expected += tally.totals(task)
    assert tally.grand_totals() == expected


def test_forgetting_peers_takes_the_least_recently_heard_and_no_others() -> None:
    tally = ScopeTally()
    tally.record(T, "p1", ScopeBytes(origin=1), 1.0)
    tally.record(T, "p2", ScopeBytes(origin=1), 2.0)
    tally.record(T, "p1", ScopeBytes(origin=2), 3.0)  # heard again: now the most recent
    tally.forget_before(2.5)
    # p2 was forgotten: its same totals count again; p1 was not: its same totals add nothing.
    tally.record(T, "p1", ScopeBytes(origin=2), 4.0)
    tally.record(T, "p2", ScopeBytes(origin=1), 4.0)
    assert tally.totals(T) == ScopeBytes(origin=4)
    # A peer that left is no longer queued: nothing of it is left to forget.
    tally.record(T, "p1", ScopeBytes(origin=2), 5.0, leaving=True)
    tally.forget_before(10.0)
    assert tally.totals(T) == ScopeBytes(origin=4) and len(tally) == 1
