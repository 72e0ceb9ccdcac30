#!/usr/bin/env python3
"""Open-loop load on a cluster of ``shoal tracker`` processes sharing one PostgreSQL (or MariaDB) database:
tracker_load.py's simulated fleet, its announces spread over the trackers as real peers spread them, and
what each tracker answered, at what CPU and memory; optionally one tracker SIGKILLed under load.

``--trackers N`` trackers start on a scratch database of ``--db`` (default this machine's PostgreSQL), each
on a kernel-chosen port; the load starts once every one sees all N live. Each simulated peer has its
host's list of the trackers, as ``--tracker URL1,URL2`` configures a real one: ``--lists rotated`` (the
default) gives the hosts the list rotated by their number (half the hosts start at the first tracker, half
at the second: what an operator spreading a fleet, or DNS round robin, does), ``--lists same`` one list
for all. A peer asks as peer.tracker_client does: the owner a forwarding tracker named for its task (in
the X-Shoal-Owner header of any reply, a 503 included, or a forwarded announce's ``AnnounceResponse.owner``;
``--no-hints`` ignores both, as clients did before the hint), else its current tracker, moving to the next
in its list at once when one cannot be reached.

With ``--pin`` (the default on two or more cores) every tracker runs on CPU 0 and the generator on CPU 1:
on a 2-core machine the trackers then share one core, so N trackers are compared with one by announces
answered per tracker CPU-second (the sum of the trackers' user + system time in the window,
/proc/PID/stat), and "N x that" is the saturated rate they would reach with a core each. The database
server is not pinned; its CPU shows as "other".

``--tracker-cpu CORES`` (root, cgroup v1): each tracker runs in a cgroup of its own capped at CORES of CPU
time (``cpu.cfs_quota_us``; 0.4: 40 ms in every 100 ms), so every tracker is bound by its own CPU while the
generator and the database server keep the rest of the machine, and N trackers are compared with one by
announces answered in time at saturation, not per CPU-second. The cgroups are removed at the end, on error
too. Printed then per tracker: the periods it was throttled in (out of its quota), and per step the
database server's CPU (its processes by name, ``postgres`` or ``mariadbd``), to show it is not the limit.

Printed per step: offered/s, answered/s, 503/s, errors, timeouts, p50/p99, the trackers' CPU together and
answered per CPU-second, the generator's CPU and lag; then per tracker its CPU, largest RSS, JSON announces it
answered (/metrics), the origin leases it granted afresh, the forwards it made, and the connections its peers'
lane handed to the application (in the window, and since its start); the forwarded share (answers that named
an owner), and the refusals (503s) that named one in the header. At the end, the duplicate leases of the whole
run (priming and warm-ups too), those across owners whose holder had been refused since its last answer apart,
with examples, and the tasks each tracker placed on another by balancing.

The trackers balance their load (core.balance) as they would in production: a step's figures are
steady only once the busy tracker's placements have taken effect, a round (``--balance-round``, pass it
in ``--tracker-args``) plus about 8 s after the load got uneven, so prime at a rate past the balancing
floor for long enough (``--prime``, ``--prime-rate``); ``--tracker-args=--no-balance`` compares without.

``--kill-after S``: S seconds into the last step's measured window, SIGKILL tracker ``--victim`` (default
the last). Printed: the tasks it owned then (by the hash over the members a survivor lists: a task
placed by load is counted with its hash owner, so run kills with ``--no-balance`` for exact counts), for
their announces scheduled after the kill a timeline per second (sent, answered, 503, failed), when each
of them was answered again (median, 90th percentile, last), the last failure's time, the origin leases
granted twice (below), and the lines with ERROR or a traceback in each survivor's log.

A duplicate lease: a piece of a task leased to one peer while another peer's lease on it was live by the
trackers' own rules, counted from the grants in the replies, in every window (``tracker_lease_overlaps.py``:
a grant seen before the reply to the holder's report of the piece is judged by that report, as the tracker
answers a report only once its hash has committed and may lease the piece again meanwhile for a spot
check), apart by who granted the two: one tracker, or two across an ownership move.

Run it (from a checkout, under the CPU lock on a shared machine)::

    python3 benchmarks/tracker_cluster_load.py --trackers 1 --rates 500,700,900 --prime-rate 800
    python3 benchmarks/tracker_cluster_load.py --trackers 2 --rates 500,700,900 --prime-rate 800
    python3 benchmarks/tracker_cluster_load.py --trackers 2 --rates 600 --duration 40 --kill-after 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT_SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(CHECKOUT_SRC))  # the protocol this generator speaks is its own checkout's

import aiohttp  # noqa: E402

import tracker_load  # noqa: E402
from shoal.core.owner_hint import OWNER_HEADER  # noqa: E402
from shoal.core.ownership import TrackerMember, owner  # noqa: E402
from shoal.core.tickets import FLEET_HEADER  # noqa: E402
from shoal.testing.cpu import MachineCpu, process_cpu_seconds  # noqa: E402
from shoal.testing.metrics import parse  # noqa: E402
from tracker_lease_overlaps import Leases  # noqa: E402
from tracker_load import HEADER, JSON, Load, Meters, Step, print_step, record_cpu  # noqa: E402
from tracker_load_peers import Reply, SimPeer, build_fleet, task_sizes  # noqa: E402
from tracker_load_proc import CpuQuota, Tracker, database_cpu, read_rss_mb, scratch_database, top_functions  # noqa: E402

DEFAULT_DB = "postgresql://postgres@127.0.0.1/test"


@dataclass
class Kill:
    """What happened to the announces of the killed tracker's tasks after the kill."""

    at: float
    tasks: set[str]
    per_second: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    first_ok: dict[str, float] = field(default_factory=dict)
    asked: set[str] = field(default_factory=set)
    last_failure: float | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    def record(self, task_id: str, due: float, status: int, now: float) -> None:
        if task_id not in self.tasks or due < self.at:
            return
        self.asked.add(task_id)
        second = int(due - self.at)
        self.per_second[second]["sent"] += 1
        if status == 200:
            self.per_second[second]["ok"] += 1
            self.first_ok.setdefault(task_id, now - self.at)
        else:
            self.per_second[second]["503" if status == 503 else "failed"] += 1
            self.last_failure = max(self.last_failure or 0.0, now - self.at)


