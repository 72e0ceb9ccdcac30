"""The mirror manager: the one owner of every job's status, its schedule, and the workers that run jobs.

What it does, and where the decisions live::

    config (mirrors.toml) ──load / reload──▶ jobs in SQL (storage.mirror_store)
                                               │
    scheduler tick (every second, or woken) ───┤ core.mirror_plan: lost workers, due jobs, who runs one
                                               ▼
    worker ◀── commands (long-poll: run, cancel, reload) ── manager ◀── reports (syncing, success, failure)
    ctl    ──── start / stop / disable / enable / restart / reload / flush / rm-worker ──▶ manager

Rules, and why:

- Every status change is core.mirror_job's ``apply``; an event it refuses (a stale report, stopping a
  paused job) is an IllegalTransition, a 409 at the HTTP edge, and changes nothing. Each change is one
  store write (one transaction), made under one lock, so two requests never interleave on a job.
- A run has an id (``run_id``) that its command carries and every report must name: a report from a
  run that was since restarted, stopped or declared lost is stale and refused, so it cannot overwrite
  the state of the run that replaced it. The id lives in SQL, so reports survive a manager restart.
- The manager, not the worker, decides retries: a failure with attempts to spare is answered "retry",
  with the Retry event applied, so the state in SQL says which attempt runs.
- Workers belong to a manager session (a random id per manager process). A worker's poll that names
  another session is told to register again, which is how workers notice a manager restart; its
  registration lists the runs it still has, and core.mirror_plan.reconcile decides which of the jobs
  the manager thought it ran were lost with its previous process, and which it must cancel.
- Commands to a worker are numbered and kept until the worker acknowledges them in its next poll, so a
  reply lost on the wire is sent again instead of leaving a job assigned but never started; a run command
  still unacknowledged when the worker registers again (after a reload) is carried over to it.
- A worker unheard of for ``worker_timeout`` is lost: its running jobs fail ("worker lost") and are due
  at once, so the next tick starts them on another worker. Every worker counts as heard of when the
  manager starts, so a manager that was down does not declare them all lost before they re-register.
- Which workers ran each job is kept in memory (``ran_on``): a run's log is read on the worker that ran it
  (shoal.mirror.log_relay asks ``log_holders``). A restart forgets all but the stored last worker, and a
  read then asks the other live workers too, so no schema holds what only a log read needs.
- Time comes from an injectable clock; the HTTP routes are shoal.mirror.manager_http's, how a job is
  shown shoal.mirror.job_views', a live worker's outbox shoal.mirror.worker_link's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import tzinfo
from pathlib import Path

import msgspec

from shoal.core.errors import NoWorker, ProtocolError, ShoalError, StaleRun, StaleSession, UnknownJob, UnknownWorker
from shoal.core.mirror_config import JobSpec, MirrorConfig
from shoal.core.mirror_job import (
    Disabled,
    Enabled,
    JobEvent,
    JobState,
    JobStatus,
    PreJobDone,
    Restart,
    Retry,
    Scheduled,
    Started,
    Stopped,
    SyncFailed,
    SyncSucceeded,
    WorkerLost,
    allowed,
    apply,
    is_running,
)
from shoal.core.mirror_plan import (
    JobTiming,
    WorkerLoad,
    choose_worker,
    due_jobs,
    lost_workers,
    next_schedule,
    reconcile,
)
from shoal.mirror.job_views import job_view, tunasync_job
from shoal.mirror.messages import (
    CancelJob,
    Command,
    Flushed,
    MirrorJobView,
    Registered,
    Reloaded,
    ReloadWorker,
    RunJob,
    RunReportReply,
    TunasyncJob,
    WorkerRemoved,
    WorkerView,
)
from shoal.mirror.worker_link import WorkerLink
from shoal.storage.mirror_store import JobRecord, MirrorStore, WorkerRecord
from shoal.systemd import notify

log = logging.getLogger("shoal.mirror.manager")

MAX_ERROR = 8192
"""Most characters of an error message kept per job (the runner sends at most about 4 KiB of output)."""

TICK = 1.0
"""Seconds between scheduler rounds when nothing wakes it sooner."""


def default_db(config_path: Path | None) -> str:
    """The database when ``[manager] db`` is not set: an SQLite file beside the config file."""
    base = config_path.with_suffix(".db") if config_path is not None else Path("shoal-mirror.db")
    return f"sqlite:///{base.resolve()}"


class MirrorManager:
    """The manager's state owner. ``async with`` opens the store and loads the config's jobs."""

    def __init__(
        self,
        config: MirrorConfig,
        *,
        config_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        load: Callable[[Path], MirrorConfig] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.manager
        self.config_path = config_path
        self.clock = clock
        self._load = load
        self.db = self.settings.db or default_db(config_path)
        self.store = MirrorStore(self.db)
        self.session = secrets.token_hex(8)
        self.links: dict[str, WorkerLink] = {}
        self.started = clock()
        self.hold = min(10.0, self.settings.worker_timeout / 3)
        """Seconds a poll waits for a command before answering empty: well inside the worker timeout."""
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.ran_on: dict[str, list[str]] = {}
        """Job -> the workers this process sent its runs to, newest first, each once: where its earlier run
        logs are (``log_holders``). In memory: a manager restart forgets all but the stored last worker."""
        self.queued: dict[str, str | None] = {}
        """Manual starts waiting for a free slot: job -> the worker asked for (None: any). In memory, as
        tunasync's worker keeps them: a manager restart forgets them, and the schedule runs those jobs."""

    async def __aenter__(self) -> MirrorManager:
        await self.store.__aenter__()
        try:
            self.started = self.clock()
            await self.load_jobs(self.config.jobs)
        except BaseException:
            await self.store.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.__aexit__(None, None, None)

    # -- jobs from the configuration -----------------------------------------------------------------

    def spec_of(self, job: JobRecord) -> JobSpec | None:
        try:
            return JobSpec.from_json(dict(job.spec))
        except ProtocolError as exc:  # written by an older version, say; the job cannot run as stored
            log.warning("job %s has an unreadable spec (%s)", job.name, exc)
            return None

    async def load_jobs(self, specs: Iterable[JobSpec]) -> Reloaded:
        """Make the stored jobs match ``specs``: new ones added, changed ones updated, missing ones disabled.

        A job that is disabled stays disabled when it is listed again: a user disabled it, or it was
        removed and may come back on purpose; ``shoal mirror ctl enable`` brings it back."""
        now = self.clock()
        wanted = {spec.name: spec for spec in specs}
        changes: dict[str, list[str]] = {"added": [], "updated": [], "disabled": []}
        async with self._lock:
            stored = {job.name: job for job in await self.store.jobs()}
            writes: list[JobRecord] = []
            cancels: list[tuple[JobRecord, JobStatus]] = []
            for name, spec in wanted.items():
                spec_json = spec.to_json()
                job = stored.get(name)
                if job is None:
                    new = JobRecord(name=name, spec=spec_json, state=JobState(), updated=now)
                    writes.append(replace(new, next_schedule=next_schedule(spec.interval, spec.cron, new.state, now)))
                    changes["added"].append(name)
                elif dict(job.spec) != spec_json:
                    changed = replace(job, spec=spec_json, updated=now)
                    if not is_running(job.state.status):
                        changed = replace(
                            changed, next_schedule=next_schedule(spec.interval, spec.cron, job.state, now)
                        )
                    writes.append(changed)
                    changes["updated"].append(name)
            for name, job in stored.items():
                if name not in wanted and job.state.status is not JobStatus.DISABLED:
                    writes.append(replace(job, state=apply(job.state, Disabled(), now), updated=now))
                    cancels.append((job, job.state.status))
                    changes["disabled"].append(name)
            await self.store.put_jobs(writes)
            for job, status in cancels:
                self._cancel_if_running(job, status)
        self._wake.set()
        return Reloaded(added=changes["added"], updated=changes["updated"], disabled=changes["disabled"])

    async def reload(self, worker: str | None = None) -> Reloaded:
        """Re-read the config file (its jobs; listening and the database stay as started), or ask one
        worker to re-read its own."""
        if worker is not None:
            link = self.links.get(worker)
            if link is None:
                raise UnknownWorker(f"no live worker named {worker!r}")
            link.send(ReloadWorker())
            return Reloaded(worker=worker, reloading=True)
        if self.config_path is None or self._load is None:
            raise ProtocolError("this manager was not started from a config file; nothing to reload")
        config = await asyncio.to_thread(self._load, self.config_path)  # ConfigError: nothing changes
        self.config = msgspec.structs.replace(self.config, jobs=config.jobs)
        return await self.load_jobs(config.jobs)

    def hangup(self) -> None:
        """SIGHUP: reload the config file in the background (``reload``), logging what changed; a file that
        does not load is logged and the running config kept."""
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reload_logged(self) -> None:
        notify.reloading()  # systemd's reload waits for READY=1 again
        try:
            result = await self.reload()
        except ShoalError as exc:  # ConfigError: a bad file; StoreError: the database is away
            log.error("reload on SIGHUP failed, keeping the running config: %s", exc)
            return
        finally:
            notify.ready()
        changes = {what: getattr(result, what) for what in ("added", "updated", "disabled")}
        summary = "; ".join(f"{what}: {', '.join(names)}" for what, names in changes.items() if names)
        log.warning("reloaded %s on SIGHUP (%s)", self.config_path, summary or "no job changed")

    # -- the scheduler -------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except ShoalError as exc:  # the database is away, say: try again next round
                log.warning("scheduler round failed: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self._wake.wait()

    async def tick(self) -> None:
        """One round: fail the jobs of lost workers, then start the due jobs where there is room."""
        now = self.clock()
        async with self._lock:
            workers = await self.store.workers()
            seen = {w.name: w.last_seen for w in workers}
            seen.update({name: link.last_seen for name, link in self.links.items()})
            lost = lost_workers(seen, now, self.settings.worker_timeout, since=self.started)
            jobs = await self.store.jobs()
            running_on_lost = [j for j in jobs if is_running(j.state.status) and j.worker in set(lost)]
            for name in lost:
                if self.links.pop(name, None) is not None:
                    log.warning("worker %s lost: unheard of for %g s", name, self.settings.worker_timeout)
            if running_on_lost:
                await self._lose(running_on_lost, now)
                jobs = await self.store.jobs()
            by_name = {j.name: j for j in jobs}
            await self._start_queued(by_name, now)
            for name in due_jobs((JobTiming(j.name, j.state, j.next_schedule) for j in jobs), now):
                job = by_name[name]
                spec = self.spec_of(job)
                if spec is None:
                    continue
                chosen = choose_worker(spec.worker, self._loads(by_name.values()))
                if chosen is None:
                    continue
                by_name[name] = await self._begin(job, spec, Scheduled(), chosen, now)

    async def _start_queued(self, by_name: dict[str, JobRecord], now: float) -> None:
        """Start the waiting manual starts that have a free slot now, oldest first; drop those that can no
        longer start (removed, disabled, or running since)."""
        for name, wanted in list(self.queued.items()):
            job = by_name.get(name)
            spec = self.spec_of(job) if job is not None else None
            if job is None or spec is None or not allowed(job.state, Started()):
                del self.queued[name]
                continue
            chosen = choose_worker(wanted, self._loads(by_name.values()))
            if chosen is not None:
                by_name[name] = await self._begin(job, spec, Started(), chosen, now)

    async def _lose(self, jobs: Iterable[JobRecord], now: float) -> None:
        """Fail ``jobs`` as lost with their worker; they are due at once (elsewhere, if need be)."""
        writes = [
            replace(job, state=apply(job.state, WorkerLost(), now), next_schedule=now, run_id=None, updated=now)
            for job in jobs
        ]
        for job in writes:
            log.warning("job %s failed: worker %s lost", job.name, job.worker)
        await self.store.put_jobs(writes)

    def _loads(self, jobs: Iterable[JobRecord]) -> list[WorkerLoad]:
        running: dict[str, int] = {}
        for job in jobs:
            if is_running(job.state.status) and job.worker is not None:
                running[job.worker] = running.get(job.worker, 0) + 1
        return [WorkerLoad(name, link.concurrency, running.get(name, 0)) for name, link in self.links.items()]

    async def _begin(
        self, job: JobRecord, spec: JobSpec, event: JobEvent, worker: str, now: float, *, force: bool = False
    ) -> JobRecord:
        """Apply ``event`` (Scheduled, Started or Restart), give the run a new id and send it to ``worker``."""
        state = apply(job.state, event, now, max_attempts=spec.retries)
        self.queued.pop(job.name, None)  # whatever starts it, a waiting manual start is served
        begun = replace(job, state=state, worker=worker, run_id=secrets.token_hex(8), updated=now)
        await self.store.put_job(begun)
        # The previous run's worker (as stored, so known after a restart too) ran the job before this one.
        earlier = (w for w in (job.worker, *self.ran_on.get(job.name, ())) if w is not None)
        self.ran_on[job.name] = list(dict.fromkeys((worker, *earlier)))
        assert begun.run_id is not None
        self.links[worker].send(RunJob(job=spec, run_id=begun.run_id, attempt=state.attempts, force=force))
        log.info("job %s: %s on worker %s", job.name, type(event).__name__, worker)
        return begun

    def _cancel_if_running(self, job: JobRecord, status: JobStatus) -> None:
        if is_running(status) and job.worker is not None and job.worker in self.links:
            self.links[job.worker].send(CancelJob(job=job.name, run_id=job.run_id))

    # -- the worker protocol -------------------------------------------------------------------------

    async def register(self, name: str, url: str, concurrency: int, running: Iterable[tuple[str, str]]) -> Registered:
        """A worker (re-)registers: record it, and reconcile the runs it has with those assigned to it."""
        now = self.clock()
        reported = {f"{job}:{run}" for job, run in running}
        async with self._lock:
            old = await self.store.worker(name)
            registered = old.registered if old is not None else now
            await self.store.put_worker(WorkerRecord(name, url, concurrency, registered, now))
            previous = self.links.get(name)
            link = self.links[name] = WorkerLink(name, url, concurrency, now)
            jobs = await self.store.jobs()
            mine = {f"{j.name}:{j.run_id}": j for j in jobs if is_running(j.state.status) and j.worker == name}
            # Runs sent to this worker that it has not acknowledged yet (it registered again after a reload,
            # say) are sent again, not failed as lost: it may never have received them.
            undelivered = [
                c for c in (previous.outbox if previous else []) if isinstance(c, RunJob) and _key(c) in mine
            ]
            decided = reconcile(mine, reported | {_key(c) for c in undelivered})
            await self._lose([mine[key] for key in decided.lost], now)
            for key in decided.cancel:
                job_name, _, run_id = key.partition(":")
                link.send(CancelJob(job=job_name, run_id=run_id))
            for command in undelivered:
                link.send(command)
        log.info("worker %s registered (%s, %d at once)", name, url or "no seeder", concurrency)
        self._wake.set()
        return Registered(self.session, self.hold, [k.partition(":")[0] for k in decided.lost])

    async def poll(self, name: str, session: str, ack: int) -> list[Command]:
        """A worker's heartbeat and command fetch: drop what it acknowledged, wait (bounded) for more."""
        link = self.links.get(name)
        if link is None or session != self.session:
            raise StaleSession(f"worker {name!r} is not registered with this manager; register again")
        link.acknowledge(ack)
        await self._heard(link)
        if not link.outbox:
            link.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hold):
                    await link.wake.wait()
        if self.links.get(name) is not link:  # re-registered, removed or lost meanwhile
            raise StaleSession(f"worker {name!r} is not registered with this manager; register again")
        await self._heard(link)
        return list(link.outbox)

    async def _heard(self, link: WorkerLink) -> None:
        link.last_seen = self.clock()
        await self.store.touch_worker(link.name, link.last_seen)

    async def report(
        self,
        job_name: str,
        *,
        worker: str,
        run_id: str,
        event: str,
        error: str = "",
        size: int = 0,
        size_text: str | None = None,
        version: str | None = None,
    ) -> RunReportReply:
        """A worker reports on a run: ``syncing`` (the pre-job hooks are done), ``success`` or ``failure``.

        The answer to a failure says whether to retry at once, and as which attempt."""
        now = self.clock()
        async with self._lock:
            job = await self.store.job(job_name)
            if job is None:
                raise UnknownJob(f"no job named {job_name!r}")
            if job.run_id != run_id or job.worker != worker or not is_running(job.state.status):
                raise StaleRun(f"run {run_id} of job {job_name!r} is not its current run")
            spec = self.spec_of(job)
            retries = spec.retries if spec is not None else 1
            state = job.state
            if event == "syncing":
                state = apply(state, PreJobDone(), now)
            elif event == "success":
                if state.status is JobStatus.PRE_SYNCING:  # the syncing report was lost on the way
                    state = apply(state, PreJobDone(), now)
                state = apply(state, SyncSucceeded(), now)
            elif event == "failure":
                state = apply(state, SyncFailed(error[-MAX_ERROR:]), now, max_attempts=retries)
                if state.retry:
                    state = apply(state, Retry(), now)
            else:
                raise ProtocolError(f"unknown event {event!r} (syncing, success or failure)", field="event")
            changed = replace(job, state=state, updated=now)
            if event == "success":
                changed = replace(changed, size=size, size_text=size_text, version=version)
            if not is_running(state.status) and spec is not None:
                changed = replace(changed, next_schedule=next_schedule(spec.interval, spec.cron, state, now))
            await self.store.put_job(changed)
        if not is_running(state.status):
            self._wake.set()  # a slot is free
            log.info("job %s: %s%s", job_name, state.status.value, f" ({state.error_msg[:200]})" if error else "")
        retry = event == "failure" and is_running(state.status)
        return RunReportReply(state.status.value, retry, state.attempts)

    # -- what users ask (shoal mirror ctl) -----------------------------------------------------------

    async def job(self, name: str) -> JobRecord:
        job = await self.store.job(name)
        if job is None:
            raise UnknownJob(f"no job named {name!r}")
        return job

    def log_holders(self, job: JobRecord) -> list[str]:
        """The workers that may hold ``job``'s run logs, the likeliest first: the worker of its newest run,
        the earlier ones this process sent its runs to (newest first), then every other live worker, since
        a manager restart forgets which ones ran it (a worker without the run answers that it has none)."""
        known = [w for w in (job.worker, *self.ran_on.get(job.name, ())) if w is not None]
        return list(dict.fromkeys([*known, *self.links]))

    async def list_jobs(self, *, include_disabled: bool = False, status: str | None = None) -> list[MirrorJobView]:
        jobs = await self.store.jobs()
        return [
            job_view(j, self.spec_of(j), queued=j.name in self.queued)
            for j in jobs
            if (include_disabled or j.state.status is not JobStatus.DISABLED)
            and (status is None or j.state.status.value == status)
        ]

    async def command(self, name: str, action: str, *, force: bool = False, worker: str | None = None) -> MirrorJobView:
        """start, stop, disable, enable or restart a job; IllegalTransition (409) when its status forbids it.

        A start (or restart) on a worker that runs all it may waits for a free slot (tunasync's behaviour;
        the reply says ``queued``), unless ``force`` runs it at once; with no live worker that may run the
        job at all it is refused (NoWorker). ``worker`` asks for one worker (start only)."""
        now = self.clock()
        async with self._lock:
            job = await self.job(name)
            old = job.state.status
            spec = self.spec_of(job)
            queued = False
            if action in ("start", "restart"):
                if spec is None:
                    raise ProtocolError(f"job {name!r} has an unreadable spec; fix the config and reload")
                wanted = _wanted_worker(spec, worker)
                event: JobEvent = Started() if action == "start" else Restart()
                apply(job.state, event, now)  # IllegalTransition before anything is sent
                others = [j for j in await self.store.jobs() if j.name != name]
                loads = self._loads(others)
                if choose_worker(wanted, loads, force=True) is None:
                    where = f"worker {wanted!r}" if wanted else "worker"
                    raise NoWorker(f"no live {where} can take job {name!r} now (see 'shoal mirror ctl workers')")
                chosen = choose_worker(wanted, loads, force=force)
                self._cancel_if_running(job, old)
                if chosen is None:  # every worker it may run on is full: it waits for a slot
                    if is_running(old):  # a restart: the killed sync is not left counted as running
                        job = replace(job, state=apply(job.state, Stopped(), now), updated=now)
                        await self.store.put_job(job)
                    self.queued[name] = wanted
                    queued = True
                    log.info("job %s: %s queued until a slot frees", name, action)
                else:
                    job = await self._begin(job, spec, event, chosen, now, force=force)
            else:
                events: dict[str, JobEvent] = {"stop": Stopped(), "disable": Disabled(), "enable": Enabled()}
                if action not in events:
                    raise ProtocolError(f"unknown action {action!r}", field="action")
                state = apply(job.state, events[action], now)
                job = replace(job, state=state, updated=now)
                if action == "enable" and spec is not None:
                    job = replace(job, next_schedule=next_schedule(spec.interval, spec.cron, state, now))
                await self.store.put_job(job)
                self._cancel_if_running(job, old)
                self.queued.pop(name, None)  # stopped, disabled or enabled: a waiting start is withdrawn
                log.info("job %s: %s by a user (was %s)", name, action, old.value)
        self._wake.set()
        return job_view(job, spec, queued=queued)

    async def set_size(self, name: str, size: int, text: str | None = None) -> MirrorJobView:
        """Set the size a job's status shows until its next successful sync reports one (tunasync's set-size);
        ``text``: the size as its user wrote it, which ``GET /jobs`` shows as is."""
        async with self._lock:
            job = replace(await self.job(name), size=size, size_text=text, updated=self.clock())
            await self.store.put_job(job)
        return job_view(job, self.spec_of(job), queued=name in self.queued)

    async def tunasync_jobs(self, zone: tzinfo) -> list[TunasyncJob]:
        """Every job, disabled ones too, in tunasync's ``GET /jobs`` shape."""
        return [tunasync_job(job_view(job, self.spec_of(job)), zone, job.size_text) for job in await self.store.jobs()]

    async def workers(self) -> list[WorkerView]:
        jobs = await self.store.jobs()
        loads = {w.name: w.running for w in self._loads(jobs)}
        return [
            WorkerView(
                name=w.name,
                url=w.url,
                concurrency=w.concurrency,
                registered=w.registered,
                last_seen=self.links[w.name].last_seen if w.name in self.links else w.last_seen,
                live=w.name in self.links,
                running=loads.get(w.name, 0),
            )
            for w in await self.store.workers()
        ]

    async def remove_worker(self, name: str) -> WorkerRemoved:
        """Forget a worker; its running jobs fail as lost and are due at once. A live one re-registers."""
        now = self.clock()
        async with self._lock:
            if not await self.store.delete_worker(name):
                raise UnknownWorker(f"no worker named {name!r}")
            link = self.links.pop(name, None)
            if link is not None:
                link.wake.set()  # its waiting poll answers "register again"
            running = [j for j in await self.store.jobs() if is_running(j.state.status) and j.worker == name]
            await self._lose(running, now)
        self._wake.set()
        return WorkerRemoved(name, [j.name for j in running])

    async def flush(self) -> Flushed:
        """Drop the disabled jobs (tunasync's flush)."""
        async with self._lock:
            disabled = [j.name for j in await self.store.jobs() if j.state.status is JobStatus.DISABLED]
            await self.store.delete_jobs(disabled)
        for name in disabled:
            self.ran_on.pop(name, None)
        return Flushed(disabled)


def _wanted_worker(spec: JobSpec, asked: str | None) -> str | None:
    """The worker a start may use: the one asked for, which must be the job's own if it names one."""
    if asked is not None and spec.worker is not None and asked != spec.worker:
        raise ProtocolError(f"job {spec.name!r} runs only on worker {spec.worker!r}, not {asked!r}", field="worker")
    return asked or spec.worker


def _key(command: RunJob) -> str:
    """``job:run_id``, as core.mirror_plan.reconcile names runs."""
    return f"{command.job.name}:{command.run_id}"
