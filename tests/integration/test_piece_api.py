"""A peer's piece server describes its routes: every route it serves is in ``ROUTES``, a running one serves
the document in docs/openapi/peer.json, and what it sends is what the document says (the health reply and
each have-stream line decode as the structs it names, piece bytes and errors have its media types)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import msgspec

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.http import openapi
from shoal.openapi_docs import DIRECTORY
from shoal.peer.messages import HavesLine, PeerHealth
from shoal.peer.piece_http import ROUTES, PieceRoutes, openapi_document
from shoal.peer.server import PieceServer
from shoal.testing import routes

ROOT = Path(__file__).resolve().parents[2]
TASK = "cd" * 20


def test_every_route_the_piece_server_serves_is_described() -> None:
    app = PieceRoutes(PieceServer()).app()
    served = routes.served(app)
    described = {(route.method, route.path) for route in ROUTES}
    assert served == described
    assert routes.described(openapi_document()) == described


def _media(document: dict[str, object], path: str, status: str) -> set[str]:
    return set(document["paths"][path]["get"]["responses"][status]["content"])  # type: ignore[index]


async def test_a_running_piece_server_sends_what_its_document_says(tmp_path: Path) -> None:
    piece = 64 * 1024
    manifest = Manifest(OriginIdentity(4 * piece), piece)
    path = tmp_path / "data"
    payload = os.urandom(manifest.length)
    path.write_bytes(payload)
    server = PieceServer()
    port = await server.start("127.0.0.1", 0)
    have = Bitfield(4)
    have.add(0)
    served = server.publish(TASK, 1, manifest, path, have)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}{openapi.PATH}") as resp:
                document = await resp.json()
            assert document == json.loads((ROOT / DIRECTORY / "peer.json").read_text())

            async with session.get(f"{base}/v1/health") as resp:
                assert resp.content_type in _media(document, "/v1/health", "200")
                assert msgspec.json.decode(await resp.read(), type=PeerHealth) == PeerHealth(True, 1, 0)

            data = f"{base}/v1/tasks/{TASK}/data"
            async with session.get(f"{data}?gen=1", headers={"Range": f"bytes=0-{piece - 1}"}) as resp:
                assert resp.status == 206 and "206" in document["paths"]["/v1/tasks/{task_id}/data"]["get"]["responses"]
                assert resp.content_type in _media(document, "/v1/tasks/{task_id}/data", "206")
                assert await resp.read() == payload[:piece]
            async with session.get(f"{data}?gen=2", headers={"Range": f"bytes=0-{piece - 1}"}) as resp:
                assert resp.status == 409
                assert resp.content_type in _media(document, "/v1/tasks/{task_id}/data", "default")
                assert "generation 1" in await resp.text()

            async with session.get(f"{base}/v1/tasks/{TASK}/haves?gen=1") as resp:
                assert resp.content_type in _media(document, "/v1/tasks/{task_id}/haves", "200")
                first = msgspec.json.decode(await resp.content.readline(), type=HavesLine)
                assert first == HavesLine(bitfield=have.encode())
                served.add(2, at_once=True)
                assert msgspec.json.decode(await resp.content.readline(), type=HavesLine) == HavesLine(have=[2])
    finally:
        await server.stop()
