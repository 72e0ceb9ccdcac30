"""A simulated `shoal get`: the download engine's behaviour, with pieces that arrive whole.

It mirrors :class:`shoal.core.download.DownloadCore` and the engine around it (peer/engine.py,
peer/announcer.py, peer/fetchers.py), calling the core's pure pieces where they are the decision itself:
``plan_fetches`` (what to fetch from whom), ``wants_leases`` and ``lease_pieces`` (when and how many origin
leases to ask for) and ``allowed_mask`` (what may cross a boundary). What it keeps of the engine:

- join: an announce of generation 0 beside the origin probe; a second ``started`` announce with the origin's
  identity when the tracker has no manifest yet;
- the announcer: one announce in flight; news (origin hashes to report) goes at once, an announce that only
  asks for leases or crossings no sooner than LEASE_POLL_SECONDS after the last, and one every interval;
  in the endgame an origin piece is reported beside the announce in flight;
- hash look-ups: when a holder has pieces we need whose hash we lack, HASH_REFRESH_GAP apart (the endgame's
  budget of look-ups skips the gap);
- origin runs under lease (one at a time), peer runs (MAX runs at once, per peer and alone as GetConfig
  says), a source with ``max_uploads`` uploads answers busy and is left alone BUSY_BACKOFF_SECONDS;
- an origin piece is offered to peers once the tracker took its hash; a peer's pieces reach its followers
  ``have_latency`` after they are offered (the have stream);
- at most MAX_WATCHED_PEERS followed; a useless one (nothing we lack that ``allowed_mask`` lets us take, no
  run of ours going) makes room for a new hand-out, and is not followed again.

Left out: failures, corrupt peers, restarts and generations (nothing fails in the simulation), byte-level
transfer detail, CPU.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.core.bitfield import Bitfield
from shoal.core.download import BUSY_BACKOFF_SECONDS as BUSY_BACKOFF
from shoal.core.download import (
    ENDGAME_LOOKUPS,
    ENDGAME_PIECES,
    ENDGAME_REPORTS,
    HASH_REFRESH_GAP,
    LEASE_POLL_SECONDS,
    MAX_WATCHED_PEERS,
)
from shoal.core.manifest import OriginIdentity
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.core.picker import Holder, lease_pieces, plan_fetches, wants_leases
from shoal.core.scope_leases import Crossings, ScopeKind, crossing

if TYPE_CHECKING:
    from fleetsim.sim import Simulation


@dataclass(slots=True)
class Followed:
    peer: SimPeer
    boundary: ScopeKind | None
    """The boundary a transfer from it to us crosses (core.scope_leases.crossing): fixed by the labels."""
    requests: int = 0
    busy_until: float = 0.0
    ready_at: float = 0.0
    """When its have stream's first line (the bitfield) arrives."""


def digest_of(index: int) -> str:
    """The piece's BLAKE3 in the simulation: any fixed 64-hex string per piece will do."""
    return f"{index:064x}"


