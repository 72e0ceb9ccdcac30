"""The seeder's routes are described: every route it installs is in ``ROUTES``, a running seeder serves the
document in docs/openapi/ (combined with its embedded tracker's when it runs one), and its JSON replies are
the structs the document names."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from shoal.http import openapi
from shoal.openapi_docs import DIRECTORY
from shoal.seeder.app import ROUTES, install, openapi_document
from shoal.seeder.config import SeederConfig
from shoal.seeder.messages import FileListing, SeederHealth
from shoal.seeder.service import Seeder
from shoal.storage.hash_index import HashIndex
from shoal.testing import routes
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, start_seeder

ROOT = Path(__file__).resolve().parents[2]


def _document(name: str) -> dict[str, Any]:
    return json.loads((ROOT / DIRECTORY / f"{name}.json").read_text())


def _get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return reply.headers.get_content_type(), reply.read()


def test_every_route_the_seeder_installs_is_described(tmp_path: Path) -> None:
    app = web.Application()
    with HashIndex(tmp_path / "hashes.db") as index:
        install(app, Seeder(SeederConfig(dirs=(tmp_path,)), index), "http://tracker.example")
    served = routes.served(app)
    described = {(route.method, route.path) for route in ROUTES} | {("GET", "/metrics")}
    assert served == described
    assert routes.described(openapi_document()) == described
    head = {route.resource.canonical for route in app.router.routes() if route.method == "HEAD"}
    assert "/files/{rel}" in head  # the web seed's clients ask HEAD


def test_a_seeder_with_its_own_tracker_serves_both_documents_in_one(
    tmp_path: Path, services: list[Service], tracker: Callable[..., Service]
) -> None:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "app.bin").write_bytes(b"x" * 1000)
    alone = start_seeder(tmp_path / "releases", state_dir=tmp_path / "a", extra=("--tracker", tracker().url))
    services.append(alone)
    embedded = start_seeder(tmp_path / "releases", state_dir=tmp_path / "b")
    services.append(embedded)

    kind, body = _get(f"{alone.url}{openapi.PATH}")
    assert kind == "application/json"
    assert json.loads(body) == _document("seeder")
    _, body = _get(f"{embedded.url}{openapi.PATH}")
    combined = json.loads(body)
    assert combined == openapi.combine([_document("tracker"), _document("seeder")])
    assert set(combined["paths"]) == set(_document("tracker")["paths"]) | set(_document("seeder")["paths"])

    # The replies are the structs the document names.
    def listed() -> FileListing | None:
        listing = msgspec.json.decode(_get(f"{alone.url}/v1/files")[1], type=FileListing)
        return listing if listing.files else None

    listing = wait_until(listed, "app.bin to be published")
    assert [f.path for f in listing.files] == ["releases/app.bin"]
    health = msgspec.json.decode(_get(f"{alone.url}/v1/seeder/health")[1], type=SeederHealth)
    assert health.ok and health.files == 1 and health.hashed_bytes == 1000
    served = _document("seeder")["paths"]
    assert set(served["/serve"]["get"]["responses"]["200"]["content"]) == {"application/x-bittorrent"}
    assert served["/v1/files"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FileListing"
    }