class ClusterLoad(Load):
    """tracker_load's sender, each peer asking the trackers as a real client with a list would."""

    def __init__(self, args: argparse.Namespace, urls: list[str], peers: list[SimPeer], leases: Leases) -> None:
        super().__init__(args, urls[0], peers)
        self.urls = urls
        count = len(urls)
        self.lists = [
            [urls[(h + k) % count] for k in range(count)] if args.lists == "rotated" else list(urls)
            for h in range(args.hosts)
        ]
        self.current: dict[int, int] = {}
        self.hints: dict[int, str] = {}
        self.leases = leases
        self.kill: Kill | None = None
        self.forwarded_replies = 0
        self.named_refusals = 0

    async def _ask(self, peer: SimPeer, url: str, body: bytes) -> tuple[int, bytes, str | None, str]:
        session = self.sessions[peer.source]
        headers = JSON if self.key is None else {**JSON, FLEET_HEADER: self.key.credential(time.time())}
        async with session.post(url + peer.task.path, data=body, headers=headers) as resp:
            raw = await resp.read()
            named = resp.headers.get(OWNER_HEADER)
        if named and resp.status != 200:
            self.named_refusals += 1
        if named and self.args.hints:
            self.hints[peer.number] = named.rstrip("/")
        return resp.status, raw, resp.headers.get("Retry-After"), url

    async def _post(self, peer: SimPeer, body: bytes) -> tuple[int, bytes, str | None, str]:
        outcome = await self._choose(peer, body)
        if outcome[0] != 200 and self.kill is not None and peer.task.task_id in self.kill.tasks:
            self.kill.reasons[outcome[1][:90].decode(errors="replace")] += 1
        return outcome

    async def _choose(self, peer: SimPeer, body: bytes) -> tuple[int, bytes, str | None, str]:
        hint = self.hints.get(peer.number)
        if hint is not None:
            try:
                return await self._ask(peer, hint, body)
            except (aiohttp.ClientConnectionError, OSError):
                self.hints.pop(peer.number, None)
        trackers = self.lists[peer.source]
        start = self.current.get(peer.number, 0)
        for step in range(len(trackers)):
            index = (start + step) % len(trackers)
            try:
                outcome = await self._ask(peer, trackers[index], body)
            except (aiohttp.ClientConnectionError, OSError):
                if step == len(trackers) - 1:
                    raise
                continue
            self.current[peer.number] = index
            return outcome
        raise AssertionError("unreachable: the loop returns or raises")

    async def _send(
        self, peer: SimPeer, body: bytes, done: dict[int, str], due: float, step: Step | None, event: str, serial: int
    ) -> None:
        self.leases.sent(peer.identity.peer_id, done)
        await super()._send(peer, body, done, due, step, event, serial)

    def observed(self, peer: SimPeer, done: dict[int, str], reply: Reply, url: str, due: float) -> None:
        if reply.owner:
            self.forwarded_replies += 1
            if self.args.hints:
                self.hints[peer.number] = reply.owner.rstrip("/")
        if self.kill is not None:
            self.kill.record(peer.task.task_id, due, 200, self.loop.time())
        leases = list(reply.leases) if peer.phase == "down" else []
        decider = reply.owner.rstrip("/") if reply.owner else url
        self.leases.answered(
            peer.task.task_id,
            peer.identity.peer_id,
            leases,
            due,
            self.loop.time(),
            decider,
            done=done,
            rejected=reply.rejected,
        )

    def failed(self, peer: SimPeer, status: int, due: float) -> None:
        self.leases.refused(peer.identity.peer_id)
        if self.kill is not None:
            self.kill.record(peer.task.task_id, due, status, self.loop.time())


