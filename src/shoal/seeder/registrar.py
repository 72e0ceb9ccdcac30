"""Telling the trackers about published files.

- **Shoal's tracker**, once per file: the file's content task (its id is the BLAKE3 digest) with the
  manifest and every piece hash, reported as a peer that fetched all of them from the origin, which the
  seeder is. The seeder then leaves the task (``stopped``): it is the task's *origin*, not a peer, so
  getters split the file between them under origin leases and each byte leaves the seeder about once,
  instead of every getter pulling every piece from it.
- **The BitTorrent tracker**, every interval: this seeder as a seed (``left=0``) of the file's torrent, on
  the wire seeder's port; ``stopped`` when the file is unpublished.

Both go over HTTP, also when the tracker runs in this process: services meet through the wire protocol.
A tracker that cannot be reached is retried with backoff; publishing never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote_from_bytes

import aiohttp
from fastbencode import bdecode

from shoal.core.errors import TrackerUnavailable, TrackerUnreachable
from shoal.core.ids import PeerIdentity
from shoal.core.messages import AnnounceRequest, piece_hash_bytes
from shoal.core.retry import Backoff, Retries
from shoal.core.tickets import SEEDER_HOLDER
from shoal.http.credentials import Credentials
from shoal.http.tracker_failover import ask_in_turn
from shoal.peer.tracker_client import TrackerClient
from shoal.seeder.catalog import SeededFile

log = logging.getLogger("shoal.seeder")
T = TypeVar("T")

TRACKER_BACKOFF = Backoff(1.0, 30.0)
BT_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)


@dataclass(slots=True)
class _FirstRound:
    """What the attempt made before publication achieved."""

    registered: bool = False
    interval: float | None = None
    """The BitTorrent tracker's interval, if the first announce went through."""


