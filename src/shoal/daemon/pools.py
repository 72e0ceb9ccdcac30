"""Pool membership: the daemon's side of ``shoal pool push``.

For each pool it joined (``--pool NAME[:TOKEN]``) the daemon long-polls the tracker's heartbeat route; the
reply lists its assignments. An assignment is fetched through the daemon's Fetcher (the same swarm
download, cache and seeding as ``shoal get``), with a report of its progress every ``REPORT_SECONDS``,
then placed at the job's destination if it has one and the daemon allows it, and reported done or
failed. A cancelled assignment stops its download; a done one whose file has left the cache is reported
evicted (the heartbeat replies list done assignments too), so the tracker can ask another member for a
replica.

Rules:

- A destination is written only under a directory the daemon's operator allowed (``--pool-dest DIR``):
  whoever may push to a pool must not be able to overwrite any file the daemon can write.
- The tracker being unreachable never stops the daemon: the loop retries with HEARTBEAT_BACKOFF (jittered,
  so a fleet's members do not all come back at once after a tracker restart); its assignments' downloads
  go on meanwhile.
- The calls, their bodies and the mapping of replies are core.pool_api's, shared with ``shoal pool``;
  http.pool_transport sends them.
- On a clean stop the daemon says it leaves, so the tracker hands its assignments' leases on at once
  instead of after the member TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from shoal.core import pool_api
from shoal.core.download import Stats
from shoal.core.errors import PoolRefused, ShoalError, TrackerUnavailable, UsageError
from shoal.core.pool import MemberStatus
from shoal.core.pool_messages import Heartbeat, MemberReport, WorkItem
from shoal.core.retry import Backoff, Retries
from shoal.core.tracker_choice import TrackerChoice
from shoal.daemon.config import PoolSpec
from shoal.daemon.fetcher import Fetch, Fetcher
from shoal.http.pool_transport import run_call
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_store import CacheStore

log = logging.getLogger("shoal.daemon.pools")

REPORT_SECONDS = 0.5
HEARTBEAT_BACKOFF = Backoff(1.0, 4.0)
POLL_SECONDS = 5.0
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Identity:
    """How this daemon appears in its pools."""

    member_id: str
    name: str
    url: str
    site: str = ""
    rack: str = ""


def allowed_dest(dest: str, roots: tuple[Path, ...]) -> Path:
    """``dest`` as a path under one of ``roots`` (symbolic links resolved); UsageError otherwise."""
    path = Path(dest)
    if not path.is_absolute() or path.name in ("", ".", ".."):
        raise UsageError(f"destination {dest!r} is not an absolute file path")
    parent = Path(os.path.realpath(path.parent))
    for root in roots:
        real = Path(os.path.realpath(root))
        if parent == real or real in parent.parents:
            return parent / path.name
    raise UsageError(f"this member does not write under {path.parent} (allowed: --pool-dest)")


class _Rate:
    """Bytes per second over the last few reports (an exponential moving average)."""

    def __init__(self) -> None:
        self.rate = 0.0
        self._last: tuple[float, int] | None = None

    def update(self, done: int) -> float:
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            sample = (done - self._last[1]) / (now - self._last[0])
            self.rate = sample if self.rate == 0 else 0.5 * self.rate + 0.5 * sample
        self._last = (now, done)
        return self.rate


class PoolMember:
    """``async with PoolMember(...)``: membership of one pool, from join to leave."""

    def __init__(
        self,
        pool: PoolSpec,
        *,
        trackers: TrackerChoice,
        session: aiohttp.ClientSession,
        fetcher: Fetcher,
        store: CacheStore,
        identity: Identity,
        dest_roots: tuple[Path, ...] = (),
    ) -> None:
        self.pool = pool
        self.session = session
        self.fetcher = fetcher
        self.store = store
        self.identity = identity
        self.dest_roots = dest_roots
        self.trackers = trackers
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PoolMember:
        self._loop = asyncio.create_task(self._poll_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._loop, *self._jobs.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TrackerUnavailable, PoolRefused):
            await self._run(pool_api.leave(self.pool.name, self.identity.member_id), seconds=2)

    async def _run(self, call: pool_api.Call[R], *, seconds: float = 10) -> R:
        """Send ``call`` and read its reply (core.pool_api's mapping, over http.pool_transport)."""
        return await run_call(self.session, self.trackers, call, token=self.pool.token, seconds=seconds)

    async def _poll_forever(self) -> None:
        version: int | None = None
        retry = Retries(HEARTBEAT_BACKOFF)
        while True:
            identity = self.identity
            beat = Heartbeat(
                identity.name, identity.url, identity.site, identity.rack, await asyncio.to_thread(self._free)
            )
            call = pool_api.heartbeat(self.pool.name, identity.member_id, beat, wait=POLL_SECONDS, version=version)
            try:
                reply = await self._run(call, seconds=POLL_SECONDS + 10)
            except (TrackerUnavailable, PoolRefused) as exc:
                log.warning("pool %s: heartbeat failed: %s", self.pool.name, exc)
                version = None
                await asyncio.sleep(retry.next_delay())
                continue
            retry.reset()
            version = reply.version
            for item in reply.work:
                await self._handle(item)

    def _free(self) -> int:
        usage = self.store.usage()
        return max(usage.capacity - usage.used - usage.reserved, 0)

    async def _handle(self, item: WorkItem) -> None:
        job_id, status = item.job, item.status
        running = self._jobs.get(job_id)
        if status is MemberStatus.CANCELLED:
            if running is not None:
                log.info("pool %s: job %s cancelled", self.pool.name, job_id)
                running.cancel()
                self.fetcher.cancel(item.url)
        elif status is MemberStatus.DONE:
            if running is None and not await asyncio.to_thread(self.fetcher.cached, item.url, item.digest):
                await self._report(job_id, MemberStatus.EVICTED, None)
        elif running is None:
            task = asyncio.create_task(self._fetch(job_id, item))
            self._jobs[job_id] = task
            task.add_done_callback(lambda _t: self._jobs.pop(job_id, None))

    async def _fetch(self, job_id: str, item: WorkItem) -> None:
        url, dest, digest = item.url, item.dest, item.digest
        fetch: Fetch | None = None
        rate = _Rate()

        async def progress(stats: Stats) -> None:
            await self._report(job_id, MemberStatus.RUNNING, stats, rate=rate.update(stats.done))

        async def follow(started: Fetch) -> CacheEntry:
            nonlocal fetch
            fetch = started
            return await started.follow(progress, REPORT_SECONDS)

        try:
            target = allowed_dest(dest, self.dest_roots) if dest else None
            entry, _ = await self.fetcher.obtain(url, headers={}, expected=digest, follow=follow)
            if target is not None:
                await asyncio.to_thread(self.store.place, entry.digest, target)
        except ShoalError as exc:
            log.warning("pool %s: job %s failed: %s", self.pool.name, job_id, exc)
            await self._report(job_id, MemberStatus.FAILED, fetch.stats if fetch else None, error=str(exc))
            return
        stats = fetch.stats if fetch else Stats(total=entry.size, done=entry.size)
        await self._report(job_id, MemberStatus.DONE, stats)
        log.info("pool %s: job %s done (%s)", self.pool.name, job_id, entry.digest[:16])

    async def _report(
        self, job_id: str, status: MemberStatus, stats: Stats | None, *, rate: float = 0.0, error: str = ""
    ) -> None:
        stats = stats or Stats()
        body = MemberReport(
            status,
            stats.done,
            stats.total,
            rate,
            stats.from_origin,
            stats.from_peers,
            error,
            from_rack=stats.from_rack,
            from_racks=stats.from_racks,
            from_sites=stats.from_sites,
        )
        try:
            await self._run(pool_api.report(self.pool.name, job_id, self.identity.member_id, body))
        except PoolRefused as exc:
            if exc.status == 409 and status is MemberStatus.RUNNING:
                # The job was cancelled (or this member marked left and then assigned again): the
                # heartbeat reply says what to do; a report that no longer fits is dropped.
                log.info("pool %s: job %s: %s", self.pool.name, job_id, exc)
            else:
                log.warning("pool %s: report on job %s refused: %s", self.pool.name, job_id, exc)
        except TrackerUnavailable as exc:
            log.warning("pool %s: report on job %s failed: %s", self.pool.name, job_id, exc)
