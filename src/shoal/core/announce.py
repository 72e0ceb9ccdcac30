"""The tracker's decision for one announce: a pure function from the task's state and a request to the
writes the store must make and the reply the peer gets.

Trust (README, "Trust model"). The tracker is a coordinator, not an oracle: it hands out only hashes that
the origin's bytes produced or that the task's name commits to, so a peer can be wrong or lie without
another host writing a wrong file.

- A **URL task** (40-hex id) takes a piece's hash from one peer only: the live holder of that piece's origin
  lease, which fetched it from the origin. A report from anyone else, or one that differs from the hash
  the tracker holds, is rejected: it changes nothing, is counted, and the reporter is told.
- A **content task** (64-hex id) is the BLAKE3 of its manifest (core.ids.content_task_id): its piece hashes
  are registered whole, by anyone, and taken only when they hash to the id. No single report is ever
  taken for it, and its manifest never changes.
- A peer's bitfield claims only pieces whose hash the tracker holds: a claim cannot take a piece out of
  origin leasing before the origin's bytes are known.
- A ``bad_peers`` report keeps the accused away from the reporter's host at once, and from everyone only
  when reporters on BAN_QUORUM different hosts (as the tracker sees their addresses) agree: one host cannot
  empty a swarm.

Generations: a task's content is one version of the origin's file. When a peer reports that the origin
now describes a different file (length, ETag or Last-Modified), and the tracker's own look at the origin
shows that file too (``TaskSnapshot.origin_seen``: tracker.origin_check), the task starts a new generation:
every hash, lease and bitfield of the old one is dropped, and every peer still on the old generation is
told to restart. A claim the origin does not bear out changes nothing and is counted; two hash reports that
disagree never start one. Pieces of two generations never mix because every report and every peer-to-peer
request names its generation.

Reports that name another generation than the current one are stale (a peer that saw the origin before it
changed) and are ignored, so a slow peer cannot flip a task back to an old version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from shoal.core.announce_values import AnnounceOutcome, Pace, PeerRecord, TaskRecord, TrackerPolicy
from shoal.core.audit import MAX_VOTES, Audit, Vote, is_audited, tally
from shoal.core.bitfield import Bitfield, iter_bits
from shoal.core.errors import ProtocolError
from shoal.core.handout import PeerView, hand_out
from shoal.core.ids import content_task_id, is_content_task
from shoal.core.leases import Lease, grant_free, reclaimable
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest, AnnounceResponse, ManifestMessage
from shoal.core.scope_leases import origin_share
from shoal.core.swarm import Swarm
from shoal.core.task_snapshot import TaskSnapshot

BAN_QUORUM = 2
"""Reporters on this many different hosts must accuse a peer before it is kept from everyone."""
UNLOADED = Pace()
"""The pace of a tracker under no load: no stretch, no jitter."""


def decide_announce(
    snapshot: TaskSnapshot,
    request: AnnounceRequest,
    *,
    task_id: str,
    seen_host: str,
    now: float,
    policy: TrackerPolicy,
    pace: Pace = UNLOADED,
) -> AnnounceOutcome:
    task = snapshot.task or TaskRecord(task_id=task_id, url=request.url, generation=1, manifest=None)
    swarm = snapshot.swarm
    if swarm is None:
        size = task.manifest.piece_count if task.manifest else 0
        swarm = Swarm.of(
            snapshot.peers,
            snapshot.leases,
            generation=task.generation,
            size=size,
            now=now,
            ttl=policy.peer_ttl,
            asker=request.peer_id,
        )
    outcome = AnnounceOutcome(task=task)
    content = is_content_task(task_id)
    task = _learn_manifest(snapshot, request, outcome, task, content=content)
    current = request.generation == task.generation and not outcome.new_generation
    size = task.manifest.piece_count if task.manifest else 0

    previous = swarm.peers.get(request.peer_id)
    banned = previous is not None and previous.view.bad and current
    confirmed: list[int] = []  # reported pieces whose hash the tracker holds now
    if current and request.done:
        trusting = not content and not banned
        confirmed = _take_reports(snapshot, swarm, request, outcome, seen_host, now, policy, trusting=trusting)
    if outcome.new_hashes or outcome.revoked:
        task = replace(task, hash_seq=task.hash_seq + len(outcome.revoked) + len(outcome.new_hashes))
    outcome.task = task
    hashed = _unhold_revoked(snapshot, swarm, request, outcome, size)
    if current:
        for index in request.fetching:
            if index >= size:
                raise ProtocolError(f"fetching names piece {index} of {size}", field="fetching")
    view, reported = _asker_view(request, previous, task, current, confirmed, hashed, seen_host, now, policy)

    if request.event == "stopped":
        outcome.remove_peer = request.peer_id
        outcome.drop_leases = list(iter_bits(swarm.own(request.peer_id)))
        outcome.response = AnnounceResponse(task.generation, ManifestMessage.of(task.manifest), range_ok=task.range_ok)
        return outcome
    # The interval this peer is told (core.interval): a seed of a swarm nobody downloads from comes back
    # seldom; a downloader, or any peer of a swarm with one, soon. Its TTL, and its leases', follow it.
    rule = policy.pace_rule
    seed = current and swarm.is_seed(PeerRecord(view, task.generation, now))
    outcome.nominal = rule.nominal(seed=seed, busy_swarm=swarm.downloading(request.peer_id))
    interval = rule.interval(outcome.nominal, pace.stretch, pace.draw)
    ttl = rule.ttl(interval)
    outcome.peer = PeerRecord(view, task.generation, now, reported & view.have.mask, ttl)
    if not current:
        outcome.response = AnnounceResponse(
            task.generation,
            ManifestMessage.of(task.manifest),
            restart=request.generation != 0 or outcome.new_generation,
            range_ok=task.range_ok,
            hash_seq=0 if outcome.new_generation else task.hash_seq,
            interval=interval,
        )
        return outcome

    limit = policy.max_peers if task.manifest else 0
    if (
        outcome.revoked
        or request.bad_peers
        or seen_host in swarm.accused_by
        or (swarm.generation, swarm.size) != (task.generation, size)
    ):
        # This announce changes other peers (accuses them, takes revoked pieces from them), or some are
        # kept from the asker's host: decide on every live peer as this announce leaves it.
        peers = _live_peers(swarm, request, outcome, task, hashed, seen_host, now, policy)
        # Peers accused from the asker's own host are kept from it at once, whatever the quorum says: their
        # pieces do not count as held for it either, so it can lease one that only they hold.
        trusted = [p for p in peers if seen_host not in p.accusers]
        held = view.have.mask
        for p in trusted:
            if not p.bad:
                held |= p.have.mask
        handed = swarm.addresses(hand_out(view, trusted, limit))
    else:
        # Most announces: the swarm's aggregates already are what a pass over its peers would give.
        held = swarm.held_by_others(request.peer_id) | view.have.mask
        handed = swarm.hand_out_addresses(view, limit, pace.draw)
    mine = _lease_decisions(snapshot, swarm, request, outcome, task, view, held, seen_host, now, ttl)
    outcome.response = AnnounceResponse(
        generation=task.generation,
        manifest_message=ManifestMessage.of(task.manifest),
        range_ok=task.range_ok,
        peers=handed,
        leases=tuple(mine),
        hash_seq=task.hash_seq,
        interval=interval,
        rejected=tuple(outcome.rejected),
    )
    return outcome


def _learn_manifest(
    snapshot: TaskSnapshot, request: AnnounceRequest, outcome: AnnounceOutcome, task: TaskRecord, *, content: bool
) -> TaskRecord:
    """The task after what the announce says of the file: a content task's registration, the origin
    identity the peer observed (under the generation it believed current), an origin that ignores Range."""
    if request.piece_hashes:
        task, registered = _register_content(task, request)
        outcome.new_hashes.update({i: d for i, d in registered.items() if not snapshot.hashed >> i & 1})
    # A content task's manifest comes only from its registration, and never changes.
    elif request.origin is not None and request.generation in (task.generation, 0) and not content:
        if task.manifest is None:
            task = replace(task, manifest=Manifest.for_identity(request.origin))
        elif claims_change(task, request):
            if snapshot.origin_seen is None or not snapshot.origin_seen.same_version(request.origin):
                outcome.refused_origin = True
            else:
                task = replace(
                    task,
                    generation=task.generation + 1,
                    manifest=Manifest.for_identity(request.origin),
                    range_ok=True,
                )
                outcome.new_generation = True
    if request.no_range and request.generation == task.generation and task.range_ok:
        task = replace(task, range_ok=False)
    return task


def _unhold_revoked(
    snapshot: TaskSnapshot, swarm: Swarm, request: AnnounceRequest, outcome: AnnounceOutcome, size: int
) -> int:
    """Take the pieces whose hashes this announce revoked out of the other peers' bitfields (``unheld``);
    returns the bit mask of the pieces whose hash the tracker holds after the announce."""
    revoked = Bitfield.of(size, outcome.revoked).mask
    for record in swarm.peers.values() if revoked else ():
        other = record.view
        if other.peer_id != request.peer_id and other.have.size == size and other.have.mask & revoked:
            outcome.unheld[other.peer_id] = Bitfield.from_mask(size, other.have.mask & ~revoked)
    return snapshot.hashed & ~revoked | Bitfield.of(size, outcome.new_hashes).mask


def _asker_view(
    request: AnnounceRequest,
    previous: PeerRecord | None,
    task: TaskRecord,
    current: bool,
    confirmed: list[int],
    hashed: int,
    seen_host: str,
    now: float,
    policy: TrackerPolicy,
) -> tuple[PeerView, int]:
    """The asker as the tracker stores it after this announce, and the mask of the pieces it reported."""
    manifest = task.manifest
    size = manifest.piece_count if manifest else 0
    have = Bitfield(size)
    if current and manifest and request.bitfield is not None:
        have = Bitfield.decode(size, request.bitfield)
    if current:
        for index in confirmed:
            have.add(index)
    reported = Bitfield.of(size, confirmed).mask
    if (
        current
        and request.event == "update"
        and previous is not None
        and previous.generation == task.generation
        and previous.alive(now, policy.peer_ttl)
        and previous.view.have.size == size
    ):
        # A live peer keeps the pieces it reported done between its start and its stop. Kept, they survive
        # an older announce that arrives after a newer one (a peer reports its last origin pieces beside the
        # announce in flight): its bitfield lacks pieces the newer one reported done, and with their leases
        # gone those would look free and be leased to another peer, to fetch from the origin again. Its other
        # pieces are what its bitfield says: a peer drops a piece whose hash changed, and says so by leaving
        # it out.
        reported |= previous.reported
        have.union_update(Bitfield.from_mask(size, previous.view.have.mask & previous.reported))
    # A claim counts only for pieces whose hash the tracker holds: no one can take a piece out of origin
    # leasing, or be handed out for it, before the origin's bytes are known (or once its hash is revoked).
    have.intersection_update(hashed)
    view = PeerView(
        peer_id=request.peer_id,
        host=request.host or seen_host,
        port=request.port,
        site=request.site,
        rack=request.rack,
        have=have,
        bad=previous.view.bad if previous and current else False,
        accusers=previous.view.accusers if previous and current else frozenset(),
    )
    return view, reported


def _live_peers(
    swarm: Swarm,
    request: AnnounceRequest,
    outcome: AnnounceOutcome,
    task: TaskRecord,
    hashed: int,
    seen_host: str,
    now: float,
    policy: TrackerPolicy,
) -> list[PeerView]:
    """The task's other live peers on its generation, as this announce leaves them: the accusations it
    makes counted (a ban once accusers on BAN_QUORUM hosts agree), revoked pieces taken out."""
    size = task.manifest.piece_count if task.manifest else 0
    accused = set(request.bad_peers) - {request.peer_id}
    peers = []
    for record in swarm.peers.values():
        if (
            record.view.peer_id == request.peer_id
            or record.generation != task.generation
            or not record.alive(now, policy.peer_ttl)
        ):
            continue
        other = record.view
        if other.peer_id in accused and seen_host not in other.accusers and not other.bad:
            # A banned peer takes no more accusers: it is kept from everyone already, and the names would
            # only grow its record.
            accusers = other.accusers | {seen_host}
            outcome.accusations[other.peer_id] = accusers
            if not other.bad and len(accusers) >= BAN_QUORUM:
                outcome.mark_bad.append(other.peer_id)
            other = replace(other, accusers=accusers, bad=other.bad or len(accusers) >= BAN_QUORUM)
        if other.peer_id in outcome.unheld:
            other = replace(other, have=outcome.unheld[other.peer_id])
        if other.have.size != size:
            # A bitfield stored before this announce set the manifest describes no pieces yet.
            other = replace(other, have=Bitfield(size))
        elif other.have.mask & ~hashed:
            other = replace(other, have=Bitfield.from_mask(size, other.have.mask & hashed))  # revoked pieces
        peers.append(other)
    return peers


def _mask(indices: Iterable[int], size: int) -> int:
    """The bit mask of ``indices``, leaving out those past the last piece."""
    mask = 0
    for index in indices:
        if index < size:
            mask |= 1 << index
    return mask


def _lease_decisions(
    snapshot: TaskSnapshot,
    swarm: Swarm,
    request: AnnounceRequest,
    outcome: AnnounceOutcome,
    task: TaskRecord,
    view: PeerView,
    held: int,
    seen_host: str,
    now: float,
    ttl: float,
) -> list[int]:
    """The asker's origin leases after this announce (the pieces it is to fetch from the origin), with the
    lease writes in ``outcome``, each to expire with the asker (``ttl``). ``held``: the pieces the asker or
    another live, trusted peer holds. Bit masks
    throughout: a pass over every lease of a file of thousands of pieces on every announce is what the
    tracker's busiest path cannot afford."""
    size = task.manifest.piece_count if task.manifest else 0
    asker = request.peer_id
    # Finished and released leases go, and so do the asker's leases on pieces another trusted peer has
    # delivered meanwhile (fetching them again from the origin would be waste); the asker's others are
    # renewed; dead peers' ones have lapsed (the swarm holds only live leases).
    own = swarm.own(asker)
    finished = _mask(request.done, size) | _mask(request.released, size)
    fetching = _mask(request.fetching, size)
    checks = _mask(snapshot.audits, size)  # the pieces under spot check
    delivered = own & held
    if delivered and checks:
        # A piece under check is held by others by definition: the checker's lease on it stays until it
        # reports, since only a live lease's holder votes (_take_reports). Dropped, the fetch under way
        # would count for nothing and the check would lease the piece to yet another host. Except once the
        # checker holds the piece itself, unreported and not fetching it: it took the piece from a peer
        # before its origin fetch began, and will never fetch it; its lease would keep the check from
        # every other host for as long as it announces.
        taken_from_peer = view.have.mask & ~fetching
        delivered &= ~checks | taken_from_peer
    dropped = own & finished | delivered
    outcome.drop_leases = list(iter_bits(dropped))
    kept = own & ~dropped
    expires = now + ttl
    outcome.put_leases.extend(Lease(i, asker, expires) for i in iter_bits(kept))
    others = swarm.leased & ~own

    # Origin fetches in flight whose lease the tracker lost (a restart) or let lapse: back to their peer,
    # before any lease is granted afresh, so the piece is not fetched from the origin a second time.
    claimed = 0 if view.bad else fetching & ~finished
    # Every piece under check is held by others: a checker's claim on one is its fetch for the check, and gets
    # its lease back like any other, since only a lease holder's report is a vote (_take_reports).
    checking = _checkable(snapshot, outcome, view.have, seen_host) if snapshot.audits else 0
    reclaimed = reclaimable(claimed=claimed, held=held & ~checking, others_leased=others) & ~kept
    outcome.put_leases.extend(Lease(i, asker, expires) for i in iter_bits(reclaimed))
    leased = others | kept | reclaimed

    granted: list[int] = []
    if task.manifest is not None and request.want_leases and not view.bad and not snapshot.grace:
        # A spot check's lease is one piece, and outlives its fetch when the checker got the piece from a peer
        # meanwhile (it stays until its holder reports): counted, such leases could fill the cap for good.
        holders = swarm.lease_holders(view, checks)
        granted = grant_free(
            size=size,
            taken=held | view.have.mask | leased,
            others_lease=bool(others),
            want=request.want_leases,
            range_ok=task.range_ok,
            share=origin_share(view, swarm.racks, size),
            rack_holders=holders if view.rack else 0,
            flat_holders=0 if view.rack else holders,
        )
        if snapshot.audits:  # most announces: none under way
            granted += _audit_lease(snapshot, outcome, view.have, leased | _mask(granted, size), seen_host)
        outcome.put_leases.extend(Lease(i, asker, expires) for i in granted)
        outcome.leases_granted = len(granted)
    return sorted([*iter_bits(kept | reclaimed), *granted])


