"""The tracker's BitTorrent endpoints over HTTP: GET /announce and GET /scrape, bencoded both ways.

Most tests run the tracker's aiohttp application in this process on port 0 with an injected clock, so
expiry is tested by moving the clock rather than by sleeping, each twice: with the peers' lane in front of
the application (tracker.peer_lane), which answers the announces, and without it (as with an access log),
so that the application's route answers them; the same assertions hold for both. Each request is sent on a
connection of its own, as BitTorrent clients announce, so each starts in the lane. The last ones run
``shoal tracker`` as a process and point libtorrent (an independent BitTorrent implementation) at it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes
from urllib.request import urlopen

import aiohttp
import pytest
from fastbencode import bdecode
from yarl import URL

from shoal.core.tickets import FleetKey
from shoal.http.listen import listen
from shoal.testing.clock import FakeClock
from shoal.testing.libtorrent_client import SESSION_SETTINGS
from shoal.testing.metrics import scrape
from shoal.testing.processes import Service
from shoal.tracker import TrackerConfig, build_app
from shoal.tracker.bt import bt_path

HASH = bytes(range(20))
OTHER_HASH = b"\xfe\x00+%&" * 4
NOW = 1_700_000_000.0


def peer_id(n: int) -> bytes:
    return f"-SH0001-{n:012d}".encode()


def encode_query(fields: Mapping[str, bytes | str | int]) -> str:
    """Percent-encode every byte of every value, as aria2c does for info_hash and peer_id."""
    return "&".join(
        f"{name}={quote_from_bytes(value if isinstance(value, bytes) else str(value).encode(), safe='')}"
        for name, value in fields.items()
    )


def announce_fields(n: int, port: int | None = None, **extra: bytes | str | int) -> dict[str, bytes | str | int]:
    fields: dict[str, bytes | str | int] = {
        "info_hash": HASH,
        "peer_id": peer_id(n),
        "port": 6880 + n if port is None else port,
        "uploaded": 0,
        "downloaded": 0,
        "left": 1000,
    }
    fields.update(extra)
    return fields


def compact_peers(blob: object) -> set[tuple[str, int]]:
    assert isinstance(blob, bytes) and len(blob) % 6 == 0
    return {
        (str(ipaddress.IPv4Address(blob[i : i + 4])), int.from_bytes(blob[i + 4 : i + 6], "big"))
        for i in range(0, len(blob), 6)
    }


@dataclass
class BtClient:
    base: str
    session: aiohttp.ClientSession
    clock: FakeClock
    lane: bool = True
    """Whether the tracker's lane answers the announces (else the application's route does)."""

    async def get(self, path: str, raw_query: str, method: str = "GET") -> tuple[int, str, dict[bytes, object]]:
        """Status, content type and the decoded bencoded body of one request (the query sent as it is)."""
        url = URL(f"{self.base}{path}?{raw_query}", encoded=True)
        async with self.session.request(method, url) as response:
            if method == "GET" and bt_path(path) == "/announce":  # aiohttp names itself, the lane does not
                assert ("Server" not in response.headers) == self.lane, response.headers
            body = await response.read()
            decoded = bdecode(body)
            assert isinstance(decoded, dict), body
            return response.status, response.content_type, decoded

    async def announce(self, n: int, port: int | None = None, **extra: bytes | str | int) -> dict[bytes, object]:
        status, content_type, reply = await self.get("/announce", encode_query(announce_fields(n, port, **extra)))
        assert (status, content_type) == (200, "text/plain")
        assert b"failure reason" not in reply, reply
        return reply

    async def scrape(self, *info_hashes: bytes) -> dict[bytes, object]:
        raw = "&".join(f"info_hash={quote_from_bytes(h, safe='')}" for h in info_hashes)
        status, content_type, reply = await self.get("/scrape", raw)
        assert (status, content_type) == (200, "text/plain")
        files = reply[b"files"]
        assert isinstance(files, dict)
        return files


StartBt = Callable[..., AbstractAsyncContextManager[BtClient]]


@pytest.fixture(params=["lane", "application"])
def start_bt(tmp_path: Path, request: pytest.FixtureRequest) -> StartBt:
    lane = request.param == "lane"
    # An access log turns the lane off (shoal.http.listen): every request is then the application's.
    options = {} if lane else {"access_log": logging.getLogger("tests.bt_tracker_http.access")}

    @asynccontextmanager
    async def start(host: str = "127.0.0.1", **config: object) -> AsyncIterator[BtClient]:
        clock = FakeClock(NOW)
        app = build_app(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", **config), clock=clock)  # type: ignore[arg-type]
        runner, port = await listen(app, host, 0, **options)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                yield BtClient(f"http://127.0.0.1:{port}", session, clock, lane)
        finally:
            await runner.cleanup()

    return start


@pytest.fixture
async def bt(start_bt: StartBt) -> AsyncIterator[BtClient]:
    async with start_bt() as client:
        yield client


async def test_compact_reply_lists_the_other_peers(bt: BtClient) -> None:
    first = await bt.announce(1, event="started", compact=1)
    assert first[b"peers"] == b"" and (first[b"complete"], first[b"incomplete"]) == (0, 1)
    await bt.announce(2, left=0, event="started")
    reply = await bt.announce(3, compact=1)
    assert compact_peers(reply[b"peers"]) == {("127.0.0.1", 6881), ("127.0.0.1", 6882)}
    assert (reply[b"complete"], reply[b"incomplete"]) == (1, 2)
    interval, min_interval = reply[b"interval"], reply[b"min interval"]
    assert isinstance(interval, int) and 54 <= interval <= 66 and min_interval == 15


async def test_with_a_fleet_token_the_tracker_is_private_and_takes_passkeys(start_bt: StartBt) -> None:
    key = FleetKey.from_token(b"the fleet token of the bt tests")
    passkey = key.passkey("host-1")
    forged = FleetKey.from_token(b"another fleet's token, long enough").passkey("host-1")
    async with start_bt(fleet_key=key) as bt:
        query = encode_query(announce_fields(1, event="started"))
        for path, raw in [
            ("/announce", query),
            (f"/announce/{forged}", query),
            ("/announce/garbage", query),
            ("/announce", f"{query}&passkey={forged}"),
            ("/scrape", f"info_hash={quote_from_bytes(HASH, safe='')}"),
        ]:
            status, content_type, reply = await bt.get(path, raw)
            assert (status, content_type) == (200, "text/plain"), path
            assert b"failure reason" in reply and b"peers" not in reply and b"files" not in reply, (path, reply)
        status, _, reply = await bt.get("/announce", query)
        assert b"passkey" in reply[b"failure reason"]  # type: ignore[operator]
        # In the path, or in the query: the swarm then has both peers.
        status, _, first = await bt.get(f"/announce/{passkey}", query)
        assert status == 200 and first[b"incomplete"] == 1, first
        second = encode_query(announce_fields(2, event="started", passkey=key.passkey("host-2")))
        status, _, reply = await bt.get("/announce", second)
        assert status == 200 and compact_peers(reply[b"peers"]) == {("127.0.0.1", 6881)}, reply
        status, _, scraped = await bt.get(f"/scrape/{passkey}", f"info_hash={quote_from_bytes(HASH, safe='')}")
        assert scraped[b"files"] == {HASH: {b"complete": 0, b"downloaded": 0, b"incomplete": 2}}
        # Every announce is counted, a passkey in its path or not, refused or not (a failure is a 200).
        counts = await asyncio.to_thread(scrape, bt.base)
        assert counts.total("shoal_tracker_announces_total", kind="bittorrent") == 7
        assert counts.value("shoal_tracker_announces_total", kind="bittorrent", outcome="ok") == 7


async def test_numwant_bounds_the_peers_handed_out(start_bt: StartBt) -> None:
    async with start_bt(bt_numwant=3, bt_max_numwant=5) as bt:
        for n in range(1, 7):
            await bt.announce(n)
        assert len(compact_peers((await bt.announce(7))[b"peers"])) == 3, "bt_numwant when none is asked"
        assert len(compact_peers((await bt.announce(7, numwant=2))[b"peers"])) == 2
        assert (await bt.announce(7, numwant=0))[b"peers"] == b""
        assert len(compact_peers((await bt.announce(7, numwant=100))[b"peers"])) == 5, "at most bt_max_numwant"


async def test_dict_reply_with_and_without_peer_ids(bt: BtClient) -> None:
    await bt.announce(1)
    reply = await bt.announce(2, compact=0)
    assert reply[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 6881, b"peer id": peer_id(1)}]
    reply = await bt.announce(2, compact=0, no_peer_id=1)
    assert reply[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 6881}]


async def test_two_peers_on_one_ip_with_different_ports_and_never_the_asker(bt: BtClient) -> None:
    await bt.announce(1, port=7001)
    await bt.announce(2, port=7002)
    assert compact_peers((await bt.announce(1, port=7001))[b"peers"]) == {("127.0.0.1", 7002)}
    assert compact_peers((await bt.announce(2, port=7002))[b"peers"]) == {("127.0.0.1", 7001)}


async def test_stopped_removes_the_peer(bt: BtClient) -> None:
    await bt.announce(1)
    await bt.announce(2)
    stopped = await bt.announce(1, event="stopped")
    assert stopped[b"peers"] == b"" and stopped[b"incomplete"] == 1
    assert compact_peers((await bt.announce(3))[b"peers"]) == {("127.0.0.1", 6882)}


async def test_silent_peers_expire(start_bt: StartBt) -> None:
    async with start_bt(bt_peer_ttl=100.0) as bt:
        await bt.announce(1)
        bt.clock.now += 60
        await bt.announce(2)
        bt.clock.now += 40  # peer 1 is now 100 s silent
        reply = await bt.announce(3)
        assert compact_peers(reply[b"peers"]) == {("127.0.0.1", 6882)}
        assert reply[b"incomplete"] == 2
        bt.clock.now += 100
        assert await bt.scrape(HASH) == {HASH: {b"complete": 0, b"incomplete": 0, b"downloaded": 0}}


async def test_scrape_one_several_and_all(bt: BtClient) -> None:
    await bt.announce(1, left=0, event="completed")
    await bt.announce(2)
    await bt.announce(3, info_hash=OTHER_HASH)
    unknown = b"\x01" * 20
    assert await bt.scrape(HASH) == {HASH: {b"complete": 1, b"incomplete": 1, b"downloaded": 1}}
    both = {
        HASH: {b"complete": 1, b"incomplete": 1, b"downloaded": 1},
        OTHER_HASH: {b"complete": 0, b"incomplete": 1, b"downloaded": 0},
    }
    assert await bt.scrape(HASH, OTHER_HASH, unknown) == both
    assert await bt.scrape() == both


def _without(field: str) -> str:
    return encode_query({k: v for k, v in announce_fields(1).items() if k != field})


@pytest.mark.parametrize(
    ("raw_query", "reason"),
    [
        (_without("info_hash"), b"info_hash is missing"),
        (encode_query(announce_fields(1, info_hash=HASH[:19])), b"info_hash must be 20 bytes, got 19"),
        (_without("peer_id"), b"peer_id is missing"),
        (encode_query(announce_fields(1, port=0)), b"port must be 1-65535"),
        (encode_query(announce_fields(1, port="http")), b"port must be a non-negative integer"),
        (encode_query(announce_fields(1, left=-1)), b"left must be a non-negative integer"),
        (encode_query(announce_fields(1, numwant="many")), b"numwant must be a non-negative integer"),
        (encode_query(announce_fields(1, event="garbage")), b"event must be one of"),
        (encode_query(announce_fields(1, ip="peer.example")), b"ip must be an IP address"),
        ("", b"info_hash is missing"),
        ("%zz=%%&&=", b"info_hash is missing"),
    ],
)
async def test_bad_announces_get_a_bencoded_failure_reason(bt: BtClient, raw_query: str, reason: bytes) -> None:
    status, content_type, reply = await bt.get("/announce", raw_query)
    assert (status, content_type) == (200, "text/plain")
    failure = reply[b"failure reason"]
    assert isinstance(failure, bytes) and failure.startswith(reason), failure
    assert list(reply) == [b"failure reason"]


async def test_bad_scrape_gets_a_bencoded_failure_reason(bt: BtClient) -> None:
    status, _, reply = await bt.get("/scrape", f"info_hash={quote_from_bytes(HASH[:19], safe='')}")
    assert status == 200 and reply == {b"failure reason": b"info_hash must be 20 bytes, got 19"}


async def test_bt_routes_answer_bencoded_even_to_a_wrong_method(bt: BtClient) -> None:
    status, content_type, reply = await bt.get("/announce", encode_query(announce_fields(1)), method="POST")
    assert (status, content_type) == (405, "text/plain")
    assert reply == {b"failure reason": b"Method Not Allowed"}
    # The JSON API keeps its JSON errors.
    async with bt.session.get(f"{bt.base}/v1/tasks/not-a-task") as response:
        assert response.status == 400 and (await response.json())["error"]


def _lan_address() -> str | None:
    """This host's address on its default route (a UDP connect sends nothing), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("198.51.100.1", 9))
            address: str = probe.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