class ClusterMeters(Meters):
    """CPU of every tracker around a window (their sum is the step's), each one's largest RSS, the periods each
    tracker's CPU quota throttled it in (with --tracker-cpu) and the database server's CPU."""

    def __init__(self, pids: list[int], quotas: list[CpuQuota], database: Callable[[], float]) -> None:
        super().__init__(pids[0])
        self.pids = pids
        self.quotas = quotas
        self.database = database
        self.each: dict[int, float] = {}
        self.rss_each: dict[int, float] = {}
        self.throttled: list[int] = [0] * len(quotas)
        self.database_seconds = 0.0

    def read(self) -> tuple[float | None, float, MachineCpu]:
        _, own, machine = super().read()
        for pid in self.pids:
            with contextlib.suppress(OSError):
                self.each[pid] = process_cpu_seconds(pid)
        self.throttled = [quota.throttled()[0] for quota in self.quotas]
        self.database_seconds = self.database()
        return sum(self.each.values()), own, machine

    async def sample_rss(self) -> None:
        while True:
            for pid in self.pids:
                rss = read_rss_mb(pid)
                if rss is not None:
                    self.rss_each[pid] = max(self.rss_each.get(pid, 0.0), rss)
            await asyncio.sleep(0.2)


async def metrics_of(session: aiohttp.ClientSession, url: str) -> tuple[float, float, float, float, float]:
    """A tracker's JSON announces answered ok, its forwards out and in, the connections its peers' lane
    handed to the application, and the origin leases it granted afresh, from its /metrics (0s once it is
    gone)."""
    try:
        async with session.get(f"{url}/metrics") as reply:
            scrape = parse(await reply.text())
    except (aiohttp.ClientError, OSError):
        return 0.0, 0.0, 0.0, 0.0, 0.0
    return (
        scrape.total("shoal_tracker_announces_total", kind="json", outcome="ok"),
        scrape.total("shoal_tracker_forwarded_total", direction="out"),
        scrape.total("shoal_tracker_forwarded_total", direction="in"),
        scrape.total("shoal_tracker_lane_handovers_total"),
        scrape.total("shoal_tracker_leases_granted_total"),
    )


async def placed_by(session: aiohttp.ClientSession, url: str) -> str:
    """The tasks a tracker placed on another member since its start (its /metrics), or "-" once it is gone."""
    try:
        async with session.get(f"{url}/metrics") as reply:
            scrape = parse(await reply.text())
    except (aiohttp.ClientError, OSError):
        return "-"
    return f"{scrape.total('shoal_tracker_cluster_placed_tasks_total'):.0f}"


async def members_of(session: aiohttp.ClientSession, url: str) -> list[TrackerMember]:
    async with session.get(f"{url}/v1/cluster") as reply:
        rows = (await reply.json())["members"]
    return [TrackerMember(m["tracker_id"], m["url"], m["active_from"], m["expires"]) for m in rows]


