"""A peer that asked a tracker which does not own its task is told the owner (core.owner_hint): its next
announces go there directly, not through a forward, also when the owner shed the first one (the forwarder's
503 names the owner in its header); when the owner dies, the peer falls back to its list."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

import aiohttp
import msgspec
import pytest

from shoal.core.errors import TrackerBusy
from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest
from shoal.peer.tracker_client import TrackerClient
from shoal.testing.metrics import scrape
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service
from tests.integration.conftest import sha256
from tests.integration.test_tracker_cluster import cluster_of, owner_of, pg_url, start_cluster

__all__ = ["pg_url"]  # the fixture, imported for these tests

SIZE = 8 << 20


def forwarded(t: Service, direction: str) -> float:
    return scrape(t.url).value("shoal_tracker_forwarded_total", direction=direction)


def json_announces(t: Service) -> float:
    return scrape(t.url).value("shoal_tracker_announces_total", kind="json", outcome="ok")


def a_task_owned_by(owner_id: str, t: Service) -> str:
    """A URL whose task the member ``owner_id`` owns, as ``t`` sees the members."""
    for n in range(1000):
        url = f"http://127.0.0.1:9/hinted-{secrets.token_hex(4)}-{n}.bin"
        if owner_of(task_id_for_url(url), t) == owner_id:
            return url
    raise AssertionError("no task of that member in 1,000 tries")


async def announce_through(client: TrackerClient, url: str, turns: int) -> list[str]:
    """A peer joining ``url``'s task and announcing ``turns`` updates; the ``owner`` of every reply."""
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    common = {"peer_id": me.peer_id, "secret": me.secret, "url": url, "port": 7000}
    task_id = task_id_for_url(url)
    owners = []
    reply = await client.announce(task_id, AnnounceRequest(**common, event="started", generation=0))
    owners.append(reply.owner)
    origin = OriginIdentity(SIZE, etag='"v1"')
    started = AnnounceRequest(**common, event="started", generation=reply.generation, origin=origin)
    reply = await client.announce(task_id, started)
    owners.append(reply.owner)
    for _ in range(turns):
        update = AnnounceRequest(**common, event="update", generation=reply.generation)
        reply = await client.announce(task_id, update)
        owners.append(reply.owner)
    return owners


def test_a_peer_asking_the_other_member_moves_to_the_owner_and_back_to_its_list_when_it_dies(
    tracker: Callable[..., Service], pg_url: str, caplog
) -> None:
    by_id = start_cluster(tracker, pg_url, 2)
    ids = sorted(by_id)
    owner, other = by_id[ids[0]], by_id[ids[1]]
    url = a_task_owned_by(ids[0], other)
    task_id = task_id_for_url(url)
    before_out, before_in, before_ok = forwarded(other, "out"), forwarded(owner, "in"), json_announces(owner)

    async def run() -> str:
        async with aiohttp.ClientSession() as session:
            client = TrackerClient(other.url, session)  # the peer knows only the member that is not the owner
            owners = await announce_through(client, url, turns=4)
            assert client.hints.target(task_id) == owner.url
            # Only the first announce went through the forward; it named the owner, and the other five
            # reached the owner directly.
            assert owners == [owner.url, "", "", "", "", ""]
            assert await asyncio.to_thread(forwarded, other, "out") - before_out == 1
            assert await asyncio.to_thread(forwarded, owner, "in") - before_in == 1
            assert await asyncio.to_thread(json_announces, owner) - before_ok == 6
            owner.kill()
            # The owner is gone: the next announce fails there, goes to the list (the other member, which
            # forwards to the dead owner and says busy until the owner's row expires), and is answered
            # once the other member has taken the task over.
            me = PeerIdentity.from_secret(secrets.token_hex(16))
            request = AnnounceRequest(peer_id=me.peer_id, secret=me.secret, url=url, port=7000, event="started")
            reply = await client.announce(task_id, request)
            return reply.owner

    with caplog.at_level(logging.WARNING, logger="shoal.peer"):
        after_kill = asyncio.run(run())
    assert after_kill == "", "decided by the member asked: no owner to name"
    assert any("does not answer" in r.getMessage() and owner.url in r.getMessage() for r in caplog.records)
    survivor_id = cluster_of(other)["tracker_id"]
    wait_until(lambda: owner_of(task_id, other) == survivor_id, "the survivor owns the task")


