"""``shoal seed`` as a real process: publishing, the HTTP endpoints, path safety, and `shoal get` of a
seeded file through the swarm."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

import blake3
import libtorrent as lt
import pytest

from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_seeder

Fetch = tuple[int, Message, bytes]


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Fetch:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()  # headers: case-insensitive
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def listing(seeder: Service) -> dict[str, dict[str, object]]:
    status, _, body = fetch(f"{seeder.url}/v1/files")
    assert status == 200
    return {f["path"]: f for f in json.loads(body)["files"]}


def wait_published(seeder: Service, rel: str) -> dict[str, object]:
    return wait_until(lambda: listing(seeder).get(rel), f"{rel} to be published")


def wait_gone(seeder: Service, rel: str) -> None:
    wait_until(lambda: rel not in listing(seeder), f"{rel} to be unpublished")


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    directory = tmp_path / "releases"
    directory.mkdir()
    return directory


@pytest.fixture
def seeder(tmp_path: Path, watched: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def make(*dirs: Path, extra: tuple[str, ...] = ()) -> Service:
        service = start_seeder(*(dirs or (watched,)), state_dir=tmp_path / "state", extra=extra)
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


def test_serve_returns_a_torrent_libtorrent_accepts(seeder: Callable[..., Service], watched: Path) -> None:
    data = os.urandom(700_000)
    (watched / "app.bin").write_bytes(data)
    service = seeder()
    entry = wait_published(service, "releases/app.bin")
    assert entry["size"] == len(data)
    assert entry["digest"] == f"blake3:{blake3.blake3(data).hexdigest()}"

    status, headers, body = fetch(f"{service.url}/serve?releases/app.bin")
    assert status == 200
    assert headers["Content-Type"] == "application/x-bittorrent"
    info = lt.torrent_info(lt.bdecode(body))
    assert str(info.info_hashes().v1) == entry["info_hash"]
    assert (info.name(), info.total_size()) == ("app.bin", len(data))
    meta = lt.bdecode(body)
    assert meta[b"announce"] == f"{service.url}/announce".encode()
    assert meta[b"url-list"] == [f"{service.url}/files/releases/app.bin".encode()]
    for i in range(info.num_pieces()):
        piece = data[i * info.piece_length() : (i + 1) * info.piece_length()]
        assert bytes(info.hash_for_piece(i)) == hashlib.sha1(piece).digest()


def test_files_answers_ranges_like_an_origin(seeder: Callable[..., Service], watched: Path) -> None:
    data = os.urandom(100_000)
    (watched / "a.bin").write_bytes(data)
    service = seeder()
    wait_published(service, "releases/a.bin")
    url = f"{service.url}/files/releases/a.bin"

    status, headers, body = fetch(url)
    assert (status, body) == (200, data)
    etag = headers["ETag"]
    assert etag == f'"{blake3.blake3(data).hexdigest()}"'
    assert headers["Accept-Ranges"] == "bytes"

    status, headers, body = fetch(url, headers={"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], "bytes 10-19/100000")
    status, headers, body = fetch(url, headers={"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, headers, body = fetch(url, headers={"Range": "bytes=99990-"})
    assert (status, body) == (206, data[99990:])
    status, headers, _ = fetch(url, headers={"Range": "bytes=100000-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */100000")
    status, headers, body = fetch(url, method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "100000", b"")
    # If-Range with our ETag gets the range; with another one the whole current file (RFC 9110 13.1.5).
    assert fetch(url, headers={"Range": "bytes=0-0", "If-Range": etag})[0] == 206
    status, _, body = fetch(url, headers={"Range": "bytes=0-0", "If-Range": '"old"'})
    assert (status, body) == (200, data)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One seeder over a directory with a secret beside it, a symlink to the secret, a hidden file and a
    partial download in it: one process serves every path-safety case."""
    base = tmp_path_factory.mktemp("guarded")
    watched = base / "releases"
    watched.mkdir()
    secret = base / "secret.txt"
    secret.write_text("do not serve")
    (watched / "a.bin").write_bytes(b"x" * 1000)
    (watched / ".hidden").write_bytes(b"hidden")
    (watched / "partial.bin.part").write_bytes(b"partial")
    (watched / "out-link").symlink_to(secret)
    service = start_seeder(watched, state_dir=base / "state")
    try:
        wait_published(service, "releases/a.bin")
        yield service
    finally:
        service.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/serve?../secret.txt",
        "/serve?releases/../secret.txt",
        "/serve?/etc/passwd",
        "/serve?releases/%00a.bin",
        "/serve?releases//a.bin",
        "/files/releases/%2e%2e/secret.txt",
        "/files/releases/..%2fsecret.txt",
        "/files/%2fetc%2fpasswd",
        "/files/releases/a.bin%00",
        "/files/releases/out-link",
        "/serve?releases/out-link",
        "/files/releases/.hidden",
        "/files/releases/partial.bin.part",
        "/serve_last_updated?..",
        "/serve_last_updated?nothere",
        "/serve?releases/%ff%fe",
        "/serve_last_updated?%ff%fe",
        "/files/releases/%ff%fe",
    ],
)
def test_nothing_outside_the_watched_directories_is_served(guarded: Service, path: str) -> None:
    status, _, body = fetch(f"{guarded.url}{path}")
    assert 400 <= status < 500, (path, status)
    assert b"do not serve" not in body
    assert set(listing(guarded)) == {"releases/a.bin"}


