"""Integrity under attack (README, "Trust model"): a hostile peer with a valid identity of its own, speaking the
tracker's protocol and serving bytes of its choosing, against a real tracker, a real origin and honest
`shoal get` processes. Each attack ends with every honest host holding the origin's bytes (or a clear error
and nothing placed), and the origin's bytes bounded."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from shoal.core.ids import content_task_id
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import piece_hash_bytes
from shoal.testing.hostile import HostilePeer, RefusedError, identity, piece_hashes
from shoal.testing.poll import wait_until_async
from shoal.testing.processes import shoal_argv, start_seeder, start_tracker
from shoal.tracker.origin_check import RECHECK
from tests.integration.conftest import run_get
from tests.integration.test_seeder import wait_published
from tests.integration.test_whole_file import start_hostile as start_liar

SIZE = 4 << 20  # 16 pieces of 256 KiB


def origin_identity(url: str) -> OriginIdentity:
    """What a peer's probe sees (a GET of the first byte, as `shoal get` asks)."""
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-0"})) as probe:
        total = int(probe.headers["Content-Range"].rpartition("/")[2])
        return OriginIdentity(total, probe.headers.get("ETag", ""), "")


async def get(tmp_path: Path, url: str, name: str, tracker: str, *extra: str):
    """An honest `shoal get` in its own process (in a thread: the hostile peer's server runs on this loop)."""
    return await asyncio.to_thread(
        run_get, url, "-o", str(tmp_path / name), "--tracker", tracker, "--upload-time", "0", *extra
    )


async def poisoned_peer(mallory: HostilePeer, url: str, forged: bytes, pieces: list[int]) -> dict[str, object]:
    """Mallory joins, serves ``forged`` and claims every piece, reporting forged hashes for ``pieces``."""
    origin = origin_identity(url)
    manifest = Manifest.for_identity(origin)
    joined = await mallory.announce(event="started", origin=origin)
    generation = joined["generation"]
    have = mallory.serve(manifest, generation, forged)
    fake = piece_hashes(manifest, forged)
    return await mallory.announce(
        generation=generation, bitfield=have.encode(), done={i: fake[i] for i in pieces}, event="update"
    )


@pytest.mark.parametrize("pieces", [range(16), [3, 9]], ids=["every-piece", "two-pieces"])
async def test_forged_hashes_from_a_peer_without_leases_are_refused(
    tmp_path, tracker, origin, make_file, spawn_get, pieces
):
    src = origin()
    data = make_file(src.root / "f.bin", SIZE)
    url = src.url("f.bin")
    t = tracker()
    forged = bytearray(data)
    for i in pieces:
        forged[i * (256 << 10)] ^= 0xFF
    async with HostilePeer(t.url, url) as mallory:
        reply = await poisoned_peer(mallory, url, bytes(forged), list(pieces))
        assert sorted(reply["rejected"]) == sorted(pieces)
        first = spawn_get(url, "-o", str(tmp_path / "a.bin"), "--tracker", t.url, "--upload-time", "120")
        await wait_until_async(lambda: (tmp_path / "a.bin").exists(), "the first download")
        # A second host while the first seeds: it takes the first's pieces, never Mallory's.
        second = await get(tmp_path, url, "b.bin", t.url)
        assert second.returncode == 0, second.stderr
        summary = await mallory.task()
    first.kill()
    assert (tmp_path / "a.bin").read_bytes() == data and (tmp_path / "b.bin").read_bytes() == data
    assert summary["rejected_reports"] == len(pieces) and summary["generation"] == 1
    assert src.bytes_sent() <= SIZE * 1.02 + 4096  # each byte once (and the probes' first bytes)


async def test_conflicting_reports_in_a_loop_start_no_generation(tmp_path, tracker, origin, make_file):
    src = origin()
    data = make_file(src.root / "g.bin", SIZE)
    url = src.url("g.bin")
    # A peer TTL longer than the test: the counts below are soft state, forgotten with the task's last peer.
    t = tracker(peer_ttl=60.0)
    async with HostilePeer(t.url, url) as mallory:
        origin_id = origin_identity(url)
        await mallory.announce(event="started", origin=origin_id)
        first = await get(tmp_path, url, "a.bin", t.url)
        assert first.returncode == 0, first.stderr
        for n in range(40):
            await mallory.announce(generation=1, done={n % 16: f"{n % 10}".ljust(64, "e")})
        # Read while Mallory is live: the count is the tracker's soft state, forgotten with a task's last peer.
        rejected = (await mallory.task())["rejected_reports"]
        second = await get(tmp_path, url, "b.bin", t.url)
        assert second.returncode == 0, second.stderr
        summary = await mallory.task()
    assert (tmp_path / "b.bin").read_bytes() == data
    assert rejected == 40 and summary["generation"] == 1


