"""The tracker's cap on announces in flight (tracker.admission): values in, 503s out, with a fake clock."""

from __future__ import annotations

import json
import logging
import random

import pytest

from shoal.core.deafness import Deafness
from shoal.testing.clock import FakeClock
from shoal.tracker.admission import LOG_EVERY, Admission


def test_past_the_cap_announces_are_shed_until_a_slot_is_given_back() -> None:
    admission = Admission(2, 5.0)
    assert admission.enter() and admission.enter()
    assert not admission.enter(), "the third announce in flight is past the cap"
    assert (admission.inflight, admission.shed) == (2, 1)
    admission.leave()
    assert admission.enter(), "a slot given back is taken by the next announce"
    assert (admission.inflight, admission.shed) == (2, 1)


def test_leaving_without_entering_is_a_bug_not_a_negative_count() -> None:
    admission = Admission(1, 5.0)
    with pytest.raises(RuntimeError):
        admission.leave()


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "8"])
def test_a_cap_that_is_not_a_positive_whole_number_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission(limit, 5.0)  # type: ignore[arg-type]


def test_the_busy_reply_is_a_503_with_a_retry_after_within_one_interval_and_a_json_error() -> None:
    admission = Admission(1, 2.5, rng=random.Random(7))
    waits = set()
    for _ in range(200):
        response = admission.busy()
        assert response.status == 503 and response.content_type == "application/json"
        wait = int(response.headers["Retry-After"])
        assert response.body is not None
        error = json.loads(bytes(response.body))["error"]  # type: ignore[arg-type]
        assert "busy" in error and f"in {wait} s" in error
        waits.add(wait)
    # Whole seconds (RFC 9110 delay-seconds), from 1 to the interval rounded up, spread over all of them.
    assert waits == {1, 2, 3}


def test_a_sub_second_interval_still_says_a_whole_second() -> None:
    admission = Admission(1, 0.2)
    assert {admission.retry_after() for _ in range(20)} == {1}


def test_shedding_is_logged_once_per_spell_not_once_per_request(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(100.0)
    admission = Admission(1, 5.0, clock=clock)
    assert admission.enter()
    with caplog.at_level(logging.WARNING, logger="shoal.tracker"):
        for _ in range(50):
            assert not admission.enter()
            admission.busy()
        clock.advance(LOG_EVERY)
        for _ in range(7):
            assert not admission.enter()
            admission.busy()
    lines = [r.getMessage() for r in caplog.records if "shedding load" in r.getMessage()]
    assert lines == [
        "shedding load: 1 announces answered 503 so far (--max-inflight 1)",
        f"shedding load: 50 announces answered 503 in the last {LOG_EVERY:.0f} s (--max-inflight 1)",
    ]


def test_each_shed_announce_is_told_to_the_tracker_s_deafness() -> None:
    """A shed peer spoke and was sent away: the service's deafness (core.deafness) must learn of it, or that
    peer's silence would be held against it."""
    deafness = Deafness(span=60.0)
    admission = Admission(1, 5.0, on_shed=deafness.shed)
    deafness.tick(0.0)
    assert admission.enter()
    assert deafness.expiry_clock(0.5) == 0.5  # nothing shed yet: heard all along
    assert not admission.enter()
    assert deafness.expiry_clock(0.5) == 0.5  # the floor: expiry never moves back
    deafness.tick(1.0)
    assert deafness.spells == [(0.0, 1.0)]
    assert deafness.expiry_clock(1.0) == 0.5
