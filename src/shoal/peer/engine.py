"""The download engine: one task owns a download's state; fetchers and watchers report back as events.

::

    join ──> attempt ──────────────────────────────> complete ──> (seed for upload_time) ──> stopped
     │          │  origin changed / tracker says restart   │
     │          └──────────────> join again (at most `restarts` times, then OriginChanged)
     └─ tracker unreachable ──> direct from the origin (with --fallback), else TrackerUnavailable

Inside an attempt the owner loop (:meth:`Download._loop`) is the only code that reads or changes the
state (which pieces we have, which are in flight, what each peer holds, our leases). Everything that does
I/O runs in its own task and posts an event (:mod:`shoal.peer.events`):

* ``fetch_origin`` (:mod:`shoal.peer.fetchers`) fetches a run of leased pieces with one Range request;
  each piece is hashed and written, then reported to the tracker (``done``) on the next announce. Only
  when the tracker has the hash is the piece offered to other peers, so every peer can verify what it
  receives.
* ``fetch_peer`` fetches a run from a peer; each piece is checked against the tracker's hash before it
  is written; a mismatch bans the peer and reports it.
* ``watch_haves`` follows a peer's have stream, so a new piece is known within a round trip.
* ``_announcer`` talks to the tracker: reports, lease requests, peer hand-outs.
* ``_hash_refresher`` fetches new piece hashes from the tracker when a peer offers a piece we cannot
  verify yet.

Once every piece is in, the whole file is checked against ``--digest`` and the digest the origin publishes
(:mod:`shoal.core.whole_file`). A file that fails is not a dead end: the pieces that did not come from the
origin under our own leases are dropped, their peers reported as bad, and fetched again straight from the
origin (:meth:`Download._refetch_suspects`); only the origin's own bytes failing is an IntegrityError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from shoal.core.bitfield import Bitfield
from shoal.core.digests import PublishedDigest
from shoal.core.errors import (
    IntegrityError,
    LocalIOError,
    OriginChanged,
    OriginError,
    ShoalError,
    TrackerUnavailable,
)
from shoal.core.ids import PeerIdentity, content_task_id, task_id_for_url
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest, AnnounceResponse, PeerAddress
from shoal.core.picker import FetchLimits, Holder, lease_pieces, plan_fetches, wants_leases
from shoal.core.pieces import Changes, PieceBook
from shoal.core.rate import TokenBucket
from shoal.core.retry import Backoff, Retries
from shoal.core.whole_file import WholeFileCheck, failed_check, plan_refetch, whole_file_checks
from shoal.peer.config import GetConfig
from shoal.peer.events import (
    Announced,
    Event,
    HashesArrived,
    NoRange,
    OriginPiece,
    PeerGone,
    PeerHas,
    PeerPiece,
    RunEnded,
    TrackerDown,
    Wake,
)
from shoal.peer.fetchers import fetch_origin, fetch_peer, watch_haves
from shoal.peer.origin import Origin, Probe
from shoal.peer.prefix_hash import PrefixHash
from shoal.peer.server import PieceServer, ServedTask
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.partfile import PartFile

log = logging.getLogger("shoal.peer")
LEASE_POLL_SECONDS = 0.5
SAVE_STATE_SECONDS = 1.0
HASH_REFRESH_GAP = 0.1
HASH_ENDGAME_PIECES = 16  # with at most this many pieces missing, hash look-ups skip the gap...
HASH_ENDGAME_LOOKUPS = 32  # ...this many times per attempt
ENDGAME_REPORTS = 16  # origin pieces reported beside an announce in flight, per attempt (see _report_at_once)
STOP_SECONDS = 5.0
ANNOUNCE_BACKOFF = Backoff(0.5, 5.0)
"""Retries of a tracker that does not answer (core.retry), never slower than its announce interval."""
BUSY_BACKOFF_SECONDS = 0.5
MAX_WATCHED_PEERS = 64
"""Peers followed at once. Each holds a have-stream connection of the session's 128 (``api.py``): with more,
piece fetches and announces would queue for a connection behind streams that never end."""


@dataclass(slots=True)
class Stats:
    """Counters the progress display reads; only the owner loop writes them."""

    total: int = 0
    done: int = 0
    from_origin: int = 0
    from_peers: int = 0
    started: float = field(default_factory=time.monotonic)
    peers: int = 0


class _JoinAgain(Exception):
    """The task moved to a new generation (the origin changed): drop everything and join again."""


@dataclass(slots=True)
class PeerState:
    address: PeerAddress
    have: Bitfield | None = None
    watcher: asyncio.Task[None] | None = None
    requests: int = 0
    busy_until: float = 0.0
    banned: bool = False

    @property
    def base_url(self) -> str:
        host = self.address.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.address.port}"


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    size: int
    digest: str | None
    task_id: str
    generation: int
    manifest: Manifest
    hashes: dict[str, str] = field(default_factory=dict)
    """Whole-file hex digests computed while the file downloaded (GetConfig.file_hashes, and the algorithms
    of the whole-file checks: ``sha256`` with a ``digest``, the origin's), by name."""


class Download:
    """One download of one URL. ``run()`` returns when the file is in place; ``seed()`` serves it on."""

    def __init__(
        self,
        url: str,
        config: GetConfig,
        session: aiohttp.ClientSession,
        server: PieceServer,
        *,
        identity: PeerIdentity | None = None,
        rng: random.Random | None = None,
        before_write: Callable[[Manifest], Awaitable[None]] | None = None,
    ) -> None:
        """``before_write`` is awaited once the manifest is known and before anything is written (again
        after a restart): the daemon's cache reserves the file's length there, and an error it raises
        ends the download."""
        self.url = url
        self.before_write = before_write
        self.config = config
        self.session = session
        self.server = server
        self.identity = identity or PeerIdentity.from_secret(secrets.token_hex(16))
        self.peer_id = self.identity.peer_id
        self.rng = rng or random.Random()
        self.task_id = task_id_for_url(url, digest=config.digest or "")
        self.origin = Origin(url, session, config.headers)
        self.tracker = TrackerClient(config.tracker, session) if config.tracker else None
        self.stats = Stats()
        self.first_piece = asyncio.Event()
        """Set once a verified piece is on disk (the first one fetched, or one a rerun found)."""
        self._bucket = TokenBucket(config.download_rate, burst=config.download_rate) if config.download_rate else None
        self._reset_attempt()

    def _reset_attempt(self) -> None:
        self.generation = 0
        self.manifest: Manifest | None = None
        self.part: PartFile | None = None
        self.served: ServedTask | None = None  # its `have`: the pieces verified and offered to peers
        self._book: PieceBook | None = None  # once the manifest is known (core.pieces)
        self.content_hashes: dict[int, str] = {}  # a content task's every hash, checked against its id
        self.peers: dict[str, PeerState] = {}
        self.range_ok = True
        self.origin_busy = 0
        self.origin_failures = 0
        self.origin_rate = 0.0  # bytes/s of our recent origin runs (0: none yet)
        self.bad_peers: set[str] = set()
        self._orphan_runs: Counter[str] = Counter()  # runs still going of peers removed (PeerGone)
        self._dropped: set[str] = set()  # peers we stopped following whose watcher has not ended yet
        self.tracker_down_since: float | None = None
        self.direct = self.tracker is None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._announce_wake = asyncio.Event()
        self._news_wake = asyncio.Event()  # something to tell the tracker at once (see _news)
        self._hash_wake = asyncio.Event()
        self._last_announce = 0.0
        self._announcing = 0  # announces in flight
        self._reporting: set[int] = set()  # origin pieces an announce in flight reports
        self._endgame_reports = ENDGAME_REPORTS
        self._checkpoint_task: asyncio.Future[None] | None = None
        self._interval = 5.0
        self.prefix: PrefixHash | None = None
        self.published: PublishedDigest | None = None  # the origin's whole-file digest, from the probe
        self.checks: tuple[WholeFileCheck, ...] = ()
        self.refetching = False  # after a failed whole-file check: every missing piece comes from the origin
        self._set_fetch_limits()

    # -- public ------------------------------------------------------------------------------------

    @property
    def book(self) -> PieceBook:
        """The attempt's pieces (core.pieces); only once the manifest is known."""
        assert self._book is not None
        return self._book

    @property
    def withheld(self) -> set[int]:
        """Pieces on disk that are not offered to peers (the tracker holds other hashes for them)."""
        return self._book.withheld if self._book is not None else set()

    def _unreported(self) -> dict[int, str]:
        return dict(self._book.unreported) if self._book is not None else {}

    def _written(self) -> dict[int, str]:
        return dict(self._book.written) if self._book is not None else {}

    async def run(self) -> Downloaded:
        for _ in range(self.config.restarts + 1):
            try:
                return await self._attempt()
            except _JoinAgain:
                log.warning("the origin's file changed; starting again")
                self.stats.done = 0
                if self.served is not None:
                    # Before the part file goes: until the next attempt publishes its own, the old version's
                    # pieces would be served from whatever file takes its place.
                    self.server.withdraw(self.task_id, self.served)
                if self.part is not None:
                    self.part.discard()  # pieces of the old version must never mix with the new one
            finally:
                await self._stop_tasks()
                if self.prefix is not None:
                    await self.prefix.aclose()
            self._reset_attempt()
        raise OriginChanged(f"the origin's file kept changing ({self.url})", url=self.url)

    def seeds(self, seconds: float) -> bool:
        """Whether :meth:`seed` serves the completed file for ``seconds``: only when there is a tracker that
        answered (a download made straight from the origin, with no tracker or with ``--fallback``, has
        nobody to announce to) and a file to serve from (not one written through to a device or a FIFO)."""
        return self.tracker is not None and not self.direct and self.served is not None and seconds > 0

    async def seed(self, completed: Downloaded, seconds: float) -> None:
        """Keep serving a completed file for ``seconds``, announcing it; :meth:`leave` ends it."""
        if not self.seeds(seconds):
            return
        assert self.tracker is not None and self.served is not None
        for index in range(completed.manifest.piece_count):
            if index not in self.withheld:
                self.served.add(index)
        deadline = time.monotonic() + seconds
        event = "completed"
        retry = Retries(ANNOUNCE_BACKOFF, self.rng)
        while time.monotonic() < deadline:
            reported = self._unreported()
            try:
                reply = await self.tracker.announce(self.task_id, self._request(event=event, done=reported))
                event = "update"
                for index in reported:
                    self.book.unreported.pop(index, None)
                if reply.restart or reply.generation != completed.generation:
                    break
                wait = min(reply.interval, deadline - time.monotonic())
                retry.reset()
            except TrackerUnavailable as exc:
                log.info("announce while seeding failed: %s", exc)
                wait = min(retry.next_delay(cap=self._interval), deadline - time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)

    async def leave(self) -> None:
        """Stop serving and tell the tracker we are gone, with any origin hashes it has not had yet."""
        if self.served is not None:
            self.server.withdraw(self.task_id, self.served)  # not what another owner serves for the task now
        if self.tracker is not None and self.generation and not self.direct:
            with contextlib.suppress(TrackerUnavailable):
                await self.tracker.announce(self.task_id, self._request(event="stopped", done=self._unreported()))

    # -- joining -----------------------------------------------------------------------------------

    async def _join(self) -> None:
        """Learn the generation and the manifest, checking the origin is still the same file."""
        reply: AnnounceResponse | None = None
        # The tracker and the origin are asked at once: one round trip less before the first byte moves.
        announced, probed = await asyncio.gather(
            self.tracker.announce(self.task_id, self._request(event="started")) if self.tracker else _none(),
            self.origin.probe(),
            return_exceptions=True,
        )
        if isinstance(announced, TrackerUnavailable):
            if not self.config.fallback:
                raise announced
            log.warning("tracker unreachable; downloading straight from the origin (--fallback)")
            self.direct = True
        elif isinstance(announced, BaseException):
            raise announced
        else:
            reply = announced
        probe: Probe | None = None
        if isinstance(probed, OriginError):
            # Unreachable or failing (5xx, 408, 429): the swarm's copy will do. A refusal (401, 403, 404,
            # 410...) is the origin's answer, which the swarm must not override.
            if reply is None or reply.manifest is None or not probed.transient:
                raise probed
            log.warning("origin unreachable; relying on the swarm's copy")
        elif isinstance(probed, BaseException):
            raise probed
        else:
            probe = probed
            self.published = probe.digest
        if probe is not None and probe.task_id and probe.task_id != self.task_id and reply is not None:
            reply = await self._switch_task(probe.task_id, reply)
        if reply is not None and self.tracker is not None and not self.direct:
            self.generation = reply.generation
            if probe is not None and (reply.manifest is None or reply.manifest.identity != probe.identity):
                reply = await self.tracker.announce(
                    self.task_id,
                    self._request(event="started", origin=probe.identity, no_range=not probe.ranges),
                )
                self.generation = reply.generation
            if reply.manifest is None:
                raise OriginError(f"the tracker has no manifest for {self.url}", url=self.url)
            log.debug(
                "joined generation %d: %d peers, %d leases", reply.generation, len(reply.peers), len(reply.leases)
            )
            self.manifest = reply.manifest
            self.range_ok = reply.range_ok
            self._interval = reply.interval
        else:
            assert probe is not None
            self.manifest = Manifest.for_identity(probe.identity)
            self.range_ok = probe.ranges
            self.generation = 1

    async def _switch_task(self, task_id: str, url_reply: AnnounceResponse) -> AnnounceResponse:
        """Join the content task a seeder named for this URL (DESIGN.md: a seeded file's task is its content),
        so every URL of the same bytes shares one swarm, and leave the URL task just joined.

        The content task's id commits to every piece hash (core.ids.content_task_id): its hashes are taken
        only when they hash to the id, so neither the tracker nor a peer can make us accept other bytes.
        A task whose hashes do not check out (not registered yet, or a lying tracker) is left, and the
        download goes on as the URL task."""
        assert self.tracker is not None
        tracker = self.tracker
        reply = await tracker.announce(task_id, self._request(event="started"))
        hashes = await tracker.hashes(task_id, 0) if reply.manifest is not None else None
        m = reply.manifest
        if m is None or hashes is None or len(hashes.hashes) != m.piece_count:
            verified = False
        else:
            ordered = [hashes.hashes[i] for i in range(m.piece_count) if i in hashes.hashes]
            verified = len(ordered) == m.piece_count and content_task_id(m.length, m.piece_length, ordered) == task_id
        leave, keep = (self.task_id, task_id) if verified else (task_id, self.task_id)
        stopped = self._request(event="stopped")

        async def leave_other_task() -> None:
            with contextlib.suppress(TrackerUnavailable):
                await tracker.announce(leave, stopped)

        self._spawn(leave_other_task())
        if not verified:
            log.warning("the tracker's piece list for content task %s does not match its id; ignoring it", task_id[:16])
            return url_reply
        assert hashes is not None
        self.task_id = keep
        self.content_hashes = dict(hashes.hashes)
        return reply

    def _request(self, *, event: str = "update", **extra: object) -> AnnounceRequest:
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
            generation=self.generation,
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
        self._book = book = PieceBook(manifest, content_hashes=self.content_hashes)
        book.learn_hashes(self.content_hashes)
        self.checks = whole_file_checks(self.config.digest, self.published)
        self._set_fetch_limits()
        self._follow_whole_file()
        # Pieces verified by an earlier run: in a swarm they are reported like origin pieces; the tracker
        # takes them only when they match the hash it holds (core.announce), and they are offered only then.
        changes = Changes()
        book.resume(resumed.hashes, changes, direct=self.direct)
        self._apply(changes)
        self.stats.done = book.done_bytes
        if self.direct:
            book.leases = set(range(manifest.piece_count))
        else:
            self._spawn(self._announcer())
            self._spawn(self._hash_refresher())
        try:
            await self._loop()
            return await self._finish()
        except BaseException:
            await self._stop_tasks()  # no fetch starts another write into the part file meanwhile
            await self._save_state()
            raise

    async def _loop(self) -> None:
        manifest = self.manifest
        assert manifest is not None
        saved_at = time.monotonic()
        while not self.book.complete:
            self._schedule()
            event = await self._events.get()
            self._handle(event)
            while not self._events.empty():
                self._handle(self._events.get_nowait())
            if time.monotonic() - saved_at > SAVE_STATE_SECONDS:
                log.debug(
                    "%d/%d pieces, %d unreported, in flight %s, leases %s, origin runs %d, peers %s",
                    len(self.book.written),
                    manifest.piece_count,
                    len(self.book.unreported),
                    sorted(self.book.inflight),
                    sorted(self.book.leases),
                    self.origin_busy,
                    {p: (len(s.have) if s.have else None, s.requests, s.banned) for p, s in self.peers.items()},
                )
                saved_at = time.monotonic()
                if self._checkpoint_task is None or self._checkpoint_task.done():
                    self._checkpoint_task = asyncio.ensure_future(self._checkpoint(dict(self.book.written)))

    async def _checkpoint(self, written: dict[int, str]) -> None:
        """Record the pieces written so far as verified, so that a rerun after a kill resumes from them.

        Run every SAVE_STATE_SECONDS beside the owner loop (never awaited by it). There is no fsync here: a
        rerun hashes every recorded piece again, so a crash that lost written bytes costs only their
        refetch. The disk is kept busy instead by the writeback each piece starts as it is written
        (PartFile.write), and the fsync before the final rename waits only for what has not reached it yet.
        An fsync every second stalls the file's writers while the journal commits, a large share of each
        second of a large download with the machine idle meanwhile (benchmarks/single_peer.py; figures in
        benchmarks/RESULTS.md).
        """
        part = self.part
        if part is None or not part.is_open:
            return
        with contextlib.suppress(ShoalError):
            await asyncio.to_thread(part.save_state, written)

    async def _finish(self) -> Downloaded:
        assert self.part is not None and self.manifest is not None
        await self._stop_tasks()
        if self._checkpoint_task is not None:
            await self._checkpoint_task
        # The last report (a tracker round trip) and the flush (fsync can take a second for a large file on a
        # slow disk) run together, and the whole-file hashes finish their last reads meanwhile: the swarm's
        # last pieces wait for neither our disk nor our hashes, and the file is renamed after all three.
        part = self.part
        log.debug("all pieces written: flushing the file and reporting the last pieces")
        reported, synced = await asyncio.gather(
            self._report_last_pieces(), asyncio.to_thread(part.sync), return_exceptions=True
        )
        for outcome in (reported, synced):  # both have ended: nothing uses the file when it is closed
            if isinstance(outcome, BaseException):
                raise outcome
        log.debug("flushed and reported")
        missing = [i for i in range(self.manifest.piece_count) if i not in self.book.written]
        if missing:
            # The last report learned of revoked hashes (core.audit), and pieces taken from peers went with
            # them: fetch those from the origin before anything is placed.
            self._refetch_from_origin(missing)
            await self._loop()
            return await self._finish()
        hashes = await self.prefix.digests() if self.prefix is not None else {}
        failed = failed_check(self.checks, hashes)
        if failed is not None:
            await self._refetch_suspects(*failed)  # an IntegrityError when the origin's bytes alone failed
            return await self._finish()
        digest = "sha256:" + hashes["sha256"] if self.config.digest else None
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
        assert self.part is not None and self.manifest is not None and self.served is not None
        manifest = self.manifest
        plan = plan_refetch(manifest.piece_count, self.book.sources)
        if plan is None:
            self.part.discard()
            raise IntegrityError(
                f"digest mismatch for {self.url}: expected {check.expected} ({check.source}), got {actual} "
                "from the origin's own bytes",
                expected=check.expected,
                actual=actual,
            )
        log.warning(
            "the file does not match %s (expected %s, got %s); suspected peers: %s; fetching %d of its %d pieces "
            "again from the origin",
            check.source,
            check.expected,
            actual,
            ", ".join(plan.suspects) or "none (the pieces were resumed from an earlier run)",
            len(plan.pieces),
            manifest.piece_count,
        )
        self.bad_peers.update(plan.suspects)
        for peer_id in list(self.peers):
            self._forget_peer(peer_id)
        self._apply(self.book.forget(plan.pieces))
        self.stats.done -= sum(manifest.piece_size(index) for index in plan.pieces)
        self._refetch_from_origin(plan.pieces)
        self._follow_whole_file()  # the old hashes read the dropped pieces: hash the file again as it refills
        await self._report_suspects()
        await self._loop()

    def _refetch_from_origin(self, pieces: Iterable[int]) -> None:
        """From now on ``pieces`` come straight from the origin, as a download without a tracker fetches (no
        leases), once the owner loop runs again; the fetches and watchers stopped are no news any more."""
        self.refetching = True
        self._set_fetch_limits()
        self.book.leases = set(pieces)
        self._events = asyncio.Queue()

    async def _report_suspects(self) -> None:
        """Tell the tracker at once of the peers whose pieces failed the whole-file check, and that we no
        longer hold the pieces being fetched again."""
        if self.tracker is None or self.direct:
            return
        request = self._request(bad_peers=tuple(sorted(self.bad_peers)))
        try:
            await self.tracker.announce(self.task_id, request)
        except TrackerUnavailable as exc:
            log.info("reporting the suspected peers failed: %s", exc)  # the last report names them again

    async def _report_last_pieces(self) -> None:
        """Tell the tracker we hold the whole file (the hashes of our last origin pieces, and the pieces taken
        from peers since our last announce), beside the final flush and before the file appears at its
        destination: a peer started once the file is there is told we hold all of it, and is not leased
        the pieces we last took from peers, to fetch from the origin again."""
        if self.tracker is None or self.direct or self.served is None:
            return
        reported = self._unreported()
        try:
            request = self._request(done=reported, bad_peers=tuple(sorted(self.bad_peers)))
            reply = await self.tracker.announce(self.task_id, request)
        except TrackerUnavailable:
            return  # seed() and leave() report them again
        if reply.restart or reply.generation != self.generation or self.book.resumed.intersection(reply.rejected):
            # The task moved on, or a piece an earlier run verified differs from the tracker's (the origin's
            # bytes changed under one identity between the runs): the file may mix two versions, so it must
            # not be renamed into place.
            raise _JoinAgain()
        self._apply(self.book.confirm(reported, reply.rejected))
        if reply.hash_seq > self.book.hash_seq:
            # Hashes changed since our last look-up: a revoked one must not go unseen in the file we place.
            with contextlib.suppress(TrackerUnavailable):
                news = await self.tracker.hashes(self.task_id, self.book.hash_seq)
                self._handle(HashesArrived(news.generation, news.seq, dict(news.hashes), news.revoked))

    async def _save_state(self) -> None:
        if self.prefix is not None:
            await self.prefix.aclose()  # its read in progress ends before the part file closes
        if self._checkpoint_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._checkpoint_task)
        if self.part is not None and self.part.is_open:
            with contextlib.suppress(ShoalError):
                await asyncio.to_thread(self.part.save_state, self._written())
            self.part.close()

    def _follow_whole_file(self) -> None:
        """Start hashing the whole file as its prefix fills: the checks' algorithms and the caller's."""
        assert self.part is not None and self.manifest is not None
        names = {*self.config.file_hashes, *(check.algorithm for check in self.checks)}
        if names:
            self.prefix = PrefixHash(self.part, self.manifest, self.book.on_disk, names)
            self.prefix.start()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task failed", exc_info=task.exception())

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that ignores its cancellation (see _announcer) must not hang the download.
            _, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            for task in stuck:
                log.error("task %s did not stop within %.0fs", task.get_coro(), STOP_SECONDS)
        self._tasks.clear()

    # -- scheduling (owner only) -------------------------------------------------------------------

    def _in_endgame(self) -> bool:
        """At most HASH_ENDGAME_PIECES pieces missing: what is left is among the swarm's last pieces."""
        assert self.manifest is not None
        return self.manifest.piece_count - len(self.book.written) <= HASH_ENDGAME_PIECES

    def _apply(self, changes: Changes) -> None:
        """Carry out a change to the book (core.pieces) on the piece server, the progress counters and the
        whole-file hashes, and wake the tasks it concerns."""
        assert self.served is not None and self.manifest is not None
        if changes.restart:
            # A content task names its bytes: an origin that sends others serves another file now.
            raise _JoinAgain()
        for _ in changes.written:
            self.first_piece.set()
            if self.prefix is not None:
                self.prefix.grew()
        for index, why in changes.dropped:
            log.warning("piece %d on disk %s; fetching it again", index, why)
            self.served.discard(index)
            self.stats.done -= self.manifest.piece_size(index)
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
        if changes.want_hashes:
            self._hash_wake.set()
        if changes.report:
            self._news()
            self._report_at_once()

    def _schedule(self) -> None:
        """Start what core.picker.plan_fetches says to, and wake the tracker's tasks it says need waking."""
        manifest, part = self.manifest, self.part
        assert manifest is not None and part is not None
        book = self.book
        needed = book.needed()
        if not needed:
            return
        limits = self._fetch_limits
        peer_runs = sum(p.requests for p in self.peers.values())
        lease_wanted = wants_leases(needed, book.leases)  # none of our leases is left to start
        if peer_runs >= limits.peer_requests and (self.origin_busy >= limits.origin_streams or lease_wanted):
            # Nothing can start (the usual case in a busy swarm, checked on every event): only whether to
            # ask for leases, as plan_fetches would say.
            if not self.direct and lease_wanted:
                self._announce_wake.set()
            return
        holders = []
        if peer_runs < limits.peer_requests:  # else no peer run can start: the usual case, kept cheap
            now = time.monotonic()
            # Peers: nearest first (the tracker's order), bounded per peer and overall.
            holders = [
                Holder(peer_id, peer.have.mask, peer.requests)
                for peer_id, peer in self.peers.items()
                if not peer.banned and peer.have is not None and peer.busy_until <= now
            ]
        plan = plan_fetches(
            piece_length=manifest.piece_length,
            needed=needed,
            leases=book.leases,
            hashed=book.hashed.mask,
            origin_busy=self.origin_busy,
            range_ok=self.range_ok,
            holders=holders,
            peer_runs=peer_runs,
            limits=limits,
            rng=self.rng,
            direct=self.direct,
        )
        post = self._events.put_nowait
        for run in plan.origin:
            book.start(run)
            book.fetching.update(run)
            self.origin_busy += 1
            log.debug("pieces %d-%d from the origin: asking", run[0], run[-1])
            self._spawn(fetch_origin(self.origin, manifest, part, run, post, self._throttle))
        for peer_id, run in plan.peers:
            book.start(run)
            peer = self.peers[peer_id]
            peer.requests += 1
            url = f"{peer.base_url}/v1/tasks/{self.task_id}/data?gen={self.generation}"
            self._spawn(fetch_peer(self.session, url, peer_id, manifest, part, run, book.hashes, post, self._throttle))
        if plan.want_hashes:
            self._hash_wake.set()  # a peer has pieces we need but cannot verify yet
        if plan.want_leases:
            self._announce_wake.set()

    def _set_fetch_limits(self) -> None:
        """What plan_fetches may start at once; set at each attempt and when refetching begins."""
        config = self.config
        self._fetch_limits = FetchLimits(
            run_bytes=config.run_bytes,
            # Origin: our leased pieces, one run at a time (several when downloading straight).
            origin_streams=config.direct_streams if self.direct or self.refetching else 1,
            peer_requests=config.peer_requests,
            per_peer_requests=config.per_peer_requests,
            lone_peer_requests=config.lone_peer_requests,
        )

    def _handle(self, event: Event) -> None:
        match event:
            case OriginPiece(index, digest, size):
                self._origin_piece(index, digest, size)
            case PeerPiece(peer_id, index, digest, size):
                self._peer_piece(peer_id, index, digest, size)
            case RunEnded(source, unfetched, error, corrupt, busy, stale, rate):
                for index in unfetched:
                    self.book.inflight.discard(index)
                if isinstance(error, LocalIOError):
                    raise error  # our own disk failed (full, read-only): no other source can help
                if source == "origin":
                    self.origin_busy -= 1
                    self.book.fetching.difference_update(unfetched)
                    if rate:
                        self.origin_rate = rate if not self.origin_rate else (self.origin_rate + rate) / 2
                    if error is not None:
                        self._origin_failed(error, unfetched)
                else:
                    self._peer_run_ended(source, unfetched, error, corrupt, busy, stale)
            case NoRange():
                if self.range_ok:
                    self.range_ok = False
                    self._news()
            case Announced(reply, reported, handled, leases):
                try:
                    self._announced(reply, reported, leases)
                finally:
                    handled.set_result(None)
            case TrackerDown(error):
                if self.tracker_down_since is None:
                    self.tracker_down_since = time.monotonic()
                stuck = not self.book.inflight and self.origin_busy == 0
                if stuck and time.monotonic() - self.tracker_down_since > self.config.tracker_patience:
                    raise error
            case HashesArrived(generation, seq, hashes, revoked):
                self._hashes_arrived(generation, seq, hashes, revoked)
            case PeerHas(peer_id, have, added):
                self._peer_has(peer_id, have, added)
            case Wake():
                pass
            case PeerGone(peer_id):
                if peer_id in self._dropped:
                    self._dropped.discard(peer_id)  # the end of a watcher we stopped: the peer is gone already
                else:
                    self._forget_peer(peer_id)

    def _origin_piece(self, index: int, digest: str, size: int) -> None:
        log.debug("piece %d from the origin", index)
        changes = self.book.origin_piece(index, digest, direct=self.direct, refetching=self.refetching)
        if changes.written:
            self.stats.done += size
            self.stats.from_origin += size
            self.origin_failures = 0
        self._apply(changes)

    def _peer_piece(self, peer_id: str, index: int, digest: str, size: int) -> None:
        log.debug("piece %d from peer %s", index, peer_id)
        changes = self.book.peer_piece(peer_id, index, digest)
        if changes.written:
            self.stats.done += size
            self.stats.from_peers += size
        self._apply(changes)

    def _hashes_arrived(self, generation: int, seq: int, hashes: dict[int, str], revoked: tuple[int, ...]) -> None:
        if generation != self.generation:
            raise _JoinAgain()
        self._apply(self.book.hashes_arrived(seq, hashes, revoked))

    def _peer_has(self, peer_id: str, have: Bitfield | None, added: tuple[int, ...]) -> None:
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        if have is not None:
            peer.have = have
        elif peer.have is not None:
            assert self.manifest is not None
            for index in added:
                if 0 <= index < self.manifest.piece_count:
                    peer.have.add(index)

    def _origin_failed(self, error: ShoalError, unfetched: tuple[int, ...]) -> None:
        if isinstance(error, OriginChanged):
            # Joining again probes the origin and tells the tracker, which starts a new generation.
            raise _JoinAgain()
        self.origin_failures += 1
        log.warning("origin fetch failed (%d in a row): %s", self.origin_failures, error)
        if self.origin_failures >= self.config.origin_retries:
            raise error
        if not self.direct and not self.refetching:
            # Give the pieces back so another peer can try; ask again after a pause.
            self.book.leases.difference_update(unfetched)
            self._spawn(self._release(tuple(unfetched), delay=0.2 * self.origin_failures))
        else:
            self._spawn(self._delay_schedule(0.2 * self.origin_failures))

    def _peer_run_ended(
        self,
        peer_id: str,
        unfetched: tuple[int, ...],
        error: ShoalError | None,
        corrupt: bool,
        busy: bool,
        stale: bool,
    ) -> None:
        if corrupt:
            # Even when the peer is gone already: a later hand-out must not bring it back.
            log.warning("peer %s served a corrupt piece; avoiding it", peer_id)
            self.bad_peers.add(peer_id)
            self._news()
        peer = self.peers.get(peer_id)
        if self._orphan_runs[peer_id]:
            self._orphan_runs[peer_id] -= 1  # a run of the peer's state before it went and came back
        elif peer is not None:
            peer.requests -= 1
        if peer is None:
            return
        if corrupt:
            peer.banned = True
        elif busy:
            peer.busy_until = time.monotonic() + BUSY_BACKOFF_SECONDS
            self._spawn(self._delay_schedule(BUSY_BACKOFF_SECONDS))
        elif stale and peer.have is not None:
            for index in unfetched:
                peer.have.discard(index)
        elif error is not None:
            log.info("peer %s failed: %s", peer_id, error)
            self._events.put_nowait(PeerGone(peer_id))

    def _announced(self, reply: AnnounceResponse, reported: dict[int, str], leases: bool) -> None:
        """Apply an announce's reply; ``leases`` False for one sent beside the announcer (an endgame report,
        a release), whose lease list may be older than the announcer's."""
        assert self.served is not None and self.manifest is not None
        self.tracker_down_since = None
        if reply.restart or reply.generation != self.generation:
            raise _JoinAgain()
        self._interval = reply.interval
        self.range_ok = reply.range_ok
        book = self.book
        self._apply(book.confirm({i: d for i, d in reported.items() if book.unreported.get(i) == d}, reply.rejected))
        if leases:
            book.leases = set(reply.leases)
        if reply.hash_seq > book.hash_seq:
            self._hash_wake.set()
        for address in reply.peers:
            if (
                address.peer_id not in self.peers
                and address.peer_id != self.peer_id
                and address.peer_id not in self.bad_peers
                and address.peer_id not in self._dropped
            ):
                if len(self.peers) >= MAX_WATCHED_PEERS and not self._drop_a_useless_peer():
                    break
                peer = PeerState(address)
                self.peers[address.peer_id] = peer
                url = f"{peer.base_url}/v1/tasks/{self.task_id}/haves?gen={self.generation}"
                watch = watch_haves(self.session, url, address.peer_id, self.manifest, self._events.put_nowait)
                peer.watcher = asyncio.ensure_future(watch)
                self._tasks.add(peer.watcher)
                peer.watcher.add_done_callback(self._task_done)
        self.stats.peers = len(self.peers)

    def _drop_a_useless_peer(self) -> bool:
        """Stop following one peer that holds nothing we lack and has no request of ours running, to make
        room for a peer the tracker handed out (it hands out peers that hold what we lack first)."""
        lacking = ~self.book.on_disk.mask
        for peer_id, peer in self.peers.items():
            if peer.have is not None and not peer.have.mask & lacking and not peer.requests:
                if peer.watcher is not None:
                    self._dropped.add(peer_id)  # until its watcher's PeerGone, which must not remove a successor
                self._forget_peer(peer_id)
                return True
        return False

    def _forget_peer(self, peer_id: str) -> None:
        """Stop following a peer: its watcher is cancelled, and runs of it still going are counted as orphans
        (their RunEnded events are still to come)."""
        peer = self.peers.pop(peer_id, None)
        if peer is not None:
            if peer.watcher is not None:
                peer.watcher.cancel()
            if peer.requests:
                self._orphan_runs[peer_id] += peer.requests
        self.stats.peers = len(self.peers)

    # -- I/O tasks ---------------------------------------------------------------------------------

    async def _delay_schedule(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._events.put_nowait(Wake())

    async def _throttle(self, nbytes: int) -> None:
        if self._bucket is not None:
            delay = self._bucket.reserve(nbytes, time.monotonic())
            if delay:
                await asyncio.sleep(delay)

    async def _release(self, pieces: tuple[int, ...], *, delay: float) -> None:
        """Give leased pieces back after ``delay``, beside the announcer, which then asks for others."""
        await asyncio.sleep(delay)
        await self._announce_once(released=pieces, beside=True)
        self._announce_wake.set()

    async def _announce_once(self, released: tuple[int, ...] = (), *, beside: bool = False) -> bool:
        """Send one announce and post its reply (or the failure). True when the tracker answered.

        It reports the origin pieces no announce in flight reports. ``beside``: sent beside the announcer,
        it asks for no leases, and its reply's lease list, which may be older than the announcer's next
        one, is not applied."""
        assert self.tracker is not None
        manifest = self.manifest
        assert manifest is not None
        # Built synchronously (no await before the request is complete), so it sees one consistent state
        # of the owner's fields even though it runs in the announcer task.
        reported = {i: d for i, d in self.book.unreported.items() if i not in self._reporting}
        want = 0
        if not beside and wants_leases(self.book.needed(), self.book.leases):
            want = (
                manifest.piece_count
                if not self.range_ok
                else lease_pieces(manifest.piece_length, self.origin_rate, self.config.lease_bytes)
            )
        request = self._request(
            done=reported,
            released=released,
            # Every announce names them: a tracker that lost their leases (restarted) gives them back to us
            # instead of leasing them to another peer, who would fetch them from the origin again.
            fetching=tuple(sorted(self.book.fetching)),
            bad_peers=tuple(sorted(self.bad_peers)),
            want_leases=want,
            no_range=not self.range_ok,
        )
        if not beside:
            self._last_announce = time.monotonic()  # paces the announcer's lease polls, which this is not
        self._announcing += 1
        self._reporting.update(reported)
        try:
            try:
                reply = await self.tracker.announce(self.task_id, request)
            except TrackerUnavailable as exc:
                self._events.put_nowait(TrackerDown(exc))
                return False
            finally:
                self._announcing -= 1
            # The next announce waits until the owner has applied this reply: built before, it would report
            # the same pieces again and ask for leases the reply may already have granted.
            handled = asyncio.get_running_loop().create_future()
            self._events.put_nowait(Announced(reply, reported, handled, leases=not beside))
            await handled
            return True
        finally:
            self._reporting.difference_update(reported)  # applied (no longer unreported) or to be sent again

    def _report_at_once(self) -> None:
        """In the endgame (at most HASH_ENDGAME_PIECES missing) a new origin piece is among the swarm's last,
        which every other peer waits for: report it now, beside the announce in flight, rather than make the
        swarm's last origin pieces wait for that announce's reply (benchmarks/swarm_lab.py; figures in
        benchmarks/RESULTS.md). A budget of ENDGAME_REPORTS per attempt bounds the extra announces."""
        if not self._announcing or not self._endgame_reports or not self._in_endgame():
            return
        self._endgame_reports -= 1
        self._spawn(self._announce_once(beside=True))

    def _news(self) -> None:
        """Wake the announcer for something the tracker must hear at once: a piece hash from the origin
        (other peers cannot take the piece before), a bad peer, an origin that ignores Range."""
        self._news_wake.set()
        self._announce_wake.set()

    async def _announcer(self) -> None:
        """One announce in flight at a time: now when there is news or a need, else every interval."""
        retry = Retries(ANNOUNCE_BACKOFF, self.rng)
        while True:
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a cancellation that
            # arrives as the event fires, and the task would never stop.
            try:
                async with asyncio.timeout(self._interval):
                    await self._announce_wake.wait()
            except TimeoutError:
                pass
            self._announce_wake.clear()
            if not self.book.unreported and not self.bad_peers:
                # Asking only for leases: do not poll faster than LEASE_POLL_SECONDS, but news that comes
                # meanwhile goes out at once (the swarm's last origin pieces sat here for up to that long).
                gap = self._last_announce + LEASE_POLL_SECONDS - time.monotonic()
                if gap > 0:
                    self._news_wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(gap):
                            await self._news_wake.wait()
            if await self._announce_once():
                retry.reset()
            else:
                # Never slower than the tracker's interval: it forgets a peer silent for its peer TTL (a
                # few intervals) and leases that peer's pieces to others, so a peer that backed off
                # further while the tracker was down (restarting) would be forgotten once it came back.
                await asyncio.sleep(retry.next_delay(cap=self._interval))

    async def _hash_refresher(self) -> None:
        """Fetch new piece hashes when woken: at once after a quiet spell, else HASH_REFRESH_GAP after the
        previous look-up, so a stream of have messages from many peers costs the tracker one look-up per gap,
        not one each. In the endgame (at most HASH_ENDGAME_PIECES missing) the swarm's last pieces are what
        every peer waits for: up to HASH_ENDGAME_LOOKUPS look-ups go at once (the gap would hold each of the
        last pieces back by up to HASH_REFRESH_GAP on every peer); a budget, so a peer offering pieces the
        tracker has no hash for cannot make us ask in a loop."""
        assert self.tracker is not None
        seen = 0
        asked_at = -HASH_REFRESH_GAP
        at_once = HASH_ENDGAME_LOOKUPS
        retry = Retries(ANNOUNCE_BACKOFF, self.rng)
        while True:
            await self._hash_wake.wait()
            wait = asked_at + HASH_REFRESH_GAP - time.monotonic()
            if wait > 0:
                if at_once and self._in_endgame():
                    at_once -= 1
                else:
                    await asyncio.sleep(wait)
            self._hash_wake.clear()
            asked_at = time.monotonic()
            try:
                reply = await self.tracker.hashes(self.task_id, max(seen, self.book.hash_seq))
            except TrackerUnavailable as exc:
                log.info("hash refresh failed: %s", exc)
                await asyncio.sleep(retry.next_delay(cap=self._interval))
                self._hash_wake.set()
                continue
            retry.reset()
            seen = reply.seq
            self._events.put_nowait(HashesArrived(reply.generation, reply.seq, dict(reply.hashes), reply.revoked))


async def _none() -> None:
    return None
