"""BitTorrent wire seeding (BEP 3): serves complete files to standard clients on one TCP port.

The decisions live in the core (shoal.core.btseeding: connection states and request validation;
shoal.core.unchoke: which peers are unchoked); this module owns the sockets, the disk and the clock. A
client's handshake names an info-hash; the ``TorrentLookup`` the seeder is given answers with the file to
serve, or None and the connection closes.

Rules:

- Each connection has two tasks: one reads and feeds the core, one sends the blocks of the requests the
  core has queued. The sender frames blocks with ``piece_header`` and writes a batch of header and block
  pairs at once, then waits for the transport to drain below ``write_buffer``; a slow peer thus holds at
  most that much of our memory in its transport and never blocks the others.
- The disk is never read on the event loop. Blocks come from spans of the file (as many whole pieces
  as fit in ``read_span``, at least one) read with ``os.pread`` in a thread into an LRU of
  ``cache_bytes``; a block is a memoryview slice of its span, not a copy. Spans are not read ahead:
  clients request pieces in near-random order. Memory held by the cache: at most ``cache_bytes`` (at
  least one span), plus a span being read for each sender that waits on one. (Python 3.11's transport
  copies what it is given into its own buffer, so unsent blocks do not pin spans; from 3.12
  ``writelines`` sends the slices as they are, and a connection's unsent blocks pin up to
  ``write_buffer / 16 KiB`` more spans.)
- At most ``max_unchoked`` peers are unchoked; the others wait in turn, and a peer that was unchoked for
  ``rotate_seconds`` while others wait is choked again for the next (shoal.core.unchoke). An unchoked peer
  that asked for nothing for ``crowded_idle`` seconds while others wait gives its slot up at once.
- Connections are kept for active peers. A peer not interested for ``interest_timeout`` is closed (the
  core's ``expired``). When connections run short (past three quarters of ``max_connections``, or a new
  one arrives at the limit), peers that sent nothing but keep-alives for ``crowded_idle`` seconds are
  closed, those not interested first, the idlest first; only when none is that idle is a newcomer refused.
  An info-hash is public: without this, handshakes followed by a keep-alive now and then would hold every
  connection for as long as ``idle_timeout``.
- With an ``admission`` (a fleet's private torrents), a handshake for a served info-hash is answered only
  when the host it comes from is admitted to that swarm (core.bt_admission: it announced the swarm to the
  fleet's tracker with a passkey, recently); any other is closed before a byte of ours is sent, and
  counted in ``refused``. An info-hash the seeder does not serve is closed without asking anyone.
- A file that has gone, is shorter than its torrent, is another file than the one published (its inode),
  or a torrent the lookup no longer serves as it was (checked whenever a span is read) closes the
  connections that read it, with a logged reason; the server goes on serving everything else. A peer's
  protocol error closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shoal.core import btseeding
from shoal.core.bt_tracker import normalize_address
from shoal.core.btseeding import (
    HandshakeReceived,
    PeerCompleted,
    PeerInterested,
    PeerNotInterested,
    SeedingConnection,
    State,
)
from shoal.core.btwire import BLOCK_SIZE, piece_header
from shoal.core.errors import ListenError, LocalIOError, ProtocolError
from shoal.core.unchoke import UnchokeSlots
from shoal.http.limits import quiet_logs, raise_open_files_limit

log = logging.getLogger("shoal.seeder.wire")

# Azureus-style peer id (BEP 20): client "SH", version 0.1.0.0, then random bytes.
PEER_ID_PREFIX = b"-SH0100-"


@dataclass(frozen=True)
class WireTorrent:
    info_hash: bytes
    """20-byte SHA-1 of the bencoded info dict."""
    path: Path
    """The complete file on disk (single-file torrents)."""
    length: int
    piece_length: int
    inode: int = 0
    """The inode of the file published; a file read at ``path`` with another is not sent (0: not checked)."""


class TorrentLookup(Protocol):
    def wire_torrent(self, info_hash: bytes) -> WireTorrent | None:
        """The torrent to serve for ``info_hash``, or None when it is not (or no longer) served."""
        ...


class WireAdmission(Protocol):
    async def admits(self, info_hash: bytes, address: str) -> bool:
        """Whether the host at ``address`` (an IP address, normalised) may be served ``info_hash``."""
        ...


# No slots: the class attributes must stay readable as the defaults (the CLI shows them).
@dataclass(frozen=True)
class WireConfig:
    max_connections: int = 200
    """Peer connections at once, all torrents together; more are closed as they arrive."""
    max_unchoked: int = 8
    """Peers downloading at once, all torrents together; other interested peers wait for a slot."""
    rotate_seconds: float = 30.0
    """Seconds an unchoked peer keeps its slot while other peers wait for one."""
    max_requests: int = btseeding.MAX_QUEUED_REQUESTS
    """Requests queued per peer; past it requests are dropped (see shoal.core.btseeding)."""
    max_request_length: int = btseeding.MAX_REQUEST_LENGTH
    """Longest block a peer may request; a longer request closes the connection."""
    cache_bytes: int = 64 << 20
    """Bytes of file spans kept in memory, all torrents together (at least one span is kept)."""
    read_span: int = 256 << 10
    """Bytes read from disk at once, rounded down to whole pieces, at least one piece. Clients request
    pieces in near-random order (rarest first, ties broken at random), so a span of several large pieces
    mostly reads what is evicted before it is asked for; small pieces are grouped to save thread hops."""
    write_buffer: int = 1 << 20
    """Bytes queued in a connection's transport before its sender waits for the peer to take them."""
    idle_timeout: float = btseeding.IDLE_TIMEOUT
    """Seconds a peer may stay silent (not even a keep-alive) before it is disconnected."""
    interest_timeout: float = btseeding.INTEREST_TIMEOUT
    """Seconds a peer may stay not interested (since its handshake, or since it lost interest) before it is
    disconnected."""
    crowded_idle: float = 10.0
    """When connections run short, peers that sent nothing but keep-alives this long are closed to make
    room; an unchoked peer that asked for nothing this long gives its slot up to a waiting one."""
    tick_seconds: float = 5.0
    """How often keep-alives, idle peers and unchoke rotation are seen to."""


