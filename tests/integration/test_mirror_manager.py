"""The mirror manager's service in process, with a fake clock and a real SQLite store: retries, stale
reports, lost workers, registration after a restart, concurrency. (The HTTP API and the processes are
tests/integration/test_mirror.py's.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from shoal.core.errors import (
    IllegalTransition,
    NoWorker,
    ProtocolError,
    StaleRun,
    StaleSession,
    UnknownJob,
    UnknownWorker,
)
from shoal.core.mirror_config import MirrorConfig
from shoal.core.mirror_toml import parse_config
from shoal.mirror.manager import MirrorManager
from shoal.mirror.messages import CancelJob, Command, MirrorJobView, Reloaded, RunJob, RunReportReply
from shoal.testing.clock import FakeClock

T0 = 1_800_000_000.0


def config(tmp: Path, jobs: str) -> MirrorConfig:
    return parse_config(f'[manager]\ndb = "sqlite:///{tmp / "m.db"}"\nworker_timeout = "30s"\n' + jobs)


def job(name: str, *, retries: int = 2, interval: str = "10m", extra: str = "") -> str:
    return (
        f'[[jobs]]\nname = "{name}"\nprovider = "command"\nupstream = "x"\ncommand = "true"\n'
        f'interval = "{interval}"\nretries = {retries}\n{extra}'
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def open_manager(tmp_path: Path, clock: FakeClock) -> Callable[[str], Any]:
    @asynccontextmanager
    async def make(jobs: str) -> AsyncIterator[MirrorManager]:
        async with MirrorManager(config(tmp_path, jobs), clock=clock) as manager:
            yield manager

    return make


async def status(manager: MirrorManager, name: str) -> MirrorJobView:
    return next(j for j in await manager.list_jobs(include_disabled=True) if j.name == name)


def runs(commands: list[Command]) -> list[tuple[str, str, int]]:
    return [(c.job.name, c.run_id, c.attempt) for c in commands if isinstance(c, RunJob)]


async def test_a_failed_attempt_is_retried_then_the_run_gives_up(open_manager: Any, clock: FakeClock) -> None:
    async with open_manager(job("a", retries=2)) as manager:
        session = (await manager.register("w1", "", 2, [])).session
        await manager.tick()
        [(name, run_id, attempt)] = runs(await manager.poll("w1", session, 0))
        assert (name, attempt) == ("a", 1)
        await manager.report("a", worker="w1", run_id=run_id, event="syncing")
        assert (await status(manager, "a")).status == "syncing"
        clock.now += 5
        reply = await manager.report("a", worker="w1", run_id=run_id, event="failure", error="rsync exited 23")
        assert reply == RunReportReply(status="pre-syncing", retry=True, attempt=2)
        clock.now += 5
        reply = await manager.report("a", worker="w1", run_id=run_id, event="failure", error="rsync exited 12")
        assert reply.retry is False and reply.status == "failed"
        final = await status(manager, "a")
        assert final.error_msg == "rsync exited 12" and final.attempts == 2
        assert final.last_ended == clock.now and final.next_schedule == clock.now + 600


async def test_a_report_from_a_replaced_run_is_refused(open_manager: Any, clock: FakeClock) -> None:
    async with open_manager(job("a")) as manager:
        session = (await manager.register("w1", "", 2, [])).session
        await manager.tick()
        [(_, first, _)] = runs(await manager.poll("w1", session, 0))
        restarted = await manager.command("a", "restart")
        assert restarted.status == "pre-syncing"
        commands = await manager.poll("w1", session, 1)
        assert [type(c) for c in commands] == [CancelJob, RunJob] and commands[0].run_id == first
        with pytest.raises(StaleRun):
            await manager.report("a", worker="w1", run_id=first, event="success", size=1)
        second = commands[1].run_id
        # A success whose "syncing" report was lost still counts: pre-syncing -> syncing -> success.
        clock.now += 1
        reply = await manager.report("a", worker="w1", run_id=second, event="success", size=42, version="v2")
        assert reply.status == "success"
        done = await status(manager, "a")
        assert (done.size, done.version, done.last_update) == (42, "v2", clock.now)
        with pytest.raises(StaleRun):  # the run is over
            await manager.report("a", worker="w1", run_id=second, event="failure", error="late")
        with pytest.raises(IllegalTransition):
            await manager.command("a", "enable")
        assert (await status(manager, "a")).status == "success"


async def test_a_lost_worker_fails_its_jobs_which_then_run_elsewhere(open_manager: Any, clock: FakeClock) -> None:
    async with open_manager(job("a", extra="")) as manager:
        s1 = (await manager.register("w1", "", 1, [])).session
        await manager.tick()
        assert runs(await manager.poll("w1", s1, 0))
        clock.now += 29
        await manager.tick()
        assert (await status(manager, "a")).status == "pre-syncing"  # not yet: 29 s < 30 s
        clock.now += 1
        await manager.tick()
        lost = await status(manager, "a")
        assert (lost.status, lost.error_msg, lost.next_schedule) == ("failed", "worker lost", clock.now)
        with pytest.raises(StaleSession):
            await manager.poll("w1", s1, 1)  # it must register again
        s2 = (await manager.register("w2", "", 1, [])).session
        await manager.tick()
        [(name, _, attempt)] = runs(await manager.poll("w2", s2, 0))
        assert (name, attempt) == ("a", 1)
        assert (await status(manager, "a")).worker == "w2"


async def test_registration_after_a_restart_keeps_live_runs_and_fails_vanished_ones(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = config(tmp_path, job("kept") + job("gone"))
    async with MirrorManager(cfg, clock=clock) as first:
        session = (await first.register("w1", "", 4, [])).session
        await first.tick()
        assigned = {name: run_id for name, run_id, _ in runs(await first.poll("w1", session, 0))}
        assert set(assigned) == {"kept", "gone"}
    clock.now += 100  # the manager was down longer than the worker timeout
    async with MirrorManager(cfg, clock=clock) as second:
        assert second.session != session
        await second.tick()  # no worker is lost before it had worker_timeout to come back
        assert (await status(second, "kept")).status == "pre-syncing"
        reply = await second.register("w1", "", 4, [("kept", assigned["kept"]), ("stray", "r0")])
        assert reply.lost == ["gone"]
        assert (await status(second, "kept")).status == "pre-syncing"
        gone = await status(second, "gone")
        assert (gone.status, gone.error_msg) == ("failed", "worker lost")
        commands = await second.poll("w1", reply.session, 0)
        assert ("stray", "r0") in [(c.job, c.run_id) for c in commands if isinstance(c, CancelJob)]
        await second.report("kept", worker="w1", run_id=assigned["kept"], event="success", size=7)
        assert (await status(second, "kept")).status == "success"


async def test_a_start_on_a_full_worker_waits_for_a_slot_unless_forced(open_manager: Any, clock: FakeClock) -> None:
    jobs = job("a") + job("b") + job("c") + job("pinned", extra='worker = "w9"\n')
    async with open_manager(jobs) as manager:
        session = (await manager.register("w1", "", 1, [])).session
        clock.now += 1
        await manager.tick()
        [(first, first_run, _)] = runs(await manager.poll("w1", session, 0))
        second, third = sorted({"a", "b", "c"} - {first})
        # tunasync's behaviour: the worker is full, so the start waits instead of being refused.
        waiting = await manager.command(second, "start")
        assert (waiting.status, waiting.queued) == ("none", True)
        assert [(j.name, j.queued) for j in await manager.list_jobs() if j.queued] == [(second, True)]
        forced = await manager.command(second, "start", force=True)  # --force runs it at once
        assert (forced.status, forced.worker, forced.queued) == ("pre-syncing", "w1", False)
        [(name, second_run, _)] = runs(commands := await manager.poll("w1", session, 1))
        assert name == second and [c.force for c in commands if isinstance(c, RunJob)] == [True]
        assert (await manager.command(third, "start")).queued
        await manager.tick()
        assert (await status(manager, third)).status == "none"  # still no slot: it keeps waiting
        for name, run in ((first, first_run), (second, second_run)):
            await manager.report(name, worker="w1", run_id=run, event="success")
        await manager.tick()
        assert [name for name, _, _ in runs(await manager.poll("w1", session, 2))] == [third]
        started = await status(manager, third)
        assert (started.status, started.queued) == ("pre-syncing", False)
        with pytest.raises(NoWorker):  # it names a worker that is not here, force or not
            await manager.command("pinned", "start", force=True)
        with pytest.raises(ProtocolError, match="runs only on worker 'w9'"):
            await manager.command("pinned", "start", worker="w1")
        with pytest.raises(NoWorker):  # no live worker named so: refused, not queued
            await manager.command(first, "start", worker="w2")
        with pytest.raises(UnknownWorker):
            await manager.reload("w9")
        workers = await manager.workers()
        assert [(w.name, w.running, w.live) for w in workers] == [("w1", 1, True)]


async def test_a_run_not_yet_acknowledged_is_sent_again_when_its_worker_registers_again(
    open_manager: Any, clock: FakeClock
) -> None:
    async with open_manager(job("a")) as manager:
        await manager.register("w1", "", 1, [])
        clock.now += 1
        await manager.tick()  # a's run command waits in w1's outbox: w1 reloads before polling it
        reply = await manager.register("w1", "", 2, [])
        assert reply.lost == []
        [(name, run, attempt)] = runs(await manager.poll("w1", reply.session, 0))
        assert (name, attempt) == ("a", 1)
        await manager.report("a", worker="w1", run_id=run, event="success")
        assert (await status(manager, "a")).status == "success"


async def test_a_waiting_start_is_withdrawn_by_a_stop(open_manager: Any, clock: FakeClock) -> None:
    async with open_manager(job("a") + job("b")) as manager:
        session = (await manager.register("w1", "", 1, [])).session
        clock.now += 1
        await manager.tick()
        [(first, run, _)] = runs(await manager.poll("w1", session, 0))
        other = "b" if first == "a" else "a"
        await manager.command(other, "stop")
        assert (await manager.command(other, "start")).queued  # a paused job may be started, so it waits
        await manager.command(other, "disable")
        assert not (await status(manager, other)).queued
        await manager.report(first, worker="w1", run_id=run, event="success")
        await manager.tick()
        assert (await status(manager, other)).status == "disabled"


async def test_set_size_shows_until_the_next_success(open_manager: Any, clock: FakeClock) -> None:
    async with open_manager(job("a")) as manager:
        assert (await manager.set_size("a", 300 << 30)).size == 300 << 30
        session = (await manager.register("w1", "", 1, [])).session
        clock.now += 1
        await manager.tick()
        [(_, run, _)] = runs(await manager.poll("w1", session, 0))
        assert (await status(manager, "a")).size == 300 << 30
        await manager.report("a", worker="w1", run_id=run, event="success", size=5)
        assert (await status(manager, "a")).size == 5
        with pytest.raises(UnknownJob):
            await manager.set_size("nope", 1)


async def test_removing_a_worker_fails_its_jobs_and_flush_drops_disabled_ones(open_manager: Any) -> None:
    async with open_manager(job("a") + job("b")) as manager:
        await manager.register("w1", "", 1, [])
        await manager.tick()
        running = [j.name for j in await manager.list_jobs() if j.status == "pre-syncing"]
        removed = await manager.remove_worker("w1")
        assert removed.jobs_failed == running
        assert await manager.workers() == []
        await manager.command("a", "disable")
        assert (await manager.flush()).removed == ["a"]
        assert [j.name for j in await manager.list_jobs(include_disabled=True)] == ["b"]


async def test_loading_a_changed_config(tmp_path: Path, clock: FakeClock) -> None:
    async with MirrorManager(config(tmp_path, job("a") + job("b")), clock=clock) as manager:
        changes = await manager.load_jobs(config(tmp_path, job("a", interval="1h") + job("c")).jobs)
        assert changes == Reloaded(added=["c"], updated=["a"], disabled=["b"])
        assert (await status(manager, "b")).status == "disabled"
        assert [j.name for j in await manager.list_jobs()] == ["a", "c"]
        assert [j.name for j in await manager.list_jobs(status="disabled")] == []
        assert [j.name for j in await manager.list_jobs(include_disabled=True, status="disabled")] == ["b"]
