"""The mirror worker against a real manager over loopback HTTP, in one process, with a scripted attempt in
place of shoal.mirror.runner (tested on its own): retries decided by the manager, the concurrency limit,
cancellation by stop, and registering again when the manager's session changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.core.mirror_config import JobSpec, WorkerSettings
from shoal.core.mirror_toml import parse_config
from shoal.http.listen import listen
from shoal.mirror.manager import MirrorManager
from shoal.mirror.manager_http import build_app
from shoal.mirror.messages import MirrorJobView, Reloaded
from shoal.mirror.run_log import LogPlace
from shoal.mirror.worker import MirrorWorker
from shoal.testing.poll import wait_until_async


@dataclass(frozen=True)
class Result:
    ok: bool
    error: str = ""
    size: int = 0
    size_text: str | None = None
    version: str | None = None


JOBS = """
[[jobs]]
name = "a"
provider = "command"
upstream = "x"
command = "true"
retries = 2
[[jobs]]
name = "b"
provider = "command"
upstream = "x"
command = "true"
"""


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[MirrorManager, str]]:
    config = parse_config(f'[manager]\ndb = "sqlite:///{tmp_path / "m.db"}"\nworker_timeout = "3s"\n' + JOBS)
    manager = MirrorManager(config)
    runner, port = await listen(build_app(manager), "127.0.0.1", 0)
    try:
        yield manager, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def job(manager: MirrorManager, name: str, **wanted: Any) -> MirrorJobView | None:
    found = next(j for j in await manager.list_jobs(include_disabled=True) if j.name == name)
    return found if all(getattr(found, k) == v for k, v in wanted.items()) else None


@pytest.fixture
def script() -> tuple[list[tuple[str, int]], list[str], Callable[..., Awaitable[Result]]]:
    calls: list[tuple[str, int]] = []
    cancelled: list[str] = []

    async def attempt(
        spec: JobSpec,
        job_dir: Path,
        *,
        attempt: int = 1,
        on_syncing: Callable[[], Awaitable[None]] | None = None,
        logs: LogPlace | None = None,
    ) -> Result:
        calls.append((spec.name, attempt))
        assert logs is not None and logs.directory == job_dir.parent / ".logs" / spec.name
        assert await asyncio.to_thread(job_dir.is_dir) and job_dir.name == spec.name
        if on_syncing is not None:
            await on_syncing()
        if spec.name == "a":
            return Result(False, "upstream said 503") if attempt == 1 else Result(True, size=5, version="v1")
        try:
            await asyncio.sleep(3600)  # "b" runs until it is stopped
        except asyncio.CancelledError:
            cancelled.append(spec.name)
            raise
        return Result(True)

    return calls, cancelled, attempt


async def test_retry_concurrency_and_stop(tmp_path: Path, script: Any) -> None:
    calls, cancelled, attempt = script
    async with serving(tmp_path) as (manager, url):
        settings = WorkerSettings(manager=url, directory=str(tmp_path / "w1"), concurrency=1)
        worker = MirrorWorker("w1", settings, attempt)
        task = asyncio.create_task(worker.run())
        try:
            done = await wait_until_async(
                lambda: job(manager, "a", status="success"), "a to succeed on its second attempt"
            )
            assert (done.attempts, done.size, done.version) == (2, 5, "v1")
            assert done.error_msg == ""
            await wait_until_async(lambda: job(manager, "b", status="syncing"), "b to start once a freed the only slot")
            assert calls == [("a", 1), ("a", 2), ("b", 1)]
            await manager.command("b", "stop")
            await wait_until_async(lambda: cancelled == ["b"], "b's attempt to be cancelled")
            assert (await job(manager, "b")).status == "paused"  # type: ignore[union-attr]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_worker_registers_again_with_a_new_manager_session(tmp_path: Path, script: Any) -> None:
    _, cancelled, attempt = script
    async with serving(tmp_path) as (manager, url):
        await manager.command("a", "disable")
        settings = WorkerSettings(manager=url, directory=str(tmp_path / "w1"), concurrency=2)
        worker = MirrorWorker("w1", settings, attempt)
        task = asyncio.create_task(worker.run())
        try:
            await wait_until_async(lambda: job(manager, "b", status="syncing"), "b running")
            first = manager.links["w1"]
            # What a restart looks like to the worker: its session is no longer the manager's.
            manager.session = "another"
            first.wake.set()
            await wait_until_async(lambda: manager.links.get("w1") not in (None, first), "re-register")
            # Its running job was reported and kept, not lost.
            assert (await job(manager, "b")).status == "syncing"  # type: ignore[union-attr]
            assert cancelled == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert cancelled == ["b"]  # a worker that stops cancels what it runs


async def test_reload_worker_rereads_its_settings_and_registers_again(tmp_path: Path, script: Any) -> None:
    _, _, attempt = script
    async with serving(tmp_path) as (manager, url):
        for name in ("a", "b"):
            await manager.command(name, "disable")
        settings = WorkerSettings(manager=url, directory=str(tmp_path / "w1"), concurrency=1)
        reloaded = WorkerSettings(manager=url, directory=str(tmp_path / "w1"), concurrency=3)
        worker = MirrorWorker("w1", settings, attempt, reload=lambda: reloaded)
        task = asyncio.create_task(worker.run())
        try:
            await wait_until_async(lambda: "w1" in manager.links, "w1 to register")
            assert manager.links["w1"].concurrency == 1
            assert await manager.reload("w1") == Reloaded(worker="w1", reloading=True)
            await wait_until_async(
                lambda: "w1" in manager.links and manager.links["w1"].concurrency == 3,
                "w1 to register again with its new concurrency",
            )
            assert worker.settings is reloaded
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
