"""Unchoke slots (core.unchoke): bounded, handed on in turn, rotated while peers wait."""

from __future__ import annotations

import pytest

from shoal.core.unchoke import UnchokeSlots

NOW = 1_000.0


def test_slots_are_bounded_and_pass_to_the_longest_waiting() -> None:
    slots: UnchokeSlots[str] = UnchokeSlots(limit=2)
    assert [slots.want(peer, NOW) for peer in "abcd"] == [True, True, False, False]
    assert slots.want("a", NOW) is False  # already unchoked: nothing to do
    assert slots.leave("c", NOW) == []  # a waiting peer leaves: no slot freed
    assert slots.leave("a", NOW) == ["d"]
    assert slots.leave("zz", NOW) == []
    assert list(slots.unchoked) == ["b", "d"] and not slots.waiting


def test_slots_rotate_only_while_others_wait() -> None:
    slots: UnchokeSlots[str] = UnchokeSlots(limit=2, rotate_after=30.0)
    slots.want("a", NOW)
    slots.want("b", NOW + 10)
    assert slots.rotate(NOW + 100) == ([], [])  # nobody waits
    slots.want("c", NOW + 100)
    assert slots.rotate(NOW + 100) == (["a"], ["c"])  # a, the longest unchoked, gives way to c
    assert slots.rotate(NOW + 101) == (["b"], ["a"])
    assert slots.rotate(NOW + 102) == ([], [])  # c and a just got their turn
    assert list(slots.waiting) == ["b"]
    with pytest.raises(ValueError):
        UnchokeSlots(limit=0)
