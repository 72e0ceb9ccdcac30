"""Locality with real processes: peers labelled with racks and sites on loopback. Each piece enters each rack
(and each site) once, from the origin or from another rack (site) under a scope lease (core.scope_leases), and
spreads inside it; peers without labels and a rack of one peer still finish, a rack whose peer fetching
across its boundary is killed is leased the pieces again, and one whose only source across it is killed takes
the rest from the origin, once."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from shoal.core.ids import task_id_for_url
from shoal.storage.partfile import state_path
from shoal.testing.poll import wait_until
from tests.integration.conftest import sha256
from tests.integration.test_swarm import wait_for_file

SIZE = 8 << 20  # 32 pieces of 256 KiB
PIECE = re.compile(r"DEBUG: piece (\d+) from (?:the origin|peer (\S+))$")


RACKS = {"a": "r1", "b": "r1", "c": "r2", "d": "r2"}
"""Two racks of one site, two peers each."""


Peer = Callable[..., Popen[str]]


@pytest.fixture
def peer(tmp_path: Path, spawn_get: Callable[..., Popen[str]]) -> Peer:
    """Start the `shoal get` of peer ``name``: ``url`` into NAME.bin through ``tracker``, labelled with ``site``
    and ``rack`` (none when empty), seeding for ``upload`` seconds once done, with ``extra`` arguments."""

    def start(
        name: str, url: str, tracker: str, *extra: str, site: str = "", rack: str = "", upload: int = 60
    ) -> Popen[str]:
        labels = (*(("--site", site) if site else ()), *(("--rack", rack) if rack else ()))
        out = str(tmp_path / f"{name}.bin")
        return spawn_get(url, "-o", out, "--tracker", tracker, *labels, "--upload-time", str(upload), *extra)

    return start


def start_racked(peer: Peer, url: str, tracker: str, *extra: str) -> dict[str, Popen[str]]:
    """`shoal get` of ``url`` for every peer of RACKS, each labelled with its rack, seeding for a minute."""
    return {name: peer(name, url, tracker, *extra, site="s1", rack=rack) for name, rack in RACKS.items()}


def task_view(tracker: str, task_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{tracker}/v1/tasks/{task_id}") as reply:
        return json.loads(reply.read())


def peers_of(tracker: str, task_id: str) -> dict[str, str]:
    return {p["peer_id"]: p["rack"] for p in task_view(tracker, task_id)["peers"]}


def entered_pieces(
    procs: dict[str, Popen[str]], scope_of: Callable[[str], str], peer_scope: dict[str, str]
) -> dict[str, Counter[int]]:
    """Kill the peers and count, from their -vv logs, the pieces that entered each scope: a piece a peer took
    from the origin or from a peer of another scope (by the sender's labels in the tracker's view)."""
    entered: dict[str, Counter[int]] = {}
    for name, proc in procs.items():
        proc.kill()
        _, stderr = proc.communicate()
        mine = scope_of(name)
        for index, source in (m.groups() for m in map(PIECE.search, stderr.splitlines()) if m):
            if source is None or peer_scope[source] != mine:
                entered.setdefault(mine, Counter())[int(index)] += 1
    return entered


def first_piece_from_a_peer(proc: Popen[str]) -> tuple[list[str], threading.Thread]:
    """Read ``proc``'s -vv log as it comes, until it has verified a piece from a peer (across the uplink):
    the lines so far (still growing) and the thread reading them."""
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    wait_until(
        lambda: any((m := PIECE.search(line.rstrip("\n"))) and m.group(2) for line in lines),
        "its first piece from another rack",
        timeout=60,
    )
    return lines, reader


def test_each_piece_enters_each_rack_once(tmp_path, tracker, origin, make_file, peer):
    src = origin("--rate", "8M")  # the origin is the bottleneck: the racks share what it sent
    make_file(src.root / "r.bin", SIZE)
    url = src.url("r.bin")
    # Patience far beyond any fetch here: no lease is taken over, so "once" is exact, whatever the load.
    t = tracker(extra=("--crossing-patience", "600"))

    procs = start_racked(peer, url, t.url, "-vv")
    for name, proc in procs.items():
        wait_for_file(tmp_path / f"{name}.bin", proc, timeout=120)
    rack_of = peers_of(t.url, task_id_for_url(url))  # every peer is seeding: all are live
    assert sorted(rack_of.values()) == ["r1", "r1", "r2", "r2"]

    # The tracker's task view sums what the peers announced they took in, by scope (each announced its totals
    # on completing): each rack took the file in once, from the origin or the other rack, and the rest of
    # what its peers took came from inside it.
    def all_received() -> dict[str, int] | None:
        received = task_view(t.url, task_id_for_url(url))["received"]
        return received if sum(received.values()) == 4 * SIZE else None

    received = wait_until(all_received, "every peer's bytes in the tracker's task view", timeout=60)
    assert received.get("origin", 0) + received.get("racks", 0) == 2 * SIZE
    assert received["rack"] == 2 * SIZE and "sites" not in received and "unlabelled" not in received
    entered = entered_pieces(procs, RACKS.__getitem__, rack_of)
    for name in procs:
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "r.bin")
    assert set(entered) == {"r1", "r2"}
    for rack, counts in entered.items():
        assert counts == Counter(range(SIZE >> 18)), f"pieces that entered {rack} more or less than once"


SITES = {"a": ("s1", "r1"), "b": ("s1", "r2"), "c": ("s2", "r1"), "d": ("s2", "r2")}
"""Two sites of two racks of one peer each: the rack labels repeat across the sites, as they do in fleets."""


def test_each_piece_enters_each_site_and_rack_once(tmp_path, tracker, origin, make_file, peer):
    """One level up: a piece held only in the other site is fetched across sites by one peer of the site (a
    site lease), and reaches the site's other rack from inside the site."""
    src = origin("--rate", "8M")
    make_file(src.root / "s.bin", SIZE)
    url = src.url("s.bin")
    t = tracker(extra=("--crossing-patience", "600"))  # no lease taken over: "once" is exact
    procs = {name: peer(name, url, t.url, "-vv", site=site, rack=rack) for name, (site, rack) in SITES.items()}
    for name, proc in procs.items():
        wait_for_file(tmp_path / f"{name}.bin", proc, timeout=120)
    peers = task_view(t.url, task_id_for_url(url))["peers"]
    assert sorted((p["site"], p["rack"]) for p in peers) == sorted(SITES.values())

    def all_received() -> dict[str, int] | None:
        received = task_view(t.url, task_id_for_url(url))["received"]
        return received if sum(received.values()) == 4 * SIZE else None

    received = wait_until(all_received, "every peer's bytes in the tracker's task view", timeout=60)
    # Each site took the file in once, from the origin or the other site; the rest crossed racks inside a site.
    assert received.get("origin", 0) + received.get("sites", 0) == 2 * SIZE
    assert received.get("racks", 0) == 2 * SIZE and "rack" not in received and "unlabelled" not in received

    site_of = {p["peer_id"]: p["site"] for p in peers}
    by_site = entered_pieces(procs, lambda name: SITES[name][0], site_of)
    for name in procs:
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "s.bin")
    assert set(by_site) == {"s1", "s2"}
    for site, counts in by_site.items():
        assert counts == Counter(range(SIZE >> 18)), f"pieces that entered {site} more or less than once"


