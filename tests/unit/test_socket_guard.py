"""The rules of the daemon's control socket (shoal.daemon.socket_guard), with values."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.daemon.socket_guard import directory_fault, listener_fault

D = Path("/tmp/shoal-1000")


@pytest.mark.parametrize("mode", [0o40700, 0o40500, 0o40300])
def test_a_directory_of_this_user_that_grants_nothing_to_others_is_trusted(mode: int) -> None:
    assert directory_fault(D, is_dir=True, owner=1000, mode=mode, uid=1000) is None


@pytest.mark.parametrize("mode", [0o40701, 0o40710, 0o40755, 0o41777, 0o40770])
def test_a_directory_open_to_others_is_refused_with_its_mode(mode: int) -> None:
    fault = directory_fault(D, is_dir=True, owner=1000, mode=mode, uid=1000)
    assert fault is not None and f"mode {mode & 0o7777:04o}" in fault and "chmod 700 /tmp/shoal-1000" in fault


def test_a_directory_of_another_user_or_not_a_directory_is_refused() -> None:
    assert directory_fault(D, is_dir=True, owner=1001, mode=0o40700, uid=1000) == (
        "/tmp/shoal-1000 belongs to uid 1001, not to this user (uid 1000)"
    )
    # Root's own directory is no exception for another user: the daemon it serves is root's, not this user's.
    assert directory_fault(D, is_dir=True, owner=0, mode=0o40700, uid=1000) is not None
    assert directory_fault(D, is_dir=False, owner=1000, mode=0o100600, uid=1000) == "/tmp/shoal-1000 is not a directory"


def test_only_this_user_or_root_may_listen() -> None:
    sock = D / "daemon.sock"
    assert listener_fault(sock, listener=1000, uid=1000) is None
    assert listener_fault(sock, listener=0, uid=1000) is None
    assert listener_fault(sock, listener=1001, uid=1000) == (
        "the process listening on /tmp/shoal-1000/daemon.sock runs as uid 1001, not as this user (uid 1000) or root"
    )
    assert listener_fault(sock, listener=1000, uid=0) is not None  # root trusts no user's daemon
