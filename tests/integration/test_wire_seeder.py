"""WireSeeder against a real, independent BitTorrent client: the libtorrent wheel (BSD).

The torrents are made by libtorrent itself (``create_torrent``, ``set_piece_hashes``), so these tests do
not depend on Shoal's own metainfo encoder. The seeder runs in the test's event loop on 127.0.0.1; each
libtorrent session runs in its own threads and is polled against a deadline. Faults (an unknown
info-hash, a malformed message, a file that shrank) are injected by a raw socket client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt
import pytest

from shoal.core.btwire import (
    BLOCK_SIZE,
    BitfieldMessage,
    Handshake,
    Interested,
    Message,
    MessageDecoder,
    Piece,
    Request,
    Unchoke,
    encode_handshake,
    encode_message,
)
from shoal.seeder.wire import WireConfig, WireSeeder, WireTorrent
from shoal.testing.libtorrent_client import SESSION_SETTINGS, add_torrent
from shoal.testing.poll import wait_until_async

PIECE_LENGTH = 64 << 10
DEADLINE = 60.0


@dataclass
class Payload:
    path: Path
    info: lt.torrent_info
    torrent: WireTorrent


class Torrents:
    """The seeder's TorrentLookup: a dict the test can change under it."""

    def __init__(self) -> None:
        self.by_hash: dict[bytes, WireTorrent] = {}

    def wire_torrent(self, info_hash: bytes) -> WireTorrent | None:
        return self.by_hash.get(info_hash)


@pytest.fixture
def torrents() -> Torrents:
    return Torrents()


@pytest.fixture
def make_payload(tmp_path: Path, torrents: Torrents) -> Callable[[str, int], Payload]:
    """A random file of ``size`` bytes, its libtorrent-made torrent, registered with the lookup."""

    def make(name: str, size: int) -> Payload:
        folder = tmp_path / f"seed-{name}"
        folder.mkdir()
        path = folder / name
        path.write_bytes(os.urandom(size))
        creator = lt.create_torrent(lt.list_files(str(path)), PIECE_LENGTH, lt.create_torrent.v1_only)
        lt.set_piece_hashes(creator, str(folder))
        info = lt.torrent_info(lt.bencode(creator.generate()))
        torrent = WireTorrent(info.info_hashes().v1.to_bytes(), path, size, info.piece_length())
        torrents.by_hash[torrent.info_hash] = torrent
        return Payload(path, info, torrent)

    return make


@pytest.fixture
async def seeder(torrents: Torrents) -> AsyncIterator[WireSeeder]:
    seeder = WireSeeder(torrents, WireConfig(max_unchoked=1, tick_seconds=0.5))
    await seeder.start("127.0.0.1", 0)
    yield seeder
    await seeder.stop()


@pytest.fixture
def sessions(seeder: WireSeeder) -> Iterator[list[lt.session]]:
    """libtorrent sessions, destroyed before the seeder stops (the fixture depends on it for that order)."""
    started: list[lt.session] = []
    yield started
    started.clear()


def download(sessions: list[lt.session], payload: Payload, save_path: Path, port: int) -> lt.torrent_handle:
    session = lt.session(SESSION_SETTINGS)
    sessions.append(session)
    handle = add_torrent(session, payload.info, str(save_path))
    handle.connect_peer(("127.0.0.1", port))
    return handle


async def complete(session: lt.session, handle: lt.torrent_handle) -> None:
    """Wait until ``handle`` is seeding and libtorrent has written every piece to its file."""
    await wait_until_async(lambda: handle.status().is_seeding, "libtorrent to seed", timeout=DEADLINE)
    # Seeding means every piece passed its hash check; the writes to the file may still be queued.
    handle.flush_cache()
    await wait_until_async(
        lambda: any(isinstance(alert, lt.cache_flushed_alert) for alert in session.pop_alerts()),
        "libtorrent to flush its cache",
        timeout=DEADLINE,
    )


async def test_libtorrent_downloads_the_file(
    seeder: WireSeeder, make_payload: Callable[[str, int], Payload], sessions: list[lt.session], tmp_path: Path
) -> None:
    payload = make_payload("one.bin", 3 * 1024 * 1024 + 12345)  # the last piece is short
    handle = download(sessions, payload, tmp_path / "out", seeder.port)
    await complete(sessions[0], handle)
    assert (tmp_path / "out" / "one.bin").read_bytes() == payload.path.read_bytes()
    assert seeder.uploaded == payload.torrent.length


