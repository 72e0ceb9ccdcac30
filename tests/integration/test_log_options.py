"""``--log-file`` (minion's ``--logfile``) and ``--log-format json`` on every command, as real processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from shoal.cli.main import cli
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_seeder
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


def _leaves(command: click.Command, path: tuple[str, ...], logged: bool) -> Iterator[tuple[str, bool]]:
    """Every runnable command under ``command``, with whether it or a group above it takes ``--logfile``."""
    logged = logged or any("--logfile" in p.opts for p in command.params)
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from _leaves(sub, (*path, name), logged)
    else:
        yield " ".join(path), logged


def test_every_command_takes_logfile() -> None:
    """minion's ``--logfile`` on every command (issue 29): a leaf command takes it, or the group it is in."""
    leaves = dict(_leaves(cli, (), False))
    assert {"get", "passkey", "install-units", "mirror ctl list", "mirror import-tunasync"} <= set(leaves)
    assert [name for name, logged in leaves.items() if not logged] == []


@pytest.mark.parametrize(
    "argv",
    [
        ["passkey", "--logfile", "{log}"],
        ["install-units", "--dir", "{tmp}/file/units", "--logfile", "{log}"],
        ["mirror", "ctl", "--manager", "http://127.0.0.1:9", "--logfile", "{log}", "list"],
    ],
    ids=["passkey", "install-units", "mirror-ctl"],
)
def test_a_short_commands_final_error_is_appended_to_its_log_file(argv: list[str], tmp_path: Path) -> None:
    """The one-shot commands too: the error that ends them goes to the log file as well as to stderr, and a
    second run appends to the first's. (install-units fails on a --dir below a file.)"""
    log = tmp_path / "cmd.log"
    (tmp_path / "file").write_text("")
    args = [a.replace("{log}", str(log)).replace("{tmp}", str(tmp_path)) for a in argv]
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_FLEET_TOKEN_FILE"}
    for _ in range(2):
        done = subprocess.run(shoal_argv(*args), capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode != 0 and "shoal: error: " in done.stderr, done.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and all(" ERROR: " in line for line in lines), lines
    assert lines[0].split(" ERROR: ")[1] == done.stderr.strip().removeprefix("shoal: error: ")


def test_a_services_log_is_appended_to_and_reopened_when_logrotate_moves_it(
    tmp_path: Path, services: list[Service]
) -> None:
    """A long-running service (here ``shoal seed``) appends to its --logfile across restarts, and once
    logrotate has moved the file away (no copytruncate), its next lines go to a new file at the same path."""
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "first.bin").write_bytes(b"1" * 1000)
    log = tmp_path / "seed.log"
    log.write_text("a line from before\n")

    def seeder() -> Service:
        service = start_seeder(watched, state_dir=tmp_path / "state", extra=("--logfile", str(log), "-v"))
        services.append(service)
        return service

    first = seeder()
    wait_until(lambda: "published watched/first.bin" in log.read_text(), "the first file's line in the log")
    first.stop()
    assert log.read_text().startswith("a line from before\n")  # appended, not truncated

    seeder()
    wait_until(lambda: log.read_text().count("published watched/first.bin") == 2, "the restart's scan")
    rotated = tmp_path / "seed.log.1"
    log.rename(rotated)  # what logrotate does without copytruncate
    (watched / "second.bin").write_bytes(b"2" * 1000)
    wait_until(lambda: log.exists() and "published watched/second.bin" in log.read_text(), "a new log file")
    assert "second.bin" not in rotated.read_text()
    assert "a line from before" in rotated.read_text() and "first.bin" in rotated.read_text()
