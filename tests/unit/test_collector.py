"""tracker.collector: what survives a full collection is frozen; a thaw now and then hands it back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shoal.testing.clock import FakeClock
from shoal.tracker.collector import SurvivorFreezer


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_survivors_of_a_full_collection_are_frozen_until_the_thaw(thawed: None) -> None:
    clock = FakeClock()
    records = [{"peer": n} for n in range(1000)]  # soft state: lives on through collections
    with SurvivorFreezer(thaw_every=600.0, clock=clock) as freezer:
        gc.collect(1)
        assert gc.get_freeze_count() == 0, "a young collection freezes nothing"
        gc.collect()
        frozen = gc.get_freeze_count()
        assert frozen >= len(records)
        clock.advance(599.0)
        freezer.tick()
        assert gc.get_freeze_count() == frozen
        clock.advance(1.0)
        freezer.tick()
        assert gc.get_freeze_count() == 0, "the thaw hands every frozen object back to the collector"
    gc.collect()
    assert gc.get_freeze_count() == 0, "left, it freezes nothing more"
    assert len(records) == 1000


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_a_cycle_that_became_garbage_while_frozen_is_freed_after_the_thaw(thawed: None) -> None:
    clock = FakeClock()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    with SurvivorFreezer(thaw_every=600.0, clock=clock) as freezer:
        gc.collect()  # the pair survives it, and is frozen
        del a, b
        gc.collect()
        assert gone() is not None, "frozen, the cycle is out of the collector's sight"
        clock.advance(600.0)
        freezer.tick()
        gc.collect()
        assert gone() is None
