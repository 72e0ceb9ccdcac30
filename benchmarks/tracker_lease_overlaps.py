"""The origin leases that ``tracker_cluster_load.py``'s replies grant, and the overlaps among them: a piece
leased to one peer while another peer's lease on it was live by the tracker's own rules. Not run on its own.

By those rules (core.leases, core.announce) a holder's lease on a piece ends when the tracker decides the
holder's announce that reports the piece done, or when the holder falls silent for its TTL. The generator
sees replies in the order they arrive, not in the order the tracker decided them: an announce that reports a
new hash is answered only once the hash has committed, so another peer's announce decided after it is
often answered before it, and a report whose reply was lost (timed out) may have been decided all the same.
A piece whose report was decided is held by its reporter, and the tracker leases it again only for a spot
check (core.audit: one more fetch from the origin, on another host, by design). Such a grant, seen before
the report's reply, is not an overlap.

So a grant of a piece whose holder has a report of that piece in flight (sent, not answered 200 yet) is
judged by the report, once it is answered: taken (not in ``rejected``), the holder's lease was live when
the tracker decided the report, so the grant came after it (a grant before it would have moved the lease
to the other peer, and the report would have been rejected); rejected, the holder had lost its lease while
it was live by our count: an overlap. Any other grant of a piece whose holder is live (heard from within
LIVE_SHARE of the TTL, since the tracker's clock and ours may disagree near it) and has not reported it is
an overlap at once.

The grants are told apart by who granted the two: one tracker (the decider: the owner a forwarded reply
names, else the tracker asked), or two, the second having taken the task over without the first one's soft
state: it learns a lease in flight from its holder's next announce (``fetching``, or ``done`` once the piece
is in, which it takes as a claim during its grace: core.announce), so the grants across a move count as
"across owners", with examples that say how long the holder had been silent and how many of its announces
were refused meanwhile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

LIVE_SHARE = 0.8
"""A holder heard from within this share of the peer TTL is live: near the TTL, the tracker's clock and the
generator's may disagree on whether its lease lapsed."""


class Grant(NamedTuple):
    peer_id: str
    when: float
    """When the reply that granted it arrived (the generator's clock)."""
    decider: str
    """The tracker that granted it."""


class Waiting(NamedTuple):
    """A grant of a piece whose holder's report of it was in flight, judged when the report is answered."""

    task_id: str
    piece: int
    holder: Grant
    grant: Grant


@dataclass
class Leases:
    """The grants seen per task (piece -> its latest grant), the pieces each peer has reported in announces
    not answered yet, and the overlaps counted (module docstring)."""

    peer_ttl: float
    held: dict[str, dict[int, Grant]] = field(default_factory=lambda: defaultdict(dict))
    last_ok: dict[str, float] = field(default_factory=dict)
    reporting: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """peer -> the pieces it reported in announces that have not been answered 200 (kept across failures:
    the simulated peer reports them again, as the download engine does)"""
    waiting: dict[tuple[str, int], list[Waiting]] = field(default_factory=lambda: defaultdict(list))
    """(holder, piece) -> the grants waiting on that holder's report of the piece"""
    duplicates: int = 0
    """Overlaps of two grants by one tracker."""
    across_owners: int = 0
    """Overlaps of grants by two trackers: the task moved between them (module docstring)."""
    settled: int = 0
    """Grants seen while the holder's report was in flight, found to follow it (spot checks)."""
    examples: list[str] = field(default_factory=list)
    across_refused: int = 0
    """Of ``across_owners``: those whose holder had an announce refused (no 200) since it was last answered;
    the others' holders were only silent between their turns."""
    across_examples: list[str] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)
    """peer -> its announces refused (no 200) since its last one answered"""

    def refused(self, peer_id: str) -> None:
        """An announce of ``peer_id`` got no 200."""
        self.refusals[peer_id] = self.refusals.get(peer_id, 0) + 1

    def sent(self, peer_id: str, done: Iterable[int]) -> None:
        """An announce of ``peer_id`` that reports ``done`` went out."""
        self.reporting[peer_id].update(done)

    @property
    def undecided(self) -> int:
        """Grants still waiting on a report that has not been answered."""
        return sum(len(w) for w in self.waiting.values())

    def answered(
        self,
        task_id: str,
        peer_id: str,
        leases: Iterable[int],
        sent: float,
        now: float,
        decider: str,
        *,
        done: Iterable[int] = (),
        rejected: Iterable[int] = (),
    ) -> None:
        """A 200 to ``peer_id``'s announce scheduled at ``sent`` that reported ``done``, arriving at ``now`` from
        ``decider``: the leases it holds after it (``leases``; empty for a peer not downloading) and the reports
        it did not take (``rejected``)."""
        held = self.held[task_id]
        done = set(done)
        refused = set(rejected)
        self.reporting[peer_id] -= done
        if not self.reporting[peer_id]:
            del self.reporting[peer_id]
        for piece in done:
            for wait in self.waiting.pop((peer_id, piece), ()):
                if piece in refused:
                    self._overlap(wait.task_id, wait.piece, wait.holder, wait.grant, now, "its report rejected")
                else:
                    self.settled += 1
        # Every lease granted before this announce was sent is reported by it (or was, by one that failed: its
        # pieces are in this one's bitfield), so the tracker knows who holds those pieces now; and so is one
        # granted after its due time but before it was built, which its ``done`` names.
        for piece in [p for p, g in held.items() if g.peer_id == peer_id and (g.when <= sent or p in done)]:
            del held[piece]
        grant = Grant(peer_id, now, decider)
        for piece in leases:
            found = held.get(piece)
            if found is not None and found.peer_id != peer_id and self._live(found.peer_id, now):
                if piece in self.reporting.get(found.peer_id, ()):
                    self.waiting[(found.peer_id, piece)].append(Waiting(task_id, piece, found, grant))
                else:
                    self._overlap(task_id, piece, found, grant, now, "its holder silent")
            held[piece] = grant
        self.last_ok[peer_id] = now
        self.refusals.pop(peer_id, None)

    def _live(self, peer_id: str, now: float) -> bool:
        return now - self.last_ok[peer_id] < LIVE_SHARE * self.peer_ttl

    def _overlap(self, task_id: str, piece: int, first: Grant, second: Grant, now: float, why: str) -> None:
        """Count an overlap of ``second`` with ``first``, found at ``now`` (``why``: by the holder's silence, or
        by its report's rejection)."""
        pair = f"task {task_id[:12]} piece {piece}: {first.peer_id[:8]} and {second.peer_id[:8]}"
        if first.decider != second.decider:
            self.across_owners += 1
            refusals = self.refusals.get(first.peer_id, 0)
            self.across_refused += refusals > 0
            if len(self.across_examples) < 5:
                silent = now - self.last_ok[first.peer_id]
                self.across_examples.append(
                    f"{pair} {second.when - first.when:.1f} s later ({why}; last answered {silent:.1f} s before, "
                    f"{refusals} announces refused since)"
                )
            return
        self.duplicates += 1
        if len(self.examples) < 3:
            self.examples.append(pair)
