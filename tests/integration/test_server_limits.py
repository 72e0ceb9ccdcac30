"""shoal.http.limits.Runner on a real socket in this process: clients that never finish a request head, never
send a body they announced, or never read what they asked for lose their connection; honest ones are served.

Each attack waits for the server to close the connection (an event or the socket's end), never for time to
pass; the limits are a fraction of a second so that the waits are short.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from shoal.http.json_api import read_json
from shoal.http.limits import Runner, ServerLimits, send_file

LIMITS = ServerLimits(idle_timeout=0.5, body_timeout=0.5, write_timeout=0.5, floor_rate=1 << 20)
BIG = 64 << 20
"""More than the kernel's buffers at both ends of a loopback connection hold."""

Serve = Callable[[web.Application], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[Runner] = []

    async def start(app: web.Application) -> int:
        runner = Runner(app, LIMITS, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


async def connect(port: int, *, receive_buffer: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=1 << 10)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (a reset counts as a close)."""
    data = b""
    async with asyncio.timeout(30):
        try:
            while chunk := await reader.read(1 << 16):
                data += chunk
        except ConnectionResetError:
            pass
    return data


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def test_a_request_head_that_never_ends_is_closed_and_honest_requests_are_served(serve: Serve) -> None:
    port = await serve(_app(("GET", "/", hello)))
    idle_reader, idle_writer = await connect(port)  # says nothing at all
    slow_reader, slow_writer = await connect(port)
    slow_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
    assert await closed_by_server(idle_reader) == b""
    assert await closed_by_server(slow_reader) == b""
    assert await closed_by_server(reader) == b""  # kept alive after its answer, then idle: closed too
    for w in (idle_writer, slow_writer, writer):
        w.close()


async def test_a_body_that_never_arrives_gets_a_408(serve: Serve) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await read_json(request))

    port = await serve(_app(("POST", "/echo", echo)))
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    async with asyncio.timeout(30):
        reply = await reader.readuntil(b"\r\n")
    assert reply.startswith(b"HTTP/1.1 408"), reply
    writer.close()


async def test_a_reader_that_stops_reading_a_stream_is_aborted(serve: Serve) -> None:
    ended = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(BIG >> 16):
                await response.write(bytes(1 << 16))
        except ConnectionResetError:
            ended.set()
        return response

    port = await serve(_app(("GET", "/stream", stream)))
    _, writer = await connect(port, receive_buffer=4096)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(30):
        await ended.wait()
    writer.close()


async def test_a_file_sent_to_a_reader_that_stops_reading_is_abandoned(serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:  # noqa: ASYNC230 (a sparse file: nothing to wait for)
        f.truncate(BIG)
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def file(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = BIG
        await response.prepare(request)
        assert request.transport is not None
        with open(path, "rb") as f:  # noqa: ASYNC230 (a local file, as the piece server opens it)
            try:
                await send_file(request.transport, f, 0, BIG, 256 << 10, LIMITS)
            except ConnectionResetError as exc:
                outcome.set_result(exc)
                raise
        outcome.set_result(None)
        return response

    port = await serve(_app(("GET", "/file", file)))
    _, writer = await connect(port, receive_buffer=4096)
    writer.write(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(30):
        error = await outcome
    assert isinstance(error, ConnectionResetError) and "took more than" in str(error)
    writer.close()


def _app(*routes: tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]) -> web.Application:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
