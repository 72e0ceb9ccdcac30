"""A task's soft state, as the tracker process that owns the task keeps it in memory: its live peers (with
their pieces, accusations and bans) and its origin leases.

None of it is written to a database: peers announce every interval, so a restarted tracker learns them
again from their next announces, and their origin fetches in flight come back through each announce's
``fetching`` (core.leases.reclaim_leases). What is durable (the task, its piece hashes) is the store's.

Rules:

- A swarm holds only live peers and live leases once :meth:`Swarm.expire` has run at ``now``: a peer unheard
  of for its TTL (its record's, which follows the interval it was told: core.interval; else the one the
  swarm is expired by) is forgotten with its leases and its bans, a lease that passed its expiry is dropped. The
  tracker expires a task's swarm before deciding each of its announces, so the decision (core.announce)
  needs no pass over the peers to tell the live ones; due times sit in heaps, one entry per peer and per
  lease, so expiry costs nothing while nobody is due.
- The swarm changes only through :meth:`Swarm.apply` of a decision's outcome, which keeps its aggregates
  by the bits that changed: how many holders each piece has (live peers on the current generation, not
  banned), as bit-sliced counters (one big integer per bit of the count, so adding or removing a peer's
  whole bitfield is a few integer operations), the leases as bit masks (all, and each peer's), which
  hosts accused whom, the holders for the hand-out (core.handout.HolderIndex) and the holders of each rare
  piece (:class:`RareHolders`). An announce then costs about the same in a swarm of thousands as in a swarm
  of ten, at the end of a download too, when most peers hold nothing the asker lacks.
- The lease holders of each scope of core.leases (a rack, or the peers of a site without a rack label) are
  counted as leases and labels change, so a lease decision reads how many peers of the asker's scope hold
  leases without a pass over the holders (:meth:`Swarm.lease_holders`).
- A swarm may report to a :class:`Census` of the tracker's live peers and seeds, kept by the same changes,
  so the tracker's totals (its metrics, its dashboard) are read without a walk over its tasks.
- Memory is bounded per peer: its record (the bitfield is an integer of one bit per piece; a peer carries at
  most core.announce.BAN_QUORUM accusers), one heap entry and one entry in at most three hand-out groups;
  and per piece: at most ``2 * 2**RARE_POWER`` names of its holders.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace

from shoal.core.announce_values import AnnounceOutcome, PeerRecord
from shoal.core.bitfield import Bitfield, iter_bits
from shoal.core.handout import WALK_BUDGET, HolderIndex, IndexedHolder, PeerView, locality_tier
from shoal.core.leases import Lease
from shoal.core.messages import PeerAddress


class PieceCounts:
    """How many holders each piece has, bit-sliced: ``levels[j]`` holds bit j of every piece's count."""

    __slots__ = ("levels",)

    def __init__(self) -> None:
        self.levels: list[int] = []

    def add(self, mask: int) -> None:
        carry = mask
        for j, level in enumerate(self.levels):
            if not carry:
                return
            self.levels[j] = level ^ carry
            carry &= level
        if carry:
            self.levels.append(carry)

    def remove(self, mask: int) -> None:
        """Take one holder from each piece of ``mask``; each must have one."""
        borrow = mask
        for j, level in enumerate(self.levels):
            if not borrow:
                break
            self.levels[j] = level ^ borrow
            borrow &= ~level
        while self.levels and not self.levels[-1]:
            self.levels.pop()

    def held(self) -> int:
        """The pieces with at least one holder."""
        held = 0
        for level in self.levels:
            held |= level
        return held

    def at_least(self, power: int) -> int:
        """The pieces with at least ``2**power`` holders."""
        more = 0
        for level in self.levels[power:]:
            more |= level
        return more

    def once(self) -> int:
        """The pieces with exactly one holder."""
        if not self.levels:
            return 0
        more = 0
        for level in self.levels[1:]:
            more |= level
        return self.levels[0] & ~more


RARE_POWER = 6
"""A piece fewer than ``2**RARE_POWER`` peers hold is rare: the swarm keeps its holders by name, so a
hand-out finds them without walking the swarm. A piece leaves that record once twice as many hold it, and
comes back to it (one pass over the peers) only once fewer than ``2**RARE_POWER`` do again: a count moving
about one threshold costs no pass per announce."""
RARE_PIECES = 32
"""Most rare pieces one hand-out looks up the holders of."""