async def all_live(urls: list[str]) -> None:
    """Wait until every tracker lists all of them live (a new member counts JOIN_DELAY after it joined)."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 60
        while True:
            counts = []
            for url in urls:
                members = await members_of(session, url)
                counts.append(sum(m.live(time.time()) for m in members))
            if all(c == len(urls) for c in counts):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"the trackers did not all see each other live within 60 s: {counts}")
            await asyncio.sleep(0.5)


async def kill_one(load: ClusterLoad, pids: list[int], urls: list[str], victim: int, after: float) -> None:
    await asyncio.sleep(after)
    survivor = urls[(victim + 1) % len(urls)]
    async with aiohttp.ClientSession() as session:
        members = await members_of(session, survivor)
    doomed = next(m.tracker_id for m in members if m.url == urls[victim])
    now = time.time()
    tasks = {p.task.task_id for p in load.peers}
    theirs = {t for t in tasks if (o := owner(t, members, now)) is not None and o.tracker_id == doomed}
    os.kill(pids[victim], signal.SIGKILL)
    load.kill = Kill(load.loop.time(), theirs)
    print(f"    killed tracker {victim} ({urls[victim]}), which owned {len(theirs)} of {len(tasks)} tasks", flush=True)


async def step_at(load: ClusterLoad, meters: ClusterMeters, rate: float, args: argparse.Namespace, last: bool) -> Step:
    await load.offer(rate, args.warmup, None)
    step = Step(rate, args.duration)
    meters.rss_each.clear()
    async with aiohttp.ClientSession() as session:
        before_metrics = [await metrics_of(session, u) for u in load.urls]
        before = meters.read()
        each_before = dict(meters.each)
        throttled_before, database_before = meters.throttled, meters.database_seconds
        forwarded_before, duplicates_before = load.forwarded_replies, load.leases.duplicates
        refusals_before = load.named_refusals
        across_before, settled_before = load.leases.across_owners, load.leases.settled
        spies = []
        if last and args.spy:
            args.spy.mkdir(parents=True, exist_ok=True)
            for i, pid in enumerate(meters.pids):
                out = args.spy / f"tracker{i}.txt"
                spies.append((out, Tracker.profile(pid, args.duration, out, args.pin)))
        killer = None
        if last and args.kill_after is not None:
            killer = asyncio.create_task(kill_one(load, meters.pids, load.urls, args.victim, args.kill_after))
        await load.offer(rate, args.duration, step)
        record_cpu(step, before, meters.read())
        each = {pid: meters.each.get(pid, 0.0) - each_before.get(pid, 0.0) for pid in meters.pids}
        throttled = [a - b for a, b in zip(meters.throttled, throttled_before, strict=True)]
        database = meters.database_seconds - database_before
        after_metrics = [await metrics_of(session, u) for u in load.urls]
    step.windowed = True
    if step.pending:
        await step.closed.wait()
    if killer is not None:
        await killer
    for _, spy in spies:
        await asyncio.to_thread(spy.wait)
    print_step(step, args)
    relayed, answered = 0.0, 0.0  # answered: by the trackers, a forward counted by both
    for i, (pid, url) in enumerate(zip(meters.pids, load.urls, strict=True)):
        if load.kill is not None and i == args.victim:
            print(f"    tracker {i} {url}: killed {args.kill_after:g} s into the window", flush=True)
            continue
        ok = after_metrics[i][0] - before_metrics[i][0]
        out = after_metrics[i][1] - before_metrics[i][1]
        handed = after_metrics[i][3] - before_metrics[i][3]
        granted = after_metrics[i][4] - before_metrics[i][4]
        relayed += out
        answered += ok
        rss = meters.rss_each.get(pid)
        quota = ""
        if meters.quotas:
            periods = args.duration * 1e6 / int((meters.quotas[i].path / "cpu.cfs_period_us").read_text())
            quota = f", throttled in {throttled[i]} of {periods:.0f} periods (quota {args.tracker_cpu:g} core)"
        print(
            f"    tracker {i} {url}: CPU {each[pid]:.1f} s ({each[pid] / args.duration:.0%}), RSS max "
            f"{'-' if rss is None else f'{rss:.0f} MB'}, JSON announces ok {ok:.0f}, origin leases granted "
            f"{granted:.0f}, forwarded out {out:.0f}, "
            f"connections handed over by the lane {handed:.0f} (of {after_metrics[i][3]:.0f} since the start){quota}",
            flush=True,
        )
    cpu = step.tracker_cpu or 0.0
    in_time = step.ok / cpu if cpu else 0.0
    print(
        f"    trackers' CPU {cpu:.1f} s in {args.duration:g} s: {in_time:.0f} answered in time per tracker "
        f"CPU-second (the trackers' /metrics: {answered / args.duration:.0f} ok/s, forwards counted twice); "
        f"the database server's CPU {database:.1f} s ({database / args.duration:.0%} of a core)",
        flush=True,
    )
    for out, _ in spies:
        for line in top_functions(out, 8):
            print(f"    {line}")
    named = load.forwarded_replies - forwarded_before
    print(
        f"    forwarded share {named / step.ok if step.ok else 0:.1%} of the answers (replies naming an owner: "
        f"{named}; the trackers forwarded {relayed:.0f}; refusals naming one: "
        f"{load.named_refusals - refusals_before}); duplicate leases in the window: "
        f"{load.leases.duplicates - duplicates_before} by one tracker, "
        f"{load.leases.across_owners - across_before} across owners (grants seen before the holder's report was "
        f"answered, then found to follow it: {load.leases.settled - settled_before}; still waiting on a report: "
        f"{load.leases.undecided})",
        flush=True,
    )
    return step


def report_logs(logs: list[Path], victim: int | None) -> None:
    """Each tracker's log lines with ERROR or a traceback, and its rejoins after a stall (tracker.cluster)."""
    for i, log in enumerate(logs):
        lines = log.read_text().splitlines()
        bad = [line for line in lines if "ERROR" in line or "Traceback" in line]
        rejoins = sum("joining again" in line for line in lines)
        example = f", e.g. {bad[0][:200]}" if bad else ""
        who = "killed" if i == victim else "survivor" if victim is not None else "tracker"
        print(f"{who} {i}'s log: {len(bad)} lines with ERROR or a traceback, {rejoins} rejoins{example}")


