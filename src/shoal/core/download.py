"""A download's state and every decision about it: events and the time in, actions out.

The engine (shoal.peer.engine.Download) keeps one DownloadCore per attempt. It hands the core what its I/O
tasks report (core.events) with the time, asks it what to start (``plan``) and what to tell the tracker
(``ask``), and carries out the actions it returns. The core never awaits, reads a clock or touches a file
or a socket, so every decision is tested with plain values (tests/unit/test_download.py).

Rules, and why:

- A fetch that ends gives its unfetched pieces back at once; a piece is never in two runs (core.picker).
- A peer that served a corrupt piece is banned and reported, even when it is gone already: a later
  hand-out must not bring it back. A peer that is busy (503) is left alone for BUSY_BACKOFF_SECONDS.
- A failed origin run gives its leases back (after a pause that grows with each failure in a row) so
  another peer can try; ``origin_retries`` failures in a row end the download. An origin whose file
  changed, a tracker that moved to another generation, or bytes that are not what a content task's id
  commits to: the attempt is over (JoinAgain), and the download joins again.
- The tracker unreachable is no reason to stop while fetches still run; stuck with nothing under way for
  ``tracker_patience`` seconds, the download gives up.
- At most MAX_WATCHED_PEERS peers are followed; a peer that holds nothing we lack and has no run of ours
  going makes room for one the tracker hands out (it hands out the peers holding what we lack first).
- Endgame (at most ENDGAME_PIECES pieces missing): what is left is among the swarm's last pieces, which
  every peer waits for. A new origin piece is reported at once, beside the announce in flight, and hash
  look-ups skip their gap, each within a budget per attempt so a peer cannot make us ask in a loop.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from shoal.core.bitfield import Bitfield
from shoal.core.download_actions import (
    Action,
    Ask,
    Carry,
    FetchOrigin,
    FetchPeer,
    Follow,
    Note,
    PlanLater,
    Release,
    ReportBeside,
    Unfollow,
    WakeAnnouncer,
    WakeHashes,
)
from shoal.core.download_values import Stats, Tuning
from shoal.core.errors import JoinAgain, LocalIOError, NoSwarmCopy, OriginChanged, ShoalError
from shoal.core.events import (
    Announced,
    Event,
    HashesArrived,
    NoRange,
    OriginPiece,
    PeerGone,
    PeerHas,
    PeerPiece,
    RunEnded,
    TrackerDown,
    Wake,
)
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceResponse, PeerAddress
from shoal.core.picker import FetchLimits, Holder, lease_pieces, plan_fetches, wants_leases
from shoal.core.pieces import Changes, PieceBook
from shoal.core.scope_leases import FLAT, Crossings, Labels, allowed_mask, crossing
from shoal.core.whole_file import Refetch

ENDGAME_PIECES = 16
ENDGAME_REPORTS = 16  # origin pieces reported beside an announce in flight, per attempt
ENDGAME_LOOKUPS = 32  # hash look-ups that skip HASH_REFRESH_GAP, per attempt
HASH_REFRESH_GAP = 0.1
"""Seconds between hash look-ups: a stream of have messages from many peers costs one look-up a gap."""
LEASE_POLL_SECONDS = 0.25
"""Announces that only ask for leases go no faster than this; news goes at once."""
BUSY_BACKOFF_SECONDS = 0.5
MAX_CROSSINGS = 64
"""Scope leases asked for at once (core.scope_leases): 16 MiB of 256 KiB pieces a lease poll."""
MAX_WATCHED_PEERS = 64
"""Peers followed at once. Each holds a have-stream connection of the session's 128 (peer/api.py): with more,
piece fetches and announces would queue for a connection behind streams that never end."""


@dataclass(slots=True)
class FollowedPeer:
    """What we know of a peer we follow."""

    address: PeerAddress
    have: Bitfield | None = None
    requests: int = 0
    busy_until: float = 0.0
    banned: bool = False

    @property
    def base_url(self) -> str:
        host = self.address.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.address.port}"


ACROSS = ("racks", "sites")
"""The ScopeBytes counters of peers across our rack's boundary (:func:`_scope`)."""


