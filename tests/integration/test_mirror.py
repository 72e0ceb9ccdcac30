"""Mirror jobs with real processes: ``shoal mirror manager``, workers (each hosting a seeder), ``ctl``,
a loopback HTTP upstream that changes between runs, command jobs, and clients fetching what a job brought in.

Every wait is a poll against a generous deadline (the machine is small and shared); nothing asserts on
timing. Commands that would outlive a killed worker write their pid, and the test kills them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.testing.poll import wait_until
from shoal.testing.processes import (
    Service,
    run_aria2c,
    shoal_argv,
    start_mirror_manager,
    start_mirror_worker,
    start_origin,
    start_tracker,
)
from shoal.testing.sockets import refusing_port

TOKEN = "s3cret-token"


def api(manager: Service, method: str, path: str, body: Any = None, *, token: str | None = TOKEN) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{manager.url}/v1/mirror/{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def ctl(manager: Service, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_MIRROR_TOKEN"}
    argv = shoal_argv("mirror", "ctl", "--manager", manager.url, *(["--token", token] if token else []), *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def jobs(manager: Service) -> dict[str, dict[str, Any]]:
    result = ctl(manager, "list", "--all", "--format", "json")
    assert result.returncode == 0, result.stderr
    return {job["name"]: job for job in json.loads(result.stdout)}


def job_is(manager: Service, name: str, **wanted: Any) -> dict[str, Any] | None:
    job = jobs(manager).get(name)
    return job if job is not None and all(job[k] == v for k, v in wanted.items()) else None


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()  # type: ignore[no-any-return]


class Mirror:
    """Writes the configs and starts the processes of one test; stops them all at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.services: list[Service] = []
        self.pidfiles: list[Path] = []
        self.manager_config = tmp / "mirrors.toml"

    def manager(self, jobs_toml: str, *, token: str | None = TOKEN, timeout: str = "3s", port: int = 0) -> Service:
        manager = f'[manager]\nworker_timeout = "{timeout}"\n' + (f'token = "{token}"\n' if token else "")
        self.manager_config.write_text(manager + "\n" + jobs_toml)
        service = start_mirror_manager(self.manager_config, port=port)
        self.services.append(service)
        return service

    def worker(
        self,
        manager: Service,
        name: str,
        *,
        token: str | None = TOKEN,
        concurrency: int = 2,
        extra: str = "",
        env: dict[str, str] | None = None,
    ) -> Service:
        config = self.tmp / f"{name}.toml"
        config.write_text(
            "[worker]\n"
            f'manager = "{manager.url}"\n'
            + (f'token = "{token}"\n' if token else "")
            + f'directory = "{self.tmp / name}"\n'
            f"concurrency = {concurrency}\n"
            'seed_host = "127.0.0.1"\nseed_port = 0\n' + extra
        )
        service = start_mirror_worker(config, name, env=env)
        self.services.append(service)
        return service

    def pidfile(self, name: str) -> Path:
        path = self.tmp / f"{name}.pid"
        self.pidfiles.append(path)
        return path

    def close(self) -> None:
        for service in reversed(self.services):  # workers first, then the manager they talk to
            service.stop()
        for path in self.pidfiles:  # commands orphaned by a SIGKILLed worker
            for pid in path.read_text().split() if path.exists() else []:
                try:
                    os.killpg(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    made = Mirror(tmp_path)
    yield made
    made.close()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    root = tmp_path / "upstream"
    root.mkdir()
    service = start_origin(root)
    yield service, root
    service.stop()


def versions(job_dir: Path) -> list[Path]:
    base = job_dir / "versions"
    return sorted(base.iterdir()) if base.is_dir() else []


# -- scheduling, an upstream that changes, retention ---------------------------------------------------


def test_a_scheduled_http_job_follows_a_changing_upstream_and_keeps_two_versions(
    mirror: Mirror, upstream: tuple[Service, Path]
) -> None:
    origin, root = upstream
    (root / "index.txt").write_text("release 1\n")
    manager = mirror.manager(
        f"""
[[jobs]]
name = "site"
provider = "http"
upstream = "{origin.url}/index.txt"
interval = "2s"
[jobs.retention]
keep_versions = 2
"""
    )
    mirror.worker(manager, "w1")
    job_dir = mirror.tmp / "w1" / "site"

    def contents() -> list[str]:
        return [(v / "index.txt").read_text() for v in versions(job_dir) if (v / "index.txt").exists()]

    wait_until(lambda: "release 1\n" in contents(), "the first version")
    (root / "index.txt").write_text("release 2, longer\n")
    wait_until(lambda: "release 2, longer\n" in contents(), "the upstream's change")
    (root / "index.txt").write_text("release 3\n")
    wait_until(lambda: "release 3\n" in contents(), "the second change")
    # Retention keeps the newest two versions: the first is gone, and `current` is the newest.
    wait_until(lambda: "release 1\n" not in contents(), "retention removing the oldest version")
    assert len(versions(job_dir)) <= 2
    assert (job_dir / "current" / "index.txt").read_text() == "release 3\n"
    job = wait_until(lambda: job_is(manager, "site", status="success"), "a success status")
    assert job["worker"] == "w1"
    assert job["last_update"] is not None and job["next_schedule"] >= job["last_ended"]
    assert job["upstream"] == f"{origin.url}/index.txt"
    assert job["size"] > 0


# -- ctl ---------------------------------------------------------------------------------------------


SLOW_JOB = """
[[jobs]]
name = "slow"
provider = "command"
upstream = "local"
command = 'echo $$ > "$PIDFILE"; echo started >> "$LOG"; exec sleep 120'
interval = "1h"
retries = 1
[jobs.env]
PIDFILE = "{pidfile}"
LOG = "{log}"
"""


def alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def test_ctl_list_stop_start_disable_enable_flush(mirror: Mirror) -> None:
    pidfile, log = mirror.pidfile("slow"), mirror.tmp / "slow.log"
    manager = mirror.manager(SLOW_JOB.format(pidfile=pidfile, log=log))
    mirror.worker(manager, "w1")
    wait_until(lambda: job_is(manager, "slow", status="syncing", worker="w1"), "the job syncing on w1")
    wait_until(lambda: pidfile.exists() and alive(pidfile), "the command running")
    first_pid = pidfile.read_text()

    # stop: paused, the command killed, no next run scheduled.
    result = ctl(manager, "stop", "slow")
    assert result.returncode == 0, result.stderr
    assert "slow: paused" in result.stdout
    wait_until(lambda: not alive(pidfile), "the stopped command to be killed")
    assert jobs(manager)["slow"]["next_schedule"] is None
    # Stopping it again is a conflict (exit 1), and changes nothing.
    again = ctl(manager, "stop", "slow")
    assert again.returncode == 1 and "not allowed while the job is paused" in again.stderr
    assert jobs(manager)["slow"]["status"] == "paused"

    # start: runs again at once, on the worker.
    assert ctl(manager, "start", "slow").returncode == 0
    wait_until(lambda: pidfile.read_text() != first_pid and alive(pidfile), "the restarted command")
    assert jobs(manager)["slow"]["status"] in ("pre-syncing", "syncing")

    # disable: killed, hidden from the default list, shown with --all.
    assert ctl(manager, "disable", "slow").returncode == 0
    wait_until(lambda: not alive(pidfile), "the disabled job's command to be killed")
    listed = json.loads(ctl(manager, "list", "--format", "json").stdout)
    assert "slow" not in [j["name"] for j in listed]
    assert jobs(manager)["slow"]["status"] == "disabled"
    table = ctl(manager, "list", "--all")
    assert table.returncode == 0 and "slow" in table.stdout and "disabled" in table.stdout
    assert ctl(manager, "start", "slow").returncode == 1  # a disabled job does not start

    # enable: back to none, and due at once (it never finished a run).
    assert ctl(manager, "enable", "slow").returncode == 0
    wait_until(lambda: job_is(manager, "slow", status="syncing"), "the enabled job running again")

    # flush drops disabled jobs only.
    assert ctl(manager, "disable", "slow").returncode == 0
    flushed = ctl(manager, "flush")
    assert flushed.returncode == 0 and "slow" in flushed.stdout
    assert "slow" not in jobs(manager)
    assert ctl(manager, "start", "slow").returncode == 2  # unknown job: a usage error

    workers = json.loads(ctl(manager, "workers", "--format", "json").stdout)
    assert [(w["name"], w["live"]) for w in workers] == [("w1", True)]
    assert log.read_text().count("started") == 3


def test_restart_kills_the_running_sync_and_runs_it_afresh(mirror: Mirror) -> None:
    pidfile, log = mirror.pidfile("slow"), mirror.tmp / "slow.log"
    manager = mirror.manager(SLOW_JOB.format(pidfile=pidfile, log=log))
    mirror.worker(manager, "w1")
    wait_until(lambda: pidfile.exists() and alive(pidfile), "the command running")
    first = pidfile.read_text()
    assert ctl(manager, "restart", "slow").returncode == 0
    wait_until(lambda: pidfile.read_text() != first and alive(pidfile), "a new command")
    assert not alive_pid(int(first))
    assert job_is(manager, "slow", worker="w1")["status"] in ("pre-syncing", "syncing")  # type: ignore[index]


def alive_pid(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


# -- faults ------------------------------------------------------------------------------------------


QUICK_JOB = """
[[jobs]]
name = "quick"
provider = "command"
upstream = "local"
command = "echo hello > hello.txt"
interval = "1h"
"""


def test_requests_without_the_right_token_are_refused_and_change_nothing(mirror: Mirror) -> None:
    manager = mirror.manager(QUICK_JOB)
    before = api(manager, "GET", "jobs/quick")
    assert before[0] == 200 and before[1]["status"] == "none"
    for token in (None, "wrong", TOKEN + "x", ""):
        for method, path in (("POST", "jobs/quick/disable"), ("POST", "flush"), ("GET", "jobs")):
            status, body = api(manager, method, path, token=token)
            assert status == 401, (token, path)
            assert "token" in body["error"]
        assert api(manager, "POST", "workers/w9/register", {"concurrency": 1}, token=token)[0] == 401
    assert api(manager, "GET", "jobs/quick") == before
    assert api(manager, "GET", "workers")[1] == {"workers": []}
    refused = ctl(manager, "disable", "quick", token="wrong")
    assert refused.returncode == 2 and "refused the token" in refused.stderr
    assert ctl(manager, "list", token=None).returncode == 2
    assert api(manager, "GET", "jobs/quick") == before
    # A worker with a wrong token ends with the same error instead of running jobs.
    worker_config = mirror.tmp / "bad.toml"
    worker_config.write_text(
        f'[worker]\nmanager = "{manager.url}"\ntoken = "wrong"\ndirectory = "{mirror.tmp / "b"}"\n'
        'seed_host = "127.0.0.1"\nseed_port = 0\n'
    )
    bad = subprocess.run(
        shoal_argv("mirror", "worker", "--config", str(worker_config), "--name", "bad"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "refused the token" in bad.stderr
    assert api(manager, "GET", "workers")[1] == {"workers": []}


def test_bad_requests_get_clear_4xx_never_500(mirror: Mirror) -> None:
    manager = mirror.manager(QUICK_JOB)
    assert api(manager, "GET", "jobs/nope")[0] == 404
    assert api(manager, "GET", "jobs/..%2Fx")[0] in (400, 404)
    assert api(manager, "POST", "jobs/quick/explode")[0] == 404
    assert api(manager, "GET", "jobs?status=bogus")[0] == 400
    assert api(manager, "POST", "workers/w1/register", {"concurrency": 0})[0] == 400
    assert api(manager, "POST", "workers/w1/register", {"concurrency": True})[0] == 400
    assert api(manager, "POST", "workers/w1/register", ["not", "an", "object"])[0] == 400
    assert api(manager, "POST", "workers/w1/poll", {"session": "x"})[0] == 409  # not registered: register again
    assert api(manager, "POST", "jobs/quick/report", {"worker": "w1", "run_id": "r", "event": "success"})[0] == 409
    assert api(manager, "POST", "jobs/quick/stop", {"force": True})[0] == 400
    assert api(manager, "DELETE", "workers/ghost")[0] == 404
    status, body = api(manager, "POST", "jobs/quick/start")
    assert status == 409 and "no live worker" in body["error"]
    assert api(manager, "GET", "jobs/quick")[1]["status"] == "none"


def test_a_manager_without_a_token_listens_on_loopback_only(mirror: Mirror) -> None:
    config = mirror.tmp / "open.toml"
    config.write_text(QUICK_JOB)
    result = subprocess.run(
        shoal_argv("mirror", "manager", "--config", str(config), "--host", "0.0.0.0", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "without a token" in result.stderr and "listening" not in result.stdout
    # On loopback it runs, and needs no token.
    manager = mirror.manager(QUICK_JOB, token=None)
    assert api(manager, "GET", "jobs/quick", token=None)[0] == 200


def test_an_invalid_config_is_refused_naming_the_key_and_line(mirror: Mirror) -> None:
    config = mirror.tmp / "bad.toml"
    config.write_text(
        '[manager]\nport = 0\n\n[[jobs]]\nname = "debian"\nprovider = "http"\n'
        'upstream = "http://example.org/"\nintervall = "1h"\n'
    )
    result = subprocess.run(
        shoal_argv("mirror", "manager", "--config", str(config)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "bad.toml:8" in result.stderr and "intervall" in result.stderr
    assert "listening" not in result.stdout
    assert not (mirror.tmp / "bad.db").exists()  # nothing started, not even the database
    config.write_text('[[jobs]]\nname = "debian"\nprovider = "http"\ninterval = "soon"\n')
    result = subprocess.run(
        shoal_argv("mirror", "manager", "--config", str(config)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "bad.toml:" in result.stderr


def test_a_failing_hook_fails_the_job_with_its_output(mirror: Mirror) -> None:
    manager = mirror.manager(
        """
[[jobs]]
name = "hooked"
provider = "command"
upstream = "local"
command = "echo data > data.txt"
interval = "1h"
retries = 2
[jobs.hooks]
pre_exec = ['echo "the mirror is locked by $SHOAL_MIRROR_JOB" >&2; exit 3']
"""
    )
    mirror.worker(manager, "w1")
    job = wait_until(lambda: job_is(manager, "hooked", status="failed"), "the hook's failure")
    assert "the mirror is locked by hooked" in job["error_msg"]
    assert job["attempts"] == 2  # retried as configured, then given up until the next run
    assert job["last_update"] is None and job["size"] == 0
    assert versions(mirror.tmp / "w1" / "hooked") == []


def test_a_job_past_its_timeout_is_killed_failed_and_retried(mirror: Mirror) -> None:
    pidfile = mirror.pidfile("stuck")
    manager = mirror.manager(
        f"""
[[jobs]]
name = "stuck"
provider = "command"
upstream = "local"
command = 'echo $$ >> "{pidfile}"; sleep 120; echo never > out.txt'
interval = "1h"
timeout = "2s"
retries = 2
"""
    )
    mirror.worker(manager, "w1")
    job = wait_until(lambda: job_is(manager, "stuck", status="failed"), "the timeout", timeout=90)
    assert "timed out" in job["error_msg"]
    assert job["attempts"] == 2
    pids = [int(line) for line in pidfile.read_text().split()]
    assert len(pids) == 2
    wait_until(lambda: not any(alive_pid(pid) for pid in pids), "both attempts' processes to be gone", timeout=30)
    assert versions(mirror.tmp / "w1" / "stuck") == []


def test_a_worker_killed_mid_job_loses_it_and_another_worker_runs_it(mirror: Mirror) -> None:
    pidfile, mark = mirror.pidfile("lost"), mirror.tmp / "ran-once"
    manager = mirror.manager(
        f"""
[[jobs]]
name = "lost"
provider = "command"
upstream = "local"
command = 'if [ -e "{mark}" ]; then echo done > out.txt; else touch "{mark}"; echo $$ > "{pidfile}"; exec sleep 120; fi'
interval = "1h"
"""
    )
    w1 = mirror.worker(manager, "w1")
    wait_until(lambda: job_is(manager, "lost", status="syncing", worker="w1"), "the job running on w1")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "the command's pid")
    w1.kill()
    job = wait_until(lambda: job_is(manager, "lost", status="failed"), "the job failed after the worker timeout")
    assert job["error_msg"] == "worker lost" and job["worker"] == "w1"
    workers = {w["name"]: w for w in json.loads(ctl(manager, "workers", "--format", "json").stdout)}
    assert workers["w1"]["live"] is False
    mirror.worker(manager, "w2")
    job = wait_until(lambda: job_is(manager, "lost", status="success", worker="w2"), "the job done on w2")
    assert job["error_msg"] == ""
    assert (mirror.tmp / "w2" / "lost" / "current" / "out.txt").read_text() == "done\n"


def test_a_restarted_manager_gets_its_workers_back_and_keeps_history(mirror: Mirror) -> None:
    manager = mirror.manager(QUICK_JOB)
    port = int(manager.url.rsplit(":", 1)[1])  # the restarted manager takes the same port: the workers know it
    mirror.worker(manager, "w1")
    before = wait_until(lambda: job_is(manager, "quick", status="success"), "the first run")
    session = api(manager, "GET", "health")[1]["session"]
    manager.stop()
    mirror.services.remove(manager)
    manager = mirror.manager(QUICK_JOB, port=port)
    assert api(manager, "GET", "health")[1]["session"] != session

    def w1_live() -> bool:
        found = json.loads(ctl(manager, "workers", "--format", "json").stdout)
        return any(w["name"] == "w1" and w["live"] for w in found)

    wait_until(w1_live, "w1 to register again")
    after = jobs(manager)["quick"]
    for key in ("status", "last_update", "last_started", "last_ended", "size", "worker", "next_schedule"):
        assert after[key] == before[key], key
    # And it takes work from the new manager.
    assert ctl(manager, "start", "quick").returncode == 0
    wait_until(
        lambda: (job := job_is(manager, "quick", status="success")) and job["last_update"] > before["last_update"],
        "a run through the restarted manager",
    )


def test_reload_adds_updates_and_disables_jobs(mirror: Mirror) -> None:
    manager = mirror.manager(QUICK_JOB)
    mirror.manager_config.write_text(
        mirror.manager_config.read_text().replace('"1h"', '"2h"')
        + '\n[[jobs]]\nname = "extra"\nprovider = "command"\nupstream = "x"\ncommand = "true"\ninterval = "1h"\n'
    )
    result = ctl(manager, "reload")
    assert result.returncode == 0, result.stderr
    assert "added: extra" in result.stdout and "updated: quick" in result.stdout
    mirror.manager_config.write_text(mirror.manager_config.read_text() + "bogus = 1\n")
    broken = ctl(manager, "reload")
    assert broken.returncode == 2 and "bogus" in broken.stderr
    assert set(jobs(manager)) == {"quick", "extra"}
    mirror.manager_config.write_text(f'[manager]\nworker_timeout = "3s"\ntoken = "{TOKEN}"\n' + QUICK_JOB)
    result = ctl(manager, "reload")
    assert "disabled: extra" in result.stdout
    assert jobs(manager)["extra"]["status"] == "disabled"


def test_an_upstream_that_changes_mid_fetch_publishes_nothing(mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "slow-upstream"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(1 << 20))
    origin = start_origin(root, "--rate", "128K")  # about 8 s for the file: time to change it under the fetch
    mirror.services.insert(0, origin)
    manager = mirror.manager(
        f"""
[[jobs]]
name = "moving"
provider = "http"
upstream = "{origin.url}/big.bin"
interval = "1h"
retries = 1
"""
    )
    mirror.worker(manager, "w1")
    staging = mirror.tmp / "w1" / "moving" / ".staging"

    def fetching() -> bool:
        return any(p.is_file() and p.stat().st_size > 0 for p in staging.rglob("*")) if staging.is_dir() else False

    wait_until(fetching, "the fetch under way")
    (root / "big.bin").write_bytes(os.urandom((1 << 20) + 4096))  # a new release, mid-fetch
    job = wait_until(lambda: job_is(manager, "moving", status="failed"), "the fetch to fail", timeout=120)
    assert "changed" in job["error_msg"] or "length" in job["error_msg"], job["error_msg"]
    assert versions(mirror.tmp / "w1" / "moving") == []
    assert not (mirror.tmp / "w1" / "moving" / "current").exists()
    assert not any(p.is_file() for p in staging.rglob("*")) if staging.is_dir() else True


def test_ctl_without_a_reachable_manager_exits_3(mirror: Mirror) -> None:
    with refusing_port() as port:
        closed = Service(proc=subprocess.Popen(["true"], text=True), url=f"http://127.0.0.1:{port}", argv=[])
        closed.proc.wait()
        result = ctl(closed, "list")
    assert result.returncode == 3 and "cannot reach the mirror manager" in result.stderr


# -- publishing ----------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="scripts/test installs aria2")
def test_a_jobs_new_files_are_fetched_by_shoal_get_and_aria2c(mirror: Mirror, upstream: tuple[Service, Path]) -> None:
    origin, root = upstream
    payload = os.urandom(3 << 20)
    (root / "image.bin").write_bytes(payload)
    manager = mirror.manager(
        f'[[jobs]]\nname = "images"\nprovider = "http"\nupstream = "{origin.url}/image.bin"\ninterval = "1h"\n'
    )
    worker = mirror.worker(manager, "w1")
    job = wait_until(lambda: job_is(manager, "images", status="success"), "the job's first version")
    rel = f"w1/images/versions/{job['version']}/image.bin"

    def published() -> dict[str, Any] | None:
        listing = json.loads(fetch(f"{worker.url}/v1/files"))
        return next((f for f in listing["files"] if f["path"] == rel), None)

    entry = wait_until(published, "the seeder publishing the new version")
    task_id = str(entry["task_id"])  # the content task: the BLAKE3 of the file's manifest
    wait_until(lambda: _status(f"{worker.url}/v1/tasks/{task_id}") == 200, "the content task at the tracker")

    out = mirror.tmp / "got.bin"
    got = subprocess.run(
        shoal_argv(
            "get", f"{worker.url}/files/{rel}", "--tracker", worker.url, "-o", str(out), "-q", "--upload-time", "1"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == payload

    torrent = mirror.tmp / "image.torrent"
    torrent.write_bytes(fetch(f"{worker.url}/serve?{rel}"))
    aria = mirror.tmp / "aria2"
    result = run_aria2c(str(torrent), aria, "--check-integrity=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (aria / "image.bin").read_bytes() == payload


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


TOOLS_TO_EDGE = """
[[jobs]]
name = "tools"
provider = "http"
upstream = "{origin}/tool.bin"
interval = "1h"
[jobs.publish]
pool = "edge"
replicas = 1
"""
"""A job that pushes each new version to the private pool "edge" (one replica)."""


def test_a_new_version_is_pushed_to_a_private_pool_with_its_digest(
    mirror: Mirror, upstream: tuple[Service, Path]
) -> None:
    origin, root = upstream
    payload = os.urandom(1 << 20)
    (root / "tool.bin").write_bytes(payload)
    tracker = start_tracker(f"sqlite:///{mirror.tmp / 'tracker.db'}")
    mirror.services.insert(0, tracker)  # stopped last
    created = urllib.request.Request(
        f"{tracker.url}/v1/pools",
        data=json.dumps({"name": "edge", "private": True, "allow": ["127.0.0.0/8"]}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(created, timeout=30) as resp:
        pool_token = json.load(resp)["token"]
    manager = mirror.manager(TOOLS_TO_EDGE.format(origin=origin.url))
    worker = mirror.worker(manager, "w1", extra=f'tracker = "{tracker.url}"\n', env={"SHOAL_POOL_TOKEN": pool_token})
    job = wait_until(lambda: job_is(manager, "tools", status="success"), "the job pushed to the pool")
    rel = f"w1/tools/versions/{job['version']}/tool.bin"
    listing = urllib.request.Request(
        f"{tracker.url}/v1/pools/edge/jobs", headers={"Authorization": f"Bearer {pool_token}"}
    )
    with urllib.request.urlopen(listing, timeout=30) as resp:
        pushed = json.load(resp)["jobs"]
    assert [(j["url"], j["digest"]) for j in pushed] == [
        (f"{worker.url}/files/{rel}", "sha256:" + hashlib.sha256(payload).hexdigest())
    ]
    assert pushed[0]["replicas"]["target"] == 1
    assert fetch(pushed[0]["url"]) == payload


def test_a_push_to_a_pool_that_refuses_fails_the_job_with_the_reason(
    mirror: Mirror, upstream: tuple[Service, Path]
) -> None:
    origin, root = upstream
    (root / "tool.bin").write_bytes(b"tool v1\n")
    tracker = start_tracker(f"sqlite:///{mirror.tmp / 'tracker.db'}")
    mirror.services.insert(0, tracker)
    manager = mirror.manager(
        f"""
[[jobs]]
name = "tools"
provider = "http"
upstream = "{origin.url}/tool.bin"
interval = "1h"
retries = 1
[jobs.publish]
pool = "nowhere"
"""
    )
    mirror.worker(manager, "w1", extra=f'tracker = "{tracker.url}"\n')
    job = wait_until(lambda: job_is(manager, "tools", status="failed"), "the push's failure")
    assert "nowhere" in job["error_msg"] and "404" in job["error_msg"]


def test_a_workers_seeder_takes_the_fleets_token_from_the_worker_table(
    mirror: Mirror, upstream: tuple[Service, Path]
) -> None:
    from shoal.core.tickets import FLEET_HEADER, SEEDER_HOLDER, FleetKey

    origin, root = upstream
    payload = os.urandom(1 << 20)
    (root / "tool.bin").write_bytes(payload)
    fleet_token = b"the mirror fleet's token, 0123456789"
    token_file = mirror.tmp / "fleet.token"
    token_file.write_bytes(fleet_token + b"\n")
    token_file.chmod(0o600)
    key = FleetKey.from_token(fleet_token)
    tracker = start_tracker(f"sqlite:///{mirror.tmp / 'tracker.db'}", extra=("--fleet-token-file", str(token_file)))
    mirror.services.insert(0, tracker)  # stopped last

    def fleet(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        sent = {FLEET_HEADER: key.credential(time.time()), "Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(url, data=data, headers=sent, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    status, body = fleet(f"{tracker.url}/v1/pools", {"name": "edge", "private": True, "allow": ["127.0.0.0/8"]})
    assert status in (200, 201), body
    pool_token = json.loads(body)["token"]
    manager = mirror.manager(TOOLS_TO_EDGE.format(origin=origin.url))
    # The token file is named relative to the worker's config, as its token_file is.
    extra = f'tracker = "{tracker.url}"\nfleet_token_file = "fleet.token"\n'
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_FLEET_TOKEN_FILE"}
    worker = mirror.worker(manager, "w1", extra=extra, env={**env, "SHOAL_POOL_TOKEN": pool_token})
    # The push went through: the seeder's listing and the tracker's pool API took the worker's credential.
    job = wait_until(lambda: job_is(manager, "tools", status="success"), "the job pushed to the pool")
    rel = f"w1/tools/versions/{job['version']}/tool.bin"
    status, body = fleet(f"{tracker.url}/v1/pools/edge/jobs", headers={"Authorization": f"Bearer {pool_token}"})
    assert status == 200, body
    pushed = json.loads(body)["jobs"]
    # The pushed URL carries the seeder's passkey, so any member of the fleet can fetch it as it is (its work
    # item names it whole); the pool's readers are shown it without the passkey.
    assert [j["url"] for j in pushed] == [f"{worker.url}/files/PASSKEY/{rel}"]
    assert fetch(f"{worker.url}/files/{key.passkey(SEEDER_HOLDER)}/{rel}") == payload
    # The worker's seeder is the fleet's: its listing, files and torrents need the credential.
    assert _status(f"{worker.url}/v1/files") == 401
    assert _status(f"{worker.url}/files/{rel}") == 403
    assert _status(f"{worker.url}/serve?{rel}") == 403
    status, body = fleet(f"{worker.url}/v1/files")
    assert status == 200 and rel in {f["path"] for f in json.loads(body)["files"]}, body
    # Its registrar announced the content task to the fleet's tracker with the credential.
    task_id = next(f["task_id"] for f in json.loads(body)["files"] if f["path"] == rel)
    wait_until(lambda: fleet(f"{tracker.url}/v1/tasks/{task_id}")[0] == 200, "the content task at the tracker")
