"""The download engine (shoal.peer.engine.Download) in process, against a real HTTP origin and tracker. Its
decisions, fed orderings of events that real processes produce only by chance, are tested with values in
tests/unit/test_download.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import shoal
from shoal.core.errors import LocalIOError
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.peer.config import GetConfig
from shoal.peer.engine import Download
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

        async def watching(
            self: TrackerClient, task_id: str, request: AnnounceRequest, *, wait_busy: bool = True
        ) -> AnnounceResponse:
            if request.event == "started":
                served_at_join.append(task_id in server.tasks)
            return await announce(self, task_id, request, wait_busy=wait_busy)

        monkeypatch.setattr(TrackerClient, "announce", watching)
        done = await asyncio.wait_for(download.run(), 60)
        await download.leave()
    assert done.path.read_bytes() == new
    assert served_at_join == [False, False]  # the first attempt's join, and the one after the restart
