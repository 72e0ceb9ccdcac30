"""Config files and variables of the long-running commands, as real processes: flag > SHOAL_<COMMAND>_<FLAG>
> --config file > default, and a bad file stops the command before it starts, naming the file and the key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shoal.testing.processes import shoal_argv, start_service


def tracker_host(config: Path, *flags: str, env: dict[str, str] | None = None) -> str:
    """The address a tracker started with ``config`` (and ``flags``, ``env``) listens on."""
    tracker = start_service(shoal_argv("tracker", "--config", str(config), *flags), env=env)
    try:
        return urlsplit(tracker.url).hostname or ""
    finally:
        tracker.stop()


def test_a_tracker_takes_each_setting_from_its_flag_then_variable_then_file(tmp_path: Path) -> None:
    db = tmp_path / "from-the-file.db"
    config = tmp_path / "tracker.toml"
    config.write_text(f'host = "127.0.0.2"\nport = 0\ndb = "sqlite:///{db}"\norigin_checks = false\n')
    env = {"SHOAL_TRACKER_HOST": "127.0.0.3"}
    assert tracker_host(config) == "127.0.0.2"
    assert db.exists()  # the file's other keys apply beside the one a variable overrides
    assert tracker_host(config, env=env) == "127.0.0.3"
    assert tracker_host(config, "--host", "127.0.0.4", env=env) == "127.0.0.4"


def test_the_config_file_may_be_named_by_a_variable(tmp_path: Path) -> None:
    config = tmp_path / "tracker.toml"
    config.write_text(f'host = "127.0.0.5"\nport = 0\ndb = "sqlite:///{tmp_path / "t.db"}"\n')
    tracker = start_service(shoal_argv("tracker"), env={"SHOAL_TRACKER_CONFIG": str(config)})
    try:
        assert urlsplit(tracker.url).hostname == "127.0.0.5"
    finally:
        tracker.stop()


def test_a_seeder_and_a_daemon_read_theirs_too(tmp_path: Path) -> None:
    watched = tmp_path / "releases"
    watched.mkdir()
    seed = tmp_path / "seed.toml"
    state = tmp_path / "s"
    seed.write_text(f'dirs = ["{watched}"]\nhost = "127.0.0.6"\nport = 0\nbt_port = 0\nstate_dir = "{state}"\n')
    seeder = start_service(shoal_argv("seed", "--config", str(seed)))
    try:
        assert urlsplit(seeder.url).hostname == "127.0.0.6"
        assert (state / "hashes.db").exists()
    finally:
        seeder.stop()
    daemon = tmp_path / "daemon.toml"
    daemon.write_text(f'cache_dir = "{tmp_path / "cache"}"\nlisten = "127.0.0.7:0"\ncapacity = "1G"\n')
    env = {"SHOAL_DAEMON_SOCKET": str(tmp_path / "run" / "d.sock")}
    service = start_service(shoal_argv("daemon", "--config", str(daemon)), env=env)
    try:
        assert urlsplit(service.url).hostname == "127.0.0.7"
        assert (tmp_path / "cache" / "index.sqlite").exists() and (tmp_path / "run" / "d.sock").exists()
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("command", "text", "expected"),
    [
        ("tracker", "max_inflight = 0\n", "tracker.toml:1: max_inflight: 0 is not in the range 1<=x<=1000000"),
        ("tracker", 'port = 0\ninterval = "fast"\n', "tracker.toml:2: interval: expected a number, not a string"),
        ("tracker", "max-inflight = 5\n", "tracker.toml:1: max-inflight: unknown key (write it max_inflight)"),
        ("tracker", 'task_retention = "5x"\n', "tracker.toml:1: task_retention: '5x' is not a duration"),
        ("tracker", "balance_floor = nan\n", "tracker.toml:1: balance_floor: nan is not a finite number"),
        ("tracker", "balance_floor = inf\n", "tracker.toml:1: balance_floor: inf is not a finite number"),
        ("tracker", "balance_round = nan\n", "tracker.toml:1: balance_round: nan is not a finite number"),
        ("tracker", "audit_share = nan\n", "tracker.toml:1: audit_share: nan is not a finite number"),
        ("daemon", 'capacity = "10Q"\n', "daemon.toml:1: capacity:"),
        ("daemon", 'tracker = "ftp://x"\n', "daemon.toml:1: tracker:"),
        ("seed", 'dirs = "/srv"\n', "seed.toml:1: dirs: expected an array of strings, not a string"),
    ],
)  # fmt: skip
def test_a_bad_config_file_is_one_usage_error_line_naming_file_line_and_key(
    tmp_path: Path, command: str, text: str, expected: str
) -> None:
    config = tmp_path / f"{command}.toml"
    config.write_text(text)
    done = subprocess.run(shoal_argv(command, "--config", str(config)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"shoal: error: {config.parent / expected.split(':')[0]}:")
    assert expected in line


def test_a_bad_variable_is_named_in_the_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_TRACKER_PORT": "http", "SHOAL_TRACKER_DB": f"sqlite:///{tmp_path / 't.db'}"}
    done = subprocess.run(shoal_argv("tracker"), capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("shoal: error: SHOAL_TRACKER_PORT: 'http' is not a valid integer range.")
