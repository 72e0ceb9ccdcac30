"""Values written as tunasync's status API writes them (core.tunasync_status), checked against an answer in
tunasync's status JSON (tests/data/tunasync/jobs.json: Shoal's own file in that shape, see its README)."""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.tunasync_status import ZERO_TEXT, ZERO_TS, go_time, human_size
from shoal.mirror.messages import TunasyncJob

ANSWER = json.loads((Path(__file__).resolve().parent.parent / "data" / "tunasync" / "jobs.json").read_text())
UTC8 = timezone(timedelta(hours=8))  # the zone the answer's times are written in (+0800)


@pytest.mark.parametrize("job", ANSWER, ids=[job["name"] for job in ANSWER])
def test_times_are_written_as_the_answer_writes_them(job: dict[str, object]) -> None:
    for name in ("last_update", "last_started", "last_ended", "next_schedule"):
        stamp = job[f"{name}_ts"]
        assert isinstance(stamp, int)
        expected = (job[name], stamp)
        assert go_time(None if stamp == ZERO_TS else stamp, UTC8) == expected


def test_a_time_that_never_was_is_go_s_zero_time() -> None:
    assert go_time(None, UTC8) == (ZERO_TEXT, ZERO_TS) == ("0001-01-01 00:00:00 +0000", -62135596800)


@given(st.floats(min_value=0, max_value=4e9))
def test_stamps_are_truncated_as_go_s_unix_truncates(t: float) -> None:
    text, stamp = go_time(t, UTC)
    assert stamp == int(t) and text.endswith(" +0000")


def test_the_answer_has_a_job_never_finished_and_one_never_scheduled() -> None:
    # Go's zero time for a time that never was: what the per-job test above checks go_time against.
    assert any(job["last_ended_ts"] == ZERO_TS and job["last_started_ts"] != ZERO_TS for job in ANSWER)
    assert any(job["next_schedule"] == ZERO_TEXT and job["last_ended_ts"] != ZERO_TS for job in ANSWER)


def test_the_message_has_the_answer_s_fields_in_its_order() -> None:
    assert list(TunasyncJob.__struct_fields__) == list(ANSWER[0])


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "unknown"),
        (512, "512"),
        (2048, "2.00K"),
        (300 << 30, "300G"),
        (int(1.41 * (1 << 40)), "1.41T"),
        (int(5.38 * (1 << 40)), "5.38T"),
        (826 << 30, "826G"),
        (int(15.5 * (1 << 20)), "15.5M"),
    ],
)
def test_sizes_are_written_as_rsync_and_the_answer_write_them(size: int, text: str) -> None:
    assert human_size(size) == text
