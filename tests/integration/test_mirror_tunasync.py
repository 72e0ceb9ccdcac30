"""Coming from tunasync, with real processes: ``GET /jobs`` in tunasync's shape (checked against an answer
in tunasync's status JSON), its public read-only view, tunasynctl's forms of ``ctl``, SIGHUP reloads of the
manager and the worker, and a tunasync worker.conf converted by ``import-tunasync`` and run.

Every wait is a poll against a generous deadline; nothing asserts on timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shoal.testing.poll import wait_until
from shoal.testing.processes import shoal_argv, start_mirror_manager, start_mirror_worker
from shoal.testing.rsyncd import Module, rsync_daemon
from tests.integration.test_mirror import TOKEN, Mirror, alive, ctl, jobs

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "tunasync" / "jobs.json"
GO_LAYOUT = "%Y-%m-%d %H:%M:%S %z"

QUICK = """
[[jobs]]
name = "quick"
provider = "command"
upstream = "https://upstream.test/quick/"
command = 'head -c 2048 /dev/zero > blob; echo run >> "$RUNS"'
interval = "1h"
retries = 1
[jobs.env]
RUNS = "{runs}"
"""
SIZED = """
[[jobs]]
name = "sized"
provider = "command"
upstream = "https://upstream.test/sized/"
command = "echo 'mirror size: 1,234,567'; echo data > f"
size_pattern = 'mirror size: ([0-9,.]+[KMGTP]?)'
interval = "1h"
retries = 1
"""
SLOW = """
[[jobs]]
name = "slow"
provider = "command"
upstream = "local"
command = 'echo $$ > "$PIDFILE"; exec sleep 120'
interval = "1h"
retries = 1
[jobs.env]
PIDFILE = "{pidfile}"
"""


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    made = Mirror(tmp_path)
    yield made
    made.close()


def get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# -- GET /jobs ----------------------------------------------------------------------------------------


def test_get_jobs_answers_in_tunasync_s_shape_and_is_public_only_when_enabled(mirror: Mirror) -> None:
    answer_shape = json.loads(FIXTURE.read_text())[0]
    manager = mirror.manager("public_status = true\n" + QUICK.format(runs=mirror.tmp / "runs") + SIZED)
    mirror.worker(manager, "w1")
    wait_until(lambda: jobs(manager)["quick"]["status"] == "success", "the job's first success")
    wait_until(lambda: jobs(manager)["sized"]["status"] == "success", "the sized job's first success")

    status, answer = get(f"{manager.url}/jobs")  # no token: the public read-only view
    assert status == 200 and isinstance(answer, list)
    job, sized = answer
    # What size_pattern captured is shown as written, as tunasync shows it (not the bytes, 1.18M).
    assert (sized["name"], sized["size"]) == ("sized", "1,234,567")
    # The same keys, in the same order, with the same JSON types as tunasync's status JSON.
    assert list(job) == list(answer_shape)
    assert {key: type(value) for key, value in job.items()} == {key: type(value) for key, value in answer_shape.items()}
    assert (job["name"], job["is_master"], job["status"]) == ("quick", True, "success")
    assert (job["upstream"], job["size"]) == ("https://upstream.test/quick/", "2.00K")  # as rsync -h writes it
    for name in ("last_update", "last_started", "last_ended", "next_schedule"):
        # Text and stamp name one instant, the text in Go's layout with the manager's offset.
        assert datetime.strptime(job[name], GO_LAYOUT).timestamp() == job[f"{name}_ts"]
    assert job["last_started_ts"] <= job["last_ended_ts"] == job["last_update_ts"] < job["next_schedule_ts"]

    # The token still guards everything else, and the public view changes nothing.
    assert get(f"{manager.url}/v1/mirror/jobs")[0] == 401
    assert get(f"{manager.url}/jobs", method="POST")[0] in (401, 405)
    assert get(f"{manager.url}/v1/mirror/jobs/quick/start", method="POST")[0] == 401


def test_get_jobs_needs_the_token_unless_public_status_is_on(mirror: Mirror) -> None:
    manager = mirror.manager(SLOW.format(pidfile=mirror.pidfile("slow")))
    assert get(f"{manager.url}/jobs")[0] == 401
    status, answer = get(f"{manager.url}/jobs", TOKEN)
    assert status == 200
    # Never run: Go's zero time, as tunasync sends it; no size yet is tunasync's "unknown".
    assert answer[0]["last_update"] == "0001-01-01 00:00:00 +0000" and answer[0]["last_update_ts"] == -62135596800
    assert (answer[0]["status"], answer[0]["size"]) == ("none", "unknown")
    opened = start_mirror_manager(mirror.manager_config, extra=["--public-status"])
    mirror.services.append(opened)
    assert get(f"{opened.url}/jobs")[0] == 200
    assert get(f"{opened.url}/v1/mirror/workers")[0] == 401


# -- tunasynctl's forms -------------------------------------------------------------------------------


def test_ctl_accepts_tunasynctl_s_forms(mirror: Mirror) -> None:
    counter, pidfile = mirror.tmp / "runs", mirror.pidfile("slow")
    manager = mirror.manager(QUICK.format(runs=counter) + SLOW.format(pidfile=pidfile))
    mirror.worker(manager, "w1", concurrency=1)
    wait_until(lambda: jobs(manager)["quick"]["status"] == "success", "quick's first run")
    wait_until(lambda: jobs(manager)["slow"]["status"] == "syncing", "slow holding w1's only slot")

    def listed(*args: str) -> list[str]:
        result = ctl(manager, "list", *args, "--format", "json")
        assert result.returncode == 0, result.stderr
        return sorted(job["name"] for job in json.loads(result.stdout))

    assert listed("-s", "success,syncing") == ["quick", "slow"]
    assert listed("-s", "success") == ["quick"]
    assert listed("w1") == ["quick", "slow"] and listed("w2") == []
    bad = ctl(manager, "list", "-s", "success,bogus")
    assert bad.returncode == 2 and "unknown status 'bogus'" in bad.stderr

    # The worker is full: a start waits for a slot instead of being refused, and runs once one frees.
    queued = ctl(manager, "start", "quick")
    assert queued.returncode == 0 and "quick: queued" in queued.stdout, queued.stderr
    assert jobs(manager)["quick"]["queued"] is True
    assert ctl(manager, "stop", "-w", "w1", "slow").returncode == 0  # tunasynctl names the job's worker
    wait_until(lambda: runs(counter) == 2 and jobs(manager)["quick"]["status"] == "success", "the queued start")
    assert jobs(manager)["quick"]["queued"] is False

    started = ctl(manager, "start", "-w", "w1", "quick")
    assert started.returncode == 0 and "quick: pre-syncing on w1" in started.stdout, started.stderr
    wait_until(lambda: runs(counter) == 3, "the start on w1")
    elsewhere = ctl(manager, "start", "-w", "w2", "slow")
    assert elsewhere.returncode == 1 and "no live worker 'w2'" in elsewhere.stderr

    wrong = ctl(manager, "disable", "-w", "w2", "slow")
    assert wrong.returncode == 2 and "runs on worker 'w1', not 'w2'" in wrong.stderr
    assert jobs(manager)["slow"]["status"] == "paused"  # refused before anything was done
    reloading = ctl(manager, "reload", "-w", "w1")
    assert reloading.returncode == 0 and "w1: reloading" in reloading.stdout, reloading.stderr

    pong = ctl(manager, "ping")
    assert pong.returncode == 0 and pong.stdout.startswith("pong")
    assert ctl(manager, "ping", "-w", "w1").stdout.startswith("w1: pong")
    missing = ctl(manager, "ping", "-w", "w9")
    assert missing.returncode == 1 and "no worker named 'w9'" in missing.stderr

    sized = ctl(manager, "set-size", "-w", "w1", "slow", "300G")
    assert sized.returncode == 0 and "slow: size 300.0 GiB" in sized.stdout, sized.stderr
    answer = {job["name"]: job for job in get(f"{manager.url}/jobs", TOKEN)[1]}
    assert answer["slow"]["size"] == "300G"
    assert ctl(manager, "set-size", "slow", "1500000").returncode == 0
    answer = {job["name"]: job for job in get(f"{manager.url}/jobs", TOKEN)[1]}
    assert answer["slow"]["size"] == "1500000"  # as written, as tunasync shows what set-size was given
    assert ctl(manager, "set-size", "slow", "10Q").returncode == 2
    wrong = ctl(manager, "set-size", "-w", "w2", "slow", "1T")
    assert wrong.returncode == 2 and "runs on worker 'w1', not 'w2'" in wrong.stderr
    assert {job["name"]: job for job in get(f"{manager.url}/jobs", TOKEN)[1]}["slow"]["size"] == "1500000"


# -- SIGHUP ---------------------------------------------------------------------------------------------


def test_sighup_reloads_the_manager_s_jobs_and_keeps_them_when_the_file_is_bad(mirror: Mirror) -> None:
    log = mirror.tmp / "manager.log"
    good = f'[manager]\nworker_timeout = "3s"\ntoken = "{TOKEN}"\n' + QUICK.format(runs=mirror.tmp / "runs")
    mirror.manager_config.write_text(good)
    manager = start_mirror_manager(mirror.manager_config, log=log)
    mirror.services.append(manager)
    mirror.worker(manager, "w1")
    mirror.manager_config.write_text(good + SLOW.format(pidfile=mirror.pidfile("slow")))
    manager.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "slow" in jobs(manager), "the job added by the reload")
    wait_until(lambda: jobs(manager)["slow"]["status"] == "syncing", "the new job running")

    mirror.manager_config.write_text(good.replace('interval = "1h"', "interval = 120"))
    manager.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload on SIGHUP failed, keeping the running config" in log.read_text(), "the error")
    assert "interval: 120 has no unit" in log.read_text()
    assert manager.proc.poll() is None and set(jobs(manager)) == {"quick", "slow"}

    mirror.manager_config.write_text(good)  # slow removed: disabled, its running sync killed
    manager.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: jobs(manager)["slow"]["status"] == "disabled", "the removed job disabled")
    wait_until(lambda: not alive(mirror.tmp / "slow.pid"), "the removed job's sync killed")
    for flags, names in (((), ["quick"]), (("-a",), ["quick", "slow"])):  # tunasynctl's list -a: disabled too
        listed = ctl(manager, "list", *flags, "--format", "json")
        assert listed.returncode == 0 and sorted(j["name"] for j in json.loads(listed.stdout)) == names
    manager.proc.send_signal(signal.SIGTERM)  # still a clean stop
    assert manager.proc.wait(30) == 0


def test_sighup_reloads_the_worker_s_settings(mirror: Mirror) -> None:
    manager = mirror.manager(QUICK.format(runs=mirror.tmp / "runs"))
    config, log = mirror.tmp / "w1.toml", mirror.tmp / "w1.log"
    config.write_text(
        f'[worker]\nname = "w1"\nmanager = "{manager.url}"\ntoken = "{TOKEN}"\n'
        f'directory = "{mirror.tmp / "w1"}"\nconcurrency = 1\nseed_host = "127.0.0.1"\nseed_port = 0\n'
    )
    worker = start_mirror_worker(config, None, log=log)  # named by its config, as tunasync's [global] name
    mirror.services.append(worker)

    def concurrency() -> int | None:
        result = ctl(manager, "workers", "--format", "json")
        found = [w for w in json.loads(result.stdout) if w["name"] == "w1" and w["live"]]
        return found[0]["concurrency"] if found else None

    wait_until(lambda: concurrency() == 1, "w1 registered, named by its config")
    config.write_text(config.read_text().replace("concurrency = 1", "concurrency = 3"))
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: concurrency() == 3, "the new concurrency")
    config.write_text(config.read_text() + "bogus = 1\n")
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload failed, keeping the current settings" in log.read_text(), "the error logged")
    assert worker.proc.poll() is None and concurrency() == 3
    worker.proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, as SIGTERM is
    assert worker.proc.wait(30) == 0


# -- import-tunasync, then run ----------------------------------------------------------------------------


def import_tunasync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shoal_argv("mirror", "import-tunasync", *args), capture_output=True, text=True, timeout=60)


def test_import_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "mirrors.toml"
    missing = import_tunasync(str(tmp_path / "nope.conf"), "-o", str(output))
    assert missing.returncode == 2 and "cannot read the configuration" in missing.stderr
    bad = tmp_path / "worker.conf"
    bad.write_text('[[mirrors]]\nname = "m"\nprovider = "ftp"\n')
    refused = import_tunasync(str(bad), "-o", str(output))
    assert refused.returncode == 2 and "'ftp' is not a tunasync provider" in refused.stderr
    assert refused.stderr.count("\n") == 1  # one clear line
    assert not output.exists() and os.listdir(tmp_path) == ["worker.conf"]


TUNASYNC_WORKER = """
[global]
name = "tw1"
mirror_dir = "{mirror_dir}"
concurrent = 2
interval = 120
retry = 2
exec_on_success = ["echo ok > $SHOAL_MIRROR_DIR/../hook-ran"]