async def test_claims_that_the_origin_changed_start_no_generation(tmp_path, tracker, origin, make_file):
    """Mallory claims, again and again, that the origin now serves another file: the tracker looks at the
    origin itself, which says otherwise, so the task keeps its generation and its hashes."""
    src = origin()
    data = make_file(src.root / "c.bin", SIZE)
    url = src.url("c.bin")
    # A peer TTL longer than the test: the counts below are soft state, forgotten with the task's last peer.
    t = tracker(peer_ttl=60.0)
    async with HostilePeer(t.url, url) as mallory:
        real = origin_identity(url)
        await mallory.announce(event="started", origin=real)
        first = await get(tmp_path, url, "a.bin", t.url)
        assert first.returncode == 0, first.stderr
        before = src.requests()
        claims = [replace(real, etag=f'"forged-{n}"') for n in range(20)]
        started = time.monotonic()
        replies = await asyncio.gather(*(mallory.announce(generation=1, origin=claim) for claim in claims))
        elapsed = time.monotonic() - started
        assert all(r["generation"] == 1 and not r.get("restart") for r in replies)
        looks = src.requests() - before
        # Read while Mallory is live: the count is the tracker's soft state, forgotten with a task's last peer.
        refused = (await mallory.task())["refused_origins"]
        second = await get(tmp_path, url, "b.bin", t.url)
        summary = await mallory.task()
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "b.bin").read_bytes() == data
    assert refused == 20 and summary["generation"] == 1 and summary["hashed_pieces"] == 16
    # One look, and one more per RECHECK seconds the claims kept coming (a busy machine spreads them out).
    assert 1 <= looks <= 2 + elapsed // RECHECK, f"{looks} looks at the origin for 20 claims in {elapsed:.1f} s"


async def test_a_change_the_tracker_cannot_see_needs_claims_from_two_hosts(tmp_path, tracker, origin, make_file):
    """With the tracker's own looks off (an origin out of its reach behaves the same), the origin's change
    starts a new generation once peers on two hosts report it, not before."""
    src = origin()
    make_file(src.root / "d.bin", SIZE)
    url = src.url("d.bin")
    t = tracker(extra=["--no-origin-checks"])
    async with (
        HostilePeer(t.url, url, name="p2", source="127.0.0.2") as p2,
        HostilePeer(t.url, url, name="p3", source="127.0.0.3") as p3,
    ):
        await p2.announce(event="started", origin=origin_identity(url))
        make_file(src.root / "d.bin", SIZE + 1)
        changed = origin_identity(url)
        once = await p2.announce(generation=1, origin=changed)
        assert once["generation"] == 1 and (await p2.task())["refused_origins"] == 1
        again = await p2.announce(generation=1, origin=changed)
        assert again["generation"] == 1, "one host twice is still one host"
        second = await p3.announce(generation=1, origin=changed)
        summary = await p3.task()
    assert second["generation"] == 2 and second["manifest"]["length"] == SIZE + 1
    assert summary["generation"] == 2 and summary["length"] == SIZE + 1


