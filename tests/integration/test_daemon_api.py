"""The daemon's control API and its OpenAPI document over its real Unix socket: every route the control app
serves is described, the running daemon serves the document in docs/openapi/, what the document says a body
must be is what the daemon accepts (the same structs decide both), and the client maps each kind of failure
to its one error."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shoal.core.errors import DaemonUnavailable, RemoteError
from shoal.core.ids import PeerIdentity
from shoal.daemon.client import DaemonClient
from shoal.daemon.config import DaemonConfig, index_path
from shoal.daemon.control import ROUTES, Control, openapi_document
from shoal.daemon.fetcher import Fetcher
from shoal.daemon.messages import DaemonStatus
from shoal.openapi_docs import DIRECTORY
from shoal.peer.server import PieceServer
from shoal.storage.cache_store import CacheStore
from shoal.testing import routes
from tests.integration.conftest import Daemon

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[Control]:
    """The control API's handlers over a fresh cache (no daemon process: for what the app registers)."""
    with CacheStore(index_path(tmp_path), tmp_path, 1 << 20) as store:
        async with aiohttp.ClientSession() as session:
            identity = PeerIdentity.from_secret(secrets.token_hex(16), "test")
            fetcher = Fetcher(DaemonConfig(cache_dir=tmp_path), store, session, PieceServer(), None, identity=identity)
            try:
                yield Control(store, fetcher, lambda: DaemonStatus(str(tmp_path), "", 0, 0, 0, 1 << 20, 0, [], 0))
            finally:
                await fetcher.stop()


async def test_every_route_the_control_api_serves_is_in_its_routes(control: Control) -> None:
    served = routes.served(control.app())
    described = {(route.method, route.path) for route in ROUTES}
    assert (
        served
        == described
        == {
            ("POST", "/v1/get"),
            ("POST", "/v1/warm"),
            ("GET", "/v1/status"),
            ("POST", "/v1/pools"),
            ("DELETE", "/v1/pools/{pool}"),
        }
    )
    document = openapi_document()
    assert routes.described(document) == described
    assert set(document["paths"]["/v1/get"]["post"]["responses"]["200"]["content"]) == {"application/x-ndjson"}


async def _ask(node: Daemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """One request on the daemon's socket; ``body`` is sent as JSON, or as they are when bytes."""
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    connector = aiohttp.UnixConnector(path=str(node.socket))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.request(method, f"http://daemon{path}", data=data) as resp:
            return resp.status, await resp.json(content_type=None)


async def test_the_daemon_serves_its_document_and_its_bounds_are_the_daemons(
    daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    node = daemon()
    served = await asyncio.to_thread(DaemonClient(node.socket).document)
    assert served == json.loads((ROOT / DIRECTORY / "daemon.json").read_text())
    schemas = served["components"]["schemas"]
    assert schemas["GetRequest"]["required"] == ["url", "dest_dir", "name"]
    code, status = await _ask(node, "GET", "/v1/status")
    assert code == 200 and set(status) == set(schemas["DaemonStatus"]["properties"])
    assert status["cache_dir"] == str(node.cache_dir) and status["files"] == 0
    # A field the document requires, left out or of the wrong type: a 400 naming it, before anything runs.
    code, reply = await _ask(node, "POST", "/v1/get", {"url": "http://127.0.0.1:9/x", "dest_dir": str(tmp_path)})
    assert code == 400 and "`name`" in reply["error"]
    code, reply = await _ask(node, "POST", "/v1/get", {"url": 7, "dest_dir": str(tmp_path), "name": "x"})
    assert code == 400 and reply["error"].startswith("malformed url: ")
    code, reply = await _ask(node, "POST", "/v1/warm", {"target": ""})
    assert code == 400 and reply["error"].startswith("malformed target: ")
    code, reply = await _ask(node, "POST", "/v1/warm", b"not json")
    assert code == 400 and reply["error"].startswith("the body is not valid JSON")
    assert not await asyncio.to_thread((tmp_path / "x").exists)


async def _canned(path: Path, status: int, body: bytes, content_type: str) -> web.AppRunner:
    """A server on a Unix socket that answers every request with one reply: a daemon gone wrong."""

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


CASES = [
    (
        400,
        b'{"error": "dest_dir must be absolute"}',
        "application/json",
        RemoteError,
        2,
        "the daemon refused: dest_dir",
    ),
    (403, b'{"error": "only the daemon\'s user"}', "application/json", RemoteError, 2, "the daemon refused: only"),
    (500, b'{"error": "internal error"}', "application/json", RemoteError, 1, "the daemon failed: internal error"),
    (502, b"<html>bad gateway</html>", "text/html", RemoteError, 1, "the daemon failed: Bad Gateway (HTTP 502)"),
    (
        200,
        b'{"cache_dir": 3, "result": {"entry": 3}}',
        "application/json",
        DaemonUnavailable,
        1,
        "cannot read (is it another version?)",
    ),
    (200, b"<html>hello</html>", "text/html", DaemonUnavailable, 1, "cannot read (is it another version?)"),
]


@pytest.mark.parametrize(("status", "body", "content_type", "error", "exit_code", "says"), CASES)
async def test_the_client_maps_each_failure_to_its_one_error(
    tmp_path: Path, status: int, body: bytes, content_type: str, error: type[Exception], exit_code: int, says: str
) -> None:
    socket_path = tmp_path / "wrong.sock"
    runner = await _canned(socket_path, status, body, content_type)
    try:
        client = DaemonClient(socket_path, timeout=30)
        for call in (client.status, lambda: client.warm("0" * 64)):
            with pytest.raises(error) as info:
                await asyncio.to_thread(call)
            assert says in str(info.value)
            assert getattr(info.value, "exit_code", 1) == exit_code
    finally:
        await runner.cleanup()


async def test_a_stream_that_ends_without_a_result_is_a_daemon_gone_away(tmp_path: Path) -> None:
    socket_path = tmp_path / "short.sock"
    progress = b'{"progress": {"total": 10, "done": 4}}\n'
    runner = await _canned(socket_path, 200, progress, "application/x-ndjson")
    seen: list[int] = []
    try:
        client = DaemonClient(socket_path, timeout=30)
        with pytest.raises(DaemonUnavailable, match="without a result"):
            await asyncio.to_thread(client.warm, "0" * 64, progress=lambda p: seen.append(p.done))
    finally:
        await runner.cleanup()
    assert seen == [4]


async def test_a_daemon_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    client = DaemonClient(tmp_path / "absent.sock", timeout=30)
    with pytest.raises(DaemonUnavailable, match=f"cannot reach the daemon at {tmp_path}"):
        await asyncio.to_thread(client.status)
