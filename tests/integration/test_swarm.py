"""Several real `shoal get` processes share one download through a real tracker and origin."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import shoal
from shoal.core.ids import task_id_for_url
from shoal.testing.poll import wait_until
from shoal.testing.processes import shoal_argv
from tests.integration.conftest import no_partial_files, run_get, sha256

SUMMARY = re.compile(r"origin ([\d.]+) (\w+), peers ([\d.]+) (\w+)")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait for a `shoal get` to put its file in place (it appears only when complete)."""

    def appeared() -> bool:
        assert proc.poll() is None, proc.communicate()
        return path.exists()

    wait_until(appeared, f"{path} to appear", timeout=timeout)


def parse_summary(stderr: str) -> tuple[float, float]:
    match = SUMMARY.search(stderr)
    assert match, stderr
    return float(match.group(1)) * UNITS[match.group(2)], float(match.group(3)) * UNITS[match.group(4)]


def test_peers_split_the_origin_and_share(tmp_path, tracker, origin, make_file, spawn_get):
    size = 12 << 20
    src = origin("--rate", "6M")
    data = make_file(src.root / "release.bin", size)
    t = tracker()
    peers = [
        spawn_get(
            src.url("release.bin"),
            "-o",
            str(tmp_path / f"p{i}.bin"),
            "--tracker",
            t.url,
            "--upload-time",
            "4",
            "--site",
            "s1",
            "--rack",
            f"r{i % 2}",
        )
        for i in range(4)
    ]
    from_peers = 0.0
    for proc in peers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        from_peers += parse_summary(err)[1]
    for i in range(4):
        assert (tmp_path / f"p{i}.bin").read_bytes() == data
    assert no_partial_files(tmp_path)
    # Each byte leaves the origin about once (plus the four one-byte probes).
    assert src.bytes_sent() <= size * 1.05
    assert from_peers >= size * 2


def test_python_api_direct_from_origin_with_digest(tmp_path, origin, make_file, monkeypatch):
    monkeypatch.delenv("SHOAL_TRACKER", raising=False)
    src = origin()
    data = make_file(src.root / "a.bin", 3 << 20)
    out = tmp_path / "a.bin"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    result = shoal.get(src.url("a.bin"), output=out, digest=digest)
    assert result.path == out and out.read_bytes() == data
    assert result.size == len(data) and result.digest == digest
    assert result.bytes_from_origin == len(data) and result.bytes_from_peers == 0
    assert result.seconds > 0


async def test_async_api_through_tracker(tmp_path, tracker, origin, make_file):
    src = origin()
    data = make_file(src.root / "b.bin", 2 << 20)
    t = tracker()
    result = await shoal.aget(src.url("b.bin"), dest_dir=tmp_path, tracker=t.url, upload_time=0)
    assert result.path == tmp_path / "b.bin"
    assert result.path.read_bytes() == data


