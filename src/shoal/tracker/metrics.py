"""The tracker's /metrics (shoal.http.metrics): its announces, what they decided, and what it holds now.

Announces are counted and timed by a middleware, by kind (``json``: the JSON API's, ``bittorrent``: BEP 3's
``/announce``) and outcome (the reply's status class), so every reply is counted once wherever it was
decided: the cap's 503, a peer limit's 429, a bad body's 400, a forward to the task's owner. What the
announces decided (leases, hash reports, generations) comes from core.announce_counts; peers and tasks
live, bytes by scope and the cap's figures are read from the service's state at scrape time, from totals it
keeps as it changes (core.swarm.Census, core.scope_tally): a scrape runs on the tracker's event loop, and
never walks its tasks or peers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

from shoal.core.pool import MemberStatus, PushStatus
from shoal.http.metrics import Metrics, by_source, counter, counter_by, gauge, gauge_by
from shoal.storage.pool_store import PoolCounts

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from shoal.tracker.admission import Admission
    from shoal.tracker.pools import Pools
    from shoal.tracker.service import TrackerService

KINDS = ("json", "bittorrent")
OUTCOMES = ("ok", "refused", "rejected", "error")
"""An announce's outcome by its reply: 2xx ok; 429 or 503 refused (busy, a peer limit, the task's owner
moving or not answering a forward: come back later); another 4xx rejected (a bad request or credential); 5xx
error."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: an announce decided in memory takes well under a millisecond, one that waits for its group
commit a few, and one queued behind an overload up to the peers' timeout (10 s)."""


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (429, 503):
        return "refused"
    return "rejected" if status < 500 else "error"


def announce_kind(path: str) -> str | None:
    """The kind of announce a request path is, None for any other route: a BitTorrent announce with its
    passkey in the path (a private tracker's, ``/announce/PASSKEY``) is one as much as one without."""
    if path == "/announce" or path.startswith("/announce/"):
        return "bittorrent"
    if path.startswith("/v1/tasks/") and path.endswith("/announce"):
        return "json"
    return None


