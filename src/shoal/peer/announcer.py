"""A download's conversation with the tracker during an attempt: announces and hash look-ups.

Each runs in its own task, woken by the owner loop (shoal.peer.engine) as the core decides
(core.download: WakeAnnouncer, WakeHashes, Release, ReportBeside). What an announce says, and how the
announces and look-ups are paced, is the core's decision (``ask``, ``lease_poll_wait``,
``hash_lookup_wait``); replies go back to the owner loop as events.

A busy tracker (503 with ``Retry-After``, core.errors.TrackerBusy) is not a tracker down: no TrackerDown
goes to the owner loop (whose patience with a silent tracker ends the download), and the announce loop
waits what the tracker asked (core.retry.busy_delay) before asking again, with what the core says then:
an announce built before the wait would report stale progress and ask for leases already granted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from shoal.core.download import DownloadCore
from shoal.core.errors import TrackerBusy, TrackerUnavailable
from shoal.core.events import Announced, Event, HashesArrived, TrackerDown
from shoal.core.messages import AnnounceRequest
from shoal.core.retry import Backoff, Retries, busy_delay
from shoal.peer.tracker_client import TrackerClient

log = logging.getLogger("shoal.peer")
ANNOUNCE_BACKOFF = Backoff(0.5, 5.0)
"""Retries of a tracker that does not answer (core.retry), never slower than its announce interval."""


@dataclass(frozen=True, slots=True)
class Busy:
    """The tracker asked to wait (TrackerBusy): ask again after ``retry_after`` seconds."""

    retry_after: float


@dataclass(slots=True)
class Applied:
    """An announce's reply for the owner loop, and the future the announcer waits on until it is applied."""

    event: Announced
    handled: asyncio.Future[None]


class Announcer:
    def __init__(
        self,
        tracker: TrackerClient,
        task_id: str,
        core: DownloadCore,
        request: Callable[..., AnnounceRequest],
        post: Callable[[Event | Applied], None],
        *,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self.tracker = tracker
        self.task_id = task_id
        self.core = core
        self.request = request
        self.post = post
        self.rng = rng
        self.clock = clock
        self._wake = asyncio.Event()
        self._news = asyncio.Event()  # something to tell the tracker at once
        self._hashes = asyncio.Event()

    def wake(self, *, news: bool = False) -> None:
        if news:
            self._news.set()
        self._wake.set()

    def want_hashes(self) -> None:
        self._hashes.set()

    async def release(self, pieces: tuple[int, ...], *, delay: float) -> None:
        """Give leased pieces back after ``delay``, beside the announce loop, which then asks for others. A
        busy tracker is asked again once its wait is over: until told, it keeps the pieces leased to us."""
        await asyncio.sleep(delay)
        while True:
            sent = await self.send(released=pieces, beside=True)
            if not isinstance(sent, Busy):
                break
            await asyncio.sleep(busy_delay(sent.retry_after, self.rng))
        self._wake.set()

    async def once(self, released: tuple[int, ...] = (), *, beside: bool = False) -> bool:
        """:meth:`send`; True when the tracker answered."""
        return await self.send(released, beside=beside) is True

    async def send(self, released: tuple[int, ...] = (), *, beside: bool = False) -> bool | Busy:
        """Send one announce (what it says: core.ask) and post its reply, or the failure. True when the
        tracker answered, Busy when it sheds load (nothing is posted: it is up), False when it failed.
        ``beside``: sent beside the announce loop, it asks for no leases, and its reply's lease list, which
        may be older than the loop's next one, is not applied."""
        core = self.core
        # Asked and built synchronously (no await before the request is complete): one consistent state.
        ask = core.ask(self.clock(), beside=beside)
        request = self.request(
            done=ask.done,
            released=released,
            fetching=ask.fetching,
            bad_peers=ask.bad_peers,
            want_leases=ask.want_leases,
            want_crossings=ask.want_crossings,
            no_range=ask.no_range,
            received=ask.received,
        )
        try:
            try:
                reply = await self.tracker.announce(self.task_id, request, wait_busy=False)
            except TrackerBusy as exc:
                log.info("%s; announcing again in about %g s", exc, exc.retry_after)  # its words: why
                return Busy(exc.retry_after)
            except TrackerUnavailable as exc:
                self.post(TrackerDown(exc))
                return False
            finally:
                core.answered()
            # The next announce waits until the owner has applied this reply: built before, it would report
            # the same pieces again and ask for leases the reply may already have granted.
            handled = asyncio.get_running_loop().create_future()
            self.post(Applied(Announced(reply, ask.done, leases=not beside), handled))
            await handled
            return True
        finally:
            core.settled(ask)

    async def run(self) -> None:
        """One announce in flight at a time: now when there is news or a need, else every interval."""
        core = self.core
        retry = Retries(ANNOUNCE_BACKOFF, self.rng)
        while True:
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a cancellation that
            # arrives as the event fires, and the task would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(core.interval):
                    await self._wake.wait()
            self._wake.clear()
            if gap := core.lease_poll_wait(self.clock()):
                # Only asking for leases: wait out the poll gap, but news that comes meanwhile goes at once.
                self._news.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(gap):
                        await self._news.wait()
            sent = await self.send()
            if sent is True:
                retry.reset()
            elif isinstance(sent, Busy):
                # The tracker is up and said when to come back: its figure, not a step of the backoff; then
                # the announce goes at once, as it would have.
                retry.reset()
                await asyncio.sleep(busy_delay(sent.retry_after, self.rng))
                self._wake.set()
            else:
                # Never slower than the tracker's interval: it forgets a peer silent for its peer TTL (a
                # few intervals) and leases that peer's pieces to others, so a peer that backed off
                # further while the tracker was down (restarting) would be forgotten once it came back.
                await asyncio.sleep(retry.next_delay(cap=core.interval))

    async def refresh_hashes(self) -> None:
        """Fetch new piece hashes when woken, paced by core.hash_lookup_wait."""
        core = self.core
        seen = 0
        retry = Retries(ANNOUNCE_BACKOFF, self.rng)
        while True:
            await self._hashes.wait()
            if wait := core.hash_lookup_wait(self.clock()):
                await asyncio.sleep(wait)
            self._hashes.clear()
            core.hashes_asked(self.clock())
            try:
                reply = await self.tracker.hashes(self.task_id, max(seen, core.book.hash_seq))
            except TrackerUnavailable as exc:
                log.info("hash refresh failed: %s", exc)
                await asyncio.sleep(retry.next_delay(cap=core.interval))
                self._hashes.set()
                continue
            retry.reset()
            seen = reply.seq
            self.post(HashesArrived(reply.generation, reply.seq, dict(reply.hashes), reply.revoked))
