"""The piece server's two-step start: a port bound (and announced) first, answered once it serves."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web

from shoal.peer.server import PieceServer


async def test_a_peer_that_connects_before_serve_is_answered_once_it_serves() -> None:
    server = PieceServer()
    port = server.bind("127.0.0.1", 0)
    assert port > 0
    try:
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/v1/health"))
            await asyncio.sleep(0.2)
            assert not request.done(), "answered before the server served"
            await server.serve()
            await server.serve()  # idempotent
            async with await asyncio.wait_for(request, 5) as resp:
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
