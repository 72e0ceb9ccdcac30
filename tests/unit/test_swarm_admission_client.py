"""The admission question of the tracker client (peer.tracker_client.TrackerClient.admitted) and what the
wire seeder makes of its answers (seeder.admission), against small aiohttp trackers on loopback that answer
as each test scripts them, with a fake clock for the seeder's memory of answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from shoal.core.errors import FleetRefused, TrackerBusy, TrackerUnavailable, TrackerUnreachable
from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.http.credentials import Credentials
from shoal.peer.tracker_client import TrackerClient
from shoal.seeder.admission import ADMITTED_SECONDS, REFUSED_SECONDS, TrackerAdmission
from shoal.testing.clock import FakeClock
from shoal.testing.http import serving
from shoal.testing.sockets import refusing_port

INFO_HASH = bytes(range(20))
KEY = FleetKey.from_token(b"a fleet token of the admission tests")
Reply = Callable[[web.Request], web.Response]


def yes(until: float | None = None, owner: str = "") -> Reply:
    return lambda _: web.json_response({"admitted": True, "until": until, "owner": owner})


def no(_: web.Request) -> web.Response:
    return web.json_response({"admitted": False, "until": None})


def busy(_: web.Request) -> web.Response:
    return web.json_response({"error": "too many announces in flight"}, status=503, headers={"Retry-After": "7"})


@dataclass
class Tracker:
    """A tracker's admission route whose reply a test sets, and the requests it got."""

    reply: Reply = no
    asked: list[web.Request] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append(request)
        return self.reply(request)


