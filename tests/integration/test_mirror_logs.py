"""A mirror job's run logs (shoal.mirror.run_log) through real attempts (shoal.mirror.runner): real /bin/sh
hooks and commands, and the files they leave: one per run, timed lines, ``latest``, ``.fail``, rotation,
``fail_on_match`` and ``size_pattern``, and the variables hooks see (tunasync's names too)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shoal.core.errors import NotFound, ProtocolError
from shoal.core.mirror_config import Hooks, JobSpec
from shoal.mirror.config import load_config
from shoal.mirror.run_log import LATEST, LogPlace, latest_log, log_place, read_run_log
from shoal.mirror.runner import run_attempt
from shoal.testing.processes import shoal_argv

pytestmark = pytest.mark.asyncio

TIMED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def command_job(command: str, **keys: Any) -> JobSpec:
    return JobSpec(name="files", provider="command", upstream="rsync://up.example/files/", command=command, **keys)


async def test_each_run_has_a_timed_log_latest_points_at_it_and_failures_are_marked(tmp_path: Path) -> None:
    place = LogPlace(tmp_path / "logs", keep=2)
    hooks = Hooks(pre_exec=("echo pre-exec said this",), post_exec=("echo post-exec 1>&2",))
    ok = await run_attempt(command_job("echo synced; echo warned 1>&2", hooks=hooks), tmp_path / "job", logs=place)
    assert ok.ok, ok.error
    first = latest_log(place)
    assert first is not None and first.name.startswith("files_") and first.name.endswith(".log")
    lines = first.read_text().splitlines()
    assert all(TIMED.match(line) for line in lines)
    said = [TIMED.sub("", line) for line in lines]
    assert said.index("pre-exec said this") < said.index("synced") < said.index("post-exec")
    assert "warned" in said  # stderr too
    assert "== command: echo synced; echo warned 1>&2" in said and said[-1] == "== success"

    failed = await run_attempt(command_job("echo broken; exit 3"), tmp_path / "job", logs=place)
    assert not failed.ok
    second = latest_log(place)
    assert second is not None and second.name.endswith(".log.fail") and second != first
    assert "broken" in second.read_text() and "exit status 3" in second.read_text()
    assert os.readlink(place.directory / LATEST) == second.name

    for _ in range(3):
        assert (await run_attempt(command_job("true"), tmp_path / "job", logs=place)).ok
    kept = sorted(name for name in os.listdir(place.directory) if name != LATEST)
    assert len(kept) == 2 and latest_log(place) == place.directory / kept[-1]
    assert first.name not in kept and second.name not in kept


async def test_hooks_see_the_log_and_tunasyncs_variables(tmp_path: Path) -> None:
    names = [
        "SHOAL_MIRROR_LOG_FILE",
        "SHOAL_MIRROR_LOG_DIR",
        "TUNASYNC_MIRROR_NAME",
        "TUNASYNC_WORKING_DIR",
        "TUNASYNC_UPSTREAM_URL",
        "TUNASYNC_LOG_DIR",
        "TUNASYNC_LOG_FILE",
        "TUNASYNC_JOB_EXIT_STATUS",
    ]
    record = tmp_path / "seen"
    dump = " ".join(f'"{name}=${{{name}:-unset}}"' for name in names)
    hooks = Hooks(
        pre_exec=(f"printf '%s\\n' {dump} > {record}.pre",), post_exec=(f"printf '%s\\n' {dump} > {record}.post",)
    )
    place = LogPlace(tmp_path / "logs")
    result = await run_attempt(command_job("exit 0", hooks=hooks), tmp_path / "job", logs=place)
    assert result.ok, result.error
    log = latest_log(place)
    assert log is not None
    pre = dict(line.split("=", 1) for line in (tmp_path / "seen.pre").read_text().splitlines())
    post = dict(line.split("=", 1) for line in (tmp_path / "seen.post").read_text().splitlines())
    assert pre["SHOAL_MIRROR_LOG_FILE"] == pre["TUNASYNC_LOG_FILE"] == str(log)
    assert pre["SHOAL_MIRROR_LOG_DIR"] == pre["TUNASYNC_LOG_DIR"] == str(place.directory)
    assert pre["TUNASYNC_MIRROR_NAME"] == "files"
    assert pre["TUNASYNC_UPSTREAM_URL"] == "rsync://up.example/files/"
    assert Path(pre["TUNASYNC_WORKING_DIR"]).parent == tmp_path / "job" / ".staging"
    assert pre["TUNASYNC_JOB_EXIT_STATUS"] == "unset"  # only the post hooks know it
    assert post["TUNASYNC_JOB_EXIT_STATUS"] == "0"


async def test_fail_on_match_fails_a_run_whose_command_succeeded(tmp_path: Path) -> None:
    place = LogPlace(tmp_path / "logs")
    spec = command_job(
        "echo 'fine'; echo 'rsync error: some files could not be transferred'", fail_on_match="^rsync error"
    )
    result = await run_attempt(spec, tmp_path / "job", logs=place)
    assert not result.ok
    assert (
        "the log matched fail_on_match '^rsync error': rsync error: some files could not be transferred" in result.error
    )
    log = latest_log(place)
    assert log is not None and log.name.endswith(".fail")
    assert not (tmp_path / "job" / "current").exists()  # nothing published
    # Shoal's own lines are not matched: the command line above holds the pattern's words too.
    quiet = await run_attempt(command_job("echo ok # rsync error", fail_on_match="rsync error"), tmp_path / "job")
    assert quiet.ok, quiet.error


async def test_size_pattern_gives_the_size_from_the_log(tmp_path: Path) -> None:
    printed = "echo 'Total file size: 1.00K bytes'; echo 'Total file size: 5.37G bytes'; echo x > f"
    result = await run_attempt(command_job(printed, size_pattern=r"Total file size: (\S+)"), tmp_path / "job")
    assert result.ok, result.error
    assert result.size == 5_370_000_000  # the last match: the whole mirror's statistics
    assert result.size_text == "5.37G"  # as the log wrote it, for GET /jobs
    unreadable = await run_attempt(
        command_job("echo 'Total file size: lots'; echo abc > f", size_pattern=r"Total file size: (\S+)"),
        tmp_path / "j2",
    )
    assert unreadable.ok and unreadable.size == 4  # the bytes on disk, and the log says why
    assert unreadable.size_text is None
    log = latest_log(LogPlace(tmp_path / ".logs" / "files"))
    assert log is not None and "'lots', which is not a size" in log.read_text()


async def test_ctl_logs_prints_the_latest_run_and_follows_the_next(tmp_path: Path) -> None:
    config = tmp_path / "mirrors.toml"
    config.write_text(
        f'[worker]\ndirectory = "{tmp_path / "mirror"}"\nlog_dir = "{tmp_path}/logs/{{{{.Name}}}}"\n'
        '[[jobs]]\nname = "files"\nprovider = "command"\nupstream = "x"\ncommand = "echo run one"\n'
    )
    loaded = load_config(config)
    spec = loaded.jobs[0]
    place = log_place(loaded.worker, spec)
    assert place.directory == tmp_path / "logs" / "files"
    argv = shoal_argv("mirror", "ctl", "logs", "files", "--config", str(config))

    none_yet = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert none_yet.returncode == 2 and f"no run log in {place.directory} yet" in none_yet.stderr
    assert (await run_attempt(spec, tmp_path / "mirror" / "files", logs=place)).ok
    printed = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert printed.returncode == 0 and "run one" in printed.stdout and "== success" in printed.stdout

    follower = await asyncio.to_thread(subprocess.Popen, [*argv, "--follow"], stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    seen: list[str] = []

    def read_until(text: str) -> bool:
        while line := follower.stdout.readline():  # type: ignore[union-attr]
            seen.append(line)
            if text in line:
                return True
        return False

    try:
        assert await asyncio.to_thread(read_until, "== success")  # the run before it started
        failing = msgspec.structs.replace(spec, command="echo run two; exit 1")
        assert not (await run_attempt(failing, tmp_path / "mirror" / "files", logs=place)).ok
        assert await asyncio.to_thread(read_until, "== failed")  # the next run, as it went
        assert any("run two" in line for line in seen)
    finally:
        follower.terminate()
        await asyncio.to_thread(follower.wait)
        follower.stdout.close()
    unknown = await asyncio.to_thread(subprocess.run, [*argv[:-3], "nope", *argv[-2:]], capture_output=True, text=True)
    assert unknown.returncode == 2 and "has no job named 'nope'" in unknown.stderr


async def test_a_read_for_another_host_takes_only_the_jobs_own_run_logs(tmp_path: Path) -> None:
    place = LogPlace(tmp_path / "logs")
    with pytest.raises(NotFound, match="has no run log"):
        read_run_log(place, "files", None, offset=None, limit=100)
    assert (await run_attempt(command_job("echo one; echo two"), tmp_path / "job", logs=place)).ok
    assert not (await run_attempt(command_job("echo three; exit 1"), tmp_path / "job", logs=place)).ok
    first, failed = sorted(name for name in os.listdir(place.directory) if name != LATEST)
    assert failed.endswith(".log.fail")

    latest = read_run_log(place, "files", None, offset=None, limit=1 << 20)
    whole = (place.directory / failed).read_bytes()
    assert (latest.run, latest.latest, latest.runs) == (failed, failed, (first, failed))
    assert (latest.start, latest.end, latest.size, latest.data) == (0, len(whole), len(whole), whole)
    # A run asked for by the name it had while it ran is found after its log was marked failed.
    assert read_run_log(place, "files", failed.removesuffix(".fail"), offset=None, limit=100).run == failed
    tail = read_run_log(place, "files", first, offset=None, limit=50)
    text = (place.directory / first).read_bytes()
    assert tail.data == text[tail.start :] and text[: tail.start].endswith(b"\n") and tail.data.endswith(b"\n")
    assert tail.data.endswith(b"== success\n")
    forward = read_run_log(place, "files", first, offset=0, limit=len(text) - 1)
    assert forward.start == 0 and forward.data == text[: forward.end] and forward.end < len(text)

    # A link named like a run log, pointing out of the directory, is not read; nor is another job's log.
    outside = tmp_path / "secret.txt"
    outside.write_text("not a log\n")
    planted = "files_2020-01-01_00-00-00.log"
    os.symlink(outside, place.directory / planted)
    with pytest.raises(NotFound):
        read_run_log(place, "files", planted, offset=None, limit=100)
    (place.directory / "other_2020-01-01_00-00-00.log").write_text("another job's\n")
    with pytest.raises(ProtocolError, match="is not the name of a run log of job 'files'"):
        read_run_log(place, "files", "other_2020-01-01_00-00-00.log", offset=None, limit=100)
    # latest pointed elsewhere (by hand): no latest run, rather than a file outside.
    os.replace(place.directory / LATEST, tmp_path / "old-latest")
    os.symlink(outside, place.directory / LATEST)
    with pytest.raises(NotFound, match="has no run log"):
        read_run_log(place, "files", None, offset=None, limit=100)
