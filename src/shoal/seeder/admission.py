"""Whom the wire seeder serves a private torrent to, when the fleet's tracker runs elsewhere: the tracker's
answer (core.bt_admission), asked over its authenticated JSON route and remembered briefly.

A seeder with its tracker embedded asks the tracker's admissions in process (cli.seed wires that); one
with ``--tracker`` asks ``GET {tracker}/v1/swarms/{INFO_HASH}/admitted?address=IP`` with the fleet's
request credential (the route is the fleet's, as every ``/v1/`` route of a tracker with a token is; in a
cluster the swarm's owner answers).

The question is the tracker client's (peer.tracker_client.TrackerClient.admitted): its credential, TLS,
failover between the trackers of a list, owner hints in a cluster and error mapping; this module decides
what a handshake makes of the answer.

Rules, and why:

- One question per host and swarm, not per handshake: a yes is remembered for ADMITTED_SECONDS (or until
  the admission runs out, if sooner), a no for REFUSED_SECONDS, so a client that has just announced is
  asked about again soon, and a stranger knocking in a loop costs the tracker one request every few
  seconds per torrent. Handshakes that arrive together for one host and swarm share one request.
- Bounded: at most CACHE_LIMIT answers are remembered (all are forgotten at once past it).
- Fail closed: a tracker that does not answer, or answers something else, is a no (logged), since a
  private torrent must not be served to a host nobody vouched for; the client tries again later. A refusal
  or a reply that is not the protocol is remembered as a no for REFUSED_SECONDS (asking again at once would
  get the same); no answer at all is not remembered (the next handshake asks again).
- A busy tracker (TrackerBusy: it sheds load and says when to ask again) is a no too, remembered for its
  ``Retry-After`` within REFUSED_SECONDS..ADMITTED_SECONDS, and is neither waited out nor passed over:
  the handshake cannot wait seconds for it (clients time handshakes out and try the peer again later),
  asking again sooner is the load it asked to be spared, and the other trackers of a cluster would only
  forward the question to the same owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from shoal.core.errors import TrackerBusy, TrackerUnavailable, TrackerUnreachable
from shoal.peer.tracker_client import TrackerClient

log = logging.getLogger("shoal.seeder.wire")

ADMITTED_SECONDS = 30.0
"""How long a yes is remembered (at most until the admission runs out)."""
REFUSED_SECONDS = 2.0
"""How long a no is remembered."""
CACHE_LIMIT = 10_000
"""Answers remembered, all hosts and swarms together."""


class TrackerAdmission:
    """The wire seeder's ``WireAdmission`` (seeder.wire) from a tracker elsewhere, asked through ``client``."""

    def __init__(
        self,
        client: TrackerClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
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
            answer = await self.client.admitted(info_hash, address)
        except TrackerUnreachable as exc:
            log.warning("cannot ask the tracker whether %s may be served %s: %s", address, info_hash.hex(), exc)
            return False
        except TrackerBusy as exc:
            log.info("%s is not served %s for now: %s", address, info_hash.hex(), exc)
            return self._remember(
                info_hash, address, False, min(ADMITTED_SECONDS, max(REFUSED_SECONDS, exc.retry_after))
            )
        except TrackerUnavailable as exc:
            log.warning("the tracker did not answer whether %s may be served %s: %s", address, info_hash.hex(), exc)
            return self._remember(info_hash, address, False, REFUSED_SECONDS)
        if answer.admitted and answer.until is not None:
            keep = min(ADMITTED_SECONDS, max(0.0, answer.until - self.wall_clock()))
        else:
            keep = ADMITTED_SECONDS if answer.admitted else REFUSED_SECONDS
        return self._remember(info_hash, address, answer.admitted, keep)

    def _remember(self, info_hash: bytes, address: str, admitted: bool, seconds: float) -> bool:
        if len(self._answers) >= CACHE_LIMIT:
            self._answers.clear()
        self._answers[(info_hash, address)] = (admitted, self.clock() + seconds)
        return admitted
