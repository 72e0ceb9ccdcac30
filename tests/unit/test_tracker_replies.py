"""What a client makes of the tracker's replies (core.tracker_replies): a busy tracker is told apart from a
failing one by its 503's Retry-After and JSON error."""

from __future__ import annotations

import json

import pytest

from shoal.core.errors import TrackerBusy, TrackerUnavailable, TrackerUnreachable, UsageError
from shoal.core.messages import Health
from shoal.core.tracker_replies import parse_retry_after, read_reply

TRACKER = "http://tracker:6969"
BUSY = json.dumps({"error": "the tracker is busy (64 announces in flight); announce again in 3 s"}).encode()


def refused(message: str, status: int) -> Exception:
    return UsageError(f"{status}: {message}")


def read(status: int, body: bytes, retry_after: str | None, content_type: str = "application/json") -> Health:
    return read_reply(TRACKER, status, "Service Unavailable", content_type, body, Health, refused, retry_after)


def test_a_503_with_retry_after_is_the_tracker_busy() -> None:
    with pytest.raises(TrackerBusy) as caught:
        read(503, BUSY, "3")
    assert caught.value.retry_after == 3.0 and caught.value.tracker == TRACKER
    assert str(caught.value) == (
        "the tracker asks to wait: the tracker is busy (64 announces in flight); announce again in 3 s (HTTP 503)"
    ), "the tracker's words, not a failure's"
    assert isinstance(caught.value, TrackerUnavailable), "a caller that does not wait sees it as unavailable"


def test_a_429_with_retry_after_is_a_wait_too_and_without_it_a_refusal() -> None:
    limited = json.dumps({"error": "too many new peers from 10.0.0.1: at most 1000 a minute"}).encode()
    with pytest.raises(TrackerBusy) as caught:
        read(429, limited, "7")
    assert caught.value.retry_after == 7.0
    assert str(caught.value) == (
        "the tracker asks to wait: too many new peers from 10.0.0.1: at most 1000 a minute (HTTP 429)"
    )
    with pytest.raises(UsageError, match=r"^429: too many new peers"):
        read(429, limited, None)
    with pytest.raises(TrackerUnavailable, match="not the tracker") as page:
        read(429, b"<html>Too Many Requests</html>", "7", "text/html")
    assert not isinstance(page.value, TrackerBusy)


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "content_type"),
    [
        (503, json.dumps({"error": "the tracker's database is unavailable"}).encode(), None, "application/json"),
        (503, BUSY, "Wed, 21 Oct 2015 07:28:00 GMT", "application/json"),
        (503, BUSY, "-1", "application/json"),
        (503, b"<html>Service Unavailable</html>", "5", "text/html"),
        (500, json.dumps({"error": "internal error"}).encode(), "5", "application/json"),
    ],
    ids=["no-retry-after", "http-date", "negative", "a-proxy-page", "not-503"],
)
def test_other_failures_are_the_tracker_unreachable(
    status: int, body: bytes, retry_after: str | None, content_type: str
) -> None:
    """A 5xx that is not busy is the tracker failing, or a proxy finding it down: a client with several
    trackers asks the next (core.tracker_choice)."""
    with pytest.raises(TrackerUnreachable) as caught:
        read(status, body, retry_after, content_type)
    assert not isinstance(caught.value, TrackerBusy)
    assert caught.value.tracker == TRACKER


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (404, b"<html>Not Found</html>", "text/html"),
        (404, json.dumps({"error": "Not Found"}).encode(), "application/json"),
        (200, b"<html>hello</html>", "text/html"),
    ],
    ids=["a-web-page", "no-such-route", "a-page-with-200"],
)
def test_an_answer_that_is_not_the_api_is_not_the_tracker_unreachable(
    status: int, body: bytes, content_type: str
) -> None:
    """That tracker answered: the URL is wrong, and asking the next would hide it."""
    with pytest.raises(TrackerUnavailable, match="not the tracker API") as caught:
        read_reply(TRACKER, status, "Not Found", content_type, body, Health, refused)
    assert not isinstance(caught.value, TrackerUnreachable)


def test_a_refusal_is_the_callers_error() -> None:
    with pytest.raises(UsageError, match="403: no"):
        read_reply(TRACKER, 403, "Forbidden", "application/json", b'{"error": "no"}', Health, refused)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        (" 12 ", 12.0),
        ("120", 120.0),
        (None, None),
        ("", None),
        ("1.5", None),
        ("9" * 10, None),
        ("٣", None),
    ],
)
def test_retry_after_is_read_as_delay_seconds_only(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds
