"""The download engine (shoal.peer.engine.Download) in process: against a real HTTP origin, and its owner loop
fed events directly (orderings of peer failures that real processes produce only by chance)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import shoal
from shoal.core.bitfield import Bitfield
from shoal.core.errors import LocalIOError
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceRequest, AnnounceResponse, PeerAddress
from shoal.core.pieces import PieceBook
from shoal.peer.config import GetConfig
from shoal.peer.engine import MAX_WATCHED_PEERS, Download
from shoal.peer.events import Announced, HashesArrived, PeerGone, PeerPiece, RunEnded
from shoal.peer.server import PieceServer
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.partfile import part_path, state_path
from shoal.testing.http import serving
from shoal.testing.origin import build_origin
from shoal.testing.processes import Service
from tests.integration.conftest import rewritten_after_an_interrupted_run


async def test_a_failed_rename_closes_the_part_file_and_keeps_its_pieces_for_a_rerun(tmp_path: Path) -> None:
    payload = os.urandom(600_000)
    (tmp_path / "f.bin").write_bytes(payload)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "x").write_text("in the way")  # the final rename cannot replace a non-empty directory
    app = web.Application()
    app.router.add_static("/", tmp_path)
    async with serving(app) as base, aiohttp.ClientSession() as session:
        download = Download(f"{base}/f.bin", GetConfig(dest=dest), session, PieceServer())
        with pytest.raises(LocalIOError, match="move into place"):
            await download.run()
        assert download.part is not None and not download.part.is_open
        assert state_path(dest).exists() and part_path(dest).read_bytes() == payload

        (dest / "x").unlink()
        dest.rmdir()
        again = Download(f"{base}/f.bin", GetConfig(dest=dest), session, PieceServer())
        done = await again.run()  # every piece verified on disk: nothing is fetched again
        assert done.path == dest and dest.read_bytes() == payload
        assert again.stats.from_origin == 0


@pytest.fixture
async def joined(tmp_path: Path) -> AsyncIterator[Download]:
    """A download past its join (generation 1 of a 1 MiB file), its owner's events fed by the test."""
    async with aiohttp.ClientSession() as session:
        config = GetConfig(dest=tmp_path / "f.bin", tracker="http://127.0.0.1:9")
        download = Download("http://127.0.0.1:9/f.bin", config, session, PieceServer())
        manifest = Manifest.for_identity(OriginIdentity(1 << 20))
        download.generation, download.manifest = 1, manifest
        download._book = PieceBook(manifest)
        download.served = download.server.publish(
            download.task_id, 1, manifest, tmp_path / "f.bin", Bitfield(manifest.piece_count)
        )
        yield download
        await download._stop_tasks()  # the have-stream watchers of peers handed out


def hand_out(download: Download, *peer_ids: str) -> None:
    assert download.manifest is not None
    peers = tuple(PeerAddress(p, "127.0.0.1", 9) for p in peer_ids)
    download._handle(Announced(AnnounceResponse(1, download.manifest, peers=peers), {}, _done()))


def _done() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


async def test_a_peer_that_went_before_its_corrupt_run_ended_stays_banned(joined: Download) -> None:
    hand_out(joined, "bad")
    joined.peers["bad"].requests = 1
    joined._handle(PeerGone("bad"))  # its have stream ended first (the process died)
    joined._handle(RunEnded("bad", (0,), corrupt=True))
    assert "bad" in joined.bad_peers
    hand_out(joined, "bad", "good")
    assert list(joined.peers) == ["good"]


async def test_runs_of_a_peer_that_went_and_came_back_do_not_count_against_it(joined: Download) -> None:
    hand_out(joined, "p")
    joined.peers["p"].requests = 2
    joined._handle(PeerGone("p"))
    hand_out(joined, "p")  # handed out again while its two runs were still going
    joined.peers["p"].requests = 1  # one run of its new state
    for _ in range(3):
        joined._handle(RunEnded("p", ()))
    assert joined.peers["p"].requests == 0