def claims_change(task: TaskRecord | None, request: AnnounceRequest) -> bool:
    """Whether the announce says the origin's file is no longer the one the task's current generation
    describes: a claim the tracker confirms at the origin before deciding (TaskSnapshot.origin_seen)."""
    return (
        task is not None
        and task.manifest is not None
        and request.origin is not None
        and not request.piece_hashes
        and not is_content_task(task.task_id)
        and request.generation == task.generation
        and not task.manifest.identity.same_version(request.origin)
    )


def _register_content(task: TaskRecord, request: AnnounceRequest) -> tuple[TaskRecord, dict[int, str]]:
    """A content task's manifest and every piece hash, taken only when they hash to the task's id."""
    if not is_content_task(task.task_id):
        raise ProtocolError("piece_hashes registers a content task (a 64-hex id), not a URL task", field="piece_hashes")
    if request.origin is None:
        raise ProtocolError("piece_hashes needs the origin's length (origin)", field="origin")
    manifest = Manifest.for_identity(request.origin)
    hashes = request.piece_hashes
    if len(hashes) != manifest.piece_count or content_task_id(manifest.length, manifest.piece_length, hashes) != (
        task.task_id
    ):
        raise ProtocolError("piece_hashes and origin.length do not hash to the task id", field="piece_hashes")
    if task.manifest is None:
        task = replace(task, manifest=manifest)
    return task, dict(enumerate(hashes))


