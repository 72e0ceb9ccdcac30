"""The manager's side of a log read (shoal.mirror.log_relay) in process, with a real SQLite store: the
command goes to the job's worker, only that worker's answer is taken, and a read nobody answers ends.
(Real processes and the HTTP routes are tests/integration/test_mirror_log_links.py's.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal.core.errors import LogUnavailable, NotFound, ProtocolError
from shoal.mirror.log_relay import LogRelay
from shoal.mirror.manager import MirrorManager
from shoal.mirror.messages import LogAnswer, LogPiece, SendLog
from shoal.testing.clock import FakeClock
from shoal.testing.poll import wait_until_async
from tests.integration.test_mirror_manager import T0, config, job

RUN = "a_2026-12-06_21-30-05.log"
PIECE = LogPiece(run=RUN, latest=RUN, runs=[RUN], size=12, start=0, end=12, text="hello world\n")


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[MirrorManager]:
    jobs = job("a", extra='env = { API_TOKEN = "t0ken-value" }\n') + job("never", extra='worker = "w9"\n')
    async with MirrorManager(config(tmp_path, jobs), clock=FakeClock(T0)) as made:
        await made.register("w1", "", 2, [])
        await made.register("w2", "", 2, [])
        await made.tick()  # job a starts, on w1 or w2
        yield made


def log_command(manager: MirrorManager, worker: str) -> SendLog | None:
    return next((c for c in manager.links[worker].outbox if isinstance(c, SendLog)), None)


def taken(manager: MirrorManager, *workers: str) -> None:
    """The workers' polls took everything sent to them so far (so the next log command is the only one)."""
    for worker in workers:
        manager.links[worker].acknowledge(manager.links[worker].seq)


async def test_a_read_goes_to_the_jobs_worker_and_takes_only_its_answer(manager: MirrorManager) -> None:
    relay = LogRelay(manager)
    worker = (await manager.job("a")).worker
    assert worker in ("w1", "w2")
    other = "w2" if worker == "w1" else "w1"
    reading = asyncio.create_task(relay.read("a", None, offset=None, limit=4096))
    command = await wait_until_async(lambda: log_command(manager, worker), "the log command in the outbox")
    assert command.job.name == "a" and command.run is None and command.offset is None and command.limit == 4096
    assert command.job.env == {"API_TOKEN": "t0ken-value"}  # the spec goes along: the worker redacts with it
    assert log_command(manager, other) is None
    assert not relay.deliver(other, command.id, LogAnswer(piece=PIECE))  # not the worker it asked
    assert not relay.deliver(worker, "unknown", LogAnswer(piece=PIECE))
    assert relay.deliver(worker, command.id, LogAnswer(piece=PIECE))
    answered = await reading
    assert (answered.job, answered.worker, answered.run, answered.text) == ("a", worker, RUN, "hello world\n")
    assert not relay.deliver(worker, command.id, LogAnswer(piece=PIECE))  # answered once only


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (LogAnswer(error="job a has no run log x", status=404), NotFound),
        (LogAnswer(error="bad name", status=400), ProtocolError),
        (LogAnswer(error="permission denied", status=503), LogUnavailable),
    ],
)
async def test_a_workers_refusal_becomes_the_readers_error(
    manager: MirrorManager, answer: LogAnswer, error: type[Exception]
) -> None:
    relay = LogRelay(manager)
    worker = (await manager.job("a")).worker
    assert worker is not None
    reading = asyncio.create_task(relay.read("a", RUN, offset=10, limit=100))
    command = await wait_until_async(lambda: log_command(manager, worker), "the log command in the outbox")
    assert command.run == RUN and command.offset == 10
    relay.deliver(worker, command.id, answer)
    if error is NotFound:  # not on the job's worker: the other live one is asked too, and has none either
        other = "w2" if worker == "w1" else "w1"
        asked = await wait_until_async(lambda: log_command(manager, other), "the other worker asked")
        relay.deliver(other, asked.id, answer)
    with pytest.raises(error, match=answer.error):
        await reading


async def test_a_run_is_read_on_the_worker_that_ran_it_after_the_job_moved(manager: MirrorManager) -> None:
    relay = LogRelay(manager)
    first = (await manager.job("a")).worker
    assert first is not None
    second = "w2" if first == "w1" else "w1"
    await manager.command("a", "restart", worker=second)  # the job's next run goes to the other worker
    assert manager.log_holders(await manager.job("a")) == [second, first]

    reading = asyncio.create_task(relay.read("a", RUN, offset=None))
    asked = await wait_until_async(lambda: log_command(manager, second), "the job's worker asked first")
    assert log_command(manager, first) is None  # one worker at a time, the likeliest first
    relay.deliver(second, asked.id, LogAnswer(error=f"job a has no run log {RUN}", status=404))
    earlier = await wait_until_async(lambda: log_command(manager, first), "then the worker that ran it before")
    assert earlier.run == RUN
    relay.deliver(first, earlier.id, LogAnswer(piece=PIECE))
    answered = await reading
    assert (answered.worker, answered.running_on, answered.text) == (first, second, "hello world\n")
    taken(manager, first, second)

    # The latest run is the job's worker's alone; with the earlier worker gone, its runs are said to be there.
    latest = asyncio.create_task(relay.read("a", None, offset=None))
    asked = await wait_until_async(lambda: log_command(manager, second), "the latest asked of the job's worker")
    relay.deliver(second, asked.id, LogAnswer(piece=PIECE))
    assert (await latest).worker == second and log_command(manager, first) is None
    taken(manager, second)
    await manager.remove_worker(first)
    reading = asyncio.create_task(relay.read("a", RUN, offset=None))
    asked = await wait_until_async(lambda: log_command(manager, second), "the live worker asked")
    relay.deliver(second, asked.id, LogAnswer(error=f"job a has no run log {RUN}", status=404))
    with pytest.raises(LogUnavailable, match=f"it may be on {first}, not live now") as caught:
        await reading
    assert caught.value.status == 503


async def test_a_read_nobody_answers_is_a_504_and_its_command_is_withdrawn(manager: MirrorManager) -> None:
    relay = LogRelay(manager, wait=0.05)
    worker = (await manager.job("a")).worker
    assert worker is not None
    with pytest.raises(LogUnavailable, match=f"worker {worker} did not send job a's log") as caught:
        await relay.read("a", None, offset=None)
    assert caught.value.status == 504
    assert log_command(manager, worker) is None


async def test_reads_that_cannot_reach_a_worker_fail_at_once(manager: MirrorManager) -> None:
    relay = LogRelay(manager)
    with pytest.raises(NotFound, match="job never has not run yet"):
        await relay.read("never", None, offset=None)
    with pytest.raises(ProtocolError, match="is not the name of a run log"):
        await relay.read("a", "../../etc/passwd", offset=None)
    worker = (await manager.job("a")).worker
    assert worker is not None
    await manager.remove_worker(worker)
    with pytest.raises(LogUnavailable, match=f"on worker {worker}, which is not live") as caught:
        await relay.read("a", None, offset=None)
    assert caught.value.status == 503
