"""``--log-file`` (minion's ``--logfile``) and ``--log-format json`` on every command, as real processes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.testing.processes import shoal_argv
from tests.integration.conftest import Origin, run_get

DEAD_ORIGIN = "http://127.0.0.1:9/gone.bin"


def test_a_get_logs_json_lines_to_a_file_it_appends_to(tmp_path: Path) -> None:
    log = tmp_path / "get.log"
    for _ in range(2):
        failed = run_get(
            DEAD_ORIGIN, "-o", str(tmp_path / "x.bin"), "--no-daemon", "--logfile", str(log), "--log-format", "json"
        )
        assert failed.returncode == 4, failed.stderr
        assert "cannot reach the origin" in failed.stderr  # the one-line error still goes to stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2  # appended, not truncated
    for line in lines:
        assert line["level"] == "error" and line["logger"] == "shoal"
        assert "cannot reach the origin" in line["message"]
        assert line["time"].endswith("+00:00")
    assert not (tmp_path / "x.bin").exists()


def test_a_traced_get_logs_dated_text_lines_to_the_file_only(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    data = make_file(o.root / "f.bin", 200_000)
    log = tmp_path / "get.log"
    done = run_get(o.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--no-daemon", "-vv", "--log-file", str(log))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"shoal: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+: ", line) for line in lines)
    assert any("DEBUG" in line for line in lines)
    assert "DEBUG" not in done.stderr  # the trace went to the file


@pytest.mark.parametrize("command", ["tracker", "seed", "daemon", "pool"])
def test_a_log_file_that_cannot_be_opened_is_a_usage_error(command: str, tmp_path: Path) -> None:
    args = {"tracker": ["--port", "0"], "seed": [str(tmp_path)], "daemon": [], "pool": ["members", "prod"]}[command]
    done = subprocess.run(
        shoal_argv(command, "--log-file", str(tmp_path / "no" / "such.log"), *args),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot open the log file" in done.stderr
