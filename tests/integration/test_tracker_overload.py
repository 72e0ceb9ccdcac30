"""The tracker under overload (tracker.admission; issue 27): past its cap on announces in flight it answers
503 with Retry-After and keeps serving; an announce whose client left is applied whole; a peer waits a
busy tracker out instead of taking it for down; and a second tracker on one SQLite file is refused.

Which announces are shed is decided by the test, never by timing: the slots are taken by announces whose
bodies the test holds back (the tracker admits an announce before it reads the body), and released when
the test sends the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from shoal.core.errors import TrackerBusy, TrackerUnavailable
from shoal.core.events import Announced, Event, TrackerDown
from shoal.core.ids import task_id_for_url
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.http.listen import listen
from shoal.peer.announcer import Announcer, Applied
from shoal.testing.hostile import identity
from shoal.testing.poll import wait_until, wait_until_async
from shoal.testing.processes import Service, shoal_argv
from shoal.tracker.app import ADMISSION, RUNNER_OPTIONS, SERVICE, build_app
from shoal.tracker.config import TrackerConfig
from tests.integration.conftest import task_summary
from tests.unit.test_download import core, reply

URL = "http://origin.invalid/overload.bin"
TASK = task_id_for_url(URL)
ORIGIN = {"length": 4 << 20, "etag": '"v1"', "last_modified": ""}  # 16 pieces of 256 KiB
JSON = {"Content-Type": "application/json"}


def announce_body(name: str, **fields: Any) -> bytes:
    """An announce of the task at URL by the peer named ``name`` (a join unless ``fields`` say otherwise)."""
    me = identity(name)
    body = {"peer_id": me.peer_id, "secret": me.secret, "url": URL, "port": 7000, "host": "127.0.0.1"}
    return json.dumps({**body, "event": "started", "origin": ORIGIN, **fields}).encode()


async def post(session: aiohttp.ClientSession, tracker: str, body: bytes) -> tuple[int, dict[str, str], Any]:
    async with session.post(f"{tracker}/v1/tasks/{TASK}/announce", data=body, headers=JSON) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


class HeldAnnounce:
    """An announce whose body the test holds back: the tracker has taken a slot for it and waits for the rest
    (raw HTTP/1.1, so nothing is sent the test did not write)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rest: bytes) -> None:
        self.reader, self.writer, self.rest = reader, writer, rest

    @classmethod
    async def open(cls, tracker: str, body: bytes) -> HeldAnnounce:
        host, _, port = tracker.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST /v1/tasks/{TASK}/announce HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body[:1])
        await writer.drain()
        return cls(reader, writer, body[1:])

    async def finish(self) -> tuple[int, Any]:
        """Send the rest of the body; the reply's status and JSON."""
        self.writer.write(self.rest)
        await self.writer.drain()
        raw = await self.reader.read()  # to the end: the request said Connection: close
        self.writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


async def sheds(session: aiohttp.ClientSession, tracker: str) -> bool:
    status, _, _ = await post(session, tracker, announce_body("probe"))
    return status == 503


def assert_busy(status: int, headers: dict[str, str], reply: Any, longest: int) -> None:
    assert status == 503, reply
    assert 1 <= int(headers["Retry-After"]) <= longest
    assert "busy" in reply["error"] and headers["Content-Type"].startswith("application/json")


