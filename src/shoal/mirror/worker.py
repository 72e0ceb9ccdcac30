"""The mirror worker: registers with the manager, takes its commands, runs attempts, reports what happened.

The worker owns no job status: the manager does (shoal.mirror.manager). The worker's loop::

    register ──▶ poll (long-poll; each poll is also the heartbeat and acknowledges the commands handled)
       ▲            │ run JOB RUN_ID ATTEMPT ──▶ task: slot ─▶ run_attempt ─▶ report ─▶ (retry? run again)
       │            │ cancel JOB [RUN_ID]    ──▶ cancel the job's task (run_attempt kills its processes)
       │            │ reload (or SIGHUP)     ──▶ re-read the config file, register again (new concurrency)
       │            │ log ID JOB [RUN]       ──▶ task: read part of the job's run log ─▶ post it as answer ID
       └── 409 "register again" (the manager restarted, or forgot this worker)

Rules, and why:

- One task per job: a run for a job that still has one cancels the old task and waits for it to end
  before the new one touches the job directory, so two attempts never fill one directory.
- A worker runs at most ``concurrency`` attempts at once (a second guard behind the manager's own
  count); a forced start (``ctl start --force``) takes a slot beyond the limit.
- Reports are retried until the manager answers, so a result reached while the manager restarts is not
  lost; a report the manager refuses (409: the run was stopped, restarted or declared lost meanwhile) is
  dropped, because the manager has moved on. The "syncing" report is best effort: a success report
  moves a job through syncing if that report never arrived.
- A poll reply the worker cannot read (a manager of another version, say) is handled as a manager that
  does not answer: logged and retried, so nothing half-read is acted on.
- A manager that cannot be reached is retried with a short, capped, jittered backoff (core.retry), so after
  a manager restart the worker is back within about a second; only a refused token (or another 4xx) ends the worker.
- SIGHUP (``hangup``) cuts a waiting poll short, re-reads ``[worker]``, handles and acknowledges the
  commands already waiting, then registers again. What the process set up at start (its name, the manager
  and token, the seeder's address) stays until a restart, and the log says so.
- A job's run logs stay on this host; the manager asks for a piece of one (``log``) when a reader wants it
  (shoal.mirror.log_relay). The worker reads it in a task of its own, so a slow disk never delays a poll,
  and redacts it here (core.log_share), so the job's secrets never leave the host.
- The attempt itself (hooks, provider, versions, retention) is shoal.mirror.runner's ``run_attempt``,
  passed in, so the worker is tested without it.
- A job with ``publish.pool`` has each new version pushed to that pool once seeded
  (shoal.mirror.publish); a push that fails fails the attempt, with the reason in the job's status.
- The worker's seeder watches the whole directory, so a job that must not be seeded
  (``publish.seed = false``) runs in the hidden ``.unseeded/`` beside the others (the seeder never
  publishes hidden paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec

from shoal.core.errors import (
    ManagerRefused,
    ProtocolError,
    ProviderError,
    PublishError,
    TrackerUnavailable,
    UsageError,
)
from shoal.core.log_share import job_secrets, shown_text
from shoal.core.mirror_config import JobSpec, WorkerSettings
from shoal.core.retry import Backoff, Retries
from shoal.http.credentials import Credentials
from shoal.mirror.client import MirrorClient
from shoal.mirror.messages import (
    CancelJob,
    Command,
    LogAnswer,
    LogPiece,
    Report,
    RunJob,
    RunningJob,
    RunReportReply,
    SendLog,
)
from shoal.mirror.publish import push_version
from shoal.mirror.rsync import job_password
from shoal.mirror.run_log import LogPlace, log_place, read_run_log

log = logging.getLogger("shoal.mirror.worker")

RESTART_ONLY = ("name", "manager", "token", "token_env", "seed_host", "seed_port", "advertise")
"""[worker] keys a reload does not change: the manager connection and the seeder are set up at start."""

MANAGER_BACKOFF = Backoff(0.2, 2.0)
"""Retries of a manager that does not answer (core.retry): short, so a restarted manager sees its workers
soon, and jittered, so they do not all come back at the same instant."""


class Outcome(Protocol):
    """What one attempt returns (shoal.mirror.runner.AttemptResult)."""

    @property
    def ok(self) -> bool: ...
    @property
    def error(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def size_text(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...


class RunAttempt(Protocol):
    def __call__(
        self,
        spec: JobSpec,
        job_dir: Path,
        *,
        attempt: int = 1,
        on_syncing: Callable[[], Awaitable[None]] | None = None,
        logs: LogPlace | None = None,
    ) -> Awaitable[Outcome]: ...


UNSEEDED = ".unseeded"
"""Where jobs with ``publish.seed = false`` live: hidden, so the worker's seeder never publishes them."""


