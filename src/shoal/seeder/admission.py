"""Whom the wire seeder serves a private torrent to, when the fleet's tracker runs elsewhere: the tracker's
answer (core.bt_admission), asked over its authenticated JSON route and remembered briefly.

A seeder with its tracker embedded asks the tracker's admissions in process (cli.seed wires that); one
with ``--tracker`` asks ``GET {tracker}/v1/swarms/{INFO_HASH}/admitted?address=IP`` with the fleet's
request credential (the route is the fleet's, as every ``/v1/`` route of a tracker with a token is; in a
cluster the swarm's owner answers).

Rules, and why:

- One question per host and swarm, not per handshake: a yes is remembered for ADMITTED_SECONDS (or until
  the admission runs out, if sooner), a no for REFUSED_SECONDS, so a client that has just announced is
  asked about again soon, and a stranger knocking in a loop costs the tracker one request every few
  seconds per torrent. Handshakes that arrive together for one host and swarm share one request.
- Bounded: at most CACHE_LIMIT answers are remembered (all are forgotten at once past it).
- Fail closed: a tracker that does not answer, or answers something else, is a no (logged), since a
  private torrent must not be served to a host nobody vouched for; the client tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import msgspec

from shoal.core.errors import TrackerUnreachable
from shoal.core.messages import SwarmAdmission
from shoal.core.tracker_choice import TrackerChoice, parse_trackers
from shoal.http.credentials import Credentials
from shoal.http.tracker_failover import ask_in_turn

log = logging.getLogger("shoal.seeder.wire")

ADMITTED_SECONDS = 30.0
"""How long a yes is remembered (at most until the admission runs out)."""
REFUSED_SECONDS = 2.0
"""How long a no is remembered."""
CACHE_LIMIT = 10_000
"""Answers remembered, all hosts and swarms together."""
TIMEOUT = aiohttp.ClientTimeout(total=5, sock_connect=3)


class TrackerAdmission:
    """The wire seeder's ``WireAdmission`` (seeder.wire) from a tracker elsewhere. Its session is the caller's."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        trackers: str,
        credentials: Credentials,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.choice = TrackerChoice(parse_trackers(trackers))
        self.credentials = credentials
        self.clock = clock
        self.wall_clock = wall_clock
        self._answers: dict[tuple[bytes, str], tuple[bool, float]] = {}
        self._asking: dict[tuple[bytes, str], asyncio.Future[bool]] = {}

    async def admits(self, info_hash: bytes, address: str) -> bool:
        key = (info_hash, address)
        remembered = self._answers.get(key)
        if remembered is not None and remembered[1] > self.clock():
            return remembered[0]
        asking = self._asking.get(key)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(info_hash, address))
            self._asking[key] = asking
            asking.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(asking)  # a handshake that goes away does not cancel the others' question

    async def _ask(self, info_hash: bytes, address: str) -> bool:
        try:
            answer = await ask_in_turn(self.choice, lambda tracker: self._ask_at(tracker, info_hash, address))
        except TrackerUnreachable as exc:
            log.warning("cannot ask the tracker whether %s may be served %s: %s", address, info_hash.hex(), exc)
            return False
        now = self.clock()
        if answer.admitted and answer.until is not None:
            keep = min(ADMITTED_SECONDS, max(0.0, answer.until - self.wall_clock()))
        else:
            keep = ADMITTED_SECONDS if answer.admitted else REFUSED_SECONDS
        if len(self._answers) >= CACHE_LIMIT:
            self._answers.clear()
        self._answers[(info_hash, address)] = (answer.admitted, now + keep)
        return answer.admitted

    async def _ask_at(self, tracker: str, info_hash: bytes, address: str) -> SwarmAdmission:
        url = f"{tracker}/v1/swarms/{info_hash.hex()}/admitted"
        headers = self.credentials.tracker_headers(self.wall_clock())
        try:
            async with self.session.get(
                url,
                params={"address": address},
                headers=headers,
                timeout=TIMEOUT,
                ssl=self.credentials.tls_for(tracker),
            ) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = exc or type(exc).__name__
            raise TrackerUnreachable(f"cannot reach the tracker at {tracker}: {reason}", tracker=tracker) from exc
        if resp.status >= 500:
            raise TrackerUnreachable(f"the tracker at {tracker} failed: HTTP {resp.status}", tracker=tracker)
        if resp.status != 200:
            log.warning(
                "the tracker at %s refused the admission question: HTTP %d %s", tracker, resp.status, body[:200]
            )
            return SwarmAdmission(admitted=False)
        try:
            return msgspec.json.decode(body, type=SwarmAdmission)
        except msgspec.DecodeError as exc:
            log.warning("the tracker at %s answered the admission question with %s", tracker, exc)
            return SwarmAdmission(admitted=False)
