"""A daemon's finished download moving into its cache, seen by a peer that follows it (real processes).

The daemon serves its download's pieces from a staging file, then moves the file into its cache and seeds it
from there (shoal.daemon.fetcher). A peer fetching from the daemon meanwhile must get every piece it asks
for, and its have stream must go on: a 404, or a stream ended at the hand-over, makes the peer forget the
daemon just as it holds the whole file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp

from shoal.core.bitfield import Bitfield
from shoal.core.ids import identity_url, task_id_for_url
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.server import PING_SECONDS
from shoal.testing.poll import DEADLINE, wait_until_async
from shoal.testing.processes import Service
from tests.integration.conftest import Daemon, Origin

MiB = 1 << 20
SIZE = 8 * MiB
ORIGIN_RATE = "4M"
"""The origin sends the file in 2 s at least: time for the follower to join the download before its end."""


async def test_a_follower_fetching_while_the_download_moves_into_the_cache_gets_every_piece_and_keeps_its_stream(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin("--rate", ORIGIN_RATE)
    data = make_file(o.root / "file.bin", SIZE)
    node = daemon(tracker())
    url = o.url("file.bin")
    manifest = Manifest.for_identity(OriginIdentity(SIZE))
    base = f"{node.service.url}/v1/tasks/{task_id_for_url(identity_url(url, ()))}"
    get = asyncio.ensure_future(asyncio.to_thread(node.get, url, tmp_path / "file.bin"))
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:

        async def haves() -> aiohttp.ClientResponse | None:
            response = await session.get(f"{base}/haves?gen=1")
            if response.status == 200:
                return response
            response.release()  # not published yet: the download has not learnt its manifest
            return None

        stream = await wait_until_async(haves, "the daemon's download to serve its have stream")
        held = Bitfield.decode(manifest.piece_count, json.loads(await stream.content.readline())["bitfield"])
        assert not held.complete, "the follower must join the download, not the seeding after it"

        async def follow() -> bytes:
            """Read the stream, noting each piece announced, until its first ping after the get's end (a line
            sent after the hand-over: the stream is busy with pieces until then), or its end (b"")."""
            while line := await stream.content.readline():
                message = json.loads(line)
                for index in message.get("have", []):
                    held.add(index)
                if get.done() and "ping" in message:
                    break
            return line

        following = asyncio.ensure_future(follow())
        # Ask the daemon for the highest piece it holds, again and again, until the file is in its cache and
        # the get is done: the move into the cache happens meanwhile.
        while not get.done():
            index = max((i for i in range(manifest.piece_count) if i in held), default=None)
            if index is None:
                await asyncio.wait([get, following], return_when=asyncio.FIRST_COMPLETED, timeout=0.05)
                continue
            start, end = manifest.span(index, 1)
            async with session.get(f"{base}/data?gen=1", headers={"Range": f"bytes={start}-{end - 1}"}) as r:
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status == 206:
                    assert await r.read() == data[start:end]
        done = await get
        assert done.returncode == 0, done.stderr
        assert "cached by the daemon" in done.stderr
        assert statuses.get(206, 0) > 0 and set(statuses) == {206}, statuses
        # The stream outlives the hand-over: it goes on to a ping, not to its end.
        assert await asyncio.wait_for(following, PING_SECONDS + DEADLINE) == b'{"ping": true}\n'
        assert held.complete
        stream.release()
        # The seeding's entry serves the cached file (the staging file and its second name are gone).
        start, end = manifest.span(manifest.piece_count - 1, 1)
        async with session.get(f"{base}/data?gen=1", headers={"Range": f"bytes={start}-{end - 1}"}) as r:
            assert r.status == 206
            assert await r.read() == data[start:end]
    assert not list((node.cache_dir / "staging").iterdir())