def report_kill(kill: Kill) -> None:
    print(f"after the kill, the {len(kill.tasks)} tasks it owned ({len(kill.asked)} announced to since):")
    for second in sorted(kill.per_second)[:20]:
        c = kill.per_second[second]
        print(
            f"    {second:>3}-{second + 1:<3} s: sent {c['sent']:>5}, ok {c['ok']:>5}, 503 {c['503']:>5}, "
            f"failed {c['failed']:>4}"
        )
    times = sorted(kill.first_ok[t] for t in kill.asked if t in kill.first_ok)
    never = len(kill.asked) - len(times)
    if times:
        p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
        print(
            f"    answered again after: median {statistics.median(times):.1f} s, p90 {p90:.1f} s, last "
            f"{times[-1]:.1f} s; never answered: {never}"
        )
    last = "none" if kill.last_failure is None else f"{kill.last_failure:.1f} s after the kill"
    print(f"    the last announce of those tasks not answered 200: {last}")
    for reason, n in kill.reasons.most_common(4):
        print(f"    {n} times: {reason}")


async def run(
    args: argparse.Namespace,
    urls: list[str],
    pids: list[int],
    peers: list[SimPeer],
    peer_ttl: float,
    logs: list[Path],
    quotas: list[CpuQuota],
) -> None:
    await all_live(urls)
    meters = ClusterMeters(pids, quotas, database_cpu(args.db))
    sampler = asyncio.create_task(meters.sample_rss())
    leases = Leases(peer_ttl)
    try:
        async with ClusterLoad(args, urls, peers, leases) as load:
            prime_rate = args.prime_rate or args.rates[0]
            await load.offer(prime_rate, args.prime * len(peers) / prime_rate, None)
            print(HEADER, flush=True)
            for n, rate in enumerate(args.rates):
                await step_at(load, meters, rate, args, last=n == len(args.rates) - 1)
            if load.kill is not None:
                report_kill(load.kill)
            report_logs(logs, args.victim if load.kill is not None else None)
            async with aiohttp.ClientSession() as session:
                placed = [await placed_by(session, url) for url in urls]
            print(
                f"tasks placed by balancing in the whole run, by each tracker: {', '.join(placed)}; "
                f"duplicate leases in the whole run (priming and warm-ups too): {leases.duplicates} by one tracker, "
                f"{leases.across_owners} across owners ({leases.across_refused} of them with the holder refused "
                f"since its last answer); replies naming an owner (a task moved, or a forward): "
                f"{load.forwarded_replies}; announces sent again after a 503: {load.sent_again}",
                flush=True,
            )
            if leases.examples:
                print(f"duplicate leases, e.g. {'; '.join(leases.examples)}")
            if leases.across_examples:
                print(f"across owners, e.g. {'; '.join(leases.across_examples)}")
    finally:
        sampler.cancel()


