"""minion's ``--ignore-qp`` and ``--no-origin`` on a get handed to a real daemon (issue 29): the request
carries them, and the daemon's own ``--ignore-qp`` list applies to every fetch it makes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.testing.processes import Service, start_daemon
from tests.integration.conftest import Daemon, Origin, sha256
from tests.integration.test_swarm import parse_summary

SIGNED = "X-Amz-*,Expires"


@pytest.fixture
def daemon_with(tmp_path: Path, services: list[Service]) -> Callable[..., Daemon]:
    def make(name: str, tracker: Service | None, *extra: str) -> Daemon:
        cache, sock = tmp_path / name / "cache", tmp_path / name / "daemon.sock"
        service = start_daemon(cache, sock, tracker=tracker.url if tracker else None, extra=extra)
        services.append(service)
        return Daemon(service, cache, sock)

    return make


def signed(origin: Origin, name: str, n: int) -> str:
    return origin.url(name) + f"?X-Amz-Signature=sig{n}&Expires={1000 + n}&X-Amz-Credential=key{n}"


def test_signed_urls_handed_to_daemons_share_one_swarm_and_one_cache_entry(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    daemon_with: Callable[..., Daemon],
) -> None:
    src = origin()
    size = 4 << 20
    make_file(src.root / "s.bin", size)
    t = tracker()
    # One host's daemon ignores the signature for every fetch; the other's get asks for it itself.
    first = daemon_with("a", t, "--ignore-qp", SIGNED)
    second = daemon_with("b", t)

    one = first.get(signed(src, "s.bin", 1), tmp_path / "one.bin")
    assert one.returncode == 0 and "cached by the daemon" in one.stderr, one.stderr
    two = second.get(signed(src, "s.bin", 2), tmp_path / "two.bin", "--ignore-qp", SIGNED)
    assert two.returncode == 0 and "cached by the daemon" in two.stderr, two.stderr
    assert parse_summary(two.stderr) == (0, size), "the second host's daemon did not join the first's swarm"
    assert src.bytes_sent() < size + (64 << 10)  # the second host's probe of the origin, at most
    # The daemons sent the origin each host's full signed URL, never one stripped of its signature.
    given = {signed(src, "s.bin", n).partition("?")[2] for n in (1, 2)}
    assert signed(src, "s.bin", 1).partition("?")[2] in src.queries() and set(src.queries()) <= given

    # A third signature on the first host is its cached file: no download at all.
    three = first.get(signed(src, "s.bin", 3), tmp_path / "three.bin")
    assert three.returncode == 0 and "cache hit" in three.stderr, three.stderr
    for name in ("one.bin", "two.bin", "three.bin"):
        assert sha256(tmp_path / name) == sha256(src.root / "s.bin")

    # Without the list, a signature is a swarm (and a cache entry) of its own.
    four = second.get(signed(src, "s.bin", 4), tmp_path / "four.bin")
    assert four.returncode == 0, four.stderr
    assert parse_summary(four.stderr) == (size, 0)


def test_peers_only_through_a_daemon_never_asks_the_origin(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    daemon_with: Callable[..., Daemon],
) -> None:
    src = origin()
    size = 4 << 20
    make_file(src.root / "n.bin", size)
    t = tracker()
    holder, fleet = daemon_with("holder", t), daemon_with("fleet", t)

    alone = fleet.get(src.url("n.bin"), tmp_path / "alone.bin", "--no-origin")
    assert alone.returncode == 4, alone.stderr
    assert "--no-origin" in alone.stderr and alone.stderr.count("\n") == 1
    assert src.requests() == 0 and not (tmp_path / "alone.bin").exists()

    assert holder.get(src.url("n.bin"), tmp_path / "held.bin").returncode == 0
    before = src.requests()
    peers_only = fleet.get(src.url("n.bin"), tmp_path / "two.bin", "--no-origin")
    assert peers_only.returncode == 0 and "cached by the daemon" in peers_only.stderr, peers_only.stderr
    assert parse_summary(peers_only.stderr) == (0, size)
    assert src.requests() == before, "a peers-only get through the daemon asked the origin"
    assert sha256(tmp_path / "two.bin") == sha256(src.root / "n.bin")


def test_peers_only_through_a_daemon_without_a_tracker_or_with_fallback_is_a_usage_error(
    tmp_path: Path, daemon_with: Callable[..., Daemon]
) -> None:
    lone = daemon_with("lone", None)
    url = "http://127.0.0.1:9/f.bin"
    no_tracker = lone.get(url, tmp_path / "f.bin", "--no-origin")
    assert no_tracker.returncode == 2 and "--no-origin needs a tracker" in no_tracker.stderr, no_tracker.stderr
    both = lone.get(url, tmp_path / "f.bin", "--no-origin", "--fallback")
    assert both.returncode == 2 and "--fallback" in both.stderr, both.stderr
    bad = lone.get(url, tmp_path / "f.bin", "--ignore-qp", "a=b")
    assert bad.returncode == 2 and "--ignore-qp" in bad.stderr, bad.stderr
    assert not (tmp_path / "f.bin").exists()
