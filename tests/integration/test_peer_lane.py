"""The tracker's peers' lane (shoal.http.lane, tracker.peer_lane): a peer's announces and hash look-ups, and a
BitTorrent client's announces, are answered on the lean path, every other request by the application with
the connection handed over, and a request the lane does not understand whole is never answered by it.

The tracker is served as ``shoal tracker`` serves it (shoal.http.listen), over raw HTTP/1.1 so the test
sends exactly the bytes it means. Which of the two answered shows in the reply: aiohttp names itself in a
Server header, the lane sends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fastbencode import bdecode

from shoal.core.errors import StoreError
from shoal.core.tickets import FleetKey
from shoal.http.lane import LANE
from shoal.http.limits import ServerLimits
from shoal.http.listen import listen
from shoal.testing.metrics import scrape
from shoal.testing.poll import wait_until_async
from shoal.testing.sockets import accept_queue
from shoal.tracker.app import ADMISSION, ANSWERS, RUNNER_OPTIONS, SERVICE, build_app
from shoal.tracker.config import TrackerConfig
from tests.integration.test_bt_tracker_http import HASH, announce_fields, compact_peers, encode_query
from tests.integration.test_tracker_overload import TASK, announce_body


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def by_lane(self) -> bool:
        return "server" not in self.headers

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> Reply:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        while head[0].split()[1].startswith("1"):  # an interim reply (100 Continue): the answer follows
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(int(head[0].split()[1]), headers, body)

    async def ask(self, data: bytes) -> Reply:
        await self.send(data)
        return await self.reply()


def post(body: bytes, *headers: str, path: str = f"/v1/tasks/{TASK}/announce") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: tracker", "Content-Type: application/json", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str, version: str = "HTTP/1.1") -> bytes:
    return f"GET {path} {version}\r\nHost: tracker\r\n\r\n".encode()


class Tracker:
    def __init__(self, app: Any, port: int, runner: Any) -> None:
        self.app, self.port, self.runner = app, port, runner
        self.opened: list[Connection] = []

    async def connect(self) -> Connection:
        connection = Connection(*await asyncio.open_connection("127.0.0.1", self.port))
        self.opened.append(connection)
        return connection


@pytest.fixture
async def tracker(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Tracker]:
    limits: ServerLimits = getattr(request, "param", ServerLimits())
    config = TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", interval=5.0, peer_ttl=60.0, max_body=4096)
    app = build_app(config)
    runner, port = await listen(app, "127.0.0.1", 0, limits=limits, **RUNNER_OPTIONS)
    served = Tracker(app, port, runner)
    try:
        yield served
    finally:
        for connection in served.opened:
            connection.writer.close()
            with contextlib.suppress(ConnectionError):
                await connection.writer.wait_closed()
        await runner.cleanup()


async def test_a_peers_requests_take_the_lane_and_another_request_hands_the_connection_over(
    tracker: Tracker,
) -> None:
    app = tracker.app
    lane = app[LANE]
    c = await tracker.connect()
    joined = await c.ask(post(announce_body("alice")))
    assert joined.by_lane and joined.status == 200 and joined.json()["generation"] == 1
    assert joined.headers["content-type"] == "application/json" and "date" in joined.headers
    hashes = await c.ask(get(f"/v1/tasks/{TASK}/hashes?since=0"))
    assert hashes.by_lane and hashes.status == 200 and hashes.json()["hashes"] == {}
    assert lane.handed_over == 0 and len(lane.connections) == 1

    health = await c.ask(get("/v1/health"))  # not the lane's: the application answers, on this connection
    assert not health.by_lane and health.status == 200 and health.json()["ok"] is True
    assert lane.handed_over == 1 and not lane.connections
    again = await c.ask(post(announce_body("alice", generation=1, want_leases=2)))
    assert not again.by_lane and again.status == 200 and again.json()["leases"] == [0, 1]

    other = await tracker.connect()  # another connection starts in the lane, and sees what the first did
    assert (await other.ask(post(announce_body("bob")))).status == 200
    bob = await other.ask(post(announce_body("bob", generation=1, want_leases=2)))
    assert bob.by_lane and bob.status == 200 and bob.json()["leases"] == [2, 3], "alice holds 0 and 1"


async def test_pipelined_requests_and_one_sent_a_byte_at_a_time_are_answered_in_order(
    tracker: Tracker,
) -> None:
    c = await tracker.connect()
    await c.send(
        post(announce_body("alice"))
        + get(f"/v1/tasks/{TASK}/hashes")
        + post(announce_body("alice", generation=1, want_leases=3))
        + get(f"/v1/tasks/{'f' * 64}/hashes?since=3")
    )
    joined, hashes, leased, unknown = [await c.reply() for _ in range(4)]
    assert all(r.by_lane for r in (joined, hashes, leased, unknown))
    assert joined.status == 200 and hashes.status == 200 and leased.json()["leases"] == [0, 1, 2]
    assert unknown.status == 404 and "unknown task" in unknown.json()["error"]
    for byte in post(announce_body("alice", generation=1, want_leases=4)):
        await c.send(bytes([byte]))
    more = await c.reply()
    assert more.by_lane and more.status == 200 and more.json()["leases"][:3] == [0, 1, 2]


async def test_a_bad_announce_is_refused_in_the_lane_with_a_json_error(tracker: Tracker) -> None:
    app = tracker.app
    c = await tracker.connect()
    for body, says in [(b"{not json", "malformed"), (b'{"peer_id": 7}', "peer_id")]:
        refused = await c.ask(post(body))
        assert refused.by_lane and refused.status == 400 and says in refused.json()["error"]
    assert app[ADMISSION].inflight == 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(post(b'7\r\n{"a": 1\r\n0\r\n\r\n', "Transfer-Encoding: chunked"), id="chunked"),
        pytest.param(post(b"0\r\n\r\n", "Transfer-Encoding: chunked", "Content-Length: 5"), id="length-and-chunked"),
        pytest.param(post(b"{}", "Content-Length: 2", "Content-Length: 2"), id="two-lengths"),
        pytest.param(post(b"{}", "Content-Length: +2"), id="signed-length"),
        pytest.param(post(b"{}", "Content-Length : 2"), id="space-before-colon"),
        pytest.param(post(b"{}", "X-Folded: a\r\n b"), id="folded-line"),
        pytest.param(post(b"{}", "X-Bare: a\nX-Other: b"), id="bare-lf"),
        pytest.param(post(b"{}", "X-Nul: a\x00b"), id="nul-in-a-value"),
        pytest.param(post(b"x" * 5000), id="body-past-max"),
        pytest.param(post(b"{}", "Expect: 100-continue"), id="expect"),
        pytest.param(post(b"{}", *(f"X-{i}: v" for i in range(130))), id="more-headers-than-aiohttp-takes"),
        pytest.param(get(f"/v1/tasks/{TASK}/hashes", "HTTP/1.0"), id="http-1.0"),
        pytest.param(get(f"/v1/tasks/{TASK}/hashes?since=-1"), id="odd-query"),
        pytest.param(get(f"/v1/tasks/{TASK.upper()}/hashes"), id="upper-case-task"),
        pytest.param(post(b"{}", path=f"/v1/tasks/{TASK}/announce?x=1"), id="announce-query"),
    ],
)
async def test_a_request_the_lane_does_not_take_whole_is_the_applications(
    tracker: Tracker, request_bytes: bytes
) -> None:
    app = tracker.app
    c = await tracker.connect()
    answered = await c.ask(request_bytes)
    assert not answered.by_lane, (answered.status, answered.body)
    assert app[LANE].handed_over == 1


@pytest.mark.parametrize("tracker", [ServerLimits(body_timeout=0.5)], indirect=True)
async def test_a_body_that_stops_arriving_gets_a_408_and_gives_its_slot_back(tracker: Tracker) -> None:
    app = tracker.app
    c = await tracker.connect()
    whole = post(announce_body("alice"))
    await c.send(whole[: len(whole) - 5])
    late = await c.reply()  # the lane's sweep answers it once the body timeout has passed
    assert late.by_lane and late.status == 408 and "did not arrive" in late.json()["error"]
    assert await c.reader.read() == b"", "and closes the connection"
    assert app[ADMISSION].inflight == 0
    # Counted as the application counts its own 408 (read_body's): an announce rejected, not one abandoned.
    assert app[ADMISSION].abandoned == 0
    counts = await asyncio.to_thread(scrape, f"http://127.0.0.1:{tracker.port}")
    assert counts.value("shoal_tracker_announces_total", kind="json", outcome="rejected") == 1


FLEET = FleetKey.from_token(b"the fleet token of the lane's tests")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        pytest.param("/announce", encode_query(announce_fields(1)), id="no-passkey"),
        pytest.param(
            f"/announce/{FleetKey.from_token(b'another fleet, another token').passkey('h1')}",
            encode_query(announce_fields(1)),
            id="another-fleets-passkey",
        ),
        pytest.param("/announce/garbage", encode_query(announce_fields(1)), id="malformed-passkey"),
        pytest.param(f"/announce/{FLEET.passkey('h1')}", encode_query(announce_fields(1, left=0)), id="seed"),
        pytest.param("/announce", encode_query(announce_fields(2, passkey=FLEET.passkey("h2"))), id="query-passkey"),
        pytest.param(f"/announce/{FLEET.passkey('h3')}", encode_query(announce_fields(3, compact=0)), id="dicts"),
        pytest.param(
            f"/announce/{FLEET.passkey('h3')}",
            encode_query(announce_fields(3, compact=0, no_peer_id=1)),
            id="dicts-without-peer-ids",
        ),
        pytest.param(f"/announce/{FLEET.passkey('h4')}", encode_query(announce_fields(4, numwant=2)), id="numwant"),
        pytest.param(f"/announce/{FLEET.passkey('h4')}", encode_query(announce_fields(4, numwant=0)), id="numwant-0"),
        pytest.param(f"/announce/{FLEET.passkey('h4')}", encode_query(announce_fields(4, port=0)), id="bad-port"),
        pytest.param(
            f"/announce/{FLEET.passkey('h4')}",
            encode_query(announce_fields(4, info_hash=HASH[:19])),
            id="short-info-hash",
        ),
        pytest.param(f"/announce/{FLEET.passkey('h4')}", "%zz=%%&&=", id="garbled-query"),
        pytest.param(f"/announce/{FLEET.passkey('h4')}", "", id="empty-query"),
    ],
)
async def test_a_bittorrent_announce_is_answered_in_the_lane_as_the_application_answers_it(
    tmp_path: Path, path: str, query: str
) -> None:
    config = TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", fleet_key=FLEET)
    app = build_app(config)
    runner, port = await listen(app, "127.0.0.1", 0, **RUNNER_OPTIONS)
    opened = [Connection(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(2)]
    lane, handed = opened
    try:
        assert not (await handed.ask(get("/v1/health"))).by_lane  # this connection is the application's now
        bt = app[SERVICE].bt
        for n in range(5, 12):  # a swarm to hand out: seeds and leechers
            fields = announce_fields(n, left=n % 2 * 1000, passkey=FLEET.passkey(f"h{n}"))
            assert (await lane.ask(get(f"/announce?{encode_query(fields)}"))).status == 200
        answered = []
        for connection in (handed, lane, handed):
            bt.rng.seed(7)  # the same interval's jitter and the same peers picked
            answered.append(await connection.ask(get(f"{path}?{query}")))
        by_app, by_lane, again = answered
        assert not by_app.by_lane and by_lane.by_lane
        assert by_lane.status == by_app.status == 200
        assert by_lane.headers["content-type"] == by_app.headers["content-type"] == "text/plain"
        assert by_lane.body == by_app.body == again.body, (by_lane.body, by_app.body)
        counts = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}")
        assert counts.value("shoal_tracker_announces_total", kind="bittorrent", outcome="ok") == 7 + 3
    finally:
        for connection in opened:
            connection.writer.close()
        await runner.cleanup()


async def test_bittorrent_announces_pipelined_with_a_peers_requests_are_answered_in_order(tracker: Tracker) -> None:
    """BitTorrent announces and a peer's requests on one connection, sent at once: each is answered in the
    lane, in order, and a Connection: close ends the connection."""
    c = await tracker.connect()
    bt = [get(f"/announce?{encode_query(announce_fields(n))}") for n in range(3)]
    last = bt[2].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    await c.send(bt[0] + post(announce_body("alice")) + bt[1] + get(f"/v1/tasks/{TASK}/hashes") + last)
    replies = [await c.reply() for _ in range(5)]
    assert all(r.by_lane and r.status == 200 for r in replies)
    assert [r.headers["content-type"] for r in replies] == ["text/plain", "application/json"] * 2 + ["text/plain"]
    assert replies[1].json()["generation"] == 1 and replies[3].json()["hashes"] == {}
    handed = [compact_peers(bdecode(r.body)[b"peers"]) for r in replies[::2]]
    assert handed == [set(), {("127.0.0.1", 6880)}, {("127.0.0.1", 6880), ("127.0.0.1", 6881)}]
    assert replies[4].headers["connection"] == "close" and await c.reader.read() == b""


def applications_error(reply: Reply) -> tuple[str, bytes]:
    """The Content-Type and body the application writes for the JSON error ``reply`` carries: aiohttp's
    json_response, as json_error (and the fleet's 401) write it."""
    written = web.json_response(reply.json(), status=reply.status)
    assert isinstance(written.body, bytes)
    return written.headers["Content-Type"], written.body


async def failing_store(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(*_: object) -> None:
        raise StoreError("the database went away")

    monkeypatch.setattr(app[SERVICE].store, "hashes_since", failing)


async def failing_answers(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app[ANSWERS], "hashes", failing)


async def shedding(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert app[ADMISSION].enter(), "the test takes the only slot, as an announce in flight would"


async def full_swarm(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    joined = await app[ANSWERS].announce(TASK, announce_body("alice"), "127.0.0.1")
    assert joined.status == 200, joined.body


UNKNOWN = "cd" * 20


@pytest.mark.parametrize(
    ("config", "setup", "request_bytes", "status"),
    [
        pytest.param({}, None, post(b"{not json"), 400, id="not-json"),
        pytest.param({}, None, post(b'{"peer_id": 7}'), 400, id="bad-field"),
        pytest.param(
            {}, None, post(announce_body("alice", peer_id="a b")), 400, id="escaped"
        ),  # its error quotes a regex: backslashes
        pytest.param({}, None, get(f"/v1/tasks/{UNKNOWN}/hashes?since=0"), 404, id="unknown-task"),
        pytest.param({"fleet_key": FLEET}, None, post(announce_body("alice")), 401, id="no-credential"),
        pytest.param({"max_inflight": 1}, shedding, post(announce_body("bob")), 503, id="busy"),
        pytest.param({"max_peers_per_task": 1}, full_swarm, post(announce_body("bob")), 503, id="swarm-full"),
        pytest.param({}, failing_store, get(f"/v1/tasks/{TASK}/hashes?since=0"), 503, id="database"),
        pytest.param({}, failing_answers, get(f"/v1/tasks/{TASK}/hashes?since=0"), 500, id="internal-error"),
    ],
)
async def test_the_lanes_json_errors_are_the_applications_byte_for_byte(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, Any],
    setup: Callable[[Any, pytest.MonkeyPatch], Awaitable[None]] | None,
    request_bytes: bytes,
    status: int,
) -> None:
    """Each JSON error the lane writes is the one the application writes for it, and the form of every
    other error of the application's (json_error): its status, Content-Type, Retry-After and body."""
    app = build_app(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", **config))
    runner, port = await listen(app, "127.0.0.1", 0, **RUNNER_OPTIONS)
    opened = [Connection(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(2)]
    lane, handed = opened
    try:
        assert not (await handed.ask(get("/v1/health"))).by_lane  # this connection is the application's now
        if setup is not None:
            await setup(app, monkeypatch)
        answered = []
        for connection in (lane, handed):
            app[ADMISSION].rng.seed(7)  # the same Retry-After of a busy tracker
            answered.append(await connection.ask(request_bytes))
        by_lane, by_app = answered
        assert by_lane.by_lane and not by_app.by_lane
        assert by_lane.status == by_app.status == status, (by_lane.body, by_app.body)
        written = (by_lane.headers["content-type"], by_lane.body)
        assert written == (by_app.headers["content-type"], by_app.body) == applications_error(by_lane), written
        assert by_lane.headers.get("retry-after") == by_app.headers.get("retry-after")
        assert ("retry-after" in by_lane.headers) is (status == 503 and setup is not failing_store)
    finally:
        for connection in opened:
            connection.writer.close()
        await runner.cleanup()


@pytest.mark.parametrize("tracker", [ServerLimits(body_timeout=0.5)], indirect=True)
async def test_the_lanes_408_is_the_applications(tracker: Tracker) -> None:
    whole = post(announce_body("alice"))
    handed = await tracker.connect()
    assert not (await handed.ask(get("/v1/health"))).by_lane
    answered = []
    for connection in (await tracker.connect(), handed):
        await connection.send(whole[: len(whole) - 5])
        answered.append(await connection.reply())  # once the body timeout has passed
    by_lane, by_app = answered
    assert by_lane.by_lane and not by_app.by_lane
    assert by_lane.status == by_app.status == 408
    written = (by_lane.headers["content-type"], by_lane.body)
    assert written == (by_app.headers["content-type"], by_app.body) == applications_error(by_lane), written


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(f"/announce?{encode_query(announce_fields(1))}#fragment", id="fragment"),
        pytest.param(f"/announce/%41{FLEET.passkey('h1')}?{encode_query(announce_fields(1))}", id="encoded-passkey"),
        pytest.param(f"/announce/{{x}}?{encode_query(announce_fields(1))}", id="brace-in-passkey"),
        pytest.param(f"/announce/?{encode_query(announce_fields(1))}", id="empty-passkey"),
        pytest.param(f"/announce/a/b?{encode_query(announce_fields(1))}", id="two-segments"),
        pytest.param(f"//announce?{encode_query(announce_fields(1))}", id="double-slash"),
    ],
)
async def test_a_bittorrent_announce_the_lane_does_not_take_whole_is_the_applications(
    tracker: Tracker, target: str
) -> None:
    c = await tracker.connect()
    answered = await c.ask(get(target))
    assert not answered.by_lane, (answered.status, answered.body)
    assert tracker.app[LANE].handed_over == 1


async def test_a_bittorrent_announce_with_bytes_past_ascii_is_the_applications(tracker: Tracker) -> None:
    c = await tracker.connect()
    query = encode_query(announce_fields(1)).encode() + b"&key=\xff"
    answered = await c.ask(b"GET /announce?" + query + b" HTTP/1.1\r\nHost: tracker\r\n\r\n")
    assert not answered.by_lane and answered.status == 400, "aiohttp's parser refuses it"


async def test_an_announce_whose_client_left_is_counted_alike_on_either_path(tracker: Tracker) -> None:
    """A client gone before its announce was answered got no reply: no announce answered, and no 5xx, on the
    application's path (a connection handed over, and every request under ``--access-log``) as on the lane's;
    the cap counts it as abandoned."""
    app = tracker.app
    whole = post(announce_body("alice"))
    lane_client = await tracker.connect()
    await lane_client.send(whole[: len(whole) - 5])
    reset(lane_client)
    await wait_until_async(lambda: app[ADMISSION].abandoned == 1, "the lane to drop the announce")
    handed = await tracker.connect()
    assert not (await handed.ask(get("/v1/health"))).by_lane, "the connection is the application's from now on"
    await handed.send(whole[: len(whole) - 5])
    await wait_until_async(lambda: app[ADMISSION].inflight == 1, "the application to take the announce")
    reset(handed)
    await wait_until_async(lambda: app[ADMISSION].abandoned == 2, "the application to drop the announce")
    assert app[ADMISSION].inflight == 0
    counts = await asyncio.to_thread(scrape, f"http://127.0.0.1:{tracker.port}")
    for outcome in ("ok", "refused", "rejected", "error"):
        assert counts.value("shoal_tracker_announces_total", kind="json", outcome=outcome) == 0, outcome


class Held:
    """The tracker's announces held at their start until the test releases them (``started``: one is held)."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()
        answers = app[ANSWERS]
        announce = answers.announce

        async def held(*args: Any) -> Any:
            self.started.set()
            await self.release.wait()
            return await announce(*args)

        monkeypatch.setattr(answers, "announce", held)


def reset(connection: Connection) -> None:
    """Close ``connection`` with a TCP reset (SO_LINGER 0), as a client that crashed or gave up does."""
    connection.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.writer.transport.abort()


async def test_a_client_reset_with_announces_pipelined_gives_every_slot_back(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tracker.app
    held = Held(app, monkeypatch)
    c = await tracker.connect()
    one = post(announce_body("alice"))
    await c.send(one * (2 * (4096 + 8192) // len(one)))  # more than the lane reads ahead of its replies
    await held.started.wait()
    (lane_connection,) = app[LANE].connections
    await wait_until_async(lambda: lane_connection.read_paused, "the lane to stop reading the client")
    reset(c)  # the lane no longer reads this client: it learns of the reset when it writes the first reply
    server_side = lane_connection.transport.get_extra_info("socket")
    tcp_close = 7  # tcpi_state of TCP_INFO (include/net/tcp_states.h)
    await wait_until_async(
        lambda: server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == tcp_close, "the reset to arrive"
    )
    held.release.set()
    await wait_until_async(lambda: not app[LANE].connections, "the lane to drop the connection")
    await wait_until_async(lambda: app[ADMISSION].inflight == 0, "every slot of the cap to be given back")


async def test_a_client_far_ahead_is_read_again_once_the_lane_needs_its_bytes(tracker: Tracker) -> None:
    app = tracker.app
    c = await tracker.connect()
    ask = get(f"/v1/tasks/{TASK}/hashes")
    asks = 2 * (4096 + 8192) // len(ask)  # more than the lane reads ahead of its replies
    padded = ask.replace(b"Host:", b"X-Pad: " + b"p" * 5000 + b"\r\nHost:")  # a head longer than the body bound
    await c.send(ask * asks + padded[:-10])
    assert {(await c.reply()).status for _ in range(asks)} == {404}, "a task nobody announced"
    (lane_connection,) = app[LANE].connections
    await wait_until_async(lambda: not lane_connection.read_paused, "the lane to read the rest of the last head")
    last = await c.ask(padded[-10:])
    assert last.by_lane and last.status == 404


def listening(port: int) -> bool:
    try:
        accept_queue(port)
    except LookupError:
        return False
    return True


async def test_shutdown_lets_an_announce_in_the_lane_end_before_the_application_stops(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(tracker.app, monkeypatch)
    c = await tracker.connect()
    await c.send(post(announce_body("alice")))
    await held.started.wait()
    cleanup = asyncio.ensure_future(tracker.runner.cleanup())
    await wait_until_async(lambda: not listening(tracker.port), "the tracker to stop taking connections")
    held.release.set()  # as aiohttp waits for its handlers, before the store closes
    answered = await c.reply()
    assert answered.by_lane and answered.status == 200, answered.body
    assert answered.headers["connection"] == "close"
    await cleanup


@pytest.mark.parametrize("connection", ["close", "Close", "keep-alive, close", "close ,x-other"])
async def test_a_request_whose_connection_header_names_close_is_the_last_on_its_connection(
    tracker: Tracker, connection: str
) -> None:
    c = await tracker.connect()  # RFC 9110, 7.6.1: Connection is a list of options, as aiohttp reads it
    asked = get(f"/v1/tasks/{TASK}/hashes").replace(b"\r\n\r\n", f"\r\nConnection: {connection}\r\n\r\n".encode())
    answered = await c.ask(asked)
    assert answered.by_lane and answered.headers["connection"] == "close"
    assert await c.reader.read() == b""


async def test_shutdown_cancels_an_announce_in_the_lane_past_the_runners_timeout_and_closes_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", interval=5.0, peer_ttl=60.0)
    app = build_app(config)
    runner, port = await listen(app, "127.0.0.1", 0, shutdown_timeout=0.1, **RUNNER_OPTIONS)
    held = Held(app, monkeypatch)  # never released: only the shutdown timeout ends it
    c = Connection(*await asyncio.open_connection("127.0.0.1", port))
    try:
        await c.send(post(announce_body("alice")))
        await held.started.wait()
        await runner.cleanup()
        assert app[ADMISSION].inflight == 0
        await wait_until_async(c.reader.at_eof, "the tracker to close the connection")
    finally:
        c.writer.close()
