"""The whole-file check with real processes: a hostile peer whose pieces match the tracker's hashes but not
the origin's bytes, origins that publish their digest (right or wrong), and ``--digest``."""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from shoal.core.bitfield import Bitfield
from shoal.core.ids import task_id_for_url
from shoal.core.manifest import piece_length_for
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, start_daemon, start_service
from shoal.testing.sockets import listening_ports
from tests.integration.conftest import (
    Origin,
    no_partial_files,
    rewritten_after_an_interrupted_run,
    run_get,
    task_summary,
)

SIZE = 4 << 20  # 16 pieces of 256 KiB
PIECE = piece_length_for(SIZE)
POISONED = 3  # the piece whose bytes the hostile peer changed
CLAIMED = 8  # the hostile peer takes the leases of pieces 0-7; the downloader fetches 8-15 from the origin


def start_hostile(services: list[Service], tracker: Service, url: str, data: bytes, path: Path, *extra: str) -> str:
    """Start a hostile peer (shoal.testing.lease_liar) serving ``data`` with piece POISONED changed; its peer id."""
    poisoned = bytearray(data)
    poisoned[POISONED * PIECE : POISONED * PIECE + 4096] = bytes(b ^ 0xFF for b in data[POISONED * PIECE :][:4096])
    path.write_bytes(poisoned)
    argv = [
        sys.executable,
        "-m",
        "shoal.testing.lease_liar",
        "--tracker",
        tracker.url,
        "--url",
        url,
        "--file",
        str(path),
    ]
    service = start_service([*argv, "--pieces", str(CLAIMED), *extra])
    services.append(service)
    digest = extra[extra.index("--digest") + 1] if "--digest" in extra else ""
    peers = task_summary(tracker, task_id_for_url(url, digest=digest))["peers"]
    (hostile,) = (p["peer_id"] for p in peers if p["port"] == int(service.url.rsplit(":", 1)[1]))  # type: ignore[index,union-attr]
    return str(hostile)


def flagged_bad(tracker: Service, url: str, peer_id: str, digest: str = "") -> bool:
    """The honest download reported the peer: its host accused it (one host's word bans it for that host;
    README, "Trust model")."""
    peers = task_summary(tracker, task_id_for_url(url, digest=digest))["peers"]
    return any(p["peer_id"] == peer_id and p["accusers"] >= 1 for p in peers)  # type: ignore[index,union-attr,operator]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.mark.parametrize("header", ["repr-digest", "digest", "x-amz-checksum-sha256"])
def test_pieces_of_a_hostile_peer_are_fetched_again_when_the_origins_digest_fails(
    tmp_path: Path, out_dir: Path, tracker, origin: Callable[..., Origin], make_file, services, header: str
) -> None:
    src = origin("--digest-header", header)
    data = make_file(src.root / "a.bin", SIZE)
    t = tracker()
    url = src.url("a.bin")
    hostile = start_hostile(services, t, url, data, tmp_path / "hostile.bin")
    before = src.bytes_sent()

    out = out_dir / "a.bin"
    result = run_get(url, "-o", str(out), "--tracker", t.url, "--upload-time", "0")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert f"suspected peers: {hostile}" in result.stderr
    assert f"fetching {CLAIMED} of its 16 pieces again from the origin" in result.stderr
    assert flagged_bad(t, url, hostile)
    # Half the file came from the origin under leases and was kept; the hostile peer's half came again.
    assert SIZE <= src.bytes_sent() - before <= SIZE + PIECE
    assert no_partial_files(out_dir)


