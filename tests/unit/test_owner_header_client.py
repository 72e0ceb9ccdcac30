"""The tracker client's reading of the owner a forwarding member names in core.owner_hint.OWNER_HEADER
(peer.tracker_client): on any reply about a task, a 503 included, under core.owner_hint's rules; against
small aiohttp trackers on loopback that answer as each test scripts them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec
import pytest
from aiohttp import web

from shoal.core.errors import TrackerBusy
from shoal.core.ids import PeerIdentity
from shoal.core.messages import AnnounceRequest, AnnounceResponse, HashesResponse
from shoal.core.owner_hint import OWNER_HEADER
from shoal.peer.tracker_client import TrackerClient
from shoal.testing.http import serving
from shoal.testing.sockets import refusing_port

TASK = "ab" * 20
Reply = Callable[[web.Request], web.Response]


def answer(owner_header: str | None = None, owner_body: str = "") -> Reply:
    """An announce's 200 (a hash look-up's too), naming ``owner_header`` in the header when given."""
    headers = {OWNER_HEADER: owner_header} if owner_header is not None else {}

    def reply(request: web.Request) -> web.Response:
        message = HashesResponse() if request.method == "GET" else AnnounceResponse(owner=owner_body)
        body = msgspec.json.encode(message)
        return web.Response(body=body, content_type="application/json", headers=headers)

    return reply


def shed(owner_header: str | None) -> Reply:
    """The 503 a forwarding member relays when the owner shed the announce, naming the owner when given."""
    headers = {"Retry-After": "3", **({OWNER_HEADER: owner_header} if owner_header is not None else {})}
    return lambda _: web.json_response({"error": "the tracker is busy"}, status=503, headers=headers)


@dataclass
class Tracker:
    """A tracker's announce and hashes routes, whose reply a test sets, and the requests it got."""

    reply: Reply = field(default_factory=answer)
    asked: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append(request.method)
        return self.reply(request)


@pytest.fixture
async def trackers() -> AsyncIterator[tuple[Tracker, Tracker]]:
    """The member a peer knows (the forwarder) and the task's owner."""
    forwarder, owner = Tracker(), Tracker()
    apps = []
    for t in (forwarder, owner):
        app = web.Application()
        app.router.add_post("/v1/tasks/{task_id}/announce", t.handle)
        app.router.add_get("/v1/tasks/{task_id}/hashes", t.handle)
        apps.append(app)
    async with serving(apps[0]) as forwarder.url, serving(apps[1]) as owner.url:
        yield forwarder, owner


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def update(event: str = "update") -> AnnounceRequest:
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    return AnnounceRequest(peer_id=me.peer_id, secret=me.secret, url="http://127.0.0.1:9/f", port=7000, event=event)


async def test_a_peer_shed_through_a_forward_asks_the_owner_the_header_names_next_time(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    forwarder, owner = trackers
    forwarder.reply = shed(owner.url)
    client = TrackerClient(forwarder.url, session)
    with pytest.raises(TrackerBusy):
        await client.announce(TASK, update(), wait_busy=False)
    assert client.hints.target(TASK) == owner.url
    await client.announce(TASK, update())
    await client.hashes(TASK, 0)
    assert (forwarder.asked, owner.asked) == (["POST"], ["POST", "GET"])


async def test_a_503_without_the_header_leaves_the_peer_with_its_list(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    forwarder, owner = trackers
    forwarder.reply = shed(None)
    client = TrackerClient(forwarder.url, session)
    with pytest.raises(TrackerBusy):
        await client.announce(TASK, update(), wait_busy=False)
    assert client.hints.target(TASK) is None
    forwarder.reply = answer()
    await client.announce(TASK, update())
    assert (forwarder.asked, owner.asked) == (["POST", "POST"], [])


async def test_the_header_names_the_owner_of_a_hash_look_up_and_of_a_reply_whose_body_does_not(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    forwarder, owner = trackers
    forwarder.reply = answer(owner_header=owner.url + "/")
    client = TrackerClient(forwarder.url, session)
    await client.hashes(TASK, 0)
    assert client.hints.target(TASK) == owner.url
    other = "cd" * 20
    reply = await client.announce(other, update())
    assert reply.owner == ""
    assert client.hints.target(other) == owner.url


async def test_a_header_the_rules_refuse_is_not_taken_and_the_reply_stands(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    forwarder, _ = trackers
    client = TrackerClient(forwarder.url, session)
    for named in ("ftp://127.0.0.1:21", "http://127.0.0.1:99999", "not a url", ""):
        forwarder.reply = answer(owner_header=named)
        reply = await client.announce(TASK, update())
        assert reply.generation == 0
        assert client.hints.target(TASK) is None, named


async def test_an_owner_that_failed_is_not_taken_again_from_the_header_while_it_backs_off(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    forwarder, _ = trackers
    with refusing_port() as port:
        gone = f"http://127.0.0.1:{port}"
        forwarder.reply = shed(gone)
        client = TrackerClient(forwarder.url, session)
        with pytest.raises(TrackerBusy):
            await client.announce(TASK, update(), wait_busy=False)
        assert client.hints.target(TASK) == gone
        # The named owner refuses the connection: the client asks its list, whose 503 names the owner again.
        with pytest.raises(TrackerBusy):
            await client.announce(TASK, update(), wait_busy=False)
        assert client.hints.target(TASK) is None
        assert forwarder.asked == ["POST", "POST"]


async def test_a_peer_leaving_keeps_no_hint_though_its_stopped_announce_was_shed(
    trackers: tuple[Tracker, Tracker], session: aiohttp.ClientSession
) -> None:
    forwarder, owner = trackers
    forwarder.reply = shed(owner.url)
    client = TrackerClient(forwarder.url, session)
    with pytest.raises(TrackerBusy):
        await client.announce(TASK, update("stopped"))
    assert client.hints.target(TASK) is None
