"""`shoal daemon` with real processes: a tracker, an origin, the daemon, and `shoal get` handing off to it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest

from shoal.core.errors import RemoteError
from shoal.core.ids import canonical_url
from shoal.daemon.client import DaemonClient
from shoal.daemon.messages import GetLine, GetRequest
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_daemon
from tests.integration.conftest import Daemon, Origin, cache_cli, run_get

MiB = 1 << 20


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
    assert status.files == 1 and len(status.seeding) == 1


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
    # The daemon's background pass reads the file for its SHA-256 (at idle priority: late on a busy host).
    # Flipped while it reads, the damage would be found by that pass or by the next use, whichever came
    # first: the pass ends first, so the next use's check is what finds it.
    sha256 = hashlib.sha256(data).hexdigest()
    wait_until(lambda: node.index("SELECT sha256 FROM entries") == [(sha256,)], "the SHA-256 in the cache's index")
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
    # The socket's own mode keeps others out, behind its directory's (0700, which the daemon insists on:
    # tests/integration/test_daemon_socket.py), so the directory is opened to others once the daemon runs.
    public = Path(tempfile.mkdtemp(prefix="shoal-sock-"))
    try:
        node = Daemon(
            start_daemon(tmp_path / "cache", public / "daemon.sock"), tmp_path / "cache", public / "daemon.sock"
        )
        services.append(node.service)
        public.chmod(0o755)
        assert stat.S_IMODE(node.socket.stat().st_mode) == 0o600
        # The system's interpreter: the test's own may live where nobody cannot read it (pyenv under /root).
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
        other = subprocess.run([python, "-c", probe, str(node.socket)], user="nobody", capture_output=True, text=True)
        assert other.returncode != 0 and "PermissionError" in other.stderr
        public.chmod(0o700)  # the daemon's client insists on it as well
        _refuses_paths_outside_the_destination(node, tmp_path)
    finally:
        shutil.rmtree(public, ignore_errors=True)


def _refuses_paths_outside_the_destination(node: Daemon, tmp_path: Path) -> None:
    client = DaemonClient(node.socket)
    for dest_dir, name in (
        (str(tmp_path), "../escape"),
        (str(tmp_path), ".."),
        (f"{tmp_path}/sub/../..", "x"),
        ("relative/dir", "x"),
    ):
        with pytest.raises(RemoteError, match="refus") as info:
            client.stream("/v1/get", GetRequest("http://127.0.0.1:9/x", dest_dir, name), GetLine, None)
        assert info.value.exit_code == 2
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
    header, *rows = cache_cli(node.cache_dir, "ls").stdout.splitlines()
    assert header.split() == ["ID", "FLAGS", "SIZE", "LAST", "USED", "NAME"]
    names = {row.split()[-1]: row.split()[0] for row in rows}
    assert set(names) == {"file.bin", "local.txt"} and names["local.txt"] == put_id[:16]
    # The ids `ls` shows, and any unique prefix of 8 hex digits or more, are taken wherever an id is.
    short = names["local.txt"]
    assert json.loads(cache_cli(node.cache_dir, "info", short).stdout)["id"] == put_id
    assert cache_cli(node.cache_dir, "evict", short).returncode == 7  # pinned
    assert cache_cli(node.cache_dir, "unpin", put_id[:8]).returncode == 0
    evicted = cache_cli(node.cache_dir, "evict", short)
    assert evicted.returncode == 0 and evicted.stdout == f"evicted {put_id} (13 B)\n"
    assert cache_cli(node.cache_dir, "exists", short[:7]).returncode == 2  # too short to name one
    assert cache_cli(node.cache_dir, "exists", put_id).stdout.strip() == "known (not on disk)"
    usage = json.loads(cache_cli(node.cache_dir, "usage", "--json").stdout)
    assert usage["used"] == 2 * MiB and usage["files"] == 1
    exported = cache_cli(node.cache_dir, "export")
    doc = json.loads(exported.stdout)
    (entry,) = [f for f in doc["files"] if f["name"] == "file.bin"]
    assert doc["version"] == 1 and entry["size"] == 2 * MiB and entry["peers"] == [canonical_url(node.service.url)]
    # Another node imports the export and syncs the file from the first node (its origin is gone).
    (o.root / "file.bin").unlink()
    other = tmp_path / "other-cache"
    bad = cache_cli(other, "import", "-", stdin=json.dumps({**doc, "version": 9}))
    assert bad.returncode == 2 and "unknown version" in bad.stderr
    assert cache_cli(other, "import", "-", stdin="{not json").returncode == 2
    assert cache_cli(other, "ls", "--all").stdout.splitlines()[1:] == []
    assert cache_cli(other, "import", "-", stdin=exported.stdout).returncode == 0
    assert cache_cli(other, "exists", entry["id"]).stdout.strip() == "known (not on disk)"
    fetched = cache_cli(other, "get", entry["id"], "-o", str(tmp_path / "synced.bin"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "synced.bin").read_bytes() == data
    assert cache_cli(other, "exists", entry["id"]).returncode == 0


def test_cache_commands_use_the_running_daemons_cache_unless_told_otherwise(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", MiB)
    node = daemon(capacity="300M")
    default = tmp_path / "default-cache"  # where `shoal cache` would go with no daemon
    env = {**os.environ, "SHOAL_CACHE_DIR": str(default), "SHOAL_DAEMON_SOCKET": str(node.socket)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(shoal_argv("cache", *args), capture_output=True, text=True, env=env, timeout=60)

    local = tmp_path / "local.txt"
    local.write_bytes(b"kept by hand\n")
    put = cli("put", str(local))
    assert put.returncode == 0, put.stderr
    warm = cli("warm", o.url("file.bin"))  # fetched by the daemon, then found in the same cache
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.strip() == blake3.blake3(data).hexdigest()
    usage = json.loads(cli("usage", "--json").stdout)
    assert usage["files"] == 2 and usage["capacity"] == 300 << 20  # the daemon's cache, its own capacity
    assert node.index("SELECT COUNT(*) FROM entries WHERE cached = 1") == [(2,)]
    assert not default.exists()
    # --socket names the daemon as well as the environment does.
    del env["SHOAL_DAEMON_SOCKET"]
    listed = cli("--socket", str(node.socket), "ls")
    assert listed.returncode == 0 and {row.split()[-1] for row in listed.stdout.splitlines()[1:]} == {
        "file.bin",
        "local.txt",
    }
    # An explicit --cache-dir wins: a warm there is fetched in this process, into that cache.
    other = tmp_path / "other-cache"
    mine = cli("--cache-dir", str(other), "--socket", str(node.socket), "warm", o.url("file.bin"))
    assert mine.returncode == 0, mine.stderr
    assert cli("--cache-dir", str(other), "exists", warm.stdout.strip()).stdout == "cached\n"
    assert node.index("SELECT COUNT(*) FROM entries") == [(2,)]
    # With no daemon on the socket, the default cache.
    node.service.stop()
    usage = json.loads(cli("--socket", str(node.socket), "usage", "--json").stdout)
    assert usage["files"] == 0 and default.is_dir()


def test_a_daemon_that_does_not_answer_is_one_error_line_naming_the_way_around_it(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()

        def hang_up() -> None:
            for _ in range(2):  # the probe, then the status request
                conn, _ = listener.accept()
                conn.close()

        closer = threading.Thread(target=hang_up)
        closer.start()
        listed = subprocess.run(
            shoal_argv("cache", "--socket", str(path), "ls"), capture_output=True, text=True, timeout=60
        )
        closer.join(10)
    assert listed.returncode == 1
    assert listed.stderr.startswith(f"shoal: error: cannot reach the daemon at {path}: ")
    assert listed.stderr.endswith(" (give --cache-dir to work on a cache without asking it)\n")
    assert listed.stderr.count("\n") == 1


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
    with urllib.request.urlopen(f"{node.service.url}/v1/content/{result.digest}") as r:
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


def test_one_daemon_per_cache_and_a_restart_keeps_or_warns_about_the_capacity(
    daemon: Callable[..., Daemon], tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    first = daemon(capacity="300M")
    argv = ["daemon", "--cache-dir", str(first.cache_dir), "--listen", "127.0.0.1:0"]
    # Its own socket, no --capacity: only the cache is shared, and the second daemon is refused for it.
    second = subprocess.run(
        shoal_argv(*argv, "--socket", str(tmp_path / "second.sock")), capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 7, second.stderr
    assert second.stderr == (
        f"shoal: error: the cache {first.cache_dir} is in use by another shoal daemon (pid {first.service.proc.pid}); "
        "stop it, or give this one another --cache-dir\n"
    )
    assert not (tmp_path / "second.sock").exists()
    assert first.index("SELECT value FROM meta WHERE key = 'capacity'") == [(str(300 << 20),)]
    assert DaemonClient(first.socket).status().capacity == 300 << 20
    first.service.stop()

    def restart(*extra: str) -> tuple[str, str]:
        """Start a daemon on the cache, wait until it serves, stop it: (its stdout's first line, its stderr)."""
        proc = subprocess.Popen(
            shoal_argv(*argv, "--socket", str(first.socket), *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the start-up's warnings come before it
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        return line, err

    line, err = restart()  # no --capacity: the cache's own
    assert "listening on" in line and "of 300.0 MiB" in line
    assert [e for e in err.splitlines() if "no fleet credential" not in e] == []  # no capacity warning
    line, err = restart("--capacity", "20G")
    assert "of 20.0 GiB" in line
    assert f"shoal: WARNING: cache {first.cache_dir}: capacity changed from 300.0 MiB to 20.0 GiB\n" in err


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
    assert f"got sha256:{hashlib.sha256(data).hexdigest()}" in wrong.stderr  # the mismatch names what it got
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
    # A digest is what the file must match, so it is whole: a prefix (as cache ids may be) is refused.
    with pytest.raises(RemoteError, match="sha256: 64"):
        DaemonClient(node.socket).get("http://127.0.0.1:9/elsewhere.bin", tmp_path / "c.bin", digest=right[:20])
    assert not (tmp_path / "c.bin").exists()


def test_a_digest_of_an_algorithm_the_cache_does_not_keep_is_checked_on_a_fetch_and_on_a_hit(
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    """The cache keeps BLAKE3 and SHA-256; an md5 (``--hash``, minion's spelling) or sha1 is checked by the
    download that fetches the file and, on a hit, by hashing the cached file: a wrong one is exit 5 with
    nothing placed, and the cached file stays for the requests that name it rightly."""
    o = origin()
    data = make_file(o.root / "file.bin", 2 * MiB)
    node = daemon()
    url = o.url("file.bin")
    md5 = "md5:" + hashlib.md5(data).hexdigest()
    wrong = node.get(url, tmp_path / "wrong.bin", "--hash", "md5:" + "0" * 32)
    assert wrong.returncode == 5, wrong.stderr
    assert f"got {md5}" in wrong.stderr
    assert not (tmp_path / "wrong.bin").exists()
    assert node.objects() == [] and not list((node.cache_dir / "staging").iterdir())
    fetched = node.get(url, tmp_path / "a.bin", "--hash", md5.upper())
    assert fetched.returncode == 0, fetched.stderr
    assert "cached by the daemon" in fetched.stderr and (tmp_path / "a.bin").read_bytes() == data
    sent = o.bytes_sent()
    sha1 = "sha1:" + hashlib.sha1(data).hexdigest()
    hit = node.get(url, tmp_path / "b.bin", "--digest", sha1)
    assert hit.returncode == 0, hit.stderr
    assert "cache hit" in hit.stderr and o.bytes_sent() == sent
    assert (tmp_path / "b.bin").read_bytes() == data
    # A hit that fails is fetched again, and the origin's bytes fail it too: nothing placed, the cache kept.
    missed = node.get(url, tmp_path / "c.bin", "--digest", "sha1:" + "f" * 40)
    assert missed.returncode == 5, missed.stderr
    assert f"got {sha1}" in missed.stderr
    assert not (tmp_path / "c.bin").exists()
    assert len(node.objects()) == 1
