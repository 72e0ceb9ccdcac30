"""``shoal get -o -`` (minion's ``--data-stdout``): the file streamed to stdout in order, every byte verified
before it leaves, from the origin or the swarm, with nothing left behind; a stream that cannot be completed
exits non-zero."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from shoal.testing.processes import Service, shoal_argv
from tests.integration.conftest import Origin
from tests.integration.test_swarm import parse_summary, wait_for_file

SIZE = 6 << 20


def stream(*args: str, tmp: Path, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    argv = shoal_argv("get", *args, "-o", "-", "--no-daemon")
    return subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=120, check=False)


def test_a_file_streams_to_stdout_from_the_origin_and_leaves_nothing(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    data = make_file(o.root / "f.bin", SIZE)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = stream(o.url("f.bin"), tmp=scratch)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(data).digest()
    assert b"stdout: 6.0 MiB" in done.stderr
    assert list(scratch.iterdir()) == []  # the scratch download is gone
    assert not (Path.cwd() / "-").exists()


def test_a_file_streams_from_the_swarm(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    spawn_get: Callable[..., subprocess.Popen[str]],
) -> None:
    o = origin()
    data = make_file(o.root / "f.bin", SIZE)
    t = tracker()
    seeder = spawn_get(o.url("f.bin"), "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "60")
    wait_for_file(tmp_path / "seed.bin", seeder)
    done = stream(o.url("f.bin"), "--tracker", t.url, "--upload-time", "0", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    from_origin, from_peers = parse_summary(done.stderr.decode())
    assert (from_origin, from_peers) == (0, SIZE)
    seeder.kill()


def test_the_reader_sees_the_end_of_the_file_while_the_get_serves_it_on(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    spawn_get: Callable[..., subprocess.Popen[str]],
) -> None:
    """As after curl, the reader's end of file comes with the file's last byte: ``| sha256sum`` prints and
    ``| tar x`` ends while the get goes on serving the file to peers for its ``--upload-time``."""
    o = origin()
    data = make_file(o.root / "f.bin", SIZE)
    t = tracker()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = shoal_argv("get", o.url("f.bin"), "--tracker", t.url, "--upload-time", "3600", "-o", "-", "--no-daemon")
    with open(tmp_path / "stream.log", "wb") as log:
        streaming = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env)
    assert streaming.stdout is not None
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(streaming.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    try:
        reader.join(120)
        assert not reader.is_alive(), "the reader saw no end of file"
        assert got == [data]
        assert streaming.poll() is None  # still serving: its --upload-time is an hour
        # ... and serving for real: a peer that may not ask the origin takes the whole file from it.
        peer = spawn_get(o.url("f.bin"), "-o", str(tmp_path / "peer.bin"), "--tracker", t.url, "--no-origin")
        peer.communicate(timeout=120)
        assert peer.returncode == 0
        assert (tmp_path / "peer.bin").read_bytes() == data
    finally:
        streaming.send_signal(signal.SIGTERM)
        assert streaming.wait(30) == 0, (tmp_path / "stream.log").read_text()
        streaming.stdout.close()
        reader.join(5)


def test_a_reader_that_goes_away_ends_the_stream_with_exit_code_6(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    make_file(o.root / "f.bin", SIZE)
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails with EPIPE
    try:
        done = stream(o.url("f.bin"), tmp=tmp_path, stdout=write)
    finally:
        os.close(write)
    assert done.returncode == 6, done.stderr
    assert b"cannot write the file to stdout" in done.stderr


def test_a_streamed_file_that_fails_its_digest_exits_5(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    make_file(o.root / "f.bin", SIZE)
    done = stream(o.url("f.bin"), "--digest", "sha256:" + "0" * 64, tmp=tmp_path)
    assert done.returncode == 5, done.stderr
    assert b"the stream cannot be completed" in done.stderr


def test_a_stream_takes_no_callback_nor_directory(tmp_path: Path) -> None:
    for extra in (["--callback", "true"], ["--dest-path", str(tmp_path)]):
        done = stream("http://127.0.0.1:9/f.bin", *extra, tmp=tmp_path)
        assert done.returncode == 2, done.stderr
        assert b"streams the file to stdout" in done.stderr


def test_a_stream_whose_origin_dies_midway_exits_non_zero_after_a_verified_prefix(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    """The source goes away after part of the file went out: what was written is a verified prefix of the
    file, and the exit code says the stream is incomplete (the reader of ``curl | tar`` checks it)."""
    o = origin("--rate", "1M")
    data = make_file(o.root / "f.bin", SIZE)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    argv = shoal_argv("get", o.url("f.bin"), "-o", "-", "--no-daemon")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(scratch)}
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(4096)  # bytes are out: the stream has begun
        o.service.kill()
        rest, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = first + rest
    assert proc.returncode == 4, stderr  # the origin cannot be reached
    assert 4096 <= len(out) < SIZE and out == data[: len(out)]
    assert b"shoal: error: " in stderr
    assert list(scratch.iterdir()) == []
