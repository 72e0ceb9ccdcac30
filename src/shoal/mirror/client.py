"""The one client of the mirror manager's HTTP API (shoal.mirror.manager_http), for workers and ``shoal mirror ctl``.

Requests and replies are the structs of shoal.mirror.messages, encoded and decoded here. Foreign errors are
mapped here, at the edge, in one place (``_refusal``): a manager that cannot be reached is
TrackerUnavailable (exit 3: the manager is the fleet's control service, as the tracker is); a reply of 400,
404 or 413 is a UsageError (the user named something wrong), 401 a UsageError about the token, 409 a
ManagerRefused (exit 1) with the manager's reason, and anything else, or a reply that is not the message it
should be, a TrackerUnavailable. Retrying is the caller's (the worker's loops use core.retry).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec

from shoal.core.errors import ManagerRefused, ShoalError, TrackerUnavailable, UsageError
from shoal.core.mirror_values import dec_hook
from shoal.mirror.messages import (
    Command,
    Flushed,
    JobAction,
    JobLog,
    LogAnswer,
    LogReceived,
    ManagerError,
    ManagerHealth,
    MirrorJobList,
    MirrorJobView,
    Poll,
    PollReply,
    Register,
    Registered,
    Reloaded,
    ReloadRequest,
    Report,
    RunningJob,
    RunReportReply,
    SetSize,
    WorkerList,
    WorkerRemoved,
    WorkerView,
)

R = TypeVar("R")


class MirrorClient:
    """``async with MirrorClient(url, token) as client``; every method returns the reply's struct."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
            raise UsageError(f"the manager's URL must be http(s)://HOST:PORT, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._session = aiohttp.ClientSession(headers=headers)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, method: str, path: str, reply: type[R], body: Any = None, *, seconds: float | None = None
    ) -> R:
        """One request: ``body`` (a struct, or None) encoded, the reply decoded as ``reply``."""
        if self._session is None:
            raise RuntimeError("use 'async with MirrorClient(...)'")
        url = f"{self.base_url}/v1/mirror/{path}"
        data = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds or self.timeout)
            ) as resp:
                raw, status = await resp.read(), resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnavailable(
                f"cannot reach the mirror manager at {self.base_url}: {exc or type(exc).__name__}",
                tracker=self.base_url,
            ) from None
        if status >= 300:
            raise self._refusal(status, raw)
        try:
            return msgspec.json.decode(raw, type=reply, dec_hook=dec_hook)
        except msgspec.DecodeError as exc:  # ValidationError too: a reply that is not the message
            raise TrackerUnavailable(
                f"the mirror manager at {self.base_url} answered {status} with a reply this worker cannot read: {exc}",
                tracker=self.base_url,
            ) from None

    def _refusal(self, status: int, raw: bytes) -> ShoalError:
        try:
            error = msgspec.json.decode(raw, type=ManagerError)
        except msgspec.DecodeError:
            error = ManagerError(f"HTTP {status}")
        if status == 401:
            return UsageError(f"the mirror manager refused the token: {error.error} (see --token, $SHOAL_MIRROR_TOKEN)")
        if status in (400, 404, 413):
            return UsageError(error.error)
        if status == 409:
            return ManagerRefused(error.error, status=status, register=error.register)
        return TrackerUnavailable(f"the mirror manager answered {status}: {error.error}", tracker=self.base_url)

    # -- ctl -----------------------------------------------------------------------------------------

    async def jobs(self, *, include_disabled: bool = False, status: str | None = None) -> list[MirrorJobView]:
        query = [f"all={int(include_disabled)}"] + ([f"status={quote(status)}"] if status else [])
        return (await self.call("GET", "jobs?" + "&".join(query), MirrorJobList)).jobs

    async def job_action(
        self, job: str, action: str, *, force: bool = False, worker: str | None = None
    ) -> MirrorJobView:
        body = JobAction(force=force, worker=worker)
        return await self.call("POST", f"jobs/{quote(job, safe='')}/{action}", MirrorJobView, body)

    async def job(self, name: str) -> MirrorJobView:
        return await self.call("GET", f"jobs/{quote(name, safe='')}", MirrorJobView)

    async def set_size(self, job: str, size: int, text: str | None = None) -> MirrorJobView:
        body = SetSize(size=size, text=text)
        return await self.call("POST", f"jobs/{quote(job, safe='')}/size", MirrorJobView, body)

    async def job_log(self, job: str, *, run: str | None = None, offset: int | None = None, limit: int) -> JobLog:
        """Part of a job's run log, read on its worker (no offset: the tail of ``limit`` bytes)."""
        query = [f"limit={limit}"] + ([f"run={quote(run, safe='')}"] if run else [])
        query += [f"offset={offset}"] if offset is not None else []
        return await self.call("GET", f"jobs/{quote(job, safe='')}/log?" + "&".join(query), JobLog)

    async def health(self) -> ManagerHealth:
        return await self.call("GET", "health", ManagerHealth)

    async def reload(self, worker: str | None = None) -> Reloaded:
        return await self.call("POST", "reload", Reloaded, ReloadRequest(worker=worker))

    async def workers(self) -> list[WorkerView]:
        return (await self.call("GET", "workers", WorkerList)).workers

    async def remove_worker(self, name: str) -> WorkerRemoved:
        return await self.call("DELETE", f"workers/{quote(name, safe='')}", WorkerRemoved)

    async def flush(self) -> Flushed:
        return await self.call("POST", "flush", Flushed)

    # -- the worker protocol -------------------------------------------------------------------------

    async def register(self, name: str, url: str, concurrency: int, running: list[RunningJob]) -> Registered:
        body = Register(concurrency=concurrency, url=url, running=running)
        return await self.call("POST", f"workers/{quote(name, safe='')}/register", Registered, body)

    async def poll(self, name: str, session: str, ack: int, hold: float) -> list[Command]:
        path = f"workers/{quote(name, safe='')}/poll"
        return (await self.call("POST", path, PollReply, Poll(session=session, ack=ack), seconds=hold + 15)).commands

    async def send_log(self, name: str, request: str, answer: LogAnswer) -> LogReceived:
        path = f"workers/{quote(name, safe='')}/logs/{quote(request, safe='')}"
        return await self.call("POST", path, LogReceived, answer)

    async def report(self, job: str, body: Report) -> RunReportReply:
        return await self.call("POST", f"jobs/{quote(job, safe='')}/report", RunReportReply, body)
