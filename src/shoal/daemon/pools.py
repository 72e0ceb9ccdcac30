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
- A pool the tracker refuses (removed: 404; a token that no longer does: 401, 403) is said once in the log
  and asked about again only every REFUSED_SECONDS: an operator who removes a pool must not face a fleet
  that heartbeats it every second forever, and one who creates it again gets its members back.
- A member's id is derived from its secret (core.pool.member_id_for), kept in the cache's index, so a
  restarted daemon is the same member and nobody else can be; every heartbeat, report and leave carries it.
- A pushed URL is checked against the pool's allow-list and the internal addresses rule
  (core.push_policy) with the addresses this host resolves its name to, before the fetch: the tracker
  checked with its own resolver, which may answer differently.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from shoal.core import pool_api
from shoal.core.download_values import Stats
from shoal.core.errors import NotFound, PoolRefused, ShoalError, TrackerUnavailable, UsageError
from shoal.core.pool import MemberStatus, check_pool_name
from shoal.core.pool_messages import Heartbeat, HeartbeatReply, MemberReport, WorkItem
from shoal.core.push_policy import refused as push_refused
from shoal.core.retry import Backoff, Retries
from shoal.core.tracker_choice import TrackerChoice
from shoal.daemon.config import PoolSpec
from shoal.daemon.fetcher import Fetch, Fetcher
from shoal.http.credentials import Credentials
from shoal.http.pool_transport import run_call
from shoal.http.resolve import resolve
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_store import CacheStore

log = logging.getLogger("shoal.daemon.pools")

REPORT_SECONDS = 0.5
HEARTBEAT_BACKOFF = Backoff(1.0, 4.0)
REFUSED_SECONDS = 60.0
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
    secret: str = ""
    """The secret ``member_id`` is derived from (core.pool.member_id_for)."""


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
        credentials: Credentials | None = None,
    ) -> None:
        self.pool = pool
        self.credentials = credentials
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
            await self._run(
                pool_api.leave(self.pool.name, self.identity.member_id, secret=self.identity.secret), seconds=2
            )

    async def check(self) -> None:
        """One heartbeat, answered at once: PoolRefused when the tracker refuses this member (no such pool,
        no token or a wrong one), TrackerUnavailable when no tracker answers. Run before a join at runtime,
        so its caller hears why it failed; a pool of the daemon's start is kept asking instead."""
        await self._run(self._heartbeat(await asyncio.to_thread(self._free), wait=0, version=None))

    def _heartbeat(self, free: int, *, wait: float, version: int | None) -> pool_api.Call[HeartbeatReply]:
        identity = self.identity
        beat = Heartbeat(identity.name, identity.url, identity.site, identity.rack, free)
        return pool_api.heartbeat(
            self.pool.name, identity.member_id, beat, wait=wait, version=version, secret=identity.secret
        )

    async def _run(self, call: pool_api.Call[R], *, seconds: float = 10) -> R:
        """Send ``call`` and read its reply (core.pool_api's mapping, over http.pool_transport)."""
        return await run_call(
            self.session, self.trackers, call, token=self.pool.token, seconds=seconds, credentials=self.credentials
        )

    async def _poll_forever(self) -> None:
        version: int | None = None
        retry = Retries(HEARTBEAT_BACKOFF)
        refused = ""  # the refusal last logged: the same one again is not
        while True:
            call = self._heartbeat(await asyncio.to_thread(self._free), wait=POLL_SECONDS, version=version)
            try:
                reply = await self._run(call, seconds=POLL_SECONDS + 10)
            except PoolRefused as exc:
                version = None
                if exc.status in (401, 403, 404):
                    if str(exc) != refused:
                        log.warning("pool %s: %s; asking again every %g s", self.pool.name, exc, REFUSED_SECONDS)
                        refused = str(exc)
                    await asyncio.sleep(REFUSED_SECONDS)
                else:
                    log.warning("pool %s: heartbeat failed: %s", self.pool.name, exc)
                    await asyncio.sleep(retry.next_delay())
                continue
            except TrackerUnavailable as exc:
                log.warning("pool %s: heartbeat failed: %s", self.pool.name, exc)
                version = None
                await asyncio.sleep(retry.next_delay())
                continue
            if refused:
                log.info("pool %s: the tracker takes this member's heartbeats again", self.pool.name)
                refused = ""
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
            reason = push_refused(url, item.allow, await resolve(url))
            if reason is not None:
                raise UsageError(f"this member does not fetch it: {reason}")
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
            identity = self.identity
            await self._run(pool_api.report(self.pool.name, job_id, identity.member_id, body, secret=identity.secret))
        except PoolRefused as exc:
            if exc.status == 409 and status is MemberStatus.RUNNING:
                # The job was cancelled (or this member marked left and then assigned again): the
                # heartbeat reply says what to do; a report that no longer fits is dropped.
                log.info("pool %s: job %s: %s", self.pool.name, job_id, exc)
            else:
                log.warning("pool %s: report on job %s refused: %s", self.pool.name, job_id, exc)
        except TrackerUnavailable as exc:
            log.warning("pool %s: report on job %s failed: %s", self.pool.name, job_id, exc)


class Memberships:
    """The pools this daemon is a member of, joined at its start (``--pool``) or at runtime (``shoal pool
    join``, over the control socket), each a :class:`PoolMember` until it leaves or the daemon stops.

    A runtime join lasts until the daemon stops, like a pool left at runtime: the daemon's command line (or
    its service unit) is where membership is kept, and no token is written to the cache directory."""

    def __init__(self, make: Callable[[PoolSpec], PoolMember]) -> None:
        self._make = make
        self._members: dict[str, PoolMember] = {}
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._members)

    async def start(self, pools: Iterable[PoolSpec]) -> None:
        """Join ``pools`` (the daemon's ``--pool``): each keeps asking the tracker until it answers."""
        async with self._lock:
            for spec in pools:
                member = self._make(spec)
                self._members[spec.name] = await member.__aenter__()

    async def join(self, spec: PoolSpec) -> bool:
        """Join ``spec``'s pool once the tracker takes this member's heartbeat (PoolRefused or
        TrackerUnavailable otherwise, and nothing changes); False when it was a member already, with the
        same token. A new token replaces the old one."""
        check_pool_name(spec.name)
        async with self._lock:
            current = self._members.get(spec.name)
            if current is not None and current.pool == spec:
                return False
            member = self._make(spec)
            await member.check()
            if current is not None:
                await current.__aexit__(None, None, None)
            self._members[spec.name] = await member.__aenter__()
            return True

    async def leave(self, name: str) -> None:
        """Leave the pool ``name``: its downloads stop and the tracker is told. NotFound when not a member."""
        async with self._lock:
            member = self._members.pop(name, None)
            if member is None:
                raise NotFound(f"this daemon is not a member of pool {name!r}")
            await member.__aexit__(None, None, None)

    async def close(self) -> None:
        """Leave every pool (the daemon stops)."""
        async with self._lock:
            members, self._members = list(self._members.values()), {}
            await asyncio.gather(*(m.__aexit__(None, None, None) for m in members))
