"""The mirror manager's API and its OpenAPI document over loopback HTTP: every route the server answers is
described, the document is served without the token, and what it says a body must be is what the server
accepts (the same structs decide both)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from shoal.core.mirror_toml import parse_config
from shoal.http import openapi
from shoal.http.listen import listen
from shoal.mirror.manager import MirrorManager
from shoal.mirror.manager_http import ROUTES, build_app, openapi_document
from shoal.testing import routes

TOKEN = "s3cret"


def manager(tmp_path: Path) -> MirrorManager:
    return MirrorManager(parse_config(f'[manager]\ndb = "sqlite:///{tmp_path / "m.db"}"\ntoken = "{TOKEN}"\n'))


def test_every_route_the_manager_serves_is_in_its_routes(tmp_path: Path) -> None:
    app = build_app(manager(tmp_path))
    pages = {("GET", "/"), ("GET", "/dashboard/{name}")}  # the status page and its files: no JSON
    served = routes.served(app) - pages
    described = {(route.method, route.path) for route in ROUTES}
    assert served == described
    document = openapi_document()
    assert routes.described(document) == described


async def test_the_document_is_served_and_its_bounds_are_the_servers(tmp_path: Path) -> None:
    runner, port = await listen(build_app(manager(tmp_path)), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}{openapi.PATH}") as resp:  # no token: the API's shape is no secret
                assert resp.status == 200
                served = await resp.json()
            assert served == json.loads(json.dumps(openapi_document()))
            register = served["components"]["schemas"]["Register"]
            assert register["required"] == ["concurrency"]
            assert register["properties"]["concurrency"]["minimum"] == 1
            headers = {"Authorization": f"Bearer {TOKEN}"}
            url = f"{base}/v1/mirror/workers/w1/register"
            async with http.post(url, json={"concurrency": 0}, headers=headers) as resp:
                assert resp.status == 400
                assert "concurrency" in (await resp.json())["error"]
            async with http.post(url, json={"concurrency": 1}, headers=headers) as resp:
                assert resp.status == 200
                assert set(await resp.json()) == set(served["components"]["schemas"]["Registered"]["properties"])
    finally:
        await runner.cleanup()