def test_a_symlink_inside_the_directory_is_served(seeder: Callable[..., Service], watched: Path) -> None:
    (watched / "target.bin").write_bytes(b"y" * 5000)
    (watched / "link.bin").symlink_to(watched / "target.bin")
    service = seeder()
    wait_published(service, "releases/link.bin")
    assert fetch(f"{service.url}/files/releases/link.bin")[2] == b"y" * 5000


def test_a_dropped_file_is_published_and_changes_are_followed(seeder: Callable[..., Service], watched: Path) -> None:
    service = seeder()
    assert fetch(f"{service.url}/serve?releases/new.bin")[0] == 404
    assert fetch(f"{service.url}/serve_last_updated")[0] == 404

    first = os.urandom(300_000)
    (watched / "new.bin").write_bytes(first)  # written and closed
    # /serve waits for a file the seeder has seen; until inotify's event arrives the file is unknown (404).
    # How soon it is published is measured by benchmarks/seed_publish.py, not here.
    status, _, body = wait_until(
        lambda: (answer := fetch(f"{service.url}/serve?releases/new.bin"))[0] != 404 and answer,
        "the seeder to see the new file",
    )
    assert status == 200, body
    assert fetch(f"{service.url}/serve_last_updated?releases")[2] == body
    assert fetch(f"{service.url}/serve_last_updated")[2] == body

    # Written in place: unpublished at once, published again with the new content.
    second = os.urandom(200_000)
    (watched / "new.bin").write_bytes(second)
    wait_until(lambda: listing(service).get("releases/new.bin", {}).get("size") == len(second), "the new content")
    assert fetch(f"{service.url}/files/releases/new.bin")[2] == second

    # Hidden while written, then renamed into place (how careful writers publish).
    tmp = watched / ".incoming.tmp"
    tmp.write_bytes(first)
    assert "releases/.incoming.tmp" not in listing(service)
    os.rename(tmp, watched / "renamed.bin")
    wait_published(service, "releases/renamed.bin")

    # Moved in from outside, a directory at a time.
    outside = watched.parent / "batch"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "c.bin").write_bytes(b"c" * 10)
    shutil.move(outside, watched / "batch")
    wait_published(service, "releases/batch/deep/c.bin")

    # Moved out and deleted: unpublished.
    os.rename(watched / "renamed.bin", watched.parent / "renamed.bin")
    wait_gone(service, "releases/renamed.bin")
    (watched / "new.bin").unlink()
    wait_gone(service, "releases/new.bin")
    shutil.rmtree(watched / "batch")
    wait_gone(service, "releases/batch/deep/c.bin")
    assert fetch(f"{service.url}/files/releases/new.bin")[0] == 404


