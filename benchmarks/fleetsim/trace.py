"""Where the last peer's time goes: the shared links' idle time in the phases of a run, in simulated time.

The bound is one file over the slowest link every copy must cross: the origin's, and at 1x each rack's
downlink as well (it carries the rack's share from the origin and every piece from the other racks). The
last peer is late by the start-up before the origin's first byte, by framing (Model.framing), and by the
time those links sit idle once the origin has begun. This module samples, every ``step`` simulated seconds,
how full the origin's link and each rack's downlink are (the sum of their flows' rates over the capacity,
the framing already taken out), and splits the idle time in three phases:

- *start*: from the origin's first byte until the first transfer across a rack's boundary begins (until
  then a rack's downlink carries only its share of the origin's pieces);
- *middle*: from there until the origin's last piece is through;
- *end*: from the origin's last piece until the last peer is done (the last pieces crossing into the
  other racks and spreading inside them).

It also gives when peers were done (quantiles) and each rack's last. The sampler reads the links only;
it changes no decision, so a traced run is the run untraced (the same seed gives the same times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetsim.network import Link
    from fleetsim.peer import SimPeer
    from fleetsim.sim import Result, Simulation, Transfer


FULL = 0.98
"""A link this full (of its capacity, framing taken out) counts as full: the fluid model's levels settle
within a few per cent (fleetsim.network.EPSILON)."""


@dataclass(slots=True)
class Phases:
    first_origin: float
    first_crossing: float
    """When the first transfer across a rack's boundary began (nan: none did)."""
    last_origin: float
    """When the origin's last piece was through."""
    last_done: float
    origin_idle: tuple[float, float, float]
    """Seconds of the origin's link left unused at start, middle and end."""
    origin_crowded: float
    """Of the origin's idle time before its last piece, the part while a rack's downlink was full: the
    origin's flows into that rack held back by the flows from other racks sharing it (the links are shared
    per flow, as TCP shares them)."""
    downlink_idle: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """The same for each rack's downlink (racks with a capped uplink)."""
    done: list[float] = field(default_factory=list)
    """When each peer was done, sorted."""
    rack_done: dict[str, float] = field(default_factory=dict)

    def lines(self, bound: float, framing: float, origin_share: float) -> list[str]:
        """The account, as text, over the bound (the origin's link as the bottleneck): start-up until the
        origin's first byte, framing (``framing``: Model.framing), the origin's bytes beyond the file
        (``origin_share``: origin bytes / size; the spot checks), the origin's link idle before its last piece,
        and the time after it."""

        def both(value: float) -> str:
            return f"{value:.3f} s ({value / bound:.3f}x)"

        sent = bound / framing
        terms = [
            ("start-up", self.first_origin),
            ("framing", sent - bound),
            ("origin bytes past the file", sent * (origin_share - 1)),
            ("origin idle before its last piece", self.origin_idle[0] + self.origin_idle[1]),
            (" of it while a rack downlink was full", self.origin_crowded),
            ("after the origin's last piece", self.last_done - self.last_origin),
        ]
        rest = self.last_done - bound - sum(value for name, value in terms if not name.startswith(" "))
        account = ", ".join(f"{name.strip()} {both(value)}" for name, value in terms)

        def trio(values: tuple[float, float, float]) -> str:
            return " / ".join(f"{v:.3f}" for v in values)

        after = self.last_done - self.last_origin
        crossing = "none" if math.isnan(self.first_crossing) else f"+{self.first_crossing - self.first_origin:.3f} s"
        out = [
            f"  last done = bound {bound:.3f} s + {account}, rest {rest:+.3f} s",
            f"  origin's first byte {both(self.first_origin)}, first crossing {crossing},"
            f" origin's last piece {self.last_origin:.3f} s, last done +{after:.3f} s after it",
            f"  idle (s) at start / middle / end: origin {trio(self.origin_idle)}",
        ]
        if self.downlink_idle:
            out.append(
                "  rack downlinks idle (s) at start / middle / end: "
                + "; ".join(f"{rack} {trio(idle)}" for rack, idle in self.downlink_idle.items())
            )
        count = len(self.done)
        if count:
            at = [self.done[min(count - 1, int(q * count))] for q in (0, 0.5, 0.9)]
            quantiles = f"first {at[0]:.3f}, 50% {at[1]:.3f}, 90% {at[2]:.3f}"
            out.append(f"  peers done: {quantiles}, last {self.done[-1]:.3f}")
        if len(self.rack_done) > 1:
            out.append("  each rack's last done: " + " ".join(f"{r} {t:.3f}" for r, t in self.rack_done.items()))
        return out


class Tracer:
    """Attached to a simulation before it runs (Simulation.tracer); :meth:`phases` after it ran."""

    def __init__(self, sim: Simulation, step: float = 0.002) -> None:
        self.sim = sim
        self.step = step
        self.links: dict[str, Link] = {"origin": sim.origin_link}
        for rack, (_, down) in sim.rack_links.items():
            if down is not None:
                self.links[rack] = down
        self.samples: list[tuple[float, list[float]]] = []
        self.first_crossing = math.nan
        self.last_origin = math.nan

    def start(self) -> None:
        self.sim.at(0.0, self._sample)

    def _sample(self) -> None:
        sim = self.sim
        row = [min(1.0, sum(flow.rate for flow in link.flows) / link.capacity) for link in self.links.values()]
        self.samples.append((sim.now, row))
        if sim.remaining:
            sim.at(sim.now + self.step, self._sample)

    def flow_started(self, job: Transfer) -> None:
        source, dest = job.source, job.dest
        if source is not None and source.rack != dest.rack and math.isnan(self.first_crossing):
            self.first_crossing = self.sim.now

    def piece_through(self, source: SimPeer | None) -> None:
        if source is None:
            self.last_origin = self.sim.now

    def phases(self, result: Result) -> Phases:
        start, crossing, last_origin, end = result.first_origin, self.first_crossing, self.last_origin, result.last_done
        cut = crossing if not math.isnan(crossing) else last_origin

        def idle(column: int) -> tuple[float, float, float]:
            spans = [0.0, 0.0, 0.0]
            for when, row in self.samples:
                if when < start or when >= end:
                    continue
                phase = 0 if when < cut else 1 if when < last_origin else 2
                spans[phase] += (1.0 - row[column]) * self.step
            return spans[0], spans[1], spans[2]

        names = list(self.links)
        peers = self.sim.peers
        rack_done: dict[str, float] = {}
        for peer in peers:
            if peer.done_at is not None:
                rack_done[peer.rack] = max(rack_done.get(peer.rack, 0.0), peer.done_at)
        return Phases(
            first_origin=start,
            first_crossing=crossing,
            last_origin=last_origin,
            last_done=end,
            origin_idle=idle(0),
            origin_crowded=sum(
                (1.0 - row[0]) * self.step
                for when, row in self.samples
                if start <= when < last_origin and max(row[1:], default=0.0) >= FULL
            ),
            downlink_idle={name: idle(i) for i, name in enumerate(names) if name != "origin"},
            done=sorted(p.done_at for p in peers if p.done_at is not None),
            rack_done=dict(sorted(rack_done.items())),
        )