def shed(t: Service) -> float:
    return scrape(t.url).value("shoal_tracker_announces_shed_total")


def inflight(t: Service) -> float:
    return scrape(t.url).value("shoal_tracker_announces_inflight")


def test_a_peer_shed_by_the_owner_through_a_forward_is_told_the_owner_and_moves_there(
    tracker: Callable[..., Service], pg_url: str
) -> None:
    """The owner, at its cap (one announce in flight, held there by a body that has not arrived), sheds the
    forwarded announce; the forwarder's 503 names the owner, and the peer's next announce goes there."""
    by_id = start_cluster(tracker, pg_url, 2, "--max-inflight", "1")
    ids = sorted(by_id)
    owner, other = by_id[ids[0]], by_id[ids[1]]
    url = a_task_owned_by(ids[0], other)
    task_id = task_id_for_url(url)
    me = PeerIdentity.from_secret(secrets.token_hex(16))
    request = AnnounceRequest(peer_id=me.peer_id, secret=me.secret, url=url, port=7000, event="started")
    held_body = msgspec.json.encode(request)

    async def run() -> None:
        # The cap takes its slot before the body is read: an announce whose body is still to come holds it.
        host, port = owner.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            head = (
                f"POST /v1/tasks/{task_id}/announce HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(held_body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode())
            await writer.drain()
            await asyncio.to_thread(wait_until, lambda: inflight(owner) == 1, "the owner's one slot taken")
            await shed_then_direct(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    async def shed_then_direct(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        shed_before, out_before = shed(owner), forwarded(other, "out")
        async with aiohttp.ClientSession() as session:
            client = TrackerClient(other.url, session)  # the peer knows only the member that is not the owner
            with pytest.raises(TrackerBusy):
                await client.announce(task_id, request, wait_busy=False)
            assert await asyncio.to_thread(shed, owner) == shed_before + 1, "the owner shed the forward"
            assert client.hints.target(task_id) == owner.url
            writer.write(held_body)  # the held announce completes, and gives its slot back
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
            ok_before = await asyncio.to_thread(json_announces, owner)
            reply = await client.announce(task_id, request, wait_busy=False)
            assert reply.owner == "", "answered by the owner itself, not through a forward"
            assert await asyncio.to_thread(json_announces, owner) == ok_before + 1
            # One forward in all: the shed one (relayed, as the owner answered it).
            assert await asyncio.to_thread(forwarded, other, "out") == out_before + 1

    asyncio.run(run())


def test_peers_of_a_get_announce_at_the_owner(
    tracker: Callable[..., Service], pg_url: str, origin, make_file, spawn_get, tmp_path
) -> None:
    """Real `shoal get` peers given only the member that does not own their task: each goes through a forward
    once, then announces at the owner."""
    by_id = start_cluster(tracker, pg_url, 2)
    src = origin("--rate", "4M")
    name = "g.bin"
    make_file(src.root / name, SIZE)
    task_id = task_id_for_url(src.url(name))
    owner_id = owner_of(task_id, next(iter(by_id.values())))
    owner = by_id[owner_id]
    other = next(t for tid, t in by_id.items() if tid != owner_id)
    procs = [
        spawn_get(src.url(name), "-o", str(tmp_path / f"p{i}.bin"), "--tracker", other.url, "--upload-time", "0")
        for i in range(2)
    ]
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert sha256(tmp_path / f"p{i}.bin") == sha256(src.root / name)
    relayed, at_owner = forwarded(other, "out"), json_announces(owner)
    # Each peer's first announce went through the other member; every later one, and every hash look-up,
    # went to the owner itself.
    assert relayed <= 2, relayed
    assert at_owner >= relayed + 4, (relayed, at_owner)