def _take_reports(
    snapshot: TaskSnapshot,
    swarm: Swarm,
    request: AnnounceRequest,
    outcome: AnnounceOutcome,
    seen_host: str,
    now: float,
    policy: TrackerPolicy,
    *,
    trusting: bool,
) -> list[int]:
    """Judge the hashes an announce reports (module docstring, core.audit); returns the pieces whose hash the
    tracker now holds as the peer reported it. ``trusting`` False (a content task, a banned peer): only a
    report that matches a held hash counts."""
    size = outcome.task.manifest.piece_count if outcome.task.manifest else 0
    confirmed: list[int] = []
    for index, digest in request.done.items():
        if index >= size:
            raise ProtocolError(f"done reports piece {index} of {size}", field="done")
        lease = swarm.leases.get(index)
        holder = trusting and lease is not None and lease.peer_id == request.peer_id and lease.expires >= now
        if trusting and lease is None and snapshot.grace:
            # The tracker restarted moments ago and lost the leases: a piece whose fetch ended during the
            # outage is reported done, and counts as its reporter's claim, like a fetch still in flight.
            holder = True
        known = snapshot.known_hashes.get(index, outcome.new_hashes.get(index))
        audit = snapshot.audits.get(index)
        if known is not None and holder and audit is not None and seen_host not in audit.hosts:
            known = _vote(snapshot, outcome, audit.with_vote(Vote(request.peer_id, seen_host, digest)), known)
        if known is not None:
            (confirmed if known == digest else outcome.rejected).append(index)
        elif holder:
            outcome.new_hashes[index] = digest
            outcome.reporters[index] = request.peer_id
            confirmed.append(index)
            task = outcome.task
            if is_audited(policy.audit_key, task.task_id, task.generation, index, policy.audit_share):
                outcome.audits[index] = Audit(index, (Vote(request.peer_id, seen_host, digest),))
        else:
            outcome.rejected.append(index)
    return confirmed


