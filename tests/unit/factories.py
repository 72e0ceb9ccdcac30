"""Factory helpers for core tests: plain values with sensible defaults, overridden per test."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shoal.core.announce import decide_announce
from shoal.core.announce_values import AnnounceOutcome, PeerRecord, TaskRecord, TrackerPolicy
from shoal.core.bitfield import Bitfield
from shoal.core.handout import PeerView
from shoal.core.leases import Lease
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import AnnounceRequest
from shoal.core.task_snapshot import TaskSnapshot

URL = "http://origin.example/file.iso"
TASK_ID = "a" * 40
NOW = 1_000.0
POLICY = TrackerPolicy(interval=5.0, peer_ttl=30.0, max_peers=8)
# 4 MiB in 256 KiB pieces: 16 pieces.
IDENTITY = OriginIdentity(4 * 1024 * 1024, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
MANIFEST = Manifest.for_identity(IDENTITY)
PIECES = MANIFEST.piece_count


def digest(piece: int, version: str = "a") -> str:
    """A well-formed 32-byte hex hash, distinct per piece and version."""
    return f"{version}{piece:x}".ljust(64, "0")[:64]


def bits(indices: Iterable[int] = (), size: int = PIECES) -> Bitfield:
    return Bitfield.of(size, indices)


def view(peer_id: str, *, have: Iterable[int] = (), size: int = PIECES, **fields: Any) -> PeerView:
    values: dict[str, Any] = {"host": "10.0.0.1", "port": 7000, "site": "", "rack": ""}
    values.update(fields)
    return PeerView(peer_id=peer_id, have=bits(have, size), **values)


def peer(
    peer_id: str,
    *,
    have: Iterable[int] = (),
    generation: int = 1,
    last_seen: float = NOW,
    reported: Iterable[int] = (),
    **fields: Any,
) -> PeerRecord:
    """``reported``: the pieces whose hash the tracker took from this peer."""
    return PeerRecord(view(peer_id, have=have, **fields), generation, last_seen, sum(1 << i for i in reported))


def task(*, generation: int = 1, manifest: Manifest | None = MANIFEST, **fields: Any) -> TaskRecord:
    return TaskRecord(task_id=TASK_ID, url=URL, generation=generation, manifest=manifest, **fields)


def snapshot(
    task_record: TaskRecord | None = None,
    *,
    peers: Sequence[PeerRecord] = (),
    leases: Iterable[Lease] = (),
    known_hashes: Mapping[int, str] | None = None,
    hashed: Iterable[int] | None = None,
) -> TaskSnapshot:
    """``hashed``: the pieces whose hash the tracker holds, with those of ``known_hashes`` (default: every piece of a
    task with a manifest)."""
    if hashed is None:
        mask = (1 << PIECES) - 1 if task_record is not None and task_record.manifest is not None else 0
    else:
        mask = sum(1 << i for i in hashed)
    for index in known_hashes or {}:
        mask |= 1 << index
    leased = {lease.piece: lease for lease in leases}
    return TaskSnapshot(task_record, list(peers), leased, dict(known_hashes or {}), mask)


def request(peer_id: str = "p1", **fields: Any) -> AnnounceRequest:
    values: dict[str, Any] = {"url": URL, "port": 7000, "host": "10.0.0.1", "generation": 1}
    values.update(fields)
    return AnnounceRequest(peer_id=peer_id, **values)


def announce(
    snap: TaskSnapshot,
    req: AnnounceRequest,
    *,
    now: float = NOW,
    seen_host: str = "192.0.2.9",
    task_id: str = TASK_ID,
    policy: TrackerPolicy = POLICY,
) -> AnnounceOutcome:
    return decide_announce(snap, req, task_id=task_id, seen_host=seen_host, now=now, policy=policy)