class RareHolders:
    """The holders of the rare pieces of a swarm (those fewer than ``2**power`` peers hold: RARE_POWER), kept
    as its peers' pieces change."""

    __slots__ = ("_holders", "kept", "power")

    def __init__(
        self, size: int, counts: PieceCounts, holders: Iterable[tuple[str, int]], power: int = RARE_POWER
    ) -> None:
        """The record of a swarm of ``size`` pieces whose holder counts are ``counts``, and whose peers and the
        pieces each holds are ``holders``."""
        self.power = power
        self.kept = 0
        """The pieces whose holders are kept: every rare one, and some held by up to twice as many."""
        self._holders: dict[int, set[str]] = {}
        self._take_back(((1 << size) - 1) & ~counts.at_least(power), holders)

    def update(
        self, peer_id: str, was: int, now: int, counts: PieceCounts, holders: Callable[[], Iterable[tuple[str, int]]]
    ) -> None:
        """``peer_id`` held ``was`` and holds ``now`` (``counts`` already count it so); ``holders`` lists every
        peer with the pieces it holds, for the pass that takes back pieces that became rare again."""
        for piece in iter_bits(now & ~was & self.kept):
            self._holders.setdefault(piece, set()).add(peer_id)
        for piece in iter_bits(was & ~now & self.kept):
            named = self._holders[piece]
            named.discard(peer_id)
            if not named:
                del self._holders[piece]
        gained, lost = now & ~was, was & ~now
        if gained:
            common = gained & self.kept & counts.at_least(self.power + 1)
            for piece in iter_bits(common):
                self._holders.pop(piece, None)
            self.kept &= ~common
        back = lost & ~self.kept & ~counts.at_least(self.power)
        if back:
            # ``peer_id`` holds none of them now, whatever ``holders`` still says of it.
            self._take_back(back, ((other, have) for other, have in holders() if other != peer_id))

    def _take_back(self, pieces: int, holders: Iterable[tuple[str, int]]) -> None:
        self.kept |= pieces
        for peer_id, have in holders:
            for piece in iter_bits(have & pieces):
                self._holders.setdefault(piece, set()).add(peer_id)

    def of(self, pieces: int, start: int) -> Iterator[str]:
        """The holders of the kept pieces of ``pieces``, from piece ``start`` on and round, RARE_PIECES pieces
        at most (a peer may come more than once)."""
        wanted = pieces & self.kept
        ordered = itertools.chain(iter_bits(wanted >> start << start), iter_bits(wanted & ((1 << start) - 1)))
        for piece in itertools.islice(ordered, RARE_PIECES):
            yield from self._holders.get(piece, ())


class Census:
    """Live peers and seeds summed over the swarms attached to it (:meth:`Swarm.attach`): changed with
    each peer a swarm takes, changes or drops, so reading it costs nothing however many swarms there are."""

    __slots__ = ("peers", "seeds")

    def __init__(self) -> None:
        self.peers = 0
        self.seeds = 0
        """Live peers on their swarm's current generation that hold every piece."""


