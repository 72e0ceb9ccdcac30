"""The tracker's decision for one announce: a pure function from the task's state and a request to the
writes the store must make and the reply the peer gets.

Generations: a task's content is one version of the origin's file. When a peer reports that the origin
now describes a different file (length, ETag or Last-Modified), or two peers report different hashes for
one piece, the task starts a new generation: every hash, lease and bitfield of the old one is dropped, and
every peer still on the old generation is told to restart. Pieces of two generations never mix because
every report and every peer-to-peer request names its generation.

Reports that name another generation than the current one are stale (a peer that saw the origin before it
changed) and are ignored, so a slow peer cannot flip a task back to an old version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from shoal.core.bitfield import Bitfield
from shoal.core.errors import ProtocolError
from shoal.core.handout import PeerView, hand_out
from shoal.core.leases import Lease, grant_leases, reclaim_leases
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest, AnnounceResponse, PeerAddress


@dataclass(frozen=True, slots=True)
class TaskRecord:
    task_id: str
    url: str
    generation: int
    manifest: Manifest | None
    range_ok: bool = True
    hash_seq: int = 0


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer of a task as stored: its view plus bookkeeping."""

    view: PeerView
    generation: int
    last_seen: float


@dataclass(frozen=True, slots=True)
class TrackerPolicy:
    interval: float
    """Seconds between a peer's periodic announces."""
    peer_ttl: float
    """A peer unheard of for this long is gone, and so are its leases."""
    max_peers: int
    """Most peers in one hand-out."""


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """What the tracker loads before deciding: the task and its live peers and leases."""

    task: TaskRecord | None
    peers: Sequence[PeerRecord]
    leases: Mapping[int, Lease]
    known_hashes: Mapping[int, str]
    """Stored hashes of the pieces the request reports as done (only those are needed)."""


@dataclass(slots=True)
class AnnounceOutcome:
    """Writes for the store, then the reply. Applied in one transaction, in this order."""

    task: TaskRecord
    new_generation: bool = False
    """Drop all hashes, leases and peers' bitfields of the task before the writes below."""
    peer: PeerRecord | None = None
    remove_peer: str | None = None
    new_hashes: dict[int, str] = field(default_factory=dict)
    drop_leases: list[int] = field(default_factory=list)
    put_leases: list[Lease] = field(default_factory=list)
    mark_bad: list[str] = field(default_factory=list)
    response: AnnounceResponse | None = None


def _address(view: PeerView) -> PeerAddress:
    return PeerAddress(view.peer_id, view.host, view.port, view.site, view.rack)


