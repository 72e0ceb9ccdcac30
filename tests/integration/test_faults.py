"""Faults with real processes: dead peers, corrupt peers, a changing origin, a restarted tracker, an origin
that ignores Range."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from shoal.core.ids import task_id_for_url
from shoal.testing.poll import wait_until as wait_for
from shoal.testing.processes import start_tracker
from shoal.testing.sockets import listening_ports
from tests.integration.conftest import no_partial_files, rewritten_after_an_interrupted_run, run_get, task_summary


def test_peer_killed_mid_transfer(tmp_path, tracker, origin, make_file, spawn_get):
    size = 16 << 20
    src = origin("--rate", "4M")
    data = make_file(src.root / "k.bin", size)
    t = tracker(peer_ttl=2.0, interval=0.5)
    url = src.url("k.bin")
    victim = spawn_get(
        url,
        "-o",
        str(tmp_path / "victim.bin"),
        "--tracker",
        t.url,
        "--upload-time",
        "30",
        "--listen",
        "127.0.0.1:0",
    )
    # The port its piece server got from the kernel: how the tracker's list of peers names the victim.
    (port,) = wait_for(lambda: listening_ports(victim.pid), what="the victim's piece server")
    others = [
        spawn_get(url, "-o", str(tmp_path / f"o{i}.bin"), "--tracker", t.url, "--upload-time", "5") for i in range(2)
    ]

    def victim_row() -> dict | None:
        summary = task_summary_or_none(t, url) or {"peers": []}
        return next((p for p in summary["peers"] if p["port"] == port), None)

    # Kill the victim once it has fetched part of the file and origin leases are out.
    wait_for(
        lambda: (row := victim_row()) is not None and row["pieces"] > 2 and task_summary_or_none(t, url)["leases"] > 0,
        what="the victim holding pieces while leases are out",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    wait_for(lambda: victim_row() is None, what="the tracker dropping the silent victim")
    for proc in others:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert (tmp_path / f"o{others.index(proc)}.bin").read_bytes() == data
    assert not (tmp_path / "victim.bin").exists()
    # The victim's leases went to the others: the file left the origin about once, not once more per peer.
    assert src.bytes_sent() <= size * 1.25


def test_corrupt_peer_is_caught_and_avoided(tmp_path, tracker, origin, make_file, spawn_get):
    size = 4 << 20
    src = origin()
    data = make_file(src.root / "c.bin", size)
    t = tracker()
    url = src.url("c.bin")
    seed_path = tmp_path / "seed.bin"
    seeder = spawn_get(url, "-o", str(seed_path), "--tracker", t.url, "--upload-time", "600")
    wait_for(seed_path.exists, what="the seeder's download")
    # Bit rot on the seeder's disk: it now serves bytes that fail their piece hash. Rot leaves the file's
    # times as they were (a file rewritten is withdrawn from the swarm: peer.engine, seeding from a path).
    before = seed_path.stat()
    with open(seed_path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in f.read(4096)))
    os.utime(seed_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    out = tmp_path / "c.bin"
    result = run_get(url, "-o", str(out), "--tracker", t.url, "--upload-time", "0", "-v")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert "corrupt" in result.stderr
    peers = task_summary(t, task_id_for_url(url))["peers"]
    # One host's accusation bans no one for everyone (README, "Trust model")...
    assert peers and not any(p["bad"] for p in peers)  # type: ignore[union-attr,index]
    # ...but the accuser's host avoids it at once: a later download there is not handed the bad peer, whose
    # other pieces are good, so it takes everything from the origin (the download before it has left).
    later = run_get(url, "-o", str(tmp_path / "later.bin"), "--tracker", t.url, "--upload-time", "0")
    assert later.returncode == 0, later.stderr
    assert (tmp_path / "later.bin").read_bytes() == data
    assert "corrupt" not in later.stderr.replace(str(tmp_path), "")  # (the test's directory is named so)
    assert re.search(r"origin 4\.0 MiB, peers 0 B", later.stderr), later.stderr
    seeder.kill()


@pytest.mark.parametrize("grows", [0, 1 << 20], ids=["new-etag", "new-length"])
def test_origin_changes_mid_swarm(tmp_path, tracker, origin, make_file, spawn_get, grows):
    size = 8 << 20
    src = origin("--rate", "2M")
    make_file(src.root / "v.bin", size)
    t = tracker()
    url = src.url("v.bin")
    peers = [
        spawn_get(url, "-o", str(tmp_path / f"v{i}.bin"), "--tracker", t.url, "--upload-time", "2", "-v")
        for i in range(2)
    ]
    # Both peers have joined (they saw the old version) and pieces of it are out, before the file changes: a
    # peer that started after the change would just fetch the new version, with nothing to tell.
    wait_for(
        lambda: (
            len((summary := task_summary_or_none(t, url) or {}).get("peers", [])) == 2
            and summary.get("hashed_pieces", 0) >= 3
        ),
        what="both peers joined and first pieces",
    )
    new = os.urandom(size + grows)
    tmp = src.root / "v.bin.tmp"
    tmp.write_bytes(new)
    os.replace(tmp, src.root / "v.bin")
    for i, proc in enumerate(peers):
        _, err = proc.communicate(timeout=120)
        out = tmp_path / f"v{i}.bin"
        if proc.returncode == 0:
            # Restarted cleanly: the whole file is the new version, never a mix.
            assert out.read_bytes() == new, "a mix of two versions"
            assert "changed" in err
        else:
            assert proc.returncode == 4, err
            assert "changed" in err
            assert not out.exists()
    assert task_summary(t, task_id_for_url(url))["generation"] >= 2
    assert no_partial_files(tmp_path)


def test_a_resumed_file_that_the_tracker_knows_as_other_bytes_is_fetched_again(tmp_path, tracker, origin, make_file):
    """The origin's bytes changed under an unchanged identity (the file rewritten with its old mtime, so the
    same ETag and Last-Modified) between an interrupted run and its rerun. The rerun finds every piece of
    the old bytes verified on disk, so its last report to the tracker is its first: it conflicts with the
    hashes the tracker learnt of the new bytes, and the old file must not be renamed into place."""
    size = 2 << 20
    src = origin()
    path = src.root / "same.bin"
    make_file(path, size)
    url = src.url("same.bin")
    new = rewritten_after_an_interrupted_run(url, path, tmp_path / "out.bin")
    t = tracker()
    other = run_get(url, "-o", str(tmp_path / "other.bin"), "--tracker", t.url, "--upload-time", "0")
    assert other.returncode == 0, other.stderr  # the tracker now holds the new bytes' hashes

    rerun = run_get(url, "-o", str(tmp_path / "out.bin"), "--tracker", t.url, "--upload-time", "0")
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "out.bin").read_bytes() == new
    assert "changed" in rerun.stderr  # it started again instead of placing the old bytes
    assert no_partial_files(tmp_path)


def task_summary_or_none(t, url):
    try:
        return task_summary(t, task_id_for_url(url))
    except OSError:
        return None


def test_the_swarm_stands_in_for_an_origin_that_is_down_but_not_for_one_that_refuses(
    tmp_path, tracker, origin, make_file, spawn_get
):
    t = tracker()
    src = origin()
    data = make_file(src.root / "s.bin", 2 << 20)
    url = src.url("s.bin")
    seeder = spawn_get(url, "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "120")
    wait_for(lambda: (tmp_path / "seed.bin").exists(), what="the seeding peer's file")
    # The origin now refuses the file (404: removed). That is its answer about the file: the swarm's copy
    # must not override it.
    (src.root / "s.bin").unlink()
    refused = run_get(url, "-o", str(tmp_path / "refused.bin"), "--tracker", t.url, "--upload-time", "0")
    assert refused.returncode == 4 and "404" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused.bin").exists()
    # The origin is down (no answer at all): the swarm's copy is used.
    src.service.kill()
    got = run_get(url, "-o", str(tmp_path / "got.bin"), "--tracker", t.url, "--upload-time", "0")
    assert got.returncode == 0, got.stderr
    assert "relying on the swarm's copy" in got.stderr
    assert (tmp_path / "got.bin").read_bytes() == data
    seeder.kill()


def test_tracker_restarted_mid_swarm(tmp_path, origin, make_file, spawn_get, services):
    """A tracker killed and restarted while every peer is fetching its leased pieces from the origin: the
    peers go on, the restarted tracker (which knows no peers until they announce) gives each its leases back
    through the pieces its announces say it is fetching, leases nothing afresh until they have all had time
    to announce, and the file leaves the origin once."""
    size = 12 << 20
    src = origin("--rate", "3M")
    data = make_file(src.root / "r.bin", size)
    db = f"sqlite:///{tmp_path / 'tracker.db'}"
    first = start_tracker(db)
    services.append(first)
    port = int(first.url.rsplit(":", 1)[1])
    url = src.url("r.bin")
    peers = [
        spawn_get(url, "-o", str(tmp_path / f"r{i}.bin"), "--tracker", first.url, "--upload-time", "3")
        for i in range(3)
    ]

    def mid_swarm() -> bool:
        # Every peer has joined (one whose joining announces meet the outage gives up, by design: pieces it
        # reported prove it is past them) and origin leases are out: pieces are on their way when it goes.
        summary = task_summary_or_none(first, url) or {}
        return (
            len(summary.get("peers", [])) == 3
            and all(p["pieces"] > 0 for p in summary["peers"])
            and summary["hashed_pieces"] < summary["pieces"]
            and summary["leases"] > 0
        )

    wait_for(mid_swarm, what="all three peers fetching from the origin")
    generation = task_summary(first, task_id_for_url(url))["generation"]
    first.kill()
    time.sleep(1.0)  # an outage, not a wait for something: peers see connection refused meanwhile
    restarted = time.time()
    second = start_tracker(db, port=port)
    services.append(second)

    # Each peer announces to the restarted tracker (and, once done and seeding, leaves it with a stopped
    # announce that removes its row): collect the peers seen, not a moment when all three are listed.
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while len(seen) < 3 and any(proc.poll() is None for proc in peers) and time.monotonic() < deadline:
        summary = task_summary_or_none(second, url) or {"peers": []}
        seen.update(p["peer_id"] for p in summary["peers"] if p["last_seen"] > restarted)
        time.sleep(0.05)
    for i, proc in enumerate(peers):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "changed" not in err  # they went on, not started again
        assert (tmp_path / f"r{i}.bin").read_bytes() == data
    assert len(seen) == 3, f"peers that announced to the restarted tracker: {seen}"
    assert task_summary(second, task_id_for_url(url))["generation"] == generation
    # The file left the origin once: no piece whose lease the restart lost was fetched by a second peer.
    assert src.bytes_sent() <= size * 1.05
    assert no_partial_files(tmp_path)


def test_a_tracker_stalled_past_the_peer_ttl_mid_swarm(tmp_path, tracker, origin, make_file, spawn_get):
    """A tracker whose process stalls (SIGSTOP) for longer than the peer TTL while the peers fetch their
    leased pieces from the origin. Its silence is not the peers': when it runs again it keeps them and their
    leases (core.deafness), takes the hashes they report of the pieces fetched meanwhile, and leases none of
    those pieces again, so the origin sends the file about once (before, every peer was counted gone and some
    pieces were fetched twice). And should a refused piece be leased to the peer holding it, that peer reports
    it again (core.pieces; before, the tracker waited for that report and the peer for the piece's hash, and
    the swarm stood still for good)."""
    size = 16 << 20
    src = origin("--rate", "2M")
    data = make_file(src.root / "z.bin", size)
    t = tracker()  # interval 0.5 s, peer TTL 2 s
    url = src.url("z.bin")
    peers = [
        spawn_get(url, "-o", str(tmp_path / f"z{i}.bin"), "--tracker", t.url, "--upload-time", "3") for i in range(3)
    ]

    def mid_swarm() -> bool:
        summary = task_summary_or_none(t, url) or {}
        return len(summary.get("peers", [])) == 3 and summary["leases"] > 0 and summary["hashed_pieces"] > 0

    wait_for(mid_swarm, what="all three peers fetching from the origin")
    os.kill(t.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(15.0)  # the stall: past the peer TTL and the peers' announce timeout (10 s); a fault, not a wait
    finally:
        os.kill(t.proc.pid, signal.SIGCONT)
    for i, proc in enumerate(peers):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert (tmp_path / f"z{i}.bin").read_bytes() == data
    assert no_partial_files(tmp_path)
    assert src.bytes_sent() <= size * 1.05


def test_origin_without_range_support(tmp_path, tracker, origin, make_file, spawn_get):
    size = 6 << 20
    src = origin("--no-range", "--rate", "8M")
    data = make_file(src.root / "n.bin", size)
    t = tracker()
    url = src.url("n.bin")
    first = spawn_get(url, "-o", str(tmp_path / "n0.bin"), "--tracker", t.url, "--upload-time", "20")
    wait_for(lambda: (task_summary_or_none(t, url) or {}).get("hashed_pieces", 0) >= 1, what="first piece")
    rest = [spawn_get(url, "-o", str(tmp_path / f"n{i}.bin"), "--tracker", t.url, "--upload-time", "2") for i in (1, 2)]
    for proc in rest:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    wait_for((tmp_path / "n0.bin").exists, what="the first peer")
    for i in range(3):
        assert (tmp_path / f"n{i}.bin").read_bytes() == data
    # One peer took the whole file; the others only probed (a probe of a Range-less origin starts a
    # whole-file reply that is cut off at once).
    assert src.bytes_sent() < size * 1.5
    summary = task_summary(t, task_id_for_url(url))
    assert summary["range_ok"] is False
    first.kill()


def test_digest_mismatch_leaves_nothing(tmp_path: Path, origin, make_file):
    src = origin()
    data = make_file(src.root / "z.bin", 1 << 20)
    out = tmp_path / "z.bin"
    result = run_get(src.url("z.bin"), "-o", str(out), "--digest", "sha256:" + "0" * 64)
    assert result.returncode == 5
    assert "digest mismatch" in result.stderr
    assert f"got sha256:{hashlib.sha256(data).hexdigest()}" in result.stderr  # what the file is, to check
    assert not out.exists() and no_partial_files(tmp_path)
