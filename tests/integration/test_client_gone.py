"""A client that goes away in the middle of a streamed reply is not an error of the service."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from shoal.http.json_api import json_errors
from shoal.testing.poll import wait_until_async

log = logging.getLogger("test.client_gone")


async def test_a_client_gone_mid_stream_is_logged_in_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = asyncio.Event()
    finished: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first line\n")
        await gone.wait()
        try:
            # The client's close reaches this side at its own pace: write until the transport says so.
            await wait_until_async(lambda: request.transport is None or request.transport.is_closing(), "the close")
            await response.write(b"second line\n")
        except BaseException as exc:
            finished.set_result(exc)
            raise
        finished.set_result(None)
        return response

    app = web.Application(middlewares=[json_errors(log)])
    app.router.add_post("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.INFO):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            assert b"first line" in await reader.readuntil(b"first line\n")
            writer.close()
            await writer.wait_closed()
            gone.set()
            raised = await asyncio.wait_for(finished, 60)
        assert isinstance(raised, ConnectionResetError)
        mine = [r for r in caplog.records if r.name == log.name]
        assert [r.getMessage() for r in mine] == ["POST /stream: the client went away before the reply was written"]
        assert all(r.exc_info is None and r.levelno == logging.INFO for r in mine)
        # Nor does aiohttp log it as an error of the handler ("Error handling request").
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        await runner.cleanup()
