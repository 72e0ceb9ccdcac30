"""systemd.notify: sd_notify's datagrams to $NOTIFY_SOCKET, taken out of the environment at the first use."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.systemd import notify


@pytest.fixture(autouse=True)
def fresh_address(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(notify.SOCKET_ENV, raising=False)
    notify._address.cache_clear()
    yield
    notify._address.cache_clear()


def test_notices_go_to_the_socket_and_the_variable_leaves_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        manager.settimeout(30)
        monkeypatch.setenv(notify.SOCKET_ENV, str(tmp_path / "notify"))
        assert notify.ready("tracker listening on http://127.0.0.1:6969")
        assert notify.SOCKET_ENV not in os.environ  # a child the service starts cannot speak for it
        assert manager.recv(4096) == b"READY=1\nSTATUS=tracker listening on http://127.0.0.1:6969"
        assert notify.reloading() and manager.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert notify.stopping() and manager.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_without_a_socket_nothing_is_sent() -> None:
    assert notify.ready() is False


def test_a_socket_that_is_gone_is_a_warning_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(notify.SOCKET_ENV, str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING):
        assert notify.ready() is False
    assert "could not tell the service manager READY=1" in caplog.text