def test_a_rack_of_one_and_peers_without_labels_finish(tmp_path, tracker, origin, make_file, peer):
    src = origin("--rate", "8M")
    make_file(src.root / "m.bin", SIZE)
    url = src.url("m.bin")
    t = tracker()
    labels = {"a": ("s1", "r1"), "b": ("s1", "r2"), "c": ("", ""), "d": ("", "")}
    procs = {name: peer(name, url, t.url, site=site, rack=rack) for name, (site, rack) in labels.items()}
    for name, proc in procs.items():
        wait_for_file(tmp_path / f"{name}.bin", proc, timeout=120)
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "m.bin")


def test_a_rack_goes_on_when_its_peer_fetching_across_is_killed(tmp_path, tracker, origin, make_file, peer):
    """c and d share rack r2; c is SIGKILLed once it has pieces (its scope leases among them): they lapse
    with it (the tracker's peer TTL), and d is leased them in its place and finishes."""
    src = origin("--rate", "4M")
    make_file(src.root / "k.bin", SIZE)
    url = src.url("k.bin")
    t = tracker(extra=("--crossing-patience", "600"))  # only the death of c may move its leases
    procs = start_racked(peer, url, t.url)
    wait_until(lambda: state_path(tmp_path / "c.bin").exists(), "c to record its first pieces", timeout=60)
    procs["c"].kill()
    for name in ("a", "b", "d"):
        wait_for_file(tmp_path / f"{name}.bin", procs[name], timeout=120)
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "k.bin")