def job_directory(directory: Path, spec: JobSpec) -> Path:
    """``<directory>/<job>``, or ``<directory>/.unseeded/<job>`` for a job that is not to be seeded."""
    return directory / spec.name if spec.publish.seed else directory / UNSEEDED / spec.name


class _Slots:
    """At most ``limit`` holders at once, except forced ones; the limit may change (a reload).

    Waiters are futures woken all at once on every release, and each checks again; a release never
    awaits, so a task being cancelled always gives its slot back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.asynccontextmanager
    async def take(self, *, force: bool = False) -> AsyncIterator[None]:
        while not force and self.used >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self.used += 1
        try:
            yield
        finally:
            self.used -= 1
            self._wake()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


@dataclass
class _Run:
    run_id: str
    task: asyncio.Task[None]


class MirrorWorker:
    def __init__(
        self,
        name: str,
        settings: WorkerSettings,
        run_attempt: RunAttempt,
        *,
        url: str = "",
        reload: Callable[[], WorkerSettings] | None = None,
        pool_token: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.url = url
        """The worker's seeder (base URL): what the manager lists, and what pool pushes name."""
        self.pool_token = pool_token
        self.credentials = credentials or Credentials()
        """The fleet's, as the worker's seeder holds them: a push carries them to the tracker and the seeder."""
        self._run_attempt = run_attempt
        self._reload = reload
        self._slots = _Slots(settings.concurrency)
        self._runs: dict[str, _Run] = {}
        self._log_reads: set[asyncio.Task[None]] = set()
        self._client: MirrorClient | None = None
        self._http: aiohttp.ClientSession | None = None
        self.registered = asyncio.Event()
        """Set while registered with the current manager session."""
        self._hangup = asyncio.Event()

    def hangup(self) -> None:
        """SIGHUP: re-read the config file's ``[worker]`` table at once (as a ``reload`` command does)."""
        self._hangup.set()

    @property
    def client(self) -> MirrorClient:
        assert self._client is not None, "the worker is not running"
        return self._client

    async def run(self) -> None:
        """Serve the manager until cancelled; every running attempt is cancelled on the way out."""
        try:
            async with (
                MirrorClient(self.settings.manager, self.settings.token) as client,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
            ):
                self._client = client
                self._http = http
                while True:
                    session, hold = await self._register()
                    await self._serve(session, hold)
        finally:
            runs = [run.task for run in self._runs.values()] + list(self._log_reads)
            for task in runs:
                task.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            self._client = None

    async def _register(self) -> tuple[str, float]:
        self.registered.clear()
        retry = Retries(MANAGER_BACKOFF)
        while True:
            running = [RunningJob(job, run.run_id) for job, run in self._runs.items() if not run.task.done()]
            try:
                reply = await self.client.register(self.name, self.url, self._slots.limit, running)
                break
            except TrackerUnavailable as exc:
                log.warning("registering with the manager failed (%s); trying again", exc)
                await asyncio.sleep(retry.next_delay())
        for job in reply.lost:
            log.warning("the manager counts job %s as lost with this worker's previous process", job)
        log.info("registered with %s as %s", self.settings.manager, self.name)
        self.registered.set()
        return reply.session, reply.hold

    async def _serve(self, session: str, hold: float) -> None:
        """Poll and handle commands until the manager asks for a new registration (or a reload does)."""
        ack = 0
        retry = Retries(MANAGER_BACKOFF)
        while True:
            if self._hangup.is_set():
                self._hangup.clear()
                if await self._reload_settings():
                    await self._handle_pending(session, ack)
                    return
            try:
                commands = await self._poll(session, ack, hold)
            except ManagerRefused as exc:
                if exc.register:
                    log.info("the manager asks this worker to register again")
                    return
                raise
            except TrackerUnavailable as exc:
                log.warning("polling the manager failed (%s); trying again", exc)
                await asyncio.sleep(retry.next_delay())
                continue
            retry.reset()
            again = False
            for command in commands:
                if command.seq <= ack:
                    continue
                ack = command.seq
                again = await self._handle(command) or again
            if again:
                # Acknowledge what was handled, then register with the new settings.
                with contextlib.suppress(TrackerUnavailable, ManagerRefused):
                    await self.client.poll(self.name, session, ack, 0.0)
                return

    async def _poll(self, session: str, ack: int, hold: float) -> list[Command]:
        """One poll, cut short by a SIGHUP (the commands it would have brought stay unacknowledged at the
        manager, which sends them again)."""
        poll = asyncio.ensure_future(self.client.poll(self.name, session, ack, hold))
        hangup = asyncio.ensure_future(self._hangup.wait())
        try:
            await asyncio.wait({poll, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the worker stops: nothing is left running unawaited
            hangup.cancel()
            if not poll.done():
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
        return [] if poll.cancelled() else poll.result()

    async def _handle_pending(self, session: str, ack: int) -> None:
        """Before registering again: handle the commands already waiting, and acknowledge them."""
        with contextlib.suppress(TrackerUnavailable, ManagerRefused):
            for command in await self.client.poll(self.name, session, ack, 0.0):
                if command.seq > ack:
                    ack = command.seq
                    await self._handle(command)
            await self.client.poll(self.name, session, ack, 0.0)

    async def _reload_settings(self) -> bool:
        """Re-read the config file's ``[worker]`` table; True when it loaded (then the worker registers
        again, with its new concurrency). A file that does not load is logged and the settings kept."""
        if self._reload is None:
            log.warning("asked to reload, but this worker has no config file")
            return False
        try:
            settings = await asyncio.to_thread(self._reload)
        except Exception as exc:  # a broken file must not stop the worker; it keeps its settings
            log.error("reload failed, keeping the current settings: %s", exc)
            return False
        kept = {
            key: getattr(self.settings, key)
            for key in RESTART_ONLY
            if getattr(settings, key) != getattr(self.settings, key)
        }
        for key in kept:
            log.warning("reload: [worker] %s changed; that takes effect when the worker restarts", key)
        self.settings = msgspec.structs.replace(settings, **kept) if kept else settings
        self._slots.resize(settings.concurrency)
        log.warning("reloaded: concurrency %d, directory %s", settings.concurrency, settings.directory)
        return True

    async def _handle(self, command: Command) -> bool:
        """Act on one command; True when the worker must register again."""
        if isinstance(command, RunJob):
            spec = command.job
            previous = self._runs.pop(spec.name, None)
            run = self._run(spec, command.run_id, command.attempt, command.force, previous)
            task = asyncio.create_task(run, name=f"mirror job {spec.name}")
            self._runs[spec.name] = _Run(command.run_id, task)
            task.add_done_callback(lambda _: self._forget(spec.name, task))
        elif isinstance(command, SendLog):
            reading = asyncio.create_task(self._send_log(command), name=f"log of {command.job.name}")
            self._log_reads.add(reading)
            reading.add_done_callback(self._log_reads.discard)
        elif isinstance(command, CancelJob):
            current = self._runs.get(command.job)
            if current is not None and command.run_id in (None, current.run_id):
                log.info("cancelling job %s (run %s)", command.job, current.run_id)
                current.task.cancel()
        else:
            return await self._reload_settings()
        return False

    def _forget(self, job: str, task: asyncio.Task[None]) -> None:
        run = self._runs.get(job)
        if run is not None and run.task is task:
            del self._runs[job]

    async def _run(self, spec: JobSpec, run_id: str, attempt: int, force: bool, previous: _Run | None) -> None:
        if previous is not None:  # never two attempts in one job directory
            previous.task.cancel()
            await asyncio.gather(previous.task, return_exceptions=True)
        job_dir = job_directory(Path(self.settings.directory), spec)
        async with self._slots.take(force=force):
            while True:
                log.info("job %s: attempt %d (run %s)", spec.name, attempt, run_id)

                def report(event: str, **facts: Any) -> Report:
                    return Report(worker=self.name, run_id=run_id, event=event, **facts)

                async def syncing() -> None:
                    await self._report(spec.name, report("syncing"), tries=3)

                try:
                    await asyncio.to_thread(job_dir.mkdir, parents=True, exist_ok=True)
                    logs = log_place(self.settings, spec)
                    outcome = await self._run_attempt(spec, job_dir, attempt=attempt, on_syncing=syncing, logs=logs)
                    body = (
                        report("success", size=outcome.size, size_text=outcome.size_text, version=outcome.version)
                        if outcome.ok
                        else report("failure", error=outcome.error or "the attempt failed")
                    )
                    if outcome.ok and outcome.version and spec.publish.pool:
                        await self._push(spec, job_dir, outcome.version)
                except PublishError as exc:
                    log.warning("job %s: %s", spec.name, exc)
                    body = report("failure", error=str(exc))
                except Exception as exc:  # a bug or an OSError in the attempt fails it; the worker goes on
                    log.exception("job %s: the attempt raised", spec.name)
                    body = report("failure", error=f"{type(exc).__name__}: {exc}")
                reply = await self._report(spec.name, body)
                if reply is None or not reply.retry:
                    return
                attempt = reply.attempt

    async def _send_log(self, command: SendLog) -> None:
        """Answer the manager's read of a run log (core.log_share: which bytes, which secrets hidden)."""
        spec = command.job
        try:
            read = await asyncio.to_thread(
                read_run_log,
                log_place(self.settings, spec),
                spec.name,
                command.run,
                offset=command.offset,
                limit=command.limit,
            )
            try:
                password = await asyncio.to_thread(job_password, spec)
            except ProviderError:  # an unreadable password file: rsync could not have used it either
                password = None
            hidden = (*job_secrets(password=password, upstream=spec.upstream, env=spec.env), self.settings.token or "")
            piece = LogPiece(
                run=read.run,
                latest=read.latest,
                runs=list(read.runs),
                size=read.size,
                start=read.start,
                end=read.end,
                text=await asyncio.to_thread(shown_text, read.data, hidden),  # a MiB of regex: off the loop
            )
            answer = LogAnswer(piece=piece)
        except ProtocolError as exc:  # NotFound (404), a bad run name (400)
            answer = LogAnswer(error=str(exc), status=exc.http_status)
        except OSError as exc:
            answer = LogAnswer(error=f"cannot read the log directory: {exc.strerror or exc}", status=503)
        try:
            await self.client.send_log(self.name, command.id, answer)
        except (TrackerUnavailable, ManagerRefused, UsageError) as exc:
            log.info("the manager did not take the log of job %s: %s", spec.name, exc)

    async def _push(self, spec: JobSpec, job_dir: Path, version: str) -> None:
        """Push the new version's files to the job's pool (shoal.mirror.publish)."""
        pool = spec.publish.pool
        assert pool is not None and self._http is not None
        if not spec.publish.seed or not self.url:
            raise PublishError(f"job {spec.name}: pushing to pool {pool!r} needs the version seeded (publish.seed)")
        directory = Path(self.settings.directory)
        inside = job_dir.relative_to(directory).as_posix()
        root = await asyncio.to_thread(directory.resolve)  # the seeder names files by the real path's name
        prefix = f"{root.name}/{inside}/versions/{version}"
        tracker = (self.settings.tracker or self.url).rstrip("/")
        jobs = await push_version(
            self._http,
            seeder=self.url,
            tracker=tracker,
            pool=pool,
            replicas=spec.publish.replicas,
            token=self.pool_token,
            credentials=self.credentials,
            version_dir=job_dir / "versions" / version,
            rel_prefix=prefix,
        )
        log.info("job %s: version %s pushed to pool %s (%d files)", spec.name, version, pool, len(jobs))

    async def _report(self, job: str, body: Report, *, tries: int = 0) -> RunReportReply | None:
        """Send a report until the manager answers (at most ``tries`` times if given); None if it refused."""
        retry = Retries(MANAGER_BACKOFF)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.client.report(job, body)
            except (ManagerRefused, UsageError) as exc:  # 409 stale run, 404 job flushed meanwhile
                log.info("the manager dropped the %s report of job %s: %s", body.event, job, exc)
                return None
            except TrackerUnavailable as exc:
                if tries and attempt >= tries:
                    log.warning("could not report %s of job %s: %s", body.event, job, exc)
                    return None
                await asyncio.sleep(retry.next_delay())
