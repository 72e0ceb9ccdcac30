"""Downloads into the cache: one swarm download per URL however many requests ask for it at once.

A fetch reserves the file's length in the cache as soon as the manifest is known (evicting if it must,
failing with CacheFull before a byte is written), downloads through the swarm into ``staging/`` (the part
file is named after the task, so a daemon killed mid-download resumes from its verified pieces when the
URL is asked for again), then hashes the file and moves it into the cache, and hands the task to
:class:`~shoal.daemon.seeding.Seeding` so the host keeps serving it for as long as it is cached.

A fetch with origin headers (credentials) is private to them (core.ids.headers_tag keys its task and its
cache record): fetched from the origin only and never seeded, unless shared (``--share-authenticated``, or
the request's ``share``), and then only under that task, which a peer without the same headers cannot name.
A request without those headers is never answered from it: the cache finds it by the key of URL and
headers, not by URL, and a digest names it only for a request that holds the key.

A request may name the digest the file must have (``expected``). A BLAKE3 or SHA-256 is a cache id: a hit is
looked up by it, and the download checks it. Any other algorithm (``md5:``, ``sha1:``... see
core.whole_file.DIGEST_ALGORITHMS) the cache does not keep: the download it starts checks it in its final
pass (mending a file poisoned by a peer, as ``shoal get --digest`` does), and a hit, or a download another
request started, is hashed whole once more (in a thread) before it is placed; a hit that fails is fetched
again.

The file is cached, and its fetch done, once its BLAKE3 id is known; its SHA-256 (for ``sha256:`` ids) is
completed afterwards by a child at idle priority (:mod:`shoal.storage.idle_hash`), unless the request named
a SHA-256 it must match. Nobody waits for that hash when the download ends, and when members of a pool
share a host's cores, computing it before the fetch counts as done delays every member's finish
(benchmarks/pool_lab.py times a push; figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from shoal.core.download_values import Stats
from shoal.core.errors import (
    HashingStopped,
    IntegrityError,
    LocalIOError,
    NotInCache,
    ShoalError,
    TrackerUnavailable,
    UsageError,
)
from shoal.core.ids import PeerIdentity, canonical_url, headers_tag, identity_url, task_id_for_url
from shoal.core.manifest import Manifest
from shoal.core.messages import ScopeBytes
from shoal.daemon.config import DaemonConfig
from shoal.daemon.seeding import Seeding
from shoal.peer.config import GetConfig
from shoal.peer.engine import Download, Downloaded
from shoal.peer.request import file_name_from_url
from shoal.peer.server import PieceServer
from shoal.storage.cache_index import CacheEntry, SeededTask
from shoal.storage.cache_store import CacheStore
from shoal.storage.idle_hash import IdleHasher

log = logging.getLogger("shoal.daemon")


async def enter_in_thread(stack: contextlib.ExitStack, manager: contextlib.AbstractContextManager[object]) -> None:
    """Enter ``manager`` in a worker thread (it blocks: the cache's reservation is a database transaction) and
    register its exit with ``stack``. A caller cancelled meanwhile waits for the thread to finish entering,
    so the exit is registered before the stack closes: the cache's space is never promised for good."""
    entering = asyncio.ensure_future(asyncio.to_thread(stack.enter_context, manager))
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:
        while not entering.done():  # however often cancelled: the thread is one short transaction
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({entering})
        entering.exception()  # retrieved: the caller was cancelled, and that is what it raises
        raise


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """What a request may ask of the download it starts, beyond its URL and headers (``shoal get``'s flags)."""

    ignore_qp: tuple[str, ...] = ()
    """Query parameters to leave out of the task's identity, beside the daemon's own (``--ignore-qp``)."""
    no_origin: bool = False
    """Peers only: the origin is never asked, and the fetch fails (NoSwarmCopy) when the swarm cannot supply
    the file."""


@dataclass(eq=False)
class Fetch:
    """One download into the cache; every request for the same URL waits on the same one."""

    url: str
    tag: str = ""
    """core.ids.headers_tag of its origin headers: "" for a public fetch."""
    share: bool = False
    """With a tag: shared with the peers holding the same headers."""
    fleet_origin: bool = False
    """The URL is another node's ``/v1/content/{id}``: asked with the fleet's credentials (GetConfig)."""
    checked: str | None = None
    """The digest (``ALGORITHM:HEX``) the download checked the whole file against, if any."""
    ignore_qp: tuple[str, ...] = ()
    """Query parameters left out of the task's identity (core.ids.identity_url): the daemon's and the request's."""
    no_origin: bool = False
    """Peers only (``shoal get --no-origin``): the origin is never asked."""
    stats: Stats = field(default_factory=Stats)
    result: asyncio.Future[CacheEntry] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task[None] | None = None

    async def follow(self, progress: Callable[[Stats], Awaitable[None]], every: float) -> CacheEntry:
        """Wait for the download's entry, calling ``progress`` with its counters every ``every`` seconds."""
        while True:
            done, _ = await asyncio.wait([self.result], timeout=every)
            if done:
                return self.result.result()
            await progress(self.stats)


def is_cache_id(expected: str) -> bool:
    """True when a digest names a cache entry: a BLAKE3 (bare or ``blake3:``) or a ``sha256:``."""
    return expected.lower().rpartition(":")[0] in ("", "blake3", "sha256")


def file_digest(path: Path, expected: str) -> str:
    """The ``ALGORITHM:HEX`` of the file at ``path`` in ``expected``'s algorithm, in one read. Blocking."""
    algorithm = expected.lower().partition(":")[0]
    with open(path, "rb") as f:
        hexdigest = hashlib.file_digest(f, algorithm).hexdigest()
    return f"{algorithm}:{hexdigest}"


def matches(entry: CacheEntry, expected: str | None) -> bool:
    """True when the entry is the content ``expected`` (a BLAKE3 or ``sha256:`` id) names, or none is named."""
    if expected is None:
        return True
    kind, _, value = expected.lower().rpartition(":")
    return value == (entry.sha256 if kind == "sha256" else entry.digest)


class Fetcher:
    def __init__(
        self,
        config: DaemonConfig,
        store: CacheStore,
        session: aiohttp.ClientSession,
        server: PieceServer,
        seeding: Seeding | None,
        *,
        identity: PeerIdentity,
    ) -> None:
        self.config = config
        self.store = store
        self.session = session
        self.server = server
        self.seeding = seeding
        self.identity = identity
        self._fetches: dict[str, Fetch] = {}
        self.hits = 0
        """Requests answered from the cache (:meth:`obtain`), since the daemon started; ``misses`` fetched."""
        self.misses = 0
        self._received = ScopeBytes()
        """What the fetches that ended took in, by scope (:meth:`received`)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle_hasher = IdleHasher()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self._hashing: asyncio.Future[int] | None = None
        self._hash_again = False

    def fetch(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        expected: str | None = None,
        share: bool = False,
        options: FetchOptions = FetchOptions(),
        fleet_origin: bool = False,
    ) -> Fetch:
        """Start (or join) the download of ``url`` into the cache. ``expected``: a BLAKE3 or ``sha256:``
        id the content must have (a request that joins another's download checks its own, see
        :func:`matches`). ``share``: see the module's docstring (the daemon's config may say so too).
        ``options``: the request's own (a request that joins another's download takes that one's).
        ``fleet_origin``: ``url`` is a node of the fleet, asked with the fleet's credentials."""
        tag = headers_tag(headers)
        ignore_qp = self.ignored(options)
        if options.no_origin and (self.config.tracker is None or (tag and not share)):
            raise UsageError("--no-origin needs a tracker: the file can only come from the swarm")
        key = self._key(url, tag, ignore_qp)
        current = self._fetches.get(key)
        if current is not None and not current.result.done():
            return current
        fetch = Fetch(
            canonical_url(url),
            tag,
            bool(tag) and (share or self.config.share_authenticated),
            fleet_origin,
            ignore_qp=ignore_qp,
            no_origin=options.no_origin,
        )
        # A failure nobody waits for any more (the asking client went away) is logged, not warned about.
        fetch.result.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._fetches[key] = fetch
        task = fetch.task = asyncio.create_task(self._run(fetch, key, dict(headers), expected))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fetch

    async def obtain(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        expected: str | None,
        follow: Callable[[Fetch], Awaitable[CacheEntry]],
        share: bool = False,
        options: FetchOptions = FetchOptions(),
    ) -> tuple[CacheEntry, Fetch | None]:
        """The cached entry of ``url`` (or of the content ``expected`` names, whatever its URL), fetching
        it if it is not cached; ``follow`` waits for a fetch. The Fetch is None on a hit."""
        expected = expected.lower() if expected is not None else None
        other = expected is not None and not is_cache_id(expected)
        hit = await asyncio.to_thread(self.cached, url, expected, headers, self.ignored(options))
        if hit is not None and other:
            assert expected is not None
            actual = await asyncio.to_thread(self._digest_of, hit, expected)
            if actual != expected:
                log.info("cached %s is %s, not %s: fetching it again", url, actual, expected)
                hit = None
        if hit is not None:
            self.hits += 1
            return hit, None
        self.misses += 1
        fetch = self.fetch(url, headers=headers, expected=expected, share=share, options=options)
        entry = await follow(fetch)
        if other:
            assert expected is not None
            if fetch.checked != expected:  # joined a download that checked no digest, or another one
                actual = await asyncio.to_thread(self._digest_of, entry, expected)
                if actual != expected:
                    got = actual or "nothing (the file left the cache meanwhile)"
                    raise IntegrityError(
                        f"digest mismatch for {url}: expected {expected}, got {got}", expected=expected, actual=got
                    )
            return entry, fetch
        if expected is not None and expected.lower().startswith("sha256:") and not entry.sha256:
            # Joined a download that left its SHA-256 for later.
            entry = await asyncio.to_thread(self.store.info, entry.digest)
        if not matches(entry, expected):  # joined a download another request started
            actual = f"sha256:{entry.sha256}" if expected and expected.lower().startswith("sha256:") else entry.digest
            raise IntegrityError(
                f"digest mismatch for {url}: expected {expected}, got {actual}", expected=expected or "", actual=actual
            )
        return entry, fetch

    def cached(
        self,
        url: str,
        expected: str | None = None,
        headers: Mapping[str, str] | None = None,
        ignore_qp: tuple[str, ...] = (),
    ) -> CacheEntry | None:
        """The cache's entry for ``url`` fetched with ``headers`` (or the content ``expected`` names, when it is
        a cache id) when its file is on disk; a private entry only for a request with the same URL and
        headers. With ``ignore_qp``, a file seeded under the URL's task is one (fetched by a URL signed
        otherwise: the swarm would hand out the same bytes)."""
        tag = headers_tag(headers or {})
        key = self._key(url, tag, ignore_qp)
        if expected and is_cache_id(expected):
            entry = self.store.lookup(expected)
            if entry is not None and (keys := self.store.index.private_keys(entry.digest)) and key not in keys:
                entry = None
        elif tag:
            entry = self.store.by_private_key(key)
        else:
            entry = self.store.by_url(url)
            if entry is None and ignore_qp:
                entry = self.store.by_task(key)
        return entry if entry is not None and entry.cached else None

    def ignored(self, options: FetchOptions) -> tuple[str, ...]:
        """The query parameters a fetch leaves out of its task's identity: the daemon's, then the request's."""
        return tuple(dict.fromkeys((*self.config.ignore_qp, *options.ignore_qp)))

    @staticmethod
    def _key(url: str, tag: str, ignore_qp: tuple[str, ...]) -> str:
        """A fetch's key (its staging file's name): its task's id without a digest."""
        return task_id_for_url(identity_url(url, ignore_qp), tag=tag)

    async def warm(self, target: str, follow: Callable[[Fetch], Awaitable[CacheEntry]]) -> CacheEntry:
        """Make sure ``target`` (a URL, or a cache id) is cached and intact, fetching it if not; ``follow``
        waits for a fetch (showing its progress). An id is fetched from the URLs it was seen at, then from
        the nodes an import said hold it, and must hash to the id."""
        if target.startswith(("http://", "https://")):
            return await follow(self.fetch(target, headers={}))
        entry = await asyncio.to_thread(self.store.entry, target)
        if entry.cached and await asyncio.to_thread(self._intact, entry.digest):
            return entry
        # An id's own sources are origins; the nodes an export named hold it as members of the fleet.
        urls = [(url, False) for url in entry.sources]
        urls += [(f"{peer.rstrip('/')}/v1/content/{entry.digest}", True) for peer in entry.holders]
        if not urls:
            raise NotInCache(f"{target} is not cached and no source for it is known", digest=entry.digest)
        failure: ShoalError | None = None
        for url, node in urls:
            try:
                fetched = await follow(self.fetch(url, headers={}, expected=entry.digest, fleet_origin=node))
                if not matches(fetched, entry.digest):
                    raise IntegrityError(f"{url} no longer serves {entry.digest}", expected=entry.digest)
                return fetched
            except ShoalError as exc:
                log.warning("fetching %s from %s failed: %s", entry.digest[:16], url, exc)
                failure = exc
        assert failure is not None
        raise failure

    def received(self) -> ScopeBytes:
        """Bytes the daemon's downloads took in since it started, by scope: the ended ones' and the running
        ones' so far."""
        running = (fetch.stats.by_scope() for fetch in self._fetches.values())
        return sum(running, self._received)

    def downloading(self) -> int:
        """Downloads running now."""
        return len(self._fetches)

    def cancel(self, url: str) -> None:
        """Stop the (public) download of ``url``, if one runs; every request waiting on it sees it
        cancelled."""
        fetch = self._fetches.get(self._key(url, "", self.ignored(FetchOptions())))
        if fetch is not None and fetch.task is not None:
            fetch.task.cancel()

    def complete_sha256(self) -> None:
        """Complete the pending SHA-256s of the cache in the background (see the module's docstring)."""
        if self._hashing is not None and not self._hashing.done():
            self._hash_again = True  # an entry added while a pass runs may be past its query
            return
        self._hash_again = False
        complete = functools.partial(self.store.complete_sha256, hasher=self._idle_hasher)
        self._hashing = asyncio.get_running_loop().run_in_executor(self._hasher, complete)
        self._hashing.add_done_callback(self._hashed)

    def _hashed(self, future: asyncio.Future[int]) -> None:
        if future.cancelled() or isinstance(future.exception(), HashingStopped):
            return
        if future.exception() is not None:
            log.warning("completing SHA-256s failed: %s", future.exception())
        elif self._hash_again:
            self.complete_sha256()

    def _digest_of(self, entry: CacheEntry, expected: str) -> str | None:
        """The cached file's digest in ``expected``'s algorithm, hashed while it is held in use; None when
        it is no longer on disk (or was damaged, and removed)."""
        try:
            with self.store.using(entry.digest, touch=False) as (_, path):
                return file_digest(path, expected)
        except NotInCache:
            return None
        except OSError as exc:
            raise LocalIOError(f"cannot read {entry.digest}: {exc}", path=str(exc.filename or "")) from None

    def _intact(self, digest: str) -> bool:
        """Verify a cached entry (a damaged one is removed)."""
        try:
            with self.store.using(digest):
                return True
        except NotInCache:
            return False

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._hash_again = False
        self._idle_hasher.stop()  # the pass in progress ends now; the next start completes what is left
        if self._hashing is not None:
            with contextlib.suppress(Exception):
                await self._hashing
        self._hasher.shutdown()

    async def _run(self, fetch: Fetch, key: str, headers: dict[str, str], expected: str | None) -> None:
        try:
            entry = await self._download(fetch, key, headers, expected)
        except asyncio.CancelledError:
            fetch.result.cancel()
            raise
        except Exception as exc:
            fetch.result.set_exception(exc)
            return
        finally:
            if self._fetches.get(key) is fetch:
                del self._fetches[key]
            self._received += fetch.stats.by_scope()
        fetch.result.set_result(entry)
        log.info("cached %s as %s", fetch.url, entry.digest[:16])
        if not entry.sha256:
            self.complete_sha256()

    async def _keep_serving(self, download: Download, path: Path) -> Path | None:
        """Serve the finished download's pieces from a second name of its file (CacheStore.serving_link) while
        the file moves into the cache, until the seeding publishes the cached file and takes over the have
        streams (PieceServer.publish). Moved from under the download's entry, the file would answer its
        followers 404 and they would forget which pieces we hold, just as we hold them all. None when the
        file cannot have a second name: its followers then meet that 404 and take those pieces elsewhere."""
        if download.served is None:
            return None
        try:
            alias = await asyncio.to_thread(self.store.serving_link, path)
        except LocalIOError as exc:
            log.debug("serving %s on through a second name failed: %s", path, exc)
            return None
        download.served.path = alias
        return alias

    async def _download(self, fetch: Fetch, key: str, headers: dict[str, str], expected: str | None) -> CacheEntry:
        sha256 = (expected or "").lower().startswith("sha256:")
        # The whole-file check of the download: a SHA-256 or an algorithm the cache does not keep (a BLAKE3 is
        # the id adopt checks).
        checked = expected if expected is not None and (sha256 or not is_cache_id(expected)) else None
        fetch.checked = checked
        config = GetConfig(
            dest=self.store.staging_path(key),
            # Behind credentials and not shared: from the origin only, announced to no tracker.
            tracker=self.config.tracker if not fetch.tag or fetch.share else None,
            task_tag=fetch.tag,
            headers={"Accept-Encoding": "identity", **headers},
            download_rate=self.config.download_rate,
            upload_time=0,
            fallback=self.config.fallback and not fetch.no_origin,
            no_origin=fetch.no_origin,
            ignore_qp=fetch.ignore_qp,
            site=self.config.site,
            rack=self.config.rack,
            listen_host=self.config.listen_host,
            listen_port=self.server.port,
            # The cache names the file by its BLAKE3, hashed while it downloads rather than after.
            file_hashes=("blake3", "sha256") if sha256 else ("blake3",),
            # A digest to check the file against: the download may join the content task peers vouch for
            # (core.content_alias), and registers its own when it finishes the URL's task.
            digest=checked,
            credentials=self.config.credentials,
            fleet_origin=fetch.fleet_origin,
        )
        with contextlib.ExitStack() as reservations:

            async def reserve(manifest: Manifest) -> None:
                reservations.close()  # a restart (the origin changed) reserves the new length instead
                await enter_in_thread(reservations, self.store.reserve(manifest.length))

            download = Download(
                fetch.url,
                config,
                self.session,
                self.server,
                identity=self.identity,
                before_write=reserve,
                # The seeding's client: the tracker it moved to when one did not answer is every download's.
                tracker=self.seeding.tracker if self.seeding is not None else None,
            )
            fetch.stats = download.stats
            completed: Downloaded | None = None
            alias: Path | None = None
            try:
                completed = await download.run()
                # A file some of whose pieces the tracker knows by other hashes (fetched again from the origin
                # after a failed whole-file check) is not seeded: peers verify against those hashes.
                seeded = self.seeding is not None and not download.direct and not download.withheld
                if seeded:
                    alias = await self._keep_serving(download, completed.path)
                record = SeededTask(
                    download.task_id,
                    "",
                    fetch.url,
                    completed.generation,
                    completed.manifest.length,
                    completed.manifest.identity.etag,
                    completed.manifest.identity.last_modified,
                )
                entry = await asyncio.to_thread(
                    self.store.adopt,
                    completed.path,
                    name=file_name_from_url(fetch.url),
                    sources=[] if fetch.tag else [fetch.url],
                    expected=expected if expected is not None and is_cache_id(expected) else None,
                    task=record if seeded else None,
                    sha256_later=True,
                    hashes=completed.hashes,
                    private_key=key if fetch.tag else None,
                )
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await asyncio.shield(download.leave())
                if alias is not None:
                    alias.unlink(missing_ok=True)
                if isinstance(exc, IntegrityError) and completed is not None:
                    completed.path.unlink(missing_ok=True)  # verified piece by piece, but not what was asked for
                elif isinstance(exc, LocalIOError) and download.part is not None:
                    # The cache's disk is full or failing: give the space back rather than keep the part
                    # file for a resume.
                    await asyncio.to_thread(download.part.discard)
                raise
        if seeded:
            # The piece server now serves the file from the cache, and the download's followers follow it there
            # (PieceServer.publish): the second name the file was served by meanwhile can go.
            assert self.seeding is not None
            try:
                self.seeding.add(replace(record, digest=entry.digest))
            finally:
                if alias is not None:
                    alias.unlink(missing_ok=True)
            content = None
            with contextlib.suppress(TrackerUnavailable):
                content = await download.register_content(completed, self.store.object_path(entry.digest))
            if content is not None:  # the file's content task, registered for the digest it matched
                self.seeding.add(
                    replace(record, task_id=content.task_id, generation=content.generation, digest=entry.digest)
                )
        else:
            with contextlib.suppress(Exception):
                await download.leave()
        return entry