def test_a_restart_does_not_hash_unchanged_files_again(seeder: Callable[..., Service], watched: Path) -> None:
    (watched / "big.bin").write_bytes(os.urandom(3_000_000))
    first = seeder()
    wait_published(first, "releases/big.bin")
    assert json.loads(fetch(f"{first.url}/v1/seeder/health")[2])["hashed_bytes"] == 3_000_000
    first.stop()
    second = seeder()
    wait_published(second, "releases/big.bin")
    assert json.loads(fetch(f"{second.url}/v1/seeder/health")[2])["hashed_bytes"] == 0


def test_a_hard_link_of_a_hashed_file_is_published_without_hashing_it_again(
    seeder: Callable[..., Service], watched: Path
) -> None:
    # A mirror's new version hard-links every unchanged file from the previous one (rsync --link-dest).
    data = os.urandom(3_000_000)
    (watched / "v1").mkdir()
    (watched / "v1" / "big.bin").write_bytes(data)
    service = seeder()
    wait_published(service, "releases/v1/big.bin")
    assert json.loads(fetch(f"{service.url}/v1/seeder/health")[2])["hashed_bytes"] == 3_000_000
    (watched / ".v2").mkdir()
    os.link(watched / "v1" / "big.bin", watched / ".v2" / "big.bin")
    (watched / ".v2" / "new.bin").write_bytes(b"n" * 1000)
    os.rename(watched / ".v2", watched / "v2")  # published as a whole directory, as a mirror version is
    wait_published(service, "releases/v2/big.bin")
    wait_published(service, "releases/v2/new.bin")
    assert json.loads(fetch(f"{service.url}/v1/seeder/health")[2])["hashed_bytes"] == 3_000_000 + 1000
    assert fetch(f"{service.url}/files/releases/v2/big.bin")[2] == data


def test_a_mirror_jobs_current_link_is_a_stable_name_for_its_newest_version(
    seeder: Callable[..., Service], watched: Path, tmp_path: Path
) -> None:
    job = watched / "debian"
    for version, text in (("v1", b"first"), ("v2", b"second, longer")):
        (job / "versions" / version / "dists").mkdir(parents=True)
        (job / "versions" / version / "dists" / "Release").write_bytes(text)
    (job / "current").symlink_to("versions/v1")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "Release").write_bytes(b"not to be served")
    (watched / "outside").symlink_to(tmp_path / "secret")
    (watched / ".hidden").symlink_to("debian/versions/v1")
    service = seeder()
    wait_published(service, "releases/debian/versions/v1/dists/Release")
    wait_published(service, "releases/debian/versions/v2/dists/Release")
    assert "releases/debian/current/dists/Release" not in listing(service)  # listed once, by its own name

    assert fetch(f"{service.url}/files/releases/debian/current/dists/Release")[2] == b"first"
    torrent = fetch(f"{service.url}/serve?releases/debian/current/dists/Release")
    assert (
        torrent[0] == 200 and torrent[2] == fetch(f"{service.url}/serve?releases/debian/versions/v1/dists/Release")[2]
    )
    assert fetch(f"{service.url}/serve?debian/current/dists/Release")[2] == torrent[2]  # distributor's form
    os.symlink("versions/v2", job / ".current.tmp")
    os.replace(job / ".current.tmp", job / "current")  # as the mirror runner publishes a version
    assert fetch(f"{service.url}/files/releases/debian/current/dists/Release")[2] == b"second, longer"

    for name in ("releases/outside/Release", "releases/.hidden/dists/Release", "releases/debian/current/nope"):
        assert fetch(f"{service.url}/files/{name}")[0] == 404
        assert fetch(f"{service.url}/serve?{name}")[0] == 404


