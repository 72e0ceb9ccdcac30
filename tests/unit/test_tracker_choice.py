"""Which tracker a client asks (core.tracker_choice): the list's parsing and the failover rule, with values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import TrackerUnreachable, UsageError
from shoal.core.tracker_choice import TrackerChoice, parse_trackers, served_by_tracker

A, B, C = "http://t1:6969", "http://t2:6969", "https://t3.example"


def down(url: str, why: str = "Connection refused") -> TrackerUnreachable:
    return TrackerUnreachable(f"cannot reach the tracker at {url}: {why}", tracker=url)


def test_one_url_or_several_in_order() -> None:
    assert parse_trackers("http://t1:6969/") == (A,)
    assert parse_trackers(f"{A}, {B}/ ,{C}") == (A, B, C), "spaces and trailing slashes go"
    assert parse_trackers(f"{B},{A},{B}/") == (B, A), "a repeat counts once, where it first appears"
    assert parse_trackers("http://t1:6969/prefix/") == ("http://t1:6969/prefix",), "a base URL may have a path"
    assert parse_trackers("http://[::1]:6969") == ("http://[::1]:6969",)


def test_a_tracker_without_a_scheme_is_http_as_minion_took_it() -> None:
    assert parse_trackers("t1:6969") == (A,)
    assert parse_trackers("t1:6969, [::1]:6969") == (A, "http://[::1]:6969")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (",", "an empty tracker URL in ','"),
        ("", "an empty tracker URL in nothing"),
        (f"{A},,{B}", "an empty tracker URL in"),
        (f"{A},", "an empty tracker URL in"),
        ("ftp://x", "'ftp://x' is not a tracker's base URL"),
        (f"{A},ftp://t2:6969", "'ftp://t2:6969' is not a tracker's base URL"),
        ("t2:99999", "'http://t2:99999' is not a URL"),
        ("http://", "'http:' is not a tracker's base URL"),
        ("http://t1:99999", "'http://t1:99999' is not a URL"),
        ("http://t1:6969/announce?x=1", "has a query or a fragment"),
    ],
)
def test_a_bad_list_is_a_usage_error_naming_the_entry(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=r"^--tracker: ") as caught:
        parse_trackers(text)
    assert says in str(caught.value)


def test_where_the_list_came_from_names_it() -> None:
    with pytest.raises(UsageError, match=r"^\[worker\] tracker: 'ftp://x'"):
        parse_trackers("ftp://x", what="[worker] tracker")
    with pytest.raises(UsageError, match=r"^'ftp://x'"):
        parse_trackers("ftp://x", what="")


def test_a_call_starts_at_the_current_tracker_and_tries_each_once() -> None:
    choice = TrackerChoice((A, B, C), current=1)
    tried: dict[int, TrackerUnreachable] = {}
    order = []
    while (index := choice.next_try(tried)) is not None:
        order.append(index)
        tried[index] = down(choice.urls[index])
        choice.failed(index)
    assert order == [1, 2, 0], "from the current one on, wrapping around, none twice"
    assert choice.current == 1, "each failure moved it one step: round to where it started"


def test_the_client_sticks_with_the_tracker_that_answered() -> None:
    choice = TrackerChoice((A, B, C))
    assert choice.next_try({}) == 0
    choice.failed(0)
    assert choice.next_try({0: down(A)}) == 1
    # B answered: nothing moves, and the next call starts at B, not back at A.
    assert choice.current == 1
    assert choice.next_try({}) == 1


def test_two_calls_that_saw_one_tracker_fail_move_one_step() -> None:
    choice = TrackerChoice((A, B, C))
    choice.failed(0)  # the first call in flight
    choice.failed(0)  # the second, whose request to A was already out
    assert choice.current == 1, "not 2: B was never asked"
    choice.failed(2)  # a late failure of a tracker that is not current moves nothing
    assert choice.current == 1


def test_every_tracker_failed_names_them_all() -> None:
    choice = TrackerChoice((A, B))
    error = choice.all_failed({1: down(B, "timed out"), 0: down(A)})
    assert isinstance(error, TrackerUnreachable)
    assert str(error) == f"no tracker can be reached ({A}: Connection refused; {B}: timed out)"
    assert error.tracker == f"{A},{B}"


def test_one_tracker_that_failed_is_its_own_error() -> None:
    alone = down(A)
    assert TrackerChoice((A,)).all_failed({0: alone}) is alone, "as before lists existed"


def test_a_choice_needs_a_tracker() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TrackerChoice(())


@given(st.integers(1, 8), st.integers(0, 7), st.sets(st.integers(0, 7)))
def test_next_try_is_the_first_untried_from_current(count: int, current: int, tried_set: set[int]) -> None:
    choice = TrackerChoice(tuple(f"http://t{i}" for i in range(count)), current=current % count)
    tried = {i: down(choice.urls[i]) for i in tried_set if i < count}
    index = choice.next_try(tried)
    untried = [(choice.current + k) % count for k in range(count) if (choice.current + k) % count not in tried]
    assert index == (untried[0] if untried else None)


@pytest.mark.parametrize(
    ("url", "trackers", "served"),
    [
        ("http://seeder:6390/files/a.bin", "http://seeder:6390", True),
        ("http://SEEDER:6390/files/a.bin", "http://t1:6969,http://seeder:6390", True),
        ("https://seeder/files/a.bin", "https://seeder:443", True),  # the scheme's own port
        ("http://seeder:6391/files/a.bin", "http://seeder:6390", False),  # another port
        ("https://seeder:6390/files/a.bin", "http://seeder:6390", False),  # another scheme
        ("http://seeder.evil:6390/files/a.bin", "http://seeder:6390", False),
        ("http://seeder:6390/files/a.bin", None, False),
        ("http://seeder:99999/files/a.bin", "http://seeder:6390", False),  # not a URL
    ],
)
def test_only_an_origin_served_by_a_tracker_is_shown_the_fleets_credential(
    url: str, trackers: str | None, served: bool
) -> None:
    assert served_by_tracker(url, trackers) is served
