"""Bytes by scope, summed over a task's peers: how locality shows in the tracker's task view and metrics.

Each announce carries the peer's totals so far (AnnounceRequest.received); the tally adds what grew since
that peer's previous announce, so a task's figures count every peer once, including the peers that have
left. A total that went back (a peer id reused by a new download) counts whole. Soft state: a restarted
tracker starts again from zero.

Rules, and why:

- **Bounded by the live peers and the known tasks.** A peer's last totals are dropped by
  :meth:`ScopeTally.forget_before` once it has not been heard from (its bytes stay in the task's
  totals); a task's whole entry is dropped by :meth:`ScopeTally.forget` when the tracker forgets the task
  (it left the database after its retention, or moved to another tracker), so the tally never holds more
  tasks than the tracker knows.
- **The grand totals never go down.** They are Prometheus counters (``shoal_tracker_received_bytes_total``)
  and the dashboard's throughput: they are added to as each announce is recorded, and keep the bytes of the
  tasks forgotten since. Reading them costs the same with ten tasks or a million.
- **Forgetting costs what is forgotten.** The peers' entries are queued in the order they were last heard
  from, so a sweep pops the old ones off the front instead of walking every task. A clock that steps back
  only keeps an entry a little longer than its cutoff.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from shoal.core.messages import ScopeBytes


@dataclass(slots=True)
class _TaskTally:
    totals: ScopeBytes = field(default_factory=ScopeBytes)
    last: dict[str, ScopeBytes] = field(default_factory=dict)
    """peer id -> its totals as last announced."""


class ScopeTally:
    def __init__(self) -> None:
        self._tasks: dict[str, _TaskTally] = {}
        self._grand = ScopeBytes()
        self._heard: OrderedDict[tuple[str, str], float] = OrderedDict()
        """(task id, peer id) -> when its last totals were recorded, least recently heard from first."""

    def __len__(self) -> int:
        """Tasks with an entry."""
        return len(self._tasks)

    def record(self, task_id: str, peer_id: str, received: ScopeBytes, now: float, *, leaving: bool = False) -> None:
        """A peer's announce of its totals; ``leaving``: its last one (a stopped announce)."""
        tally = self._tasks.get(task_id)
        if tally is None:
            tally = self._tasks[task_id] = _TaskTally()
        previous = tally.last.get(peer_id)
        grown = received if previous is None else received.since(previous)
        if grown != _NOTHING:
            tally.totals += grown
            self._grand += grown
        key = (task_id, peer_id)
        if leaving:
            tally.last.pop(peer_id, None)
            self._heard.pop(key, None)
        else:
            tally.last[peer_id] = received
            self._heard[key] = now
            self._heard.move_to_end(key)

    def totals(self, task_id: str) -> ScopeBytes:
        tally = self._tasks.get(task_id)
        return _NOTHING if tally is None else tally.totals

    def grand_totals(self) -> ScopeBytes:
        """What the tracker's peers took in, by scope, since it started: every task's totals added up,
        those of the tasks forgotten since included."""
        return self._grand

    def forget_before(self, cutoff: float) -> None:
        """Drop the entries of peers last heard of before ``cutoff`` (the tracker's peer TTL ago)."""
        heard = self._heard
        while heard:
            key, seen = next(iter(heard.items()))
            if seen >= cutoff:
                return
            del heard[key]
            tally = self._tasks.get(key[0])
            if tally is not None:
                tally.last.pop(key[1], None)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop these tasks' entries (the tracker forgot the tasks); their bytes stay in the grand totals."""
        for task_id in task_ids:
            tally = self._tasks.pop(task_id, None)
            if tally is not None:
                for peer_id in tally.last:
                    self._heard.pop((task_id, peer_id), None)


_NOTHING = ScopeBytes()