async def test_a_peer_on_the_tracker_host_is_reported_at_the_address_a_lan_client_used(
    start_bt: StartBt,
) -> None:
    lan = _lan_address()
    if lan is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    async with start_bt(host="0.0.0.0") as bt:
        await bt.announce(1, left=0)  # a seeder on this host, announcing over 127.0.0.1
        remote = BtClient(bt.base.replace("127.0.0.1", lan), bt.session, bt.clock, bt.lane)
        assert compact_peers((await remote.announce(2))[b"peers"]) == {(lan, 6881)}
        assert compact_peers((await bt.announce(3))[b"peers"]) == {("127.0.0.1", 6881), (lan, 6882)}


# -- a real tracker process and a real BitTorrent client -----------------------------------------------


def test_tracker_process_answers_announce_and_scrape(tracker: Callable[..., Service]) -> None:
    service = tracker()
    with urlopen(f"{service.url}/announce?{encode_query(announce_fields(1, left=0))}", timeout=10) as response:
        assert response.headers.get_content_type() == "text/plain"
        assert bdecode(response.read())[b"complete"] == 1
    with urlopen(f"{service.url}/scrape", timeout=10) as response:
        assert bdecode(response.read()) == {b"files": {HASH: {b"complete": 1, b"incomplete": 0, b"downloaded": 0}}}


