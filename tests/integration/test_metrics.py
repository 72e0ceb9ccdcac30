"""/metrics of real processes, scraped and parsed with prometheus-client's own parser while they work: the
tracker during a swarm of `shoal get` peers, the daemons' piece servers, the seeder, the mirror manager. The
figures must move while the work goes on and end at the totals the work implies."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.core.ids import task_id_for_url
from shoal.core.manifest import piece_length_for
from shoal.testing.metrics import Scrape, scrape
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_seeder, start_tracker
from tests.integration.conftest import Daemon, Origin, run_get, task_summary
from tests.integration.test_mirror import Mirror, job_is
from tests.integration.test_pools import Pool, make_pool, member, wait_for  # noqa: F401 - fixtures
from tests.integration.test_swarm import wait_for_file

MiB = 1 << 20
SIZE = 12 * MiB
SOURCES = ("origin", "rack", "site", "elsewhere", "unlabelled")


def label_values(scraped: Scrape) -> set[str]:
    return {value for (_, labels) in scraped.samples for _, value in labels}


def test_the_tracker_counts_a_swarm_while_it_runs_and_ends_at_its_totals(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    spawn_get: Callable[..., subprocess.Popen[str]],
) -> None:
    src = origin("--rate", "6M")  # the origin is slow enough for the swarm to be seen at work
    data = make_file(src.root / "m.bin", SIZE)
    url = src.url("m.bin")
    t = tracker(extra=("--audit-share", "0"))  # no spot checks: every piece's hash is reported exactly once
    before = scrape(t.url)
    assert before.types["shoal_tracker_announces"] == "counter"
    assert before.types["shoal_tracker_announce_duration_seconds"] == "histogram"
    assert before.total("shoal_tracker_announces_total") == 0

    racks = {"a": "r1", "b": "r1", "c": "r2"}
    peers = {
        name: spawn_get(
            url,
            "-o",
            str(tmp_path / f"{name}.bin"),
            "--tracker",
            t.url,
            "--upload-time",
            "120",
            "--site",
            "s1",
            "--rack",
            rack,
        )
        for name, rack in racks.items()
    }

    def at_work() -> Scrape | None:
        # An announce's peer is in memory before its reply (it waits for the store's commit), and is counted
        # as answered with the reply: a scrape between the two sees the peer and not yet its announce.
        now = scrape(t.url)
        counted = now.value("shoal_tracker_announces_total", kind="json", outcome="ok") >= 1
        return (
            now if now.value("shoal_tracker_tasks") == 1 and now.total("shoal_tracker_peers") >= 1 and counted else None
        )

    during = wait_until(at_work, "the swarm's peers and their announces in the tracker's metrics", timeout=60)
    for name, proc in peers.items():
        wait_for_file(tmp_path / f"{name}.bin", proc, timeout=120)
        assert (tmp_path / f"{name}.bin").read_bytes() == data

    # Every peer announced its totals on completing: the tracker's sum by source is three files' worth.
    def all_received() -> Scrape | None:
        now = scrape(t.url)
        return now if now.total("shoal_tracker_received_bytes_total") == 3 * SIZE else None

    after = wait_until(all_received, "every peer's bytes in the tracker's metrics", timeout=60)
    received = {s: after.value("shoal_tracker_received_bytes_total", source=s) for s in SOURCES}
    # Each piece left the origin once, and crossed into the other rack once (from the origin or a peer).
    assert received["origin"] == SIZE
    assert received["origin"] + received["site"] == 2 * SIZE
    assert received["elsewhere"] == received["unlabelled"] == 0
    assert src.bytes_sent() <= SIZE + 3 * 1024  # the origin agrees (plus its few probes)
    pieces = SIZE // piece_length_for(SIZE)
    assert after.value("shoal_tracker_hash_reports_total", outcome="taken") == pieces
    assert after.value("shoal_tracker_hash_reports_total", outcome="rejected") == 0
    assert 1 <= after.value("shoal_tracker_leases_granted_total") <= pieces
    assert after.value("shoal_tracker_generations_started_total") == 0
    assert after.value("shoal_tracker_peers", role="seed") == 3
    assert after.value("shoal_tracker_peers", role="downloader") == 0
    ok = after.value("shoal_tracker_announces_total", kind="json", outcome="ok")
    assert ok > during.value("shoal_tracker_announces_total", kind="json", outcome="ok")
    # Every announce is timed: the histogram counted as many as the counter, all inside its last bucket.
    answered = after.total("shoal_tracker_announces_total", kind="json")
    assert after.value("shoal_tracker_announce_duration_seconds_count", kind="json") == answered
    assert after.value("shoal_tracker_announce_duration_seconds_bucket", kind="json", le="+Inf") == answered
    # No label names the task or a peer, nor the URL.
    task = task_id_for_url(url)
    assert not [v for v in label_values(after) if task[:16] in v or "m.bin" in v or "127.0.0.1" in v]


def test_metrics_need_no_fleet_token_and_can_be_turned_off(tmp_path: Path, tracker: Callable[..., Service]) -> None:
    token = tmp_path / "fleet.token"
    token.write_text("f" * 64 + "\n")
    token.chmod(0o600)
    guarded = tracker(extra=("--fleet-token-file", str(token)))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{guarded.url}/v1/cluster")
    refused.value.close()
    assert refused.value.code == 401  # the API is guarded...
    assert scrape(guarded.url).value("shoal_tracker_tasks") == 0  # ...and /metrics is not
    off = tracker(db=f"sqlite:///{tmp_path / 'off.db'}", extra=("--no-metrics",))
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{off.url}/metrics")
    missing.value.close()
    assert missing.value.code == 404


def test_daemons_count_their_cache_and_the_bytes_they_take_and_serve(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    make_file(o.root / "one.bin", 6 * MiB)
    make_file(o.root / "two.bin", 6 * MiB)
    t = tracker()
    first = daemon(t, name="first")
    second = daemon(t, name="second", capacity="8M")  # room for one of the two files
    empty = scrape(first.service.url)
    assert empty.value("shoal_cache_used_bytes") == 0 and empty.value("shoal_cache_misses_total") == 0
    assert empty.value("shoal_cache_capacity_bytes") == 1 << 30

    assert first.get(o.url("one.bin"), tmp_path / "a.bin").returncode == 0  # a miss: from the origin
    assert first.get(o.url("one.bin"), tmp_path / "b.bin").returncode == 0  # a hit
    fetched = scrape(first.service.url)
    assert fetched.value("shoal_cache_misses_total") == 1 and fetched.value("shoal_cache_hits_total") == 1
    assert fetched.value("shoal_cache_used_bytes") == 6 * MiB and fetched.value("shoal_cache_files") == 1
    assert fetched.value("shoal_cache_reserved_bytes") == 0
    assert fetched.value("shoal_peer_received_bytes_total", source="origin") == 6 * MiB
    assert fetched.total("shoal_peer_received_bytes_total") == 6 * MiB
    assert fetched.value("shoal_peer_served_bytes_total") == 0

    # Once the tracker knows the first daemon holds every piece, the second takes them all from it.
    task = task_summary(t, task_id_for_url(o.url("one.bin")))
    wait_until(
        lambda: [p["pieces"] for p in task_summary(t, task_id_for_url(o.url("one.bin")))["peers"]] == [task["pieces"]],
        "the first daemon seeding the whole file",
    )
    result = second.get(o.url("one.bin"), tmp_path / "c.bin")
    assert result.returncode == 0, result.stderr
    taker = scrape(second.service.url)
    assert taker.value("shoal_peer_received_bytes_total", source="origin") == 0
    assert taker.value("shoal_peer_received_bytes_total", source="unlabelled") == 6 * MiB  # no rack labels
    wait_until(
        lambda: scrape(first.service.url).value("shoal_peer_served_bytes_total") == 6 * MiB,
        "the first daemon's piece server counting what it sent",
    )
    # A second file does not fit beside the first in the second's cache: the first is evicted.
    assert second.get(o.url("two.bin"), tmp_path / "d.bin").returncode == 0
    full = scrape(second.service.url)
    assert full.value("shoal_cache_evictions_total") == 1
    assert full.value("shoal_cache_files") == 1 and full.value("shoal_cache_used_bytes") == 6 * MiB
    assert full.value("shoal_cache_misses_total") == 2


def test_the_seeder_counts_what_it_publishes_and_hashes(tmp_path: Path) -> None:
    watched = tmp_path / "pub"
    watched.mkdir()
    (watched / "a.bin").write_bytes(b"a" * (3 * MiB))
    (watched / "b.bin").write_bytes(b"b" * 1000)
    seeder = start_seeder(watched, state_dir=tmp_path / "state")
    try:

        def published() -> Scrape | None:
            now = scrape(seeder.url)
            return now if now.value("shoal_seeder_files_published") == 2 else None

        done = wait_until(published, "both files published in the seeder's metrics", timeout=60)
        assert done.value("shoal_seeder_files_pending") == 0
        assert done.value("shoal_seeder_published_bytes") == 3 * MiB + 1000
        assert done.value("shoal_seeder_hashed_bytes_total") == 3 * MiB + 1000
        # The embedded tracker reports through the same /metrics.
        assert done.value("shoal_tracker_announces_inflight_limit") > 0
        (watched / "c.bin").write_bytes(b"c" * 5000)
        wait_until(
            lambda: scrape(seeder.url).value("shoal_seeder_hashed_bytes_total") == 3 * MiB + 6000,
            "the new file hashed",
            timeout=60,
        )
    finally:
        seeder.stop()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    made = Mirror(tmp_path)
    yield made
    made.close()


def test_the_mirror_manager_reports_each_jobs_status_last_success_and_duration(mirror: Mirror) -> None:
    manager = mirror.manager(
        """