class AnnounceTimer:
    """Counts announces by kind and outcome, and times them by kind. The children of every label value are
    made once, so an announce pays an increment and an observation, not a label look-up."""

    def __init__(self, metrics: Metrics) -> None:
        total = Counter(
            "shoal_tracker_announces",
            "Announces answered, by kind (json, bittorrent) and outcome (ok, refused, rejected, error).",
            ["kind", "outcome"],
            registry=metrics.registry,
        )
        seconds = Histogram(
            "shoal_tracker_announce_duration_seconds",
            "Seconds from an announce's arrival (its headers read) to its reply, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )
        self._counts = {(k, o): total.labels(k, o) for k in KINDS for o in OUTCOMES}
        self._seconds = {k: seconds.labels(k) for k in KINDS}

    def record(self, kind: str, seconds: float, status: int) -> None:
        """Count an announce of ``kind`` answered with ``status`` after ``seconds``."""
        self._seconds[kind].observe(seconds)
        self._counts[kind, outcome_of(status)].inc()

    def middleware(self) -> Middleware:
        record = self.record

        @web.middleware
        async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
            kind = announce_kind(request.path)
            if kind is None:
                return await handler(request)
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            except asyncio.CancelledError:
                # Its client left (the runner's handler_cancellation): no reply went out, so it is no
                # announce answered, and no 5xx; the cap counts it as abandoned, as the peers' lane does.
                status = 0
                raise
            finally:
                if status:
                    record(kind, time.perf_counter() - started, status)

        return timed


class TrackerCollector(Collector):
    """The tracker's state at scrape time."""

    def __init__(
        self,
        service: TrackerService,
        admission: Admission,
        scrapes: Admission | None = None,
        handed_over: Callable[[], int] | None = None,
    ) -> None:
        self.service = service
        self.admission = admission
        self.scrapes = scrapes
        self.handed_over = handed_over

    def collect(self) -> Iterator[Metric]:
        yield from self._decided()
        yield from self._live()
        yield from self._forwards()
        yield from self._load()

    def _decided(self) -> Iterator[Metric]:
        counts = self.service.counts
        if counts is None:
            return
        yield counter("shoal_tracker_leases_granted", "Origin leases granted afresh.", counts.leases_granted)
        yield counter_by(
            "shoal_tracker_hash_reports",
            "Piece hashes reported by lease holders: taken, or rejected (they differed from the hash held).",
            "outcome",
            [("taken", counts.hashes_taken), ("rejected", counts.hashes_rejected)],
        )
        yield counter(
            "shoal_tracker_hashes_revoked", "Hashes dropped: a spot check caught their reporter.", counts.hashes_revoked
        )
        yield counter(
            "shoal_tracker_generations_started", "New generations: a task's origin file changed.", counts.generations
        )
        yield counter(
            "shoal_tracker_origin_claims_refused",
            "Claims that an origin's file changed which the origin did not bear out.",
            counts.claims_refused,
        )
        yield counter(
            "shoal_tracker_peers_banned",
            "Peers kept from everyone once enough hosts accused them.",
            counts.peers_banned,
        )

    def _live(self) -> Iterator[Metric]:
        service = self.service
        store = service.store
        seeds, peers = store.census.seeds, store.census.peers
        yield gauge("shoal_tracker_tasks", "Tasks in memory: announced within a peer TTL.", store.tasks_in_memory())
        yield gauge_by(
            "shoal_tracker_peers",
            "Live JSON-API peers, by role: seeds hold every piece, downloaders do not.",
            "role",
            [("seed", seeds), ("downloader", peers - seeds)],
        )
        yield gauge("shoal_tracker_bt_swarms", "BitTorrent swarms (info-hashes) with peers.", len(service.bt.swarms))
        yield gauge("shoal_tracker_bt_peers", "BitTorrent peers listed in the swarms.", service.bt.swarms.peer_count())
        received = service.scope_bytes.grand_totals()
        yield counter_by(
            "shoal_tracker_received_bytes",
            "Bytes the peers of this tracker's tasks reported taking in, by source: the origin, a peer in their "
            "rack, in another rack of their site, in another site, or unlabelled (no rack label).",
            "source",
            by_source(received),
        )

    def _forwards(self) -> Iterator[Metric]:
        cluster = self.service.cluster
        if cluster is None:
            return
        yield counter_by(
            "shoal_tracker_forwarded",
            "Requests of a task's routes (and BitTorrent announces) forwarded between trackers of one cluster: "
            "out to the owner, which answered; failed, the owner did not answer; in from another member.",
            "direction",
            [("out", cluster.relayed), ("failed", cluster.relay_failed), ("in", cluster.served_forwarded)],
        )
        yield counter(
            "shoal_tracker_cluster_rejoins",
            "Times this tracker registered its member row again: a renewal came after it had stopped deciding "
            "(the process stalled, the database was slow, its event loop was wedged), so its tasks moved.",
            cluster.rejoins,
        )
        yield counter(
            "shoal_tracker_cluster_placed_tasks",
            "Tasks this tracker gave to the least loaded member of its cluster because its own load was above "
            "the members' mean (--balance).",
            cluster.placed,
        )
        yield counter(
            "shoal_tracker_cluster_unplaced_tasks",
            "Placements on this tracker it deleted because their task went unused here (no peer announced it "
            "for the longest peer TTL): the task went back to its hash owner.",
            cluster.unplaced,
        )
        yield gauge(
            "shoal_tracker_cluster_load",
            "Requests a second this tracker decided as their task's owner over its latest balancing round.",
            cluster.load,
        )
        yield gauge(
            "shoal_tracker_cluster_renewal_seconds",
            "How long the latest renewal of this tracker's member row took (on a thread and a database "
            "connection of its own): past 4 s (TTL - FENCE_MARGIN), the tracker stops deciding and joins again.",
            cluster.last_renewal,
        )
        if (scrapes := self.scrapes) is not None:
            yield gauge(
                "shoal_tracker_scrape_requests_inflight",
                "Requests this tracker is sending to other trackers of its cluster for a BitTorrent scrape's "
                "counts (--max-relayed-scrapes caps them).",
                scrapes.inflight,
            )
            yield counter(
                "shoal_tracker_scrape_requests_shed",
                "Requests for a scrape's counts not sent at --max-relayed-scrapes: those swarms were left out of "
                "the scrape.",
                scrapes.shed,
            )

    def _load(self) -> Iterator[Metric]:
        admission = self.admission
        yield gauge(
            "shoal_tracker_announces_inflight",
            "JSON announces being decided now, and requests being forwarded to another tracker (but pools' "
            "long-polls).",
            admission.inflight,
        )
        yield gauge(
            "shoal_tracker_announces_inflight_limit",
            "The cap on JSON announces in flight (--max-inflight).",
            admission.limit,
        )
        yield counter(
            "shoal_tracker_announces_shed", "JSON announces and forwards answered 503 at the cap.", admission.shed
        )
        yield gauge(
            "shoal_tracker_interval_stretch",
            "The factor load stretches every announce interval by (1: none; --announce-rate).",
            self.service.demand.stretch(self.service.clock()),
        )
        if self.handed_over is not None:
            yield counter(
                "shoal_tracker_lane_handovers",
                "Connections the peers' lane gave to the tracker's HTTP application for good: their request "
                "was not a peer's announce or hash look-up, or not one the lane takes whole.",
                self.handed_over(),
            )


class PoolCollector(Collector):
    """The pools' jobs and members, read from the database before each scrape (:meth:`refresh`)."""

    def __init__(self, pools: Pools) -> None:
        self.pools = pools
        self.counts = PoolCounts({}, {}, 0)

    async def refresh(self) -> None:
        self.counts = await self.pools.store.counts(self.pools.clock() - self.pools.member_ttl)

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        yield gauge_by(
            "shoal_pool_jobs",
            "Push jobs by status (running, complete, failed, cancelled).",
            "status",
            [(s.value, counts.jobs.get(s.value, 0)) for s in PushStatus],
        )
        yield gauge_by(
            "shoal_pool_assignments",
            "Members' parts in running push jobs, by state (assigned, running, done, failed, evicted, "
            "cancelled, left).",
            "state",
            [(s.value, counts.assignments.get(s.value, 0)) for s in MemberStatus],
        )
        yield gauge("shoal_pool_members", "Pool members heard from within the member TTL (--peer-ttl).", counts.members)
        yield gauge(
            "shoal_pool_long_polls",
            "Members' heartbeats this tracker holds until their pool changes (with several trackers, the pool's "
            "owner holds them all).",
            self.pools.waiting,
        )


def install(
    app: web.Application,
    metrics: Metrics,
    service: TrackerService,
    admission: Admission,
    scrapes: Admission | None = None,
    handed_over: Callable[[], int] | None = None,
) -> AnnounceTimer:
    """Report the tracker's figures through ``metrics``; the announce timer must be the application's
    outermost middleware, so every reply is counted as its client gets it (returned: the peers' lane
    counts its announces with it too). ``scrapes``: the cap on the requests a scrape sends to other
    members (tracker.bt), in a cluster; ``handed_over``: the connections the peers' lane handed over."""
    timer = AnnounceTimer(metrics)
    app.middlewares.insert(0, timer.middleware())
    metrics.add(TrackerCollector(service, admission, scrapes, handed_over))
    pools = PoolCollector(service.pools)
    metrics.add(pools, refresh=pools.refresh)
    return timer