class Registrar:
    """One task per published file keeps it registered; ``published``/``unpublished`` come from the Seeder."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tracker: str,
        *,
        bt_port: int,
        file_url: str,
        announce_interval: float,
        ip: str = "",
        credentials: Credentials | None = None,
    ) -> None:
        self.session = session
        self.client = TrackerClient(tracker, session, credentials=credentials)
        key = self.client.credentials.key
        # A private tracker (a fleet token) takes BitTorrent announces with a passkey only (tracker.bt).
        self._announce_path = f"/announce/{key.passkey(SEEDER_HOLDER)}" if key is not None else "/announce"
        self.bt_port = bt_port
        self.file_url = file_url.rstrip("/")
        self.announce_interval = announce_interval
        self.ip = ip
        # BEP 20 style: a client tag and random bytes. Shoal's own peer ids are text, the wire's 20 bytes.
        self.bt_peer_id = b"-SH0100-" + secrets.token_bytes(12)
        self.identity = PeerIdentity.from_secret(secrets.token_hex(16), "seeder")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._first: dict[str, _FirstRound] = {}

    async def publishing(self, entry: SeededFile) -> None:
        """One attempt at both registrations before the file is published, so a client that fetches the
        torrent the moment it appears already finds the seeder in the swarm (ctorrent, say, would otherwise
        wait out a whole announce interval). Failures are retried later, by ``published``."""
        first = _FirstRound()
        try:
            first.interval = await self._bt_announce(entry, "started")
        except TrackerUnavailable as exc:
            log.warning("%s; will retry", exc)
        try:
            await self._register(entry)
            first.registered = True
        except TrackerUnavailable as exc:
            log.warning("%s; will retry", exc)
        self._first[entry.rel] = first

    def published(self, entry: SeededFile) -> None:
        self._cancel(entry.rel)
        first = self._first.pop(entry.rel, None) or _FirstRound()
        self._tasks[entry.rel] = asyncio.create_task(self._keep(entry, first))

    def unpublished(self, entry: SeededFile) -> None:
        self._cancel(entry.rel)
        task = asyncio.create_task(self._leave(entry))
        self._tasks[f"stopped:{entry.rel}"] = task
        task.add_done_callback(lambda t: self._tasks.pop(f"stopped:{entry.rel}", None))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _cancel(self, rel: str) -> None:
        task = self._tasks.pop(rel, None)
        if task is not None:
            task.cancel()

    async def _keep(self, entry: SeededFile, first: _FirstRound) -> None:
        if not first.registered:
            await self._retrying(lambda: self._register(entry))
        interval = first.interval
        if interval is None:
            interval = await self._retrying(lambda: self._bt_announce(entry, "started"))
        while True:
            await asyncio.sleep(interval)
            interval = await self._retrying(lambda: self._bt_announce(entry, ""))

    async def _leave(self, entry: SeededFile) -> None:
        with contextlib.suppress(TrackerUnavailable):
            await self._bt_announce(entry, "stopped")

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until the tracker answers, backing off (TRACKER_BACKOFF) between attempts."""
        retry = Retries(TRACKER_BACKOFF)
        while True:
            try:
                return await call()
            except TrackerUnavailable as exc:
                delay = retry.next_delay()
                log.warning("%s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _register(self, entry: SeededFile) -> None:
        """Give the Shoal tracker the task's manifest and all its piece hashes (which the task's id commits to,
        so the tracker checks them), and leave the task in the same announce."""
        hashes = entry.hashes.piece_hashes()
        await self.client.announce(
            entry.task_id,
            AnnounceRequest(
                peer_id=self.identity.peer_id,
                secret=self.identity.secret,
                url=f"{self.file_url}/{quote(entry.rel)}",
                port=1,
                event="stopped",
                origin=entry.identity,
                piece_hash_bytes=piece_hash_bytes(tuple(hashes[i] for i in range(len(hashes)))),
            ),
        )
        log.info("registered %s with the tracker as task %s", entry.rel, entry.task_id[:16])

    async def _bt_announce(self, entry: SeededFile, event: str) -> float:
        """One BEP 3 announce as a seed, to the tracker the Shoal announces go to (the client's choice: the
        torrents list the trackers in that order, BEP 12); returns the interval the tracker asked for."""
        return await ask_in_turn(self.client.choice, lambda tracker: self._bt_announce_at(tracker, entry, event))

    async def _bt_announce_at(self, tracker: str, entry: SeededFile, event: str) -> float:
        params: list[tuple[str, bytes | str]] = [
            ("info_hash", entry.info_hash),
            ("peer_id", self.bt_peer_id),
            ("port", str(self.bt_port)),
            ("uploaded", "0"),
            ("downloaded", "0"),
            ("left", "0"),
            ("compact", "1"),
            ("numwant", "0"),
        ]
        if event:
            params.append(("event", event))
        if self.ip:
            params.append(("ip", self.ip))
        # Binary values are percent-encoded byte by byte (BEP 3); urlencode would encode them as UTF-8.
        query = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else v.encode())}" for k, v in params)
        url = f"{tracker}{self._announce_path}?{query}"
        try:
            async with self.session.get(url, timeout=BT_TIMEOUT, ssl=self.client.credentials.tls_for(tracker)) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnreachable(
                f"cannot reach the tracker at {tracker}: BitTorrent announce: {exc or type(exc).__name__}",
                tracker=tracker,
            ) from exc
        if resp.status >= 500:
            raise TrackerUnreachable(f"the tracker at {tracker} failed: HTTP {resp.status}", tracker=tracker)
        try:
            reply = bdecode(body)
        except ValueError as exc:
            raise TrackerUnavailable(f"BitTorrent announce failed: {exc}", tracker=tracker) from exc
        if not isinstance(reply, dict):
            raise TrackerUnavailable("BitTorrent announce: the reply is not a dictionary")
        failure = reply.get(b"failure reason")
        if failure is not None:
            raise TrackerUnavailable(f"BitTorrent announce refused: {failure!r}")
        interval = reply.get(b"interval")
        return float(interval) if isinstance(interval, int) and interval > 0 else self.announce_interval


def quote(rel: str) -> str:
    """A REL as a URL path: each component percent-encoded, slashes kept."""
    return quote_from_bytes(rel.encode(), safe="/")
