"""Number options refuse nan and inf (cli.main.FiniteRange): a range's bounds compare false with nan."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["get", "--upload-time", "nan", "http://127.0.0.1:9/x"], "--upload-time"),
        (["get", "--upload-time", "inf", "http://127.0.0.1:9/x"], "--upload-time"),
        (["daemon", "--scrub-interval", "nan"], "--scrub-interval"),
        (["tracker", "--balance-floor", "nan"], "--balance-floor"),
    ],
)
def test_a_number_that_is_not_finite_is_a_usage_error(argv: list[str], option: str) -> None:
    done = subprocess.run([sys.executable, "-m", "shoal", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"Invalid value for '{option}'" in done.stderr and "is not a finite number" in done.stderr
