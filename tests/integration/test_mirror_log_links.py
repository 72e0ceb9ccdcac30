"""A job's run log read from another host through the manager (shoal.mirror.log_relay): real ``shoal mirror
manager`` and ``worker`` processes, real runs, the status page's log link, ``ctl logs`` without ``--config``.

Every wait is a poll against a generous deadline; nothing asserts on timing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.core.log_share import MAX_LOG_READ
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv
from tests.integration.test_mirror import TOKEN, Mirror, ctl, job_is

DEADLINE = 90.0
RUN_NAME = re.compile(r"tools_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:_\d+)?\.log")

JOBS = """
[[jobs]]
name = "tools"
provider = "command"
upstream = "https://downloads.example.org/tools/?key=QUERYSECRET"
env = { SYNC_TOKEN = "envsecret123", COLOUR = "blue" }
command = '''
n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}
echo "run number $n"
echo "fetching https://mirror-user:urlpass99@downloads.example.org/tools/"
echo "token $SYNC_TOKEN colour $COLOUR from $SHOAL_MIRROR_UPSTREAM"
'''
interval = "1h"

[[jobs]]
name = "noisy"
provider = "command"
upstream = "https://downloads.example.org/noisy/"
command = '''head -c 1500000 /dev/zero | tr '\\000' '\\001'; printf 'bad byte \\377 at the end\\n' '''
interval = "1h"

[[jobs]]
name = "elsewhere"
provider = "command"
upstream = "https://downloads.example.org/elsewhere/"
command = "true"
worker = "no-such-worker"
"""


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    made = Mirror(tmp_path)
    yield made
    made.close()


def get(url: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    """Status, content type and body of a GET."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def start(mirror: Mirror, *, public: bool = False) -> Service:
    """The manager, with a token; with ``public``, its status page (and so its log links) open to all."""
    jobs = JOBS.replace("{count}", str(mirror.tmp / "count"))
    return mirror.manager(("public_dashboard = true\n" if public else "") + jobs)  # still in [manager]