def test_two_watched_directories_and_their_newest_files(seeder: Callable[..., Service], tmp_path: Path) -> None:
    a, b = tmp_path / "alpha", tmp_path / "beta"
    a.mkdir()
    b.mkdir()
    (a / "one.bin").write_bytes(b"1" * 100)
    (b / "two.bin").write_bytes(b"2" * 100)
    os.utime(a / "one.bin", (1_000_000_000, 1_000_000_000))
    service = seeder(a, b)
    wait_published(service, "alpha/one.bin")
    wait_published(service, "beta/two.bin")
    newest_alpha = lt.torrent_info(lt.bdecode(fetch(f"{service.url}/serve_last_updated?alpha")[2]))
    newest = lt.torrent_info(lt.bdecode(fetch(f"{service.url}/serve_last_updated")[2]))
    assert (newest_alpha.name(), newest.name()) == ("one.bin", "two.bin")


def test_shoal_get_fetches_a_seeded_file_through_the_swarm(
    seeder: Callable[..., Service], watched: Path, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    (watched / "model.bin").write_bytes(data)
    service = seeder()
    entry = wait_published(service, "releases/model.bin")
    task_id = str(entry["task_id"])
    # The seeder registers the file's content task with its tracker: every piece hash, before any get.
    wait_until(lambda: fetch(f"{service.url}/v1/tasks/{task_id}")[0] == 200, "the content task at the tracker")
    outs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            shoal_argv(
                "get",
                f"{service.url}/files/releases/model.bin",
                "--tracker",
                service.url,
                "-o",
                str(out),
                "--upload-time",
                "1",
                "-q",
            )
        )
        for out in outs
    ]
    for proc in procs:
        assert proc.wait(60) == 0
    for out in outs:
        assert out.read_bytes() == data
    summary = json.loads(fetch(f"{service.url}/v1/tasks/{task_id}")[2])
    assert summary["generation"] == 1  # no getter saw another version than the one the seeder registered


def test_a_path_inside_one_watched_directory_names_its_file(seeder: Callable[..., Service], tmp_path: Path) -> None:
    """distributor's form: ``/serve?file.iso`` and ``/files/file.iso`` name a file by its path inside the
    one watched directory that holds it; a path two of them hold is a 409 naming both; its cache files
    (``*.mdcache``) are never published."""
    a, b = tmp_path / "alpha", tmp_path / "beta"
    (b / "sub").mkdir(parents=True)
    a.mkdir()
    (a / "only.iso").write_bytes(b"a" * 1000)
    (b / "sub" / "nested.iso").write_bytes(b"n" * 1000)
    for d in (a, b):
        (d / "same.iso").write_bytes(d.name.encode() * 100)
    (a / "only.iso.mdcache").write_bytes(b"distributor's metadata")
    service = seeder(a, b)
    for rel in ("alpha/only.iso", "beta/sub/nested.iso", "alpha/same.iso", "beta/same.iso"):
        wait_published(service, rel)
    assert "alpha/only.iso.mdcache" not in listing(service)

    for short, full in (("only.iso", "alpha/only.iso"), ("sub/nested.iso", "beta/sub/nested.iso")):
        status, _, torrent = fetch(f"{service.url}/serve?{short}")
        assert status == 200, torrent
        assert torrent == fetch(f"{service.url}/serve?{full}")[2]  # the <dirname>/ form keeps working
        assert fetch(f"{service.url}/files/{short}")[2] == fetch(f"{service.url}/files/{full}")[2]

    status, _, body = fetch(f"{service.url}/serve?same.iso")
    assert status == 409
    assert b"alpha/same.iso" in body and b"beta/same.iso" in body
    assert fetch(f"{service.url}/files/same.iso")[0] == 409
    assert fetch(f"{service.url}/files/beta/same.iso")[2] == b"beta" * 100
    assert fetch(f"{service.url}/serve?missing.iso")[0] == 404
    assert fetch(f"{service.url}/serve?only.iso.mdcache")[0] == 404
    # One written while the seeder watches is not published either (the file written after it is).
    (a / "late.iso.mdcache").write_bytes(b"distributor's metadata")
    (a / "late.iso").write_bytes(b"l" * 1000)
    wait_published(service, "alpha/late.iso")
    assert "alpha/late.iso.mdcache" not in listing(service)
    assert fetch(f"{service.url}/files/late.iso.mdcache")[0] == 404