class Swarm:
    """One task's live peers and origin leases, on the task's current generation and piece count."""

    def __init__(self, generation: int, size: int) -> None:
        self.generation = generation
        self.size = size
        self.peers: dict[str, PeerRecord] = {}
        self.leases: dict[int, Lease] = {}
        self.leased = 0
        """Bit mask of the leased pieces."""
        self.accused_by: dict[str, set[str]] = {}
        """host -> the live peers it accused."""
        self.index = HolderIndex()
        self.racks: Counter[tuple[str, str]] = Counter()
        """(site, rack) -> the live peers with those labels that are not banned: the racks that share the
        origin's pieces (core.scope_leases.origin_share)."""
        self.seeds = 0
        """Live peers on the current generation that hold every piece (banned or not)."""
        self.lease_scopes: Counter[tuple[str, str]] = Counter()
        """(site, rack) of a live peer's labels -> the live peers with those labels that hold origin leases
        (core.leases' scopes of lease holders: a rack, or the peers without a rack label of a site)."""
        self.ttl = 0.0
        """The TTL of a peer whose record has none: the latest :meth:`expire`'s."""
        self._counts = PieceCounts()
        self.rare: RareHolders | None = None
        """The holders of the rare pieces, kept while the swarm has more holders than a hand-out walks."""
        self.census: Census | None = None
        """Where this swarm's peers and seeds are counted with every other swarm's, if anywhere."""
        self._views: dict[str, PeerView] = {}  # peer -> its record's view: the hand-out's look-up, a dict's get
        self._own: dict[str, int] = {}  # peer -> bit mask of its leases
        self._addresses: dict[str, PeerAddress] = {}  # peer -> what hand-outs tell of it (address)
        self._peer_due: list[tuple[float, str]] = []  # (due, peer): heap
        self._peer_queued: dict[str, float] = {}
        self._lease_due: list[tuple[float, int]] = []  # (expires, piece): heap
        self._lease_queued: dict[int, float] = {}

    @classmethod
    def of(
        cls,
        peers: Iterable[PeerRecord],
        leases: Mapping[int, Lease],
        *,
        generation: int,
        size: int,
        now: float,
        ttl: float,
        asker: str,
    ) -> Swarm:
        """A swarm of the live ones of ``peers`` and of their live ``leases`` (a lease of a peer on another
        generation is not live), and of every lease of ``asker``, which its announce renews."""
        swarm = cls(generation, size)
        swarm.ttl = ttl
        for record in peers:
            if record.alive(now, ttl):
                swarm._set(record.view.peer_id, record)
        for lease in leases.values():
            holder = swarm.peers.get(lease.peer_id)
            live = holder is not None and holder.generation == generation and lease.expires > now
            if live or lease.peer_id == asker:
                swarm._put_lease(lease)
        return swarm

    # -- reading ----------------------------------------------------------------------------------------

    def counted(self, record: PeerRecord | None) -> int:
        """The pieces ``record`` counts as holding for others: none for a banned peer or one whose bitfield
        is of another generation or piece count."""
        if record is None or record.view.bad or record.generation != self.generation:
            return 0
        have = record.view.have
        return have.mask if have.size == self.size else 0

    def held(self) -> int:
        """The pieces some live, unbanned peer on the current generation holds."""
        return self._counts.held()

    def held_by_others(self, peer_id: str) -> int:
        """:meth:`held`, leaving out what only ``peer_id`` holds."""
        mine = self.counted(self.peers.get(peer_id))
        held = self._counts.held()
        return held & ~(mine & self._counts.once()) if mine else held

    def is_seed(self, record: PeerRecord | None) -> bool:
        """Whether ``record`` holds every piece of the current generation."""
        if record is None or record.generation != self.generation or not self.size:
            return False
        have = record.view.have
        return have.size == self.size and have.mask == (1 << self.size) - 1

    def downloading(self, peer_id: str) -> bool:
        """Whether a live peer other than ``peer_id`` lacks pieces, or holds an origin lease."""
        others = len(self.peers) - self.seeds
        if peer_id in self.peers and not self.is_seed(self.peers[peer_id]):
            others -= 1
        return others > 0 or bool(self.leased & ~self.own(peer_id))

    def own(self, peer_id: str) -> int:
        """Bit mask of the pieces leased to ``peer_id``."""
        return self._own.get(peer_id, 0)

    def lease_holders(self, asker: PeerView, checks: int = 0) -> int:
        """How many peers other than the asker hold origin leases in the asker's scope of origin lease holders
        (core.leases): the live peers whose labels are the asker's, the peers of its rack, or for a peer
        without a rack label those of its site (or of none) without one. A peer whose only leases are on
        ``checks`` (a bit mask: pieces under spot check) is not counted. Read from the scope's count, less the
        asker and the holders of the leases on ``checks`` that hold no other: every lease decision asks, and
        a pass over the holders would cost a look-up of each holder's record on each of them."""
        scope = (asker.site, asker.rack)
        count = self.lease_scopes.get(scope, 0)
        if not count:
            return 0
        if self._own.get(asker.peer_id) and _scope_of(self.peers.get(asker.peer_id)) == scope:
            count -= 1
        if checks & self.leased:
            checkers = {self.leases[piece].peer_id for piece in iter_bits(checks & self.leased)}
            checkers.discard(asker.peer_id)
            for peer_id in checkers:
                if not self._own[peer_id] & ~checks and _scope_of(self.peers.get(peer_id)) == scope:
                    count -= 1
        return count

    def address(self, view: PeerView) -> PeerAddress:
        """What a hand-out tells of ``view``: made once while the peer's address and labels stay the same,
        not once for each of the hand-outs that name it."""
        cached = self._addresses.get(view.peer_id)
        if (
            cached is None
            or cached.host != view.host
            or cached.port != view.port
            or cached.site != view.site
            or cached.rack != view.rack
        ):
            cached = PeerAddress(view.peer_id, view.host, view.port, view.site, view.rack)
            self._addresses[view.peer_id] = cached
        return cached

    def addresses(self, views: Iterable[PeerView]) -> tuple[PeerAddress, ...]:
        """:meth:`address` of each of ``views``, views of this swarm's peers (a hand-out's): their addresses
        are kept as their records change (``_set``), so naming a peer costs a look-up, not a comparison of
        its fields."""
        addresses = self._addresses
        return tuple([addresses[view.peer_id] for view in views])

    def view_of(self, peer_id: str) -> PeerView | None:
        return self._views.get(peer_id)

    def hand_out(self, asker: PeerView, limit: int, draw: float = 0.0) -> list[PeerView]:
        """The hand-out (core.handout) for ``asker``, a peer of the current generation, at bounded cost: the
        index's walk (its window drawn by ``draw``, uniform in [0, 1)), then, when a walk was cut short before
        it found ``limit`` peers, the holders of the rare pieces the asker lacks, nearest first."""
        walked, rare = self._hand_out(asker, limit, draw)
        return [holder.view for holder in walked] + rare

    def hand_out_addresses(self, asker: PeerView, limit: int, draw: float = 0.0) -> tuple[PeerAddress, ...]:
        """:meth:`addresses` of :meth:`hand_out`: the index's holders carry their addresses, so the peers a
        walk found are named without a look-up of each."""
        walked, rare = self._hand_out(asker, limit, draw)
        addresses = self._addresses
        return tuple([holder.address for holder in walked] + [addresses[view.peer_id] for view in rare])

    def _hand_out(self, asker: PeerView, limit: int, draw: float) -> tuple[list[IndexedHolder], list[PeerView]]:
        """:meth:`hand_out`'s peers: the holders its walk found, and the rare pieces' holders after them."""
        handed = self.index.walk(asker, limit, draw=draw)
        if len(handed) >= limit or self.rare is None:
            return handed, []  # full, or every group was walked whole
        lacking = ~asker.have.mask & ((1 << self.size) - 1)
        named = {holder.peer_id for holder in handed}
        named.add(asker.peer_id)
        rare: list[PeerView] = []
        for peer_id in self.rare.of(lacking, int(draw * self.size)):
            view = self.view_of(peer_id)
            if peer_id in named or view is None:
                continue
            named.add(peer_id)
            rare.append(view)
            if len(handed) + len(rare) == limit:
                break
        rare.sort(key=lambda view: locality_tier(asker, view))
        return handed, rare

    def _holdings(self) -> Iterator[tuple[str, int]]:
        """Every live peer with the pieces it counts as holding (:meth:`counted`)."""
        for peer_id, record in self.peers.items():
            yield peer_id, self.counted(record)

    # -- changing ---------------------------------------------------------------------------------------

    def attach(self, census: Census) -> None:
        """Count this swarm's peers and seeds in ``census`` from now on (its current ones included)."""
        self.detach()
        census.peers += len(self.peers)
        census.seeds += self.seeds
        self.census = census

    def detach(self) -> None:
        """Take this swarm's peers and seeds out of its census (the swarm leaves the tracker's memory)."""
        census = self.census
        if census is not None:
            census.peers -= len(self.peers)
            census.seeds -= self.seeds
            self.census = None

    def expire(self, now: float, ttl: float) -> int:
        """Forget peers unheard of for their TTL (``ttl`` for a record without one), and their leases, and
        leases past their expiry; return how many peers."""
        gone = 0
        self.ttl = ttl
        due = self._peer_due
        while due and due[0][0] <= now:
            when, peer_id = heapq.heappop(due)
            if self._peer_queued.get(peer_id) != when:
                continue  # an earlier entry of this peer was pushed after this one
            del self._peer_queued[peer_id]
            record = self.peers.get(peer_id)
            if record is None:
                continue
            if not record.alive(now, ttl):
                self._set(peer_id, None)
                gone += 1
            else:
                self._queue_peer(peer_id, self._due(record))
        lease_due = self._lease_due
        while lease_due and lease_due[0][0] <= now:
            expires, piece = heapq.heappop(lease_due)
            if self._lease_queued.get(piece) != expires:
                continue
            del self._lease_queued[piece]
            lease = self.leases.get(piece)
            if lease is None:
                continue
            if lease.expires <= now:
                self._drop_lease(piece)
            else:
                self._queue_lease(piece, lease.expires)
        return gone

    def apply(self, outcome: AnnounceOutcome) -> None:
        """Take a decision's soft changes, in the order core.announce_values.AnnounceOutcome lists them."""
        task = outcome.task
        size = task.manifest.piece_count if task.manifest else 0
        if outcome.new_generation or task.generation != self.generation or size != self.size:
            self._retarget(task.generation, size)
        if outcome.remove_peer:
            self._set(outcome.remove_peer, None)
        if outcome.peer is not None:
            self._set(outcome.peer.view.peer_id, outcome.peer)
        for peer_id, have in outcome.unheld.items():
            self._change(peer_id, have=have)
        for peer_id, accusers in outcome.accusations.items():
            self._change(peer_id, accusers=accusers)
        for peer_id in outcome.mark_bad:
            self._change(peer_id, bad=True)
        for piece in outcome.drop_leases:
            self._drop_lease(piece)
        for lease in outcome.put_leases:
            self._put_lease(lease)

    def give_back(self, lease: Lease) -> None:
        """Put a lease back (its holder's report failed to reach the database)."""
        if lease.peer_id in self.peers and lease.piece < self.size:
            self._put_lease(lease)

    def retain(self, generation: int, size: int, hashed: int) -> None:
        """Keep only what the durable facts read back (after a failed write) bear out: a generation or piece
        count of their own starts afresh, and pieces whose hash is not held leave every bitfield."""
        if (generation, size) != (self.generation, self.size):
            self._retarget(generation, size)
            return
        for peer_id, record in list(self.peers.items()):
            have = record.view.have
            if have.mask & ~hashed:
                self._change(peer_id, have=Bitfield.from_mask(have.size, have.mask & hashed))

    def _retarget(self, generation: int, size: int) -> None:
        """A new generation or piece count: every lease and every bitfield of the old one goes."""
        self.generation, self.size = generation, size
        for piece in list(self.leases):
            self._drop_lease(piece)
        self._counts = PieceCounts()
        self.rare = None
        self.index = HolderIndex()
        if self.census is not None:
            self.census.seeds -= self.seeds
        self.seeds = 0  # every bitfield below is emptied
        empty = Bitfield(0)
        for peer_id, record in self.peers.items():
            if record.view.have.size or record.view.have.mask:
                record = self.peers[peer_id] = replace(record, view=replace(record.view, have=empty))
                self._views[peer_id] = record.view

    def _change(self, peer_id: str, **view_fields: object) -> None:
        record = self.peers.get(peer_id)
        if record is not None:
            self._set(peer_id, replace(record, view=replace(record.view, **view_fields)))  # type: ignore[arg-type]

    def _set(self, peer_id: str, record: PeerRecord | None) -> None:
        old = self.peers.get(peer_id)
        self._account(peer_id, old, record, None if record is None else self.address(record.view))
        if record is None:
            self.peers.pop(peer_id, None)
            self._views.pop(peer_id, None)
            self._addresses.pop(peer_id, None)
            self._keep_rare_holders()
            for piece in iter_bits(self._own.get(peer_id, 0)):
                self._drop_lease(piece)
            return
        self.peers[peer_id] = record
        self._views[peer_id] = record.view
        self._keep_rare_holders()
        queued = self._peer_queued.get(peer_id)
        due = self._due(record)
        if queued is None or due < queued:
            self._queue_peer(peer_id, due)

    def _due(self, record: PeerRecord) -> float:
        """When ``record`` falls due for a look (at the latest when it expires; sooner is harmless: the
        look queues it again)."""
        return record.last_seen + (record.ttl or self.ttl)

    def _account(
        self, peer_id: str, old: PeerRecord | None, new: PeerRecord | None, address: PeerAddress | None
    ) -> None:
        """Move the aggregates from ``old`` to ``new`` (whose address is ``address``, kept current for
        :meth:`addresses` and the index)."""
        was, now = self.counted(old), self.counted(new)
        seeds = self.is_seed(new) - self.is_seed(old)
        self.seeds += seeds
        census = self.census
        if census is not None:
            census.seeds += seeds
            census.peers += (new is not None) - (old is not None)
        if was != now:
            if was & ~now:
                self._counts.remove(was & ~now)
            if now & ~was:
                self._counts.add(now & ~was)
            if self.rare is not None:
                self.rare.update(peer_id, was, now, self._counts, self._holdings)
        if now:
            assert new is not None and address is not None
            self.index.put(new.view, now, address)
        else:
            self.index.discard(peer_id)
        if self._own.get(peer_id):
            scope_before, scope_after = _scope_of(old), _scope_of(new)
            if scope_before != scope_after:
                if scope_before is not None:
                    self._uncount_holder(scope_before)
                if scope_after is not None:
                    self.lease_scopes[scope_after] += 1
        rack_before, rack_after = _rack_of(old), _rack_of(new)
        if rack_before != rack_after:
            if rack_before is not None:
                self.racks[rack_before] -= 1
                if not self.racks[rack_before]:
                    del self.racks[rack_before]
            if rack_after is not None:
                self.racks[rack_after] += 1
        before = old.view.accusers if old is not None else frozenset()
        after = new.view.accusers if new is not None else frozenset()
        if before != after:
            for host in before - after:
                accused = self.accused_by.get(host)
                if accused is not None:
                    accused.discard(peer_id)
                    if not accused:
                        del self.accused_by[host]
            for host in after - before:
                self.accused_by.setdefault(host, set()).add(peer_id)

    def _keep_rare_holders(self) -> None:
        """Keep the rare pieces' holders while a hand-out's walk may be cut short (more holders than
        WALK_BUDGET), and not in a smaller swarm, where they would cost a name per piece each peer holds;
        forget them only once the swarm is down to half that, so a swarm about that size does not build
        them again and again."""
        holders = len(self.index)
        if self.rare is None and holders > WALK_BUDGET:
            self.rare = RareHolders(self.size, self._counts, self._holdings())
        elif self.rare is not None and holders < WALK_BUDGET // 2:
            self.rare = None

    def _queue_peer(self, peer_id: str, due: float) -> None:
        self._peer_queued[peer_id] = due
        heapq.heappush(self._peer_due, (due, peer_id))

    def _queue_lease(self, piece: int, expires: float) -> None:
        self._lease_queued[piece] = expires
        heapq.heappush(self._lease_due, (expires, piece))

    def _put_lease(self, lease: Lease) -> None:
        piece, bit = lease.piece, 1 << lease.piece
        old = self.leases.get(piece)
        if old is not None and old.peer_id != lease.peer_id:
            self._take_own(old.peer_id, bit)
        self.leases[piece] = lease
        self.leased |= bit
        mine = self._own.get(lease.peer_id, 0)
        self._own[lease.peer_id] = mine | bit
        if not mine and (scope := _scope_of(self.peers.get(lease.peer_id))) is not None:
            self.lease_scopes[scope] += 1  # a new holder (a peer's leases may precede its record: Swarm.of)
        queued = self._lease_queued.get(piece)
        if queued is None or lease.expires < queued:
            self._queue_lease(piece, lease.expires)

    def _drop_lease(self, piece: int) -> None:
        lease = self.leases.pop(piece, None)
        if lease is None:
            return
        bit = 1 << piece
        self.leased &= ~bit
        self._take_own(lease.peer_id, bit)

    def _take_own(self, peer_id: str, bit: int) -> None:
        mine = self._own.get(peer_id, 0) & ~bit
        if mine:
            self._own[peer_id] = mine
        elif self._own.pop(peer_id, None) is not None and (scope := _scope_of(self.peers.get(peer_id))) is not None:
            self._uncount_holder(scope)

    def _uncount_holder(self, scope: tuple[str, str]) -> None:
        left = self.lease_scopes[scope] - 1
        if left:
            self.lease_scopes[scope] = left
        else:
            del self.lease_scopes[scope]


def _scope_of(record: PeerRecord | None) -> tuple[str, str] | None:
    """The (site, rack) labels a live peer's leases count under (core.leases' scopes of lease holders)."""
    return None if record is None else (record.view.site, record.view.rack)


def _rack_of(record: PeerRecord | None) -> tuple[str, str] | None:
    """The (site, rack) a peer counts in for the origin's share: a live peer with a rack label, not banned."""
    if record is None or not record.view.rack or record.view.bad:
        return None
    return (record.view.site, record.view.rack)