def test_a_digest_given_by_the_user_mends_a_poisoned_download_instead_of_failing_it(
    tmp_path: Path, out_dir: Path, tracker, origin: Callable[..., Origin], make_file, services, spawn_get
) -> None:
    src = origin()  # publishes no digest
    data = make_file(src.root / "b.bin", SIZE)
    t = tracker()
    url = src.url("b.bin")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    hostile = start_hostile(services, t, url, data, tmp_path / "hostile.bin", "--digest", digest)
    before = src.bytes_sent()

    out = out_dir / "b.bin"
    argv = ["-o", str(out), "--tracker", t.url, "--digest", digest, "--listen", "127.0.0.1:0"]
    get = spawn_get(url, *argv, "--upload-time", "60")
    deadline = time.monotonic() + 60
    while not out.exists() and get.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.exists(), get.communicate(timeout=60)[1]
    assert out.read_bytes() == data
    assert SIZE <= src.bytes_sent() - before <= SIZE + PIECE
    # While it seeds, it offers every piece but the one whose hash the tracker holds as the hostile peer's
    # (a peer would verify it against that hash, fail it, and report us).
    task_id = task_id_for_url(url, digest=digest)
    generation = task_summary(t, task_id)["generation"]
    (port,) = wait_until(lambda: listening_ports(get.pid), "the get's piece server")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/tasks/{task_id}/haves?gen={generation}") as stream:
        offered = Bitfield.decode(16, json.loads(stream.readline())["bitfield"])
    assert sorted(offered) == [i for i in range(16) if i != POISONED]
    get.send_signal(signal.SIGINT)
    _, err = get.communicate(timeout=90)
    assert f"the file does not match --digest (expected {digest}" in err
    assert f"suspected peers: {hostile}" in err
    assert flagged_bad(t, url, hostile, digest)


@pytest.mark.parametrize("user_digest", [False, True], ids=["origin-only", "with-right-user-digest"])
def test_an_origin_whose_published_digest_is_wrong_fails_with_nothing_placed(
    tmp_path: Path, out_dir: Path, tracker, origin: Callable[..., Origin], make_file, services, user_digest: bool
) -> None:
    """The origin is unsound: its Repr-Digest is of other bytes. The pieces from the hostile peer are fetched
    again first (they are suspect either way); once the file is the origin's bytes alone and still fails,
    that is exit 5. A right ``--digest`` (SHA-256) does not overrule the origin's SHA-512: both are checked."""
    src = origin("--digest-header", "repr-digest", "--wrong-digests")
    data = make_file(src.root / "c.bin", SIZE)
    t = tracker()
    url = src.url("c.bin")
    extra = ("--digest", "sha256:" + hashlib.sha256(data).hexdigest()) if user_digest else ()
    hostile = start_hostile(services, t, url, data, tmp_path / "hostile.bin", *extra)

    out = out_dir / "c.bin"
    result = run_get(url, "-o", str(out), "--tracker", t.url, "--upload-time", "0", *extra)
    assert result.returncode == 5, result.stderr
    assert f"suspected peers: {hostile}" in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("shoal: error: digest mismatch") and "(the origin's Repr-Digest)" in error, error
    assert f"got sha512:{hashlib.sha512(data).hexdigest()} from the origin's own bytes" in error
    assert not out.exists() and no_partial_files(out_dir)


@pytest.mark.parametrize("wrong", [False, True], ids=["right", "wrong"])
def test_content_md5_of_a_whole_file_reply_is_checked(out_dir: Path, origin: Callable[..., Origin], make_file, wrong):
    """An origin that ignores Range answers the probe with the whole file (200): its Content-MD5 is the
    file's, and it is checked (a wrong one fails the download)."""
    src = origin("--no-range", "--digest-header", "content-md5", *(("--wrong-digests",) if wrong else ()))
    data = make_file(src.root / "d.bin", 1 << 20)
    out = out_dir / "d.bin"
    result = run_get(src.url("d.bin"), "-o", str(out))
    if wrong:
        assert result.returncode == 5, result.stderr
        assert "(the origin's Content-MD5)" in result.stderr
        assert not out.exists() and no_partial_files(out_dir)
    else:
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == data


def test_content_digest_and_content_md5_of_a_206_are_not_the_files(
    out_dir: Path, origin: Callable[..., Origin], make_file
) -> None:
    """A Range-capable origin's probe reply (bytes=0-0) carries the digests of its one byte: they say
    nothing of the file and must not fail it."""
    src = origin("--digest-header", "content-digest", "--digest-header", "content-md5")
    data = make_file(src.root / "e.bin", 1 << 20)
    request = urllib.request.Request(src.url("e.bin"), headers={"Range": "bytes=0-0"})
    with urllib.request.urlopen(request) as reply:
        assert reply.status == 206 and reply.headers["Content-Digest"] and reply.headers["Content-MD5"]
    out = out_dir / "e.bin"
    result = run_get(src.url("e.bin"), "-o", str(out), "-vv")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert "content-digest: a 206's is of the range" in result.stderr