async def test_a_flood_past_the_cap_is_shed_with_retry_after_and_the_tracker_keeps_serving(
    tracker: Callable[..., Service],
) -> None:
    t = tracker(interval=3.0, peer_ttl=60.0, extra=("--max-inflight", "2"))
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # every announce on a connection of its own
    async with aiohttp.ClientSession(connector=connector) as session:
        held = [await HeldAnnounce.open(t.url, announce_body(f"held-{i}")) for i in range(2)]
        await wait_until_async(lambda: sheds(session, t.url), "the held announces to take both slots")
        flood = await asyncio.gather(*(post(session, t.url, announce_body(f"flood-{i}")) for i in range(40)))
        for status, headers, body in flood:
            assert_busy(status, headers, body, longest=3)
        assert len({headers["Retry-After"] for _, headers, _ in flood}) > 1, "jittered, not one figure for all"
        for announce in held:
            status, body = await announce.finish()
            assert status == 200 and body["generation"] == 1

        # Nothing held: a flood meets the cap as its announces come. Some are served, the rest shed, none fails.
        names = [f"again-{i}" for i in range(40)]
        again = await asyncio.gather(*(post(session, t.url, announce_body(name)) for name in names))
        assert {status for status, _, _ in again} <= {200, 503}
        assert any(status == 200 for status, _, _ in again)
        for name, (status, headers, body) in zip(names, again, strict=True):
            if status == 503:
                assert_busy(status, headers, body, longest=3)
                status, _, body = await post(session, t.url, announce_body(name))
            assert status == 200, body
    peers = {p["peer_id"] for p in task_summary(t, TASK)["peers"]}  # type: ignore[union-attr]
    assert {identity(n).peer_id for n in ["held-0", "held-1", *names]} <= peers
    assert not {identity(f"flood-{i}").peer_id for i in range(40)} & peers, "a shed announce changed nothing"


