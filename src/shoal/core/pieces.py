"""A download's pieces: which are on disk, where each came from, which hash vouches for it, and which may be
offered to other peers. Values in, changes out: the engine (peer.engine) carries the changes out on its
piece server and its whole-file hashes.

A piece is offered (served) only when a hash that peers verify it against agrees with it: the tracker's,
or the one a content task's id commits to. The rules:

- A piece from the origin under our own lease is reported to the tracker (``unreported`` until it answers);
  the tracker takes the hash only from the lease's live holder, and it is offered once it does. One the
  tracker did not take stays on disk, ``withheld``, until a hash look-up shows the tracker's hash is ours,
  or until the tracker leases it to us again: then it is reported again (:meth:`PieceBook.leased`). Our
  lease had lapsed (the tracker counted us gone while it stalled, or restarted), and a lease on a piece we
  hold is one nobody else fetches: the tracker waits for our report, and we would wait for its hash.
- A piece from a peer was checked against the tracker's hash before it was written, and is offered at once.
- A piece an earlier run verified (``resumed``) is reported like an origin piece, and offered only once the
  tracker's hash agrees.
- A revoked hash (core.audit: a spot check caught its reporter) drops every copy that was verified against
  it alone (from a peer, or resumed); our own origin bytes stay, withheld until a new hash matches them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest


@dataclass(slots=True)
class Changes:
    """What the engine must carry out after a change to the book, in this order."""

    written: list[int] = field(default_factory=list)
    """Now on disk and verified (the whole-file hashes may read on)."""
    dropped: list[tuple[int, str]] = field(default_factory=list)
    """(piece, why): no longer ours; it is fetched again, and is not offered."""
    serve: list[int] = field(default_factory=list)
    serve_at_once: list[int] = field(default_factory=list)
    """Offered to peers with no have-stream delay: only we hold them (our origin pieces)."""
    unserve: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    """Our hashes the tracker did not take: kept on disk, not offered."""
    want_hashes: bool = False
    """A hash look-up may show the tracker's hash is one we hold."""
    report: bool = False
    """A new origin piece hash for the tracker: tell it at once."""
    restart: bool = False
    """Bytes that do not match what the task's id commits to: the origin serves another file now."""


