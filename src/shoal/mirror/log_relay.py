"""The manager's side of reading a job's run log, which stays on the worker that wrote it::

    reader ── GET /logs/{job}/latest ──────▶ manager ── SendLog (answers the worker's waiting poll) ──▶ worker
    reader ◀── the log's tail ─────────────── manager ◀── POST /v1/mirror/workers/{w}/logs/{id} ─────── worker

Rules, and why:

- The manager keeps no log. It asks a worker through the commands that worker already polls for, so no
  connection is ever opened toward a worker (workers may sit where they can only call out) and the token
  that guards the worker protocol guards this too.
- The latest run is read on the job's worker (its newest run's). A run named is read on whichever worker
  ran it: the manager asks the workers that may hold it, the likeliest first
  (``MirrorManager.log_holders``), until one has it; a worker without it says so at once (404). The
  answer names the worker it came from and the job's worker (``running_on``), so a reader following the
  job sees when its next run went elsewhere.
- Which bytes, which names and which secrets hidden are core.log_share's rules, applied on the worker, so a
  secret never leaves the worker's host; the manager checks the run's name too, so a bad one never travels.
- A read waits at most ``LOG_WAIT`` seconds, for all the workers it asks together: then its reader gets a
  504 (LogUnavailable), its command is withdrawn if the worker has not taken it yet, and an answer that
  comes later is dropped. A job whose worker is not live is a 503 at once (for a run named: when no live
  worker had it and one that ran the job is not live).
- At most ``MAX_PENDING`` reads wait at once, so readers cannot pile commands into a worker's outbox.
- An answer is taken only from the worker the request went to.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from shoal.core.errors import LogUnavailable, NotFound, ProtocolError
from shoal.core.log_share import LATEST, MAX_LOG_READ, check_run
from shoal.mirror.manager import MirrorManager
from shoal.mirror.messages import JobLog, LogAnswer, LogPiece, SendLog
from shoal.mirror.worker_link import WorkerLink

LOG_PAGES = "/logs/"
"""Where the status page links each job's log: ``/logs/{job}/latest`` (or ``/logs/{job}/{run}``), plain text."""


def log_link(job: str) -> str:
    """The status page's link to ``job``'s latest run log (job names need no escaping: [A-Za-z0-9._-])."""
    return f"{LOG_PAGES}{job}/latest"


LOG_WAIT = 15.0
"""Seconds a read waits for the worker's answer: a worker's poll is answered at once when a command comes,
so this covers a worker that is busy or a network that is slow, not the poll's hold."""

MAX_PENDING = 32
"""Log reads waiting for workers at once; more are refused (503) until some are answered."""


@dataclass
class _Pending:
    worker: str
    answer: asyncio.Future[LogAnswer]


class LogRelay:
    """Reads of run logs in flight: ``read`` sends the command and waits; ``deliver`` takes the answer."""

    def __init__(self, manager: MirrorManager, *, wait: float = LOG_WAIT) -> None:
        self.manager = manager
        self.wait = wait
        self._pending: dict[str, _Pending] = {}

    async def read(self, name: str, run: str | None, *, offset: int | None, limit: int = MAX_LOG_READ) -> JobLog:
        """Part of job ``name``'s run log ``run`` (None: the latest) from the worker that holds it. UnknownJob
        or NotFound (404), ProtocolError (400), LogUnavailable (503, 504)."""
        job = await self.manager.job(name)
        asked = check_run(name, run)
        spec = self.manager.spec_of(job)
        if spec is None:
            raise NotFound(f"job {name!r} has an unreadable spec, so where its logs are is not known")
        if job.worker is None:
            raise NotFound(f"job {name} has not run yet: it has no run log")
        # The latest run is the one of the job's worker; a named run may be on any worker that ran the job.
        holders = [job.worker] if asked == LATEST else self.manager.log_holders(job)
        deadline = asyncio.get_running_loop().time() + self.wait
        away: list[str] = []
        missing: NotFound | None = None
        for worker in holders:
            link = self.manager.links.get(worker)
            if link is None:
                away.append(worker)
                continue
            command = SendLog(
                id=secrets.token_hex(8),
                job=spec,
                run=None if asked == LATEST else asked,
                offset=offset,
                limit=min(limit, MAX_LOG_READ),
            )
            try:
                piece = await self._ask(link, command, deadline)
            except NotFound as exc:  # not this worker's run: the next one that ran the job may have it
                missing = exc
                continue
            return JobLog(
                job=name,
                worker=worker,
                run=piece.run,
                latest=piece.latest,
                runs=piece.runs,
                size=piece.size,
                start=piece.start,
                end=piece.end,
                text=piece.text,
                running_on=job.worker,
            )
        if away and asked == LATEST:
            raise LogUnavailable(f"job {name}'s run logs are on worker {away[0]}, which is not live")
        if away:  # only workers known to have run the job can be away: the others asked are the live ones
            where = ", ".join(away)
            raise LogUnavailable(f"no live worker has job {name}'s run log {asked}; it may be on {where}, not live now")
        assert missing is not None  # every worker asked answered, and none had it
        raise missing

    async def _ask(self, link: WorkerLink, command: SendLog, deadline: float) -> LogPiece:
        """Send ``command`` to ``link``'s worker and wait for its answer until ``deadline`` (loop time)."""
        if len(self._pending) >= MAX_PENDING:
            raise LogUnavailable(f"{MAX_PENDING} log reads are waiting for workers already; try again")
        pending = _Pending(link.name, asyncio.get_running_loop().create_future())
        self._pending[command.id] = pending
        link.send(command)
        try:
            async with asyncio.timeout_at(deadline):
                answer = await pending.answer
        except TimeoutError:
            link.withdraw(lambda c: isinstance(c, SendLog) and c.id == command.id)
            raise LogUnavailable(
                f"worker {link.name} did not send job {command.job.name}'s log within {self.wait:g} s", status=504
            ) from None
        finally:
            del self._pending[command.id]
        if answer.piece is None:
            if answer.status == 400:
                raise ProtocolError(answer.error, field="run")
            if answer.status == 404:
                raise NotFound(answer.error)
            raise LogUnavailable(f"worker {link.name} could not read job {command.job.name}'s log: {answer.error}")
        return answer.piece

    def deliver(self, worker: str, request: str, answer: LogAnswer) -> bool:
        """A worker's answer to read ``request``; False when no reader waits for it (or not from this worker)."""
        pending = self._pending.get(request)
        if pending is None or pending.worker != worker or pending.answer.done():
            return False
        pending.answer.set_result(answer)
        return True