async def test_an_announce_whose_client_left_is_applied_whole(tmp_path: Path) -> None:
    app = build_app(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", interval=5.0, peer_ttl=60.0))
    runner, port = await listen(app, "127.0.0.1", 0, **RUNNER_OPTIONS)  # served as `shoal tracker` serves it
    base, store, admission = f"http://127.0.0.1:{port}", app[SERVICE].store, app[ADMISSION]
    # The hook: once armed, the next commit waits for the test; the announce staged it and awaits it.
    armed, committing, commit = False, asyncio.Event(), asyncio.Event()
    write = store.write_transaction

    async def held_commit(work: Any) -> Any:
        if armed:
            committing.set()
            await commit.wait()
        return await write(work)

    store.write_transaction = held_commit  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession() as session:
            status, _, joined = await post(session, base, announce_body("alice"))
            assert status == 200 and joined["generation"] == 1
            status, _, first = await post(session, base, announce_body("alice", generation=1, want_leases=1))
            assert status == 200 and first["leases"] == [0]
            armed = True
            # Her report of piece 0's hash is a durable fact: the announce stages its write and awaits it.
            reporting = announce_body("alice", generation=1, done={"0": "ab" * 32}, want_leases=4)
            asking = asyncio.ensure_future(post(session, base, reporting))
            await committing.wait()
            asking.cancel()  # alice's client gives up while her announce's write is staged: it disconnects
            with contextlib.suppress(asyncio.CancelledError):
                await asking
        await wait_until_async(lambda: admission.abandoned == 1, "the tracker to see alice's client leave")
        assert admission.inflight == 0, "her announce gave its slot back: what is left is the store's write"
        commit.set()
        await wait_until_async(lambda: not store._pending, "alice's staged write to commit")

        async with aiohttp.ClientSession() as session:
            status, _, again = await post(session, base, announce_body("alice", generation=1))
            assert status == 200
            await post(session, base, announce_body("bob"))
            status, _, bob = await post(session, base, announce_body("bob", generation=1, want_leases=4))
            assert status == 200
        # The leases granted to the departed client are hers (asking for none now, she holds them), and
        # nobody else was granted them; the hash she reported was taken.
        assert again["leases"] and bob["leases"] and not set(again["leases"]) & set(bob["leases"])
        assert again["hash_seq"] >= 1
    finally:
        commit.set()  # a failed test must not leave the held write holding up the store's close
        await runner.cleanup()


async def test_a_peer_told_the_tracker_is_busy_waits_and_completes_through_it(
    tmp_path: Path, tracker: Callable[..., Service], origin: Callable[..., Any], make_file: Any
) -> None:
    t = tracker(interval=1.0, peer_ttl=30.0, extra=("--max-inflight", "1"))
    src = origin()
    data = make_file(src.root / "f.bin", 1 << 20)
    dest = tmp_path / "f.bin"
    async with aiohttp.ClientSession() as session:
        slot = await HeldAnnounce.open(t.url, announce_body("holder"))
        await wait_until_async(lambda: sheds(session, t.url), "the held announce to take the only slot")
    argv = shoal_argv("get", src.url("f.bin"), "-o", str(dest), "--tracker", t.url, "--upload-time", "0")
    # --fallback: a tracker taken for unreachable would send the download straight to the origin.
    command = [*argv, "--fallback", "-v"]
    get = await asyncio.to_thread(
        subprocess.Popen, command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(get.stderr or ()), daemon=True)
    reader.start()
    try:
        await asyncio.to_thread(
            wait_until,
            lambda: any("the tracker asks to wait: the tracker is busy" in line for line in lines),
            "a busy reply",
        )
        status, _ = await slot.finish()
        assert status == 200
        assert await asyncio.to_thread(get.wait, 120) == 0, "".join(lines)
    finally:
        if get.poll() is None:
            get.kill()
            get.wait()
        reader.join(10)
        if get.stderr is not None:
            get.stderr.close()
    assert dest.read_bytes() == data
    assert not any("straight from the origin" in line for line in lines), "".join(lines)
    assert task_summary(t, task_id_for_url(src.url("f.bin")))["hashed_pieces"] == 4, "it went through the tracker"


def test_a_second_tracker_on_one_sqlite_file_is_refused_and_the_first_serves_on(
    tmp_path: Path, tracker: Callable[..., Service]
) -> None:
    db = tmp_path / "tracker.db"
    first = tracker(f"sqlite:///{db}")
    (tmp_path / "link.db").symlink_to(db)
    for spelling in (f"sqlite:///{db}", "sqlite:///link.db"):
        second = subprocess.run(
            shoal_argv("tracker", "--host", "127.0.0.1", "--port", "0", "--db", spelling),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert second.returncode == 10, second.stderr
        assert second.stdout == ""
        assert second.stderr == (
            f"shoal: error: the database {db} is in use by another shoal tracker (pid {first.proc.pid}); one "
            "tracker process per SQLite file: stop that one, or give this one another --db\n"
        )
    request = urllib.request.Request(f"{first.url}/v1/tasks/{TASK}/announce", announce_body("after"), JSON)
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200 and json.load(resp)["generation"] == 1


async def test_the_announcer_waits_a_busy_tracker_out_without_taking_it_for_down() -> None:
    seen: list[AnnounceRequest] = []
    answers: list[Exception | AnnounceResponse] = [
        TrackerBusy("the tracker is busy", retry_after=0.0),
        TrackerUnavailable("cannot reach the tracker"),
        reply(),
    ]

    class Tracker:
        async def announce(self, task_id: str, request: AnnounceRequest, *, wait_busy: bool = True) -> Any:
            assert not wait_busy, "the announcer waits itself, and then says what it has to say then"
            seen.append(request)
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    posted: list[Event | Applied] = []
    loop = asyncio.get_running_loop()
    stamps: list[float] = []

    def post(event: Event | Applied) -> None:
        posted.append(event)
        if isinstance(event, Applied):
            event.handled.set_result(None)

    def request(**fields: Any) -> AnnounceRequest:
        stamps.append(loop.time())
        return AnnounceRequest(peer_id=identity("me").peer_id, url=URL, port=7000, generation=1, **fields)

    c = core()
    announcer = Announcer(Tracker(), TASK, c, request, post, rng=random.Random(1), clock=loop.time)  # type: ignore[arg-type]
    running = asyncio.ensure_future(announcer.run())
    try:
        announcer.wake(news=True)
        await wait_until_async(lambda: len(seen) == 2, "the announce shed, then sent again at once")
        announcer.wake(news=True)  # past the unreachable tracker's backoff, news goes at once
        await wait_until_async(lambda: len(seen) == 3, "three announces")
        await wait_until_async(lambda: any(isinstance(e, Applied) for e in posted), "the reply applied")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    # Busy: nothing posted (the core's patience with a silent tracker is not spent), the announce built anew
    # after at least the shortest busy wait. Unreachable: a TrackerDown, as before.
    downs = [e for e in posted if isinstance(e, TrackerDown)]
    assert len(downs) == 1 and not isinstance(downs[0].error, TrackerBusy)
    assert stamps[1] - stamps[0] >= 0.45
    assert isinstance(posted[-1], Applied) and isinstance(posted[-1].event, Announced)
    assert c.announcing == 0, "every announce sent was answered, or failed, in the core's books"