def test_tracker_process_answers_a_scrape_of_every_info_hash_allowed(tracker: Callable[..., Service]) -> None:
    """256 info-hashes (the README's limit), each percent-encoded byte by byte as aria2c sends them: a request
    line of over 15 KB, past aiohttp's default limit of 8 KB."""
    service = tracker()
    with urlopen(f"{service.url}/announce?{encode_query(announce_fields(1, left=0))}", timeout=10):
        pass
    hashes = [HASH] + [bytes([n % 256]) * 19 + bytes([n // 256]) for n in range(1, 256)]
    query = "&".join(f"info_hash={quote_from_bytes(h, safe='')}" for h in hashes)
    assert len(query) > 15_000
    with urlopen(f"{service.url}/scrape?{query}", timeout=10) as response:
        files = bdecode(response.read())[b"files"]
    assert files[HASH] == {b"complete": 1, b"incomplete": 0, b"downloaded": 0}


def test_libtorrent_swarm_through_the_tracker(tmp_path: Path, tracker: Callable[..., Service]) -> None:
    """Two libtorrent sessions find each other only through the tracker: one seeds, the other downloads."""
    lt = pytest.importorskip("libtorrent")
    service = tracker()
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    leech_dir.mkdir()
    payload = (bytes(range(256)) * 1024)[:200_000]
    (seed_dir / "file.bin").write_bytes(payload)
    creator = lt.create_torrent(lt.list_files(str(seed_dir / "file.bin")), 16 * 1024)
    creator.add_tracker(f"{service.url}/announce")
    lt.set_piece_hashes(creator, str(seed_dir))
    info = lt.torrent_info(lt.bencode(creator.generate()))
    info_hash = info.info_hashes().v1.to_bytes()

    settings = {
        **SESSION_SETTINGS,
        "alert_mask": lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification,
    }
    seeder, leecher = lt.session(settings), lt.session(settings)

    def params(directory: Path) -> object:
        p = lt.add_torrent_params()
        p.ti, p.save_path = lt.torrent_info(info), str(directory)
        return p

    seeding, downloading = seeder.add_torrent(params(seed_dir)), leecher.add_torrent(params(leech_dir))

    replies, errors = 0, []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (downloading.status().is_seeding and replies >= 2):
        for session in (seeder, leecher):
            for alert in session.pop_alerts():
                if isinstance(alert, lt.tracker_reply_alert):
                    replies += 1
                elif isinstance(alert, lt.tracker_error_alert):
                    errors.append(alert.message())
        seeder.wait_for_alert(100)
    assert errors == []
    assert replies >= 2 and seeding.status().is_seeding and downloading.status().is_seeding
    assert (leech_dir / "file.bin").read_bytes() == payload

    # The leecher's `completed` reaches the tracker when it finishes; give it until the deadline.
    while True:
        with urlopen(f"{service.url}/scrape?info_hash={quote_from_bytes(info_hash, safe='')}", timeout=10) as r:
            stats = bdecode(r.read())[b"files"].get(info_hash)
        if stats == {b"complete": 2, b"incomplete": 0, b"downloaded": 1} or time.monotonic() > deadline:
            break
        leecher.wait_for_alert(100)
    assert stats == {b"complete": 2, b"incomplete": 0, b"downloaded": 1}
