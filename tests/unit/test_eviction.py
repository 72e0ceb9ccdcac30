"""The cache's eviction plan (core.eviction): LRU between watermarks, pinned and in-use entries kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import CacheFull
from shoal.core.eviction import Entry, Watermarks, plan_eviction

CAP = 1000


def entries(*sizes: int, pinned: tuple[int, ...] = (), in_use: tuple[int, ...] = ()) -> list[Entry]:
    """Entry i is named e<i> and was last used at time i (e0 is the least recently used)."""
    return [Entry(f"e{i}", size, float(i), i in pinned, i in in_use) for i, size in enumerate(sizes)]


def test_nothing_is_evicted_under_the_high_watermark() -> None:
    assert plan_eviction(entries(400, 400), used=800, incoming=150, capacity=CAP) == ()


def test_past_the_high_watermark_lru_entries_go_down_to_the_low_watermark() -> None:
    # 900 + 100 > 950: evict until used + incoming <= 850, oldest first.
    plan = plan_eviction(entries(100, 100, 100, 600), used=900, incoming=100, capacity=CAP)
    assert plan == ("e0", "e1")


def test_pinned_and_in_use_entries_are_never_planned() -> None:
    plan = plan_eviction(entries(100, 100, 100, 600, pinned=(0,), in_use=(1,)), used=900, incoming=100, capacity=CAP)
    assert plan == ("e2", "e3")


def test_a_file_larger_than_the_capacity_evicts_nothing() -> None:
    with pytest.raises(CacheFull, match="larger than the cache's capacity") as info:
        plan_eviction(entries(100), used=100, incoming=CAP + 1, capacity=CAP)
    assert info.value.size == CAP + 1 and info.value.capacity == CAP


def test_no_room_when_pinned_entries_hold_the_space() -> None:
    with pytest.raises(CacheFull, match="pinned, in use or being downloaded"):
        plan_eviction(entries(500, 400, 50, pinned=(0, 1)), used=950, incoming=101, capacity=CAP)


def test_when_the_low_watermark_is_out_of_reach_only_what_is_needed_goes() -> None:
    # Pinned 800; evictable 50 + 50 + 50. The file (100) needs 50 freed to fit in 1000; reaching 850
    # would need 200, more than there is: evict the oldest one, keep the other two.
    plan = plan_eviction(entries(800, 50, 50, 50, pinned=(0,)), used=950, incoming=100, capacity=CAP)
    assert plan == ("e1",)


def test_watermarks_are_validated() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        Watermarks(high=0.5, low=0.9)


@st.composite
def caches(draw: st.DrawFn) -> tuple[list[Entry], int, int]:
    sizes = draw(st.lists(st.integers(0, 400), max_size=12))
    flags = draw(st.lists(st.sampled_from(["", "pinned", "in_use"]), min_size=len(sizes), max_size=len(sizes)))
    times = draw(st.lists(st.floats(0, 100), min_size=len(sizes), max_size=len(sizes)))
    items = [
        Entry(f"e{i}", size, times[i], flag == "pinned", flag == "in_use")
        for i, (size, flag) in enumerate(zip(sizes, flags, strict=True))
    ]
    extra = draw(st.integers(0, 300))  # reserved by downloads in progress
    incoming = draw(st.integers(0, 1200))
    return items, sum(e.size for e in items) + extra, incoming


@given(caches())
def test_a_plan_fits_the_file_within_the_capacity_or_fails_whole(case: tuple[list[Entry], int, int]) -> None:
    items, used, incoming = case
    by_digest = {e.digest: e for e in items}
    try:
        plan = plan_eviction(items, used=used, incoming=incoming, capacity=CAP)
    except CacheFull:
        evictable = sum(e.size for e in items if e.evictable)
        assert incoming > CAP or used - evictable + incoming > CAP
        return
    assert len(set(plan)) == len(plan)
    assert all(by_digest[d].evictable for d in plan)
    freed = sum(by_digest[d].size for d in plan)
    assert used - freed + incoming <= CAP
    if used + incoming <= CAP * 0.95:
        assert plan == ()
    # Least recently used first: nothing kept is older than something evicted.
    kept = [e for e in items if e.evictable and e.digest not in plan]
    if plan and kept:
        assert max(by_digest[d].last_access for d in plan) <= min(e.last_access for e in kept)