async def test_peers_followed_are_capped_and_a_useless_one_makes_room(joined: Download) -> None:
    assert joined.manifest is not None
    count = joined.manifest.piece_count
    hand_out(joined, *(f"p{i}" for i in range(MAX_WATCHED_PEERS + 10)))
    assert len(joined.peers) == MAX_WATCHED_PEERS  # each holds a connection: the rest wait for room
    # p0 turns out to hold nothing we lack (we hold piece 0, it holds only that); the others hold piece 1.
    joined.book.learn_hashes({0: "a" * 64})
    joined._handle(PeerPiece("p1", 0, "a" * 64, joined.manifest.piece_size(0)))
    joined.peers["p0"].have = Bitfield.of(count, [0])
    for i in range(1, MAX_WATCHED_PEERS):
        joined.peers[f"p{i}"].have = Bitfield.of(count, [1])
    joined.peers["p1"].requests = 1
    hand_out(joined, "new1", "new2")
    assert "p0" not in joined.peers and "new1" in joined.peers  # the useless one made room
    assert "new2" not in joined.peers  # no other peer is useless
    assert len(joined.peers) == MAX_WATCHED_PEERS
    # p0 is handed out again before its stopped watcher has ended: not followed until that watcher's
    # PeerGone, which then removes nothing else.
    joined._handle(PeerGone("p2"))  # room, from a peer that really went
    hand_out(joined, "p0")
    assert "p0" not in joined.peers
    joined._handle(PeerGone("p0"))
    hand_out(joined, "p0")
    assert "p0" in joined.peers
    joined._handle(PeerGone("p3"))
    assert "p0" in joined.peers and "p3" not in joined.peers


async def test_a_piece_on_disk_that_the_tracker_hashes_otherwise_is_fetched_again(joined: Download) -> None:
    """The book's decision (tests/unit/test_pieces.py) carried out: not served, not counted, needed again."""
    assert joined.manifest is not None and joined.served is not None
    joined.book.learn_hashes({0: "a" * 64})
    joined._handle(PeerPiece("p", 0, "a" * 64, joined.manifest.piece_size(0)))
    assert 0 in joined.served.have and joined.stats.done == joined.manifest.piece_size(0)
    joined._handle(HashesArrived(1, 1, {0: "b" * 64}))
    assert 0 not in joined.book.written and 0 not in joined.served.have
    assert joined.stats.done == 0 and joined.book.needed() & 1


async def test_a_failed_origin_run_is_given_back_and_fetched_again(
    tmp_path: Path, tracker: Callable[..., Service]
) -> None:
    # The origin answers the first run's request with a 503, then serves: the peer gives the run's leases
    # back (beside its announcer), is leased pieces again and finishes, every piece from the origin once.
    payload = os.urandom(3 << 20)
    (tmp_path / "f.bin").write_bytes(payload)
    failed: list[str] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        ranged = request.headers.get("Range", "")
        if ranged != "bytes=0-0" and not failed:
            failed.append(ranged)
            return web.Response(status=503)
        return web.FileResponse(tmp_path / "f.bin")

    app = web.Application()
    app.router.add_get("/f.bin", flaky)
    t = tracker()
    out = tmp_path / "out"
    out.mkdir()
    async with serving(app) as base:
        result = await asyncio.wait_for(shoal.aget(f"{base}/f.bin", dest_dir=out, tracker=t.url, upload_time=0), 60)
    assert failed and result.path.read_bytes() == payload
    assert result.bytes_from_origin == len(payload)


async def test_a_restart_stops_serving_the_old_version_before_its_part_file_goes(
    tmp_path: Path, tracker: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in test_faults: a rerun finds every piece of the old bytes on disk, but the origin's file was
    # rewritten under the same ETag and the tracker knows the new bytes. The rerun's last report conflicts
    # and it starts again; from then until its next attempt publishes, it serves nothing of the task.
    root = tmp_path / "origin"
    root.mkdir()
    path = root / "same.bin"
    path.write_bytes(os.urandom(1 << 20))
    dest = tmp_path / "out.bin"
    t = tracker()
    async with serving(build_origin(root)) as base, aiohttp.ClientSession() as session:
        url = f"{base}/same.bin"
        new = await asyncio.to_thread(rewritten_after_an_interrupted_run, url, path, dest)
        other = tmp_path / "other"
        other.mkdir()
        await shoal.aget(url, dest_dir=other, tracker=t.url, upload_time=0)  # the tracker learns the new hashes

        server = PieceServer()
        download = Download(url, GetConfig(dest=dest, tracker=t.url), session, server)
        served_at_join: list[bool] = []
        announce = TrackerClient.announce

        async def watching(self: TrackerClient, task_id: str, request: AnnounceRequest) -> AnnounceResponse:
            if request.event == "started":
                served_at_join.append(task_id in server.tasks)
            return await announce(self, task_id, request)

        monkeypatch.setattr(TrackerClient, "announce", watching)
        done = await asyncio.wait_for(download.run(), 60)
        await download.leave()
    assert done.path.read_bytes() == new
    assert served_at_join == [False, False]  # the first attempt's join, and the one after the restart
