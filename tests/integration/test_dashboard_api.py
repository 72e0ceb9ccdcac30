"""The dashboards' HTTP side over loopback: the tracker's and the mirror manager's snapshots, their streams
of server-sent events, who may read them, and what they never show (a URL's credentials, a private pool).

The services run in this process on real sockets; streams are read as a browser's EventSource reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import blake3
import msgspec
import pytest
from aiohttp import web

from shoal.core.bitfield import Bitfield
from shoal.core.dashboard import MirrorDashboard, TrackerDashboard
from shoal.core.ids import content_task_id
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceRequest, ScopeBytes, piece_hash_bytes
from shoal.core.mirror_toml import parse_config
from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.http.listen import listen
from shoal.mirror import manager_http
from shoal.mirror.manager import MirrorManager
from shoal.testing.hostile import identity
from shoal.testing.poll import wait_until_async
from shoal.testing.processes import Service, start_tracker
from shoal.tracker import dashboard
from shoal.tracker.app import RUNNER_OPTIONS, build_app
from shoal.tracker.config import TrackerConfig

SIZE = 4 << 20
URL = "http://ops:hunter2@127.0.0.1:9/releases/fleet%20image.iso?X-Amz-Signature=SIGNED#part"
MANIFEST = Manifest.for_identity(OriginIdentity(SIZE))
HASHES = tuple(blake3.blake3(bytes([i]) * MANIFEST.piece_length).hexdigest() for i in range(MANIFEST.piece_count))
TASK = content_task_id(SIZE, MANIFEST.piece_length, HASHES)
FLEET = FleetKey.from_token(b"the fleet's token for the dashboard tests")


class Served:
    def __init__(self, app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        self.app, self.base, self.http = app, base, http

    async def get(self, path: str, **headers: str) -> tuple[int, bytes, str]:
        async with self.http.get(self.base + path, headers=headers) as reply:
            return reply.status, await reply.read(), reply.headers.get("Content-Type", "")

    async def post(self, path: str, body: object, **headers: str) -> tuple[int, object]:
        async with self.http.post(self.base + path, json=body, headers=headers) as reply:
            return reply.status, await reply.json()

    async def announce(self, name: str, pieces: int, received: ScopeBytes, **headers: str) -> None:
        """Announce peer ``name`` of TASK holding its first ``pieces`` pieces (the task is registered with
        every piece hash, as a seeder registers one, so the tracker counts what each peer holds)."""
        manifest = MANIFEST
        have = Bitfield.of(manifest.piece_count, range(min(pieces, manifest.piece_count)))
        who = identity(name)
        request = AnnounceRequest(
            peer_id=who.peer_id,
            secret=who.secret,
            url=URL,
            port=7000,
            host=f"{name}.lan",
            site="ams",
            rack="r1",
            generation=1,
            origin=manifest.identity,
            bitfield=have.encode(),
            received=received,
            piece_hash_bytes=piece_hash_bytes(HASHES),
        )
        path = f"/v1/tasks/{TASK}/announce"
        async with self.http.post(self.base + path, data=msgspec.json.encode(request), headers=headers) as reply:
            assert reply.status == 200, await reply.text()


@contextlib.asynccontextmanager
async def serve(app: web.Application, **runner: object) -> AsyncIterator[Served]:
    started, port = await listen(app, "127.0.0.1", 0, **runner)
    try:
        async with aiohttp.ClientSession() as http:
            yield Served(app, f"http://127.0.0.1:{port}", http)
    finally:
        await started.cleanup()


def tracker_app(tmp_path: Path, **config: object) -> web.Application:
    tmp_path.mkdir(exist_ok=True)
    return build_app(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", **config))  # type: ignore[arg-type]


@pytest.fixture
def tracker_process(tmp_path: Path, services: list[Service]) -> Callable[..., Service]:
    """A ``shoal tracker`` process (the integration conftest's ``tracker``, which this module's shadows)."""

    def make(db: str, **options: object) -> Service:
        service = start_tracker(db, **options)  # type: ignore[arg-type]
        services.append(service)
        return service

    return make


@pytest.fixture
async def tracker(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(tracker_app(tmp_path), **RUNNER_OPTIONS) as served:
        yield served


async def events(response: aiohttp.ClientResponse, count: int) -> list[bytes]:
    """The next ``count`` snapshots of a stream, as sent (a ``data:`` line each)."""
    seen: list[bytes] = []
    while len(seen) < count:
        line = await response.content.readline()
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            seen.append(line[6:].rstrip(b"\n"))
    return seen


async def test_a_live_task_is_shown_with_its_peers_and_bytes_and_never_its_urls_secrets(tracker: Served) -> None:
    await tracker.announce("seed", 10_000, ScopeBytes(origin=SIZE))
    await tracker.announce("downloader", 3, ScopeBytes(origin=1000, rack=2000, sites=500))
    status, body, kind = await tracker.get("/v1/dashboard")
    assert status == 200 and kind == "application/json"
    snapshot = msgspec.json.decode(body, type=TrackerDashboard)
    (task,) = snapshot.tasks.tasks
    assert (task.name, task.url) == ("fleet image.iso", "http://127.0.0.1:9/releases/fleet%20image.iso")
    assert (task.peers, task.seeds, task.length) == (2, 1, SIZE)
    assert (task.from_origin, task.from_peers) == (SIZE + 1000, 2500)
    assert [(p.host, p.pieces) for p in task.shown] == [("downloader.lan", 3), ("seed.lan", task.pieces)]
    assert task.shown[1].progress == 1.0 and 0 < task.shown[0].progress < 1
    assert (snapshot.load.tasks, snapshot.load.peers) == (1, 2)
    for secret in (b"hunter2", b"ops", b"SIGNED", b"part"):
        assert secret not in body
    status, body, _ = await tracker.get("/v1/tasks?limit=1")
    assert status == 200 and json.loads(body)["tasks"][0]["task_id"] == task.task_id
    for bad in ("0", "1001", "x", "-1"):
        status, body, _ = await tracker.get(f"/v1/tasks?limit={bad}")
        assert status == 400 and "limit" in json.loads(body)["error"]


async def test_every_viewer_of_the_stream_gets_the_same_snapshots(tracker: Served) -> None:
    feed = tracker.app[dashboard.FEED]
    url = tracker.base + "/v1/dashboard/events"
    async with tracker.http.get(url) as first, tracker.http.get(url) as second:
        assert first.status == 200 and first.headers["Content-Type"] == "text/event-stream"
        ours, theirs = await asyncio.gather(events(first, 3), events(second, 3))
        assert feed.viewers == 2
    # Viewers that left stop the ticks: nothing is computed while nobody looks.
    await wait_until_async(lambda: feed.viewers == 0, "the feed to see both viewers leave")
    both = set(ours) | set(theirs)
    times = [msgspec.json.decode(body, type=TrackerDashboard).time for body in ours]
    assert times == sorted(times) and len(set(times)) == 3  # a new snapshot each event
    # One snapshot a tick whatever the viewers: the two streams shared what was computed.
    assert feed.computed <= len(both) + 1 and len(both) <= 4


async def test_an_open_stream_ends_when_the_tracker_stops(tmp_path: Path) -> None:
    runner, port = await listen(tracker_app(tmp_path), "127.0.0.1", 0, **RUNNER_OPTIONS)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/v1/dashboard/events") as stream:
            await events(stream, 1)
            # aiohttp waits up to 60 s for handlers still running; a stream must not hold the stop that long.
            await asyncio.wait_for(runner.cleanup(), timeout=20)
            await asyncio.wait_for(stream.content.read(), timeout=20)
            assert stream.content.at_eof()


async def test_the_page_and_its_files_are_served_and_nothing_else(tracker: Served) -> None:
    status, body, kind = await tracker.get("/")
    assert status == 200 and kind.startswith("text/html") and b'src="/dashboard/tracker.js"' in body
    assert b"/v1/dashboard/events" in (await tracker.get("/dashboard/tracker.js"))[1]
    async with tracker.http.get(tracker.base + "/") as reply:
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]  # nothing from elsewhere runs
    for name, wanted in (("live.js", "text/javascript"), ("dashboard.css", "text/css"), ("mirror.html", "text/html")):
        status, _, kind = await tracker.get(f"/dashboard/{name}")
        assert status == 200 and kind.startswith(wanted), name
    for name in ("__init__.py", "..%2Fapp.py", ".hidden.js", "missing.js", "..%2F..%2Fcore%2Fdashboard.py"):
        status, _, _ = await tracker.get(f"/dashboard/{name}")
        assert status == 404, name


async def test_a_fleet_tracker_shows_its_dashboard_only_when_made_public(tmp_path: Path) -> None:
    credential = {FLEET_HEADER: FLEET.credential(time.time())}
    async with serve(tracker_app(tmp_path / "closed", fleet_key=FLEET), **RUNNER_OPTIONS) as closed:
        status, body, kind = await closed.get("/")
        assert status == 401 and kind.startswith("text/html") and b"--public-dashboard" in body
        assert (await closed.get("/v1/dashboard"))[0] == 401
        assert (await closed.get("/v1/dashboard/events"))[0] == 401
        assert (await closed.get("/v1/dashboard", **credential))[0] == 200  # the fleet reads it as any route
    public_app = tracker_app(tmp_path / "public", fleet_key=FLEET, public_dashboard=True)
    async with serve(public_app, **RUNNER_OPTIONS) as public:
        await public.announce("seed", 10_000, ScopeBytes(origin=SIZE), **credential)
        assert (await public.get("/"))[0] == 200
        status, body, _ = await public.get("/v1/dashboard")
        assert status == 200 and msgspec.json.decode(body, type=TrackerDashboard).tasks.tasks
        async with public.http.get(public.base + "/v1/dashboard/events") as stream:
            assert stream.status == 200 and await events(stream, 1)
        # Only the dashboard opens: the API (the task's peers, the listing) stays the fleet's.
        assert (await public.get("/v1/tasks"))[0] == 401
        assert (await public.get(f"/v1/tasks/{TASK}"))[0] == 401


async def test_private_pools_are_counted_and_never_shown(tracker: Served) -> None:
    for name, private in (("edge", False), ("secret-lab", True)):
        status, reply = await tracker.post("/v1/pools", {"name": name, "private": private})
        assert status == 201, reply
    status, body, _ = await tracker.get("/v1/dashboard")
    snapshot = msgspec.json.decode(body, type=TrackerDashboard)
    assert [p.name for p in snapshot.pools] == ["edge"] and snapshot.private_pools == 1
    assert b"secret-lab" not in body


# -- the mirror manager's page ------------------------------------------------------------------------------

TOKEN = "mirror-token"
JOB = """
[[jobs]]
name = "tools"
provider = "command"
upstream = "https://u:pw@up.example/tools/?key=K"
command = "true"
"""


def mirror_app(tmp_path: Path, *, public: bool) -> web.Application:
    tmp_path.mkdir(exist_ok=True)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    settings = f'[manager]\ndb = "{db}"\ntoken = "{TOKEN}"\npublic_dashboard = {str(public).lower()}\n'
    return manager_http.build_app(MirrorManager(parse_config(settings + JOB)))


async def test_the_mirror_page_needs_the_token_unless_made_public(tmp_path: Path) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(mirror_app(tmp_path / "closed", public=False)) as closed:
        status, body, _ = await closed.get("/")
        assert status == 401 and b"--public-dashboard" in body
        assert (await closed.get("/v1/mirror/dashboard"))[0] == 401
        status, body, _ = await closed.get("/v1/mirror/dashboard", **bearer)
        assert status == 200 and msgspec.json.decode(body, type=MirrorDashboard).jobs[0].name == "tools"
    async with serve(mirror_app(tmp_path / "public", public=True)) as public:
        assert (await public.get("/"))[0] == 200
        status, body, _ = await public.get("/v1/mirror/dashboard")
        snapshot = msgspec.json.decode(body, type=MirrorDashboard)
        assert status == 200 and snapshot.jobs[0].upstream == "https://up.example/tools/"
        assert b"pw" not in body and b"key=K" not in body
        async with public.http.get(public.base + "/v1/mirror/dashboard/events") as stream:
            assert stream.status == 200 and await events(stream, 1)
        # Read-only: every control still needs the token.
        assert (await public.post("/v1/mirror/jobs/tools/start", {}))[0] == 401
        assert (await public.get("/v1/mirror/jobs"))[0] == 401


def test_shoal_tracker_public_dashboard_opens_the_page_of_a_fleet_tracker(
    tmp_path: Path, tracker_process: Callable[..., Service]
) -> None:
    """The flag, through the command line of a real tracker process."""
    token = tmp_path / "fleet.token"
    token.write_bytes(b"the fleet's token for the dashboard's flag\n")
    token.chmod(0o600)
    flags = ("--fleet-token-file", str(token))
    for public, page, snapshot in ((False, 401, 401), (True, 200, 200)):
        extra = (*flags, "--public-dashboard") if public else flags
        service = tracker_process(f"sqlite:///{tmp_path / f'{public}.db'}", extra=extra)
        assert http_status(f"{service.url}/") == page
        assert http_status(f"{service.url}/v1/dashboard") == snapshot
        assert http_status(f"{service.url}/v1/tasks") == 401  # the API stays the fleet's


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