def _vote(snapshot: TaskSnapshot, outcome: AnnounceOutcome, audit: Audit, known: str) -> str:
    """Count a checker's report of a piece under check; returns the piece's hash after it."""
    verdict = tally(audit)
    if verdict is None:
        outcome.audits[audit.piece] = audit if len(audit.votes) < MAX_VOTES else None
        return known
    outcome.audits[audit.piece] = None
    if verdict.digest != known:
        outcome.revoked.append(audit.piece)
        outcome.new_hashes[audit.piece] = verdict.digest
        outcome.reporters[audit.piece] = ""
    for liar in verdict.liars:
        if liar not in outcome.mark_bad:
            outcome.mark_bad.append(liar)
        for piece, reporter in snapshot.reporters.items():
            if reporter == liar and piece != audit.piece and piece not in outcome.revoked:
                outcome.revoked.append(piece)
                outcome.audits[piece] = None
    return verdict.digest


def _checkable(snapshot: TaskSnapshot, outcome: AnnounceOutcome, have: Bitfield, seen_host: str) -> int:
    """The pieces under check (a bit mask) that the asker may fetch for the check: open, lacking, and
    reported only from other hosts."""
    mask = 0
    for index, audit in snapshot.audits.items():
        if outcome.audits.get(index, audit) is None or index in have or index in outcome.revoked:
            continue
        if seen_host not in audit.hosts:
            mask |= 1 << index
    return mask


def _audit_lease(
    snapshot: TaskSnapshot, outcome: AnnounceOutcome, have: Bitfield, leased: int, seen_host: str
) -> list[int]:
    """At most one piece under check for the asker to fetch from the origin: one it lacks, that nobody is
    fetching (``leased``, a bit mask), and whose reporters are all on other hosts."""
    for index, audit in sorted(snapshot.audits.items()):
        if outcome.audits.get(index, audit) is None or leased >> index & 1 or index in have:
            continue
        if seen_host not in audit.hosts and index not in outcome.revoked:
            return [index]
    return []
