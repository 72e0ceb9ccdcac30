"""The token bucket (core.rate), driven with explicit times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.rate import TokenBucket

EPS = 1e-6


def test_burst_passes_at_once_then_the_rate_applies() -> None:
    bucket = TokenBucket(rate=100.0, burst=500.0)
    assert bucket.reserve(500, now=0.0) == 0.0
    assert abs(bucket.reserve(100, now=0.0) - 1.0) < EPS
    # One second later the debt is paid; another 100 bytes cost one more second.
    assert abs(bucket.reserve(100, now=1.0) - 1.0) < EPS


def test_idle_time_refills_only_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=500.0)
    bucket.reserve(500, now=0.0)
    assert bucket.reserve(500, now=1000.0) == 0.0
    assert abs(bucket.reserve(100, now=1000.0) - 1.0) < EPS


def test_a_reservation_larger_than_the_burst_still_proceeds() -> None:
    bucket = TokenBucket(rate=100.0, burst=50.0)
    assert abs(bucket.reserve(1050, now=0.0) - 10.0) < EPS


sizes = st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=200)
rates = st.floats(min_value=10.0, max_value=1e9)
bursts = st.floats(min_value=0.0, max_value=1e6)


@given(sizes, rates, bursts, st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=200, max_size=200))
def test_never_faster_than_rate_plus_burst(sizes: list[int], rate: float, burst: float, idle: list[float]) -> None:
    """A sender that honours each wait never sends more than burst + rate * elapsed."""
    bucket = TokenBucket(rate=rate, burst=burst)
    now, sent = 0.0, 0
    for nbytes, pause in zip(sizes, idle, strict=False):
        now += pause
        now += bucket.reserve(nbytes, now)
        sent += nbytes
        assert sent <= burst + rate * now + max(1.0, sent * 1e-9)


@given(sizes, rates, bursts)
def test_an_eager_sender_gets_the_full_rate(sizes: list[int], rate: float, burst: float) -> None:
    """Over a long sequence the average rate is exactly ``rate`` once the burst is spent."""
    bucket = TokenBucket(rate=rate, burst=burst)
    now = 0.0
    for nbytes in sizes:
        now += bucket.reserve(nbytes, now)
    expected = max(0.0, (sum(sizes) - burst) / rate)
    assert abs(now - expected) <= 1e-6 * max(1.0, expected)


def test_a_refunded_reservation_is_as_if_it_was_never_made() -> None:
    bucket = TokenBucket(rate=100.0, burst=100.0)
    assert bucket.reserve(50, now=0.0) == 0.0
    assert bucket.reserve(1000, now=0.0) == 9.5  # 950 bytes of debt at 100 a second
    bucket.refund(1000)
    assert bucket.reserve(50, now=0.0) == 0.0  # the 50 left over, as before the refused reservation
    assert bucket.reserve(1, now=0.0) == 0.01
    bucket.refund(10_000)
    assert bucket.tokens == 100.0  # never more than the burst
