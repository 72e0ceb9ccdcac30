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

In a cluster, a member that forwarded a request to the task's owner names the owner in its reply: in
core.owner_hint.OWNER_HEADER on any reply, a 503 included (read here for every call about a task, before
the reply becomes a message or an error), and in a forwarded announce's body (``AnnounceResponse.owner``,
which trackers older than the header send alone). The client then asks the owner about that task (its
announces and hash look-ups) directly, and when the owner does not answer, its list as before, at once
(core.owner_hint). A BitTorrent swarm's admission question (:meth:`TrackerClient.admitted`) follows the
same rule, keyed by the info-hash in hex (the swarm's ownership key, tracker.bt).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from shoal.core.errors import TrackerBusy, TrackerUnavailable, TrackerUnreachable
from shoal.core.messages import AnnounceRequest, AnnounceResponse, HashesResponse, SwarmAdmission
from shoal.core.owner_hint import OWNER_HEADER, OwnerHints
from shoal.core.retry import busy_delay
from shoal.core.tracker_choice import TrackerChoice, parse_trackers
from shoal.core.tracker_replies import read_reply
from shoal.http.credentials import Credentials
from shoal.http.tracker_failover import ask_in_turn

log = logging.getLogger("shoal.peer")
TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)
ADMISSION_TIMEOUT = aiohttp.ClientTimeout(total=5, sock_connect=3)
"""The admission question's: a BitTorrent handshake waits on its answer, and clients time handshakes out."""
_JSON_BODY = {"Content-Type": "application/json"}
T = TypeVar("T")


class TrackerClient:
    """The tracker API at one tracker or several: ``trackers`` is a base URL, a comma-separated list of them
    (already checked: core.tracker_choice.parse_trackers), or a sequence of URLs. Every call goes to the
    current tracker and on to the next when one does not answer (core.tracker_choice's rule). With
    ``credentials``, every call carries the fleet's request credential (and goes over the fleet's TLS), and
    the ticket of each task's last announce reply is kept for the fetches from peers (:meth:`ticket`)."""

    def __init__(
        self,
        trackers: str | Sequence[str],
        session: aiohttp.ClientSession,
        *,
        rng: random.Random | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        urls = parse_trackers(trackers) if isinstance(trackers, str) else tuple(u.rstrip("/") for u in trackers)
        self.choice = TrackerChoice(urls)
        self.session = session
        self.rng = rng or random.Random()
        self.credentials = credentials or Credentials()
        self._tickets: dict[str, str] = {}
        self.hints = OwnerHints()

    def ticket(self, task_id: str) -> str:
        """The ticket the tracker last gave this peer for ``task_id`` ("" for none: no fleet token)."""
        return self._tickets.get(task_id, "")

    async def _once(
        self,
        method: str,
        path: str,
        kind: type[T],
        body: bytes | None,
        task_id: str,
        time_limit: aiohttp.ClientTimeout = TIMEOUT,
    ) -> tuple[T, str]:
        """One call, at the task's owner when a hint names one, else (or when the owner does not answer) at
        the list's trackers in turn; the reply and the base URL of the tracker that gave it."""
        if task_id and (owner := self.hints.target(task_id)) is not None:
            try:
                return await self._at(owner, method, path, kind, body, time_limit, task_id), owner
            except TrackerUnreachable as exc:
                self.hints.failed(owner, time.monotonic())
                log.warning("the tracker owning task %s does not answer (%s); asking its list", task_id[:12], exc)
        answered = ""

        def attempt(url: str) -> Awaitable[T]:
            nonlocal answered
            answered = url
            return self._at(url, method, path, kind, body, time_limit, task_id)

        return await ask_in_turn(self.choice, attempt), answered

    async def _at(
        self,
        tracker: str,
        method: str,
        path: str,
        kind: type[T],
        body: bytes | None,
        time_limit: aiohttp.ClientTimeout = TIMEOUT,
        task_id: str = "",
    ) -> T:
        """One call at ``tracker``; an owner it names for ``task_id`` (OWNER_HEADER) is learnt whatever the
        reply, so a peer shed by the owner through a forward asks the owner next time."""

        def refused(message: str, status: int) -> TrackerUnavailable:
            return TrackerUnavailable(f"tracker answered {status}: {message}", tracker=tracker)

        headers = self.credentials.tracker_headers(time.time())
        if body is not None:
            headers.update(_JSON_BODY)
        try:
            async with self.session.request(
                method,
                f"{tracker}{path}",
                data=body,
                headers=headers,
                timeout=time_limit,
                ssl=self.credentials.tls_for(tracker),
            ) as resp:
                raw = await resp.read()
                reason, content_type = resp.reason or "", resp.headers.get("Content-Type", "")
                retry_after = resp.headers.get("Retry-After")
                named = resp.headers.get(OWNER_HEADER)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnreachable(
                f"cannot reach the tracker at {tracker}: {exc or type(exc).__name__}", tracker=tracker
            ) from exc
        if named and task_id:
            self.hints.learn(task_id, named, tracker, time.monotonic())
        ctype = content_type.split(";")[0]
        return read_reply(tracker, resp.status, reason, ctype, raw, kind, refused, retry_after)

    async def _call(
        self, method: str, path: str, kind: type[T], body: bytes | None = None, *, wait_busy: bool, task_id: str = ""
    ) -> tuple[T, str]:
        while True:
            try:
                return await self._once(method, path, kind, body, task_id)
            except TrackerBusy as exc:
                if not wait_busy:
                    raise
                delay = busy_delay(exc.retry_after, self.rng)
                # The tracker's words say why it asks to wait (core.tracker_replies): busy is only one reason.
                log.info("%s; asking again in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def announce(self, task_id: str, request: AnnounceRequest, *, wait_busy: bool = True) -> AnnounceResponse:
        body = msgspec.json.encode(request)
        wait = wait_busy and request.event != "stopped"
        path = f"/v1/tasks/{task_id}/announce"
        try:
            reply, via = await self._call("POST", path, AnnounceResponse, body, wait_busy=wait, task_id=task_id)
        finally:
            if request.event == "stopped":
                self.hints.forget(task_id)  # the peer left: an owner named on the way out (or not) is moot
        if reply.ticket:
            self._tickets[task_id] = reply.ticket
        elif request.event == "stopped":
            self._tickets.pop(task_id, None)
        if reply.owner and request.event != "stopped":
            self.hints.learn(task_id, reply.owner, via, time.monotonic())
        return reply

    async def hashes(self, task_id: str, since: int) -> HashesResponse:
        path = f"/v1/tasks/{task_id}/hashes?since={since}"
        reply, _ = await self._call("GET", path, HashesResponse, wait_busy=True, task_id=task_id)
        return reply

    async def admitted(self, info_hash: bytes, address: str) -> SwarmAdmission:
        """Whether the tracker admitted the host at ``address`` to the BitTorrent swarm ``info_hash``
        (core.bt_admission; ``GET /v1/swarms/{info_hash}/admitted``, answered by the swarm's owner). Asked
        with ADMISSION_TIMEOUT, and never waits out a busy tracker (TrackerBusy reaches the caller): a
        handshake waits on the answer."""
        key = info_hash.hex()
        path = f"/v1/swarms/{key}/admitted?address={quote(address, safe='')}"
        reply, via = await self._once("GET", path, SwarmAdmission, None, key, ADMISSION_TIMEOUT)
        if reply.owner:
            self.hints.learn(key, reply.owner, via, time.monotonic())
        return reply