def test_the_log_link_answers_the_runs_output_read_on_its_worker_with_secrets_redacted(mirror: Mirror) -> None:
    manager = start(mirror)
    mirror.worker(manager, "w1")
    wait_until(lambda: job_is(manager, "tools", status="success"), "the first run to succeed", timeout=DEADLINE)

    status, kind, text = get(f"{manager.url}/logs/tools/latest")
    assert status == 200 and kind.startswith("text/plain"), (status, text)
    assert "run number 1" in text and "== success" in text
    assert "fetching https://mirror-user:***@downloads.example.org/tools/" in text
    assert "token *** colour blue from https://downloads.example.org/tools/?***" in text
    for secret in ("urlpass99", "envsecret123", "QUERYSECRET"):
        assert secret not in text

    # Without the token the log is closed, as the page's data is (no --public-dashboard).
    assert get(f"{manager.url}/logs/tools/latest", token=None)[0] == 401
    assert get(f"{manager.url}/v1/mirror/jobs/tools/log", token=None)[0] == 401

    status, _, body = get(f"{manager.url}/v1/mirror/jobs/tools/log")
    piece = json.loads(body)
    assert status == 200 and piece["worker"] == "w1" and RUN_NAME.fullmatch(piece["run"])
    assert piece["runs"] == [piece["run"]] and piece["latest"] == piece["run"]
    assert piece["start"] == 0 and piece["end"] == piece["size"] > 0 and piece["text"] == text

    # A given run, by its name; a tail of it that starts at a line; forward from an offset.
    assert get(f"{manager.url}/logs/tools/{piece['run']}") == (200, "text/plain; charset=utf-8", text)
    tail = json.loads(get(f"{manager.url}/v1/mirror/jobs/tools/log?limit=40")[2])
    assert 0 < tail["start"] and tail["end"] == piece["size"] and text.endswith(tail["text"])
    assert tail["text"].endswith("== success\n") and text[: len(text) - len(tail["text"])].endswith("\n")
    later = json.loads(get(f"{manager.url}/v1/mirror/jobs/tools/log?offset={piece['size']}")[2])
    assert later["text"] == "" and later["start"] == later["end"] == piece["size"]

    # Names that are not this job's run logs never reach a file; unknown runs and jobs are 404s.
    for bad in ("..%2F..%2Fetc%2Fpasswd", "other_2026-01-01_00-00-00.log", "latest.tmp", ".latest.tmp"):
        status, _, body = get(f"{manager.url}/logs/tools/{bad}")
        assert status == 400 and "is not the name of a run log of job 'tools'" in body, (bad, status, body)
    status, _, body = get(f"{manager.url}/logs/tools/tools_2020-01-01_00-00-00.log")
    assert status == 404 and "has no run log tools_2020-01-01_00-00-00.log" in body
    assert get(f"{manager.url}/logs/nope/latest")[0] == 404
    status, _, body = get(f"{manager.url}/logs/elsewhere/latest")
    assert status == 404 and "has not run yet" in body
    assert get(f"{manager.url}/v1/mirror/jobs/tools/log?limit=0")[0] == 400
    assert get(f"{manager.url}/v1/mirror/jobs/tools/log?offset=-1")[0] == 400

    # A log of control characters (six bytes each in JSON) and bytes that are not UTF-8: its last MiB, whole.
    wait_until(lambda: job_is(manager, "noisy", status="success"), "the noisy run to succeed", timeout=DEADLINE)
    status, _, body = get(f"{manager.url}/v1/mirror/jobs/noisy/log")
    noisy = json.loads(body)
    assert status == 200 and noisy["end"] == noisy["size"] > MAX_LOG_READ
    assert 0 < noisy["end"] - noisy["start"] <= MAX_LOG_READ and noisy["text"].count("\x01") > 900_000
    assert "bad byte \ufffd at the end\n" in noisy["text"]

    # ctl logs from "another host": no --config, only the manager's URL and the token.
    printed = ctl(manager, "logs", "tools")
    assert printed.returncode == 0 and printed.stdout == text, printed.stderr
    runs = ctl(manager, "logs", "tools", "--runs")
    assert runs.returncode == 0 and runs.stdout == f"{piece['run']}  (latest)\n"
    given = ctl(manager, "logs", "tools", "--run", piece["run"], "--tail", "40")
    assert given.returncode == 0 and given.stdout == tail["text"] and "the last" in given.stderr
    refused = ctl(manager, "logs", "tools", token=None)
    assert refused.returncode == 2 and "refused the token" in refused.stderr
    bad_run = ctl(manager, "logs", "tools", "--run", "../x")
    assert bad_run.returncode == 2 and "is not the name of a run log" in bad_run.stderr

    # The worker gone, its logs cannot be had: a clear 503 once the manager counts it lost, and ctl exits 3.
    mirror.services[-1].stop()
    wait_until(lambda: get(f"{manager.url}/logs/tools/latest")[0] == 503, "a 503 for a lost worker", timeout=DEADLINE)
    assert "on worker w1, which is not live" in get(f"{manager.url}/logs/tools/latest")[2]
    gone = ctl(manager, "logs", "tools")
    assert gone.returncode == 3 and "which is not live" in gone.stderr


def test_ctl_logs_follows_a_run_and_the_next_through_the_manager_where_the_page_is_public(mirror: Mirror) -> None:
    manager = start(mirror, public=True)
    mirror.worker(manager, "w1")
    wait_until(lambda: job_is(manager, "tools", status="success"), "the first run to succeed", timeout=DEADLINE)

    # --public-dashboard opens the log links as it opens the page's data; the rest still needs the token.
    status, _, text = get(f"{manager.url}/logs/tools/latest", token=None)
    assert status == 200 and "run number 1" in text
    assert get(f"{manager.url}/v1/mirror/jobs/tools/log", token=None)[0] == 200
    assert get(f"{manager.url}/v1/mirror/jobs", token=None)[0] == 401

    # Following needs no token either, where the page is public.
    argv = shoal_argv("mirror", "ctl", "--manager", manager.url, "logs", "tools", "--follow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_MIRROR_")}
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    seen: list[str] = []
    try:
        read_until(follower, seen, "== success")  # the run before it started
        assert any("run number 1" in line for line in seen)
        assert ctl(manager, "start", "tools").returncode == 0
        read_until(follower, seen, "run number 2")  # the next run, followed by itself
        read_until(follower, seen, "== success")
        assert not any("urlpass99" in line for line in seen)
    finally:
        stop(follower)