[[jobs]]
name = "fine"
provider = "command"
upstream = "local"
command = "echo data > data.txt"
interval = "1h"

[[jobs]]
name = "broken"
provider = "command"
upstream = "local"
command = "exit 3"
interval = "1h"
retries = 1
"""
    )
    idle = scrape(manager.url)  # no token needed, though the manager has one
    assert idle.value("shoal_mirror_workers") == 0
    assert idle.total("shoal_mirror_jobs") == 2
    mirror.worker(manager, "w1")
    fine = wait_until(lambda: job_is(manager, "fine", status="success"), "the job's success")
    wait_until(lambda: job_is(manager, "broken", status="failed"), "the other job's failure")
    ran = scrape(manager.url)
    assert ran.value("shoal_mirror_jobs", status="success") == 1
    assert ran.value("shoal_mirror_jobs", status="failed") == 1
    assert ran.value("shoal_mirror_workers") == 1
    assert ran.value("shoal_mirror_job_last_success_timestamp_seconds", job="fine") == pytest.approx(
        fine["last_update"]
    )
    took = fine["last_ended"] - fine["last_started"]
    assert ran.value("shoal_mirror_job_last_duration_seconds", job="fine") == pytest.approx(took)
    assert ran.value("shoal_mirror_job_size_bytes", job="fine") == fine["size"] > 0
    assert ("shoal_mirror_job_last_success_timestamp_seconds", frozenset({("job", "broken")})) not in ran.samples
    assert ran.value("shoal_mirror_job_last_duration_seconds", job="broken") >= 0


# -- shoal get --stats-json ---------------------------------------------------------------------------


def figures(path: Path) -> dict[str, Any]:
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_get_writes_its_figures_at_exit_whether_it_succeeds_or_fails(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    make_file(o.root / "f.bin", 3 * MiB)
    t = tracker()
    stats = tmp_path / "stats" / "get.json"
    stats.parent.mkdir()
    done = run_get(
        o.url("f.bin"),
        "-o",
        str(tmp_path / "f.bin"),
        "--tracker",
        t.url,
        "--upload-time",
        "0",
        "--no-daemon",
        "--stats-json",
        str(stats),
    )
    assert done.returncode == 0, done.stderr
    got = figures(stats)
    pieces = 3 * MiB // piece_length_for(3 * MiB)
    assert got["exit_status"] == 0 and got["path"] == str(tmp_path / "f.bin") and not got["through_daemon"]
    assert got["size"] == got["done"] == got["bytes_from_origin"] == 3 * MiB and got["bytes_from_peers"] == 0
    assert got["bytes_by_source"] == {"origin": 3 * MiB, "rack": 0, "site": 0, "elsewhere": 0, "unlabelled": 0}
    assert got["pieces"] == got["pieces_done"] == pieces
    assert got["seconds"] > 0 and got["rate"] == pytest.approx(3 * MiB / got["seconds"], rel=0.01)

    # A second peer takes the file from the first (still serving it); then a get of a missing file fails.
    serving = spawn_serving(o, t, tmp_path)
    try:
        peer = run_get(
            o.url("f.bin"),
            "-o",
            str(tmp_path / "g.bin"),
            "--tracker",
            t.url,
            "--upload-time",
            "0",
            "--no-daemon",
            "--stats-json",
            str(stats),
        )
        assert peer.returncode == 0, peer.stderr
        from_peer = figures(stats)
        assert from_peer["bytes_from_peers"] == 3 * MiB and from_peer["bytes_by_source"]["unlabelled"] == 3 * MiB
    finally:
        serving.kill()
        serving.communicate()
    missing = run_get(o.url("nope.bin"), "-o", str(tmp_path / "n.bin"), "--no-daemon", "--stats-json", str(stats))
    assert missing.returncode == 4, missing.stderr
    failed = figures(stats)
    assert failed["exit_status"] == 4 and failed["path"] is None and failed["done"] == 0
    assert not (tmp_path / "n.bin").exists()


def spawn_serving(o: Origin, t: Service, tmp_path: Path) -> subprocess.Popen[str]:
    """A `shoal get` that holds the whole file and serves it to peers for a long while."""
    proc = subprocess.Popen(
        shoal_argv(
            "get",
            o.url("f.bin"),
            "-o",
            str(tmp_path / "s.bin"),
            "--tracker",
            t.url,
            "--upload-time",
            "300",
            "--no-daemon",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_file(tmp_path / "s.bin", proc)
    return proc


def test_get_through_the_daemon_writes_its_figures_and_a_bad_path_is_a_usage_error(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin()
    make_file(o.root / "f.bin", 2 * MiB)
    node = daemon(tracker())
    stats = tmp_path / "get.json"
    assert node.get(o.url("f.bin"), tmp_path / "a.bin", "--stats-json", str(stats)).returncode == 0
    first = figures(stats)
    assert first["through_daemon"] and not first["cache_hit"] and first["exit_status"] == 0
    assert first["bytes_from_origin"] == first["size"] == 2 * MiB and first["bytes_by_source"] is None
    assert node.get(o.url("f.bin"), tmp_path / "b.bin", "--stats-json", str(stats)).returncode == 0
    second = figures(stats)
    assert second["cache_hit"] and second["bytes_from_origin"] == 0 and second["path"] == str(tmp_path / "b.bin")
    bad = node.get(o.url("f.bin"), tmp_path / "c.bin", "--stats-json", str(tmp_path / "no-such-dir" / "s.json"))
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "--stats-json" in bad.stderr
    assert not (tmp_path / "c.bin").exists()


# -- the tracker's access log -----------------------------------------------------------------------------


def test_the_access_log_is_off_by_default_and_one_json_line_per_request_with_the_flag(tmp_path: Path) -> None:
    logs = {}
    for name, flags in {"quiet": (), "logged": ("--access-log",)}.items():
        logs[name] = tmp_path / f"{name}.log"
        db = f"sqlite:///{tmp_path / f'{name}.db'}"
        t = start_tracker(db, extra=(*flags, "--log-format", "json", "--log-file", str(logs[name])))
        try:
            for path in ("/v1/health", "/metrics"):
                with urllib.request.urlopen(f"{t.url}{path}", timeout=30) as reply:
                    assert reply.status == 200
        finally:
            t.stop()  # the log is whole once the process has ended
    lines = {name: [json.loads(line) for line in log.read_text().splitlines()] for name, log in logs.items()}
    assert [line for line in lines["quiet"] if line["logger"] == "aiohttp.access"] == []
    access = [line for line in lines["logged"] if line["logger"] == "aiohttp.access"]
    assert [line["first_request_line"] for line in access] == ["GET /v1/health HTTP/1.1", "GET /metrics HTTP/1.1"]
    assert all(line["level"] == "info" and line["response_status"] == 200 for line in access)
    assert all(line["remote_address"] == "127.0.0.1" and line["response_size"] > 0 for line in access)
    # The request's headers stay an object, as a log shipper reads them.
    assert all(line["request_header"]["User-Agent"].startswith("Python-urllib/") for line in access)


def test_the_tracker_counts_pool_jobs_and_their_members_states(
    make_pool: Callable[..., Pool],  # noqa: F811
    member: Callable[..., Service],  # noqa: F811
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin("--rate", "4M")  # slow enough for the push to be seen running
    make_file(o.root / "p.bin", 8 * MiB)
    pool = make_pool()
    for name in ("m1", "m2"):
        member(pool, name)
    wait_for(lambda: scrape(pool.tracker.url).value("shoal_pool_members") == 2, what="2 members in the metrics")
    assert scrape(pool.tracker.url).total("shoal_pool_jobs") == 0
    job_id = pool.push(o.url("p.bin"))

    def running() -> Scrape | None:
        now = scrape(pool.tracker.url)
        return now if now.value("shoal_pool_assignments", state="running") >= 1 else None

    during = wait_for(running, what="a member running the push, in the metrics")
    assert during.value("shoal_pool_jobs", status="running") == 1
    assert during.total("shoal_pool_assignments") == 2  # one part for each member
    pool.wait_job(job_id, "complete")
    after = scrape(pool.tracker.url)
    assert after.value("shoal_pool_jobs", status="complete") == 1
    assert after.value("shoal_pool_jobs", status="running") == 0
    assert after.total("shoal_pool_assignments") == 0  # only running jobs' parts are counted
    assert after.value("shoal_pool_members") == 2
