"""The download engine: the I/O of one download, carrying out what its core decides.

::

    join ──> attempt ──────────────────────────────> complete ──> (seed for upload_time: peer.seeding) ──> stopped
     │          │  origin changed / tracker says restart   │
     │          └──────────────> join again (at most `restarts` times, then OriginChanged)
     └─ tracker unreachable ──> direct from the origin (with --fallback), else TrackerUnavailable

An attempt's state and every decision about it live in :class:`shoal.core.download.DownloadCore` (values in,
actions out, no I/O). The owner loop (:meth:`Download._loop`) hands it each event with the time and carries
out the actions it returns; every I/O task posts events (:mod:`shoal.core.events`): the fetchers and
have-stream watchers (:mod:`shoal.peer.fetchers`), the announcer and hash look-ups
(:mod:`shoal.peer.announcer`). A piece from the origin is offered to peers once the tracker holds its hash;
a piece from a peer is checked against that hash before it is written (docs/architecture.md).

Once every piece is in, the whole file is checked against ``--digest`` and the digest the origin publishes
(:mod:`shoal.core.whole_file`). A file that fails is not a dead end: the pieces that did not come from the
origin are dropped, their peers reported as bad, and fetched again straight from the origin
(:meth:`Download._refetch_suspects`); only the origin's own bytes failing is an IntegrityError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from shoal.core.bitfield import Bitfield
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
from shoal.core.errors import IntegrityError, JoinAgain, OriginChanged, ShoalError, TrackerUnavailable
from shoal.core.events import Event, HashesArrived, OriginPiece, PeerPiece, Wake
from shoal.core.ids import PeerIdentity, identity_url, task_id_for_url
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest
from shoal.core.pieces import Changes
from shoal.core.rate import TokenBucket
from shoal.core.scope_leases import Labels
from shoal.core.tickets import TICKET_HEADER
from shoal.core.tracker_choice import served_by_tracker
from shoal.core.whole_file import WholeFileCheck, failed_check, plan_refetch, whole_file_checks
from shoal.peer.announcer import Announcer, Applied
from shoal.peer.config import GetConfig
from shoal.peer.content_task import ContentSeed, register_content
from shoal.peer.fetchers import PeerAccess, fetch_origin, fetch_peer, watch_haves
from shoal.peer.join import join
from shoal.peer.origin import Origin
from shoal.peer.prefix_hash import FdSink, PrefixHash
from shoal.peer.server import PieceServer, ServedTask
from shoal.peer.tasks import Tasks
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.partfile import PartFile

log = logging.getLogger("shoal.peer")
SAVE_STATE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    size: int
    digest: str | None
    """The ``ALGORITHM:HEX`` the file was checked against (GetConfig.digest), or None."""
    task_id: str
    generation: int
    manifest: Manifest
    hashes: dict[str, str] = field(default_factory=dict)
    """Whole-file hex digests computed while the file downloaded (GetConfig.file_hashes, and the algorithms
    of the whole-file checks: the ``digest``'s, the origin's), by name."""


class Download:
    """One download of one URL. ``run()`` returns when the file is in place; :func:`shoal.peer.seeding.seed`
    serves it on."""

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

    # -- public ------------------------------------------------------------------------------------

    @property
    def withheld(self) -> set[int]:
        """Pieces on disk that are not offered to peers (the tracker holds other hashes for them)."""
        return self.core.book.withheld if self.core is not None else set()

    def unreported(self) -> dict[int, str]:
        return dict(self.core.book.unreported) if self.core is not None else {}

    async def run(self) -> Downloaded:
        for _ in range(self.config.restarts + 1):
            try:
                return await self._attempt()
            except JoinAgain:
                if self.via_alias:
                    # The tracker named it for our digest on the word of peers: not again, for this download.
                    log.warning(
                        "content task %s does not hold %s; downloading the URL's own task",
                        self.task_id[:16],
                        self.config.digest,
                    )
                    self._distrusted.add(self.task_id)
                else:
                    log.warning("the origin's file changed; starting again")
                self.stats.done = 0
                if self.served is not None:
                    # Before the part file goes: until the next attempt publishes its own, the old version's
                    # pieces would be served from whatever file takes its place.
                    self.server.withdraw(self.task_id, self.served)
                if self.part is not None:
                    self.part.discard()  # pieces of the old version must never mix with the new one
            finally:
                await self._tasks.stop()
                if self.prefix is not None:
                    await self.prefix.aclose()
            self._reset_attempt()
        raise OriginChanged(f"the origin's file kept changing ({self.url})", url=self.url)

    async def register_content(self, completed: Downloaded, path: Path | None = None) -> ContentSeed | None:
        """A digest download of a URL task registers its file's content task and serves it from ``path`` (the
        file's, by default; peer.content_task), then vouches for it in an announce of the URL task. None when
        there is none to register; raises TrackerUnavailable."""
        tagged = bool(self.config.task_tag)  # content behind credentials has no public content task
        if (
            self.content is None
            and self.tracker
            and self.core
            and self.config.digest
            and not self.withheld
            and not tagged
        ):
            if self.task_id == self.url_task and not self.direct:
                hashes = [self.core.book.written[i] for i in range(completed.manifest.piece_count)]
                placed = path or completed.path
                args = (self.tracker, self.server, self.announce_request, completed.manifest, placed, hashes)
                self.content = await register_content(*args)
                await self.tracker.announce(self.task_id, self.announce_request(content_task=self.content.task_id))
        return self.content

    async def leave(self) -> None:
        """Stop serving and tell the tracker we are gone, with any origin hashes it has not had yet (once)."""
        if self._left:
            return
        self._left = True
        content = self.content
        if self.served is not None:
            self.server.withdraw(self.task_id, self.served)  # not what another owner serves for the task now
        if content is not None:
            self.server.withdraw(content.task_id, content.served)
        if self.tracker is not None and self.generation and not self.direct:
            with contextlib.suppress(TrackerUnavailable):
                stopped = self.announce_request(event="stopped", done=self.unreported(), received=self.stats.by_scope())
                await self.tracker.announce(self.task_id, stopped)
                if content is not None:
                    content_stopped = self.announce_request(event="stopped", generation=content.generation)
                    await self.tracker.announce(content.task_id, content_stopped)

    # -- joining -----------------------------------------------------------------------------------

    async def _join(self) -> None:
        """Learn the generation and the manifest, checking the origin is still the same file (peer.join)."""
        joined = await join(
            self.url,
            self.task_id,
            tracker=self.tracker,
            origin=self.origin,
            request=self.announce_request,
            fallback=self.config.fallback,
            no_origin=self.config.no_origin,
            spawn=self._tasks.spawn,
            follow_alias=bool(self.config.digest) and not self.config.task_tag,
            distrusted=frozenset(self._distrusted),
            content_tasks=not self.config.task_tag,
        )
        self.task_id, self.manifest, self.generation = joined.task_id, joined.manifest, joined.generation
        self.range_ok, self.direct, self._interval = joined.range_ok, joined.direct, joined.interval
        self.published, self.content_hashes = joined.published, joined.content_hashes
        self.via_alias = joined.via_alias

    def announce_request(
        self, *, event: str = "update", generation: int | None = None, **extra: object
    ) -> AnnounceRequest:
        """An announce of the task as we hold it now (our bitfield, labels and address), with ``extra``'s fields."""
        bitfield = self.served.have.encode() if self.served is not None else None
        host = "" if self.config.listen_host in ("0.0.0.0", "::", "") else self.config.listen_host
        return AnnounceRequest(
            peer_id=self.peer_id,
            url=self.url,
            port=self.server.port or 1,
            event=event,
            host=host,
            site=self.config.site,
            rack=self.config.rack,
            generation=self.generation if generation is None else generation,
            bitfield=bitfield,
            secret=self.identity.secret,
            **extra,  # type: ignore[arg-type]
        )

    # -- one attempt -------------------------------------------------------------------------------

    async def _attempt(self) -> Downloaded:
        await self._join()
        manifest = self.manifest
        assert manifest is not None
        self.stats.total = manifest.length
        self.stats.piece_length = manifest.piece_length
        if self.before_write is not None:
            await self.before_write(manifest)
        self.part = PartFile(self.config.dest, self.task_id, manifest)
        try:
            resumed = await asyncio.to_thread(self.part.open)
        except BaseException:
            # Failed, or cancelled while its thread re-hashes (an open still running closes what it opened):
            # the file is closed, and its state stays as the last run saved it.
            self.part.close()
            raise
        self.served = self.server.publish(
            self.task_id, self.generation, manifest, self.part.path, Bitfield(manifest.piece_count)
        )
        self.core = core = DownloadCore(
            manifest,
            peer_id=self.peer_id,
            generation=self.generation,
            tuning=self.config.tuning(),
            stats=self.stats,
            rng=self.rng,
            labels=Labels(self.config.site, self.config.rack),
            direct=self.direct,
            range_ok=self.range_ok,
            interval=self._interval,
            content_hashes=self.content_hashes,
        )
        self.checks = whole_file_checks(self.config.digest, self.published)
        self._follow_whole_file()
        # Pieces verified by an earlier run: in a swarm they are reported like origin pieces; the tracker
        # takes them only when they match the hash it holds (core.announce), and they are offered only then.
        changes = Changes()
        core.book.resume(resumed.hashes, changes, direct=self.direct)
        self._apply(changes)
        self.stats.done = core.book.done_bytes
        if self.tracker is not None and not self.direct:
            self.announcer = Announcer(
                self.tracker, self.task_id, core, self.announce_request, self._post, rng=self.rng, clock=self.clock
            )
            self._tasks.spawn(self.announcer.run())
            self._tasks.spawn(self.announcer.refresh_hashes())
        try:
            await self._loop()
            return await self._finish()
        except BaseException:
            await self._tasks.stop()  # no fetch starts another write into the part file meanwhile
            await self._save_state()
            raise

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

    async def _finish(self) -> Downloaded:
        assert self.part is not None and self.manifest is not None and self.core is not None
        await self._tasks.stop()
        if self._checkpoint_task is not None:
            await self._checkpoint_task
        # The last report (a tracker round trip) and the flush (fsync can take a second for a large file on a
        # slow disk) run together, and the whole-file hashes finish their last reads meanwhile: the swarm's
        # last pieces wait for neither our disk nor our hashes, and the file is renamed after all three.
        part = self.part
        hashed = self.prefix.hashed_pieces if self.prefix is not None else 0
        # How far the whole-file hashes trail: what is left of them is hashed after the flush, before the place.
        log.debug("all pieces written (%d hashed whole): flushing the file and reporting the last pieces", hashed)
        reported, synced = await asyncio.gather(
            self._report_last_pieces(), asyncio.to_thread(part.sync), return_exceptions=True
        )
        for outcome in (reported, synced):  # both have ended: nothing uses the file when it is closed
            if isinstance(outcome, BaseException):
                raise outcome
        log.debug("flushed and reported")
        missing = [i for i in range(self.manifest.piece_count) if i not in self.core.book.written]
        if missing:
            # The last report learned of revoked hashes (core.audit), and pieces taken from peers went with
            # them: fetch those from the origin before anything is placed.
            self._refetch_from_origin(missing)
            await self._loop()
            return await self._finish()
        hashes = await self.prefix.digests() if self.prefix is not None else {}
        log.debug("whole-file hashes done")
        failed = failed_check(self.checks, hashes)
        if failed is not None and self.config.stream_fd is not None:
            check, actual = failed
            raise IntegrityError(  # what was streamed cannot be fetched again
                f"the stream cannot be completed: {check.source} expected {check.expected}, the file is {actual}",
                expected=check.expected,
                actual=actual,
            )
        if failed is not None:
            await self._refetch_suspects(*failed)  # an IntegrityError when the origin's bytes alone failed
            return await self._finish()
        digest = self.config.digest  # the file matched it (failed_check)
        if part.destination.through:
            # A device or a FIFO is written through (storage.placement), and nothing stays on disk to serve
            # from: the piece server stops serving the file before its part file goes. The write waits for a
            # FIFO's reader, in a thread, told to give up if we are cancelled meanwhile.
            if self.served is not None:
                self.server.withdraw(self.task_id, self.served)
                self.served = None
            stop = threading.Event()
            try:
                await asyncio.to_thread(part.move_into_place, stop)
            except asyncio.CancelledError:
                stop.set()
                raise
        else:
            # Rename and repoint the piece server with no await between them: no request sees the old path gone.
            placed = part.move_into_place()
            if self.served is not None and placed is not None:
                self.served.path = placed
        part.close()
        return Downloaded(
            self.config.dest, self.manifest.length, digest, self.task_id, self.generation, self.manifest, hashes
        )

    async def _refetch_suspects(self, check: WholeFileCheck, actual: str) -> None:
        """The complete file fails a whole-file check (:mod:`shoal.core.whole_file`): drop every piece this
        download did not fetch from the origin itself, report the peers that supplied them, and fetch those
        pieces again straight from the origin, as a download without a tracker does (no leases). When every
        piece came from the origin already, the file is discarded and it is an IntegrityError."""
        assert self.part is not None and self.core is not None
        if self.via_alias:
            raise JoinAgain()  # the content task peers named for the digest is another file (see run)
        manifest = self.core.manifest
        plan = plan_refetch(manifest.piece_count, self.core.book.sources)
        if plan is None:
            self.part.discard()
            raise check.mismatch(self.url, actual)
        log.warning("%s", plan.describe(check, actual, manifest.piece_count))
        self._carry_out(self.core.refetch(plan))
        self._events = asyncio.Queue()  # the fetches and watchers stopped are no news any more
        self._follow_whole_file()  # the old hashes read the dropped pieces: hash the file again as it refills
        await self._report_suspects()
        await self._loop()

    def _refetch_from_origin(self, pieces: list[int]) -> None:
        """From now on ``pieces`` come straight from the origin (core.refetch_from_origin), once the owner
        loop runs again; the fetches and watchers stopped are no news any more."""
        assert self.core is not None
        self.core.refetch_from_origin(pieces)
        self._events = asyncio.Queue()

    async def _report_suspects(self) -> None:
        """Tell the tracker at once of the peers whose pieces failed the whole-file check, and that we no
        longer hold the pieces being fetched again."""
        if self.tracker is None or self.direct or self.core is None:
            return
        request = self.announce_request(bad_peers=tuple(sorted(self.core.bad_peers)))
        try:
            await self.tracker.announce(self.task_id, request)
        except TrackerUnavailable as exc:
            log.info("reporting the suspected peers failed: %s", exc)  # the last report names them again

    async def _report_last_pieces(self) -> None:
        """Tell the tracker we hold the whole file (the hashes of our last origin pieces, and the pieces taken
        from peers since our last announce), beside the final flush and before the file appears at its
        destination: a peer started once the file is there is told we hold all of it, and is not leased
        the pieces we last took from peers, to fetch from the origin again."""
        core = self.core
        if self.tracker is None or self.direct or self.served is None or core is None:
            return
        reported = self.unreported()
        try:
            request = self.announce_request(done=reported, bad_peers=tuple(sorted(core.bad_peers)))
            reply = await self.tracker.announce(self.task_id, request)
        except TrackerUnavailable:
            return  # the seeding (peer.seeding) and leave() report them again
        self._carry_out(core.last_report(reply, reported))
        if reply.hash_seq > core.book.hash_seq:
            # Hashes changed since our last look-up: a revoked one must not go unseen in the file we place.
            with contextlib.suppress(TrackerUnavailable):
                news = await self.tracker.hashes(self.task_id, core.book.hash_seq)
                self._handle(HashesArrived(news.generation, news.seq, dict(news.hashes), news.revoked))

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
