#!/usr/bin/env python3
"""Open-loop load on one ``shoal tracker``: N simulated peers over a fleet's mix of tasks, JSON announces at
offered rates stepping up, and what the tracker answered, how fast, and at what CPU and memory.

The tracker is a real ``shoal tracker`` process started here (``--db``: a fresh SQLite file by default, or a
PostgreSQL/MariaDB URL, on which a scratch database ``shoal_load_PID`` is created and dropped at the end;
a port from the kernel; PYTHONPATH the ``src/`` of the checkout this script is in, or ``--src``), or a
running one at ``--url`` (``--pid`` for its CPU and RSS). On a machine of two or more cores the tracker is
pinned to CPU 0 and this generator to CPU 1 (``taskset``; ``--no-pin`` to leave them free); the database
server, when there is one, is not pinned, and its CPU shows as "other".

The peers (``tracker_load_peers.py``): ``--peers`` of them over tasks of ``--mix`` (default: one swarm of
2,000, 80 of 50, 400 of 10 at 10,000 peers; scaled to ``--peers``), each task ``--pieces`` pieces
(log-uniform), a share ``--seed-share`` seeding from the start; downloaders join, report the hashes of the
pieces they were leased, ask for leases, gain pieces from their swarm, complete, seed ``--seed-turns``
announces and are replaced by new downloaders. ``--racks`` gives some of them site and rack labels.

Open loop: announces go out on a schedule at the offered rate whether or not earlier ones were answered, over
keep-alive connections (aiohttp, ``--connections`` in all, spread over ``--hosts`` loopback source addresses
so the tracker sees that many hosts); the peers take turns in a fixed shuffled order, so at rate R each
announces every N/R seconds. A shed announce (503, or 429, with ``Retry-After``) is sent again as a real peer
sends it (peer.announcer): after the tracker's figure plus up to a quarter (core.retry.busy_delay), built
afresh, unless the peer's next turn comes first or it was a ``stopped``; these are counted apart from the
offered turns (``--no-retry``: a shed peer waits for its next turn). The tracker's ``--peer-ttl`` is set to
three of the slowest step's turns, so no peer expires between its turns. A request unanswered ``--timeout``
seconds after its scheduled time (the peer's client gives up after 10 s) counts as timed out. Latency runs
from the scheduled time, so a generator that falls behind is charged, not hidden (its lag is printed). Before
the steps every peer has ``--prime`` turns (joining takes two) at ``--prime-rate`` (default: the first rate);
then each rate runs ``--warmup`` seconds unmeasured and ``--duration`` measured.

``--follow``: closed loop instead, as real peers pace themselves. After its first turn (the fleet's first
turns spread over ``--prime-rate``), a peer announces again when the tracker's reply says (``interval``); a
downloader at least every ``--download-gap`` seconds (the download engine reports pieces and asks for leases
of its own accord), a joining one at once; a shed announce after its ``Retry-After`` plus up to a quarter, a
failed one after 1-5 s. One step: ``--warmup`` seconds unmeasured (long enough for the longest intervals to
come round), then ``--duration`` measured; offered/s is what the fleet sent. ``--tracker-args`` passes
options to the started tracker (``--idle-interval 5 --announce-rate 0``: every peer told 5 s, as before the
interval adapted). ``--idle-share`` makes that share of the tasks idle: all their peers seed, none stops.

Printed per step, for the announces scheduled in its measured window (turns and announces sent again):
offered/s (turns), answered 200/s, 503/s, other errors, timeouts, p50/p95/p99 of the answered ones, the
tracker's CPU (% of one core, /proc/PID/stat) and its largest RSS, this generator's CPU and lag, and the rest
of the machine's CPU (the database server). ``--profile FILE`` records the tracker with py-spy through the
window of the last step (or of the step at ``--profile-rate``) and prints its top functions by self and by
total share.

Run it (from a checkout; the SQL servers are this machine's services; see benchmarks/README.md)::

    python3 benchmarks/tracker_load.py --rates 250,500,1000,2000,3000
    python3 benchmarks/tracker_load.py --db postgresql://postgres@127.0.0.1/test --rates 200,300,400,600
    python3 benchmarks/tracker_load.py --rates 400 --duration 30 --profile /tmp/tracker.txt
    python3 benchmarks/tracker_load.py --url http://127.0.0.1:6969 --pid 1234 --rates 500
    python3 benchmarks/tracker_load.py --follow --idle-share 0.8 --prime-rate 1000 --warmup 120 --duration 60
    python3 benchmarks/tracker_load.py --fleet-token-file fleet.token --rates 1000,2000  (credentials on)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import itertools
import json
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

CHECKOUT_SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(CHECKOUT_SRC))  # the protocol this generator speaks is its own checkout's

import aiohttp  # noqa: E402
import msgspec  # noqa: E402

from shoal.core.retry import busy_delay  # noqa: E402
from shoal.core.tickets import FLEET_HEADER  # noqa: E402
from shoal.core.tracker_replies import parse_retry_after  # noqa: E402
from shoal.http.credentials import read_token_file  # noqa: E402
from shoal.http.event_loop import uvloop_installed  # noqa: E402
from shoal.peer.tracker_client import TIMEOUT as PEER_TIMEOUT  # noqa: E402
from shoal.testing.cpu import MachineCpu, own_cpu_seconds, process_cpu_seconds  # noqa: E402
from tracker_load_peers import DEFAULT_MIX, Reply, SimPeer, Workload, build_fleet, parse_mix, parse_range, task_sizes  # noqa: E402
from tracker_load_proc import Tracker, read_rss_mb, scratch_database, top_functions  # noqa: E402

JSON = {"Content-Type": "application/json"}


@dataclass
class Step:
    """What happened to the announces scheduled in one measured window."""

    rate: float
    seconds: float
    offered: int = 0
    again: int = 0
    """Announces sent again after a 503 (not in ``offered``, which counts the turns)."""
    ok: int = 0
    unavailable: int = 0
    errors: int = 0
    timeouts: int = 0
    rejected: int = 0
    pending: int = 0
    latencies: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    lag_max: float = 0.0
    tracker_cpu: float | None = None
    own_cpu: float = 0.0
    other_cpu: float = 0.0
    rss_max_mb: float | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    windowed: bool = False

    def finish_one(self) -> None:
        self.pending -= 1
        if self.windowed and not self.pending:
            self.closed.set()

    def figures(self) -> dict[str, object]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 1) if lat else None

        per_s = self.seconds
        return {
            "offered_per_s": round(self.offered / per_s, 1),
            "sent_again_per_s": round(self.again / per_s, 1),
            "ok_per_s": round(self.ok / per_s, 1),
            "unavailable_per_s": round(self.unavailable / per_s, 1),
            "errors": self.errors,
            "timeouts": self.timeouts,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "tracker_cpu_pct": None if self.tracker_cpu is None else round(self.tracker_cpu / per_s * 100, 1),
            "tracker_rss_max_mb": None if self.rss_max_mb is None else round(self.rss_max_mb, 1),
            "generator_cpu_pct": round(self.own_cpu / per_s * 100, 1),
            "other_cpu_pct": round(self.other_cpu / per_s * 100, 1),
            "generator_lag_max_ms": round(self.lag_max * 1e3, 1),
            "rejected_reports": self.rejected,
            "kinds": dict(sorted(self.kinds.items())),
        }


def busy_wait(status: int, retry_after: str | None, event: str, rng: random.Random) -> float | None:
    """How long a real peer waits before announcing again after a reply of ``status`` with ``retry_after`` to
    an announce of ``event``, when it does at once after (peer.tracker_client, peer.announcer): a busy tracker
    (429 or 503 naming a delay, core.tracker_replies) is asked again after core.retry.busy_delay, unless the
    announce was a ``stopped`` (a peer leaving waits on no tracker). None: not before its next turn."""
    if status not in (429, 503) or event == "stopped":
        return None
    wait = parse_retry_after(retry_after)
    return None if wait is None else busy_delay(wait, rng)


def kind_of(peer: SimPeer, event: str) -> str:
    if event == "update":
        return "seed" if peer.phase.startswith("seeding") else "download"
    return event


class Load:
    """The open-loop sender: the fleet, one aiohttp session per source address, the schedule."""

    def __init__(self, args: argparse.Namespace, url: str, peers: list[SimPeer]) -> None:
        self.args = args
        self.url = url.rstrip("/")
        self.peers = peers
        self.turn = 0
        self.work = workload(args)
        self.encode = msgspec.json.Encoder().encode
        self.decode = msgspec.json.Decoder(Reply).decode
        self.sessions: list[aiohttp.ClientSession] = []
        # A real peer makes a credential for every request (peer.tracker_client): so does each announce here.
        self.key = read_token_file(args.fleet_token_file) if args.fleet_token_file else None
        self.inflight: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(args.seed)
        self.following = False
        self._due: list[tuple[float, int, SimPeer]] = []  # --follow: (when, tie-breaker, peer), a heap
        self._order = itertools.count()
        self._again: dict[int, asyncio.TimerHandle] = {}  # peer number -> its announce to send again after a 503
        self.sent_again = 0
        """Announces sent again after a 503 in the whole run."""
        self.step: Step | None = None
        """The step whose window the announces sent now count in (None: priming, a warm-up)."""

    async def __aenter__(self) -> Load:
        per = max(1, self.args.connections // self.args.hosts)
        for h in range(self.args.hosts):
            connector = aiohttp.TCPConnector(limit=per, local_addr=(f"127.0.0.{10 + h}", 0), ttl_dns_cache=None)
            # The deadline is the schedule's (asyncio.timeout_at in _send): no timers of aiohttp's own, no
            # cookies, no headers the tracker ignores; each costs the generator CPU on every request.
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                auto_decompress=False,
            )
            self.sessions.append(session)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for handle in self._again.values():
            handle.cancel()
        for task in list(self.inflight):
            task.cancel()
        await asyncio.gather(*self.inflight, return_exceptions=True)
        for session in self.sessions:
            await session.close()

    async def offer(self, rate: float, seconds: float, step: Step | None) -> None:
        """Send announces at ``rate`` for ``seconds``: the k-th at start + k / rate, answered or not."""
        loop, start = self.loop, self.loop.time()
        end, k = start + seconds, 0
        self.step = step
        while True:
            due = start + k / rate
            if due >= end:
                self.step = None
                return
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
                now = loop.time()
            while due <= now and due < end:
                self._spawn(due, step, now)
                k += 1
                due = start + k / rate

    async def follow(self, meters: Meters, prime_rate: float, warmup: float, duration: float) -> Step:
        """--follow: every peer's first turn spread at ``prime_rate``, then each when the tracker said; the
        announces scheduled in the last ``duration`` seconds are the step's, with the CPU used meanwhile."""
        start = self.loop.time()
        self.following = True
        for k, peer in enumerate(self.peers):
            self._schedule(start + k / prime_rate, peer)
        measure_from = start + len(self.peers) / prime_rate + warmup
        end = measure_from + duration
        step = Step(0.0, duration)
        before = None
        while True:
            now = self.loop.time()
            if before is None and now >= measure_from:
                self.step, before = step, meters.read()
                meters.rss_max = None
            while self._due and self._due[0][0] <= now and now < end:
                due, _, peer = heapq.heappop(self._due)
                self._spawn(due, self.step, now, peer)
            if now >= end:
                break
            # Replies push earlier turns meanwhile: look again at least every 10 ms.
            wake = min(self._due[0][0] if self._due else end, end, now + 0.01)
            await asyncio.sleep(max(0.0, wake - now))
        self.following = False
        if before is not None:
            record_cpu(step, before, meters.read())
        step.rss_max_mb = meters.rss_max
        return step

    def _schedule(self, when: float, peer: SimPeer) -> None:
        heapq.heappush(self._due, (when, next(self._order), peer))

    def _next_turn(self, peer: SimPeer, status: int, reply: Reply | None, busy: float | None) -> None:
        """--follow: when this peer announces next, as a real one would after this answer (``busy``: its
        wait after a shed announce, by :func:`busy_wait`)."""
        if status == 200 and reply is not None:
            wait = reply.interval
            if peer.phase in ("new", "joining"):
                wait = 0.0
            elif peer.downloading:
                wait = min(wait, self.args.download_gap)
        elif busy is not None:
            wait = busy
        else:
            wait = self.rng.uniform(1.0, 5.0)
        self._schedule(self.loop.time() + wait, peer)

    def _spawn(self, due: float, step: Step | None, now: float, peer: SimPeer | None = None) -> None:
        if peer is None:
            peer = self.peers[self.turn % len(self.peers)]
            self.turn += 1
            if self._again:
                # The turn is the announce: one still to be sent again after a 503 is superseded by it.
                handle = self._again.pop(peer.number, None)
                if handle is not None:
                    handle.cancel()
        self._announce(peer, due, step, now, again=False)

    def _send_again(self, peer: SimPeer, due: float) -> None:
        """The announce of ``peer`` shed at its last attempt, sent again (its Retry-After is over)."""
        del self._again[peer.number]
        self.sent_again += 1
        self._announce(peer, due, self.step, self.loop.time(), again=True)

    def _announce(self, peer: SimPeer, due: float, step: Step | None, now: float, *, again: bool) -> None:
        request, done = peer.request(self.work, again=again)
        if step is not None:
            if again:
                step.again += 1
            else:
                step.offered += 1
            step.pending += 1
            step.lag_max = max(step.lag_max, now - due)
            kind = kind_of(peer, request.event)
            step.kinds[kind] = step.kinds.get(kind, 0) + 1
        body = self.encode(request)
        task = self.loop.create_task(self._send(peer, body, done, due, step, request.event, peer.sent))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _post(self, peer: SimPeer, body: bytes) -> tuple[int, bytes, str | None, str]:
        """One announce of ``peer``: the reply's status, body and Retry-After, and the tracker that answered
        (tracker_cluster_load.py chooses among several)."""
        session = self.sessions[peer.source]
        headers = JSON if self.key is None else {**JSON, FLEET_HEADER: self.key.credential(time.time())}
        async with session.post(self.url + peer.task.path, data=body, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers.get("Retry-After"), self.url

    def observed(self, peer: SimPeer, done: dict[int, str], reply: Reply, url: str, due: float) -> None:
        """A 200 reply to ``peer``'s announce that reported ``done``, given by the tracker at ``url``, before
        the peer takes it (a hook for tracker_cluster_load.py)."""

    def failed(self, peer: SimPeer, status: int, due: float) -> None:
        """An announce of ``peer`` scheduled at ``due`` got ``status`` (0: no reply), not 200 (a hook)."""

    async def _send(
        self, peer: SimPeer, body: bytes, done: dict[int, str], due: float, step: Step | None, event: str, serial: int
    ) -> None:
        """Send ``peer``'s announce (of ``event``; the peer's ``serial``-th) scheduled at ``due`` and take its
        reply, counting it in ``step``."""
        status, raw, retry_after, reply, url = 0, b"", None, None, ""
        try:
            async with asyncio.timeout_at(due + self.args.timeout):
                status, raw, retry_after, url = await self._post(peer, body)
        except TimeoutError:
            if step is not None:
                step.timeouts += 1
        except (aiohttp.ClientError, OSError) as exc:
            if step is not None:
                step.errors += 1
                self._sample(step, f"{type(exc).__name__}: {exc}")
        else:
            took = self.loop.time() - due
            if status == 200:
                reply = self.decode(raw)
                self.observed(peer, done, reply, url, due)
                rejected = peer.answered(reply, done)
                if step is not None:
                    step.ok += 1
                    step.latencies.append(took)
                    step.rejected += rejected
            elif step is not None:
                if status == 503:
                    step.unavailable += 1
                else:
                    step.errors += 1
                    self._sample(step, f"{status}: {raw[:200]!r}")
        finally:
            busy = None
            if status != 200:
                peer.unanswered(done)
                self.failed(peer, status, due)
                busy = busy_wait(status, retry_after, event, self.rng)
            if self.following:
                self._next_turn(peer, status, reply, busy)
            elif busy is not None and self.args.retry and peer.sent == serial:
                # A real peer announces again once the wait is over, one announce at a time: only when no
                # later turn of this peer has gone out meanwhile (one whose reply is still to come).
                when = self.loop.time() + busy
                self._again[peer.number] = self.loop.call_at(when, self._send_again, peer, when)
            if step is not None:
                step.finish_one()

    @staticmethod
    def _sample(step: Step, text: str) -> None:
        if len(step.error_samples) < 3:
            step.error_samples.append(text)


class Meters:
    """CPU readings around a window, and the tracker's RSS sampled through it."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.rss_max: float | None = None

    def read(self) -> tuple[float | None, float, MachineCpu]:
        tracker = None
        if self.pid is not None:
            with contextlib.suppress(OSError):
                tracker = process_cpu_seconds(self.pid)
        return tracker, own_cpu_seconds(), MachineCpu.sample()

    async def sample_rss(self) -> None:
        while self.pid is not None:
            rss = read_rss_mb(self.pid)
            if rss is not None:
                self.rss_max = max(self.rss_max or 0.0, rss)
            await asyncio.sleep(0.2)


async def measure(load: Load, meters: Meters, rate: float, args: argparse.Namespace, profile: Path | None) -> Step:
    """One step: warm-up, then the measured window; the step's figures once its announces all ended."""
    await load.offer(rate, args.warmup, None)
    step = Step(rate, args.duration)
    meters.rss_max = None
    before = meters.read()
    spy = Tracker.profile(meters.pid, args.duration, profile, args.pin) if profile and meters.pid else None
    await load.offer(rate, args.duration, step)
    step.rss_max_mb = meters.rss_max
    record_cpu(step, before, meters.read())
    step.windowed = True
    if step.pending:
        await step.closed.wait()
    if spy is not None:
        await asyncio.to_thread(spy.wait)
    return step


def record_cpu(
    step: Step, before: tuple[float | None, float, MachineCpu], after: tuple[float | None, float, MachineCpu]
) -> None:
    if before[0] is not None and after[0] is not None:
        step.tracker_cpu = after[0] - before[0]
    step.own_cpu = after[1] - before[1]
    machine = after[2] - before[2]
    # A process's system time includes the loopback's softirq work done on its behalf, which /proc/stat
    # counts as softirq, not as task time: the rest of the machine is both less these two processes.
    step.other_cpu = machine.tasks + machine.irq - (step.tracker_cpu or 0.0) - step.own_cpu


def print_step(step: Step, args: argparse.Namespace) -> None:
    f = step.figures()
    if args.json:
        print(json.dumps({"rate": step.rate, **f}), flush=True)
        return

    def ms(v: object) -> str:
        return "-" if v is None else f"{v:.1f}"

    cpu = "-" if f["tracker_cpu_pct"] is None else f"{f['tracker_cpu_pct']:.0f}%"
    rss = "-" if f["tracker_rss_max_mb"] is None else f"{f['tracker_rss_max_mb']:.0f}"
    print(
        f"{f['offered_per_s']:>8.0f} {f['ok_per_s']:>8.0f} {f['unavailable_per_s']:>6.0f} {f['errors']:>6} "
        f"{f['timeouts']:>7} {ms(f['p50_ms']):>8} {ms(f['p95_ms']):>8} {ms(f['p99_ms']):>8} {cpu:>6} {rss:>6} "
        f"{f['generator_cpu_pct']:>5.0f}% {f['other_cpu_pct']:>5.0f}% {f['generator_lag_max_ms']:>7.1f}",
        flush=True,
    )
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(step.kinds.items(), key=lambda kv: -kv[1]))
    print(
        f"    announces: {kinds}; sent again after a 503: {step.again}; hash reports rejected: {step.rejected}",
        flush=True,
    )
    for sample in step.error_samples:
        print(f"    e.g. {sample}", flush=True)


