"""The operator's dashboards: what the tracker's and the mirror manager's live pages show, and the rules
that keep a snapshot of a fleet small.

The tracker (tracker.dashboard) and the mirror manager (mirror.dashboard) build one snapshot per tick from
the state they own and send it to every viewer (shoal.http.live); this module holds the messages and the
decisions that need no I/O:

- **Bounded.** A snapshot lists at most ``MAX_TASKS`` tasks (the busiest: most peers still downloading,
  then most peers), ``MAX_PEERS`` peers of each (the least advanced first: the stragglers are what an
  operator looks for), ``MAX_POOLS`` pools with their ``MAX_JOBS`` latest
  pushes and ``MAX_MEMBERS`` members of each, and ``MAX_MIRROR_JOBS`` mirror jobs. What is left out is
  counted (``more_*``), so a fleet of 100,000 peers costs a page the same as one of a hundred.
- **No secret.** A page may be readable without any token (``--public-dashboard``), so it shows a URL
  without its user-information, query and fragment (a password, a signature, a token), and never a
  private pool.
- **Throughput from totals.** Rates come from counters that only grow (bytes taken in by the tracker's
  peers, announces taken), sampled each tick, over a window of a few seconds: peers report their bytes
  on their announces, one interval apart, so a rate between two adjacent ticks would jump from zero to
  a spike and back.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from shoal.core.messages import ScopeBytes
from shoal.core.pool_messages import JobView
from shoal.core.redact import redact_passkey

T = TypeVar("T")
K = TypeVar("K", bound=Any)

MAX_TASKS = 50
"""Most tasks in one snapshot."""
MAX_PEERS = 24
"""Most peers listed per task."""
MAX_POOLS = 10
"""Most pools in one snapshot."""
MAX_JOBS = 5
"""Most pushes listed per pool: the latest."""
MAX_MEMBERS = 50
"""Most members listed per push."""
MAX_MIRROR_JOBS = 200
"""Most mirror jobs in one snapshot."""
HISTORY = 300
"""Throughput samples kept and sent: five minutes at one tick a second."""
RATE_WINDOW = 5.0
"""Seconds a rate is averaged over (at least one announce interval of the tracker's defaults)."""
TICK = 1.0
"""Seconds between two snapshots."""


# -- the tracker's page -------------------------------------------------------------------------------


class PeerProgress(msgspec.Struct, frozen=True):
    """One peer of a task, as the page lists it."""

    peer_id: str
    host: str
    site: str
    rack: str
    pieces: int
    progress: float
    """Share of the task's pieces the peer holds, 0 to 1 (0 while the task's size is unknown)."""


class TaskView(msgspec.Struct, frozen=True):
    """A live task: its file, its swarm and where its bytes came from."""

    task_id: str
    name: str
    """The file's name: the URL's last path segment, decoded."""
    url: str
    """The task's URL without user-information, query or fragment."""
    generation: int
    length: int | None
    pieces: int | None
    peers: int
    """Live peers."""
    seeds: int
    """Live peers holding every piece."""
    from_origin: int
    """Bytes the task's peers took from the origin (since the tracker started)."""
    from_peers: int
    """Bytes they took from other peers."""
    shown: tuple[PeerProgress, ...]
    """At most MAX_PEERS of the peers, least advanced first: the stragglers, then seeds where room is left."""


class TaskList(msgspec.Struct, frozen=True):
    """The tracker's live tasks, busiest first (``GET /v1/tasks``)."""

    tasks: tuple[TaskView, ...]
    more: int
    """Live tasks left out past the limit."""


class TrackerLoad(msgspec.Struct, frozen=True):
    """The tracker's health and load."""

    started: float
    announces_per_second: float
    inflight: int
    """JSON announces being served now."""
    max_inflight: int
    shed: int
    """Announces answered 503 (busy) since the start."""
    tasks: int
    """Tasks in this tracker's memory: those with peers (one leaves at the sweep after its last peer)."""
    peers: int
    """Peers of those tasks, as of the latest sweep (every interval)."""
    stretch: float
    """How far load stretches the announce intervals (1: not at all)."""
    trackers: int
    """Trackers sharing the database (1 on SQLite); each shows the tasks it owns."""


class ThroughputSample(msgspec.Struct, frozen=True, array_like=True):
    """Bytes a second the tracker's peers took in at ``time``: ``[time, origin, peers]`` on the wire."""

    time: float
    origin: float
    peers: float


class PushPanel(msgspec.Struct, frozen=True):
    """A push and at most MAX_MEMBERS of its members (``shoal pool status``'s data)."""

    job: JobView
    more_members: int


class PoolPanel(msgspec.Struct, frozen=True):
    name: str
    members: int
    live_members: int
    pushes: tuple[PushPanel, ...]
    """The latest MAX_JOBS pushes, newest first."""
    more_pushes: int


class TrackerDashboard(msgspec.Struct, frozen=True):
    """One snapshot of the tracker's page (``GET /v1/dashboard``, and each event of its stream)."""

    time: float
    load: TrackerLoad
    tasks: TaskList
    throughput: tuple[ThroughputSample, ...]
    pools: tuple[PoolPanel, ...]
    more_pools: int
    private_pools: int
    """Private pools, never shown: their pushes are their token holders' business."""


# -- the mirror manager's page ------------------------------------------------------------------------


class MirrorJobPanel(msgspec.Struct, frozen=True):
    """A mirror job as the page shows it (core.mirror_job's statuses, tunasync's fields)."""

    name: str
    status: str
    worker: str | None
    upstream: str
    """Without user-information, query or fragment."""
    provider: str
    last_success: float | None
    last_started: float | None
    last_ended: float | None
    next_run: float | None
    size: int
    version: str | None
    attempts: int
    error: str
    log: str | None = None
    """The link to the job's latest run log (read on its worker through the manager); None before it ran."""


class MirrorWorkerPanel(msgspec.Struct, frozen=True):
    name: str
    live: bool
    running: int
    concurrency: int
    last_seen: float


class MirrorDashboard(msgspec.Struct, frozen=True):
    """One snapshot of the mirror manager's page (``GET /v1/mirror/dashboard`` and its stream)."""

    time: float
    started: float
    jobs: tuple[MirrorJobPanel, ...]
    more_jobs: int
    workers: tuple[MirrorWorkerPanel, ...]


# -- decisions ----------------------------------------------------------------------------------------


def display_url(url: str) -> str:
    """``url`` without user-information, query, fragment or a seeder's passkey (``/files/PASSKEY/``): what
    a page may show of it (a passkey opens the fleet's torrents and files to whoever reads it)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    path = redact_passkey(parts.path)
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def file_name(url: str) -> str:
    """The file a URL names: its last path segment, decoded (the host's name for a URL ending in '/')."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    last = unquote(parts.path.rsplit("/", 1)[-1])
    return last or parts.hostname or url


def task_view(
    task_id: str,
    url: str,
    generation: int,
    length: int | None,
    pieces: int | None,
    *,
    peers: int,
    seeds: int,
    shown: Sequence[PeerProgress],
    received: ScopeBytes,
) -> TaskView:
    """A task for the page: its file, its counts, the peers chosen by :func:`stragglers`, its bytes."""
    return TaskView(
        task_id=task_id,
        name=file_name(url),
        url=display_url(url),
        generation=generation,
        length=length,
        pieces=pieces,
        peers=peers,
        seeds=seeds,
        from_origin=received.origin,
        from_peers=peer_bytes(received),
        shown=tuple(shown),
    )


def peer_bytes(received: ScopeBytes) -> int:
    """Bytes taken from peers, wherever they were."""
    return received.rack + received.racks + received.sites + received.unlabelled


def progress(pieces: int, total: int | None) -> float:
    """The share of ``total`` pieces that ``pieces`` is (0 while the total is unknown)."""
    return min(pieces / total, 1.0) if total else 0.0


class Ranking(Generic[K, T]):
    """The ``limit`` smallest by ``key`` of items offered in parts: what a walk over many, taken a slice
    at a time, keeps of them. Each part costs a comparison per item; the ones kept are compared again with
    the next part, so the ranking is that of every item offered, in any number of parts."""

    def __init__(self, limit: int, key: Callable[[T], K]) -> None:
        self.limit = limit
        self.key = key
        self.kept: list[T] = []
        """The smallest offered so far, smallest first."""
        self.offered = 0

    def offer(self, items: Iterable[T]) -> None:
        part = list(items)
        self.offered += len(part)
        self.kept = heapq.nsmallest(self.limit, itertools.chain(self.kept, part), key=self.key)

    @property
    def left_out(self) -> int:
        """How many of those offered are not kept."""
        return self.offered - len(self.kept)


def straggler_order(peer: tuple[int, str, object]) -> tuple[int, str]:
    """How :func:`stragglers` orders ``(pieces held, peer id, peer)``: fewest pieces first, then by id."""
    return peer[0], peer[1]


def busiest_order(task: tuple[int, int, str, object]) -> tuple[int, int, str]:
    """How :func:`busiest` orders ``(peers, seeds, task id, task)``: most peers still downloading, then most
    peers, then by id."""
    return -(task[0] - task[1]), -task[0], task[2]


def stragglers(peers: Iterable[tuple[int, str, T]], limit: int = MAX_PEERS) -> list[T]:
    """The ``limit`` least advanced of ``(pieces held, peer id, peer)``: fewest pieces first, then by id, so
    seeds come last and only where room is left. Peers past the limit cost a comparison, never a view."""
    return [peer for _, _, peer in heapq.nsmallest(limit, peers, key=straggler_order)]


def busiest(tasks: Iterable[tuple[int, int, str, T]], limit: int = MAX_TASKS) -> tuple[list[T], int]:
    """The ``limit`` busiest of ``(peers, seeds, task id, task)`` (:func:`busiest_order`), and how many were
    left out."""
    ranking: Ranking[tuple[int, int, str], tuple[int, int, str, T]] = Ranking(limit, busiest_order)
    ranking.offer(tasks)
    return [task for _, _, _, task in ranking.kept], ranking.left_out


def mirror_job_panel(
    *,
    name: str,
    status: str,
    worker: str | None,
    upstream: str,
    provider: str,
    last_update: float | None,
    last_started: float | None,
    last_ended: float | None,
    next_schedule: float | None,
    size: int,
    version: str | None,
    attempts: int,
    error_msg: str,
    log: str | None = None,
) -> MirrorJobPanel:
    """A mirror job's status (tunasync's fields: ``last_update`` is the last success) for the page."""
    return MirrorJobPanel(
        name=name,
        status=status,
        worker=worker,
        upstream=display_url(upstream) or upstream.split("?", 1)[0],
        provider=provider,
        last_success=last_update,
        last_started=last_started,
        last_ended=last_ended,
        next_run=next_schedule,
        size=size,
        version=version,
        attempts=attempts,
        error=error_msg,
        log=log,
    )


class Throughput:
    """Counters that only grow, sampled once a tick; the rates over the last RATE_WINDOW seconds.

    Totals that go back (the tracker restarted its tallies) start the window afresh rather than show a
    negative rate."""

    def __init__(self, *, history: int = HISTORY, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._totals: deque[tuple[float, int, int, int]] = deque()
        """(time, origin bytes, peer bytes, announces) within the window, oldest first."""
        self._samples: deque[ThroughputSample] = deque(maxlen=history)
        self.announces_per_second = 0.0

    def record(self, now: float, origin: int, peers: int, announces: int) -> None:
        totals = self._totals
        if totals and (origin < totals[-1][1] or peers < totals[-1][2] or announces < totals[-1][3]):
            totals.clear()
        totals.append((now, origin, peers, announces))
        while len(totals) > 2 and now - totals[1][0] >= self.window:
            totals.popleft()
        first = totals[0]
        span = now - first[0]
        if span <= 0:
            return
        self.announces_per_second = (announces - first[3]) / span
        self._samples.append(ThroughputSample(now, (origin - first[1]) / span, (peers - first[2]) / span))

    def samples(self) -> tuple[ThroughputSample, ...]:
        return tuple(self._samples)
