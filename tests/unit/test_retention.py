"""The retention plan (core.retention): keep the newest K versions and/or those younger than a maximum age;
never the newest one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.retention import next_version_name, plan_retention, version_created

DAY = 86400.0
VERSIONS = [("v1", 1 * DAY), ("v2", 2 * DAY), ("v3", 3 * DAY), ("v4", 4 * DAY)]


def test_no_limits_remove_nothing() -> None:
    assert plan_retention(VERSIONS, keep_versions=None, max_age=None, now=100 * DAY) == ()


def test_keep_the_newest_k_oldest_removed_first() -> None:
    assert plan_retention(VERSIONS, keep_versions=2, max_age=None, now=5 * DAY) == ("v1", "v2")


def test_order_of_input_does_not_matter() -> None:
    shuffled = [VERSIONS[2], VERSIONS[0], VERSIONS[3], VERSIONS[1]]
    assert plan_retention(shuffled, keep_versions=3, max_age=None, now=5 * DAY) == ("v1",)


def test_max_age_removes_older_versions() -> None:
    # now = day 5: v1 is 4 days old, v2 3 days; 2.5 days keeps v3 (2 days) and v4.
    assert plan_retention(VERSIONS, keep_versions=None, max_age=2.5 * DAY, now=5 * DAY) == ("v1", "v2")


def test_exactly_max_age_is_kept() -> None:
    assert plan_retention(VERSIONS, keep_versions=None, max_age=3 * DAY, now=5 * DAY) == ("v1",)


def test_the_newest_survives_any_age() -> None:
    assert plan_retention(VERSIONS, keep_versions=None, max_age=1.0, now=100 * DAY) == ("v1", "v2", "v3")


def test_either_rule_removes() -> None:
    assert plan_retention(VERSIONS, keep_versions=3, max_age=2.5 * DAY, now=5 * DAY) == ("v1", "v2")


def test_ties_in_time_are_broken_by_name() -> None:
    assert plan_retention([("b", 1.0), ("a", 1.0)], keep_versions=1, max_age=None, now=2.0) == ("a",)


def test_empty() -> None:
    assert plan_retention([], keep_versions=1, max_age=1.0, now=0.0) == ()


@pytest.mark.parametrize(("keep", "age"), [(0, None), (-1, None), (None, 0.0), (None, -5.0)])
def test_limits_must_be_positive(keep: int | None, age: float | None) -> None:
    with pytest.raises(ValueError):
        plan_retention(VERSIONS, keep_versions=keep, max_age=age, now=0.0)


versions_st = st.dictionaries(
    st.from_regex(r"v[0-9]{1,4}", fullmatch=True), st.floats(0, 1e6, allow_nan=False), max_size=30
).map(lambda d: list(d.items()))


@given(
    versions_st,
    st.none() | st.integers(1, 40),
    st.none() | st.floats(0.001, 1e6, allow_nan=False),
    st.floats(0, 2e6, allow_nan=False),
)
def test_properties(versions: list[tuple[str, float]], keep: int | None, age: float | None, now: float) -> None:
    removed = plan_retention(versions, keep_versions=keep, max_age=age, now=now)
    kept = {name for name, _ in versions} - set(removed)
    assert len(set(removed)) == len(removed)
    assert set(removed) <= {name for name, _ in versions}
    if versions:
        newest = max(versions, key=lambda v: (v[1], v[0]))[0]
        assert newest in kept
    # The count alone keeps exactly min(K, n); with an age limit too, never more than K.
    if keep is not None and age is None:
        assert len(kept) == min(keep, len(versions))
    if keep is not None:
        assert len(kept) <= keep
    created = dict(versions)
    for name in removed:
        too_old = age is not None and now - created[name] > age
        rank = sorted(versions, key=lambda v: (v[1], v[0]), reverse=True).index((name, created[name]))
        assert too_old or (keep is not None and rank >= keep)
    # Oldest first.
    assert [created[n] for n in removed] == sorted(created[n] for n in removed)


# -- version names -------------------------------------------------------------------------------------------

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_version_names_are_utc_timestamps() -> None:
    assert next_version_name([], T0) == "20231114T221320Z"
    assert version_created("20231114T221320Z") == T0
    assert version_created("20231114T221320Z-0002") == T0


@pytest.mark.parametrize("name", ["latest", "20231114T221320", "20231114T221320Z-1", "20231399T000000Z", ""])
def test_other_names_are_not_versions(name: str) -> None:
    assert version_created(name) is None


def test_a_taken_name_gets_the_next_suffix() -> None:
    assert next_version_name(["20231114T221320Z"], T0) == "20231114T221320Z-0001"
    assert next_version_name(["20231114T221320Z", "20231114T221320Z-0001"], T0) == "20231114T221320Z-0002"
    assert next_version_name(["20231114T221320Z"], T0 + 1) == "20231114T221321Z"


def test_a_clock_stepped_back_still_names_the_newest_last() -> None:
    later = "20231114T231320Z"
    assert next_version_name([later, "junk"], T0) == later + "-0001"


@given(st.lists(st.floats(0, 4e9, allow_nan=False), min_size=1, max_size=20))
def test_each_new_name_sorts_after_all_before(times: list[float]) -> None:
    names: list[str] = []
    for now in times:
        name = next_version_name(names, now)
        assert version_created(name) is not None
        assert all(name > earlier for earlier in names)
        names.append(name)
