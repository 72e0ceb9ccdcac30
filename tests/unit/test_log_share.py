"""core.log_share: which run a reader may name, which bytes a read shows, and which secrets it hides."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import ProtocolError
from shoal.core.log_share import (
    LATEST,
    MAX_LOG_READ,
    Window,
    check_run,
    job_secrets,
    other_name,
    same_run,
    shown_text,
    started_after,
    whole_lines,
    window,
)
from shoal.core.redact import redact_secrets


def test_only_the_jobs_own_run_log_names_and_latest_are_accepted() -> None:
    assert check_run("debian", None) == LATEST and check_run("debian", "latest") == LATEST
    for name in ("debian_2026-12-06_21-30-05.log", "debian_2026-12-06_21-30-05_002.log.fail"):
        assert check_run("debian", name) == name
    for bad in (
        "../debian_2026-12-06_21-30-05.log",
        "debian_2026-12-06_21-30-05.log/../../etc/passwd",
        "ubuntu_2026-12-06_21-30-05.log",  # another job's
        "debian.x_2026-12-06_21-30-05.log",
        ".latest.tmp",
        "",
    ):
        with pytest.raises(ProtocolError, match="is not the name of a run log of job 'debian'"):
            check_run("debian", bad)
    # A job whose name holds a regular expression's characters matches only itself.
    with pytest.raises(ProtocolError):
        check_run("a.b", "axb_2026-12-06_21-30-05.log")


def test_a_run_is_the_same_before_and_after_its_log_is_marked_failed() -> None:
    assert other_name("j_2026-12-06_21-30-05.log") == "j_2026-12-06_21-30-05.log.fail"
    assert other_name("j_2026-12-06_21-30-05.log.fail") == "j_2026-12-06_21-30-05.log"
    assert same_run("j_2026-12-06_21-30-05.log", "j_2026-12-06_21-30-05.log.fail")
    assert not same_run("j_2026-12-06_21-30-05.log", "j_2026-12-06_21-30-06.log")
    assert not same_run(None, "j_2026-12-06_21-30-05.log")


def test_runs_are_ordered_by_when_they_started_failed_or_not() -> None:
    # The names shoal.mirror.run_log gives: UTC time, then _002, _003 for runs within one second.
    order = ["j_2026-12-06_21-30-05.log", "j_2026-12-06_21-30-05_002.log.fail", "j_2026-12-06_21-30-05_010.log"]
    order += ["j_2026-12-06_21-30-06.log.fail", "j_2026-12-07_00-00-00.log"]
    for earlier, later in itertools.pairwise(order):
        assert started_after(later, earlier) and not started_after(earlier, later)
    assert not started_after("j_2026-12-06_21-30-05.log.fail", "j_2026-12-06_21-30-05.log")  # one run


def test_a_window_is_the_tail_without_an_offset_and_forward_with_one_never_past_the_cap() -> None:
    assert window(100, None, 30) == Window(70, 100, 100, tail=True)
    assert window(10, None, 30) == Window(0, 10, 10, tail=True)
    assert window(100, 20, 30) == Window(20, 50, 100, tail=False)
    assert window(100, 90, 30) == Window(90, 100, 100, tail=False)
    assert window(100, 500, 30) == Window(100, 100, 100, tail=False)  # the log shrank (rotated): nothing
    big = 10 * MAX_LOG_READ
    assert window(big, None, big) == Window(big - MAX_LOG_READ, big, big, tail=True)
    assert window(big, 0, big).stop == MAX_LOG_READ


def test_only_whole_lines_are_shown_unless_the_window_holds_no_line_end() -> None:
    log = b"first line\nsecond line\nthird\n"
    tail = window(len(log), None, 15)
    assert whole_lines(tail, log[tail.start :]) == (len(log) - 6, len(log), b"third\n")
    forward = window(len(log), 0, 15)
    assert whole_lines(forward, log[:15]) == (0, 11, b"first line\n")
    whole = window(len(log), None, 1000)
    assert whole_lines(whole, log) == (0, len(log), log)
    # No whole line in the window (one longer than it): shown as it is, so a follower moves on.
    assert whole_lines(window(100, 0, 10), b"x" * 10) == (0, 10, b"x" * 10)
    assert whole_lines(window(100, None, 10), b"x" * 10) == (90, 100, b"x" * 10)
    assert whole_lines(window(100, None, 10), b"x" * 9 + b"\n") == (90, 100, b"x" * 9 + b"\n")


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=20), st.data())
def test_reading_forward_from_each_end_gives_the_whole_log_once(lines: list[bytes], data: st.DataObject) -> None:
    log = b"".join(lines)
    limit = data.draw(st.integers(1, 64))
    shown, position = b"", 0
    while position < len(log):
        w = window(len(log), position, limit)
        start, end, piece = whole_lines(w, log[w.start : w.stop])
        assert start == position and end > position and log[start:end] == piece
        shown, position = shown + piece, end
    assert shown == log


def test_a_jobs_secrets_are_its_password_its_upstreams_credentials_and_secret_named_env_values() -> None:
    found = job_secrets(
        password="rsync-pw",
        upstream="https://user:up-pw@host.example/path/?key=QS1&sig=QS2",
        env={"AWS_SECRET_ACCESS_KEY": "aws-secret", "API_TOKEN": "tok-123", "COLOUR": "blue", "AUTH": ""},
    )
    assert set(found) == {"rsync-pw", "up-pw", "key=QS1&sig=QS2", "QS1", "QS2", "aws-secret", "tok-123"}
    assert job_secrets(password=None, upstream="rsync.example::debian/", env={}) == ()


def test_shown_text_hides_the_secrets_and_every_urls_password_and_survives_bad_bytes() -> None:
    secrets = job_secrets(password="hunter22", upstream="https://h/?key=QUERYKEY", env={})
    raw = b"rsync://u:pw@h/m/ with hunter22; fetched https://h/?key=QUERYKEY \xff\n"
    assert shown_text(raw, secrets) == "rsync://u:***@h/m/ with ***; fetched https://h/?*** \ufffd\n"


def test_redact_secrets_replaces_the_longest_first_and_leaves_short_ones() -> None:
    assert redact_secrets("abcdef and abcd", ["abcd", "abcdef"]) == "*** and ***"
    assert redact_secrets("a.b*c and abc", ["a.b*c"]) == "*** and abc"  # literal, not a pattern
    assert redact_secrets("the word pin stays", ["pin"]) == "the word pin stays"  # too short to hide
    assert redact_secrets("no secrets", []) == "no secrets"
