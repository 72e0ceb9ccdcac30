"""The OpenAPI documents: the files in docs/openapi/ are what the code describes, every route a service
registers under /v1 is described, and the pool API's client calls exactly the routes it describes."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from shoal.core import pool_api
from shoal.core.pool import MemberStatus
from shoal.core.pool_messages import Heartbeat, MemberReport, PushRequest
from shoal.http import openapi
from shoal.openapi_docs import DIRECTORY, DOCUMENTS, render
from shoal.tracker import app as tracker_app
from shoal.tracker import bt, dashboard, pool_routes
from shoal.tracker.config import TrackerConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_each_document_in_docs_is_current(name: str) -> None:
    path = ROOT / DIRECTORY / f"{name}.json"
    assert path.exists() and path.read_bytes() == render(DOCUMENTS[name]()), (
        f"{path.relative_to(ROOT)} is not what the code describes: run scripts/openapi and commit the result"
    )


def test_every_route_the_tracker_serves_under_v1_is_described(tmp_path: Path) -> None:
    app = tracker_app.build_app(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}"))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method != "HEAD"  # aiohttp's add_get adds it beside each GET
        and route.resource.canonical != openapi.PATH
    }
    described = {
        (route.method, route.path) for route in tracker_app.ROUTES + bt.ROUTES + pool_routes.ROUTES + dashboard.ROUTES
    }
    assert served == described


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{[A-Za-z_]+\\}", "[^/]+", re.escape(path)) + r"(\?.*)?$")


CALLS = [
    pool_api.create("edge", private=True, allow=["10.0.0.0/8"]),
    pool_api.listing(),
    pool_api.show("edge"),
    pool_api.remove("edge"),
    pool_api.members("edge"),
    pool_api.heartbeat("edge", "m-1", Heartbeat("n", "http://h:1/"), wait=5, version=3, secret="s"),
    pool_api.leave("edge", "m-1", secret="s"),
    pool_api.push("edge", PushRequest("http://o/f")),
    pool_api.jobs("edge"),
    pool_api.job("edge", "0" * 16),
    pool_api.cancel("edge", "0" * 16),
    pool_api.report("edge", "0" * 16, "m-1", MemberReport(MemberStatus.RUNNING, done=1), secret="s"),
]


@pytest.mark.parametrize("call", CALLS, ids=lambda call: f"{call.method} {call.path}")
def test_each_pool_client_call_is_a_described_route_with_its_messages(call: pool_api.Call[object]) -> None:
    (route,) = [r for r in pool_routes.ROUTES if r.method == call.method and _template(r.path).match(call.path)]
    assert call.reply is route.response
    if route.request is None:
        assert call.body is None
    else:
        assert call.body is not None
        msgspec.json.decode(call.body, type=route.request)


def test_every_pool_route_has_a_client_call() -> None:
    called = {
        (r.method, r.path)
        for r in pool_routes.ROUTES
        for c in CALLS
        if c.method == r.method and _template(r.path).match(c.path)
    }
    assert called == {(r.method, r.path) for r in pool_routes.ROUTES}
