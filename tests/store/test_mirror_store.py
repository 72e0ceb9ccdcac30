"""The MirrorStore contract, run against every SQL backend (see conftest.db_url)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from shoal.core.mirror_job import JobState, JobStatus
from shoal.storage.mirror_store import JobRecord, MirrorStore, WorkerRecord

T0 = 1_700_000_000.125
SPEC = {"name": "debian", "provider": "http", "upstream": "http://example.org/debian/", "interval": 600.0}


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[MirrorStore]:
    async with MirrorStore(db_url) as opened:
        yield opened


def job(name: str = "debian", **fields: object) -> JobRecord:
    return replace(JobRecord(name=name, spec={**SPEC, "name": name}, state=JobState(), updated=T0), **fields)


async def test_a_job_reads_back_as_written(store: MirrorStore) -> None:
    state = JobState(
        status=JobStatus.FAILED,
        last_update=T0 - 3600.5,
        last_started=T0 - 10.25,
        last_ended=T0 - 0.125,
        error_msg="hook pre_exec exited 3: ünïcode tail\n" * 50,
        attempts=2,
        retry=True,
    )
    written = job(state=state, worker="w1", run_id="ab" * 16, next_schedule=T0 + 600.75, size=2**40, version="v")
    written = replace(written, size_text="1,099,511,627,776")
    await store.put_job(written)
    assert await store.job("debian") == written
    assert await store.jobs() == [written]


async def test_put_replaces_and_keeps_others(store: MirrorStore) -> None:
    await store.put_jobs([job("b"), job("a")])
    changed = job("a", state=JobState(status=JobStatus.SYNCING, last_started=T0, attempts=1), worker="w2")
    await store.put_job(changed)
    assert [j.name for j in await store.jobs()] == ["a", "b"]
    assert await store.job("a") == changed
    assert await store.job("b") == job("b")
    assert await store.job("missing") is None


async def test_delete_jobs_counts_only_existing(store: MirrorStore) -> None:
    await store.put_jobs([job("a"), job("b"), job("c")])
    assert await store.delete_jobs(["a", "c", "nope"]) == 2
    assert [j.name for j in await store.jobs()] == ["b"]
    assert await store.delete_jobs([]) == 0


async def test_workers_register_touch_and_delete(store: MirrorStore) -> None:
    w = WorkerRecord("w1", "http://127.0.0.1:1234", 2, T0, T0)
    await store.put_worker(w)
    assert await store.workers() == [w]
    assert await store.touch_worker("w1", T0 + 5.5) is True
    assert await store.worker("w1") == replace(w, last_seen=T0 + 5.5)
    assert await store.touch_worker("ghost", T0) is False
    again = replace(w, url="http://127.0.0.1:999", concurrency=4, registered=T0 + 9, last_seen=T0 + 9)
    await store.put_worker(again)
    assert await store.workers() == [again]
    assert await store.delete_worker("w1") is True
    assert await store.delete_worker("w1") is False
    assert await store.workers() == []


async def test_state_survives_reopening(db_url: str) -> None:
    written = job(state=JobState(status=JobStatus.SUCCESS, last_update=T0, last_started=T0 - 1, last_ended=T0))
    async with MirrorStore(db_url) as store:
        await store.put_job(written)
    async with MirrorStore(db_url) as store:
        assert await store.job("debian") == written
