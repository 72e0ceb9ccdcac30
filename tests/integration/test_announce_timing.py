"""When a peer tells the tracker what it fetched, and when it asks for the hashes of what others fetched.

In-process downloads (the async API) against a real tracker and a real, rate-capped origin. The engine's
pacing constants are raised far above the download's length, so a piece that waits for one of them turns a
download of a few seconds into a timeout: these tests check that news skips the pacing, not how fast it goes.
"""

from __future__ import annotations

import asyncio

import pytest

import shoal
from shoal.core import download
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.peer.tracker_client import TrackerClient

SIZE = 4 << 20  # 16 pieces of 256 KiB: the whole download is within the endgame (HASH_ENDGAME_PIECES)
PACING = 120.0  # seconds: far longer than any download here takes
DEADLINE = 30.0


async def download_alone(tmp_path, tracker, origin, make_file) -> shoal.GetResult:
    """One peer fetches a SIZE-byte file from a rate-capped origin through a fresh tracker; checks its bytes."""
    src = origin("--rate", "2M")
    data = make_file(src.root / "f.bin", SIZE)
    t = tracker()
    result = await asyncio.wait_for(
        shoal.aget(src.url("f.bin"), dest_dir=tmp_path, tracker=t.url, upload_time=0), DEADLINE
    )
    assert result.path.read_bytes() == data
    return result


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    """The pieces each announce reports (``done``), in the order they were sent, for every peer."""
    sent: list[set[int]] = []
    announce = TrackerClient.announce

    async def recording(
        self: TrackerClient, task_id: str, request: AnnounceRequest, *, wait_busy: bool = True
    ) -> AnnounceResponse:
        sent.append(set(request.done))
        return await announce(self, task_id, request, wait_busy=wait_busy)

    monkeypatch.setattr(TrackerClient, "announce", recording)
    return sent


async def test_pieces_fetched_during_the_lease_poll_gap_are_reported_at_once(
    tmp_path, tracker, origin, make_file, monkeypatch, reports
):
    # Each lease run leaves every piece in flight, so the announcer, asking only for leases, waits out the
    # poll gap; the pieces that arrive meanwhile must not wait with it.
    monkeypatch.setattr(download, "LEASE_POLL_SECONDS", PACING)
    result = await download_alone(tmp_path, tracker, origin, make_file)
    assert result.bytes_from_origin == SIZE
    reported = [done for done in reports if done]
    assert set().union(*reported) == set(range(SIZE // (256 << 10)))
    # No piece is reported twice: an announce waits until the owner has applied the previous reply. (The
    # final report may repeat pieces of an announce cancelled in flight when the last piece arrived.)
    earlier = reported[:-1]
    assert sum(len(done) for done in earlier) == len(set().union(*earlier))


async def test_endgame_hash_look_ups_skip_the_refresh_gap(tmp_path, tracker, origin, make_file, monkeypatch):
    # Two peers split the origin's pieces and take the rest from each other: each needs the hashes of the
    # other's pieces as they are reported, one look-up after another.
    monkeypatch.setattr(download, "HASH_REFRESH_GAP", PACING)
    src = origin("--rate", "2M")
    data = make_file(src.root / "b.bin", SIZE)
    t = tracker()
    first, second = tmp_path / "p1", tmp_path / "p2"
    first.mkdir()
    second.mkdir()

    async def fetch(dest):  # type: ignore[no-untyped-def]
        return await shoal.aget(src.url("b.bin"), dest_dir=dest, tracker=t.url, upload_time=2)

    results = await asyncio.wait_for(asyncio.gather(fetch(first), fetch(second)), DEADLINE)
    for result in results:
        assert result.path.read_bytes() == data
    assert sum(r.bytes_from_peers for r in results) > 0
    assert sum(r.bytes_from_origin for r in results) <= SIZE * 1.05


async def test_an_endgame_origin_piece_is_reported_beside_the_announce_in_flight(
    tmp_path, tracker, origin, make_file, monkeypatch
):
    # The whole download is within the endgame. The reply to the first announce that reports a piece is
    # held back until another announce has reported a later piece: with one announce at a time, that would
    # be the final report, after every piece, and the download could not even get there, because the held
    # announce asks for the leases of the second half of the file.
    announce = TrackerClient.announce
    reports: list[set[int]] = []
    reported_later = asyncio.Event()

    async def holding(
        self: TrackerClient, task_id: str, request: AnnounceRequest, *, wait_busy: bool = True
    ) -> AnnounceResponse:
        done = set(request.done)
        if done:
            reports.append(done)
            if len(reports) > 1:
                reported_later.set()
        reply = await announce(self, task_id, request, wait_busy=wait_busy)
        if done and reports[0] is done:
            await reported_later.wait()
        return reply

    monkeypatch.setattr(TrackerClient, "announce", holding)
    await download_alone(tmp_path, tracker, origin, make_file)
    pieces = SIZE // (256 << 10)
    assert len(reports[0] | reports[1]) < pieces  # the second report came while pieces were still arriving
    assert not reports[0] & reports[1]  # and did not repeat the pieces of the one in flight
