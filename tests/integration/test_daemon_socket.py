"""The daemon's control socket against another local user (issue 28, "Local"): a fake daemon run as
``nobody`` is sent nothing by ``shoal get``, whether its directory is another user's or its directory is
safe and only the listener's uid gives it away; ``shoal daemon`` refuses a directory open to others.

The fake daemon is the system's python3 (the test's own may live where ``nobody`` cannot read it) running as
``nobody`` through ``subprocess``'s ``user=``: a real second uid, as root can make one."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.testing.processes import shoal_argv, start_daemon
from tests.integration.conftest import Origin, run_get

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a listener as another user")

SECRET = "Authorization: Bearer the-origin-secret"

# Serves connections one at a time: reads each to its end and prints how many bytes it sent, until the
# test's own last connection, which sends END. Connections are accepted in the order they were made, so
# every connection of a `shoal get` that has exited is counted before END.
_FAKE_DAEMON = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(16)
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.close()
    if data == b"END":
        break
    print(len(data), data[:200], flush=True)
"""


class FakeDaemon:
    """A listener run as ``nobody`` on ``path``, in a directory ``nobody`` owns (mode 0700)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "daemon.sock"
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        self.proc = subprocess.Popen(
            [python, "-c", _FAKE_DAEMON, str(self.path)], user="nobody", stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "listening\n"

    def received(self) -> list[str]:
        """What each connection made so far sent (one line each); ends the listener."""
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.path))
            s.sendall(b"END")
        out, _ = self.proc.communicate(timeout=30)
        return out.splitlines()


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory of ``nobody``'s, mode 0700, where the tests' processes can reach it (/tmp: tmp_path is
    root's and closed to ``nobody``)."""
    directory = Path(tempfile.mkdtemp(prefix="shoal-bounded-squat-"))
    nobody = pwd.getpwnam("nobody")
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fake_daemon(nobody_dir: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(nobody_dir)
    yield fake
    if fake.proc.poll() is None:
        fake.proc.kill()
        fake.proc.communicate()


def _serve(origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]) -> tuple[Origin, bytes]:
    o = origin()
    return o, make_file(o.root / "file.bin", 256 << 10)


def test_get_sends_nothing_to_a_socket_in_another_users_directory(
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    fake_daemon: FakeDaemon,
    tmp_path: Path,
) -> None:
    o, _ = _serve(origin, make_file)
    dest = tmp_path / "f.bin"
    done = run_get(o.url("file.bin"), "-o", str(dest), "--header", SECRET, "--socket", str(fake_daemon.path))
    assert done.returncode == 1, done.stderr
    owner = pwd.getpwnam("nobody").pw_uid
    assert done.stderr == (
        f"shoal: error: refusing the daemon socket {fake_daemon.path}: {fake_daemon.path.parent} belongs to uid "
        f"{owner}, not to this user (uid 0)\n"
    )
    assert not dest.exists()
    assert fake_daemon.received() == []  # not even a connection


def test_get_sends_nothing_to_a_listener_of_another_user_in_a_safe_directory(
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    fake_daemon: FakeDaemon,
    tmp_path: Path,
) -> None:
    # The directory becomes root's alone after the squatter listens in it, as if it had been swapped
    # between the directory check and the connection: only the listener's credentials are left to tell.
    os.chown(fake_daemon.path.parent, 0, 0)
    assert stat.S_IMODE(fake_daemon.path.parent.stat().st_mode) == 0o700
    o, _ = _serve(origin, make_file)
    dest = tmp_path / "f.bin"
    done = run_get(o.url("file.bin"), "-o", str(dest), "--header", SECRET, "--socket", str(fake_daemon.path))
    assert done.returncode == 1, done.stderr
    owner = pwd.getpwnam("nobody").pw_uid
    assert done.stderr == (
        f"shoal: error: refusing the daemon socket {fake_daemon.path}: the process listening on "
        f"{fake_daemon.path} runs as uid {owner}, not as this user (uid 0) or root\n"
    )
    assert not dest.exists()
    assert fake_daemon.received() == ["0 b''"]  # connected, checked, closed: no byte sent


def _get_with_default_socket(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`shoal get` with its default socket moved to ``socket_path``: root's default is /run/shoal, a
    place of the host's that a test must not touch; everything else is the command as users run it."""
    code = (
        "import sys; from pathlib import Path; import shoal.cli.get as get; "
        f"get.default_socket = lambda: Path({str(socket_path)!r}); "
        "from shoal.cli.main import main; sys.argv[0] = 'shoal'; main()"
    )
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_DAEMON_SOCKET"}
    argv = [sys.executable, "-c", code, "get", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("swapped", [False, True], ids=["squatted-directory", "foreign-listener"])
def test_get_at_the_default_socket_warns_and_downloads_in_its_own_process(
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    fake_daemon: FakeDaemon,
    tmp_path: Path,
    swapped: bool,
) -> None:
    if swapped:
        os.chown(fake_daemon.path.parent, 0, 0)
    o, data = _serve(origin, make_file)
    dest = tmp_path / "f.bin"
    done = _get_with_default_socket(fake_daemon.path, o.url("file.bin"), "-o", str(dest), "--header", SECRET)
    assert done.returncode == 0, done.stderr
    warning, *rest = done.stderr.splitlines()
    assert warning.startswith(f"shoal: warning: refusing the daemon socket {fake_daemon.path}: ")
    assert warning.endswith("; downloading in this process")
    assert rest and rest[-1].startswith(f"{dest}: 256.0 KiB in ")  # the in-process download's own line
    assert dest.read_bytes() == data
    assert fake_daemon.received() == (["0 b''"] if swapped else [])


def test_daemon_refuses_a_socket_directory_open_to_others_or_of_another_user(tmp_path: Path, nobody_dir: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    for directory, fault in (
        (open_dir, f"{open_dir} has mode 0755: other users could replace the socket in it (it must be 0700; "),
        (nobody_dir, f"{nobody_dir} belongs to uid {pwd.getpwnam('nobody').pw_uid}, not to this user (uid 0)"),
    ):
        sock = directory / "daemon.sock"
        argv = ["daemon", "--cache-dir", str(tmp_path / "cache"), "--socket", str(sock), "--listen", "127.0.0.1:0"]
        done = subprocess.run(shoal_argv(*argv), capture_output=True, text=True, timeout=60)
        assert done.returncode == 9, done.stderr
        assert done.stderr.startswith(f"shoal: error: cannot listen on {sock}: {fault}")
        assert done.stderr.count("\n") == 1
        assert not sock.exists()
    # Made by the daemon, the directory is 0700, and a daemon starts there.
    made = tmp_path / "made" / "sub"
    service = start_daemon(tmp_path / "cache", made / "daemon.sock")
    try:
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
        assert stat.S_IMODE((made / "daemon.sock").stat().st_mode) == 0o600
    finally:
        service.stop()
