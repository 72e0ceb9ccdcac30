"""Bytes by scope, summed over a task's peers: how locality shows in the tracker's task view.

Each announce carries the peer's totals so far (AnnounceRequest.received); the tally adds what grew since
that peer's previous announce, so a task's figures count every peer once, including the peers that have
left. A total that went back (a peer id reused by a new download) counts whole. Entries of peers not heard
from are dropped by :meth:`ScopeTally.forget_before`, so memory is bounded by the live peers; their bytes
stay in the task's totals. Soft state: a restarted tracker starts again from zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.core.messages import ScopeBytes


@dataclass(slots=True)
class _TaskTally:
    totals: ScopeBytes = field(default_factory=ScopeBytes)
    last: dict[str, tuple[ScopeBytes, float]] = field(default_factory=dict)
    """peer id -> its totals as last announced, and when."""


class ScopeTally:
    def __init__(self) -> None:
        self._tasks: dict[str, _TaskTally] = {}

    def record(self, task_id: str, peer_id: str, received: ScopeBytes, now: float, *, leaving: bool = False) -> None:
        """A peer's announce of its totals; ``leaving``: its last one (a stopped announce)."""
        tally = self._tasks.setdefault(task_id, _TaskTally())
        previous = tally.last.get(peer_id)
        tally.totals += received if previous is None else received.since(previous[0])
        if leaving:
            tally.last.pop(peer_id, None)
        else:
            tally.last[peer_id] = (received, now)

    def totals(self, task_id: str) -> ScopeBytes:
        tally = self._tasks.get(task_id)
        return ScopeBytes() if tally is None else tally.totals

    def grand_totals(self) -> ScopeBytes:
        """Every task's totals summed: they only grow while the tracker runs (a task's stay when it leaves)."""
        return sum((tally.totals for tally in self._tasks.values()), ScopeBytes())

    def forget_before(self, cutoff: float) -> None:
        """Drop the entries of peers last heard of before ``cutoff`` (the tracker's peer TTL ago)."""
        for tally in self._tasks.values():
            for peer_id in [p for p, (_, seen) in tally.last.items() if seen < cutoff]:
                del tally.last[peer_id]
