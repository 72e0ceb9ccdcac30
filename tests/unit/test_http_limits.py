"""shoal.http.limits with values: the limits from the environment, the one-line-a-second log filter, and
the open-file limit (in a process of its own, whose limit the test sets)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from aiohttp.http_exceptions import BadStatusLine

from shoal.core.errors import UsageError
from shoal.http.limits import OneLinePerSecond, ServerLimits, failed_accept, malformed_request, server_limits


def test_limits_come_from_the_environment_then_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_IDLE_TIMEOUT", "2.5")
    monkeypatch.setenv("SHOAL_WRITE_TIMEOUT", "")
    limits = server_limits(max_line_size=1 << 15)
    assert limits == ServerLimits(idle_timeout=2.5, max_line_size=1 << 15)
    assert limits.runner_options() == {"keepalive_timeout": 2.5, "max_line_size": 1 << 15, "max_field_size": 8190}
    assert limits.deadline(256 << 10) == ServerLimits.write_timeout + 4


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "inf", "nan"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SHOAL_BODY_TIMEOUT", raw)
    with pytest.raises(UsageError, match="SHOAL_BODY_TIMEOUT"):
        server_limits()


def record(message: str, exc: BaseException | None = None, level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("asyncio", level, __file__, 1, message, None, exc_info)


def test_failed_accepts_are_one_line_a_second_without_tracebacks() -> None:
    now = [100.0]
    quiet = OneLinePerSecond(failed_accept, clock=lambda: now[0])
    accept = "socket.accept() out of system resource\nsocket: <asyncio.TransportSocket fd=6>"
    emfile = OSError(24, "Too many open files")
    first = record(accept, emfile)
    assert quiet.filter(first)
    assert first.getMessage() == "socket.accept() out of system resource: OSError: [Errno 24] Too many open files"
    assert first.exc_info is None
    assert not any(quiet.filter(record(accept, emfile)) for _ in range(99))  # the rest of that second's tries
    other = record("Task exception was never retrieved", ValueError("bug"))
    assert quiet.filter(other) and other.exc_info is not None  # not a failed accept: untouched
    now[0] += 1.0
    later = record(accept, emfile)
    assert quiet.filter(later)
    assert later.getMessage().endswith("(99 more like it left out)")


def test_only_malformed_requests_lose_their_traceback() -> None:
    quiet = OneLinePerSecond(malformed_request, clock=lambda: 0.0)
    bad = record("Error handling request from %s", BadStatusLine("x" * 8000))
    bad.args = ("127.0.0.1",)
    assert quiet.filter(bad)
    assert bad.exc_info is None and len(bad.getMessage()) < 300
    bug = record("Error handling request from %s", KeyError("a bug of ours"))
    bug.args = ("127.0.0.1",)
    assert quiet.filter(bug) and bug.exc_info is not None


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    program = "from shoal.http.limits import raise_open_files_limit; print(raise_open_files_limit())"
    run = subprocess.run(
        ["prlimit", "--nofile=64:256", sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "256"
