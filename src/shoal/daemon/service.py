"""``shoal daemon``: the long-running peer of a host. Its parts, started in this order and stopped in reverse:

cache lock ── one daemon per cache directory (see shoal.storage.cache_lock), taken before anything else
cache store ── reconciled with its files at start (orphans removed, missing files dropped)
piece server ── serves every cached task's pieces to peers, whole files at /v1/content/{id}, and /metrics
seeding ── keeps each cached task announced to the tracker for as long as it is cached
fetcher ── one swarm download per URL into the cache, however many requests ask at once
control API ── the Unix socket ``shoal get`` and ``shoal cache warm`` talk to
pool members ── one per ``--pool`` or runtime join: fetch what is pushed to the pool, report progress to the
                tracker
scrub ── re-hashes every cached file every ``scrub_interval``
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from pathlib import Path

import aiohttp
from aiohttp import web

from shoal.core.errors import ListenError
from shoal.core.ids import PeerIdentity
from shoal.core.pool import member_id_for
from shoal.daemon import metrics as daemon_metrics
from shoal.daemon.client import DaemonClient
from shoal.daemon.config import DaemonConfig, PoolSpec, index_path
from shoal.daemon.content_http import content_route
from shoal.daemon.control import Control
from shoal.daemon.fetcher import Fetcher
from shoal.daemon.messages import DaemonStatus
from shoal.daemon.pools import Identity, Memberships, PoolMember
from shoal.daemon.seeding import Seeding
from shoal.daemon.socket_guard import prepare_directory
from shoal.http.limits import Runner
from shoal.http.metrics import Metrics
from shoal.peer.server import PieceServer, ServerConfig
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.cache_lock import CacheLock
from shoal.storage.cache_reconcile import reconcile
from shoal.storage.cache_store import CacheStore, describe

log = logging.getLogger("shoal.daemon")


class Daemon:
    """``async with Daemon(config) as daemon:`` starts every part; leaving the block stops them."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.identity = PeerIdentity.from_secret(secrets.token_hex(16), "daemon")
        self.store = CacheStore(index_path(config.cache_dir), config.cache_dir, config.capacity)
        self.server = PieceServer(
            ServerConfig(
                max_uploads=config.max_uploads,
                upload_rate=config.upload_rate,
                fleet_key=config.credentials.key,
                tls=config.credentials.server_ssl,
            )
        )
        self.seeding: Seeding | None = None
        self.fetcher: Fetcher | None = None
        self.metrics = Metrics()
        self.pools: Memberships | None = None
        self.node_url = ""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Daemon:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        config, stack = self.config, self._stack
        # Before the cache is made: a new socket directory is born 0700 even when the cache directory goes
        # inside it, and one that is not this user's alone is refused before anything is written.
        prepare_directory(config.socket)
        # Then: a second daemon must be refused before it writes its capacity into the first one's cache.
        await asyncio.to_thread(stack.enter_context, CacheLock(config.cache_dir))
        await asyncio.to_thread(self.store.__enter__)
        stack.callback(self.store.__exit__)
        reconciled = await asyncio.to_thread(reconcile, self.store)
        if reconciled.dropped or reconciled.orphans or reconciled.staging or reconciled.dead:
            log.warning("cache reconciled: %s", reconciled)
        self.server.add_route(content_route(self.store, config.credentials.key))
        self.server.add_route(self.metrics.route())  # its collectors are added as the parts they read start
        try:
            await self.server.start(config.listen_host, config.listen_port)
        except OSError as exc:
            raise ListenError.from_os_error(f"{config.listen_host}:{config.listen_port}", exc) from None
        stack.push_async_callback(self.server.stop)
        wildcard = config.listen_host in ("0.0.0.0", "::", "")
        host = socket.getfqdn() if wildcard else config.listen_host
        self.node_url = f"{config.credentials.peer_scheme}://{host}:{self.server.port}"
        await asyncio.to_thread(self.store.index.set_meta, "node", self.node_url)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=128, limit_per_host=16), auto_decompress=False, read_bufsize=1 << 20
        )
        stack.push_async_callback(session.close)
        if config.tracker:
            self.seeding = Seeding(
                self.store,
                self.server,
                TrackerClient(config.tracker, session, credentials=config.credentials),
                identity=self.identity,
                host="" if wildcard else config.listen_host,
                site=config.site,
                rack=config.rack,
                retry_seconds=config.reseed_seconds,
            )
            await self.seeding.start()
            stack.push_async_callback(self.seeding.stop)
        self.fetcher = Fetcher(config, self.store, session, self.server, self.seeding, identity=self.identity)
        stack.push_async_callback(self.fetcher.stop)
        daemon_metrics.install(self.metrics, self.store, self.fetcher, self.server, self.seeding)
        self.fetcher.complete_sha256()  # any left pending when the daemon last stopped
        if self.seeding is not None:  # pools live on the tracker
            self.pools = await self._memberships(session, self.seeding, self.fetcher)
            stack.push_async_callback(self.pools.close)
        runner = Runner(Control(self.store, self.fetcher, self.status, self.pools).app())
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await _bind_control(runner, config.socket)
        stack.callback(_unlink_quietly, config.socket)
        if self.pools is not None:
            await self.pools.start(config.pools)
        if config.scrub_interval > 0:
            scrub = asyncio.create_task(self._scrub_every(config.scrub_interval))
            stack.callback(scrub.cancel)
        log.info("cache %s: %s", config.cache_dir, describe(self.store.usage()))

    async def _memberships(self, session: aiohttp.ClientSession, seeding: Seeding, fetcher: Fetcher) -> Memberships:
        config = self.config
        secret = await asyncio.to_thread(self._member_secret)
        identity = Identity(
            member_id_for(secret),
            config.member_name or socket.gethostname(),
            self.node_url,
            config.site,
            config.rack,
            secret,
        )

        def member(spec: PoolSpec) -> PoolMember:
            return PoolMember(
                spec,
                # The seeding's choice of tracker: one failover moves seeding, downloads and pools.
                trackers=seeding.tracker.choice,
                session=session,
                fetcher=fetcher,
                store=self.store,
                identity=identity,
                dest_roots=config.pool_dest,
                credentials=config.credentials,
            )

        return Memberships(member)

    def _member_secret(self) -> str:
        """The secret this cache's member id in pools derives from (core.pool.member_id_for), kept in its
        index so a restarted daemon is the same member."""
        secret = self.store.index.get_meta("member_secret")
        if secret is None:
            secret = secrets.token_hex(16)
            self.store.index.set_meta("member_secret", secret)
        return secret

    def status(self) -> DaemonStatus:
        usage = self.store.usage()
        return DaemonStatus(
            cache_dir=str(self.config.cache_dir),
            node=self.node_url,
            peer_port=self.server.port,
            used=usage.used,
            reserved=usage.reserved,
            capacity=usage.capacity,
            files=usage.files,
            seeding=self.seeding.task_ids if self.seeding else [],
            uploading=len(self.server.tasks),
            pools=self.pools.names if self.pools is not None else [],
        )

    async def _scrub_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            damaged = await asyncio.to_thread(self.store.scrub)
            if damaged:
                log.warning("scrub removed %d damaged files: %s", len(damaged), ", ".join(d[:16] for d in damaged))


async def _bind_control(runner: web.AppRunner, path: Path) -> None:
    """Listen on the control socket, created with mode 0600 in a directory only this user may enter."""
    _prepare_socket_path(path)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window in which another user could connect
    try:
        await web.UnixSite(runner, str(path)).start()
    except OSError as exc:
        raise ListenError.from_os_error(str(path), exc) from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)


def _prepare_socket_path(path: Path) -> None:
    """Create the socket's directory (0700; an existing one must be this user's alone, see
    shoal.daemon.socket_guard); remove a stale socket, refuse a live one."""
    prepare_directory(path)
    if DaemonClient(path).running():
        raise ListenError(f"cannot listen on {path}: a daemon is already listening there", address=str(path))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a daemon that died


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
