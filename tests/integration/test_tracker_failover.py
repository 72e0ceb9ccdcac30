"""Peers, daemons and ``shoal pool`` given several trackers (``--tracker URL1,URL2``): a tracker that does not
answer is passed over at once for the next (core.tracker_choice), in real processes. The quick tests put
a refusing port first and one SQLite tracker second; the cluster test SIGKILLs the tracker a download was
talking to, on PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from aiohttp import web
from fastbencode import bdecode

from shoal.core.errors import TrackerBusy, TrackerUnavailable
from shoal.core.ids import task_id_for_url
from shoal.core.messages import AnnounceRequest
from shoal.http.listen import listen
from shoal.peer.tracker_client import TrackerClient
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_daemon, start_seeder
from shoal.testing.sockets import refusing_port
from tests.integration.conftest import Daemon, Origin, run_get, sha256, task_summary
from tests.integration.test_cli_errors import one_error_line, run_shoal
from tests.integration.test_swarm import wait_for_file
from tests.integration.test_tracker_cluster import owner_of, pg_url, start_cluster

__all__ = ["pg_url"]  # a fixture of the cluster tests, used here too

SIZE = 8 << 20  # 32 pieces of 256 KiB


@pytest.fixture
def dead_url() -> Iterator[str]:
    """The base URL of a tracker that is down: a port from the kernel that refuses connections."""
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}"


def failovers(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "does not answer" in line]


def test_a_get_passes_over_a_tracker_that_is_down(
    tmp_path: Path, tracker: Callable[..., Service], origin: Callable[..., Origin], make_file, dead_url: str
) -> None:
    src = origin()
    make_file(src.root / "f.bin", 1 << 20)
    t = tracker()
    out = tmp_path / "f.bin"
    result = run_get(src.url("f.bin"), "-o", str(out), "--tracker", f"{dead_url},{t.url}", "--upload-time", "0")
    assert result.returncode == 0, result.stderr
    assert sha256(out) == sha256(src.root / "f.bin")
    # The download went through the second tracker: it knows the task and leased the pieces.
    assert task_summary(t, task_id_for_url(src.url("f.bin")))["task_id"] == task_id_for_url(src.url("f.bin"))
    # One line when it moved on, and none after: every later call went straight to the tracker that answered.
    (line,) = failovers(result.stderr)
    assert line.startswith(f"shoal: WARNING: tracker {dead_url} does not answer (")
    assert line.endswith(f"; asking {t.url} from now on")


def test_every_tracker_down_is_exit_code_3_naming_them_all(
    tmp_path: Path, origin: Callable[..., Origin], make_file, dead_url: str
) -> None:
    src = origin()
    make_file(src.root / "f.bin", 1 << 20)
    with refusing_port() as other:
        trackers = f"{dead_url},http://127.0.0.1:{other}"
        result = run_get(src.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--tracker", trackers)
        assert result.returncode == 3, result.stderr
        line = one_error_line(result)
        assert f"no tracker can be reached ({dead_url}: " in line and f"; http://127.0.0.1:{other}: " in line
        assert not (tmp_path / "f.bin").exists()
        # --fallback takes the origin when no tracker answers, as it did with one.
        fallback = run_get(src.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--tracker", trackers, "--fallback")
    assert fallback.returncode == 0, fallback.stderr
    assert sha256(tmp_path / "f.bin") == sha256(src.root / "f.bin")


def test_a_daemon_passes_over_a_tracker_that_is_down(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file,
    services: list[Service],
    dead_url: str,
) -> None:
    src = origin()
    make_file(src.root / "f.bin", 1 << 20)
    t = tracker()
    cache, sock = tmp_path / "node" / "cache", tmp_path / "node" / "daemon.sock"
    services.append(start_daemon(cache, sock, tracker=f"{dead_url},{t.url}"))
    result = Daemon(services[-1], cache, sock).get(src.url("f.bin"), tmp_path / "f.bin")
    assert result.returncode == 0, result.stderr
    assert sha256(tmp_path / "f.bin") == sha256(src.root / "f.bin")
    # The daemon seeds what it cached, announcing to the tracker that answers.
    task_id = task_id_for_url(src.url("f.bin"))
    wait_until(lambda: len(task_summary(t, task_id)["peers"]) == 1, "the daemon seeding at the second tracker")  # type: ignore[arg-type]


def test_shoal_pool_passes_over_a_tracker_that_is_down(tracker: Callable[..., Service], dead_url: str) -> None:
    t = tracker()
    created = run_shoal("pool", "--tracker", f"{dead_url},{t.url}", "create", "lan")
    assert created.returncode == 0, created.stderr
    listed = run_shoal("pool", "--tracker", f"{t.url},{dead_url}", "members", "lan")
    assert listed.returncode == 0, listed.stderr


def test_a_seeder_registers_with_the_tracker_that_answers(
    tmp_path: Path, tracker: Callable[..., Service], services: list[Service], dead_url: str
) -> None:
    """The seeder's Shoal and BitTorrent announces go to the second tracker when the first is down, and its
    torrents list both, one tier each in order (BEP 12)."""
    t = tracker()
    watched = tmp_path / "releases"
    watched.mkdir()
    (watched / "app.bin").write_bytes(os.urandom(300_000))
    seeder = start_seeder(watched, state_dir=tmp_path / "state", extra=("--tracker", f"{dead_url},{t.url}"))
    services.append(seeder)

    def published() -> dict[str, Any] | None:
        with urllib.request.urlopen(f"{seeder.url}/v1/files") as reply:
            return next(iter(json.load(reply)["files"]), None)

    entry = wait_until(published, "the file published")
    wait_until(lambda: task_summary(t, entry["task_id"]), "the content task registered at the second tracker")
    info_hash = bytes.fromhex(entry["info_hash"])

    def seeds() -> int:
        with urllib.request.urlopen(f"{t.url}/scrape?info_hash={quote_from_bytes(info_hash)}") as reply:
            files = bdecode(reply.read())[b"files"]
        return int(files[info_hash][b"complete"]) if info_hash in files else 0

    wait_until(lambda: seeds() == 1, "the seeder in the second tracker's BitTorrent swarm")
    with urllib.request.urlopen(f"{seeder.url}/serve?releases/app.bin") as reply:
        meta = bdecode(reply.read())
    assert meta[b"announce"] == f"{dead_url}/announce".encode()
    assert meta[b"announce-list"] == [[f"{dead_url}/announce".encode()], [f"{t.url}/announce".encode()]]


async def test_the_client_stays_with_a_busy_tracker_it_moved_to(dead_url: str, caplog) -> None:
    """A tracker that sheds load is up: the client moved to it, says so once, and asks it (not the one that
    is down) from then on; a 4xx is that tracker's answer and moves nothing."""
    asked: list[str] = []

    async def busy(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path.endswith("/hashes"):
            return web.json_response({"error": "no such task"}, status=404)
        return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_route("*", "/v1/tasks/{task_id}/{what}", busy)
    runner, port = await listen(app, "127.0.0.1", 0)
    up = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            client = TrackerClient(f"{dead_url},{up}", session)
            request = AnnounceRequest(peer_id="p", secret="s", url="http://origin/f", port=1)
            with caplog.at_level(logging.WARNING, logger="shoal.http.tracker_failover"):
                with pytest.raises(TrackerBusy):
                    await client.announce("t" * 64, request, wait_busy=False)
                with pytest.raises(TrackerBusy):
                    await client.announce("t" * 64, request, wait_busy=False)
                with pytest.raises(TrackerUnavailable, match="404"):
                    await client.hashes("t" * 64, 0)
    finally:
        await runner.cleanup()
    assert len(asked) == 3, "each call reached the tracker that is up"
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"tracker {dead_url} does not answer (") and line.endswith(f"); asking {up} from now on")
    assert "cannot reach the tracker at" not in line, "the URL is named once"
    assert client.choice.urls[client.choice.current] == up


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["get", "http://origin/f", "--tracker", ","], "an empty tracker URL in ','"),
        (["get", "http://origin/f", "--tracker", "ftp://x"], "'ftp://x' is not a tracker's base URL"),
        (["get", "http://origin/f", "--tracker", "http://t1:6969,,http://t2:6969"], "an empty tracker URL"),
        (["daemon", "--cache-dir", "{tmp}", "--tracker", "http://t1:6969,ftp://x"], "'ftp://x'"),
        (["seed", "--tracker", ",", "{tmp}"], "an empty tracker URL"),
        (["pool", "--tracker", "http://t1:6969,ftp://t2", "members", "lan"], "'ftp://t2' is not a tracker's base URL"),
    ],
    ids=["get-comma", "get-ftp", "get-empty-entry", "daemon", "seed", "pool"],
)
def test_a_bad_tracker_list_is_a_usage_error(args: list[str], says: str, tmp_path: Path) -> None:
    result = run_shoal(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "--tracker" in line and says in line


def test_a_bad_shoal_tracker_variable_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        shoal_argv("get", "http://origin/f", "-o", str(tmp_path / "f")),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SHOAL_TRACKER": "http://t1:6969,"},
    )
    assert result.returncode == 2, result.stderr
    assert "an empty tracker URL in 'http://t1:6969,'" in one_error_line(result)