async def test_forged_accusations_and_stops_do_not_empty_a_swarm(tmp_path, tracker, origin, make_file, spawn_get):
    src = origin()
    data = make_file(src.root / "h.bin", SIZE)
    url = src.url("h.bin")
    t = tracker()
    seed = spawn_get(url, "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "120")
    async with HostilePeer(t.url, url) as mallory:

        async def honest_peers() -> list[dict[str, object]]:
            return [p for p in (await mallory.task()).get("peers", []) if p["pieces"] == 16]

        await wait_until_async(lambda: (tmp_path / "seed.bin").exists(), "the seed's download")
        [honest] = await wait_until_async(honest_peers, "the seed complete at the tracker")
        await mallory.announce(event="started", origin=origin_identity(url))
        # Mallory accuses the honest seed, and announces `stopped` under its id without its secret.
        await mallory.announce(generation=1, bad_peers=[honest["peer_id"]])
        with pytest.raises(RefusedError) as refused:
            await mallory.post(
                {
                    "peer_id": honest["peer_id"],
                    "secret": identity("guess").secret,
                    "url": url,
                    "port": 1,
                    "event": "stopped",
                }
            )
        assert refused.value.status == 400 and "secret" in refused.value.error
        later = await get(tmp_path, url, "later.bin", t.url)
        summary = await mallory.task()
    seed.kill()
    assert later.returncode == 0, later.stderr
    assert (tmp_path / "later.bin").read_bytes() == data
    # The later download took the file from the seed, not from the origin again.
    assert src.bytes_sent() <= SIZE * 1.02 + 8192
    assert any(p["peer_id"] == honest["peer_id"] and not p["bad"] for p in summary["peers"])


async def test_a_content_task_cannot_be_poisoned(tmp_path, tracker, make_file):
    """A seeded file's content task: Mallory cannot register other piece hashes under its id, nor report
    any, nor change its manifest; the honest download's bytes are the seeded file's."""
    watched = tmp_path / "pub"
    watched.mkdir()
    data = make_file(watched / "c.bin", SIZE)
    t = tracker()
    service = start_seeder(watched, state_dir=tmp_path / "state", extra=("--tracker", t.url))
    url = f"{service.url}/files/pub/c.bin"
    manifest = Manifest.for_identity(OriginIdentity(SIZE))
    hashes = piece_hashes(manifest, data)
    task_id = content_task_id(SIZE, manifest.piece_length, [hashes[i] for i in range(16)])
    forged = bytes(b ^ 1 for b in data)
    fake = piece_hashes(manifest, forged)
    async with HostilePeer(t.url, url, task_id=task_id) as mallory:
        with pytest.raises(RefusedError) as refused:
            await mallory.announce(
                event="started", origin=OriginIdentity(SIZE), piece_hashes=_b64([fake[i] for i in range(16)])
            )
        assert refused.value.status == 400 and "piece_hashes" in refused.value.error
        published = await asyncio.to_thread(wait_published, service, "pub/c.bin")
        assert published["task_id"] == task_id
        reply = await mallory.announce(event="started", origin=OriginIdentity(SIZE, '"other"'))
        have = mallory.serve(manifest, reply["generation"], forged)
        reply = await mallory.announce(
            generation=reply["generation"], bitfield=have.encode(), done={i: fake[i] for i in range(16)}
        )
        assert sorted(reply["rejected"]) == list(range(16))
        result = await get(tmp_path, url, "c.bin", t.url)
        summary = await mallory.task()
    service.stop()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c.bin").read_bytes() == data
    assert summary["generation"] == 1 and summary["etag"] != '"other"'
    assert "ignoring it" not in result.stderr  # the getter joined the content task: its hashes checked out


def _b64(hashes: list[str]) -> str:
    return base64.b64encode(piece_hash_bytes(tuple(hashes))).decode()


async def test_a_lying_lease_holder_is_caught_by_spot_checks(tmp_path, tracker, origin, make_file, services):
    """Mallory (127.0.0.2) holds the leases of pieces 0-7 and reports a forged hash for piece 3. The tracker
    checks every reported piece (--audit-share 1): two checkers on other hosts fetch piece 3 from the origin
    and agree, against Mallory. An honest `shoal get` that started meanwhile, rate-limited so it is still
    going, ends with the origin's bytes: Mallory is banned and every hash it reported revoked."""
    src = origin()
    data = make_file(src.root / "s.bin", SIZE)
    url = src.url("s.bin")
    t = start_tracker(f"sqlite:///{tmp_path / 'tracker.db'}", extra=("--audit-share", "1"))
    services.append(t)
    liar_id = await asyncio.to_thread(
        start_liar, services, t, url, data, tmp_path / "forged.bin", "--source", "127.0.0.2"
    )
    manifest = Manifest.for_identity(origin_identity(url))
    truth = piece_hashes(manifest, data)
    honest = await asyncio.to_thread(
        subprocess.Popen,
        shoal_argv(
            "get",
            url,
            "-o",
            str(tmp_path / "s.bin"),
            "--tracker",
            t.url,
            "--upload-time",
            "0",
            "--download-rate",
            "512K",
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    async with HostilePeer(t.url, url, name="observer") as observer:

        async def honest_holds_pieces() -> bool:
            peers = (await observer.task()).get("peers", [])
            return any(p["peer_id"] != liar_id and p["pieces"] >= 4 for p in peers)

        # The honest download has taken pieces (Mallory's among them, which its forged hash vouches for).
        await wait_until_async(honest_holds_pieces, "the honest download holding pieces")
    checkers = [HostilePeer(t.url, url, name=f"checker{n}", source=f"127.0.0.{n + 3}") for n in range(2)]
    for checker in checkers:
        async with checker:
            joined = await checker.announce(event="started", origin=manifest.identity)
            # The checker takes leases (the checked pieces come one an announce) and reports what the origin's
            # bytes hash to, until it has voted on piece 3.
            voted: set[int] = set()
            for _ in range(40):
                reply = await checker.announce(generation=joined["generation"], want_leases=1)
                leased = [i for i in reply["leases"] if i not in voted]
                if leased:
                    await checker.announce(generation=joined["generation"], done={i: truth[i] for i in leased})
                    voted.update(leased)
                if 3 in voted:
                    break
            assert 3 in voted, f"{checker.me.peer_id} was never leased piece 3 to check"
            summary = await checker.task()
    _, err = await asyncio.to_thread(honest.communicate, timeout=120)
    assert honest.returncode == 0, err
    print("HONEST", err)
    assert (tmp_path / "s.bin").read_bytes() == data
    assert any(p["peer_id"] == liar_id and p["bad"] for p in summary["peers"])
    # The checks cost the origin the pieces fetched twice: 8 checked pieces at most, here half the file.
    assert src.bytes_sent() <= SIZE * 1.6
