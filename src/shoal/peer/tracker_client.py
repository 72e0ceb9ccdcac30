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

A client may have several trackers (the members of one cluster): a call goes to the current one and, when
that does not answer (TrackerUnreachable: no connection, a timeout, a 5xx that is not busy), on to the next
at once; the client then stays with the one that answered, and logs one line. The rule is
core.tracker_choice's. Only when none answers does the caller see TrackerUnreachable, naming them all.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import TypeVar

import aiohttp
import msgspec

from shoal.core.errors import TrackerBusy, TrackerUnavailable, TrackerUnreachable
from shoal.core.messages import AnnounceRequest, AnnounceResponse, HashesResponse
from shoal.core.retry import busy_delay
from shoal.core.tracker_choice import TrackerChoice, parse_trackers
from shoal.core.tracker_replies import read_reply
from shoal.http.tracker_failover import ask_in_turn

log = logging.getLogger("shoal.peer")
TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)
_JSON_BODY = {"Content-Type": "application/json"}
T = TypeVar("T")


class TrackerClient:
    """The tracker API at one tracker or several: ``trackers`` is a base URL, a comma-separated list of them
    (already checked: core.tracker_choice.parse_trackers), or a sequence of URLs. Every call goes to the
    current tracker and on to the next when one does not answer (core.tracker_choice's rule)."""

    def __init__(
        self, trackers: str | Sequence[str], session: aiohttp.ClientSession, *, rng: random.Random | None = None
    ) -> None:
        urls = parse_trackers(trackers) if isinstance(trackers, str) else tuple(u.rstrip("/") for u in trackers)
        self.choice = TrackerChoice(urls)
        self.session = session
        self.rng = rng or random.Random()

    async def _once(self, method: str, path: str, kind: type[T], body: bytes | None) -> T:
        return await ask_in_turn(self.choice, lambda url: self._at(url, method, path, kind, body))

    async def _at(self, tracker: str, method: str, path: str, kind: type[T], body: bytes | None) -> T:
        def refused(message: str, status: int) -> TrackerUnavailable:
            return TrackerUnavailable(f"tracker answered {status}: {message}", tracker=tracker)

        headers = _JSON_BODY if body is not None else None
        try:
            async with self.session.request(
                method, f"{tracker}{path}", data=body, headers=headers, timeout=TIMEOUT
            ) as resp:
                raw = await resp.read()
                reason, content_type = resp.reason or "", resp.headers.get("Content-Type", "")
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnreachable(
                f"cannot reach the tracker at {tracker}: {exc or type(exc).__name__}", tracker=tracker
            ) from exc
        ctype = content_type.split(";")[0]
        return read_reply(tracker, resp.status, reason, ctype, raw, kind, refused, retry_after)

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
        return await self._call("POST", f"/v1/tasks/{task_id}/announce", AnnounceResponse, body, wait_busy=wait)

    async def hashes(self, task_id: str, since: int) -> HashesResponse:
        return await self._call("GET", f"/v1/tasks/{task_id}/hashes?since={since}", HashesResponse, wait_busy=True)