class _Closing(Exception):
    """A connection must close for ``reason`` (not the peer's protocol error: our side's decision)."""


def _read_span(path: Path, inode: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of ``path``, if it is still the file of ``inode``; in a worker thread."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            if inode and os.fstat(fd).st_ino != inode:
                raise LocalIOError(f"{path} is no longer the file published", path=str(path))
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from None
    if len(data) != size:
        raise LocalIOError(f"{path} is shorter than its torrent", path=str(path))
    return data


class _SpanCache:
    """An LRU of file spans by (info_hash, span index); one read in flight per span, shared by its waiters."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._spans: OrderedDict[tuple[bytes, int], memoryview] = OrderedDict()
        self._loading: dict[tuple[bytes, int], asyncio.Future[bytes]] = {}
        self._bytes = 0

    def get(self, key: tuple[bytes, int]) -> memoryview | None:
        span = self._spans.get(key)
        if span is not None:
            self._spans.move_to_end(key)
        return span

    async def load(self, key: tuple[bytes, int], path: Path, inode: int, offset: int, size: int) -> memoryview:
        future = self._loading.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(_read_span, path, inode, offset, size))
            self._loading[key] = future
            future.add_done_callback(lambda done: self._loaded(key, done))
        # shield: a waiter that is cancelled (its peer left) must not cancel the read others wait for.
        return memoryview(await asyncio.shield(future))

    def _loaded(self, key: tuple[bytes, int], future: asyncio.Future[bytes]) -> None:
        del self._loading[key]
        if future.cancelled() or future.exception() is not None:
            return  # the waiters see the error; the next request reads again
        span = memoryview(future.result())
        self._spans[key] = span
        self._bytes += len(span)
        while self._bytes > self.capacity and len(self._spans) > 1:
            _, old = self._spans.popitem(last=False)
            self._bytes -= len(old)

    def cancel(self) -> None:
        for future in self._loading.values():
            future.cancel()


@dataclass(eq=False)
class _Peer:
    conn: SeedingConnection
    writer: asyncio.StreamWriter
    address: str
    host: str = ""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sender: asyncio.Task[None] | None = None
    closed: bool = False

    def write(self, data: bytes) -> None:
        if data and not self.closed:
            self.writer.write(data)


class WireSeeder:
    """Serves the torrents ``lookup`` knows over the BitTorrent wire protocol. Start and stop are explicit."""

    def __init__(
        self, lookup: TorrentLookup, config: WireConfig | None = None, *, admission: WireAdmission | None = None
    ) -> None:
        """``admission``: whom to serve (a fleet's private torrents); None: every host."""
        self.lookup = lookup
        self.config = config or WireConfig()
        self.admission = admission
        self.peer_id = PEER_ID_PREFIX + os.urandom(20 - len(PEER_ID_PREFIX))
        self.port = 0
        self.uploaded = 0
        """Payload bytes handed to the transports, all peers together."""
        self.refused = 0
        """Handshakes refused because ``admission`` did not admit their host."""
        self._cache = _SpanCache(self.config.cache_bytes)
        self._slots: UnchokeSlots[_Peer] = UnchokeSlots(self.config.max_unchoked, self.config.rotate_seconds)
        self._peers: set[_Peer] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def peers(self) -> int:
        return len(self._peers)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); return the bound port. An address that cannot be had
        is a ListenError."""
        raise_open_files_limit()  # a connection is a file: as for the HTTP servers (shoal.http.limits)
        quiet_logs()
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            raise ListenError.from_os_error(f"{host}:{port}", exc) from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick())
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
        for peer in list(self._peers):
            self._close(peer, "seeder stopping", abort=True)
        # The handlers see their connection lost and end; they are not cancelled, because asyncio's
        # streams log a cancelled client_connected_cb as an error (Python 3.11).
        await asyncio.gather(*self._handlers, *([self._ticker] if self._ticker else []), return_exceptions=True)
        self._cache.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None
        self._ticker = None

    # -- one connection --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername", ("?", 0))[:2]
        address = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        if len(self._peers) >= self.config.max_connections and not self._make_room(loop.time(), 1):
            log.info("bt peer %s refused: %d connections already", address, len(self._peers))
            writer.close()
            return
        conn = SeedingConnection(
            self.peer_id,
            loop.time(),
            max_requests=self.config.max_requests,
            max_request_length=self.config.max_request_length,
            idle_timeout=self.config.idle_timeout,
            interest_timeout=self.config.interest_timeout,
        )
        peer = _Peer(conn, writer, address, host=host)
        writer.transport.set_write_buffer_limits(high=self.config.write_buffer)
        task = asyncio.current_task()
        assert task is not None
        self._peers.add(peer)
        self._handlers.add(task)
        reason = "peer closed the connection"
        try:
            while data := await reader.read(1 << 16):
                events = conn.receive_data(data, loop.time())
                i = 0
                while i < len(events):  # acting on an event may produce more (accept: what came with it)
                    event = events[i]
                    if isinstance(event, HandshakeReceived) and self.admission is not None:
                        await self._admit(peer, event.info_hash)
                    events += self._on_event(peer, event)
                    i += 1
                if conn.queued:
                    peer.wake.set()
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except _Closing as exc:
            reason = str(exc)
        except (ConnectionError, TimeoutError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._handlers.discard(task)
            self._close(peer, reason)
            if peer.sender is not None:
                peer.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await peer.sender

    async def _admit(self, peer: _Peer, info_hash: bytes) -> None:
        """Nothing when ``peer``'s host may be served ``info_hash`` (or the torrent is not served: the
        handshake's own handling closes it); else _Closing, before anything of ours is sent."""
        assert self.admission is not None
        if self.lookup.wire_torrent(info_hash) is None:
            return
        try:
            host = normalize_address(str(peer.host).partition("%")[0])
            admitted = await self.admission.admits(info_hash, host)
        except ProtocolError:
            admitted = False  # not an IP address we could ask about
        if not admitted:
            self.refused += 1
            raise _Closing(f"refused: the tracker has not admitted this host to {info_hash.hex()}")

    def _on_event(self, peer: _Peer, event: btseeding.Event) -> list[btseeding.Event]:
        """Act on one event; return the events that acting on it produced."""
        now = asyncio.get_running_loop().time()
        if isinstance(event, HandshakeReceived):
            torrent = self.lookup.wire_torrent(event.info_hash)
            if torrent is None:
                raise _Closing(f"unknown info-hash {event.info_hash.hex()}")
            try:
                peer.write(peer.conn.accept(torrent.length, torrent.piece_length))
            except ValueError as exc:
                raise _Closing(f"cannot serve {event.info_hash.hex()}: {exc}") from None
            peer.sender = asyncio.create_task(self._send(peer, torrent))
            return peer.conn.receive_data(b"", now)  # messages that came with the handshake
        if isinstance(event, PeerInterested):
            if self._slots.want(peer, now):
                peer.write(peer.conn.unchoke())
        elif isinstance(event, PeerNotInterested):
            self._release(peer, now)
            if peer.conn.state is State.UNCHOKED:
                peer.write(peer.conn.choke())
        elif isinstance(event, PeerCompleted):
            raise _Closing("the peer has every piece")
        return []

    def _make_room(self, now: float, wanted: int) -> int:
        """Close up to ``wanted`` peers that have expired or sent nothing but keep-alives for ``crowded_idle``
        seconds: expired ones first, then those not interested, the idlest first. Return how many closed."""
        idle = self.config.crowded_idle
        closable = [p for p in self._peers if p.conn.expired(now) or p.conn.idle_for(now) >= idle]
        closable.sort(key=lambda p: (not p.conn.expired(now), p.conn.peer_interested, -p.conn.idle_for(now)))
        for peer in closable[:wanted]:
            self._close(peer, f"idle for {peer.conn.idle_for(now):.0f} s while connections ran short", abort=True)
        return min(wanted, len(closable))

    def _release(self, peer: _Peer, now: float) -> None:
        """Give ``peer``'s unchoke slot (if it has one) to the next waiting peer."""
        for other in self._slots.leave(peer, now):
            if other.conn.state is State.CHOKED:
                other.write(other.conn.unchoke())

    def _close(self, peer: _Peer, reason: str, *, abort: bool = False) -> None:
        if peer.closed:
            return
        peer.closed = True
        self._peers.discard(peer)
        self._release(peer, asyncio.get_running_loop().time())
        peer.conn.close()
        if abort:
            peer.writer.transport.abort()  # drop unsent blocks: nobody will wait for them
        else:
            peer.writer.close()
        log.info("bt peer %s closed: %s", peer.address, reason)

    async def _send(self, peer: _Peer, torrent: WireTorrent) -> None:
        """Send the blocks ``peer`` requested, batch by batch, from the span cache."""
        conn, writer, cache = peer.conn, peer.writer, self._cache
        span_size = torrent.piece_length * max(1, self.config.read_span // torrent.piece_length)
        batch = max(1, self.config.write_buffer // BLOCK_SIZE)
        try:
            while True:
                await peer.wake.wait()
                peer.wake.clear()
                while requests := conn.take_requests(batch):
                    parts: list[bytes | memoryview] = []
                    sent = 0
                    for request in requests:
                        span_index, at = divmod(request.index * torrent.piece_length + request.begin, span_size)
                        key = (torrent.info_hash, span_index)
                        span = cache.get(key) or await self._load(torrent, key, span_size)
                        parts.append(piece_header(request.index, request.begin, request.length))
                        parts.append(span[at : at + request.length])
                        sent += request.length
                    writer.writelines(parts)
                    self.uploaded += sent
                    await writer.drain()
        except (_Closing, LocalIOError) as exc:
            self._close(peer, str(exc))
        except (ConnectionError, TimeoutError) as exc:
            self._close(peer, f"connection lost: {exc}")
        except Exception:
            # A bug must not leave the peer connected with nobody sending: log it and drop this peer only.
            log.exception("bt peer %s: sending failed", peer.address)
            self._close(peer, "internal error")

    async def _load(self, torrent: WireTorrent, key: tuple[bytes, int], span_size: int) -> memoryview:
        # A miss goes to the disk, so it is where a torrent the lookup withdrew or changed is noticed.
        if self.lookup.wire_torrent(torrent.info_hash) != torrent:
            raise _Closing("the torrent is no longer served")
        offset = key[1] * span_size
        size = min(span_size, torrent.length - offset)
        return await self._cache.load(key, torrent.path, torrent.inode, offset, size)

    async def _tick(self) -> None:
        """Keep-alives, idle peers and unchoke rotation, every ``tick_seconds``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.tick_seconds)
            now = loop.time()
            for peer in list(self._peers):
                if peer.conn.expired(now):
                    self._close(peer, "silent for too long")
                else:
                    peer.write(peer.conn.keepalive(now))
            crowded = len(self._peers) - self.config.max_connections * 3 // 4
            if crowded > 0:
                self._make_room(now, crowded)
            self._snub(now)
            choke, unchoke = self._slots.rotate(now)
            for peer in choke:
                peer.write(peer.conn.choke())
            for peer in unchoke:
                if peer.conn.state is State.CHOKED:
                    peer.write(peer.conn.unchoke())

    def _snub(self, now: float) -> None:
        """While peers wait for a slot, an unchoked peer that asked for nothing for ``crowded_idle`` seconds
        gives its slot up and waits again behind them."""
        if not self._slots.waiting:
            return
        idle = [p for p in self._slots.unchoked if p.conn.idle_for(now) >= self.config.crowded_idle]
        for peer in idle[: len(self._slots.waiting)]:  # not more than wait, or a snubbed peer gets a slot back
            self._release(peer, now)
            if peer.conn.state is State.UNCHOKED:
                peer.write(peer.conn.choke())
            self._slots.want(peer, now)
