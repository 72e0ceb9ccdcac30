"""The tracker's own look at an origin, for an announce that claims a task's file changed.

A new generation drops every hash, lease and bitfield of a task and restarts every peer on it, so a claim
that the origin's file changed is taken only when an origin fetch bears it out (core.announce): the
tracker asks the origin itself for the file's first byte, as a peer's probe does, and compares. A look that
bears a claim out serves every like claim; one that contradicts it is repeated for a later claim, but not
sooner than ``recheck`` seconds after it, and one is in flight per URL at a time: claims in a loop cost the
origin at most one small request every ``recheck`` seconds.

When the tracker cannot see the origin (another network, credentials only the peers hold, an error), the
claim stands when reporters on BAN_QUORUM different hosts make the same one within ``claim_ttl`` seconds:
the bar a ban needs too, so one host can no more restart a swarm than empty it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from shoal.core.announce import BAN_QUORUM
from shoal.core.errors import OriginError
from shoal.core.manifest import OriginIdentity
from shoal.peer.origin import Origin

log = logging.getLogger("shoal.tracker")
RECHECK = 2.0
"""Seconds after a look before another may be taken for a claim it contradicts."""
LOOK_TIMEOUT = 10.0
"""Seconds; a look that takes longer counts as not seeing the origin: the claimant's announce waits for it."""


class OriginCheck:
    def __init__(
        self,
        *,
        enabled: bool = True,
        recheck: float = RECHECK,
        claim_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.recheck = recheck
        self.claim_ttl = claim_ttl
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._seen: dict[str, tuple[float, OriginIdentity | None]] = {}
        """url -> (when, what the origin described; None: the tracker could not see it)"""
        self._looking: dict[str, asyncio.Task[OriginIdentity | None]] = {}
        self._claims: dict[tuple[str, OriginIdentity], dict[str, float]] = {}
        """(url, claimed identity) -> host -> when it claimed it"""

    async def confirm(self, url: str, claim: OriginIdentity, host: str) -> OriginIdentity | None:
        """What the origin at ``url`` describes now, as far as the tracker can tell; None when it cannot
        tell (it cannot see the origin and too few hosts agree on ``claim``)."""
        seen = await self._look(url, claim) if self.enabled else None
        if seen is not None:
            return seen
        now = self.clock()
        hosts = self._claims.setdefault((url, claim), {})
        hosts[host] = now
        for key, claimants in list(self._claims.items()):
            for h in [h for h, when in claimants.items() if now - when > self.claim_ttl]:
                del claimants[h]
            if not claimants:
                del self._claims[key]
        if len(hosts) >= BAN_QUORUM:
            self._claims.pop((url, claim), None)
            return claim
        return None

    async def _look(self, url: str, claim: OriginIdentity) -> OriginIdentity | None:
        cached = self._seen.get(url)
        if cached is not None:
            when, seen = cached
            if seen is not None and seen.same_version(claim):
                return seen
            # The origin may have changed since that look: look again, but not sooner than ``recheck``
            # after it, so claims in a loop cannot make the tracker hammer the origin.
            wait = when + self.recheck - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
        task = self._looking.get(url)
        if task is None:
            task = self._looking[url] = asyncio.create_task(self._probe(url))
            task.add_done_callback(lambda _: self._looking.pop(url, None))
        return await asyncio.shield(task)

    async def _probe(self, url: str) -> OriginIdentity | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(LOOK_TIMEOUT):
                identity: OriginIdentity | None = (await Origin(url, self._session, {}).probe()).identity
        except TimeoutError:
            log.info("cannot check the origin for a claimed change: no answer in %g s (%s)", LOOK_TIMEOUT, url)
            identity = None
        except OriginError as exc:
            log.info("cannot check the origin for a claimed change: %s", exc)
            identity = None
        self._seen[url] = (self.clock(), identity)
        if len(self._seen) > 4096:  # claims about many URLs: keep the recent ones
            for old in sorted(self._seen, key=lambda u: self._seen[u][0])[:2048]:
                del self._seen[old]
        return identity

    async def aclose(self) -> None:
        for task in list(self._looking.values()):
            task.cancel()
        await asyncio.gather(*self._looking.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
