"""The fleet's links as a fluid model: flows share each capped link max-min fairly.

A flow is one transfer (a run of pieces from the origin or from a peer) and crosses an ordered set of links:
the sender's NIC out, its rack's and site's uplinks out, the receiver's site's and rack's uplinks in, the
receiver's NIC in (only those that exist; the origin's link replaces the sender's NIC). A link has a
capacity in bytes per second; uncapped links are simply left out of a flow's path.

Max-min fairness is kept as the fixed point of per-link water levels: a link's level is the rate at which
it is full when each of its flows asks for the least level of its *other* links (its demand), and a flow
runs at the least level on its path. Recomputing every level at every event would cost the whole fleet per
piece; instead an event recomputes the links it touched, and a level that moved makes the other links of
that link's flows dirty, in a worklist, until levels move less than ``EPSILON`` (relative). The result is
the max-min allocation up to that tolerance, at a cost that follows the flows an event actually disturbs.
Hosts' NICs (``spreads`` False) are recomputed when touched but do not spread their moves: with thousands
of hosts trading inside racks, that spreading was most of a run's time, and the shared links it skips
are the ones the figures are about.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

EPSILON = 0.05
"""A level that moves less than this share of itself does not disturb its neighbours."""
MAX_RELAX = 20_000
"""Links recomputed per event at most; what is left stays dirty for the next event."""


class Link:
    """One direction of a capped link, and the flows crossing it now."""

    __slots__ = ("capacity", "carried", "flows", "level", "name", "spreads")

    def __init__(self, name: str, capacity: float, *, spreads: bool = True) -> None:
        if not capacity > 0:
            raise ValueError(f"link {name}: capacity must be positive, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.flows: dict[Flow, None] = {}  # an ordered set: runs repeat exactly
        self.level = capacity
        self.carried = 0.0
        """Bytes that crossed the link so far (updated as flows settle)."""
        self.spreads = spreads
        """Whether a move of its level makes its flows' other links dirty. A host's NIC does not: its flows'
        other links are recomputed when their own flows come and go, which keeps an event's work to the
        links it touched and the shared links (origin, uplinks) its change reaches."""

    def __repr__(self) -> str:
        return f"Link({self.name}, {len(self.flows)} flows, level {self.level:.3g})"


@dataclass(eq=False, slots=True)
class Flow:
    """One transfer: ``size`` bytes over ``links``; ``tag`` is its owner's (what the bytes are)."""

    links: tuple[Link, ...]
    size: float
    rate: float = 0.0
    left: float = 0.0
    since: float = 0.0
    """When ``left`` was last brought up to date."""
    version: int = 0
    """Bumped at each rate change: a scheduled completion of an older version is void."""
    tag: object = None


def waterfill(link: Link) -> float:
    """The level at which ``link`` is full given its flows' demands (inf: it limits none of them)."""
    flows = link.flows
    if not flows:
        return link.capacity
    demands = []
    for flow in flows:
        demand = math.inf
        for other in flow.links:
            if other is not link and other.level < demand:
                demand = other.level
        demands.append(demand)
    demands.sort()
    left, count = link.capacity, len(demands)
    for demand in demands:
        share = left / count
        if demand >= share:
            return share
        left -= demand
        count -= 1
    return math.inf


class Network:
    """The links and flows, with a scheduler callback for each flow's next completion."""

    def __init__(self, schedule: Callable[[float, Flow], None]) -> None:
        self.schedule = schedule
        """Called with (time, flow) whenever a flow's completion time changes (its version identifies it)."""
        self.dirty: dict[Link, None] = {}
        self.flows = 0
        self.recomputed = 0

    def start(self, flow: Flow, now: float) -> None:
        if not flow.links:
            raise ValueError("a flow crosses at least one capped link")
        flow.left, flow.since = flow.size, now
        for link in flow.links:
            link.flows[flow] = None
        self.flows += 1
        self.relax(flow.links, now)

    def finish(self, flow: Flow, now: float) -> None:
        """The flow's bytes are through (its completion fired): take it off its links."""
        self._settle(flow, now)
        for link in flow.links:
            link.flows.pop(flow, None)
        flow.version += 1
        self.flows -= 1
        self.relax(flow.links, now)

    def cancel(self, flow: Flow, now: float) -> None:
        self.finish(flow, now)

    def resize(self, flow: Flow, now: float, size: float) -> None:
        """Give a running flow ``size`` more bytes to carry (its next piece), at its current rate."""
        self._settle(flow, now)
        flow.left += size
        flow.size += size
        flow.version += 1
        self._reschedule(flow, now)

    def _settle(self, flow: Flow, now: float) -> None:
        moved = flow.rate * (now - flow.since)
        if moved:
            moved = min(moved, flow.left)
            flow.left -= moved
            for link in flow.links:
                link.carried += moved
        flow.since = now

    def _reschedule(self, flow: Flow, now: float) -> None:
        if flow.rate > 0:
            self.schedule(now + flow.left / flow.rate, flow)

    def relax(self, touched: Iterable[Link], now: float) -> None:
        """Recompute the levels of ``touched`` and of whatever their change disturbs, then the rates of the
        flows on every link whose level moved."""
        work = self.dirty
        work.update(dict.fromkeys(touched))
        moved = dict.fromkeys(touched)
        budget = MAX_RELAX
        while work and budget:
            budget -= 1
            link, _ = work.popitem()
            level = waterfill(link)
            self.recomputed += 1
            old = link.level
            if level == old or (math.isfinite(old) and abs(level - old) <= EPSILON * old):
                continue
            link.level = level
            moved[link] = None
            if not link.spreads:
                continue
            for flow in link.flows:
                for other in flow.links:
                    if other is not link:
                        work[other] = None
        flows: dict[Flow, None] = {}
        for link in moved:
            flows.update(link.flows)
        for flow in flows:
            rate = min(other.level for other in flow.links)
            if not math.isfinite(rate):
                rate = min(other.capacity for other in flow.links)
            if rate != flow.rate:
                self._settle(flow, now)
                flow.rate = rate
                flow.version += 1
                self._reschedule(flow, now)