[manager]
api_base = "{api_base}"
token = "{token}"

[cgroup]
enable = false

[[mirrors]]
name = "tools"
provider = "command"
upstream = "https://upstream.test/tools/"
command = "echo tools > README"
docker_image = "registry.lab.example/sync/fetchers:2"
"""
TUNASYNC_MANAGER = '[server]\naddr = "127.0.0.1"\nport = 14242\n\n[files]\ndb_type = "bolt"\ndb_file = "/tmp/x.db"\n'


def test_a_converted_tunasync_config_runs(mirror: Mirror) -> None:
    tmp = mirror.tmp
    (tmp / "manager.conf").write_text(TUNASYNC_MANAGER)
    worker_conf = tmp / "worker.conf"
    values = {"mirror_dir": tmp / "srv", "token": TOKEN}
    # The manager comes first, on a port of the kernel's choosing (--port overrides the converted port);
    # the worker.conf then names it, as an operator's would, and is converted again for the worker.
    worker_conf.write_text(TUNASYNC_WORKER.format(api_base="http://127.0.0.1:1", **values))
    converted = import_tunasync(str(worker_conf), str(tmp / "manager.conf"), "-o", str(tmp / "manager.toml"))
    assert converted.returncode == 0, converted.stderr
    assert "not carried over: " in converted.stderr and "docker_image" in converted.stderr
    assert (tmp / "manager.toml").stat().st_mode & 0o777 == 0o600  # it holds the token
    # The mirror has no timeout, so tunasync would let it run unbounded: so does the converted job (it runs
    # below, which a timeout of 0 read as "0 seconds" would not), and nothing about it is said to be lost.
    assert "timeout = 0\n" in (tmp / "manager.toml").read_text() and "timeout" not in converted.stderr
    manager = start_mirror_manager(tmp / "manager.toml")
    mirror.services.append(manager)
    worker_conf.write_text(TUNASYNC_WORKER.format(api_base=manager.url, **values))
    printed = import_tunasync(str(worker_conf))
    assert printed.returncode == 0, printed.stderr
    (tmp / "worker.toml").write_text(printed.stdout)
    mirror.services.append(start_mirror_worker(tmp / "worker.toml", None))

    job = wait_until(
        lambda: jobs(manager).get("tools", {}).get("status") == "success" and jobs(manager)["tools"], "a run"
    )
    assert job["worker"] == "tw1"
    assert (tmp / "srv" / "tools" / "README").read_text() == "tools\n"  # tunasync's layout: <mirror_dir>/<name>
    assert (tmp / "srv" / "hook-ran").exists()  # exec_on_success ran as a post_success hook
    status, answer = get(f"{manager.url}/jobs", TOKEN)
    assert status == 200 and answer[0]["name"] == "tools"


# A first setup in the shape tunasync's docs/zh_CN/get_started.md walks through (a worker.conf with every
# table, the ones Shoal has no use for empty or disabled, one rsync mirror allowing rsync's partial-transfer
# codes; a manager.conf), with this test's own names and paths, and an upstream served by Debian's rsync
# daemon on loopback.
GET_STARTED_WORKER = """
[global]
name = "edge-sync-1"
log_dir = "{tmp}/logs/{{{{.Name}}}}"
mirror_dir = "{tmp}/srv"
concurrent = 4
interval = 120

