"""The piece server's two-step start: a port bound (and announced) first, answered once it serves."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp import web

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.piece_http import MAX_UPLOAD_WAIT
from shoal.peer.server import PieceServer, ServerConfig
from shoal.testing.poll import DEADLINE, wait_until_async
from shoal.testing.sockets import accept_queue

TASK = "ab" * 20


async def test_a_peer_that_connects_before_serve_is_answered_once_it_serves() -> None:
    server = PieceServer()
    port = server.bind("127.0.0.1", 0)
    assert port > 0
    try:
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/v1/health"))
            # The kernel completed the connection and holds it for the server, which has not accepted it.
            await wait_until_async(lambda: accept_queue(port) == 1 or request.done(), "the connection to queue")
            assert not request.done(), "answered before the server served"
            await server.serve()
            await server.serve()  # idempotent
            async with await asyncio.wait_for(request, DEADLINE) as resp:
                assert resp.status == 200
                assert (await resp.json())["ok"] is True
    finally:
        await server.stop()


async def test_serve_called_twice_at_once_starts_one_server() -> None:
    server = PieceServer()
    port = server.bind("127.0.0.1", 0)
    try:
        await asyncio.gather(server.serve(), server.serve())
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/v1/health") as resp:
            assert resp.status == 200
    finally:
        await server.stop()


async def test_a_server_that_fails_to_start_refuses_connections() -> None:
    async def health(request: web.Request) -> web.Response:
        return web.Response()

    server = PieceServer()
    server.add_route(web.get("/v1/health", health))  # clashes with the piece routes: the app cannot be built
    port = server.bind("127.0.0.1", 0)
    with pytest.raises(RuntimeError):
        await server.serve()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await server.stop()


@pytest.mark.parametrize("host", ["", "127.0.0.1", "localhost", "::1"])
async def test_bind_takes_what_tcp_site_takes(host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    server = PieceServer()
    port = server.bind(host, 0)
    try:
        with pytest.raises(RuntimeError, match="bound already"):
            server.bind(host, 0)
        await server.serve()
        target = "::1" if host == "::1" else "127.0.0.1"
        reader, writer = await asyncio.open_connection(target, port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await server.stop()


async def test_serve_needs_a_bound_port() -> None:
    with pytest.raises(RuntimeError, match="bound socket"):
        await PieceServer().serve()


async def test_a_port_in_use_is_an_os_error_at_bind() -> None:
    first = PieceServer()
    port = await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            PieceServer().bind("127.0.0.1", port)
    finally:
        await first.stop()


def test_shoal_get_starts_without_the_http_server_or_sql() -> None:
    """What `shoal get` imports before its first request (its start-up is CPU time when many start at once):
    the HTTP server side comes with its first piece (peer.api._serve_from_first_piece), SQL never."""
    code = (
        "import sys, shoal.cli.get\n"
        "from shoal.peer.api import aget\n"
        "print(' '.join(m for m in ('aiohttp.web', 'shoal.peer.piece_http', 'sqlalchemy', 'rich') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


async def test_an_upload_that_would_wait_past_the_askers_patience_is_turned_away(tmp_path) -> None:
    piece = 256 * 1024
    manifest = Manifest(OriginIdentity(16 * piece), piece)
    path = tmp_path / "data"
    payload = os.urandom(manifest.length)
    path.write_bytes(payload)
    server = PieceServer(ServerConfig(upload_rate=piece))  # one piece a second, a burst of one piece
    port = await server.start("127.0.0.1", 0)
    server.publish(TASK, 1, manifest, path, Bitfield.full(16))
    url = f"http://127.0.0.1:{port}/v1/tasks/{TASK}/data?gen=1"
    try:
        async with aiohttp.ClientSession() as session:
            # 16 pieces at one a second: 15 s before the first byte, past MAX_UPLOAD_WAIT.
            async with session.get(url, headers={"Range": f"bytes=0-{16 * piece - 1}"}) as r:
                assert r.status == 503
                assert int(r.headers["Retry-After"]) == math.ceil(15 - MAX_UPLOAD_WAIT)
            assert server.uploads == 0
            # The refused reservation was given back: one piece goes at once.
            started = time.monotonic()
            async with session.get(url, headers={"Range": f"bytes=0-{piece - 1}"}) as r:
                assert r.status == 206 and await r.read() == payload[:piece]
            assert time.monotonic() - started < MAX_UPLOAD_WAIT
    finally:
        await server.stop()


async def test_an_upload_whose_task_is_withdrawn_while_it_waits_is_not_sent(tmp_path) -> None:
    piece = 256 * 1024
    manifest = Manifest(OriginIdentity(4 * piece), piece)
    path = tmp_path / "data"
    path.write_bytes(os.urandom(manifest.length))
    server = PieceServer(ServerConfig(upload_rate=piece))
    port = await server.start("127.0.0.1", 0)
    served = server.publish(TASK, 1, manifest, path, Bitfield.full(4))
    url = f"http://127.0.0.1:{port}/v1/tasks/{TASK}/data?gen=1"
    try:
        async with aiohttp.ClientSession() as session:
            # Two pieces at one a second: about a second of waiting, during which the download restarts.
            waiting = asyncio.ensure_future(session.get(url, headers={"Range": f"bytes=0-{2 * piece - 1}"}))
            await wait_until_async(lambda: server.uploads == 1, "the upload to wait for its rate")
            server.withdraw(TASK, served)
            async with await waiting as r:
                assert r.status == 404
    finally:
        await server.stop()


async def test_a_task_republished_under_a_new_path_keeps_its_have_streams(tmp_path) -> None:
    """A daemon's download moves into its cache and is seeded from there: the same generation published again
    with every piece keeps its followers' streams (they learn the pieces added) and serves the new path; a new
    generation ends them."""
    piece = 256 * 1024
    manifest = Manifest(OriginIdentity(4 * piece), piece)
    staging, cached = tmp_path / "staging", tmp_path / "cached"
    content = os.urandom(manifest.length)
    staging.write_bytes(content)
    server = PieceServer()
    port = await server.start("127.0.0.1", 0)
    downloading = server.publish(TASK, 1, manifest, staging, Bitfield.of(4, [0, 1]))
    base = f"http://127.0.0.1:{port}/v1/tasks/{TASK}"
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{base}/haves?gen=1") as stream:
            assert stream.status == 200
            assert b"bitfield" in await asyncio.wait_for(stream.content.readline(), DEADLINE)
            staging.rename(cached)
            seeded = server.publish(TASK, 1, Manifest(OriginIdentity(4 * piece), piece), cached, Bitfield.full(4))
            assert seeded is not downloading and server.tasks[TASK] is seeded
            server.withdraw(TASK, downloading)  # the download's own leave: not what is served now
            assert server.tasks[TASK] is seeded
            assert json.loads(await asyncio.wait_for(stream.content.readline(), DEADLINE)) == {"have": [2, 3]}
            async with session.get(f"{base}/data?gen=1", headers={"Range": f"bytes=0-{piece - 1}"}) as data:
                assert data.status == 206
                assert await data.read() == content[:piece]
            server.publish(TASK, 2, manifest, cached, Bitfield.full(4))
            assert b"have" not in await asyncio.wait_for(stream.content.read(), DEADLINE)
        await wait_until_async(lambda: not seeded.watchers, "the ended stream to leave the entry it was handed to")
    finally:
        await server.stop()
