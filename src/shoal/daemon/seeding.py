"""Seeding cached content: every swarm task a cached file was fetched as stays served for as long as the
file is cached, across restarts of the daemon.

One asyncio task per swarm task: it puts the file on the piece server with every piece held, announces
``completed`` and then every interval the tracker asks for. It stops, withdrawing the file and telling the
tracker ``stopped``, when the entry leaves the cache (evicted here or by ``shoal cache evict`` in another
process: the loop looks at the index each round), and it forgets the task when the tracker says the
task has moved to another generation (the origin changed): the cached bytes are still good under their
digest, but no longer that URL's content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shoal.core.bitfield import Bitfield
from shoal.core.errors import TrackerUnavailable
from shoal.core.ids import PeerIdentity
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceRequest
from shoal.core.retry import Backoff, Retries
from shoal.peer.server import PieceServer, ServedTask
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.cache_index import SeededTask
from shoal.storage.cache_store import CacheStore

log = logging.getLogger("shoal.daemon")
STOP_SECONDS = 2.0


class Seeding:
    """Start and stop are explicit; ``add`` a task once its file is in the cache."""

    def __init__(
        self,
        store: CacheStore,
        server: PieceServer,
        tracker: TrackerClient,
        *,
        identity: PeerIdentity,
        host: str,
        site: str,
        rack: str,
        retry_seconds: float,
    ) -> None:
        self.store = store
        self.server = server
        self.tracker = tracker
        self.identity = identity
        self.host = host
        self.site = site
        self.rack = rack
        self.retry_seconds = retry_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Seed every task recorded for a cached file (after a restart)."""
        for record in await asyncio.to_thread(self.store.index.tasks):
            self.add(record)

    def add(self, record: SeededTask) -> None:
        old = self._tasks.pop(record.task_id, None)
        if old is not None:
            old.cancel()
        identity = OriginIdentity(record.length, record.etag, record.last_modified)
        manifest = Manifest.for_identity(identity)
        have = Bitfield(manifest.piece_count)
        for index in range(manifest.piece_count):
            have.add(index)
        served = self.server.publish(
            record.task_id, record.generation, manifest, self.store.object_path(record.digest), have
        )
        task = asyncio.create_task(self._keep(record, served))
        self._tasks[record.task_id] = task
        task.add_done_callback(lambda t: self._done(record.task_id, t))

    @property
    def task_ids(self) -> list[str]:
        return sorted(self._tasks)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(task_id) is task:
            del self._tasks[task_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("seeding %s failed", task_id[:16], exc_info=task.exception())

    def _request(self, record: SeededTask, event: str) -> AnnounceRequest:
        served = self.server.tasks.get(record.task_id)
        return AnnounceRequest(
            peer_id=self.identity.peer_id,
            secret=self.identity.secret,
            url=record.url,
            port=self.server.port or 1,
            event=event,
            host=self.host,
            site=self.site,
            rack=self.rack,
            generation=record.generation,
            bitfield=served.have.encode() if served is not None else None,
        )

    async def _keep(self, record: SeededTask, served: ServedTask) -> None:
        event = "completed"
        retry = Retries(Backoff(min(1.0, self.retry_seconds), self.retry_seconds))
        try:
            while True:
                entry = await asyncio.to_thread(self.store.index.get, record.digest)
                if entry is None or not entry.cached:
                    log.info("%s left the cache; no longer seeding task %s", record.digest[:16], record.task_id[:16])
                    return
                try:
                    reply = await self.tracker.announce(record.task_id, self._request(record, event))
                except TrackerUnavailable as exc:
                    log.info("announce while seeding failed: %s", exc)
                    await asyncio.sleep(retry.next_delay())
                    continue
                retry.reset()
                event = "update"
                if reply.restart or reply.generation != record.generation:
                    log.info("task %s moved on (the origin changed); no longer seeding it", record.task_id[:16])
                    await asyncio.to_thread(self.store.index.forget_task, record.task_id)
                    return
                await asyncio.sleep(reply.interval)
        finally:
            # Added again meanwhile (the file was fetched again): the new task serves and announces it now.
            if self.server.withdraw(record.task_id, served):
                await self._stopped(record)

    async def _stopped(self, record: SeededTask) -> None:
        """Tell the tracker at once that we no longer hold the task (bounded: the daemon may be stopping)."""
        with contextlib.suppress(TrackerUnavailable, TimeoutError):
            async with asyncio.timeout(STOP_SECONDS):
                await self.tracker.announce(record.task_id, self._request(record, "stopped"))