HEADER = (
    f"{'offered/s':>8} {'ok/s':>8} {'503/s':>6} {'errors':>6} {'timeouts':>7} {'p50 ms':>8} {'p95 ms':>8} "
    f"{'p99 ms':>8} {'CPU':>6} {'RSS MB':>6} {'gen':>6} {'other':>6} {'lag ms':>7}"
)


async def run(args: argparse.Namespace, url: str, pid: int | None, peers: list[SimPeer]) -> list[Step]:
    meters = Meters(pid)
    sampler = asyncio.create_task(meters.sample_rss())
    steps = []
    try:
        async with Load(args, url, peers) as load:
            prime_rate = args.prime_rate or args.rates[0]
            if args.follow:
                step = await load.follow(meters, prime_rate, args.warmup, args.duration)
                step.windowed = True
                if step.pending:
                    await step.closed.wait()
                print_step(step, args)
                return [step]
            await load.offer(prime_rate, args.prime * len(peers) / prime_rate, None)
            for rate in args.rates:
                profile = args.profile if rate == (args.profile_rate or args.rates[-1]) else None
                step = await measure(load, meters, rate, args, profile)
                print_step(step, args)
                steps.append(step)
    finally:
        sampler.cancel()
    return steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", help="database URL (default: a fresh SQLite file); a SQL server gets a scratch database")
    p.add_argument("--url", help="load a running tracker at this URL instead of starting one")
    p.add_argument("--pid", type=int, help="with --url: the tracker's process id, for its CPU and RSS")
    p.add_argument("--src", type=Path, default=CHECKOUT_SRC, help="the src/ the started tracker runs (this checkout's)")
    p.add_argument("--rates", default="250,500,1000,2000,3000", help="offered announces per second, one step each")
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds at each rate (default 5)")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds at each rate (default 15)")
    p.add_argument("--prime", type=float, default=2.0, help="turns of every peer at the first rate before the steps")
    p.add_argument("--prime-rate", type=float, help="announces per second while priming (default: the first rate)")
    p.add_argument(
        "--timeout",
        type=float,
        default=PEER_TIMEOUT.total,
        help="seconds after its schedule an announce times out (10)",
    )
    p.add_argument("--peers", type=int, default=10_000, help="simulated peers (default 10000)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"SIZExCOUNT swarms, scaled to --peers (default {DEFAULT_MIX})")
    p.add_argument("--pieces", default="256-4096", help="pieces per task, LOW-HIGH log-uniform (default 256-4096)")
    p.add_argument("--seed-share", type=float, default=0.2, help="share of each swarm seeding from the start")
    p.add_argument("--want", type=int, default=4, help="leases a downloader asks for (default 4)")
    p.add_argument("--download-turns", type=int, default=12, help="announces a download takes at least")
    p.add_argument("--seed-turns", type=int, default=24, help="announces a finished downloader seeds for")
    p.add_argument("--racks", type=int, default=0, help="racks (8 to a site) for labelled peers; 0: no labels")
    p.add_argument("--racked-share", type=float, default=0.5, help="share of peers labelled when --racks is set")
    p.add_argument("--hosts", type=int, default=16, help="loopback source addresses the peers are spread over")
    p.add_argument("--connections", type=int, default=1024, help="keep-alive connections in all (default 1024)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the tracker and generator")
    p.add_argument(
        "--generator-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop" if uvloop_installed() else "asyncio",
        help="this generator's event loop (default uvloop when installed: the generator's client then costs less "
        "of its core, so on a slow machine it falls behind its schedule less; the tracker's loop is its own)",
    )
    p.add_argument("--profile", type=Path, help="py-spy record the tracker through the last step (collapsed stacks)")
    p.add_argument("--profile-rate", type=float, help="the step --profile records (default: the last)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the fleet's shape")
    p.add_argument("--json", action="store_true", help="one JSON object per step")
    p.add_argument("--follow", action="store_true", help="peers announce when the tracker says (closed loop)")
    p.add_argument(
        "--no-retry",
        dest="retry",
        action="store_false",
        help="a shed announce (503) waits for the peer's next turn, not its Retry-After (open loop)",
    )
    p.add_argument("--download-gap", type=float, default=5.0, help="--follow: a downloader's longest gap (5 s)")
    p.add_argument("--idle-share", type=float, default=0.0, help="share of the tasks nobody downloads (default 0)")
    p.add_argument("--tracker-args", default="", help="more options for the started tracker, as one string")
    p.add_argument(
        "--fleet-token-file",
        type=Path,
        help="the tracker needs this fleet token, and every announce carries a credential made from it",
    )
    args = p.parse_args(argv)
    try:
        args.rates = [float(r) for r in args.rates.split(",")]
        args.mix = parse_mix(args.mix)
        args.pieces = parse_range(args.pieces)
    except ValueError as exc:
        p.error(str(exc))
    if not args.rates or min(args.rates) <= 0 or (args.prime_rate is not None and args.prime_rate <= 0):
        p.error("--rates takes positive announces per second")
    if args.peers < 1 or not 1 <= args.hosts <= 200 or args.connections < args.hosts:
        p.error("--peers must be positive, --hosts 1-200, --connections at least --hosts")
    if args.profile_rate is not None and args.profile_rate not in args.rates:
        p.error("--profile-rate must be one of --rates")
    if args.url and args.db:
        p.error("--url loads a running tracker: its database is its own (no --db)")
    if not 0 <= args.seed_share <= 1 or not 0 <= args.racked_share <= 1 or args.want < 0:
        p.error("--seed-share and --racked-share are shares (0-1); --want is not negative")
    if not 0 <= args.idle_share <= 1 or args.download_gap <= 0:
        p.error("--idle-share is a share (0-1); --download-gap is positive")
    if args.url and args.tracker_args:
        p.error("--tracker-args are for a tracker started here, not one at --url")
    args.tracker_args = shlex.split(args.tracker_args)
    args.pin = args.pin and (os.cpu_count() or 1) >= 2
    return args


def workload(args: argparse.Namespace) -> Workload:
    return Workload(
        args.want,
        args.download_turns,
        args.seed_turns,
        args.seed_share,
        args.racks,
        args.racked_share,
        args.idle_share,
    )


@contextlib.contextmanager
def tracker_for(args: argparse.Namespace, peer_ttl: float, tmp: Path) -> Iterator[tuple[str, int | None]]:
    if args.url:
        yield args.url, args.pid
        return
    with scratch_database(args.db, tmp) as db:
        extra = [*args.tracker_args]
        if args.fleet_token_file:
            extra += ["--fleet-token-file", str(args.fleet_token_file)]
        log = tmp / "tracker.log"
        with Tracker.start(db, args.src, peer_ttl=peer_ttl, pin=args.pin, log=log, extra=extra) as tracker:
            yield tracker.url, tracker.pid


T = TypeVar("T")


def run_generator(args: argparse.Namespace, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on the generator's event loop (``--generator-loop``)."""
    factory = None
    if args.generator_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(work)


def main() -> int:
    args = parse_args()
    peers = build_fleet(
        task_sizes(args.mix, args.peers), args.pieces, workload(args), args.hosts, random.Random(args.seed)
    )
    tasks = {id(p.task): p.task for p in peers}
    # The fleet lives as long as the run: out of the collector's sight, a full collection does not walk it
    # (a pause that would stall the schedule).
    gc.collect()
    gc.freeze()
    # Open loop: no peer expires between its turns. --follow: the tracker's own TTLs, which follow its intervals.
    peer_ttl = 15.0 if args.follow else max(15.0, 3 * len(peers) / min([*args.rates, args.prime_rate or args.rates[0]]))
    with (
        tempfile.TemporaryDirectory(prefix="tracker-load-") as tmp,
        tracker_for(args, peer_ttl, Path(tmp)) as (url, pid),
    ):
        if args.pin:
            os.sched_setaffinity(0, {1})
        where = "not pinned"
        if args.pin:
            where = "generator pinned to CPU 1" if args.url else "tracker pinned to CPU 0, generator to CPU 1"
        summary = (
            f"{len(peers)} peers in {len(tasks)} tasks ({', '.join(f'{s}x{c}' for s, c in args.mix)} scaled), "
            f"{min(t.pieces for t in tasks.values())}-{max(t.pieces for t in tasks.values())} pieces; "
            f"tracker {url} ({args.db or ('given' if args.url else 'sqlite')}, --peer-ttl {peer_ttl:g}); {where}; "
            f"generator on {args.generator_loop}"
        )
        print(json.dumps({"setup": summary}) if args.json else summary, flush=True)
        if not args.json:
            print(HEADER, flush=True)
        steps = run_generator(args, run(args, url, pid, peers))
    if args.profile and steps:
        for line in top_functions(args.profile, 10):
            print(line)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
