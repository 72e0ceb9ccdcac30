"""The discrete-event loop: simulated time, the fleet's shape and links, the peers and the tracker.

Time is simulated: events run in time order from a heap, and nothing reads a clock except the report of
the simulator's own wall time. Every random choice comes from a seeded generator, so a run is repeatable.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetsim.network import Flow, Link, Network
from fleetsim.peer import SimPeer, origin_identity
from fleetsim.trace import Phases, Tracer
from fleetsim.tracker import SimTracker
from shoal.core.announce_values import TrackerPolicy
from shoal.core.download import MAX_CROSSINGS
from shoal.core.ids import task_id_for_url
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.core.picker import FetchLimits
from shoal.peer.config import GetConfig
from shoal.tracker.config import TrackerConfig

MBIT = 1e6 / 8
"""Bytes per second in one Mbit/s."""


@dataclass(frozen=True, slots=True)
class Model:
    """The timing parameters the simulation cannot take from the code: one set for every shape."""

    startup: float = 1.2
    """Seconds from launch until a peer's first announce and origin probe (interpreter, imports)."""
    startup_jitter: float = 0.3
    """Each peer starts up to this much later than ``startup`` (peers share the machine's cores)."""
    announce_rtt: float = 0.04
    """An announce's round trip, the tracker's decision and its commit included; decided half-way."""
    lookup_rtt: float = 0.02
    """A hash look-up's round trip."""
    probe_rtt: float = 0.01
    """The origin probe (HEAD) beside the first announce."""
    request_latency: float = 0.01
    """From a fetch's request until its first byte (a round trip and the sender opening the file)."""
    have_latency: float = 0.02
    """From a piece offered until its holder's followers know it (the have stream)."""
    max_uploads: int = GetConfig.max_uploads
    max_crossings: int = MAX_CROSSINGS
    """Scope leases asked for at once (core.download.MAX_CROSSINGS unless told: only to replay older code)."""
    framing: float = 1448 / 1514
    """Payload share of a capped link's rate: TCP/IP/Ethernet framing, charged whole by tc tbf (a full-size
    frame carries 1448 payload bytes in 1514)."""
    prefix_window: int = 0
    """Pieces past the first missing one that a peer takes from peers first, when a holder it may ask has one
    (a hashable prefix that keeps growing: peer.prefix_hash); 0: from anywhere, as the engine does."""
    hash_rate: float = 0.0
    """MB/s of the whole-file hash that follows a peer's complete prefix (the daemon's BLAKE3, its read-back
    included); 0: not modelled. Reported as when the last peer's hash was done."""
    audit_share: float = TrackerConfig.audit_share
    """The tracker's share of reported pieces spot-checked from the origin (core.audit); 0: none, to tell
    the origin bytes the checks cost from the others."""


@dataclass(frozen=True, slots=True)
class Shape:
    """The fleet: ``sites`` sites (0: no site labels) over ``racks`` racks of ``peers`` peers each; rates in
    bytes per second (None: uncapped). ``racks`` 0 is one flat switch without labels."""

    racks: int
    peers: int
    size: int
    origin_rate: float
    uplink_rate: float | None
    sites: int = 0
    site_rate: float | None = None
    nic_rate: float = 1000 * MBIT

    def bound(self) -> float:
        """The lower bound: the slowest link every rack's copy must cross."""
        rates = [self.origin_rate]
        if self.racks > 1 and self.uplink_rate:
            rates.append(self.uplink_rate)
        if self.sites > 1 and self.site_rate:
            rates.append(self.site_rate)
        return self.size / min(rates)

    @property
    def count(self) -> int:
        return max(1, self.racks) * self.peers


@dataclass(slots=True)
class Transfer:
    source: SimPeer | None
    dest: SimPeer
    run: list[int]
    started: float
    pos: int = 0
    nbytes: int = 0


@dataclass(slots=True)
class Result:
    shape: Shape
    last_done: float
    bound: float
    origin_bytes: int
    into_racks: list[float]
    into_sites: list[float]
    announces: int
    hash_lookups: int
    decision_wall: float
    wall: float
    events: int
    link_recomputes: int
    snapshot_peers: float
    first_origin: float
    """When the origin began sending (its first run's first byte), seconds after launch."""
    done_times: list[float] = field(default_factory=list)
    hashed_last: float = float("nan")
    """When the last peer's whole-file hash was done (Model.hash_rate; nan when not modelled)."""
    phases: Phases | None = None
    """Where the time went (fleetsim.trace), when the run was traced."""

    @property
    def ratio(self) -> float:
        return self.last_done / self.bound


