"""Drive a TrackerStore the way the tracker does: load, decide_announce, apply in one go.

Times are realistic epoch seconds with a fractional part, so a backend that stores them with too little
precision shows up.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shoal.core.announce import decide_announce
from shoal.core.announce_values import AnnounceOutcome, TrackerPolicy
from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceRequest
from shoal.storage.tracker_store import TrackerStore

URL = "http://origin.example/images/disk.img"
TASK_ID = "b" * 40
T0 = 1_700_000_000.125
POLICY = TrackerPolicy(interval=5.0, peer_ttl=30.0, max_peers=8)
# 4 MiB in 256 KiB pieces: 16 pieces.
IDENTITY = OriginIdentity(4 * 1024 * 1024, etag='"v1"', last_modified="Tue, 14 Nov 2023 22:13:20 GMT")
CHANGED = OriginIdentity(4 * 1024 * 1024 + 1, etag='"v2"', last_modified="Wed, 15 Nov 2023 08:00:00 GMT")
MANIFEST = Manifest.for_identity(IDENTITY)
PIECES = MANIFEST.piece_count


def digest(piece: int, version: str = "a") -> str:
    return f"{version}{piece:x}".ljust(64, "0")[:64]


def bitfield(*pieces: int, size: int = PIECES) -> str:
    return Bitfield.of(size, pieces).encode()


def request(peer_id: str, **fields: Any) -> AnnounceRequest:
    values: dict[str, Any] = {"url": URL, "port": 7000, "host": "10.0.0.1", "generation": 1}
    values.update(fields)
    return AnnounceRequest(peer_id=peer_id, **values)


async def decide(
    store: TrackerStore, req: AnnounceRequest, now: float, seen_host: str = "192.0.2.1"
) -> tuple[AnnounceOutcome, bool]:
    """Decide an announce on what the store holds: the outcome, and whether it creates the task. The origin
    bears out every claim that it changed (the tracker's look, tracker.origin_check, is not the store's
    business: what a new generation writes is)."""
    loaded = await store.load(TASK_ID, req.done, now=now, peer_ttl=POLICY.peer_ttl)
    snapshot = replace(loaded, origin_seen=req.origin)
    outcome = decide_announce(snapshot, req, task_id=TASK_ID, seen_host=seen_host, now=now, policy=POLICY)
    return outcome, snapshot.task is None


async def announce(
    store: TrackerStore, req: AnnounceRequest, now: float, seen_host: str = "192.0.2.1"
) -> AnnounceOutcome:
    """One announce exactly as the tracker service runs it (as seen from ``seen_host``)."""
    outcome, created = await decide(store, req, now, seen_host)
    await store.apply(outcome, created=created)
    return outcome


async def join(store: TrackerStore, peer_id: str, now: float, **fields: Any) -> AnnounceOutcome:
    """A peer's join: learn the generation, report the origin, then a first working announce."""
    await announce(store, request(peer_id, generation=0, event="started"), now)
    return await announce(store, request(peer_id, event="started", origin=IDENTITY, **fields), now)
