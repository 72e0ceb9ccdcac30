"""Deployment under systemd, with real processes: the units `shoal install-units` writes pass
`systemd-analyze verify`, and the services tell a NOTIFY_SOCKET this test listens on when they are ready,
reloading and stopping."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.systemd.units import unit_names
from shoal.testing.processes import Service, shoal_argv, start_service

SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
NOTICE_TIMEOUT = 60.0  # a busy 2-core machine: generous, and only ever waited out when a notice never comes


class NotifyListener:
    """The service manager's end of sd_notify: a datagram socket, each datagram one notice of KEY=VALUE
    lines."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # what NOTIFY_SOCKET says

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096)
        return dict(line.split("=", 1) for line in data.decode().splitlines())


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = tmp_path / "notify.sock"
        sock.bind(str(path))
        sock.settimeout(NOTICE_TIMEOUT)
        yield NotifyListener(sock, str(path))


@pytest.fixture
def abstract_notify_socket() -> Iterator[NotifyListener]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"deploy-shoal-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        sock.settimeout(NOTICE_TIMEOUT)
        yield NotifyListener(sock, "@" + name)


def test_install_units_writes_every_unit_and_systemd_analyze_verifies_each(tmp_path: Path) -> None:
    if not os.path.exists(SYSTEMD_ANALYZE):
        pytest.skip(f"{SYSTEMD_ANALYZE} is not installed (Debian's systemd package)")
    done = subprocess.run(shoal_argv("install-units", "--dir", str(tmp_path)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = {"shoal-tracker.service", "shoal-daemon.service", "shoal-seed.service"}
    expected |= {"shoal-mirror-manager.service", "shoal-mirror-worker.service"}
    assert set(unit_names()) == expected
    assert [line for line in done.stdout.splitlines() if line.startswith("wrote ")] == [
        f"wrote {tmp_path / name}" for name in sorted(expected)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)  # no temporary file left behind
    for name in sorted(expected):
        unit = tmp_path / name
        text = unit.read_text()
        assert "Type=notify" in text and "/usr/local/bin/shoal" not in text
        verified = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr
        assert name not in verified.stderr, verified.stderr  # a warning about the unit is a fault too
    # Only the mirror manager and worker reload (SIGHUP re-reads their config); the others claim no reload they lack.
    reloads = {name for name in expected if "ExecReload=" in (tmp_path / name).read_text()}
    assert reloads == {"shoal-mirror-manager.service", "shoal-mirror-worker.service"}


def test_install_units_into_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        shoal_argv("install-units", "--dir", str(tmp_path / "no" / "such")), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "is not a directory" in done.stderr
    assert not (tmp_path / "no").exists()


def start_with_notify(argv: list[str], listener: NotifyListener) -> Service:
    return start_service(argv, env={"NOTIFY_SOCKET": listener.address})


def stop_and_expect_stopping(service: Service, listener: NotifyListener) -> None:
    service.proc.send_signal(signal.SIGTERM)
    assert listener.next()["STOPPING"] == "1"
    assert service.proc.wait(60) == 0


def test_a_tracker_is_ready_once_it_listens_and_says_when_it_stops(
    tmp_path: Path, notify_socket: NotifyListener
) -> None:
    argv = shoal_argv("tracker", "--host", "127.0.0.1", "--port", "0", "--db", f"sqlite:///{tmp_path / 't.db'}")
    tracker = start_with_notify(argv, notify_socket)
    try:
        notice = notify_socket.next()
        assert notice["READY"] == "1"
        assert notice["STATUS"].startswith(f"tracker listening on {tracker.url}")
        with urllib.request.urlopen(f"{tracker.url}/v1/health", timeout=30) as reply:
            assert reply.status == 200  # ready meant serving
        stop_and_expect_stopping(tracker, notify_socket)
    finally:
        tracker.stop()


def test_a_daemon_is_ready_on_an_abstract_notify_socket(tmp_path: Path, abstract_notify_socket: NotifyListener) -> None:
    argv = ["daemon", "--cache-dir", str(tmp_path / "cache"), "--socket", str(tmp_path / "run" / "d.sock")]
    daemon = start_with_notify(shoal_argv(*argv, "--listen", "127.0.0.1:0"), abstract_notify_socket)
    try:
        notice = abstract_notify_socket.next()
        assert notice["READY"] == "1" and notice["STATUS"].startswith(f"daemon listening on {daemon.url}")
        stop_and_expect_stopping(daemon, abstract_notify_socket)
    finally:
        daemon.stop()


def mirror_config(tmp_path: Path, *jobs: str) -> Path:
    path = tmp_path / "mirrors.toml"
    text = f'[manager]\ndb = "sqlite:///{tmp_path / "m.db"}"\n'
    for name in jobs:
        text += f'[[jobs]]\nname = "{name}"\nprovider = "command"\nupstream = "x"\ncommand = "true"\ninterval = "1d"\n'
    path.write_text(text)
    return path


def job_names(manager: Service) -> list[str]:
    with urllib.request.urlopen(f"{manager.url}/v1/mirror/jobs?all=1", timeout=30) as reply:
        return sorted(job["name"] for job in json.load(reply)["jobs"])


def test_the_mirror_manager_reloads_its_jobs_on_sighup_between_reloading_and_ready(
    tmp_path: Path, notify_socket: NotifyListener
) -> None:
    config = mirror_config(tmp_path, "a")
    argv = shoal_argv("mirror", "manager", "--config", str(config), "--host", "127.0.0.1", "--port", "0")
    manager = start_with_notify(argv, notify_socket)
    try:
        assert notify_socket.next()["READY"] == "1"
        assert job_names(manager) == ["a"]
        mirror_config(tmp_path, "a", "b")
        manager.proc.send_signal(signal.SIGHUP)
        reloading = notify_socket.next()
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert notify_socket.next()["READY"] == "1"
        assert job_names(manager) == ["a", "b"]  # READY came after the reload was done
        # A config that no longer reads is logged; the jobs stay, and the manager is ready again.
        config.write_text("[manager\n")
        manager.proc.send_signal(signal.SIGHUP)
        assert notify_socket.next()["RELOADING"] == "1"
        assert notify_socket.next()["READY"] == "1"
        assert job_names(manager) == ["a", "b"]
        stop_and_expect_stopping(manager, notify_socket)
    finally:
        manager.stop()
