"""Locality with real processes: peers labelled with racks (one site) on loopback. Each piece enters each rack
once, from the origin or from another rack under a scope lease (core.scope_leases), and spreads inside it;
peers without labels and a rack of one peer still finish."""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

from shoal.core.ids import task_id_for_url
from shoal.storage.partfile import state_path
from shoal.testing.poll import wait_until
from tests.integration.conftest import sha256
from tests.integration.test_swarm import wait_for_file

SIZE = 8 << 20  # 32 pieces of 256 KiB
PIECE = re.compile(r"DEBUG: piece (\d+) from (?:the origin|peer (\S+))$")


RACKS = {"a": "r1", "b": "r1", "c": "r2", "d": "r2"}
"""Two racks of one site, two peers each."""


def start_racked(
    spawn_get: Callable[..., Popen[str]], url: str, tracker: str, tmp_path: Path, *extra: str
) -> dict[str, Popen[str]]:
    """`shoal get` of ``url`` for every peer of RACKS, each labelled with its rack, seeding for a minute."""
    return {
        name: spawn_get(
            url,
            "-o",
            str(tmp_path / f"{name}.bin"),
            "--tracker",
            tracker,
            "--site",
            "s1",
            "--rack",
            rack,
            "--upload-time",
            "60",
            *extra,
        )
        for name, rack in RACKS.items()
    }


def task_view(tracker: str, task_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{tracker}/v1/tasks/{task_id}") as reply:
        return json.loads(reply.read())


def peers_of(tracker: str, task_id: str) -> dict[str, str]:
    return {p["peer_id"]: p["rack"] for p in task_view(tracker, task_id)["peers"]}


def test_each_piece_enters_each_rack_once(tmp_path, tracker, origin, make_file, spawn_get):
    src = origin("--rate", "8M")  # the origin is the bottleneck: the racks share what it sent
    make_file(src.root / "r.bin", SIZE)
    url = src.url("r.bin")
    # Patience far beyond any fetch here: no lease is taken over, so "once" is exact, whatever the load.
    t = tracker(extra=("--crossing-patience", "600"))

    procs = start_racked(spawn_get, url, t.url, tmp_path, "-vv")
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
    entered: dict[str, Counter[int]] = {"r1": Counter(), "r2": Counter()}
    for name, proc in procs.items():
        proc.kill()
        _, stderr = proc.communicate()
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "r.bin")
        for index, source in (m.groups() for m in map(PIECE.search, stderr.splitlines()) if m):
            if source is None or rack_of[source] != RACKS[name]:
                entered[RACKS[name]][int(index)] += 1  # from the origin, or across the rack's boundary
    for rack, counts in entered.items():
        assert counts == Counter(range(SIZE >> 18)), f"pieces that entered {rack} more or less than once"


def test_a_rack_of_one_and_peers_without_labels_finish(tmp_path, tracker, origin, make_file, spawn_get):
    src = origin("--rate", "8M")
    make_file(src.root / "m.bin", SIZE)
    url = src.url("m.bin")
    t = tracker()
    labels = {"a": ("--site", "s1", "--rack", "r1"), "b": ("--site", "s1", "--rack", "r2"), "c": (), "d": ()}
    procs = {
        name: spawn_get(url, "-o", str(tmp_path / f"{name}.bin"), "--tracker", t.url, "--upload-time", "60", *extra)
        for name, extra in labels.items()
    }
    for name, proc in procs.items():
        wait_for_file(tmp_path / f"{name}.bin", proc, timeout=120)
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "m.bin")


def test_a_rack_goes_on_when_its_peer_fetching_across_is_killed(tmp_path, tracker, origin, make_file, spawn_get):
    """c and d share rack r2; c is SIGKILLed once it has pieces (its scope leases among them): they lapse
    with it (the tracker's peer TTL), and d is leased them in its place and finishes."""
    src = origin("--rate", "4M")
    make_file(src.root / "k.bin", SIZE)
    url = src.url("k.bin")
    t = tracker(extra=("--crossing-patience", "600"))  # only the death of c may move its leases
    procs = start_racked(spawn_get, url, t.url, tmp_path)
    wait_until(lambda: state_path(tmp_path / "c.bin").exists(), "c to record its first pieces", timeout=60)
    procs["c"].kill()
    for name in ("a", "b", "d"):
        wait_for_file(tmp_path / f"{name}.bin", procs[name], timeout=120)
        assert sha256(tmp_path / f"{name}.bin") == sha256(src.root / "k.bin")