@dataclass(slots=True)
class PieceBook:
    manifest: Manifest
    written: dict[int, str] = field(default_factory=dict)
    """Verified (or fetched from the origin) and on disk, with their hashes."""
    sources: dict[int, str | None] = field(default_factory=dict)
    """Who supplied each piece written: a peer's id, or None for the origin."""
    unreported: dict[int, str] = field(default_factory=dict)
    """Fetched from the origin (or resumed), hash not yet taken by the tracker."""
    resumed: set[int] = field(default_factory=set)
    """Pieces an earlier run verified, until the tracker confirms them."""
    withheld: set[int] = field(default_factory=set)
    """On disk but not offered: the tracker did not take our hash, or holds another."""
    refused: set[int] = field(default_factory=set)
    """Of ``withheld``: our origin bytes whose hash the tracker did not take (no other hash known yet)."""
    content_hashes: dict[int, str] = field(default_factory=dict)
    """A content task's every hash, checked against its id."""
    hashes: dict[int, str] = field(default_factory=dict)
    """The hashes peers' pieces are checked against."""
    hash_seq: int = 0
    leases: set[int] = field(default_factory=set)
    fetching: set[int] = field(default_factory=set)
    """Pieces of our origin runs still to come (told to the tracker)."""
    on_disk: Bitfield = field(init=False)
    hashed: Bitfield = field(init=False)
    inflight: Bitfield = field(init=False)

    def __post_init__(self) -> None:
        size = self.manifest.piece_count
        self.on_disk = Bitfield.of(size, self.written)
        self.hashed = Bitfield.of(size, self.hashes)
        self.inflight = Bitfield(size)

    @property
    def complete(self) -> bool:
        return len(self.written) == self.manifest.piece_count

    @property
    def done_bytes(self) -> int:
        return sum(self.manifest.piece_size(i) for i in self.written)

    def needed(self) -> int:
        """Bit mask of the pieces neither on disk nor being fetched."""
        return ~(self.on_disk.mask | self.inflight.mask) & ((1 << self.manifest.piece_count) - 1)

    def start(self, run: list[int]) -> None:
        for index in run:
            self.inflight.add(index)

    def learn_hashes(self, hashes: dict[int, str]) -> None:
        self.hashes.update(hashes)
        for index in hashes:
            self.hashed.add(index)

    def resume(self, hashes: dict[int, str], changes: Changes, *, direct: bool) -> None:
        """Pieces an earlier run verified. Straight from the origin they are offered at once; in a swarm
        they are reported like origin pieces, and offered only once the tracker takes them."""
        for index, digest in hashes.items():
            self._write(index, digest, changes)
        if direct:
            changes.serve.extend(self.written)
        else:
            self.unreported = dict(hashes)
            self.resumed = set(hashes)

    def origin_piece(self, index: int, digest: str, *, direct: bool, refetching: bool) -> Changes:
        changes = Changes()
        self.inflight.discard(index)
        self.fetching.discard(index)
        if self.content_hashes and self.content_hashes.get(index) != digest:
            changes.restart = True
            return changes
        self._write(index, digest, changes)
        self.sources[index] = None
        if direct or index in self.content_hashes:
            changes.serve.append(index)  # direct, or checked against a hash the task's id commits to
        elif refetching:
            # Fetched under no lease after a failed whole-file check, so not ours to report; offered only
            # when the tracker's hash agrees, which peers verify it against.
            if self.hashes.get(index) == digest:
                changes.serve.append(index)
            else:
                self.withheld.add(index)
        else:
            self.unreported[index] = digest
            changes.report = True
        return changes

    def peer_piece(self, peer_id: str, index: int, digest: str) -> Changes:
        changes = Changes()
        self.inflight.discard(index)
        if self.hashes.get(index) != digest:
            return changes  # its hash was revoked while it was written: fetched again (over it) when one comes
        self._write(index, digest, changes)
        self.sources[index] = peer_id
        changes.serve.append(index)
        return changes

    def hashes_arrived(self, seq: int, hashes: dict[int, str], revoked: tuple[int, ...]) -> Changes:
        changes = self.revoke(revoked)
        self.learn_hashes(hashes)
        self.hash_seq = max(self.hash_seq, seq)
        for index, digest in hashes.items():
            self.refused.discard(index)  # the tracker holds a hash now: ours is served or kept back by it
            if index in self.withheld and self.written.get(index) == digest:
                self.withheld.discard(index)
                self.resumed.discard(index)
                changes.serve.append(index)
            elif index in self.withheld and index not in self.resumed:
                pass  # our own origin bytes; another lease holder's report differs: keep ours, unserved
            elif index in self.written and self.written[index] != digest and index not in self.unreported:
                self.drop(index, "does not match the tracker's hash", changes)
        return changes

    def revoke(self, pieces: tuple[int, ...]) -> Changes:
        """The tracker dropped these pieces' hashes (core.audit). A copy taken from a peer (or resumed) was
        verified against that hash only, so it is fetched again; our own origin bytes stay, offered again
        only once a new hash matches them."""
        changes = Changes()
        for index in pieces:
            self.hashes.pop(index, None)
            self.hashed.discard(index)
            if index not in self.written:
                continue
            if self.sources.get(index, "resumed") is not None:
                self.drop(index, "came from a peer and its hash was revoked", changes)
            else:
                changes.unserve.append(index)
                self.withheld.add(index)
        return changes

    def confirm(self, reported: dict[int, str], rejected: tuple[int, ...]) -> Changes:
        """The tracker answered a report of ``reported``: the pieces it took are offered at once (only we
        hold them); the ones it did not take stay on disk but are never served, unless a hash look-up
        shows the tracker's hash is ours (a lease that lapsed while another peer fetched the same bytes)."""
        changes = Changes()
        refused = set(rejected)
        for index, digest in reported.items():
            self.unreported.pop(index, None)
            if index in refused:
                self.withheld.add(index)
                self.refused.add(index)
                changes.refused.append(index)
                changes.want_hashes = True
                continue
            self.resumed.discard(index)
            self.withheld.discard(index)  # a piece reported again under a new lease (see leased)
            self.learn_hashes({index: digest})
            changes.serve_at_once.append(index)
        return changes

    def leased(self, leases: Iterable[int]) -> Changes:
        """The tracker's leases on us, from an announce's reply. A piece among them whose hash the tracker
        did not take from us (our earlier lease on it had lapsed) is reported again, now under a live lease:
        the tracker leased it to us to fetch, and its bytes are on our disk already."""
        self.leases = set(leases)
        changes = Changes()
        for index in sorted(self.refused & self.leases):
            self.refused.discard(index)
            self.unreported[index] = self.written[index]
            changes.report = True
        return changes

    def forget(self, pieces: Iterable[int]) -> Changes:
        """Pieces to fetch again straight from the origin (a failed whole-file check suspects them): off the
        disk as far as we know, not offered, and a resumed one's old hash never reported."""
        changes = Changes()
        for index in pieces:
            del self.written[index]
            self.sources.pop(index, None)
            self.unreported.pop(index, None)
            self.refused.discard(index)
            self.on_disk.discard(index)
            changes.unserve.append(index)
        return changes

    def drop(self, index: int, why: str, changes: Changes) -> None:
        """Forget a piece on disk (it will be fetched again) and stop offering it."""
        self.withheld.discard(index)
        self.refused.discard(index)
        self.resumed.discard(index)
        self.sources.pop(index, None)
        del self.written[index]
        self.on_disk.discard(index)
        changes.dropped.append((index, why))

    def _write(self, index: int, digest: str, changes: Changes) -> None:
        self.written[index] = digest
        self.on_disk.add(index)
        changes.written.append(index)