def test_a_get_goes_on_when_its_tracker_is_killed(
    tmp_path: Path, tracker, origin: Callable[..., Origin], make_file, spawn_get, pg_url: str
) -> None:
    """Two trackers in a cluster; two peers list first the one that owns the task, which is SIGKILLed once
    the swarm is under way. The peers move to the other tracker at their next call; it forwards to the dead
    owner (503, waited out) until the owner's row expires and the task is its own; every download completes
    with the file leaving the origin about once."""
    src: Origin = origin("--rate", "1M")  # 8 s for the file: the kill lands mid-download
    make_file(src.root / "k.bin", SIZE)
    url = src.url("k.bin")
    task_id = task_id_for_url(url)
    by_id = start_cluster(tracker, pg_url, 2)
    some = next(iter(by_id.values()))
    doomed = by_id[owner_of(task_id, some)]
    (survivor,) = (t for t in by_id.values() if t is not doomed)
    trackers = f"{doomed.url},{survivor.url}"
    procs = [
        spawn_get(url, "-o", str(tmp_path / f"p{i}.bin"), "--tracker", trackers, "--upload-time", "30")
        for i in range(2)
    ]
    wait_until(lambda: src.bytes_sent() >= SIZE // 4, "a quarter of the file from the origin", timeout=60)
    assert src.bytes_sent() < SIZE, "the kill lands mid-download"
    doomed.kill()
    for i, proc in enumerate(procs):
        wait_for_file(tmp_path / f"p{i}.bin", proc, timeout=120)
        assert sha256(tmp_path / f"p{i}.bin") == sha256(src.root / "k.bin")
    wait_until(lambda: len(task_summary(survivor, task_id)["peers"]) == 2, "both peers at the survivor")  # type: ignore[arg-type]
    assert src.bytes_sent() <= 1.05 * SIZE
    for proc in procs:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        (line,) = failovers(stderr)
        assert f"tracker {doomed.url} does not answer" in line and f"asking {survivor.url} from now on" in line