@pytest.fixture
async def trackers() -> AsyncIterator[tuple[Tracker, Tracker]]:
    """Two trackers, each answering GET /v1/swarms/{info_hash}/admitted."""
    first, second = Tracker(), Tracker()
    apps = []
    for t in (first, second):
        app = web.Application()
        app.router.add_get("/v1/swarms/{info_hash}/admitted", t.handle)
        apps.append(app)
    async with serving(apps[0]) as first.url, serving(apps[1]) as second.url:
        yield first, second


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_the_question_names_the_swarm_and_the_host_and_carries_the_fleet_credential(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    tracker, _ = trackers
    tracker.reply = yes(until=1234.5)
    client = TrackerClient(tracker.url, session, credentials=Credentials(key=KEY))
    answer = await client.admitted(INFO_HASH, "fd00::8")
    assert (answer.admitted, answer.until, answer.owner) == (True, 1234.5, "")
    [request] = tracker.asked
    assert request.match_info["info_hash"] == INFO_HASH.hex()
    assert request.query["address"] == "fd00::8"
    KEY.check_credential(request.headers.get(FLEET_HEADER), time.time())  # raises when it is not the fleet's


async def test_an_owner_named_by_a_forwarded_reply_is_asked_directly_next_time(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    member, owner = trackers
    member.reply = yes(owner=owner.url)
    owner.reply = no
    client = TrackerClient(member.url, session)
    assert (await client.admitted(INFO_HASH, "127.0.0.8")).admitted
    assert client.hints.target(INFO_HASH.hex()) == owner.url
    assert not (await client.admitted(INFO_HASH, "127.0.0.8")).admitted
    assert (len(member.asked), len(owner.asked)) == (1, 1)
    # Another swarm is not the owner's to answer: it goes to the client's list.
    await client.admitted(bytes(20), "127.0.0.8")
    assert (len(member.asked), len(owner.asked)) == (2, 1)


async def test_an_owner_that_does_not_answer_is_passed_over_for_the_list(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    member, _ = trackers
    client = TrackerClient(member.url, session)
    with refusing_port() as port:
        dead = f"http://127.0.0.1:{port}"
        member.reply = yes(owner=dead)
        await client.admitted(INFO_HASH, "127.0.0.8")
        assert client.hints.target(INFO_HASH.hex()) == dead
        member.reply = no
        assert not (await client.admitted(INFO_HASH, "127.0.0.8")).admitted
    assert len(member.asked) == 2
    assert client.hints.target(INFO_HASH.hex()) is None


async def test_a_tracker_that_does_not_answer_is_passed_over_for_the_next(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    _, second = trackers
    second.reply = yes()
    with refusing_port() as port:
        client = TrackerClient(f"http://127.0.0.1:{port},{second.url}", session)
        assert (await client.admitted(INFO_HASH, "127.0.0.8")).admitted
        with pytest.raises(TrackerUnreachable):
            await TrackerClient(f"http://127.0.0.1:{port}", session).admitted(INFO_HASH, "127.0.0.8")


async def test_a_busy_tracker_is_not_waited_out_nor_passed_over(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    first, second = trackers
    first.reply, second.reply = busy, yes()
    client = TrackerClient(f"{first.url},{second.url}", session)
    with pytest.raises(TrackerBusy) as raised:
        await client.admitted(INFO_HASH, "127.0.0.8")
    assert raised.value.retry_after == 7.0
    assert (len(first.asked), len(second.asked)) == (1, 0)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (lambda _: web.json_response({"error": "info_hash must be 40 lower-case hex characters"}, status=400), None),
        (lambda _: web.json_response({"error": "no credential", "credential": "fleet"}, status=401), FleetRefused),
        (lambda _: web.Response(text="<html>a proxy's page</html>", content_type="text/html"), None),
        (lambda _: web.json_response({"admitted": "perhaps"}), None),
    ],
    ids=["refused", "fleet-refused", "a-page", "not-the-protocol"],
)
async def test_a_refusal_or_a_reply_that_is_not_the_protocol_is_the_clients_error(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession, reply: Reply, error: type | None
) -> None:
    tracker, _ = trackers
    tracker.reply = reply
    with pytest.raises(error or TrackerUnavailable) as raised:
        await TrackerClient(tracker.url, session).admitted(INFO_HASH, "127.0.0.8")
    assert not isinstance(raised.value, (TrackerBusy, TrackerUnreachable))
    assert raised.value.tracker == tracker.url


async def test_the_seeder_remembers_a_yes_and_a_no_for_their_times(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    tracker, _ = trackers
    clock = FakeClock()
    admission = TrackerAdmission(TrackerClient(tracker.url, session), clock=clock, wall_clock=time.time)
    tracker.reply = yes(until=time.time() + 3600)
    assert await admission.admits(INFO_HASH, "127.0.0.8")
    tracker.reply = no
    clock.advance(ADMITTED_SECONDS - 1)
    assert await admission.admits(INFO_HASH, "127.0.0.8"), "a yes is remembered"
    assert not await admission.admits(INFO_HASH, "127.0.0.9"), "another host is asked about"
    clock.advance(2)
    assert not await admission.admits(INFO_HASH, "127.0.0.8"), "a yes is forgotten after its time"
    tracker.reply = yes(until=time.time() + 3600)
    clock.advance(REFUSED_SECONDS - 0.5)
    assert not await admission.admits(INFO_HASH, "127.0.0.8"), "a no is remembered"
    clock.advance(1)
    assert await admission.admits(INFO_HASH, "127.0.0.8")
    assert len(tracker.asked) == 4


async def test_the_seeder_takes_a_busy_tracker_as_a_no_for_its_retry_after(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    tracker, _ = trackers
    clock = FakeClock()
    admission = TrackerAdmission(TrackerClient(tracker.url, session), clock=clock)
    tracker.reply = busy
    assert not await admission.admits(INFO_HASH, "127.0.0.8")
    tracker.reply = yes()
    clock.advance(6.5)
    assert not await admission.admits(INFO_HASH, "127.0.0.8"), "not asked again within the tracker's Retry-After"
    clock.advance(1)
    assert await admission.admits(INFO_HASH, "127.0.0.8")
    assert len(tracker.asked) == 2


async def test_the_seeder_remembers_a_refusal_briefly_and_no_answer_not_at_all(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    tracker, _ = trackers
    clock = FakeClock()
    admission = TrackerAdmission(TrackerClient(tracker.url, session), clock=clock)
    tracker.reply = lambda _: web.json_response({"error": "not this route"}, status=403)
    assert not await admission.admits(INFO_HASH, "127.0.0.8")
    assert "not this route" in caplog.text
    tracker.reply = yes()
    assert not await admission.admits(INFO_HASH, "127.0.0.8"), "a refusal is a no for REFUSED_SECONDS"
    clock.advance(REFUSED_SECONDS)
    assert await admission.admits(INFO_HASH, "127.0.0.8")
    with refusing_port() as port:
        down = TrackerAdmission(TrackerClient(f"http://127.0.0.1:{port}", session), clock=clock)
        assert not await down.admits(INFO_HASH, "127.0.0.8")
        assert not down._answers, "no answer is not remembered: the next handshake asks again"