class Simulation:
    def __init__(self, shape: Shape, model: Model | None = None, *, seed: int = 1, exact_limit: int = 256) -> None:
        self.shape = shape
        self.model = model or Model()
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[object, ...]]] = []
        self._seq = itertools.count()
        self.events = 0
        self.progress = False
        """Print a line to stderr every 200,000 events."""
        self.url = "http://origin.test/fleet.bin"
        self.identity = origin_identity(shape.size)
        self.manifest = Manifest.for_identity(self.identity)
        config, get = TrackerConfig(), GetConfig(dest=None)  # type: ignore[arg-type]
        self.interval = config.interval
        audit_key = random.Random(seed).randbytes(16)  # which pieces are checked again (core.audit)
        self.tracker = SimTracker(
            task_id_for_url(self.url),
            TrackerPolicy(config.interval, config.peer_ttl, config.max_peers, audit_key, self.model.audit_share),
            config.crossing_patience,
            exact_limit=exact_limit,
            rng=random.Random(seed),
        )
        self.limits = FetchLimits(
            run_bytes=get.run_bytes,
            origin_streams=1,
            peer_requests=get.peer_requests,
            per_peer_requests=get.per_peer_requests,
            lone_peer_requests=get.lone_peer_requests,
        )
        self.tuning_lease_bytes = get.lease_bytes
        self.network = Network(self._schedule_flow)
        self._build(seed)
        self.remaining = len(self.peers)
        self.rack_in: dict[str, int] = dict.fromkeys(self.rack_links, 0)
        self.site_in: dict[str, int] = dict.fromkeys(self.site_links, 0)
        self.origin_bytes = 0
        self.first_origin = float("nan")
        self.tracer: Tracer | None = None
        """Set before :meth:`run` to account for the links' idle time (fleetsim.trace)."""

    # -- the fleet ------------------------------------------------------------------------------------

    def _build(self, seed: int) -> None:
        shape, rng = self.shape, random.Random(seed)
        self.origin_link = self._link("origin", shape.origin_rate)
        self.rack_links: dict[str, tuple[Link | None, Link | None]] = {}
        self.site_links: dict[str, tuple[Link | None, Link | None]] = {}
        self.peers: list[SimPeer] = []
        self.nics: dict[SimPeer, tuple[Link, Link]] = {}
        racks = max(1, shape.racks)
        for r in range(racks):
            site = f"s{r * shape.sites // racks + 1}" if shape.sites else ""
            rack = f"r{r + 1}" if shape.racks else ""
            if rack:
                self.rack_links[rack] = self._pair(rack, shape.uplink_rate)
            if site and site not in self.site_links:
                self.site_links[site] = self._pair(site, shape.site_rate)
            for _ in range(shape.peers):
                start = self.model.startup + rng.random() * self.model.startup_jitter
                peer = SimPeer(self, len(self.peers), site, rack, start)
                self.peers.append(peer)
                out, into = f"{peer.peer_id}-out", f"{peer.peer_id}-in"
                self.nics[peer] = (self._link(out, shape.nic_rate, False), self._link(into, shape.nic_rate, False))
        self.peers_by_id = {p.peer_id: p for p in self.peers}

    def _link(self, name: str, rate: float, spreads: bool = True) -> Link:
        return Link(name, rate * self.model.framing, spreads=spreads)

    def _pair(self, name: str, rate: float | None) -> tuple[Link | None, Link | None]:
        if not rate:
            return (None, None)
        return (self._link(f"{name}-up", rate), self._link(f"{name}-down", rate))

    def path(self, source: SimPeer | None, dest: SimPeer) -> tuple[Link, ...]:
        """The capped links a transfer from ``source`` (None: the origin) to ``dest`` crosses, in order."""
        links: list[Link | None] = []
        if source is None:
            links.append(self.origin_link)
            if dest.site:
                links.append(self.site_links[dest.site][1])
            if dest.rack:
                links.append(self.rack_links[dest.rack][1])
        else:
            links.append(self.nics[source][0])
            if source.rack and dest.rack and source.rack != dest.rack:
                links.append(self.rack_links[source.rack][0])
                if source.site != dest.site:
                    links.append(self.site_links[source.site][0] if source.site else None)
                    links.append(self.site_links[dest.site][1] if dest.site else None)
                links.append(self.rack_links[dest.rack][1])
        links.append(self.nics[dest][1])
        return tuple(link for link in links if link is not None)

    # -- events ---------------------------------------------------------------------------------------

    def at(self, when: float, fn: Callable[..., None], *args: object) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))

    def _schedule_flow(self, when: float, flow: Flow) -> None:
        self.at(when, self._flow_due, flow, flow.version)

    def _flow_due(self, flow: Flow, version: int) -> None:
        if flow.version == version:
            self._piece_through(flow)

    def run(self, limit: float = 3600.0) -> Result:
        started = time.perf_counter()
        for peer in self.peers:
            peer.launch()
        if self.tracer is not None:
            self.tracer.start()
        heap = self._heap
        while heap and self.remaining:
            when, _, fn, args = heapq.heappop(heap)
            if when > limit:
                raise RuntimeError(f"not done after {limit} simulated seconds: {self.remaining} peers left")
            self.now = when
            self.events += 1
            fn(*args)
            if self.progress and not self.events % 200_000:
                done = len(self.peers) - self.remaining
                print(
                    f"  t={when:.2f} s: {done} peers done, {self.events} events, {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                )
        return self._result(time.perf_counter() - started)

    # -- the tracker, as the peers reach it ------------------------------------------------------------

    def announce(self, request: AnnounceRequest) -> AnnounceResponse:
        """Decided half-way through the round trip: the reply the peer gets ``announce_rtt`` after asking."""
        return self.tracker.announce(request, self.now + self.model.announce_rtt / 2)

    # -- transfers ------------------------------------------------------------------------------------

    def transfer(self, source: SimPeer | None, dest: SimPeer, run: list[int]) -> None:
        job = Transfer(source, dest, run, self.now)
        self.at(self.now + self.model.request_latency, self._start_flow, job)

    def _start_flow(self, job: Transfer) -> None:
        size = self.manifest.piece_size(job.run[0])
        if job.source is None and math.isnan(self.first_origin):
            self.first_origin = self.now
        if self.tracer is not None:
            self.tracer.flow_started(job)
        self.network.start(Flow(self.path(job.source, job.dest), size, tag=job), self.now)

    def _piece_through(self, flow: Flow) -> None:
        job = flow.tag
        assert isinstance(job, Transfer)
        flow.left = 0.0
        index = job.run[job.pos]
        size = self.manifest.piece_size(index)
        job.pos += 1
        job.nbytes += size
        self._count(job.source, job.dest, size)
        if self.tracer is not None:
            self.tracer.piece_through(job.source)
        last = job.pos == len(job.run)
        if last:
            self.network.finish(flow, self.now)
        else:
            self.network.resize(flow, self.now, self.manifest.piece_size(job.run[job.pos]))
        job.dest.got_piece(job.source, index)
        if last:
            job.dest.run_ended(job.source, self.now - job.started, job.nbytes)

    def _count(self, source: SimPeer | None, dest: SimPeer, size: int) -> None:
        if source is None:
            self.origin_bytes += size
        if dest.rack and (source is None or source.rack != dest.rack):
            self.rack_in[dest.rack] += size
        if dest.site and (source is None or source.site != dest.site):
            self.site_in[dest.site] += size

    def peer_done(self, peer: SimPeer) -> None:
        self.remaining -= 1

    # -- the report -----------------------------------------------------------------------------------

    def _result(self, wall: float) -> Result:
        size, stats = self.shape.size, self.tracker.stats
        done = sorted(p.done_at for p in self.peers if p.done_at is not None)
        return Result(
            shape=self.shape,
            last_done=done[-1] if done else float("nan"),
            bound=self.shape.bound(),
            origin_bytes=self.origin_bytes,
            into_racks=[v / size for v in self.rack_in.values()],
            into_sites=[v / size for v in self.site_in.values()],
            announces=stats.announces,
            hash_lookups=stats.hash_lookups,
            decision_wall=stats.wall,
            wall=wall,
            events=self.events,
            link_recomputes=self.network.recomputed,
            snapshot_peers=stats.snapshot_peers / max(1, stats.announces),
            first_origin=self.first_origin,
            done_times=done,
            hashed_last=max(self._hashed(p) for p in self.peers) if self.model.hash_rate else float("nan"),
        )

    def _hashed(self, peer: SimPeer) -> float:
        """When ``peer``'s whole-file hash was done: it hashes each piece once the piece and every one before
        it are on disk, one at a time at Model.hash_rate."""
        rate, prefix, done = self.model.hash_rate * 1e6, 0.0, 0.0
        for index, arrived in enumerate(peer.arrived):
            prefix = max(prefix, arrived)
            done = max(done, prefix) + self.manifest.piece_size(index) / rate
        return done