def test_ctl_logs_follows_the_job_to_another_worker_and_reads_each_run_where_it_ran(mirror: Mirror) -> None:
    manager = start(mirror)
    w1 = mirror.worker(manager, "w1")
    wait_until(lambda: job_is(manager, "tools", status="success", worker="w1"), "run 1 on w1", timeout=DEADLINE)
    first = json.loads(get(f"{manager.url}/v1/mirror/jobs/tools/log")[2])
    mirror.worker(manager, "w2")
    wait_until(lambda: live_workers(manager) == {"w1", "w2"}, "both workers live", timeout=DEADLINE)

    argv = shoal_argv("mirror", "ctl", "--manager", manager.url, "--token", TOKEN, "logs", "tools", "--follow")
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        read_until(follower, seen, "== success")  # run 1, on w1
        started = ctl(manager, "start", "tools", "--worker", "w2")
        assert started.returncode == 0, started.stderr
        # The next run is on w2: the follower goes on there, as tail -F goes on to a rotated file.
        read_until(follower, seen, "run number 2")
        read_until(follower, seen, "== success")
    finally:
        stop(follower)
    assert "".join(seen).count("run number 1") == 1  # run 1 once: not read again from w2, nor from w1
    assert job_is(manager, "tools", status="success", worker="w2")

    # The latest run is read where the job ran last; an earlier run, on the worker that ran it.
    latest = json.loads(get(f"{manager.url}/v1/mirror/jobs/tools/log")[2])
    assert (latest["worker"], latest["running_on"]) == ("w2", "w2") and "run number 2" in latest["text"]
    status, _, body = get(f"{manager.url}/v1/mirror/jobs/tools/log?run={first['run']}")
    earlier = json.loads(body)
    assert status == 200 and (earlier["worker"], earlier["running_on"]) == ("w1", "w2")
    assert earlier["run"] == first["run"] and earlier["text"] == first["text"]
    assert get(f"{manager.url}/logs/tools/{first['run']}")[2] == first["text"]  # the page's link too
    printed = ctl(manager, "logs", "tools", "--run", first["run"])
    assert printed.returncode == 0 and printed.stdout == first["text"], printed.stderr
    status, _, body = get(f"{manager.url}/logs/tools/tools_2020-01-01_00-00-00.log")
    assert status == 404 and "has no run log tools_2020-01-01_00-00-00.log" in body  # on no worker

    # With w1 gone, its run cannot be had: a 503 that says where it is.
    w1.stop()
    url = f"{manager.url}/logs/tools/{first['run']}"
    wait_until(lambda: get(url)[0] == 503, "a 503 once w1 is lost", timeout=DEADLINE)
    assert "it may be on w1, not live now" in get(url)[2]


def live_workers(manager: Service) -> set[str]:
    status, _, body = get(f"{manager.url}/v1/mirror/workers")
    assert status == 200, body
    return {w["name"] for w in json.loads(body)["workers"] if w["live"]}


def read_until(follower: subprocess.Popen[str], seen: list[str], wanted: str) -> None:
    """Read the follower's lines into ``seen`` until one holds ``wanted``; fails if it ends first."""
    assert follower.stdout is not None
    while line := follower.stdout.readline():
        seen.append(line)
        if wanted in line:
            return
    raise AssertionError(f"the follower ended before {wanted!r}: {''.join(seen)}")


def stop(follower: subprocess.Popen[str]) -> None:
    follower.terminate()
    follower.wait(timeout=30)
    if follower.stdout is not None:
        follower.stdout.close()