def decide_announce(
    snapshot: TaskSnapshot,
    request: AnnounceRequest,
    *,
    task_id: str,
    seen_host: str,
    now: float,
    policy: TrackerPolicy,
) -> AnnounceOutcome:
    task = snapshot.task or TaskRecord(task_id=task_id, url=request.url, generation=1, manifest=None)
    outcome = AnnounceOutcome(task=task)

    # The origin identity the peer observed, under the generation it believed current.
    if request.origin is not None and request.generation in (task.generation, 0):
        if task.manifest is None:
            task = replace(task, manifest=Manifest.for_identity(request.origin))
        elif not task.manifest.identity.same_version(request.origin) and request.generation == task.generation:
            task = replace(
                task,
                generation=task.generation + 1,
                manifest=Manifest.for_identity(request.origin),
                range_ok=True,
            )
            outcome.new_generation = True
    if request.no_range and request.generation == task.generation and task.range_ok:
        task = replace(task, range_ok=False)

    current = request.generation == task.generation and not outcome.new_generation
    manifest = task.manifest
    size = manifest.piece_count if manifest else 0

    # Hash reports: a conflict with a stored hash means the origin's bytes changed under an unchanged
    # identity (or a peer lies); either way the only safe answer is a clean new generation.
    # Indices are checked even without a manifest (size 0), where every report is out of range.
    if current and request.done:
        for index, digest in request.done.items():
            if index >= size:
                raise ProtocolError(f"done reports piece {index} of {size}", field="done")
            known = snapshot.known_hashes.get(index)
            if known is not None and known != digest:
                task = replace(task, generation=task.generation + 1)
                outcome.new_generation = True
                # The rest of this report belongs to the old generation too: keep none of it.
                outcome.new_hashes.clear()
                current = False
                break
            if known is None:
                outcome.new_hashes[index] = digest
        if outcome.new_hashes:
            task = replace(task, hash_seq=task.hash_seq + len(outcome.new_hashes))
    if current:
        for index in request.fetching:
            if index >= size:
                raise ProtocolError(f"fetching names piece {index} of {size}", field="fetching")

    host = request.host or seen_host
    have = Bitfield(size)
    if current and manifest and request.bitfield is not None:
        have = Bitfield.decode(size, request.bitfield)
    if current:
        for index in request.done:
            have.add(index)
    previous = next((p for p in snapshot.peers if p.view.peer_id == request.peer_id), None)
    if (
        current
        and request.event == "update"
        and previous is not None
        and previous.generation == task.generation
        and now - previous.last_seen < policy.peer_ttl
        and previous.view.have.size == size
    ):
        # A live peer's pieces only grow between its start and its stop. Kept, they survive an older
        # announce that arrives after a newer one (a peer reports its last origin pieces beside the announce
        # in flight): its bitfield lacks pieces the newer one reported done, and with their leases gone those
        # would look free and be leased to another peer, to fetch from the origin again.
        have.union_update(previous.view.have)
    view = PeerView(
        peer_id=request.peer_id,
        host=host,
        port=request.port,
        site=request.site,
        rack=request.rack,
        have=have,
        bad=previous.view.bad if previous and current else False,
    )
    outcome.task = task

    if request.event == "stopped":
        outcome.remove_peer = request.peer_id
        outcome.drop_leases = [i for i, lease in snapshot.leases.items() if lease.peer_id == request.peer_id]
        outcome.response = AnnounceResponse(task.generation, manifest, range_ok=task.range_ok)
        return outcome

    outcome.peer = PeerRecord(view, task.generation, now)
    if not current:
        outcome.response = AnnounceResponse(
            task.generation,
            manifest,
            restart=request.generation != 0 or outcome.new_generation,
            range_ok=task.range_ok,
            hash_seq=0 if outcome.new_generation else task.hash_seq,
            interval=policy.interval,
        )
        return outcome

    outcome.mark_bad = [p for p in request.bad_peers if p != request.peer_id]
    bad = set(outcome.mark_bad)
    peers = [
        replace(
            p.view,
            bad=p.view.bad or p.view.peer_id in bad,
            # A bitfield stored before this announce set the manifest describes no pieces yet.
            have=p.view.have if p.view.have.size == size else Bitfield(size),
        )
        for p in snapshot.peers
        if p.view.peer_id != request.peer_id and p.generation == task.generation and now - p.last_seen < policy.peer_ttl
    ]
    live_ids = {p.peer_id for p in peers} | {request.peer_id}

    # Leases: finished and released ones go, and so do the asker's leases on pieces another trusted peer
    # has delivered meanwhile (fetching them again from the origin would be waste); the asker's others are
    # renewed; dead peers' ones lapse.
    held = have.copy()
    for p in peers:
        if not p.bad:
            held.union_update(p.have)
    finished = set(request.done) | set(request.released)
    delivered = {i for i, lease in snapshot.leases.items() if lease.peer_id == request.peer_id and i in held}
    outcome.drop_leases = [
        i for i in finished | delivered if i in snapshot.leases and snapshot.leases[i].peer_id == request.peer_id
    ]
    live_leases: dict[int, Lease] = {}
    for index, lease in snapshot.leases.items():
        if lease.peer_id == request.peer_id:
            if index in finished or index in delivered:
                continue
            renewed = Lease(index, lease.peer_id, now + policy.peer_ttl)
            outcome.put_leases.append(renewed)
            live_leases[index] = renewed
        elif lease.peer_id in live_ids and lease.expires > now:
            live_leases[index] = lease

    # Origin fetches in flight whose lease the tracker lost (a restart) or let lapse: back to their peer,
    # before any lease is granted afresh, so the piece is not fetched from the origin a second time.
    for index in reclaim_leases(
        claimed=set(request.fetching) - finished, held=held, leased=live_leases, asker=request.peer_id
    ):
        if index not in live_leases:
            live_leases[index] = reclaimed = Lease(index, request.peer_id, now + policy.peer_ttl)
            outcome.put_leases.append(reclaimed)

    granted: list[int] = []
    if manifest is not None and request.want_leases:
        granted = grant_leases(
            held=held,
            leased=live_leases,
            asker=request.peer_id,
            asker_have=have,
            want=request.want_leases,
            range_ok=task.range_ok,
        )
        outcome.put_leases.extend(Lease(i, request.peer_id, now + policy.peer_ttl) for i in granted)
    mine = sorted({i for i, lease in live_leases.items() if lease.peer_id == request.peer_id} | set(granted))

    handed = hand_out(view, peers, policy.max_peers) if manifest else []
    outcome.response = AnnounceResponse(
        generation=task.generation,
        manifest=manifest,
        range_ok=task.range_ok,
        peers=tuple(_address(p) for p in handed),
        leases=tuple(mine),
        hash_seq=task.hash_seq,
        interval=policy.interval,
    )
    return outcome
