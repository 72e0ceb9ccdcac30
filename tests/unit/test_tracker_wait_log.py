"""The lines a peer logs when the tracker asks it to wait (a 503 or 429 with Retry-After: TrackerBusy), in
the tracker client's wait (peer.tracker_client), the announcer's (peer.announcer) and the wire seeder's
admission question (seeder.admission): each gives the tracker's own words, so a line reads "busy" only
when the tracker said it is, and never that the tracker failed. The replies are those the tracker makes:
its cap's (tracker.admission), its peer limits' (core.peer_limits), a task that moved (tracker.service)
and a cluster's forward (tracker.cluster), served by a small aiohttp tracker on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec
import pytest
from aiohttp import web

from shoal.core.ids import PeerIdentity
from shoal.core.messages import AnnounceRequest, SwarmAdmission
from shoal.core.peer_limits import PeerLimits, PeerRefusal
from shoal.http.json_api import json_error
from shoal.peer import tracker_client
from shoal.peer.announcer import Announcer, Applied, Busy
from shoal.peer.tracker_client import TrackerClient
from shoal.seeder.admission import TrackerAdmission
from shoal.testing.clock import FakeClock
from shoal.testing.http import serving
from shoal.tracker.admission import Admission
from shoal.tracker.cluster import RETRY_AFTER
from shoal.tracker.service import MOVING
from tests.unit.test_download import core, reply

TASK = "ab" * 20
Reply = Callable[[], web.Response]


def refusal(refused: PeerRefusal | None) -> web.Response:
    """The tracker's reply to an announce its limits refuse (tracker.app's AnnounceRefused)."""
    assert refused is not None
    return json_error(refused.status, refused.message, **{"Retry-After": str(refused.retry_after)})


def full() -> PeerRefusal | None:
    return PeerLimits(max_peers_per_task=8, new_peers_per_minute=0, interval=30).admit(
        swarm_size=8, source="127.0.0.1", now=0.0
    )


def too_many_new() -> PeerRefusal | None:
    limits = PeerLimits(max_peers_per_task=0, new_peers_per_minute=1, interval=30)
    limits.admit(swarm_size=0, source="127.0.0.1", now=0.0)
    return limits.admit(swarm_size=0, source="127.0.0.1", now=0.0)


def forward_refused(to: str) -> web.Response:
    """A cluster member's 503 for a request about a task no member can decide at the moment, or whose owner
    did not answer the forward (tracker.cluster's words)."""
    return json_error(503, to, **{"Retry-After": RETRY_AFTER})


WAITS: dict[str, Reply] = {
    "busy": lambda: Admission(64, 30.0, rng=random.Random(1)).busy(),
    "moving": lambda: refusal(MOVING),
    "no-owner": lambda: forward_refused("no tracker can decide this task at the moment; announce again"),
    "owner-silent": lambda: forward_refused("the task's tracker did not answer; announce again"),
    "full": lambda: refusal(full()),
    "too-many-new": lambda: refusal(too_many_new()),
}


@dataclass
class Tracker:
    """A tracker whose announce and admission routes answer ``waits`` first (one each), then yes."""

    waits: list[web.Response] = field(default_factory=list)
    url: str = ""

    async def announce(self, _: web.Request) -> web.Response:
        if self.waits:
            return self.waits.pop(0)
        return web.Response(body=msgspec.json.encode(reply()), content_type="application/json")

    async def admitted(self, _: web.Request) -> web.Response:
        if self.waits:
            return self.waits.pop(0)
        return web.Response(body=msgspec.json.encode(SwarmAdmission(admitted=True)), content_type="application/json")


@pytest.fixture
async def tracker() -> AsyncIterator[Tracker]:
    t = Tracker()
    app = web.Application()
    app.router.add_post("/v1/tasks/{task_id}/announce", t.announce)
    app.router.add_get("/v1/swarms/{info_hash}/admitted", t.admitted)
    async with serving(app) as t.url:
        yield t


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def said(response: web.Response) -> tuple[str, int, str]:
    """What ``response`` tells a peer: its words, its status and its Retry-After."""
    assert isinstance(response.body, bytes)
    return json.loads(response.body)["error"], response.status, response.headers["Retry-After"]


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def check(line: str, case: str) -> None:
    """A line says busy only when the tracker did, and never that it failed."""
    assert ("busy" in line) == (case == "busy"), line
    assert "failed" not in line, line


@pytest.mark.parametrize("case", sorted(WAITS))
async def test_the_clients_wait_gives_the_trackers_words(
    case: str,
    tracker: Tracker,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracker_client, "busy_delay", lambda retry_after, rng: 0.0)  # no need to wait here
    response = WAITS[case]()
    words, status, _ = said(response)
    tracker.waits.append(response)
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    request = AnnounceRequest(peer_id=me.peer_id, secret=me.secret, url="http://127.0.0.1:9/f", port=7000)
    with caplog.at_level(logging.INFO, logger="shoal.peer"):
        await TrackerClient(tracker.url, session).announce(TASK, request)
    [line] = lines(caplog, "shoal.peer")
    assert line == f"the tracker asks to wait: {words} (HTTP {status}); asking again in 0.0 s"
    check(line, case)


@pytest.mark.parametrize("case", sorted(WAITS))
async def test_the_announcers_wait_gives_the_trackers_words(
    case: str, tracker: Tracker, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    response = WAITS[case]()
    words, status, retry_after = said(response)
    tracker.waits.append(response)
    me = PeerIdentity.from_secret(secrets.token_hex(16))

    def request(**fields: object) -> AnnounceRequest:
        return AnnounceRequest(peer_id=me.peer_id, url="http://127.0.0.1:9/f", port=7000, generation=1, **fields)  # type: ignore[arg-type]

    def post(event: object) -> None:
        if isinstance(event, Applied):
            event.handled.set_result(None)

    loop = asyncio.get_running_loop()
    client = TrackerClient(tracker.url, session)
    announcer = Announcer(client, TASK, core(), request, post, rng=random.Random(1), clock=loop.time)
    with caplog.at_level(logging.INFO, logger="shoal.peer"):
        assert await announcer.send() == Busy(float(retry_after))
        assert await announcer.send() is True
    [line] = lines(caplog, "shoal.peer")
    assert line == f"the tracker asks to wait: {words} (HTTP {status}); announcing again in about {retry_after} s"
    check(line, case)


@pytest.mark.parametrize("case", ["busy", "no-owner", "owner-silent"])
async def test_the_seeders_admission_gives_the_trackers_words(
    case: str, tracker: Tracker, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    response = WAITS[case]()
    words, status, _ = said(response)
    tracker.waits.append(response)
    admission = TrackerAdmission(TrackerClient(tracker.url, session), clock=FakeClock())
    info_hash = bytes(range(20))
    with caplog.at_level(logging.INFO, logger="shoal.seeder.wire"):
        assert not await admission.admits(info_hash, "127.0.0.8")
    [line] = lines(caplog, "shoal.seeder.wire")
    assert (
        line == f"127.0.0.8 is not served {info_hash.hex()} for now: the tracker asks to wait: {words} (HTTP {status})"
    )
    check(line, case)