async def test_two_libtorrent_clients_at_once_both_complete(
    seeder: WireSeeder, make_payload: Callable[[str, int], Payload], sessions: list[lt.session], tmp_path: Path
) -> None:
    # One unchoke slot (the fixture's config): the second client waits for the slot the first frees.
    payload = make_payload("two.bin", 2 * 1024 * 1024 + 1)
    handles = [download(sessions, payload, tmp_path / f"out{i}", seeder.port) for i in range(2)]
    await asyncio.gather(*(complete(s, h) for s, h in zip(sessions, handles, strict=True)))
    for i in range(2):
        assert (tmp_path / f"out{i}" / "two.bin").read_bytes() == payload.path.read_bytes()


class RawPeer:
    """A bare downloader on a socket, for what a well-behaved client never sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = MessageDecoder()
        self.handshake: Handshake | None = None

    @classmethod
    async def connect(cls, port: int, info_hash: bytes) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_handshake(Handshake(info_hash, b"-RAW000-" + os.urandom(12))))
        return cls(reader, writer)

    def send(self, *messages: Message) -> None:
        self.writer.write(b"".join(encode_message(m) for m in messages))

    async def receive(self) -> Message | None:
        """The next message from the seeder, or None when it closed the connection."""
        async with asyncio.timeout(10):
            while True:
                if self.handshake is None:
                    self.handshake = self.decoder.next_handshake()
                if self.handshake is not None and (message := self.decoder.next_message()) is not None:
                    return message
                data = await self.reader.read(1 << 16)
                if not data:
                    return None
                self.decoder.feed(data)

    async def until(self, kind: type) -> Message:
        while not isinstance(message := await self.receive(), kind):
            assert message is not None, f"closed before {kind.__name__}"
        return message

    async def closed(self) -> bool:
        while (message := await self.receive()) is not None:
            assert not isinstance(message, Piece), "served after it should have closed"
        return True

    async def aclose(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_a_handshake_for_an_unknown_info_hash_is_refused(
    seeder: WireSeeder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.seeder.wire")
    peer = await RawPeer.connect(seeder.port, os.urandom(20))
    async with asyncio.timeout(10):
        assert await peer.reader.read() == b""  # closed without a byte of handshake
    await peer.aclose()
    assert "unknown info-hash" in caplog.text


async def test_a_malformed_message_closes_only_that_connection(
    seeder: WireSeeder,
    make_payload: Callable[[str, int], Payload],
    sessions: list[lt.session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.seeder.wire")
    payload = make_payload("both.bin", 2 * 1024 * 1024)
    handle = download(sessions, payload, tmp_path / "out", seeder.port)
    bad = await RawPeer.connect(seeder.port, payload.torrent.info_hash)
    assert isinstance(await bad.receive(), BitfieldMessage)
    bad.writer.write(struct.pack(">IB", 10 << 20, 7))  # a 10 MiB "piece"
    assert await bad.closed()
    await bad.aclose()
    assert "exceeds the limit" in caplog.text
    await complete(sessions[0], handle)
    assert (tmp_path / "out" / "both.bin").read_bytes() == payload.path.read_bytes()


async def test_a_file_that_shrank_closes_its_connections_and_the_others_go_on(
    seeder: WireSeeder, make_payload: Callable[[str, int], Payload], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.seeder.wire")
    shrunk = make_payload("shrunk.bin", 4 * PIECE_LENGTH)
    intact = make_payload("intact.bin", 4 * PIECE_LENGTH)
    # One unchoke slot (the fixture's config): the first peer takes it, the second waits for it.
    peers = [await RawPeer.connect(seeder.port, payload.torrent.info_hash) for payload in (shrunk, intact)]
    peers[0].send(Interested())
    await peers[0].until(Unchoke)
    peers[1].send(Interested())
    await peers[1].until(BitfieldMessage)
    os.truncate(shrunk.path, PIECE_LENGTH)
    peers[0].send(Request(3, 0, BLOCK_SIZE))
    assert await peers[0].closed()
    assert "shorter than its torrent" in caplog.text

    await peers[1].until(Unchoke)
    peers[1].send(Request(3, 0, BLOCK_SIZE))
    block = await peers[1].until(Piece)
    assert block == Piece(3, 0, intact.path.read_bytes()[3 * PIECE_LENGTH :][:BLOCK_SIZE])
    for peer in peers:
        await peer.aclose()


async def test_a_withdrawn_torrent_closes_its_connections(
    seeder: WireSeeder,
    make_payload: Callable[[str, int], Payload],
    torrents: Torrents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.seeder.wire")
    payload = make_payload("gone.bin", 4 * PIECE_LENGTH)
    peer = await RawPeer.connect(seeder.port, payload.torrent.info_hash)
    peer.send(Interested())
    await peer.until(Unchoke)
    del torrents.by_hash[payload.torrent.info_hash]
    peer.send(Request(0, 0, BLOCK_SIZE))
    assert await peer.closed()
    await peer.aclose()
    assert "no longer served" in caplog.text


async def idle_for(seconds: float) -> None:
    """Wait until the seeder's clock (the loop's) has moved ``seconds`` on: the raw peers then count as idle
    that long. A precondition, not an assertion that something has not happened yet."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await wait_until_async(lambda: loop.time() - start > seconds, f"{seconds} s on the loop's clock")


