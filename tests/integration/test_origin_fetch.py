"""The peer's origin fetcher in process, against a real origin: which bytes end up as which piece."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shoal.core.errors import OriginError
from shoal.core.events import Event, NoRange, OriginPiece, RunEnded
from shoal.core.manifest import Manifest
from shoal.peer.fetchers import fetch_origin
from shoal.peer.origin import Origin as OriginClient
from shoal.storage.partfile import PartFile, piece_hash
from shoal.testing.http import serving
from tests.integration.conftest import Origin

PIECE = 256 << 10


async def fetch(url: str, dest: Path, run: list[int]) -> tuple[list[Event], PartFile, Manifest]:
    events: list[Event] = []

    async def unthrottled(size: int) -> None:
        return None

    async with aiohttp.ClientSession() as session:
        origin = OriginClient(url, session, {})
        probe = await origin.probe()
        manifest = Manifest(probe.identity, PIECE)
        part = PartFile(dest, "t" * 40, manifest)
        part.open()
        await fetch_origin(origin, manifest, part, run, events.append, unthrottled)
    return events, part, manifest


async def test_a_run_with_gaps_gets_each_piece_its_own_bytes(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    src = origin()
    data = make_file(src.root / "g.bin", 6 * PIECE)
    # Without Range support the engine asks for the pieces it lacks around those it holds: [1, 3, 4].
    events, part, _ = await fetch(src.url("g.bin"), tmp_path / "g.bin", [1, 3, 4])
    try:
        fetched = {e.index: e.digest for e in events if isinstance(e, OriginPiece)}
        assert fetched == {i: piece_hash(data[i * PIECE : (i + 1) * PIECE]) for i in (1, 3, 4)}
        assert isinstance(events[-1], RunEnded) and events[-1].unfetched == () and events[-1].error is None
        on_disk = (tmp_path / ".g.bin.shoal-part").read_bytes()
        for i in (1, 3, 4):
            assert on_disk[i * PIECE : (i + 1) * PIECE] == data[i * PIECE : (i + 1) * PIECE]
        assert on_disk[2 * PIECE : 3 * PIECE] == bytes(PIECE)  # read past, not kept
    finally:
        part.close()


async def test_an_origin_without_range_support_gives_a_gapped_run_its_own_bytes(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    src = origin("--no-range")
    data = make_file(src.root / "w.bin", 6 * PIECE)
    events, part, _ = await fetch(src.url("w.bin"), tmp_path / "w.bin", [0, 2, 5])
    try:
        assert any(isinstance(e, NoRange) for e in events)
        fetched = {e.index: e.digest for e in events if isinstance(e, OriginPiece)}
        assert fetched == {i: piece_hash(data[i * PIECE : (i + 1) * PIECE]) for i in (0, 2, 5)}
    finally:
        part.close()


@pytest.mark.parametrize(("content_range", "length"), [("bytes */0", 0), ("bytes */100", None), (None, None)])
async def test_a_416_to_the_probe_is_an_empty_file_only_when_the_origin_says_so(
    content_range: str | None, length: int | None
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        headers = {"Content-Range": content_range} if content_range else {}
        return web.Response(status=416, headers=headers)

    app = web.Application()
    app.router.add_get("/f.bin", refuse)
    async with serving(app) as base, aiohttp.ClientSession() as session:
        origin = OriginClient(f"{base}/f.bin", session, {})
        if length is None:
            with pytest.raises(OriginError, match="not empty") as info:
                await origin.probe()
            assert not info.value.transient  # the origin's answer: no swarm stands in for it
        else:
            assert (await origin.probe()).identity.length == length
