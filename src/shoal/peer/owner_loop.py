"""The owner loop of a download (peer.engine): the state of the download and of its current attempt, the
loop that hands the attempt's core (core.download) each event its I/O tasks post, and the carrying out of the
actions the core returns (fetches from the origin and from peers, have-stream watchers, the announcer, the
piece server's offers, the whole-file hashes, the periodic checkpoint of the pieces written).

Only the owner loop changes this state; the I/O tasks report back through events (core.events).
:class:`~shoal.peer.engine.Download` builds on it with a download's course: joining, one attempt after
another, finishing (the last report, the whole-file checks, the refetch of suspect pieces, the placing) and
leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable

import aiohttp

from shoal.core.digests import PublishedDigest
from shoal.core.download import DownloadCore
from shoal.core.download_actions import (
    Action,
    Carry,
    FetchOrigin,
    FetchPeer,
    Follow,
    Note,
    PlanLater,
    Release,
    ReportBeside,
    Unfollow,
    WakeAnnouncer,
    WakeHashes,
)
from shoal.core.download_values import Stats
from shoal.core.errors import ShoalError
from shoal.core.events import Event, OriginPiece, PeerPiece, Wake
from shoal.core.ids import PeerIdentity, identity_url, task_id_for_url
from shoal.core.manifest import Manifest
from shoal.core.pieces import Changes
from shoal.core.rate import TokenBucket
from shoal.core.tickets import TICKET_HEADER
from shoal.core.tracker_choice import served_by_tracker
from shoal.core.whole_file import WholeFileCheck
from shoal.peer.announcer import Announcer, Applied
from shoal.peer.config import GetConfig
from shoal.peer.content_task import ContentSeed
from shoal.peer.fetchers import PeerAccess, fetch_origin, fetch_peer, watch_haves
from shoal.peer.origin import Origin
from shoal.peer.prefix_hash import FdSink, PrefixHash
from shoal.peer.server import PieceServer, ServedTask
from shoal.peer.tasks import Tasks
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.partfile import PartFile

log = logging.getLogger("shoal.peer")
SAVE_STATE_SECONDS = 1.0


class OwnerLoop:
    """A download's state and its owner loop (module docstring); :class:`~shoal.peer.engine.Download` runs it."""

    def __init__(
        self,
        url: str,
        config: GetConfig,
        session: aiohttp.ClientSession,
        server: PieceServer,
        *,
        identity: PeerIdentity | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        before_write: Callable[[Manifest], Awaitable[None]] | None = None,
        tracker: TrackerClient | None = None,
    ) -> None:
        """``before_write`` is awaited once the manifest is known and before anything is written (again
        after a restart): the daemon's cache reserves the file's length there, and an error it raises
        ends the download. ``tracker`` is a client of ``config.tracker`` shared with other downloads (the
        daemon's: the tracker it fails over to is theirs too); by default the download makes its own."""
        self.url = url
        self.before_write = before_write
        self.config = config
        self.session = session
        self.server = server
        self.identity = identity or PeerIdentity.from_secret(secrets.token_hex(16))
        self.peer_id = self.identity.peer_id
        self.rng = rng or random.Random()
        self.clock = clock
        self.url_task = task_id_for_url(
            identity_url(url, config.ignore_qp), tag=config.task_tag, digest=config.digest or ""
        )
        self._left = False  # leave() ran
        self._distrusted: set[str] = set()  # content tasks named for the digest that did not hold it
        # A node of the fleet, or a seeder with its tracker embedded (its /files need the fleet's credential),
        # is asked as a member of the fleet; any other origin never sees the fleet's credential.
        fleet_origin = config.fleet_origin or served_by_tracker(url, config.tracker)
        self.origin = Origin(url, session, config.headers, fleet=config.credentials if fleet_origin else None)
        if tracker is None and config.tracker:
            tracker = TrackerClient(config.tracker, session, credentials=config.credentials)
        self.tracker = tracker if config.tracker else None
        self.stats = Stats()
        self.first_piece = asyncio.Event()
        """Set once a verified piece is on disk (the first one fetched, or one a rerun found)."""
        self._bucket = TokenBucket(config.download_rate, burst=config.download_rate) if config.download_rate else None
        self._reset_attempt()

    def _reset_attempt(self) -> None:
        self.task_id = self.url_task  # joining may switch to a content task (peer.join)
        self.via_alias = False
        self.content: ContentSeed | None = None  # the content task this download registered, seeded beside
        self.generation = 0
        self.manifest: Manifest | None = None
        self.part: PartFile | None = None
        self.served: ServedTask | None = None  # its `have`: the pieces verified and offered to peers
        self.core: DownloadCore | None = None  # once the manifest is known
        self.content_hashes: dict[int, str] = {}  # a content task's every hash, checked against its id
        self.range_ok = True
        self.direct = self.tracker is None
        self._interval = 5.0  # the tracker's, until the core takes over
        self._events: asyncio.Queue[Event | Applied] = asyncio.Queue()
        self._tasks = Tasks()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.announcer: Announcer | None = None  # with a tracker, once the core is made
        self._checkpoint_task: asyncio.Future[None] | None = None
        self.prefix: PrefixHash | None = None
        self.published: PublishedDigest | None = None  # the origin's whole-file digest, from the probe
        self.checks: tuple[WholeFileCheck, ...] = ()

    @property
    def withheld(self) -> set[int]:
        """Pieces on disk that are not offered to peers (the tracker holds other hashes for them)."""
        return self.core.book.withheld if self.core is not None else set()

    def unreported(self) -> dict[int, str]:
        return dict(self.core.book.unreported) if self.core is not None else {}

    # -- the owner loop ------------------------------------------------------------------------------

    async def _loop(self) -> None:
        core = self.core
        assert core is not None
        saved_at = self.clock()
        while not core.book.complete:
            self._carry_out(core.plan(self.clock()))
            self._handle(await self._events.get())
            while not self._events.empty():
                self._handle(self._events.get_nowait())
            if self.clock() - saved_at > SAVE_STATE_SECONDS:
                log.debug("%s", core.describe())
                saved_at = self.clock()
                if self._checkpoint_task is None or self._checkpoint_task.done():
                    self._checkpoint_task = asyncio.ensure_future(self._checkpoint(dict(core.book.written)))

    def _post(self, item: Event | Applied) -> None:
        self._events.put_nowait(item)

    def _handle(self, item: Event | Applied) -> None:
        """Hand one event to the core and carry out what it decides."""
        assert self.core is not None
        if isinstance(item, OriginPiece):
            log.debug("piece %d from the origin", item.index)
        elif isinstance(item, PeerPiece):
            log.debug("piece %d from peer %s", item.index, item.peer_id)
        if isinstance(item, Applied):
            try:
                self._carry_out(self.core.handle(item.event, self.clock()))
            finally:
                item.handled.set_result(None)
        else:
            self._carry_out(self.core.handle(item, self.clock()))

    async def _checkpoint(self, written: dict[int, str]) -> None:
        """Record the pieces written so far as verified, so that a rerun after a kill resumes from them.

        Run every SAVE_STATE_SECONDS beside the owner loop (never awaited by it). There is no fsync here: a
        rerun hashes every recorded piece again, so a crash that lost written bytes costs only their
        refetch. The disk is kept busy instead by the writeback each piece starts as it is written
        (PartFile.write), and the fsync before the final rename waits only for what has not reached it yet:
        an fsync every second would stall the file's writers while the journal commits (single_peer.py).
        """
        part = self.part
        if part is None or not part.is_open:
            return
        with contextlib.suppress(ShoalError):
            await asyncio.to_thread(part.save_state, written)

    async def _save_state(self) -> None:
        if self.prefix is not None:
            await self.prefix.aclose()  # its read in progress ends before the part file closes
        if self._checkpoint_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._checkpoint_task)
        if self.part is not None and self.part.is_open:
            with contextlib.suppress(ShoalError):
                await asyncio.to_thread(self.part.save_state, dict(self.core.book.written) if self.core else {})
            self.part.close()

    def _follow_whole_file(self) -> None:
        """Start hashing the whole file as its prefix fills: the checks' algorithms and the caller's."""
        assert self.part is not None and self.core is not None
        names = {*self.config.file_hashes, *(check.algorithm for check in self.checks)}
        fd = self.config.stream_fd
        if names or fd is not None:
            sink = FdSink(fd) if fd is not None else None
            self.prefix = PrefixHash(self.part, self.core.manifest, self.core.book.on_disk, names, sink)
            self.prefix.start()

    # -- carrying out the core's actions (owner only) ----------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        assert self.core is not None and self.part is not None
        manifest, part, post, announcer = self.core.manifest, self.part, self._post, self.announcer
        for action in actions:
            match action:
                case FetchOrigin(run):
                    log.debug("pieces %d-%d from the origin: asking", run[0], run[-1])
                    self._tasks.spawn(fetch_origin(self.origin, manifest, part, run, post, self._throttle))
                case FetchPeer(peer_id, base_url, run):
                    url = f"{self._peer_base(base_url)}/v1/tasks/{self.task_id}/data?gen={self.generation}"
                    hashes, access = self.core.book.hashes, self._peer_access()
                    self._tasks.spawn(
                        fetch_peer(
                            self.session, url, peer_id, manifest, part, run, hashes, post, self._throttle, access=access
                        )
                    )
                case Follow(peer_id, base_url):
                    url = f"{self._peer_base(base_url)}/v1/tasks/{self.task_id}/haves?gen={self.generation}"
                    watch = watch_haves(self.session, url, peer_id, manifest, post, access=self._peer_access())
                    self._watchers[peer_id] = self._tasks.spawn(watch)
                case Unfollow(peer_id):
                    if peer_id in self._watchers:
                        self._watchers.pop(peer_id).cancel()
                case Carry(changes):
                    self._apply(changes)
                case WakeAnnouncer(news):
                    if announcer is not None:
                        announcer.wake(news=news)
                case WakeHashes():
                    if announcer is not None:
                        announcer.want_hashes()
                case PlanLater(seconds):
                    self._tasks.spawn(self._wake_after(seconds))
                case Release(pieces, delay) if announcer is not None:
                    self._tasks.spawn(announcer.release(pieces, delay=delay))
                case ReportBeside() if announcer is not None:
                    self._tasks.spawn(announcer.once(beside=True))
                case Note(level, text):
                    log.log(level, "%s", text)

    def _peer_base(self, base_url: str) -> str:
        """A peer's base URL in the fleet's scheme: https when this peer serves TLS (peer.server)."""
        scheme = self.config.credentials.peer_scheme
        return base_url if scheme == "http" else scheme + base_url.removeprefix("http")

    def _peer_access(self) -> PeerAccess:
        """What a request to a peer carries now: the ticket of our latest announce of the task, the TLS."""
        ticket = self.tracker.ticket(self.task_id) if self.tracker is not None else ""
        headers = {TICKET_HEADER: ticket} if ticket else {}
        return PeerAccess(headers, self.config.credentials.peer_tls())

    def _apply(self, changes: Changes) -> None:
        """Carry out a change to the book (core.pieces) on the piece server and the whole-file hashes."""
        assert self.served is not None
        for _ in changes.written:
            self.first_piece.set()
            if self.prefix is not None:
                self.prefix.grew()
        for index, why in changes.dropped:
            log.warning("piece %d on disk %s; fetching it again", index, why)
            self.served.discard(index)
            if self.prefix is not None:
                self.prefix.invalidate(index)
        for index in changes.unserve:
            self.served.discard(index)
        for index in changes.serve:
            self.served.add(index)
        for index in changes.serve_at_once:
            self.served.add(index, at_once=True)  # from the origin (or an earlier run): only we hold it
        for index in changes.refused:
            log.warning("the tracker did not take our hash of piece %d; not offering it to peers", index)

    # -- I/O tasks ---------------------------------------------------------------------------------

    async def _wake_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._post(Wake())

    async def _throttle(self, nbytes: int) -> None:
        if self._bucket is not None:
            delay = self._bucket.reserve(nbytes, self.clock())
            if delay:
                await asyncio.sleep(delay)