def main() -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--trackers", type=int, default=2)
    extra.add_argument("--lists", choices=("rotated", "same"), default="rotated")
    extra.add_argument("--no-hints", dest="hints", action="store_false")
    extra.add_argument("--kill-after", type=float)
    extra.add_argument("--victim", type=int)
    extra.add_argument("--logs", type=Path)
    extra.add_argument("--spy", type=Path)
    extra.add_argument("--tracker-cpu", type=float)
    ours, rest = extra.parse_known_args()
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        print(
            "options: --trackers N (2), --lists rotated|same, --no-hints, --kill-after S, --victim I, --logs DIR "
            "(the trackers' logs kept there), --spy DIR (py-spy profiles of each tracker through the last step), "
            "--tracker-cpu CORES (each tracker in a cgroup capped at CORES: root, cgroup v1), "
            "and tracker_load.py's (below)\n"
        )
    args = tracker_load.parse_args(rest)
    args.__dict__.update(vars(ours))
    args.db = args.db or DEFAULT_DB
    if args.url or args.follow or args.profile:
        raise SystemExit("tracker_cluster_load.py starts its trackers: no --url, --follow or --profile")
    if args.db.startswith("sqlite") or args.trackers < 1:
        raise SystemExit("--trackers must be at least 1, on a PostgreSQL or MySQL/MariaDB --db")
    args.victim = args.trackers - 1 if args.victim is None else args.victim
    if args.kill_after is not None and (args.trackers < 2 or not 0 <= args.victim < args.trackers):
        raise SystemExit("--kill-after needs --trackers 2 or more and --victim one of them (0 to N-1)")
    peers = build_fleet(
        task_sizes(args.mix, args.peers), args.pieces, tracker_load.workload(args), args.hosts, random.Random(args.seed)
    )
    gc.collect()
    gc.freeze()
    peer_ttl = max(15.0, 3 * len(peers) / min([*args.rates, args.prime_rate or args.rates[0]]))
    with tempfile.TemporaryDirectory(prefix="tracker-cluster-") as tmp, contextlib.ExitStack() as stack:
        db = stack.enter_context(scratch_database(args.db, Path(tmp)))
        started, quotas = [], []
        logs = [Path(tmp) / f"tracker{i}.log" for i in range(args.trackers)]
        for i in range(args.trackers):
            quota = None
            if args.tracker_cpu is not None:
                # Entered before its tracker, so left after the tracker has exited: an empty cgroup goes.
                quota = stack.enter_context(CpuQuota.made(f"shoal-bench-{os.getpid()}-{i}", args.tracker_cpu))
                quotas.append(quota)
            tracker = Tracker.start(
                db, args.src, peer_ttl=peer_ttl, pin=args.pin, log=logs[i], extra=args.tracker_args, quota=quota
            )
            started.append(stack.enter_context(tracker))
        if args.pin:
            os.sched_setaffinity(0, {1})
        where = "trackers pinned to CPU 0, generator to CPU 1" if args.pin else "not pinned"
        if quotas:
            where += f"; each tracker capped at {args.tracker_cpu:g} core (a cgroup of its own)"
        print(
            f"{len(peers)} peers, {args.trackers} trackers on {args.db.split('@')[-1]} (--peer-ttl {peer_ttl:g}), "
            f"lists {args.lists}, owner hints {'on' if args.hints else 'off'}; {where}",
            flush=True,
        )
        try:
            tracker_load.run_generator(
                args, run(args, [t.url for t in started], [t.pid for t in started], peers, peer_ttl, logs, quotas)
            )
        finally:
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in logs:
                    shutil.copy(log, args.logs / log.name)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