class SimPeer:
    def __init__(self, sim: Simulation, index: int, site: str, rack: str, start: float) -> None:
        self.sim = sim
        self.index = index
        self.peer_id = f"p{index}"
        self.site, self.rack = site, rack
        self.start = start
        self.rng = random.Random(index)
        self.size = 0  # pieces, once joined
        self.full = 0
        self.generation = 0
        self.disk = self.inflight = self.offered = self.visible = self.hashed = 0
        self.hash_seq = 0
        self.unreported: dict[int, str] = {}
        self.reporting: set[int] = set()
        self.leases: set[int] = set()
        self.fetching: set[int] = set()
        self.crossings = Crossings()
        self.blocked = 0
        self.offered_across = 0
        self.followed: dict[str, Followed] = {}
        self.dropped: dict[str, float] = {}
        """Peers we stopped following -> when their have stream has ended (not followed again before)."""
        self.followers: dict[SimPeer, None] = {}  # an ordered set: runs repeat exactly
        self.peer_runs = 0
        self.origin_busy = 0
        self.origin_rate = 0.0
        self.uploads = 0
        self.announcing = 0
        self.last_announce = 0.0
        self.wake_pending = self.news_pending = False
        self.announce_at: float | None = None
        self.timer = 0
        self.lookup_busy = self.lookup_pending = False
        self.hashes_asked_at = -HASH_REFRESH_GAP
        self.endgame_reports, self.lookups_at_once = ENDGAME_REPORTS, ENDGAME_LOOKUPS
        self.planning = False
        self.starved = False
        self.done_at: float | None = None
        self.from_origin = self.from_peers = 0
        self.arrived: list[float] = []
        """When each piece was on disk."""

    # -- join ---------------------------------------------------------------------------------------

    def launch(self) -> None:
        self.sim.at(self.start, self._join)

    def _join(self) -> None:
        sim = self.sim
        reply = sim.announce(self._request(event="started", generation=0))
        probe = sim.model.probe_rtt
        sim.at(sim.now + max(sim.model.announce_rtt, probe), self._joined, reply)

    def _joined(self, reply: AnnounceResponse) -> None:
        sim = self.sim
        if reply.manifest is None:
            again = sim.announce(self._request(event="started", generation=reply.generation, origin=sim.identity))
            sim.at(sim.now + sim.model.announce_rtt, self._begin, again)
            return
        self._begin(reply)

    def _begin(self, reply: AnnounceResponse) -> None:
        manifest = reply.manifest
        assert manifest is not None
        self.generation = reply.generation
        self.size = manifest.piece_count
        self.full = (1 << self.size) - 1
        self.arrived = [0.0] * self.size
        self.piece_length = manifest.piece_length
        self._follow(reply)
        self.plan()
        self._arm_timer()

    # -- fetch decisions (DownloadCore.plan) ---------------------------------------------------------

    def needed(self) -> int:
        return self.full & ~(self.disk | self.inflight)

    def plan(self) -> None:
        if not self.size or self.done_at is not None:
            return
        needed = self.needed()
        if not needed:
            self.starved = False
            return
        limits = self.sim.limits
        lease_wanted = wants_leases(needed, self.leases)
        if self.peer_runs >= limits.peer_requests and (self.origin_busy >= limits.origin_streams or lease_wanted):
            self.starved = False
            if lease_wanted:
                self.wake_announcer()
            return
        now = self.sim.now
        holders = self._holders(now, needed) if self.peer_runs < limits.peer_requests else []
        window = self.sim.model.prefix_window
        if window and holders:
            holders = self._ahead(holders, window)
        plan = plan_fetches(
            piece_length=self.piece_length,
            needed=needed,
            leases=self.leases,
            hashed=self.hashed,
            origin_busy=self.origin_busy,
            range_ok=True,
            holders=holders,
            peer_runs=self.peer_runs,
            limits=limits,
            rng=self.rng,
        )
        for run in plan.origin:
            self._fetch_origin(run)
        for peer_id, run in plan.peers:
            self._fetch_peer(self.followed[peer_id], run)
        self.starved = self.peer_runs < limits.peer_requests
        if plan.want_hashes:
            self.want_hashes()
        if plan.want_leases or self._wants_crossings(needed):
            self.wake_announcer()

    def _holders(self, now: float, needed: int) -> list[Holder]:
        """DownloadCore._holders, less the peers holding nothing we need (plan_fetches would pass them by
        without a draw of its random generator), each holder's pieces cut to those we need (plan_fetches
        takes no others); one empty stand-in keeps their count above one when it was, since a lone holder
        is asked for more runs at once. The hottest loop of a run: cheapest tests first."""
        rack_ok = self.crossings.rack
        site_ok = rack_ok & self.crossings.site
        flat = not self.rack
        holders, across, reachable, offered = [], 0, 0, 0
        for f in self.followed.values():
            have = f.peer.visible & needed
            if f.boundary is not None:
                offered |= have  # DownloadCore._offered_across (here cut to what we need, all it is used for)
            if not have or f.busy_until > now or f.ready_at > now:
                continue  # nothing to fetch from it (nor blocked for us), or not to be asked now
            # allowed_mask(self, f.peer, have, crossings), with the boundary worked out once per peer.
            boundary = f.boundary
            if flat or boundary is None:
                allowed = have
            elif boundary == "rack":
                allowed = have & rack_ok
            else:
                allowed = have & site_ok
            across |= have & ~allowed
            reachable |= allowed
            if allowed:
                holders.append(Holder(f.peer.peer_id, allowed, f.requests))
        if not flat:
            self.blocked = across & ~reachable
            self.offered_across = offered
        if len(holders) == 1:
            lone = holders[0].peer_id
            others = (f for f in self.followed.values() if f.peer.peer_id != lone)
            if any(f.busy_until <= now and f.ready_at <= now for f in others):
                holders.append(Holder("", 0, 0))
        return holders

    def _ahead(self, holders: list[Holder], window: int) -> list[Holder]:
        """Model.prefix_window: the holders cut to the window of pieces past our first missing one, when one
        of them has a piece there; else as they are."""
        first = (~self.disk & self.full & -(~self.disk & self.full)).bit_length() - 1
        ahead = ((1 << window) - 1) << first
        if not any(h.have & ahead for h in holders):
            return holders
        return [Holder(h.peer_id, h.have & ahead, h.requests) for h in holders]

    def _wants_crossings(self, needed: int) -> bool:
        return bool(self.blocked & needed) and not needed & self.crossings.rack & self.offered_across

    def replan_soon(self) -> None:
        """Plan again once the current instant's events are handled (several may arrive at once)."""
        if not self.planning:
            self.planning = True
            self.sim.at(self.sim.now, self._replan)

    def _replan(self) -> None:
        self.planning = False
        self.plan()

    # -- transfers -----------------------------------------------------------------------------------

    def _fetch_origin(self, run: list[int]) -> None:
        for index in run:
            self.inflight |= 1 << index
        self.fetching.update(run)
        self.origin_busy += 1
        self.sim.transfer(None, self, run)

    def _fetch_peer(self, f: Followed, run: list[int]) -> None:
        source = f.peer
        if source.uploads >= self.sim.model.max_uploads:
            f.busy_until = self.sim.now + BUSY_BACKOFF  # 503: leave it alone a while, plan again then
            self.sim.at(f.busy_until, self.plan)
            return
        for index in run:
            self.inflight |= 1 << index
        f.requests += 1
        self.peer_runs += 1
        source.uploads += 1
        self.sim.transfer(source, self, run)

    def got_piece(self, source: SimPeer | None, index: int) -> None:
        bit = 1 << index
        self.inflight &= ~bit
        self.disk |= bit
        self.arrived[index] = self.sim.now
        size = self.sim.manifest.piece_size(index)
        if source is None:
            self.from_origin += size
            self.fetching.discard(index)
            self.hashed |= bit
            self.unreported[index] = digest_of(index)
            self.wake_announcer(news=True)
            if self.announcing and self.endgame_reports and self._endgame():
                self.endgame_reports -= 1
                self._announce(beside=True)
        else:
            self.from_peers += size
            self._offer(bit)
        self._check_done()
        self.replan_soon()

    def run_ended(self, source: SimPeer | None, seconds: float, nbytes: int) -> None:
        if source is None:
            self.origin_busy -= 1
            rate = nbytes / seconds if seconds > 0 else 0.0
            self.origin_rate = rate if not self.origin_rate else (self.origin_rate + rate) / 2
        else:
            source.uploads -= 1
            self.peer_runs -= 1
            f = self.followed.get(source.peer_id)
            if f is not None:
                f.requests -= 1
        self.replan_soon()

    def _offer(self, bits: int) -> None:
        self.offered |= bits
        self.sim.at(self.sim.now + self.sim.model.have_latency, self._visible, bits)

    def _visible(self, bits: int) -> None:
        self.visible |= bits
        me = self.peer_id
        for peer in self.followers:
            # Only a follower with a request slot free can start anything, and only for a piece it lacks and
            # may take from us: what its plan would conclude, without the plan.
            if not peer.starved:
                continue
            new = bits & ~(peer.disk | peer.inflight)
            if not new:
                continue
            f = peer.followed.get(me)
            if f is None:
                continue
            if f.boundary == "rack" and peer.rack:
                new &= peer.crossings.rack
            elif f.boundary == "site" and peer.rack:
                new &= peer.crossings.rack & peer.crossings.site
            if new & peer.hashed:
                peer.replan_soon()
            elif new:
                peer.want_hashes()

    def _endgame(self) -> bool:
        return self.size - self.disk.bit_count() <= ENDGAME_PIECES

    def _check_done(self) -> None:
        if self.done_at is None and self.disk == self.full and not self.unreported:
            self.done_at = self.sim.now
            self.sim.peer_done(self)
            self.wake_announcer(news=True)  # the engine's seed(): "completed" at once, then every interval

    # -- announces (peer/announcer.py, DownloadCore.ask) ----------------------------------------------

    def wake_announcer(self, *, news: bool = False) -> None:
        if self.announcing:
            self.wake_pending = True
            self.news_pending |= news
            return
        now = self.sim.now
        urgent = news or self.unreported
        gap = 0.0 if urgent else max(0.0, self.last_announce + LEASE_POLL_SECONDS - now)
        when = now + gap
        if self.announce_at is not None and self.announce_at <= when:
            return
        self.announce_at = when
        self.sim.at(when, self._announce_due, when)

    def _announce_due(self, when: float) -> None:
        if self.announce_at != when or self.announcing:
            return
        self.announce_at = None
        self._announce()

    def _arm_timer(self) -> None:
        self.timer += 1
        self.sim.at(self.sim.now + self.sim.interval, self._periodic, self.timer)

    def _periodic(self, token: int) -> None:
        if token == self.timer and not self.announcing:
            self._announce()

    def _announce(self, *, beside: bool = False) -> None:
        sim, now = self.sim, self.sim.now
        reported = {i: d for i, d in self.unreported.items() if i not in self.reporting}
        want = crossings = 0
        needed = self.needed()
        if not beside and self.done_at is None and wants_leases(needed, self.leases):
            want = lease_pieces(self.piece_length, self.origin_rate, sim.tuning_lease_bytes)
        if not beside and self.done_at is None and self._wants_crossings(needed):
            crossings = min((self.blocked & needed).bit_count(), sim.model.max_crossings)
        if not beside:
            self.last_announce = now
            self.announce_at = None
            self.timer += 1
        self.announcing += 1
        self.reporting.update(reported)
        event = "completed" if self.done_at is not None and self.disk == self.full else "update"
        request = self._request(
            event=event,
            generation=self.generation,
            done=reported,
            fetching=tuple(sorted(self.fetching)),
            want_leases=want,
            want_crossings=crossings,
        )
        reply = sim.announce(request)
        sim.at(now + sim.model.announce_rtt, self._announced, reply, reported, beside)

    def _announced(self, reply: AnnounceResponse, reported: dict[int, str], beside: bool) -> None:
        self.announcing -= 1
        rejected = set(reply.rejected)
        confirmed = 0
        for index, digest in reported.items():
            if self.unreported.get(index) == digest and index not in rejected:
                del self.unreported[index]
                confirmed |= 1 << index
        self.reporting.difference_update(reported)
        if confirmed:
            self._offer(confirmed)
        if not beside:
            self.leases = set(reply.leases)
            self.crossings = Crossings(sum(1 << i for i in reply.rack_leases), sum(1 << i for i in reply.site_leases))
        if reply.hash_seq > self.hash_seq:
            self.want_hashes()
        self._follow(reply)
        self._check_done()
        self.plan()
        if not beside:
            self._arm_timer()
        if self.wake_pending and not self.announcing:
            news, self.wake_pending, self.news_pending = self.news_pending, False, False
            self.wake_announcer(news=news)
        elif self.unreported and not self.announcing:
            self.wake_announcer(news=True)

    def _follow(self, reply: AnnounceResponse) -> None:
        now = self.sim.now
        for address in reply.peers:
            peer_id = address.peer_id
            if peer_id == self.peer_id or peer_id in self.followed or self.dropped.get(peer_id, -1.0) > now:
                continue
            if len(self.followed) >= MAX_WATCHED_PEERS and not self._drop_useless():
                break
            peer = self.sim.peers_by_id[peer_id]
            self.followed[peer_id] = Followed(peer, crossing(self, peer), ready_at=now + self.sim.model.request_latency)
            peer.followers[self] = None
            self.sim.at(now + self.sim.model.request_latency, self.replan_soon)

    def _drop_useless(self) -> bool:
        """DownloadCore._drop_a_useless_peer: one followed peer that offers nothing we lack and may take
        (allowed_mask: across a boundary, only what our scope leases allow), with no run of ours going, makes
        room; it is not followed again until its have stream has ended (the engine's ``_dropped``)."""
        lacking, now = ~self.disk, self.sim.now
        crossings, labelled = self.crossings, bool(self.rack)
        for peer_id, f in self.followed.items():
            if f.ready_at > now or f.requests:
                continue  # its have stream has not told us its pieces yet, or a run of ours is going
            have = f.peer.visible
            if labelled and f.boundary == "rack":
                have &= crossings.rack
            elif labelled and f.boundary == "site":
                have &= crossings.rack & crossings.site
            if not have & lacking:
                del self.followed[peer_id]
                f.peer.followers.pop(self, None)
                self.dropped[peer_id] = now + self.sim.model.request_latency
                return True
        return False

    def _request(self, **fields: object) -> AnnounceRequest:
        bitfield = Bitfield.from_mask(self.size, self.offered).encode() if self.size else None
        return AnnounceRequest(
            peer_id=self.peer_id,
            url=self.sim.url,
            port=1,
            host=self.peer_id,
            site=self.site,
            rack=self.rack,
            bitfield=bitfield,
            **fields,  # type: ignore[arg-type]
        )

    # -- hash look-ups --------------------------------------------------------------------------------

    def want_hashes(self) -> None:
        if self.lookup_busy:
            self.lookup_pending = True
            return
        now = self.sim.now
        wait = self.hashes_asked_at + HASH_REFRESH_GAP - now
        if wait > 0 and self.lookups_at_once and self._endgame():
            self.lookups_at_once -= 1
            wait = 0.0
        self.lookup_busy = True
        self.sim.at(now + max(0.0, wait), self._lookup)

    def _lookup(self) -> None:
        sim = self.sim
        self.hashes_asked_at = sim.now
        self.lookup_pending = False
        seq, mask = sim.tracker.hash_lookup()
        sim.at(sim.now + sim.model.lookup_rtt, self._hashes_arrived, seq, mask)

    def _hashes_arrived(self, seq: int, mask: int) -> None:
        self.lookup_busy = False
        self.hash_seq = max(self.hash_seq, seq)
        self.hashed |= mask
        self.plan()
        if self.lookup_pending:
            self.want_hashes()


def origin_identity(length: int) -> OriginIdentity:
    return OriginIdentity(length, etag='"fleet-sim"')
