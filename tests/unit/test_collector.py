"""tracker.collector: what survives an older generation's collection is frozen; a look at every object now
and then (or once the frozen objects have grown) frees the cycles that died while frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shoal.testing.clock import FakeClock
from shoal.tracker.collector import SurvivorFreezer, thaw_due


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_survivors_of_a_middle_collection_are_frozen_and_looked_at_again_at_the_thaw(thawed: None) -> None:
    clock = FakeClock()
    records = [{"peer": n} for n in range(1000)]  # soft state: lives on through collections
    with SurvivorFreezer(thaw_every=600.0, clock=clock, floor=10**9) as freezer:
        gc.collect(0)
        assert gc.get_freeze_count() == 0, "a collection of the youngest generation freezes nothing"
        gc.collect(1)
        frozen = gc.get_freeze_count()
        assert frozen >= len(records), "the survivors of generation 1's collection are frozen"
        clock.advance(599.0)
        assert not freezer.tick()
        assert gc.get_freeze_count() == frozen
        clock.advance(1.0)
        assert freezer.tick(), "thaw_every has passed"
        assert gc.get_freeze_count() >= len(records), "what the look left alive is frozen again"
        assert not freezer.tick(), "the next look is thaw_every away again"
    gc.unfreeze()
    gc.collect()
    assert gc.get_freeze_count() == 0, "left, it freezes nothing more"
    assert len(records) == 1000


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_a_cycle_that_became_garbage_while_frozen_is_freed_by_the_thaw(thawed: None) -> None:
    clock = FakeClock()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    with SurvivorFreezer(thaw_every=600.0, clock=clock, floor=10**9) as freezer:
        gc.collect()  # the pair survives it, and is frozen
        del a, b
        gc.collect()
        assert gone() is not None, "frozen, the cycle is out of the collector's sight"
        clock.advance(600.0)
        assert freezer.tick()
        assert gone() is None, "the thaw's full collection freed it"


def test_the_frozen_objects_growing_past_the_last_look_bring_the_next_one_forward(thawed: None) -> None:
    clock = FakeClock()
    with SurvivorFreezer(thaw_every=600.0, clock=clock, floor=0, growth=2.0) as freezer:
        clock.advance(600.0)
        assert freezer.tick()  # the first look: it sets what "grown" is measured from
        left = gc.get_freeze_count()
        more = [[n] for n in range(left + 1000)]  # more than as many again, alive through collections
        gc.collect(1)
        assert gc.get_freeze_count() >= 2 * left
        assert freezer.tick(), "twice as many frozen as the last look left: a look is due at once"
        assert len(more) == left + 1000


@pytest.mark.parametrize(
    ("frozen", "after_last", "since_last", "due"),
    [
        (100, 100, 599.9, False),  # nothing grew, thaw_every not passed
        (100, 100, 600.0, True),  # thaw_every passed
        (399_999, 200_000, 1.0, False),  # grown, but not twice
        (400_000, 200_000, 1.0, True),  # twice as many
        (150_000, 10, 1.0, False),  # many times as many, but under the floor: a tracker starting up
        (250_000, 10, 1.0, True),  # past the floor and twice as many
    ],
)
def test_when_a_look_is_due(frozen: int, after_last: int, since_last: float, due: bool) -> None:
    assert (
        thaw_due(frozen=frozen, after_last=after_last, since_last=since_last, every=600.0, growth=2.0, floor=200_000)
        is due
    )