async def test_idle_handshakes_holding_every_connection_do_not_lock_a_real_client_out(
    torrents: Torrents,
    make_payload: Callable[[str, int], Payload],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The info-hash is public: strangers take every connection with a handshake and nothing after it (a
    keep-alive now and then would do for ten minutes). They are closed, the idlest first, as a real client
    arrives, and libtorrent gets the file."""
    caplog.set_level(logging.INFO, logger="shoal.seeder.wire")
    payload = make_payload("crowd.bin", 2 * 1024 * 1024)
    config = WireConfig(max_connections=12, crowded_idle=0.5, tick_seconds=0.2)
    seeder = WireSeeder(torrents, config)
    await seeder.start("127.0.0.1", 0)
    sessions: list[lt.session] = []
    try:
        idle = [await RawPeer.connect(seeder.port, payload.torrent.info_hash) for _ in range(config.max_connections)]
        for peer in idle:
            assert isinstance(await peer.receive(), BitfieldMessage)  # accepted: each holds a connection
        assert seeder.peers == config.max_connections
        await idle_for(config.crowded_idle)
        handle = download(sessions, payload, tmp_path / "out", seeder.port)
        await complete(sessions[0], handle)
        assert (tmp_path / "out" / "crowd.bin").read_bytes() == payload.path.read_bytes()
        closed = [peer for peer in idle if peer.reader.at_eof() or await _closed_now(peer)]
        assert closed, "no idle handshake was closed"
        assert "while connections ran short" in caplog.text
        for peer in idle:
            peer.writer.transport.abort()
    finally:
        sessions.clear()
        await seeder.stop()


async def _closed_now(peer: RawPeer) -> bool:
    """Whether the seeder has closed ``peer``'s connection (its end of file is there to read)."""
    try:
        async with asyncio.timeout(0.01):
            return await peer.reader.read(1 << 16) == b""
    except TimeoutError:
        return False


async def test_an_unchoked_peer_that_asks_for_nothing_gives_its_slot_to_a_waiting_client(
    torrents: Torrents, make_payload: Callable[[str, int], Payload], tmp_path: Path
) -> None:
    """One unchoke slot, taken by a peer that says it is interested and then requests nothing: a real client
    waiting for the slot gets it once that peer has been idle ``crowded_idle`` seconds."""
    payload = make_payload("snub.bin", 2 * 1024 * 1024)
    seeder = WireSeeder(torrents, WireConfig(max_unchoked=1, rotate_seconds=3600, crowded_idle=0.5, tick_seconds=0.2))
    await seeder.start("127.0.0.1", 0)
    sessions: list[lt.session] = []
    try:
        squatter = await RawPeer.connect(seeder.port, payload.torrent.info_hash)
        squatter.send(Interested())
        await squatter.until(Unchoke)
        handle = download(sessions, payload, tmp_path / "out", seeder.port)
        await complete(sessions[0], handle)
        assert (tmp_path / "out" / "snub.bin").read_bytes() == payload.path.read_bytes()
        squatter.writer.transport.abort()
    finally:
        sessions.clear()
        await seeder.stop()