def test_a_rack_is_leased_again_the_pieces_of_its_killed_fetcher(tmp_path, tracker, origin, make_file, peer):
    """Rack r1 holds the whole file; c, alone in rack r2 at first, asks for every piece across the uplink and
    is leased them all, but fetches slowly (--download-rate). c is SIGKILLed mid-transfer, with most of its
    leases unfetched; d, its rack mate, which the leases shut out while c lived, is leased them once the
    tracker counts c dead, and fetches them from rack r1, none from the origin again."""
    src = origin()
    make_file(src.root / "x.bin", SIZE)
    url = src.url("x.bin")
    t = tracker(extra=("--crossing-patience", "600"))  # only the death of c may move its leases
    seeds = {name: peer(name, url, t.url, site="s1", rack="r1", upload=120) for name in ("a", "b")}
    for name, proc in seeds.items():
        wait_for_file(tmp_path / f"{name}.bin", proc, timeout=120)
    from_origin = src.bytes_sent()

    def r2_peer(name: str, *extra: str) -> Popen[str]:
        return peer(name, url, t.url, *extra, site="s1", rack="r2")

    c = r2_peer("c", "--download-rate", "512K", "-vv")  # 16 s for the file: killed long before it is through
    c_lines, reader = first_piece_from_a_peer(c)
    d = r2_peer("d", "-vv")
    c.kill()
    c.wait()
    reader.join(timeout=10)
    assert sum(bool(PIECE.search(line.rstrip("\n"))) for line in c_lines) < SIZE >> 18  # killed mid-transfer
    wait_for_file(tmp_path / "d.bin", d, timeout=120)
    assert not (tmp_path / "c.bin").exists()
    assert sha256(tmp_path / "d.bin") == sha256(src.root / "x.bin")
    assert src.bytes_sent() - from_origin < 64 << 10  # d's probe of the origin's headers at most
    d.kill()
    _, stderr = d.communicate()
    sources = [m.group(2) for m in map(PIECE.search, stderr.splitlines()) if m]
    assert len(sources) == SIZE >> 18 and None not in sources  # every piece from rack r1, across the uplink


def test_a_rack_goes_on_when_the_only_holder_across_its_uplink_is_killed(tmp_path, tracker, origin, make_file, peer):
    """The other side of a crossing: a, alone in rack r1, holds the whole file and serves it slowly
    (--upload-rate); c and d of rack r2 fetch it across the uplink under their scope leases. a is SIGKILLed
    mid-transfer: the pieces nobody holds any more are leased from the origin, each entering rack r2 once,
    and both finish."""
    src = origin()
    make_file(src.root / "h.bin", SIZE)
    url = src.url("h.bin")
    # Only the death of a may change where pieces come from; no spot checks (pieces fetched again on purpose).
    t = tracker(extra=("--crossing-patience", "600", "--audit-share", "0"))
    a = peer("a", url, t.url, "--upload-rate", "512K", site="s1", rack="r1", upload=120)
    wait_for_file(tmp_path / "a.bin", a, timeout=120)
    from_origin = src.bytes_sent()
    c, d = (peer(name, url, t.url, "-vv", site="s1", rack="r2") for name in ("c", "d"))
    first_piece_from_a_peer(c)
    a.kill()
    a.wait()
    for name, proc in (("c", c), ("d", d)):
        wait_for_file(tmp_path / f"{name}.bin", proc, timeout=120)
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "h.bin")
    # a was killed mid-transfer: what it no longer served came from the origin, into rack r2 once, not once
    # for each of its peers.
    assert 1 << 18 <= src.bytes_sent() - from_origin <= SIZE + (64 << 10)