def test_a_peer_is_known_to_hold_the_whole_file_once_the_file_is_in_place(
    tmp_path, tracker, origin, make_file, spawn_get
):
    # The callback runs once the file is at its destination and before the peer seeds: what the tracker
    # knows then is what a peer started because the file appeared would be told.
    src = origin()
    make_file(src.root / "d.bin", 6 << 20)
    t = tracker()
    seeder = spawn_get(src.url("d.bin"), "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "30")
    wait_for_file(tmp_path / "seed.bin", seeder)
    look = tmp_path / "look.py"
    look.write_text(
        "import sys, urllib.request\n"
        "with urllib.request.urlopen(sys.argv[1]) as r, open(sys.argv[2], 'wb') as out:\n"
        "    out.write(r.read())\n"
    )
    seen = tmp_path / "seen.json"
    callback = f"{sys.executable} {look} {t.url}/v1/tasks/{task_id_for_url(src.url('d.bin'))} {seen}"
    dest = str(tmp_path / "two.bin")
    second = run_get(src.url("d.bin"), "-o", dest, "--tracker", t.url, "--upload-time", "0", "--callback", callback)
    assert second.returncode == 0, second.stderr
    assert parse_summary(second.stderr) == (0, 6 << 20)  # every piece came from the seeder
    task = json.loads(seen.read_text())
    assert len(task["peers"]) == 2
    assert [p["pieces"] for p in task["peers"]] == [task["pieces"]] * 2


def test_second_peer_takes_everything_from_the_first(tmp_path, tracker, origin, make_file, spawn_get):
    src = origin()
    make_file(src.root / "c.bin", 6 << 20)
    t = tracker()
    seeder = spawn_get(src.url("c.bin"), "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "30")
    first = run_get(src.url("c.bin"), "-o", str(tmp_path / "probe.bin"), "--tracker", t.url, "--upload-time", "0")
    assert first.returncode == 0, first.stderr
    wait_for_file(tmp_path / "seed.bin", seeder)
    before = src.bytes_sent()
    second = run_get(src.url("c.bin"), "-o", str(tmp_path / "two.bin"), "--tracker", t.url, "--upload-time", "0")
    assert second.returncode == 0, second.stderr
    from_origin, from_peers = parse_summary(second.stderr)
    assert from_origin == 0 and from_peers == 6 << 20
    assert src.bytes_sent() - before < 4096  # only the probe's one byte and headers
    assert sha256(tmp_path / "two.bin") == sha256(src.root / "c.bin")
    seeder.kill()


def test_very_verbose_lines_say_when_each_piece_landed(tmp_path, tracker, origin, make_file):
    src = origin()
    make_file(src.root / "v.bin", 3 << 20)
    t = tracker()
    result = run_get(src.url("v.bin"), "-o", str(tmp_path / "v.bin"), "--tracker", t.url, "--upload-time", "0", "-vv")
    assert result.returncode == 0, result.stderr
    stamped = re.compile(r"shoal: (\d\d:\d\d:\d\d\.\d{3}) DEBUG: (.*)")
    lines = [m.groups() for m in map(stamped.fullmatch, result.stderr.splitlines()) if m]
    messages = [message for _, message in lines]
    pieces = [message for message in messages if message.startswith("piece ")]
    indices = sorted(int(message.split()[1]) for message in pieces)
    assert len(indices) > 1 and indices == list(range(len(indices)))
    assert all(message.endswith(" from the origin") for message in pieces)
    assert messages.index("flushed and reported") > max(messages.index(p) for p in pieces)
    times = [stamp for stamp, _ in lines]
    assert times == sorted(times)


def test_callback_runs_with_the_path(tmp_path, origin, make_file):
    src = origin()
    make_file(src.root / "d.bin", 1 << 20)
    marker = tmp_path / "marker"
    script = tmp_path / "cb.sh"
    script.write_text(f'#!/bin/sh\necho "$1" > {marker}\n')
    script.chmod(0o755)
    result = run_get(src.url("d.bin"), "-o", str(tmp_path / "d.bin"), "--callback", str(script))
    assert result.returncode == 0, result.stderr
    assert marker.read_text().strip() == str(tmp_path / "d.bin")


def test_headers_go_to_the_origin(tmp_path, origin, make_file):
    src = origin("--require-header", "Authorization: Bearer s3cret")
    make_file(src.root / "e.bin", 1 << 20)
    denied = run_get(src.url("e.bin"), "-o", str(tmp_path / "e.bin"))
    assert denied.returncode == 4 and "403" in denied.stderr
    assert not (tmp_path / "e.bin").exists()
    ok = run_get(src.url("e.bin"), "-o", str(tmp_path / "e.bin"), "--header", "Authorization: Bearer s3cret")
    assert ok.returncode == 0, ok.stderr
    assert sha256(tmp_path / "e.bin") == sha256(src.root / "e.bin")


def test_download_rate_is_honoured(tmp_path, origin, make_file):
    src = origin()
    make_file(src.root / "f.bin", 3 << 20)
    result = run_get(src.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--download-rate", "1M")
    assert result.returncode == 0, result.stderr
    seconds = float(re.search(r"in ([\d.]+)s", result.stderr).group(1))  # type: ignore[union-attr]
    # 3 MiB at 1 MiB/s with a one-second burst cannot finish in under two seconds.
    assert seconds >= 1.8


def test_upload_rate_is_honoured(tmp_path, tracker, origin, make_file, spawn_get):
    src = origin()
    make_file(src.root / "g.bin", 3 << 20)
    t = tracker()
    seeder = spawn_get(
        src.url("g.bin"),
        "-o",
        str(tmp_path / "seed.bin"),
        "--tracker",
        t.url,
        "--upload-time",
        "60",
        "--upload-rate",
        "1M",
    )
    wait_for_file(tmp_path / "seed.bin", seeder)
    result = run_get(src.url("g.bin"), "-o", str(tmp_path / "g.bin"), "--tracker", t.url, "--upload-time", "0")
    assert result.returncode == 0, result.stderr
    _, from_peers = parse_summary(result.stderr)
    assert from_peers == 3 << 20
    seconds = float(re.search(r"in ([\d.]+)s", result.stderr).group(1))  # type: ignore[union-attr]
    assert seconds >= 1.8


def test_rerun_resumes_after_sigkill(tmp_path, origin, make_file, spawn_get):
    size = 8 << 20
    src = origin()
    data = make_file(src.root / "h.bin", size)
    out = tmp_path / "h.bin"
    proc = spawn_get(src.url("h.bin"), "-o", str(out), "--download-rate", "2M")
    state = tmp_path / ".h.bin.shoal-state"
    wait_until(
        lambda: state.exists() and len(json.loads(state.read_text() or "{}").get("pieces", {})) >= 4,
        "the download to record 4 verified pieces",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    saved = len(json.loads(state.read_text())["pieces"])
    assert saved >= 4
    before = src.bytes_sent()
    result = run_get(src.url("h.bin"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert src.bytes_sent() - before <= size - saved * (256 << 10) + 4096
    assert no_partial_files(tmp_path)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_progress_bar_on_a_terminal_and_quiet_mode(tmp_path, origin, make_file):
    src = origin("--rate", "2M")
    make_file(src.root / "p.bin", 4 << 20)
    command = " ".join(shoal_argv("get", src.url("p.bin"), "-o", str(tmp_path / "p.bin")))
    # `script` gives the command a pseudo-terminal, as a person's shell would.
    shown = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stdout
    screen = ANSI.sub("", shown.stdout.replace("\r", "\n"))
    assert re.search(r"\d+\.\d/4\.0 MiB", screen), screen  # bytes done of total
    assert re.search(r"[\d.]+ [KM]iB/s", screen), screen  # rate
    assert "origin" in screen and "peers" in screen  # from the origin vs from peers
    assert "p.bin: 4.0 MiB in" in screen
    quiet = run_get(src.url("p.bin"), "-o", str(tmp_path / "q.bin"), "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_a_second_get_to_the_same_destination_at_once_is_refused(tmp_path, origin, make_file, spawn_get):
    src = origin("--rate", "2M")
    data = make_file(src.root / "same.bin", 4 << 20)
    out = tmp_path / "same.bin"
    first = spawn_get(src.url("same.bin"), "-o", str(out))
    part = tmp_path / ".same.bin.shoal-part"
    wait_until(lambda: part.exists() or first.poll() is not None, "the first download's part file")
    assert part.exists() and first.poll() is None
    second = run_get(src.url("same.bin"), "-o", str(out))
    assert second.returncode == 6, second.stderr
    assert second.stderr.strip().count("\n") == 0 and "another download is writing" in second.stderr
    assert first.wait(timeout=60) == 0
    assert out.read_bytes() == data
    assert no_partial_files(tmp_path)


@pytest.mark.parametrize("ignore", [True, False], ids=["ignore-qp", "without"])
def test_differently_signed_urls_share_a_swarm_with_ignore_qp(tmp_path, tracker, origin, make_file, spawn_get, ignore):
    """minion's --ignore-qp: hosts fetching one file by differently signed URLs share one swarm (the second
    takes it all from the first); without it, each signature is a swarm of its own."""
    src = origin()
    size = 4 << 20
    make_file(src.root / "s.bin", size)
    t = tracker()
    flag = ["--ignore-qp", "X-Amz-*,Expires"] if ignore else []
    repeated = ["--ignore-qp", "x-amz-*", "--ignore-qp", "expires"] if ignore else []  # the same list, repeated
    signed = [src.url("s.bin") + f"?X-Amz-Signature={sig}&Expires={n}" for n, sig in enumerate(("aa11", "bb22"))]
    seeder = spawn_get(signed[0], "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "30", *flag)
    wait_for_file(tmp_path / "seed.bin", seeder)
    second = run_get(signed[1], "-o", str(tmp_path / "two.bin"), "--tracker", t.url, "--upload-time", "0", *repeated)
    assert second.returncode == 0, second.stderr
    from_origin, from_peers = parse_summary(second.stderr)
    assert (from_origin, from_peers) == ((0, size) if ignore else (size, 0))
    assert sha256(tmp_path / "two.bin") == sha256(src.root / "s.bin")
    # The origin's own count: with --ignore-qp its file's bytes left it once (besides probes of a byte).
    assert size <= src.bytes_sent() < (size + 1024 if ignore else 2 * size + 1024)
    # What reached the origin was the full signed URL each host was given, never one stripped of its
    # signature: the parameters are left out of the swarm's identity, not of the origin's request.
    assert set(src.queries()) <= {url.partition("?")[2] for url in signed}
    assert signed[0].partition("?")[2] in src.queries()
    seeder.kill()


def test_a_tracker_given_as_host_and_port_is_http(tmp_path, tracker, origin, make_file, spawn_get):
    """minion's --tracker HOST:PORT (no scheme), on the command line and in $SHOAL_TRACKER: the hosts find
    each other through that tracker, so the second takes the whole file from the first."""
    src = origin()
    size = 2 << 20
    make_file(src.root / "h.bin", size)
    t = tracker()
    bare = t.url.removeprefix("http://")
    assert bare != t.url and "://" not in bare
    seeder = spawn_get(src.url("h.bin"), "-o", str(tmp_path / "seed.bin"), "--tracker", bare, "--upload-time", "60")
    wait_for_file(tmp_path / "seed.bin", seeder)
    env = {**os.environ, "SHOAL_TRACKER": bare}
    argv = shoal_argv("get", src.url("h.bin"), "-o", str(tmp_path / "two.bin"), "--upload-time", "0", "--no-daemon")
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0, second.stderr
    assert parse_summary(second.stderr) == (0, size)
    assert sha256(tmp_path / "two.bin") == sha256(src.root / "h.bin")
    seeder.kill()


def test_peers_only_takes_the_file_from_the_swarm_without_a_word_to_the_origin(
    tmp_path, tracker, origin, make_file, spawn_get
):
    """minion's rule (--no-origin): a fleet that must not hit the origin gets the file from peers, or not at
    all: not even a HEAD or a probe of one byte goes to the origin."""
    src = origin()
    size = 4 << 20
    make_file(src.root / "n.bin", size)
    t = tracker()
    alone = run_get(src.url("n.bin"), "-o", str(tmp_path / "alone.bin"), "--tracker", t.url, "--no-origin")
    assert alone.returncode == 4, alone.stderr
    assert "no peer has" in alone.stderr and "--no-origin" in alone.stderr
    assert src.requests() == 0 and not (tmp_path / "alone.bin").exists()

    seeder = spawn_get(src.url("n.bin"), "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "60")
    wait_for_file(tmp_path / "seed.bin", seeder)
    before = src.requests()
    args = ("-o", str(tmp_path / "two.bin"), "--tracker", t.url, "--upload-time", "0", "--no-origin")
    second = run_get(src.url("n.bin"), *args)
    assert second.returncode == 0, second.stderr
    assert parse_summary(second.stderr) == (0, size)
    assert src.requests() == before
    assert sha256(tmp_path / "two.bin") == sha256(src.root / "n.bin")
    seeder.kill()


@pytest.mark.parametrize(
    ("extra", "says"),
    [((), "--no-origin needs a tracker"), (("--tracker", "http://127.0.0.1:9", "--fallback"), "--fallback")],
)
def test_peers_only_without_a_tracker_or_with_fallback_is_a_usage_error(tmp_path, extra, says):
    done = run_get("http://127.0.0.1:9/f.bin", "-o", str(tmp_path / "f.bin"), "--no-origin", "--no-daemon", *extra)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
