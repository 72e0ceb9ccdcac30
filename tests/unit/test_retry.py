"""The retry policy (core.retry), with a seeded random source."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.retry import BUSY_JITTER, BUSY_WAIT_MAX, BUSY_WAIT_MIN, Backoff, Retries, busy_delay


def test_steps_double_up_to_the_cap() -> None:
    policy = Backoff(0.5, 5.0)
    assert [policy.step(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.step(10, cap=3.0) == 3.0, "a caller's cap (a server's interval) bounds it further"
    assert policy.step(10_000) == 5.0, "no overflow however long the service stays away"


@given(st.floats(0.01, 10), st.floats(1, 100), st.integers(0, 50), st.integers(0, 2**32))
def test_a_delay_is_between_half_and_all_of_its_step(first: float, spread: float, attempt: int, seed: int) -> None:
    policy = Backoff(first, first * spread)
    delay = policy.delay(attempt, random.Random(seed))
    step = policy.step(attempt)
    assert step / 2 <= delay <= step


def test_a_fleet_does_not_retry_in_lockstep() -> None:
    """1,000 clients that saw the same failure at once: their retries spread over half of each step."""
    clients = [Retries(Backoff(1.0, 30.0), random.Random(n)) for n in range(1000)]
    for attempt in range(4):
        delays = [client.next_delay() for client in clients]
        step = 2.0**attempt
        assert min(delays) >= step / 2 and max(delays) <= step
        assert statistics.pstdev(delays) > step / 8, "spread, not one instant"
        assert len({round(d, 3) for d in delays}) > 400


def test_reset_starts_again_from_the_first_step() -> None:
    retry = Retries(Backoff(1.0, 8.0), random.Random(1))
    assert retry.next_delay() <= 1.0
    for _ in range(5):
        retry.next_delay()
    assert retry.next_delay() > 4.0
    retry.reset()
    assert retry.next_delay() <= 1.0


@pytest.mark.parametrize("first, cap, factor", [(0, 1, 2), (2, 1, 2), (1, 2, 0.5), (-1, 1, 2)])
def test_a_policy_that_could_spin_or_shrink_is_refused(first: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(first, cap, factor)


@given(st.floats(0, 10_000, allow_nan=False), st.integers(0, 2**32))
def test_a_busy_wait_is_the_servers_figure_plus_jitter_within_bounds(retry_after: float, seed: int) -> None:
    delay = busy_delay(retry_after, random.Random(seed))
    assert BUSY_WAIT_MIN <= delay <= BUSY_WAIT_MAX
    floor = min(max(retry_after, BUSY_WAIT_MIN), BUSY_WAIT_MAX)
    assert floor <= delay <= floor * (1 + BUSY_JITTER), "never sooner than asked (within the cap)"


def test_clients_shed_together_do_not_come_back_together() -> None:
    rng = random.Random(3)
    delays = [busy_delay(2.0, rng) for _ in range(500)]
    assert statistics.pstdev(delays) > 0.1
    assert 2.0 <= min(delays) and max(delays) <= 2.5
