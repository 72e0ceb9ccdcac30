"""`shoal daemon` with real processes: a tracker, an origin, the daemon, and `shoal get` handing off to it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest

from shoal.daemon.client import DaemonClient, RemoteError
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_daemon
from tests.integration.conftest import Origin, run_get

MiB = 1 << 20


class Daemon:
    def __init__(self, service: Service, cache_dir: Path, socket_path: Path) -> None:
        self.service = service
        self.cache_dir = cache_dir
        self.socket = socket_path

    def get(self, url: str, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_get(url, "-o", str(dest), "--socket", str(self.socket), *extra)

    def objects(self) -> list[Path]:
        return sorted((self.cache_dir / "objects").glob("*/*"))

    def index(self, query: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.cache_dir / "index.sqlite") as db:
            return db.execute(query).fetchall()


@pytest.fixture
def daemon(tmp_path: Path, services: list[Service]) -> Callable[..., Daemon]:
    def make(
        tracker: Service | None = None, *, name: str = "node", capacity: str = "1G", cache_dir: Path | None = None
    ) -> Daemon:
        cache = cache_dir or tmp_path / name / "cache"
        sock = tmp_path / name / "daemon.sock"
        service = start_daemon(cache, sock, tracker=tracker.url if tracker else None, capacity=capacity)
        services.append(service)
        return Daemon(service, cache, sock)

    return make


def cache_cli(cache_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shoal_argv("cache", "--cache-dir", str(cache_dir), *args),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_a_second_get_is_a_cache_hit_with_no_network(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", 6 * MiB)
    node = daemon(tracker())
    first = node.get(o.url("file.bin"), tmp_path / "a.bin")
    assert first.returncode == 0, first.stderr
    assert "cached by the daemon" in first.stderr
    # Its id is the BLAKE3 the download computed as the file arrived (peer.prefix_hash): the file's own.
    assert node.index("SELECT digest FROM entries") == [(blake3.blake3(data).hexdigest(),)]
    # The SHA-256 is not waited for; the daemon completes it in the background.
    sha256 = hashlib.sha256(data).hexdigest()
    wait_until(lambda: node.index("SELECT sha256 FROM entries") == [(sha256,)], "the SHA-256 in the cache's index")
    sent = o.bytes_sent()
    second = node.get(o.url("file.bin"), tmp_path / "b.bin")
    assert second.returncode == 0, second.stderr
    assert "cache hit, hard link" in second.stderr
    assert o.bytes_sent() == sent  # not a byte from the origin
    assert (tmp_path / "b.bin").read_bytes() == data
    (obj,) = node.objects()
    assert (tmp_path / "b.bin").stat().st_ino == obj.stat().st_ino
    assert stat.S_IMODE(obj.stat().st_mode) == 0o444
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.bin")]  # no temporary left beside it
    (tmp_path / "sub").mkdir()
    dotted = node.get(o.url("file.bin"), tmp_path / "sub" / ".." / "c.bin")  # normalised before it is sent
    assert dotted.returncode == 0, dotted.stderr
    assert (tmp_path / "c.bin").stat().st_ino == obj.stat().st_ino


def test_the_daemon_seeds_what_it_caches_across_a_restart(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", 5 * MiB)
    t = tracker()
    node = daemon(t)
    assert node.get(o.url("file.bin"), tmp_path / "a.bin").returncode == 0
    node.service.stop()
    node = daemon(t)  # same cache directory: the restarted daemon seeds the task again
    before = o.bytes_sent()
    other = run_get(
        o.url("file.bin"), "-o", str(tmp_path / "other.bin"), "--tracker", t.url, "--no-daemon", "--upload-time", "0"
    )
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "other.bin").read_bytes() == data
    assert "peers 5.0 MiB" in other.stderr
    assert o.bytes_sent() - before < MiB  # a probe at most, never the file again
    status = DaemonClient(node.socket).status()
    assert status["files"] == 1 and len(status["seeding"]) == 1


def test_a_flipped_bit_is_never_served_and_is_fetched_again(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", 3 * MiB)
    node = daemon()
    assert node.get(o.url("file.bin"), tmp_path / "a.bin", "--no-daemon").returncode == 0  # not cached: no daemon
    assert node.get(o.url("file.bin"), tmp_path / "b.bin").returncode == 0
    (obj,) = node.objects()
    os.unlink(tmp_path / "b.bin")  # the user's hard link would change with the object
    obj.chmod(0o644)
    with open(obj, "r+b") as f:
        f.seek(MiB + 7)
        byte = f.read(1)
        f.seek(MiB + 7)
        f.write(bytes([byte[0] ^ 0x10]))
    again = node.get(o.url("file.bin"), tmp_path / "c.bin")
    assert again.returncode == 0, again.stderr
    assert "cache hit" not in again.stderr  # the damaged copy was dropped and the file fetched again
    assert (tmp_path / "c.bin").read_bytes() == data
    assert [p.read_bytes() == data for p in node.objects()] == [True]


def test_a_file_larger_than_the_capacity_is_refused_and_evicts_nothing(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    make_file(o.root / "small.bin", MiB)
    make_file(o.root / "big.bin", 3 * MiB)
    node = daemon(capacity="2M")
    assert node.get(o.url("small.bin"), tmp_path / "small.bin").returncode == 0
    big = node.get(o.url("big.bin"), tmp_path / "big.bin")
    assert big.returncode == 7
    assert "larger than the cache's capacity" in big.stderr
    assert not (tmp_path / "big.bin").exists()
    assert len(node.objects()) == 1  # the small file is still cached
    assert node.index("SELECT COUNT(*) FROM reservations") == [(0,)]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs: {done.stderr}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_a_download_leaves_the_index_unchanged(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    tiny_fs: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    make_file(o.root / "big.bin", 6 * MiB)  # fits the capacity, not the 4 MiB filesystem under it
    node = daemon(cache_dir=tiny_fs / "cache", capacity="100M")
    done = node.get(o.url("big.bin"), tmp_path / "big.bin")
    assert done.returncode == 6, done.stderr
    assert "disk is full" in done.stderr or "No space left" in done.stderr
    assert not (tmp_path / "big.bin").exists()
    assert node.index("SELECT COUNT(*) FROM entries") == [(0,)]
    assert node.index("SELECT COUNT(*) FROM reservations") == [(0,)]
    assert node.objects() == []


def test_a_daemon_killed_mid_download_resumes_from_verified_pieces(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    size = 24 * MiB
    o = origin("--rate", "8M")
    data = make_file(o.root / "file.bin", size)
    t = tracker()
    node = daemon(t)
    get = subprocess.Popen(
        shoal_argv("get", o.url("file.bin"), "-o", str(tmp_path / "f.bin"), "--socket", str(node.socket)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = node.cache_dir / "staging"

    # Wait until the daemon has checkpointed verified pieces (its sidecar lists some), then SIGKILL it.
    def checkpointed() -> bool:
        sidecars = list(state.glob(".*.shoal-state"))
        return bool(sidecars) and len(json.loads(sidecars[0].read_text() or "{}").get("pieces", {})) >= 8

    wait_until(checkpointed, "the daemon to checkpoint 8 verified pieces")
    node.service.kill()
    get.communicate(timeout=30)
    assert get.returncode != 0  # the get lost its daemon
    assert not (tmp_path / "f.bin").exists()
    node = daemon(t)  # the restart reconciles: the dead process's reservation goes
    assert node.index("SELECT COUNT(*) FROM reservations") == [(0,)]
    before = o.bytes_sent()
    again = node.get(o.url("file.bin"), tmp_path / "f.bin")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
    assert o.bytes_sent() - before < size - 4 * MiB  # resumed: the verified pieces were not fetched again
    assert node.index("SELECT COUNT(*) FROM entries WHERE cached = 1") == [(1,)]
    assert not list(state.iterdir())


def test_the_control_socket_is_private_and_paths_outside_the_destination_are_refused(
    tmp_path: Path, services: list[Service]
) -> None:
    # The socket sits in a directory every user may enter, so only its own mode keeps others out.
    public = Path(tempfile.mkdtemp(prefix="shoal-sock-"))
    try:
        public.chmod(0o755)
        node = Daemon(
            start_daemon(tmp_path / "cache", public / "daemon.sock"), tmp_path / "cache", public / "daemon.sock"
        )
        services.append(node.service)
        assert stat.S_IMODE(node.socket.stat().st_mode) == 0o600
        # The system's interpreter: the test's own may live where nobody cannot read it (pyenv under /root).
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
        other = subprocess.run([python, "-c", probe, str(node.socket)], user="nobody", capture_output=True, text=True)
        assert other.returncode != 0 and "PermissionError" in other.stderr
        _refuses_paths_outside_the_destination(node, tmp_path)
    finally:
        shutil.rmtree(public, ignore_errors=True)


def _refuses_paths_outside_the_destination(node: Daemon, tmp_path: Path) -> None:
    client = DaemonClient(node.socket)
    for body in (
        {"url": "http://127.0.0.1:9/x", "dest_dir": str(tmp_path), "name": "../escape"},
        {"url": "http://127.0.0.1:9/x", "dest_dir": str(tmp_path), "name": ".."},
        {"url": "http://127.0.0.1:9/x", "dest_dir": f"{tmp_path}/sub/../..", "name": "x"},
        {"url": "http://127.0.0.1:9/x", "dest_dir": "relative/dir", "name": "x"},
    ):
        with pytest.raises(RemoteError, match="refus"):
            client._stream("/v1/get", body, None)
    assert not (tmp_path.parent / "escape").exists()


def test_cache_commands_and_a_node_syncing_from_another(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", 2 * MiB)
    node = daemon(tracker())
    assert node.get(o.url("file.bin"), tmp_path / "a.bin").returncode == 0
    local = tmp_path / "local.txt"
    local.write_bytes(b"kept by hand\n")
    put = cache_cli(node.cache_dir, "put", str(local), "--pin")
    assert put.returncode == 0, put.stderr
    put_id = put.stdout.strip()
    assert len(put_id) == 64
    assert cache_cli(node.cache_dir, "exists", put_id).returncode == 0
    assert cache_cli(node.cache_dir, "exists", "0" * 64).returncode == 1
    info = json.loads(cache_cli(node.cache_dir, "info", put_id).stdout)
    assert info["pinned"] and info["size"] == local.stat().st_size
    listing = cache_cli(node.cache_dir, "ls").stdout
    assert "file.bin" in listing and "local.txt" in listing
    assert cache_cli(node.cache_dir, "evict", put_id).returncode == 7  # pinned
    assert cache_cli(node.cache_dir, "unpin", put_id).returncode == 0
    assert cache_cli(node.cache_dir, "evict", put_id).returncode == 0
    assert cache_cli(node.cache_dir, "exists", put_id).stdout.strip() == "known (not on disk)"
    usage = json.loads(cache_cli(node.cache_dir, "usage", "--json").stdout)
    assert usage["used"] == 2 * MiB and usage["files"] == 1
    exported = cache_cli(node.cache_dir, "export")
    doc = json.loads(exported.stdout)
    (entry,) = [f for f in doc["files"] if f["name"] == "file.bin"]
    assert doc["version"] == 1 and entry["size"] == 2 * MiB and entry["peers"] == [node.service.url]
    # Another node imports the export and syncs the file from the first node (its origin is gone).
    (o.root / "file.bin").unlink()
    other = tmp_path / "other-cache"
    bad = cache_cli(other, "import", "-", stdin=json.dumps({**doc, "version": 9}))
    assert bad.returncode == 2 and "unknown version" in bad.stderr
    assert cache_cli(other, "import", "-", stdin="{not json").returncode == 2
    assert cache_cli(other, "ls", "--all").stdout == ""
    assert cache_cli(other, "import", "-", stdin=exported.stdout).returncode == 0
    assert cache_cli(other, "exists", entry["id"]).stdout.strip() == "known (not on disk)"
    fetched = cache_cli(other, "get", entry["id"], "-o", str(tmp_path / "synced.bin"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "synced.bin").read_bytes() == data
    assert cache_cli(other, "exists", entry["id"]).returncode == 0


def test_python_api_cache(
    origin: Callable[..., Origin], tmp_path: Path, make_file: Callable[[Path, int], bytes]
) -> None:
    import shoal

    o = origin()
    data = make_file(o.root / "file.bin", MiB)
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * 1000)
    with shoal.Cache(tmp_path / "index.sqlite", tmp_path / "store", "10M") as cache:
        digest = cache.put(local)
        assert cache.exists(digest) and cache.on_cache(digest)
        assert cache.info(digest).size == 1000
        warmed = cache.warm_up(o.url("file.bin"))
        assert cache.download(warmed).read_bytes() == data
        assert cache.exists(f"sha256:{cache.info(warmed).sha256}")
        assert 0 < cache.usage_ratio() < 0.2
        assert not cache.exists("0" * 64) and not cache.on_cache("0" * 64)


def test_the_content_route_serves_cached_files_by_id(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", MiB)
    node = daemon()
    result = DaemonClient(node.socket).get(o.url("file.bin"), tmp_path / "a.bin")
    with urllib.request.urlopen(f"{node.service.url}/v1/content/{result['digest']}") as r:
        assert r.read() == data
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{node.service.url}/v1/content/{'0' * 64}")
    assert info.value.code == 404
    info.value.close()


def test_concurrent_gets_of_one_url_share_one_download(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin("--rate", "16M")
    size = 8 * MiB
    make_file(o.root / "file.bin", size)
    node = daemon()
    procs = [
        subprocess.Popen(
            shoal_argv("get", o.url("file.bin"), "-o", str(tmp_path / f"{i}.bin"), "--socket", str(node.socket)),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert o.bytes_sent() < size + MiB  # one download, not three
    assert len({(tmp_path / f"{i}.bin").stat().st_ino for i in range(3)}) == 1


def test_socket_probe_helper_sees_a_stale_socket_as_no_daemon(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays; nobody listens
    assert not DaemonClient(path).running()


def test_a_digest_names_content_whatever_the_url_and_a_wrong_one_places_nothing(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", 2 * MiB)
    node = daemon()
    wrong = node.get(o.url("file.bin"), tmp_path / "wrong.bin", "--digest", "sha256:" + "0" * 64)
    assert wrong.returncode == 5, wrong.stderr
    assert not (tmp_path / "wrong.bin").exists()
    assert node.objects() == [] and not list((node.cache_dir / "staging").iterdir())
    right = "sha256:" + hashlib.sha256(data).hexdigest()
    assert node.get(o.url("file.bin"), tmp_path / "a.bin", "--digest", right).returncode == 0
    sent = o.bytes_sent()
    # Another URL, the same content by digest: answered from the cache without asking that URL at all.
    other = node.get("http://127.0.0.1:9/elsewhere.bin", tmp_path / "b.bin", "--digest", right)
    assert other.returncode == 0, other.stderr
    assert "cache hit" in other.stderr and o.bytes_sent() == sent
    assert (tmp_path / "b.bin").read_bytes() == data
