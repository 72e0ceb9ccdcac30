"""The rsync and two-stage-rsync providers (shoal.mirror.rsync) through one attempt of a job
(shoal.mirror.runner), against Debian's rsync daemon on loopback (shoal.testing.rsyncd).

Each test checks what is on disk afterwards (versions, hard links, ``current``), and what the run log says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.core.mirror_config import JobSpec
from shoal.mirror.run_log import LogPlace, latest_log
from shoal.mirror.runner import current_version, run_attempt
from shoal.testing.rsyncd import Gate, Module, RsyncDaemon, rsync_daemon

pytestmark = pytest.mark.asyncio


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    (root / "sub").mkdir(parents=True)
    (root / "changed.txt").write_text("one\n")
    (root / "deleted.txt").write_text("going\n")
    (root / "sub" / "same.bin").write_bytes(os.urandom(100_000))
    return root


@pytest.fixture
def daemon(tmp_path: Path, upstream: Path) -> Iterator[RsyncDaemon]:
    modules = {"pub": Module(upstream), "private": Module(upstream, user="mirror", password="s3cret-pw")}
    with rsync_daemon(tmp_path / "rsyncd", modules) as served:
        yield served


def rsync_job(url: str, **keys: Any) -> JobSpec:
    return JobSpec(name="mirror", provider=keys.pop("provider", "rsync"), upstream=url, timeout=120, **keys)


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (hidden ones too) by its path inside, with its bytes."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


async def test_rsync_syncs_a_version_then_only_the_change_linking_the_rest(
    tmp_path: Path, upstream: Path, daemon: RsyncDaemon
) -> None:
    job_dir = tmp_path / "mirror"
    spec = rsync_job(daemon.url("pub"))
    first = await run_attempt(spec, job_dir)
    assert first.ok, first.error
    v1 = current_version(job_dir)
    assert v1 is not None and v1.name == first.version
    assert tree(v1) == tree(upstream)
    assert first.size == sum(len(data) for data in tree(upstream).values())

    (upstream / "changed.txt").write_text("two, longer\n")  # rsync's quick check: a new size, same second
    (upstream / "deleted.txt").unlink()
    (upstream / "sub" / "new.txt").write_text("new\n")
    second = await run_attempt(spec, job_dir)
    assert second.ok, second.error
    v2 = current_version(job_dir)
    assert v2 is not None and v2 != v1
    assert tree(v2) == tree(upstream)
    assert "deleted.txt" not in tree(v2)
    # Unchanged: a hard link to the previous version (--link-dest); changed: a file of its own.
    assert (v2 / "sub" / "same.bin").stat().st_ino == (v1 / "sub" / "same.bin").stat().st_ino
    assert (v2 / "changed.txt").stat().st_ino != (v1 / "changed.txt").stat().st_ino
    assert tree(v1)["changed.txt"] == b"one\n"  # the published version was never written into
    log = latest_log(LogPlace(tmp_path / ".logs" / "mirror"))
    assert log is not None
    text = log.read_text()
    assert f"--link-dest={v1}" in text
    # rsync's own total, as tunasync's rsync provider reads it for the status page; the size counts bytes.
    assert second.size_text is not None and f"Total file size: {second.size_text} bytes" in text
    assert second.size == sum(len(data) for data in tree(upstream).values())
    assert not (job_dir / ".staging").exists() or not any((job_dir / ".staging").iterdir())


async def test_a_password_protected_module_gets_the_secret_in_the_environment_only(
    tmp_path: Path, upstream: Path, daemon: RsyncDaemon
) -> None:
    # A wrapper first on PATH records what rsync was started with, then runs Debian's rsync.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rsync"
    record = tmp_path / "rsync-started"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$0" "$@" > {record}\n'
        f'printf "env RSYNC_PASSWORD=%s USER=%s\\n" "$RSYNC_PASSWORD" "$USER" >> {record}\n'
        'exec /usr/bin/rsync "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-pw\n")
    for keys in ({"password": "s3cret-pw"}, {"password_file": str(secret_file)}):
        spec = rsync_job(daemon.url("private"), username="mirror", env=env, **keys)
        result = await run_attempt(spec, tmp_path / "job")
        assert result.ok, result.error
        argv, environment = record.read_text().rsplit("env ", 1)
        assert daemon.url("private") in argv
        assert "s3cret" not in argv
        assert environment.strip() == "RSYNC_PASSWORD=s3cret-pw USER=mirror"
        assert tree(current_version(tmp_path / "job") or tmp_path) == tree(upstream)
    log = latest_log(LogPlace(tmp_path / ".logs" / "mirror"))
    assert log is not None and "s3cret" not in log.read_text()

    wrong = await run_attempt(rsync_job(daemon.url("private"), username="mirror", password="wrong"), tmp_path / "job")
    assert not wrong.ok
    assert "rsync failed with exit status 5" in wrong.error and "auth failed" in wrong.error


async def test_a_file_that_vanishes_mid_transfer_is_exit_24_and_a_success(
    tmp_path: Path, upstream: Path, daemon: RsyncDaemon
) -> None:
    (upstream / "a-large.bin").write_bytes(os.urandom(32 << 20))
    (upstream / "z-vanishing.txt").write_text("here at listing time\n")
    # The daemon is held after 1 MiB of its output: the file list is out, a-large.bin is being sent, and
    # the daemon has not opened z-vanishing.txt yet (it sends files in order). Then the file goes.
    gate = Gate(after=1 << 20)
    daemon.gate = gate
    attempt = asyncio.create_task(run_attempt(rsync_job(daemon.url("pub"), retries=1), tmp_path / "job"))
    held = await asyncio.to_thread(gate.held.wait, 60)
    assert held, "the transfer never reached the gate"
    (upstream / "z-vanishing.txt").unlink()
    gate.open()
    result = await attempt
    assert result.ok, result.error
    version = current_version(tmp_path / "job")
    assert version is not None
    assert tree(version) == tree(upstream)  # all but the file that vanished
    assert (version / "a-large.bin").read_bytes() == (upstream / "a-large.bin").read_bytes()
    log = latest_log(LogPlace(tmp_path / ".logs" / "mirror"))
    assert log is not None and log.name.endswith(".log")
    text = log.read_text()
    assert "file has vanished" in text and "exit status 24" in text


async def test_other_rsync_failures_fail_the_attempt_and_publish_nothing(tmp_path: Path, daemon: RsyncDaemon) -> None:
    result = await run_attempt(rsync_job(daemon.url("no-such-module")), tmp_path / "job")
    assert not result.ok
    assert result.error.startswith("rsync failed with exit status 5")
    assert "Unknown module" in result.error
    assert current_version(tmp_path / "job") is None
    log = latest_log(LogPlace(tmp_path / ".logs" / "mirror"))
    assert log is not None and log.name.endswith(".log.fail")


async def test_a_status_in_success_exit_codes_is_a_success_with_a_warning(
    tmp_path: Path, upstream: Path, daemon: RsyncDaemon
) -> None:
    # A source path the module does not have: rsync reports it and exits 23 ("partial transfer due to
    # error"), what tunasync's documentation lists in rsync_success_exit_codes.
    partial = daemon.url("pub", "no-such-dir")
    refused = await run_attempt(rsync_job(partial), tmp_path / "refused")
    assert not refused.ok
    assert refused.error.startswith("rsync failed with exit status 23") and "no-such-dir" in refused.error
    assert current_version(tmp_path / "refused") is None
    accepted = await run_attempt(rsync_job(partial, success_exit_codes=frozenset({23})), tmp_path / "job")
    assert accepted.ok, accepted.error
    assert current_version(tmp_path / "job") is not None
    log = latest_log(LogPlace(tmp_path / ".logs" / "mirror"))
    assert log is not None and log.name.endswith(".log")
    assert "exit status 23, one of the job's success_exit_codes: a success" in log.read_text()
    two_stage = rsync_job(partial, provider="two-stage-rsync", success_exit_codes=frozenset({23}))
    assert (await run_attempt(two_stage, tmp_path / "two")).ok  # stage 2 runs after stage 1's 23


async def test_two_stage_rsync_brings_the_index_files_last(tmp_path: Path, upstream: Path, daemon: RsyncDaemon) -> None:
    for name in ("dists/stable/Release", "dists/stable/main/binary-amd64/Packages.gz", "pool/main/h/hello.deb"):
        (upstream / name).parent.mkdir(parents=True, exist_ok=True)
        (upstream / name).write_text(name)
    result = await run_attempt(rsync_job(daemon.url("pub"), provider="two-stage-rsync"), tmp_path / "job")
    assert result.ok, result.error
    version = current_version(tmp_path / "job")
    assert version is not None
    assert tree(version) == tree(upstream)
    log = latest_log(LogPlace(tmp_path / ".logs" / "mirror"))
    assert log is not None
    text = log.read_text()
    stage1, _, stage2 = text.partition("rsync (stage 2 of 2)")
    assert "rsync (stage 1 of 2)" in stage1 and "--exclude=Packages*" in stage1
    transferred1 = [line.split(" ", 1)[1] for line in stage1.splitlines() if " == " not in line]
    transferred2 = [line.split(" ", 1)[1] for line in stage2.splitlines() if " == " not in line]
    assert "pool/main/h/hello.deb" in transferred1
    assert not any("Release" in line or "Packages" in line for line in transferred1)
    assert "dists/stable/Release" in transferred2
    assert "dists/stable/main/binary-amd64/Packages.gz" in transferred2
    assert "pool/main/h/hello.deb" not in transferred2


async def test_in_place_syncs_straight_into_the_job_directory(
    tmp_path: Path, upstream: Path, daemon: RsyncDaemon
) -> None:
    job_dir = tmp_path / "mirror"
    spec = rsync_job(daemon.url("pub"), layout="in-place")
    first = await run_attempt(spec, job_dir)
    assert first.ok, first.error
    assert first.version is None
    assert {name: data for name, data in tree(job_dir).items() if not name.startswith(".")} == tree(upstream)
    assert not (job_dir / "versions").exists() and not (job_dir / "current").exists()
    (upstream / "deleted.txt").unlink()
    (upstream / "changed.txt").write_text("two, longer\n")  # rsync's quick check: a new size, same second
    second = await run_attempt(spec, job_dir)
    assert second.ok, second.error
    assert tree(job_dir) == tree(upstream)  # deleted upstream, deleted here; nothing hidden left behind
    failed = await run_attempt(rsync_job(daemon.url("no-such-module"), layout="in-place"), job_dir)
    assert not failed.ok
    assert tree(job_dir) == tree(upstream)  # a failed run leaves the mirror as it was


async def test_a_stopped_sync_takes_rsync_with_it_and_publishes_nothing(
    tmp_path: Path, upstream: Path, daemon: RsyncDaemon
) -> None:
    (upstream / "a-large.bin").write_bytes(os.urandom(8 << 20))
    gate = Gate(after=1 << 20)  # rsync is held mid-transfer, so the job is stopped while rsync runs
    daemon.gate = gate
    job_dir = tmp_path / "job"
    attempt = asyncio.create_task(run_attempt(rsync_job(daemon.url("pub")), job_dir, kill_grace=5))
    assert await asyncio.to_thread(gate.held.wait, 60)

    def rsync_in(directory: Path) -> list[int]:
        """Processes running with their working directory under ``directory`` (the client rsync)."""
        found = []
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if entry.isdigit() and Path(os.readlink(f"/proc/{entry}/cwd")).is_relative_to(directory):
                    found.append(int(entry))
        return found

    assert rsync_in(job_dir / ".staging")
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    gate.open()
    assert rsync_in(job_dir) == []
    assert not (job_dir / ".staging").exists() or not any((job_dir / ".staging").iterdir())
    assert current_version(job_dir) is None
    log = latest_log(LogPlace(tmp_path / ".logs" / "mirror"))
    assert log is not None and log.name.endswith(".log.fail")
