"""Where a finished file goes (shoal.storage.placement): a FIFO or a device is written through, never renamed
over; a symlink is followed and stays a link. For `shoal get` in process, `shoal get` handing off to a
daemon, and `shoal cache get -o`, with real processes, a real FIFO and a real device node."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.testing.processes import shoal_argv
from tests.integration.conftest import Daemon, Origin

MiB = 1 << 20


def shoal(*args: str, tmpdir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m shoal ARGS` with its own TMPDIR, so that the scratch directory is the test's to look at."""
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.run(shoal_argv(*args), capture_output=True, text=True, timeout=timeout, env=env)


@dataclass
class Placer:
    """One of the three ways a file is placed; ``place(dest)`` runs it and returns the finished process."""

    how: str
    data: bytes
    place: Callable[[Path], subprocess.CompletedProcess[str]]
    scratch: Path
    """The scratch directory (``$TMPDIR/shoal-UID``) the processes it starts use."""


@pytest.fixture(params=["in-process", "daemon", "cache"])
def placer(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    make_file: Callable[[Path, int], bytes],
) -> Placer:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    o = origin()
    data = make_file(o.root / "file.bin", 3 * MiB + 12345)
    url = o.url("file.bin")
    scratch = tmpdir / f"shoal-{os.getuid()}"
    if request.param == "in-process":
        return Placer(
            "in-process", data, lambda d: shoal("get", url, "-o", str(d), "--no-daemon", tmpdir=tmpdir), scratch
        )
    node = daemon()
    if request.param == "daemon":

        def through_daemon(dest: Path) -> subprocess.CompletedProcess[str]:
            result = shoal("get", url, "-o", str(dest), "--socket", str(node.socket), tmpdir=tmpdir)
            handed_off = "cached by the daemon" in result.stderr or "cache hit" in result.stderr
            assert result.returncode != 0 or handed_off, result.stderr
            return result

        return Placer("daemon", data, through_daemon, scratch)
    put = shoal("cache", "--cache-dir", str(node.cache_dir), "put", str(o.root / "file.bin"), tmpdir=tmpdir)
    assert put.returncode == 0, put.stderr
    ident = put.stdout.strip()
    cache_args = ("cache", "--cache-dir", str(node.cache_dir), "--socket", str(node.socket), "get", ident, "-o")
    return Placer("cache", data, lambda d: shoal(*cache_args, str(d), tmpdir=tmpdir), scratch)


def leftovers(*directories: Path) -> list[str]:
    """Files a placement may leave by mistake: temporary names in these directories (which may be missing)."""
    return [p.name for d in directories if d.exists() for p in d.iterdir() if ".shoal-" in p.name]


class FifoReader:
    """Reads a FIFO to its end in a thread, as `cat fifo` would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = b""
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        with open(self.path, "rb") as f:  # blocks until a writer opens it
            self.data = f.read()

    def __enter__(self) -> FifoReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            # Unblock a reader whose writer never came, so the test ends (and fails on its assertion).
            with open(self.path, "wb"):
                pass
        self._thread.join(10)


def test_a_fifo_is_written_through(placer: Placer, tmp_path: Path) -> None:
    fifo = tmp_path / "out" / "pipe"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with FifoReader(fifo) as reader:
        result = placer.place(fifo)
    assert result.returncode == 0, result.stderr
    assert reader.data == placer.data
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in fifo.parent.iterdir()] == ["pipe"]
    assert leftovers(placer.scratch) == []


def test_a_character_device_is_written_through_and_stays_one(placer: Placer, tmp_path: Path) -> None:
    null = tmp_path / "out" / "null"
    null.parent.mkdir()
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    result = placer.place(null)
    assert result.returncode == 0, result.stderr
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert [p.name for p in null.parent.iterdir()] == ["null"]
    assert leftovers(placer.scratch) == []


def test_a_symlink_is_followed_and_stays_a_link(placer: Placer, tmp_path: Path) -> None:
    links, real = tmp_path / "links", tmp_path / "real"
    links.mkdir()
    real.mkdir()
    (real / "file.bin").write_bytes(b"an older version")
    link = links / "file.bin"
    link.symlink_to("../real/file.bin")
    result = placer.place(link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == "../real/file.bin"
    assert (real / "file.bin").read_bytes() == placer.data
    assert [p.name for p in links.iterdir()] == ["file.bin"] and [p.name for p in real.iterdir()] == ["file.bin"]
    # A link to a file not there yet is followed too: the file appears at its target.
    dangling = links / "new.bin"
    dangling.symlink_to(real / "new.bin")
    result = placer.place(dangling)
    assert result.returncode == 0, result.stderr
    assert dangling.is_symlink() and (real / "new.bin").read_bytes() == placer.data
    assert leftovers(links, real, placer.scratch) == []


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "out" / "sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        yield path


def test_a_socket_is_refused_and_left_alone(placer: Placer, unix_socket: Path) -> None:
    result = placer.place(unix_socket)
    assert result.returncode == 6, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "it is a socket" in result.stderr
    assert stat.S_ISSOCK(os.lstat(unix_socket).st_mode)
    assert leftovers(unix_socket.parent, placer.scratch) == []


def test_interrupted_while_a_fifo_waits_for_its_reader_then_resumed(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    """The part file of a FIFO waits in the scratch directory; Ctrl-C while the download waits for the FIFO's
    reader ends it at once, the verified pieces kept, and a rerun takes nothing from the origin."""
    o = origin()
    data = make_file(o.root / "file.bin", 2 * MiB)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    argv = shoal_argv("get", o.url("file.bin"), "-o", str(fifo), "--no-daemon", "-vv")
    proc = subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, "TMPDIR": str(tmpdir)}
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # -vv: the line before the file is put in place
            if "flushed and reported" in line:
                break
        else:
            pytest.fail(f"the download ended without placing the file (exit {proc.wait()})")
        (part,) = (tmpdir / f"shoal-{os.getuid()}").glob("pipe-*.shoal-part")
        assert part.stat().st_size == len(data)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert proc.wait(60) == 130
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["origin", "pipe", "tmp"]
    sent = o.bytes_sent()
    with FifoReader(fifo) as reader:
        again = shoal("get", o.url("file.bin"), "-o", str(fifo), "--no-daemon", tmpdir=tmpdir)
    assert again.returncode == 0, again.stderr
    assert reader.data == data
    assert "origin 0 B" in again.stderr and o.bytes_sent() - sent < 4096  # a probe, no piece
    assert leftovers(tmpdir / f"shoal-{os.getuid()}") == []
