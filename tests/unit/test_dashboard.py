"""The dashboards' decisions (core.dashboard): what a page may show of a URL, which tasks and peers a bounded
snapshot keeps, throughput from growing totals; and the live feed's sharing of one snapshot (shoal.http.live)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core import dashboard
from shoal.core.dashboard import (
    PeerProgress,
    Ranking,
    Throughput,
    busiest,
    busiest_order,
    display_url,
    file_name,
    stragglers,
    task_view,
)
from shoal.core.messages import ScopeBytes
from shoal.core.scope_tally import ScopeTally
from shoal.core.tickets import FleetKey
from shoal.http.live import LiveFeed
from shoal.testing.clock import FakeClock


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pw@cdn.example.com:8443/a/b.iso?X-Amz-Signature=abc#frag",
            "https://cdn.example.com:8443/a/b.iso",
        ),
        ("http://[::1]:8080/f?token=t", "http://[::1]:8080/f"),
        ("http://host/dir/", "http://host/dir/"),
        ("not a url", "not a url"),
        # A seeder's passkey URL (core.tickets: HOLDER.MAC, 22 base64 digits): the passkey is hidden.
        (
            f"http://seeder:6390/files/{FleetKey.from_token(b'0123456789abcdef').passkey('seeder')}/m/a.iso",
            "http://seeder:6390/files/PASSKEY/m/a.iso",
        ),
        ("http://seeder:6390/files/releases/v1.2/a.iso", "http://seeder:6390/files/releases/v1.2/a.iso"),
    ],
)
def test_a_url_is_shown_without_credentials_query_or_fragment(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_a_url_with_a_bad_port_shows_nothing() -> None:
    assert display_url("http://h:99999/x") == ""


def test_a_files_name_is_its_last_path_segment_decoded() -> None:
    assert file_name("https://h/pub/ubuntu%2024.04.iso?sig=1") == "ubuntu 24.04.iso"
    assert file_name("https://mirror.example.com/") == "mirror.example.com"


def test_the_least_advanced_peers_are_listed_first_seeds_last() -> None:
    peers = [(8, "seed-a", "A"), (1, "slow", "S"), (4, "half", "H"), (8, "seed-b", "B"), (0, "none", "N")]
    assert stragglers(peers, limit=4) == ["N", "S", "H", "A"]
    assert stragglers(peers, limit=0) == []


def test_a_task_is_shown_by_its_file_without_its_urls_secrets() -> None:
    shown = [PeerProgress("p", "p.lan", "s1", "r1", 4, dashboard.progress(4, 8))]
    received = ScopeBytes(origin=100, rack=10, racks=20, sites=30, unlabelled=40)
    view = task_view(
        "t" * 64, "https://u:p@h/x/file.bin?s=1", 2, 8 << 20, 8, peers=5, seeds=2, shown=shown, received=received
    )
    assert (view.name, view.url, view.generation) == ("file.bin", "https://h/x/file.bin", 2)
    assert (view.peers, view.seeds, view.from_origin, view.from_peers) == (5, 2, 100, 100)
    assert view.shown[0].progress == 0.5


def test_progress_never_passes_one_and_is_zero_for_an_unknown_size() -> None:
    assert dashboard.progress(9, 8) == 1.0 and dashboard.progress(2, 8) == 0.25
    assert dashboard.progress(3, None) == 0.0


def test_the_busiest_tasks_are_kept_and_the_rest_counted() -> None:
    tasks = [(9, 9, "quiet", "Q"), (5, 0, "busy", "B"), (8, 3, "busier", "R"), (0, 0, "idle", "I"), (5, 0, "a", "A")]
    assert busiest(tasks, limit=3) == (["R", "A", "B"], 2)  # five downloading each: most peers, then by id
    assert busiest([], limit=3) == ([], 0)


def test_throughput_is_averaged_over_the_window_from_growing_totals() -> None:
    rates = Throughput(window=4.0)
    rates.record(100.0, origin=0, peers=0, announces=0)
    assert rates.samples() == ()  # one point: no span yet
    for second in range(1, 9):
        rates.record(100.0 + second, origin=second * 1000, peers=second * 3000, announces=second * 50)
    last = rates.samples()[-1]
    assert (last.time, last.origin, last.peers) == (108.0, 1000.0, 3000.0)
    assert rates.announces_per_second == 50.0


def test_bytes_reported_in_bursts_are_spread_over_the_window() -> None:
    rates = Throughput(window=4.0)
    for second in range(4):
        rates.record(float(second), origin=0, peers=0, announces=0)
    rates.record(4.0, origin=0, peers=4000, announces=1)  # an announce brings four seconds' worth at once
    assert rates.samples()[-1].peers == 1000.0


def test_totals_that_go_back_start_the_window_afresh() -> None:
    rates = Throughput(window=4.0)
    rates.record(1.0, origin=5000, peers=0, announces=10)
    rates.record(2.0, origin=9000, peers=0, announces=20)
    rates.record(3.0, origin=100, peers=0, announces=1)  # restarted tallies
    assert all(s.origin >= 0 for s in rates.samples())
    rates.record(4.0, origin=600, peers=0, announces=3)
    assert rates.samples()[-1].origin == 500.0


@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.text("abc", max_size=2)), max_size=40),
    st.integers(0, 8),
    st.lists(st.integers(1, 7), max_size=10),
)
def test_a_ranking_offered_in_parts_keeps_what_one_offer_of_all_keeps(
    tasks: list[tuple[int, int, str]], limit: int, cuts: list[int]
) -> None:
    items = [(peers, seeds, task_id, n) for n, (peers, seeds, task_id) in enumerate(tasks)]
    ranking: Ranking[tuple[int, int, str], tuple[int, int, str, int]] = Ranking(limit, busiest_order)
    start = 0
    for cut in cuts:
        ranking.offer(items[start : start + cut])
        start += cut
    ranking.offer(items[start:])
    chosen, more = busiest(items, limit)
    # Items of equal rank (same counts and id) may be kept in either order; their ranks may not differ.
    assert [busiest_order(t) for t in ranking.kept] == sorted(busiest_order(t) for t in items)[:limit]
    assert len(ranking.kept) == len(chosen) and ranking.left_out == more == max(len(items) - limit, 0)


def test_history_is_bounded() -> None:
    rates = Throughput(history=3, window=2.0)
    for second in range(10):
        rates.record(float(second), second, second, second)
    assert [s.time for s in rates.samples()] == [7.0, 8.0, 9.0]


def test_a_sample_is_an_array_on_the_wire() -> None:
    assert msgspec.json.encode(dashboard.ThroughputSample(1.0, 2.0, 3.0)) == b"[1.0,2.0,3.0]"


def test_the_grand_totals_keep_a_tasks_bytes_after_its_peers_left() -> None:
    tally = ScopeTally()
    tally.record("a", "p1", ScopeBytes(origin=10, rack=5), 0.0)
    tally.record("b", "p2", ScopeBytes(origin=1), 0.0, leaving=True)
    tally.forget_before(100.0)
    assert tally.grand_totals() == ScopeBytes(origin=11, rack=5)


async def test_one_snapshot_a_period_is_shared_by_every_caller() -> None:
    clock = FakeClock()
    computed = 0
    release = asyncio.Event()

    async def compute() -> dict[str, int]:
        nonlocal computed
        computed += 1
        await release.wait()
        return {"n": computed}

    feed = LiveFeed(compute, period=1.0, clock=clock)
    callers = [asyncio.ensure_future(feed.snapshot()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    bodies = await asyncio.gather(*callers)
    assert computed == 1 and set(bodies) == {b'{"n":1}'}
    assert await feed.snapshot() == b'{"n":1}'  # still fresh
    clock.advance(1.0)
    assert await feed.snapshot() == b'{"n":2}'
    assert feed.computed == 2