def test_a_daemon_does_not_seed_a_file_the_tracker_knows_by_other_hashes(
    tmp_path: Path, out_dir: Path, tracker, origin: Callable[..., Origin], make_file, services
) -> None:
    """The daemon's download mends the poisoned pieces like `shoal get` does; it then keeps the file in its
    cache but does not seed it for the task, whose hashes for the hostile peer's piece are not the file's."""
    src = origin("--digest-header", "repr-digest")
    data = make_file(src.root / "f.bin", SIZE)
    t = tracker()
    url = src.url("f.bin")
    hostile = start_hostile(services, t, url, data, tmp_path / "hostile.bin")
    sock = tmp_path / "node" / "daemon.sock"
    node = start_daemon(tmp_path / "node" / "cache", sock, tracker=t.url)
    services.append(node)

    out = out_dir / "f.bin"
    result = run_get(url, "-o", str(out), "--socket", str(sock))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert flagged_bad(t, url, hostile)
    node_port = int(node.url.rsplit(":", 1)[1])
    assert all(p["port"] != node_port for p in task_summary(t, task_id_for_url(url))["peers"])  # type: ignore[index,union-attr]


def test_resumed_pieces_that_fail_the_origins_digest_are_fetched_again(
    out_dir: Path, origin: Callable[..., Origin], make_file
) -> None:
    """An interrupted run left every piece of the origin's old bytes verified on disk, and the origin's file
    was then rewritten under the same ETag: the rerun resumes them all, but the origin's Repr-Digest is of
    the new bytes. Resumed pieces' sources are not recorded, so they are fetched again (no peer suspected)."""
    src = origin("--digest-header", "repr-digest")
    path = src.root / "g.bin"
    make_file(path, SIZE)
    out = out_dir / "g.bin"
    new = rewritten_after_an_interrupted_run(src.url("g.bin"), path, out)
    result = run_get(src.url("g.bin"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == new
    assert "suspected peers: none (the pieces were resumed from an earlier run)" in result.stderr
    assert no_partial_files(out_dir)


@pytest.mark.parametrize(
    ("option", "algorithm"),
    [
        ("--digest", "MD5"),
        ("--hash", "sha1"),
        ("--digest", "Sha224"),
        ("--hash", "SHA256"),
        ("--digest", "sha384"),
        ("--hash", "sha512"),
        ("--digest", "blake2b"),
        ("--hash", "BLAKE3"),
    ],
)
def test_a_digest_of_another_algorithm_places_the_right_file_and_refuses_a_wrong_one(
    out_dir: Path, origin: Callable[..., Origin], make_file, option: str, algorithm: str
):
    """``--digest``/``--hash`` ALGO:HEX of each listed algorithm, its name in any case: the right one places
    the file; a wrong one is exit 5 (integrity failure) with nothing placed and no part file left."""
    src = origin()
    data = make_file(src.root / "d.bin", 1 << 20)
    name = algorithm.lower()
    right = blake3.blake3(data).hexdigest() if name == "blake3" else hashlib.new(name, data).hexdigest()
    out = out_dir / "d.bin"
    result = run_get(src.url("d.bin"), "-o", str(out), option, f"{algorithm}:{right.upper()}")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    wrong_out = out_dir / "wrong.bin"
    wrong = "0" * len(right)
    result = run_get(src.url("d.bin"), "-o", str(wrong_out), option, f"{algorithm}:{wrong}")
    assert result.returncode == 5, result.stderr
    assert f"expected {algorithm.lower()}:{wrong} (--digest), got {algorithm.lower()}:{right}" in result.stderr
    assert not wrong_out.exists() and no_partial_files(out_dir)


def test_a_digest_of_an_unknown_algorithm_is_a_usage_error(out_dir: Path, origin: Callable[..., Origin], make_file):
    src = origin()
    make_file(src.root / "d.bin", 4096)
    result = run_get(src.url("d.bin"), "-o", str(out_dir / "d.bin"), "--hash", "crc32:0badf00d")
    assert result.returncode == 2, result.stderr
    assert "ALGORITHM one of md5, sha1, sha224, sha256, sha384, sha512, blake2b, blake3" in result.stderr
    assert not (out_dir / "d.bin").exists() and src.requests() == 0
