"""The peer's side of the tracker API: announce and hash look-ups. Bodies are core.messages' structs;
a reply becomes its message or an error by core.tracker_replies' one mapping (a refusal is
TrackerUnavailable to a peer: it can only try again), and aiohttp's errors are mapped at this edge.

A busy tracker (503 with ``Retry-After``: it sheds load) is waited out here, for every caller alike (the
join, the daemon's and the seeder's announces, hash look-ups): the call sleeps the tracker's figure with
jitter (core.retry.busy_delay) and asks again, for as long as the tracker stays busy. A busy tracker is up,
so the caller never sees it as down: no origin fallback, no giving up. Two kinds of call do not wait:
``wait_busy=False`` (the download's announcer, which rebuilds what it says after the wait instead of
sending a stale announce again) gets TrackerBusy, and a ``stopped`` announce is not sent again (the peer is
leaving; the tracker forgets it after its TTL anyway, and a departing process must not wait on a busy one).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TypeVar

import aiohttp
import msgspec

from shoal.core.errors import TrackerBusy, TrackerUnavailable
from shoal.core.messages import AnnounceRequest, AnnounceResponse, HashesResponse
from shoal.core.retry import busy_delay
from shoal.core.tracker_replies import read_reply
from shoal.http.credentials import Credentials

log = logging.getLogger("shoal.peer")
TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)
_JSON_BODY = {"Content-Type": "application/json"}
T = TypeVar("T")


class TrackerClient:
    """With ``credentials``, every call carries the fleet's request credential (and goes over the fleet's
    TLS), and the ticket of each task's last announce reply is kept for the fetches from peers
    (:meth:`ticket`)."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        rng: random.Random | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.rng = rng or random.Random()
        self.credentials = credentials or Credentials()
        self._ssl = self.credentials.tls_for(self.base_url)
        self._tickets: dict[str, str] = {}

    def ticket(self, task_id: str) -> str:
        """The ticket the tracker last gave this peer for ``task_id`` ("" for none: no fleet token)."""
        return self._tickets.get(task_id, "")

    def _refused(self, message: str, status: int) -> TrackerUnavailable:
        return TrackerUnavailable(f"tracker answered {status}: {message}", tracker=self.base_url)

    async def _once(self, method: str, path: str, kind: type[T], body: bytes | None) -> T:
        url = f"{self.base_url}{path}"
        headers = self.credentials.tracker_headers(time.time())
        if body is not None:
            headers.update(_JSON_BODY)
        try:
            async with self.session.request(
                method, url, data=body, headers=headers, timeout=TIMEOUT, ssl=self._ssl
            ) as resp:
                raw = await resp.read()
                reason, content_type = resp.reason or "", resp.headers.get("Content-Type", "")
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnavailable(
                f"cannot reach the tracker at {self.base_url}: {exc or type(exc).__name__}",
                tracker=self.base_url,
            ) from exc
        ctype = content_type.split(";")[0]
        return read_reply(self.base_url, resp.status, reason, ctype, raw, kind, self._refused, retry_after)

    async def _call(self, method: str, path: str, kind: type[T], body: bytes | None = None, *, wait_busy: bool) -> T:
        while True:
            try:
                return await self._once(method, path, kind, body)
            except TrackerBusy as exc:
                if not wait_busy:
                    raise
                delay = busy_delay(exc.retry_after, self.rng)
                log.info("tracker busy (%s); asking again in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def announce(self, task_id: str, request: AnnounceRequest, *, wait_busy: bool = True) -> AnnounceResponse:
        body = msgspec.json.encode(request)
        wait = wait_busy and request.event != "stopped"
        reply = await self._call("POST", f"/v1/tasks/{task_id}/announce", AnnounceResponse, body, wait_busy=wait)
        if reply.ticket:
            self._tickets[task_id] = reply.ticket
        elif request.event == "stopped":
            self._tickets.pop(task_id, None)
        return reply

    async def hashes(self, task_id: str, since: int) -> HashesResponse:
        return await self._call("GET", f"/v1/tasks/{task_id}/hashes?since={since}", HashesResponse, wait_busy=True)