def _scope(labels: Labels, address: PeerAddress) -> str:
    """Which ScopeBytes counter a peer's bytes go to: "rack", "racks", "sites", or "" (no boundary known)."""
    if not labels.rack or not address.rack:
        return ""
    return {None: "rack", "rack": "racks", "site": "sites"}[crossing(labels, address)]


class DownloadCore:
    """One attempt of one download: its pieces (``book``), its peers and sources, and the decisions."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        peer_id: str,
        generation: int,
        tuning: Tuning,
        stats: Stats,
        rng: random.Random,
        labels: Labels = FLAT,
        direct: bool = False,
        range_ok: bool = True,
        interval: float = 5.0,
        content_hashes: dict[int, str] | None = None,
    ) -> None:
        self.manifest = manifest
        self.peer_id = peer_id
        self.generation = generation
        self.tuning = tuning
        self.stats = stats
        self.rng = rng
        self.labels = labels
        self.crossings = Crossings()  # our scope leases: what we may fetch across our rack's boundary
        # Each peer handed out: where it is from us (_scope). Kept after the peer is no longer followed, since
        # pieces of its runs may still arrive.
        self._scopes: dict[str, str] = {}
        self._blocked = 0  # pieces we need that only peers across a boundary we hold no lease on hold
        self._offered_across = 0  # pieces peers across our rack's boundary hold (while we hold scope leases)
        self.direct = direct
        self.range_ok = range_ok
        self.interval = interval
        self.book = PieceBook(manifest, content_hashes=dict(content_hashes or {}))
        self.book.learn_hashes(self.book.content_hashes)
        self.peers: dict[str, FollowedPeer] = {}
        self.bad_peers: set[str] = set()
        self.origin_busy = 0
        self.starved_since: float | None = None  # peers only: since when the swarm gave us nothing to fetch
        self.origin_failures = 0
        self.origin_rate = 0.0  # bytes/s of our recent origin runs (0: none yet)
        self.refetching = False  # after a failed whole-file check: every missing piece comes from the origin
        self.tracker_down_since: float | None = None
        self.announcing = 0  # announces in flight
        self.last_announce = 0.0
        self._reporting: set[int] = set()  # origin pieces an announce in flight reports
        self._orphan_runs: Counter[str] = Counter()  # runs still going of peers no longer followed
        self._dropped: set[str] = set()  # peers we stopped following whose have stream has not ended yet
        self._endgame_reports = ENDGAME_REPORTS
        self._lookups_at_once = ENDGAME_LOOKUPS
        self._hashes_asked_at = -HASH_REFRESH_GAP
        self.limits = self._limits()
        if direct:
            self.book.leases = set(range(manifest.piece_count))

    def _limits(self) -> FetchLimits:
        t = self.tuning
        return FetchLimits(
            run_bytes=t.run_bytes,
            # Origin: our leased pieces, one run at a time (several when downloading straight).
            origin_streams=t.direct_streams if self.direct or self.refetching else 1,
            peer_requests=t.peer_requests,
            per_peer_requests=t.per_peer_requests,
            lone_peer_requests=t.lone_peer_requests,
        )

    def describe(self) -> str:
        """One line of where the attempt stands, for the debug log."""
        book = self.book
        peers = {p: (len(s.have) if s.have else None, s.requests, s.banned) for p, s in self.peers.items()}
        return (
            f"{len(book.written)}/{self.manifest.piece_count} pieces, {len(book.unreported)} unreported, "
            f"in flight {sorted(book.inflight)}, leases {sorted(book.leases)}, origin runs {self.origin_busy}, "
            f"peers {peers}"
        )

    def in_endgame(self) -> bool:
        return self.manifest.piece_count - len(self.book.written) <= ENDGAME_PIECES

    # -- what to start ------------------------------------------------------------------------------

    def plan(self, now: float) -> list[Action]:
        """What to start now (core.picker.plan_fetches), and whether to ask for leases or hashes."""
        book = self.book
        needed = book.needed()
        if not needed:
            return []
        limits = self.limits
        peer_runs = sum(p.requests for p in self.peers.values())
        lease_wanted = wants_leases(needed, book.leases)  # none of our leases is left to start
        if peer_runs >= limits.peer_requests and (self.origin_busy >= limits.origin_streams or lease_wanted):
            # Nothing can start (the usual case in a busy swarm, met on every event): only whether to ask
            # for leases, as plan_fetches would say.
            return [WakeAnnouncer()] if not self.direct and lease_wanted else []
        holders = []
        if peer_runs < limits.peer_requests:  # else no peer run can start: the usual case, kept cheap
            holders = self._holders(now, needed)
        plan = plan_fetches(
            piece_length=self.manifest.piece_length,
            needed=needed,
            leases=book.leases,
            hashed=book.hashed.mask,
            origin_busy=self.origin_busy,
            range_ok=self.range_ok,
            holders=holders,
            peer_runs=peer_runs,
            limits=limits,
            rng=self.rng,
            direct=self.direct,
        )
        actions: list[Action] = []
        for run in plan.origin:
            book.start(run)
            book.fetching.update(run)
            self.origin_busy += 1
            actions.append(FetchOrigin(run))
        for peer_id, run in plan.peers:
            book.start(run)
            peer = self.peers[peer_id]
            peer.requests += 1
            actions.append(FetchPeer(peer_id, peer.base_url, run))
        if plan.want_hashes:
            actions.append(WakeHashes())  # a peer has pieces we need but cannot verify yet
        if plan.want_leases or self._wants_crossings(needed):
            actions.append(WakeAnnouncer())
        return actions

    def _holders(self, now: float, needed: int) -> list[Holder]:
        """The peers to fetch from now, nearest first (the tracker's order), each with the pieces we may take
        from it: across our rack's or site's boundary only those we hold scope leases on (core.scope_leases)."""
        ready = [
            (peer_id, peer, peer.have.mask)
            for peer_id, peer in self.peers.items()
            if not peer.banned and peer.have is not None and peer.busy_until <= now
        ]
        if not self.labels.rack:  # no boundary to cross: every peer is ours to fetch from
            return [Holder(peer_id, have, peer.requests) for peer_id, peer, have in ready]
        holders, across, reachable = [], 0, 0
        for peer_id, peer, have in ready:
            allowed = allowed_mask(self.labels, peer.address, have, self.crossings)
            across |= have & ~allowed
            reachable |= allowed
            holders.append(Holder(peer_id, allowed, peer.requests))
        self._blocked = needed & across & ~reachable
        if self.crossings.rack:
            # What peers across our boundary hold now (busy ones too: they are asked again after their back-off).
            self._offered_across = 0
            for peer_id, peer in self.peers.items():
                if peer.have is not None and not peer.banned and self._scopes.get(peer_id) in ACROSS:
                    self._offered_across |= peer.have.mask
        return holders

    def _wants_crossings(self, needed: int) -> bool:
        """Pieces we need are held only across a boundary, and none of our scope leases is left to start: a
        lease on a piece still on its way from the origin to another rack (core.scope_leases) is not one to
        start, so it does not hold back our asks for the pieces that are there."""
        return bool(self._blocked & needed) and not needed & self.crossings.rack & self._offered_across

    # -- what happened -------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event; raises JoinAgain when the attempt is over, or the error that ends the download."""
        actions: list[Action] = []
        match event:
            case OriginPiece(index, digest, size):
                changes = self.book.origin_piece(index, digest, direct=self.direct, refetching=self.refetching)
                if changes.written:
                    self.stats.done += size
                    self.stats.from_origin += size
                    self.origin_failures = 0
                self._carry(changes, actions)
            case PeerPiece(peer_id, index, digest, size):
                changes = self.book.peer_piece(peer_id, index, digest)
                if changes.written:
                    self._count_peer_bytes(peer_id, size)
                self._carry(changes, actions)
            case RunEnded():
                self._run_ended(event, now, actions)
            case NoRange():
                if self.range_ok:
                    self.range_ok = False
                    actions.append(WakeAnnouncer(news=True))
            case Announced(reply, reported, leases):
                self._announced(reply, reported, leases, actions)
                if not self.tuning.origin:
                    self._starving(now)
            case TrackerDown(error):
                if self.tracker_down_since is None:
                    self.tracker_down_since = now
                stuck = not self.book.inflight and self.origin_busy == 0
                if stuck and now - self.tracker_down_since > self.tuning.tracker_patience:
                    raise error
            case HashesArrived(generation, seq, hashes, revoked):
                if generation != self.generation:
                    raise JoinAgain()
                self._carry(self.book.hashes_arrived(seq, hashes, revoked), actions)
            case PeerHas(peer_id, have, added):
                self._peer_has(peer_id, have, added)
            case PeerGone(peer_id):
                if peer_id in self._dropped:
                    self._dropped.discard(peer_id)  # the end of a have stream we stopped: gone already
                else:
                    self._forget_peer(peer_id, actions)
            case Wake():
                pass
        return actions

    def _carry(self, changes: Changes, actions: list[Action]) -> None:
        if changes.restart:
            raise JoinAgain()  # a content task names its bytes: an origin that sends others serves another file
        for index, _ in changes.dropped:
            self.stats.done -= self.manifest.piece_size(index)
        actions.append(Carry(changes))
        if changes.want_hashes:
            actions.append(WakeHashes())
        if changes.report:
            actions.append(WakeAnnouncer(news=True))
            if self.announcing and self._endgame_reports and self.in_endgame():
                self._endgame_reports -= 1
                actions.append(ReportBeside())

    def _run_ended(self, event: RunEnded, now: float, actions: list[Action]) -> None:
        for index in event.unfetched:
            self.book.inflight.discard(index)
        if isinstance(event.error, LocalIOError):
            raise event.error  # our own disk failed (full, read-only): no other source can help
        if event.source != "origin":
            self._peer_run_ended(event, now, actions)
            return
        self.origin_busy -= 1
        self.book.fetching.difference_update(event.unfetched)
        if event.rate:
            self.origin_rate = event.rate if not self.origin_rate else (self.origin_rate + event.rate) / 2
        if event.error is not None:
            self._origin_failed(event.error, event.unfetched, actions)

    def _origin_failed(self, error: ShoalError, unfetched: tuple[int, ...], actions: list[Action]) -> None:
        if isinstance(error, OriginChanged):
            raise JoinAgain()  # joining again probes the origin and tells the tracker, which starts anew
        self.origin_failures += 1
        actions.append(Note(logging.WARNING, f"origin fetch failed ({self.origin_failures} in a row): {error}"))
        if self.origin_failures >= self.tuning.origin_retries:
            raise error
        pause = 0.2 * self.origin_failures
        if not self.direct and not self.refetching:
            # Give the pieces back so another peer can try; ask again after a pause.
            self.book.leases.difference_update(unfetched)
            actions.append(Release(tuple(unfetched), pause))
        else:
            actions.append(PlanLater(pause))

    def _peer_run_ended(self, event: RunEnded, now: float, actions: list[Action]) -> None:
        peer_id = event.source
        if event.corrupt:
            actions.append(Note(logging.WARNING, f"peer {peer_id} served a corrupt piece; avoiding it"))
            self.bad_peers.add(peer_id)
            actions.append(WakeAnnouncer(news=True))
        peer = self.peers.get(peer_id)
        if self._orphan_runs[peer_id]:
            self._orphan_runs[peer_id] -= 1  # a run of the peer's state before it went and came back
        elif peer is not None:
            peer.requests -= 1
        if peer is None:
            return
        if event.corrupt:
            peer.banned = True
        elif event.busy:
            peer.busy_until = now + BUSY_BACKOFF_SECONDS
            actions.append(PlanLater(BUSY_BACKOFF_SECONDS))
        elif event.stale and peer.have is not None:
            for index in event.unfetched:
                peer.have.discard(index)
        elif event.error is not None:
            actions.append(Note(logging.INFO, f"peer {peer_id} failed: {event.error}"))
            self._forget_peer(peer_id, actions)

    def _peer_has(self, peer_id: str, have: Bitfield | None, added: tuple[int, ...]) -> None:
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        if have is not None:
            peer.have = have
        elif peer.have is not None:
            for index in added:
                if 0 <= index < self.manifest.piece_count:
                    peer.have.add(index)

    def _announced(
        self, reply: AnnounceResponse, reported: dict[int, str], leases: bool, actions: list[Action]
    ) -> None:
        """Apply an announce's reply; ``leases`` False for one sent beside the announcer (an endgame report,
        a release), whose lease list may be older than the announcer's."""
        self.tracker_down_since = None
        if reply.restart or reply.generation != self.generation:
            raise JoinAgain()
        self.interval = reply.interval
        self.range_ok = reply.range_ok
        book = self.book
        still = {i: d for i, d in reported.items() if book.unreported.get(i) == d}
        self._carry(book.confirm(still, reply.rejected), actions)
        if leases:
            again = book.leased(reply.leases)
            if again.report:
                self._carry(again, actions)
            self.crossings = Crossings(sum(1 << i for i in reply.rack_leases), sum(1 << i for i in reply.site_leases))
        if reply.hash_seq > book.hash_seq:
            actions.append(WakeHashes())
        for address in reply.peers:
            peer_id = address.peer_id
            if (
                peer_id == self.peer_id
                or peer_id in self.peers
                or peer_id in self.bad_peers
                or peer_id in self._dropped
            ):
                continue
            if len(self.peers) >= MAX_WATCHED_PEERS and not self._drop_a_useless_peer(actions):
                break
            peer = self.peers[peer_id] = FollowedPeer(address)
            self._scopes[peer_id] = _scope(self.labels, address)
            actions.append(Follow(peer_id, peer.base_url))
        self.stats.peers = len(self.peers)

    def _starving(self, now: float) -> None:
        """Peers only: when no fetch is in flight and no peer we follow holds a piece we still need, the
        download waits for the swarm; past ``tracker_patience`` of that, it ends (NoSwarmCopy)."""
        needed = self.book.needed()
        held = any(p.have is not None and p.have.mask & needed for p in self.peers.values())
        if not needed or self.book.inflight or held:
            self.starved_since = None
        elif self.starved_since is None:
            self.starved_since = now
        elif now - self.starved_since > self.tuning.tracker_patience:
            missing = needed.bit_count()
            raise NoSwarmCopy(
                f"no peer has supplied the {missing} pieces still missing for {self.tuning.tracker_patience:g} s, "
                "and --no-origin forbids the origin"
            )

    def _drop_a_useless_peer(self, actions: list[Action]) -> bool:
        """Stop following one peer that holds nothing we lack and may take, and has no run of ours going, to
        make room. A peer across our rack's boundary offers only what our scope leases allow: followed for
        the rest, such peers would fill every slot and keep out the rack-mates we may take anything from."""
        lacking = ~self.book.on_disk.mask
        for peer_id, peer in self.peers.items():
            if peer.have is None or peer.requests:
                continue
            if not allowed_mask(self.labels, peer.address, peer.have.mask, self.crossings) & lacking:
                self._dropped.add(peer_id)  # until its stream's PeerGone, which must not remove a successor
                self._forget_peer(peer_id, actions)
                return True
        return False

    def _forget_peer(self, peer_id: str, actions: list[Action]) -> None:
        """Stop following a peer; runs of it still going are counted as orphans (their RunEnded is to come)."""
        peer = self.peers.pop(peer_id, None)
        if peer is not None:
            actions.append(Unfollow(peer_id))
            if peer.requests:
                self._orphan_runs[peer_id] += peer.requests
        self.stats.peers = len(self.peers)

    # -- what to tell the tracker --------------------------------------------------------------------

    def _count_peer_bytes(self, peer_id: str, size: int) -> None:
        stats = self.stats
        stats.done += size
        stats.from_peers += size
        match self._scopes.get(peer_id):
            case "rack":
                stats.from_rack += size
            case "racks":
                stats.from_racks += size
            case "sites":
                stats.from_sites += size

    def ask(self, now: float, *, beside: bool = False) -> Ask:
        """What the next announce reports and asks: the origin pieces no announce in flight reports, and
        leases when none of ours is left to start. ``beside``: sent beside the announcer, it asks for no
        leases. The announce counts as in flight until :meth:`answered`; its pieces until :meth:`settled`."""
        book = self.book
        reported = {i: d for i, d in book.unreported.items() if i not in self._reporting}
        want = 0
        if not beside and self.tuning.origin and wants_leases(book.needed(), book.leases):
            if self.range_ok:
                want = lease_pieces(self.manifest.piece_length, self.origin_rate, self.tuning.lease_bytes)
            else:
                want = self.manifest.piece_count  # an origin that ignores Range sends it all in one go
        crossings = 0
        if not beside and self._wants_crossings(needed := book.needed()):
            # Every blocked piece, up to MAX_CROSSINGS: asks are paced like lease polls, and a rack's pieces
            # from other racks come through its few lease holders, so a small batch would starve the uplink.
            crossings = min((self._blocked & needed).bit_count(), MAX_CROSSINGS)
        if not beside:
            self.last_announce = now  # paces the announcer's lease polls, which a report beside it is not
        self.announcing += 1
        self._reporting.update(reported)
        return Ask(
            done=reported,
            # Every announce names them: a tracker that lost their leases (restarted) gives them back to us
            # instead of leasing them to another peer, who would fetch them from the origin again.
            fetching=tuple(sorted(book.fetching)),
            bad_peers=tuple(sorted(self.bad_peers)),
            want_leases=want,
            want_crossings=crossings,
            no_range=not self.range_ok,
            received=self.stats.by_scope(),
        )

    def answered(self) -> None:
        """An announce came back (answered or failed)."""
        self.announcing -= 1

    def settled(self, ask: Ask) -> None:
        """An announce's reply was applied, or it failed: its pieces are reported, or to be sent again."""
        self._reporting.difference_update(ask.done)

    def lease_poll_wait(self, now: float) -> float:
        """How long the announcer waits before an announce that would only ask for leases: they go no
        faster than LEASE_POLL_SECONDS (anything to report goes at once)."""
        if self.book.unreported or self.bad_peers:
            return 0.0
        return max(0.0, self.last_announce + LEASE_POLL_SECONDS - now)

    def hash_lookup_wait(self, now: float) -> float:
        """How long to wait before the next hash look-up: HASH_REFRESH_GAP after the previous one, except in
        the endgame, where up to ENDGAME_LOOKUPS go at once. Call :meth:`hashes_asked` as it is sent."""
        wait = self._hashes_asked_at + HASH_REFRESH_GAP - now
        if wait <= 0:
            return 0.0
        if self._lookups_at_once and self.in_endgame():
            self._lookups_at_once -= 1
            return 0.0
        return wait

    def hashes_asked(self, now: float) -> None:
        self._hashes_asked_at = now

    def last_report(self, reply: AnnounceResponse, reported: dict[int, str]) -> list[Action]:
        """The reply to the report sent once every piece is on disk. A task that moved on, or a piece an
        earlier run verified that differs from the tracker's (the origin's bytes changed under one identity
        between the runs), means the file may mix two versions: it must not be placed (JoinAgain)."""
        if reply.restart or reply.generation != self.generation or self.book.resumed.intersection(reply.rejected):
            raise JoinAgain()
        actions: list[Action] = []
        self._carry(self.book.confirm(reported, reply.rejected), actions)
        return actions

    # -- a failed whole-file check --------------------------------------------------------------------

    def refetch(self, plan: Refetch) -> list[Action]:
        """The complete file failed a whole-file check: the peers that supplied the suspect pieces are bad,
        no peer is followed any more, and those pieces come straight from the origin (no leases)."""
        actions: list[Action] = []
        self.bad_peers.update(plan.suspects)
        for peer_id in list(self.peers):
            self._forget_peer(peer_id, actions)
        self._carry(self.book.forget(plan.pieces), actions)
        self.stats.done -= sum(self.manifest.piece_size(index) for index in plan.pieces)
        self.refetch_from_origin(plan.pieces)
        return actions

    def refetch_from_origin(self, pieces: Iterable[int]) -> None:
        """From now on ``pieces`` come straight from the origin, as a download without a tracker fetches."""
        if not self.tuning.origin:
            raise NoSwarmCopy(
                "pieces taken from peers turned out bad, and --no-origin forbids fetching them again from the origin"
            )
        self.refetching = True
        self.limits = self._limits()
        self.book.leases = set(pieces)
