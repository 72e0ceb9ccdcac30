"""The download engine (shoal.peer.engine.Download) in process, against a real HTTP origin."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shoal.core.errors import LocalIOError
from shoal.peer.config import GetConfig
from shoal.peer.engine import Download
from shoal.peer.server import PieceServer
from shoal.storage.partfile import part_path, state_path
from shoal.testing.http import serving


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