[manager]
api_base = "{api_base}"
token = ""
ca_cert = ""

[cgroup]
enable = false
base_path = "/sys/fs/cgroup"
group = "edge-sync"

[server]
hostname = "edge-sync-1.lab.example"
listen_addr = "127.0.0.1"
listen_port = 16030
ssl_cert = ""
ssl_key = ""

[[mirrors]]
name = "toolbox"
provider = "rsync"
upstream = "{upstream}"
use_ipv6 = false
rsync_success_exit_codes = [23, 24]
"""
GET_STARTED_MANAGER = """debug = false

[server]
addr = "127.0.0.1"
port = 14242
ssl_cert = ""
ssl_key = ""

[files]
db_type = "badger"
db_file = "{tmp}/status.db"
ca_cert = ""
"""


def test_the_documented_first_setup_converts_and_syncs_from_an_rsync_daemon(mirror: Mirror) -> None:
    tmp = mirror.tmp
    upstream = tmp / "upstream"
    (upstream / "bin").mkdir(parents=True)
    (upstream / "index.html").write_text("toolbox\n")
    (upstream / "bin" / "toolbox-1.0.tar.gz").write_bytes(os.urandom(300_000))
    (tmp / "manager.conf").write_text(GET_STARTED_MANAGER.format(tmp=tmp))
    worker_conf = tmp / "worker.conf"
    with rsync_daemon(tmp / "rsyncd", {"toolbox": Module(upstream)}) as daemon:
        values = {"tmp": tmp, "upstream": daemon.url("toolbox")}
        worker_conf.write_text(GET_STARTED_WORKER.format(api_base="http://127.0.0.1:1", **values))
        converted = import_tunasync(str(worker_conf), str(tmp / "manager.conf"), "-o", str(tmp / "manager.toml"))
        assert converted.returncode == 0, converted.stderr
        skipped = converted.stderr
        assert "[server]: hostname, listen_addr, listen_port, ssl_cert, ssl_key: " in skipped
        assert "[cgroup]: enable = false: disabled in the file" in skipped
        assert "manager.conf [files]: db_type: " in skipped
        assert "rsync_success_exit_codes" not in skipped  # carried over as the job's success_exit_codes
        assert "success_exit_codes = [0, 23, 24]" in (tmp / "manager.toml").read_text()
        manager = start_mirror_manager(tmp / "manager.toml")  # no token in the file: loopback only
        mirror.services.append(manager)
        worker_conf.write_text(GET_STARTED_WORKER.format(api_base=manager.url, **values))
        printed = import_tunasync(str(worker_conf))
        assert printed.returncode == 0, printed.stderr
        (tmp / "worker.toml").write_text(printed.stdout)
        mirror.services.append(start_mirror_worker(tmp / "worker.toml", None))  # named by [global] name

        def listed() -> dict[str, Any]:
            status, answer = get(f"{manager.url}/jobs")
            assert status == 200
            return {job["name"]: job for job in answer}

        done = wait_until(lambda: listed().get("toolbox", {}).get("status") == "success" and listed(), "a sync")
        mirrored = tmp / "srv" / "toolbox"  # tunasync's layout: <mirror_dir>/<name>, synced in place
        assert (mirrored / "index.html").read_text() == "toolbox\n"
        assert (mirrored / "bin" / "toolbox-1.0.tar.gz").read_bytes() == (
            upstream / "bin" / "toolbox-1.0.tar.gz"
        ).read_bytes()
        job = done["toolbox"]
        assert (job["upstream"], job["is_master"]) == (daemon.url("toolbox"), True)
        assert job["next_schedule_ts"] - job["last_ended_ts"] == 2 * 3600  # interval = 120 minutes
        logs = tmp / "logs" / "toolbox"  # [global] log_dir, {{.Name}} expanded
        # The size as tunasync's rsync provider shows it: rsync's own total, as rsync -h wrote it.
        total = re.search(r"Total file size: (\S+) bytes", (logs / "latest").read_text())
        assert total is not None and job["size"] == total[1] == "300.01K"

        # An upstream change, synced by a start from ctl, as tunasynctl's `start -w WORKER JOB`.
        (upstream / "index.html").write_text("toolbox, changed\n")
        (upstream / "bin" / "toolbox-1.1.tar.gz").write_bytes(os.urandom(1000))
        started = ctl(manager, "start", "-w", "edge-sync-1", "toolbox", token=None)
        assert started.returncode == 0, started.stderr
        assert "toolbox: pre-syncing on edge-sync-1" in started.stdout  # the manager marks it at once
        wait_until(lambda: listed()["toolbox"]["status"] == "success", "the second sync")
        assert (mirrored / "index.html").read_text() == "toolbox, changed\n"
        assert (mirrored / "bin" / "toolbox-1.1.tar.gz").stat().st_size == 1000
        assert len([name for name in os.listdir(logs) if name != "latest"]) == 2  # one log per run
