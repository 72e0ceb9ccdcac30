"""The download engine: the I/O of one download, carrying out what its core decides.

::

    join ──> attempt ──────────────────────────────> complete ──> (seed for upload_time: peer.seeding) ──> stopped
     │          │  origin changed / tracker says restart   │
     │          └──────────────> join again (at most `restarts` times, then OriginChanged)
     └─ tracker unreachable ──> direct from the origin (with --fallback), else TrackerUnavailable

An attempt's state and every decision about it live in :class:`shoal.core.download.DownloadCore` (values in,
actions out, no I/O). The owner loop (:mod:`shoal.peer.owner_loop`, which this module's Download builds on)
hands it each event with the time and carries out the actions it returns; every I/O task posts events
(:mod:`shoal.core.events`): the fetchers and have-stream watchers (:mod:`shoal.peer.fetchers`), the announcer
and hash look-ups (:mod:`shoal.peer.announcer`). A piece from the origin is offered to peers once the tracker
holds its hash; a piece from a peer is checked against that hash before it is written (docs/architecture.md).

Once every piece is in, the whole file is checked against ``--digest`` and the digest the origin publishes
(:mod:`shoal.core.whole_file`). A file that fails is not a dead end: the pieces that did not come from the
origin are dropped, their peers reported as bad, and fetched again straight from the origin
(:meth:`Download._refetch_suspects`); only the origin's own bytes failing is an IntegrityError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from shoal.core.bitfield import Bitfield
from shoal.core.download import DownloadCore
from shoal.core.errors import IntegrityError, JoinAgain, OriginChanged, TrackerUnavailable
from shoal.core.events import HashesArrived
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest
from shoal.core.pieces import Changes
from shoal.core.scope_leases import Labels
from shoal.core.whole_file import WholeFileCheck, failed_check, plan_refetch, whole_file_checks
from shoal.peer.announcer import Announcer
from shoal.peer.content_task import ContentSeed, register_content
from shoal.peer.join import join
from shoal.peer.owner_loop import OwnerLoop
from shoal.storage.partfile import PartFile

log = logging.getLogger("shoal.peer")


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


class Download(OwnerLoop):
    """One download of one URL. ``run()`` returns when the file is in place; :func:`shoal.peer.seeding.seed`
    serves it on."""

    # -- public ------------------------------------------------------------------------------------

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
