"""Secrets given to real processes through the environment or files, never flags: a database password, the
operator's token, the mirror token. None of them shows in the process's command line (what `ps` reads), in
its log or output, or in any HTTP answer; the database URL it prints has its password as ``***``."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url

from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_service
from tests.integration.test_mirror import TOKEN, Mirror, job_is
from tests.store.conftest import SERVERS, _probe, drop_schema


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test process (trust authentication: a password is accepted and
    ignored, so a URL may carry one)."""
    found = asyncio.run(_probe("postgresql"))
    if isinstance(found, BaseException):
        pytest.fail(f"PostgreSQL unreachable at {SERVERS['postgresql']}: {found!r}")
    asyncio.run(drop_schema(found))
    yield found


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def http_answers(url: str, paths: list[str], method: str = "GET") -> str:
    """Every status line, header and body the service answers ``paths`` with, as one text."""
    seen = []
    for path in paths:
        request = urllib.request.Request(f"{url}{path}", method=method, data=b"{}" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                seen.append(f"{reply.status} {reply.headers} {reply.read().decode(errors='replace')}")
        except urllib.error.HTTPError as exc:
            seen.append(f"{exc.code} {exc.headers} {exc.read().decode(errors='replace')}")
    return "\n".join(seen)


def command_line(service: Service) -> str:
    return Path(f"/proc/{service.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def assert_nowhere(secret_values: list[str], *texts: str) -> None:
    for text in texts:
        assert text  # something was looked at
        for value in secret_values:
            assert value not in text


TRACKER_ROUTES = [
    "/v1/health",
    "/v1/cluster",
    "/v1/openapi.json",
    "/v1/tasks/" + "0" * 64,
    "/v1/pools",
    "/announce?info_hash=x",
    "/no/such/route",
]


@pytest.mark.parametrize("how", ["variable", "file"])
def test_a_tracker_keeps_its_database_password_and_operator_token_to_itself(
    tmp_path: Path, pg_url: str, how: str
) -> None:
    password = "pw-" + secrets.token_hex(12)
    admin_token = "admin-" + secrets.token_hex(16)
    url = with_password(pg_url, password)
    admin_file = private_file(tmp_path / "admin.token", admin_token + "\n")
    config = tmp_path / "tracker.toml"
    config.write_text(f'host = "127.0.0.1"\nport = 0\nadmin_token_file = "{admin_file}"\nverbose = 2\n')
    env = {"SHOAL_TRACKER_DB": url} if how == "variable" else {}
    flags = ["--db-file", str(private_file(tmp_path / "db.url", url + "\n"))] if how == "file" else []
    log, log_file = tmp_path / "stderr.log", tmp_path / "tracker.log"
    argv = shoal_argv("tracker", "--config", str(config), "--log-file", str(log_file), *flags)
    tracker = start_service(argv, env=env, log=log)
    try:
        cmdline = command_line(tracker)
        answers = http_answers(tracker.url, TRACKER_ROUTES)
        answers += http_answers(tracker.url, ["/v1/pools"], method="POST")  # a pool made without the token
    finally:
        tracker.stop()
    shown = make_url(url).render_as_string(hide_password=True)
    assert shown.count("***") == 1 and f"(database {shown}, event loop " in tracker.line
    logs = log.read_text() + log_file.read_text()
    assert "DEBUG" in logs  # -vv: everything it logs was looked at
    assert_nowhere([password, admin_token], cmdline, answers, tracker.line, logs)


def run_tracker(*args: str, env: dict[str, str] | None = None, python: str = "") -> subprocess.CompletedProcess[str]:
    """``shoal tracker ARGS`` to its end; with ``python``, that code runs first in the process."""
    argv = shoal_argv("tracker", *args)
    if python:
        argv = [sys.executable, "-c", f"{python}; from shoal.cli.main import main; main()", "tracker", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(
    ("url", "code", "reason"),
    [
        ("postgresql://postgres:{secret}@127.0.0.1:1/shoal", 1, "cannot open the database"),
        ("foo://postgres:{secret}@127.0.0.1/shoal", 2, "unsupported database 'foo'"),
        ("postgresql://postgres:{secret}@127.0.0.1:99999999/shoal", 2, "malformed database URL"),
        ("postgresql://postgres:{secret}@127.0.0.1:port/shoal", 2, "malformed database URL"),
    ],
)
def test_a_database_url_that_fails_is_one_line_without_its_password(url: str, code: int, reason: str) -> None:
    secret = "pw-" + secrets.token_hex(12)
    done = run_tracker("--host", "127.0.0.1", "--port", "0", env={"SHOAL_TRACKER_DB": url.format(secret=secret)})
    assert done.returncode == code, done.stderr
    [line] = done.stderr.splitlines()
    assert reason in line and "postgres:***@" in line
    assert secret not in done.stderr + done.stdout


def test_a_tracker_without_the_postgresql_driver_names_the_extra_to_install() -> None:
    secret = "pw-" + secrets.token_hex(12)
    env = {"SHOAL_TRACKER_DB": f"postgresql://shoal:{secret}@127.0.0.1/shoal"}
    done = run_tracker("--port", "0", env=env, python="import sys; sys.modules['asyncpg'] = None")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "the postgresql database driver (asyncpg) is not installed: pip install 'shoal[postgresql]'" in line
    assert secret not in done.stderr


def test_a_database_url_file_is_read_only_when_nobody_else_may(tmp_path: Path) -> None:
    url_file = tmp_path / "db.url"
    url_file.write_text(f"sqlite:///{tmp_path / 't.db'}\n")
    url_file.chmod(0o644)
    done = run_tracker("--port", "0", "--db-file", str(url_file))
    assert done.returncode == 2 and "open to other users (mode 0644): chmod 600" in done.stderr
    url_file.chmod(0o600)
    done = run_tracker("--port", "0", "--db-file", str(url_file), "--db", "sqlite:///other.db")
    assert done.returncode == 2 and "give --db or --db-file, not both" in done.stderr
    assert not (tmp_path / "t.db").exists()


def test_a_mirror_managers_token_from_a_file_guards_its_api_and_shows_nowhere(tmp_path: Path) -> None:
    token = "mirror-" + secrets.token_hex(16)
    private_file(tmp_path / "mirror.token", token)
    config = tmp_path / "mirrors.toml"
    config.write_text(f'[manager]\ntoken_file = "mirror.token"\ndb = "sqlite:///{tmp_path / "m.db"}"\n')
    log = tmp_path / "stderr.log"
    argv = shoal_argv("mirror", "manager", "--config", str(config), "--host", "127.0.0.1", "--port", "0", "-vv")
    manager = start_service(argv, log=log)
    try:
        cmdline = command_line(manager)
        answers = http_answers(manager.url, ["/v1/mirror/health", "/v1/mirror/jobs", "/v1/openapi.json"])
        request = urllib.request.Request(f"{manager.url}/v1/mirror/jobs", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert json.load(reply)["jobs"] == []  # the file's token is the one the manager asks for
    finally:
        manager.stop()
    assert "401" in answers  # without it, the jobs are refused
    assert_nowhere([token], cmdline, answers, manager.line, log.read_text())


def test_a_password_in_any_url_a_log_line_or_an_error_quotes_is_hidden(tmp_path: Path) -> None:
    """The log handler and the error line hide every URL's password, whatever quotes it: here a `get` of an
    origin URL with credentials that cannot be reached, traced with -vv into a file."""
    secret = "pw-" + secrets.token_hex(12)
    log = tmp_path / "get.log"
    argv = ["get", f"http://user:{secret}@127.0.0.1:9/file.bin", "-o", str(tmp_path / "f"), "--no-daemon", "-vv"]
    done = subprocess.run(shoal_argv(*argv, "--log-file", str(log)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    logged = log.read_text()
    assert "DEBUG" in logged and "user:***@127.0.0.1:9" in logged + done.stderr
    assert_nowhere([secret], logged, done.stderr)


def test_a_mirror_job_runs_without_the_secrets_of_its_worker(tmp_path: Path) -> None:
    token = TOKEN  # the manager's, which the helpers' `ctl` sends
    pool_token = "pool-" + secrets.token_hex(16)
    mirror = Mirror(tmp_path)
    try:
        jobs = '[[jobs]]\nname = "env"\nprovider = "command"\nupstream = "local"\ncommand = "env > env.txt"\n'
        jobs += 'interval = "1h"\n[jobs.env]\nJOB_SETTING = "kept"\n'
        manager = mirror.manager(jobs, token=token)
        env = {"DEPLOY_MIRROR_TOKEN": token, "SHOAL_POOL_TOKEN": pool_token, "OPERATOR_SETTING": "kept too"}
        mirror.worker(manager, "w1", token=None, extra='token_env = "DEPLOY_MIRROR_TOKEN"\n', env=env)
        wait_until(lambda: job_is(manager, "env", status="success"), "the job's success", timeout=60)
    finally:
        mirror.close()
    seen = (tmp_path / "w1" / "env" / "current" / "env.txt").read_text()
    assert "JOB_SETTING=kept" in seen and "OPERATOR_SETTING=kept too" in seen
    assert_nowhere([token, pool_token, "DEPLOY_MIRROR_TOKEN", "SHOAL_POOL_TOKEN"], seen)
